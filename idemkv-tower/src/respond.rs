//! The answers the layer writes itself: RFC 9457 problems.

use crate::body::ResponseBody;
use crate::caller::Rejection;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// An `application/problem+json` response (RFC 9457).
pub(crate) fn problem<B>(
    status: StatusCode,
    title: &str,
    detail: &str,
) -> Response<ResponseBody<B>> {
    let mut json = String::with_capacity(96 + title.len() + detail.len());
    json.push_str(r#"{"type":"about:blank","title":"#);
    push_json_string(&mut json, title);
    json.push_str(r#","status":"#);
    json.push_str(&status.as_u16().to_string());
    json.push_str(r#","detail":"#);
    push_json_string(&mut json, detail);
    json.push('}');
    let mut response = Response::new(ResponseBody::full(Bytes::from(json)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// A refusal, as a problem response.
pub(crate) fn refusal<B>(rejection: &Rejection) -> Response<ResponseBody<B>> {
    problem(rejection.status, &rejection.title, &rejection.detail)
}

/// Adds `Retry-After: secs`.
pub(crate) fn with_retry_after<B>(mut response: Response<B>, secs: u64) -> Response<B> {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// Appends `s` as a JSON string literal.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};

    #[tokio::test]
    async fn problems_are_escaped_json() {
        let response = problem::<Empty<Bytes>>(
            StatusCode::BAD_REQUEST,
            "Caller \"x\" invalid",
            "tab\there\\ and \u{1} and é",
        );
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            r#"{"type":"about:blank","title":"Caller \"x\" invalid","status":400,"detail":"tab\there\\ and \u0001 and é"}"#
        );
    }
}
