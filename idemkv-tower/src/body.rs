//! The body types the layer hands to the inner service and returns.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project! {
    /// The request body the inner service receives: the original body,
    /// untouched, for requests the layer passes through (methods it does not
    /// cover), or the buffered bytes of an idempotent request, which the
    /// layer read to fingerprint it.
    ///
    /// Axum's `Router` and hyper services accept it as they accept any
    /// `http_body::Body` with `Bytes` data.
    pub struct RequestBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    /// The response body the layer returns: the inner service's own body,
    /// untouched, for requests it passes through, or buffered bytes (a
    /// response the layer stored, a replay, or a refusal).
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
    }
}

macro_rules! body_impl {
    ($name:ident) => {
        impl<B> $name<B> {
            pub(crate) fn inner(body: B) -> Self {
                $name {
                    kind: Kind::Inner { body },
                }
            }

            pub(crate) fn full(data: Bytes) -> Self {
                let data = (!data.is_empty()).then_some(data);
                $name {
                    kind: Kind::Full { data },
                }
            }

            /// The bytes of a buffered body; `None` for an inner one.
            #[allow(dead_code, reason = "used for one of the two types")]
            pub(crate) fn into_full(self) -> Option<Bytes> {
                match self.kind {
                    Kind::Inner { .. } => None,
                    Kind::Full { data } => Some(data.unwrap_or_default()),
                }
            }
        }

        impl<B> std::fmt::Debug for $name<B> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match &self.kind {
                    Kind::Inner { .. } => f.write_str(concat!(stringify!($name), "::Inner")),
                    Kind::Full { data } => f
                        .debug_struct(concat!(stringify!($name), "::Full"))
                        .field("len", &data.as_ref().map_or(0, Bytes::len))
                        .finish(),
                }
            }
        }

        impl<B> Body for $name<B>
        where
            B: Body<Data = Bytes>,
        {
            type Data = Bytes;
            type Error = B::Error;

            fn poll_frame(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
                match self.project().kind.project() {
                    KindProj::Inner { body } => body.poll_frame(cx),
                    KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
                }
            }

            fn is_end_stream(&self) -> bool {
                match &self.kind {
                    Kind::Inner { body } => body.is_end_stream(),
                    Kind::Full { data } => data.is_none(),
                }
            }

            fn size_hint(&self) -> SizeHint {
                match &self.kind {
                    Kind::Inner { body } => body.size_hint(),
                    Kind::Full { data } => {
                        SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
                    }
                }
            }
        }
    };
}

body_impl!(RequestBody);
body_impl!(ResponseBody);

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, Full};

    #[tokio::test]
    async fn full_bodies_yield_their_bytes_once_and_end() {
        let body = ResponseBody::<Empty<Bytes>>::full(Bytes::from_static(b"abc"));
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(!body.is_end_stream());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
        let empty = RequestBody::<Empty<Bytes>>::full(Bytes::new());
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn inner_bodies_pass_through() {
        let body = RequestBody::inner(Full::new(Bytes::from_static(b"xyz")));
        assert_eq!(body.size_hint().exact(), Some(3));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "xyz");
    }
}
