//! Who is asking: the caller's identity that scopes every key, and the
//! refusals the layer answers with.

use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// The identity of the caller a request comes from: the authenticated user,
/// tenant or API client. Every key is scoped by it, so one caller can never
/// read another's stored response, whatever key it sends.
///
/// By default the layer takes it from the request's extensions, where an
/// authentication layer that runs before it puts it:
///
/// ```
/// # let mut request = http::Request::new(());
/// use idemkv_tower::CallerId;
/// // In the authentication middleware, once the token is verified:
/// request.extensions_mut().insert(CallerId::from("user:42"));
/// ```
///
/// Or the layer derives it from the request with
/// [`IdempotencyLayer::caller`](crate::IdempotencyLayer::caller).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CallerId(Bytes);

impl CallerId {
    /// A caller identity from its bytes.
    pub fn new(id: impl Into<Bytes>) -> CallerId {
        CallerId(id.into())
    }

    /// The identity's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for CallerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallerId({:?})", String::from_utf8_lossy(&self.0))
    }
}

impl From<&str> for CallerId {
    fn from(id: &str) -> CallerId {
        CallerId(Bytes::copy_from_slice(id.as_bytes()))
    }
}

impl From<String> for CallerId {
    fn from(id: String) -> CallerId {
        CallerId(Bytes::from(id))
    }
}

impl From<&[u8]> for CallerId {
    fn from(id: &[u8]) -> CallerId {
        CallerId(Bytes::copy_from_slice(id))
    }
}

impl From<Vec<u8>> for CallerId {
    fn from(id: Vec<u8>) -> CallerId {
        CallerId(Bytes::from(id))
    }
}

impl From<Bytes> for CallerId {
    fn from(id: Bytes) -> CallerId {
        CallerId(id)
    }
}

/// A refusal: the layer answers it as an RFC 9457 problem
/// (`application/problem+json`) and neither claims the key nor runs the
/// handler. A [caller function](crate::IdempotencyLayer::caller) returns one
/// when it cannot name the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub(crate) status: StatusCode,
    pub(crate) title: Cow<'static, str>,
    pub(crate) detail: Cow<'static, str>,
}

impl Rejection {
    /// A refusal with this status, title and detail.
    pub fn new(
        status: StatusCode,
        title: impl Into<Cow<'static, str>>,
        detail: impl Into<Cow<'static, str>>,
    ) -> Rejection {
        Rejection {
            status,
            title: title.into(),
            detail: detail.into(),
        }
    }

    /// 401: the request does not say who the caller is.
    pub fn unauthorized(detail: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection::new(StatusCode::UNAUTHORIZED, "Caller unknown", detail)
    }

    /// 400: the request names its caller in a way that cannot be used.
    pub fn bad_request(detail: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection::new(StatusCode::BAD_REQUEST, "Caller invalid", detail)
    }

    /// The status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem's title.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The problem's detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl std::error::Error for Rejection {}

/// How the layer names the caller of a request.
pub(crate) type CallerFn = Arc<dyn Fn(&Parts) -> Result<CallerId, Rejection> + Send + Sync>;

/// The default: the [`CallerId`] in the request's extensions, else 401.
pub(crate) fn from_extensions(parts: &Parts) -> Result<CallerId, Rejection> {
    parts.extensions.get::<CallerId>().cloned().ok_or_else(|| {
        Rejection::unauthorized(
            "this request does not say who the caller is; authenticate and retry",
        )
    })
}
