//! The stored form of a response: status, kept headers, body.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use std::fmt;

/// The version byte that starts every stored response.
pub const STORED_RESPONSE_VERSION: u8 = 1;

/// Bytes of a stored response besides its header names, header values and
/// body: version, status, header count, body length.
pub(crate) const FIXED_OVERHEAD: usize = 1 + 2 + 2 + 4;

/// Bytes each stored header adds besides its name and value: two lengths.
pub(crate) const PER_HEADER_OVERHEAD: usize = 2 + 2;

/// A response as stored for replay: status, kept headers, body.
///
/// The encoding, every integer big-endian:
///
/// ```text
/// u8  version (1)
/// u16 status
/// u16 header count
///     per header: u16 name length, name bytes, u16 value length, value bytes
/// u32 body length, body bytes
/// ```
///
/// ```
/// use idemkv_tower::StoredResponse;
/// use http::{HeaderName, HeaderValue, StatusCode};
///
/// let stored = StoredResponse {
///     status: StatusCode::CREATED,
///     headers: vec![(http::header::LOCATION, HeaderValue::from_static("/v1/orders/7"))],
///     body: bytes::Bytes::from_static(b"{\"id\":7}"),
/// };
/// let bytes = stored.encode().unwrap();
/// assert_eq!(StoredResponse::decode(&bytes).unwrap(), stored);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The status code.
    pub status: StatusCode,
    /// The kept headers, in their original order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body, byte for byte.
    pub body: Bytes,
}

/// Why a response could not be encoded or stored bytes not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodingError {
    /// More than 65,535 headers.
    TooManyHeaders,
    /// A header name or value longer than 65,535 bytes.
    HeaderTooLong,
    /// A body of 4 GiB or more.
    BodyTooLong,
    /// The bytes start with another version than [`STORED_RESPONSE_VERSION`].
    UnknownVersion(u8),
    /// The bytes end inside a field.
    Truncated,
    /// Bytes follow the body.
    TrailingBytes,
    /// The status is not a valid HTTP status code.
    InvalidStatus,
    /// A header name or value is not valid HTTP.
    InvalidHeader,
}

impl fmt::Display for EncodingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodingError::TooManyHeaders => f.write_str("more than 65535 headers"),
            EncodingError::HeaderTooLong => f.write_str("a header longer than 65535 bytes"),
            EncodingError::BodyTooLong => f.write_str("a body of 4 GiB or more"),
            EncodingError::UnknownVersion(v) => write!(
                f,
                "stored response version {v}, this build reads {STORED_RESPONSE_VERSION}"
            ),
            EncodingError::Truncated => f.write_str("the stored response is truncated"),
            EncodingError::TrailingBytes => f.write_str("bytes follow the stored response"),
            EncodingError::InvalidStatus => f.write_str("an invalid status code"),
            EncodingError::InvalidHeader => f.write_str("an invalid header name or value"),
        }
    }
}

impl std::error::Error for EncodingError {}

impl StoredResponse {
    /// The encoded length of a response with these parts.
    pub fn encoded_len<'a>(
        headers: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
        body_len: usize,
    ) -> usize {
        let headers: usize = headers
            .into_iter()
            .map(|(n, v)| PER_HEADER_OVERHEAD + n.as_str().len() + v.len())
            .sum();
        FIXED_OVERHEAD + headers + body_len
    }

    /// Encodes the response; fails if it does not fit the format (see the
    /// type's docs).
    pub fn encode(&self) -> Result<Vec<u8>, EncodingError> {
        encode_parts(
            self.status,
            self.headers.iter().map(|(n, v)| (n, v)),
            &self.body,
        )
    }

    /// Decodes what [`encode`](StoredResponse::encode) wrote: exactly one
    /// response, nothing before or after it.
    pub fn decode(bytes: &[u8]) -> Result<StoredResponse, EncodingError> {
        let mut r = Reader(bytes);
        let version = r.take(1)?[0];
        if version != STORED_RESPONSE_VERSION {
            return Err(EncodingError::UnknownVersion(version));
        }
        let status = StatusCode::from_u16(r.u16()?).map_err(|_| EncodingError::InvalidStatus)?;
        let count = r.u16()?;
        let mut headers = Vec::with_capacity(usize::from(count).min(64));
        for _ in 0..count {
            let len = r.u16()?;
            let name = HeaderName::from_bytes(r.take(usize::from(len))?)
                .map_err(|_| EncodingError::InvalidHeader)?;
            let len = r.u16()?;
            let value = HeaderValue::from_bytes(r.take(usize::from(len))?)
                .map_err(|_| EncodingError::InvalidHeader)?;
            headers.push((name, value));
        }
        let len = usize::try_from(r.u32()?).map_err(|_| EncodingError::Truncated)?;
        let body = Bytes::copy_from_slice(r.take(len)?);
        if !r.0.is_empty() {
            return Err(EncodingError::TrailingBytes);
        }
        Ok(StoredResponse {
            status,
            headers,
            body,
        })
    }
}

