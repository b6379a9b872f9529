//! Which parts of a request make it "the same request" for its key.

use http::HeaderName;
use http::request::Parts;
use idemkv::Fingerprint;

/// The parts of a request that enter its fingerprint: a retry must repeat
/// them exactly, or it is answered 422 (the key was reused for another
/// request).
///
/// The default is the method, the path and the body. Add the query string
/// with [`with_query`](FingerprintSpec::with_query) and any request header
/// with [`with_header`](FingerprintSpec::with_header); leave the body out
/// with [`without_body`](FingerprintSpec::without_body).
///
/// ```
/// use idemkv_tower::FingerprintSpec;
/// let spec = FingerprintSpec::default()
///     .with_query()
///     .with_header(http::header::CONTENT_TYPE);
/// assert!(spec.query() && spec.body());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintSpec {
    query: bool,
    body: bool,
    headers: Vec<HeaderName>,
}

impl Default for FingerprintSpec {
    fn default() -> Self {
        FingerprintSpec {
            query: false,
            body: true,
            headers: Vec::new(),
        }
    }
}

impl FingerprintSpec {
    /// Method, path and body (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the query string: `?a=1` and `?a=2` are different requests.
    pub fn with_query(mut self) -> Self {
        self.query = true;
        self
    }

    /// Adds the values of request header `name` (all of them, in order; a
    /// missing header and an empty one differ).
    pub fn with_header(mut self, name: HeaderName) -> Self {
        if !self.headers.contains(&name) {
            self.headers.push(name);
        }
        self
    }

    /// Leaves the body out: only the method, the path and whatever else was
    /// added enter the fingerprint.
    pub fn without_body(mut self) -> Self {
        self.body = false;
        self
    }

    /// Whether the query string enters the fingerprint.
    pub fn query(&self) -> bool {
        self.query
    }

    /// Whether the body enters the fingerprint.
    pub fn body(&self) -> bool {
        self.body
    }

    /// The request headers that enter the fingerprint.
    pub fn headers(&self) -> &[HeaderName] {
        &self.headers
    }

    /// The fingerprint of a request with these parts and this body.
    pub fn fingerprint(&self, parts: &Parts, body: &[u8]) -> Fingerprint {
        // Each part is length-prefixed by `of_parts`; tags keep parts that
        // are present in one configuration from meeting others.
        let mut fields: Vec<&[u8]> = vec![
            b"m",
            parts.method.as_str().as_bytes(),
            b"p",
            parts.uri.path().as_bytes(),
        ];
        if self.query {
            fields.push(b"q");
            fields.push(match parts.uri.query() {
                Some(q) => q.as_bytes(),
                None => b"\xff",
            });
        }
        for name in &self.headers {
            fields.push(b"h");
            fields.push(name.as_str().as_bytes());
            for value in parts.headers.get_all(name) {
                fields.push(b"v");
                fields.push(value.as_bytes());
            }
        }
        if self.body {
            fields.push(b"b");
            fields.push(body);
        }
        Fingerprint::of_parts(&fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Request};

    fn parts(method: Method, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut request = Request::builder().method(method).uri(uri);
        for &(n, v) in headers {
            request = request.header(n, v);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_default_covers_method_path_and_body_only() {
        let spec = FingerprintSpec::default();
        let base = spec.fingerprint(&parts(Method::POST, "/a?x=1", &[]), b"body");
        let query = spec.fingerprint(&parts(Method::POST, "/a?x=2", &[("x-y", "1")]), b"body");
        assert_eq!(base, query, "query and headers are not in the default");
        for other in [
            spec.fingerprint(&parts(Method::PATCH, "/a?x=1", &[]), b"body"),
            spec.fingerprint(&parts(Method::POST, "/b?x=1", &[]), b"body"),
            spec.fingerprint(&parts(Method::POST, "/a?x=1", &[]), b"bodY"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn query_headers_and_body_follow_the_spec() {
        let spec = FingerprintSpec::new()
            .with_query()
            .with_header(HeaderName::from_static("x-y"))
            .without_body();
        let fp = |uri, headers: &[(&str, &str)], body: &[u8]| {
            spec.fingerprint(&parts(Method::POST, uri, headers), body)
        };
        let base = fp("/a?x=1", &[("x-y", "1")], b"one");
        assert_eq!(base, fp("/a?x=1", &[("x-y", "1")], b"two"), "body left out");
        assert_ne!(base, fp("/a?x=2", &[("x-y", "1")], b"one"));
        assert_ne!(base, fp("/a?x=1", &[("x-y", "2")], b"one"));
        assert_ne!(base, fp("/a?x=1", &[], b"one"));
        assert_ne!(fp("/a", &[("x-y", "")], b""), fp("/a", &[], b""));
        assert_ne!(fp("/a?", &[], b""), fp("/a", &[], b""), "empty vs no query");
    }
}