/// Encodes a response from borrowed parts.
pub(crate) fn encode_parts<'a>(
    status: StatusCode,
    headers: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    body: &[u8],
) -> Result<Vec<u8>, EncodingError> {
    let headers: Vec<_> = headers.into_iter().collect();
    let count = u16::try_from(headers.len()).map_err(|_| EncodingError::TooManyHeaders)?;
    let body_len = u32::try_from(body.len()).map_err(|_| EncodingError::BodyTooLong)?;
    let len = StoredResponse::encoded_len(headers.iter().copied(), body.len());
    let mut out = Vec::with_capacity(len);
    out.push(STORED_RESPONSE_VERSION);
    out.extend_from_slice(&status.as_u16().to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    for (name, value) in headers {
        for part in [name.as_str().as_bytes(), value.as_bytes()] {
            let len = u16::try_from(part.len()).map_err(|_| EncodingError::HeaderTooLong)?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out.extend_from_slice(&body_len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EncodingError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(EncodingError::Truncated)?;
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, EncodingError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, EncodingError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn sample() -> StoredResponse {
        StoredResponse {
            status: StatusCode::CREATED,
            headers: vec![
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (
                    header::LOCATION,
                    HeaderValue::from_static("/v1/orders/ord_000001"),
                ),
                (
                    HeaderName::from_static("x-empty"),
                    HeaderValue::from_static(""),
                ),
            ],
            body: Bytes::from_static(br#"{"id":"ord_000001"}"#),
        }
    }

    #[test]
    fn round_trips_and_has_the_documented_layout() {
        let stored = sample();
        let bytes = stored.encode().unwrap();
        assert_eq!(bytes[0], STORED_RESPONSE_VERSION);
        assert_eq!(&bytes[1..5], &[0, 201, 0, 3]);
        assert_eq!(&bytes[5..7], &[0, 12], "the first name's length");
        assert_eq!(&bytes[7..19], b"content-type");
        assert_eq!(
            bytes.len(),
            StoredResponse::encoded_len(
                stored.headers.iter().map(|(n, v)| (n, v)),
                stored.body.len()
            )
        );
        assert_eq!(StoredResponse::decode(&bytes), Ok(stored));
    }

    #[test]
    fn damage_is_a_typed_error() {
        let bytes = sample().encode().unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(
                StoredResponse::decode(&bytes[..cut]),
                Err(EncodingError::Truncated),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            StoredResponse::decode(&longer),
            Err(EncodingError::TrailingBytes)
        );
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(
            StoredResponse::decode(&other),
            Err(EncodingError::UnknownVersion(2))
        );
        let mut status = bytes.clone();
        status[1..3].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(
            StoredResponse::decode(&status),
            Err(EncodingError::InvalidStatus)
        );
        let mut name = bytes.clone();
        name[7] = b' ';
        assert_eq!(
            StoredResponse::decode(&name),
            Err(EncodingError::InvalidHeader)
        );
        // A header count far beyond the bytes present is an error (the
        // bytes after the real headers do not parse as more), and
        // allocates nothing in proportion to the claimed count.
        let mut count = bytes;
        count[3..5].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(
            StoredResponse::decode(&count),
            Err(EncodingError::Truncated | EncodingError::InvalidHeader)
        ));
    }

    #[test]
    fn oversized_parts_are_refused() {
        let long = HeaderValue::from_bytes(&vec![b'a'; 70_000]).unwrap();
        let stored = StoredResponse {
            headers: vec![(header::LOCATION, long)],
            ..sample()
        };
        assert_eq!(stored.encode(), Err(EncodingError::HeaderTooLong));
        let many = StoredResponse {
            headers: vec![(header::ETAG, HeaderValue::from_static("x")); 70_000],
            ..sample()
        };
        assert_eq!(many.encode(), Err(EncodingError::TooManyHeaders));
    }
}
