//! The body of a response that went through the cache: bytes from the cache (or an origin body
//! read to the end to be stored), or the origin's body passed through as it streams.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

/// A boxed error, as bodies report them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

pin_project_lite::pin_project! {
    /// The body of a response that went through the cache ([`CacheLayer`](super::CacheLayer)):
    /// either whole bytes (served from the cache, or read from the origin to be stored) or the
    /// origin's own body streaming through (a response the cache does not store, or one that
    /// turned out too large to store, after the bytes read before that was known). An
    /// [`http_body::Body`] of [`Bytes`].
    ///
    /// ```
    /// use http_body::Body;
    /// fn is_a_body<B: Body>() {}
    /// is_a_body::<dynacache::http::CacheBody<http_body_util::Empty<bytes::Bytes>>>();
    /// ```
    #[derive(Debug)]
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Full { bytes: Option<Bytes> },
        Streaming { prefix: Option<Bytes>, #[pin] rest: B },
        Broken { error: Option<BoxError> },
        Stored {
            first: Option<Bytes>,
            rx: tokio::sync::mpsc::Receiver<crate::Result<Bytes>>,
            remaining: u64,
        },
    }
}

impl<B> CacheBody<B> {
    /// A body of these bytes.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        CacheBody {
            kind: Kind::Full {
                bytes: (!bytes.is_empty()).then_some(bytes),
            },
        }
    }

    /// The origin's body, after `prefix` (bytes already read from it).
    pub(crate) fn streaming(prefix: Bytes, rest: B) -> Self {
        CacheBody {
            kind: Kind::Streaming {
                prefix: (!prefix.is_empty()).then_some(prefix),
                rest,
            },
        }
    }

    /// A body that fails when read: the origin's body broke off, and the caller must see an
    /// error rather than a truncated body that looks complete.
    pub(crate) fn broken(error: BoxError) -> Self {
        CacheBody {
            kind: Kind::Broken { error: Some(error) },
        }
    }

    /// A body of `len` bytes streamed from its chunks in the table (see
    /// `Store::stream_chunks`): fails, rather than ending early, when they cannot be read.
    pub(crate) fn stored(
        len: u64,
        first: Option<Bytes>,
        rx: tokio::sync::mpsc::Receiver<crate::Result<Bytes>>,
    ) -> Self {
        CacheBody {
            kind: Kind::Stored {
                first,
                rx,
                remaining: len,
            },
        }
    }

    /// The bytes, when the body is whole.
    /// The whole body, when it is in memory (a response served from the cache, or read from
    /// the origin to be stored); `None` while it streams.
    ///
    /// ```
    /// use dynacache::http::CacheBody;
    /// fn whole(body: &CacheBody<http_body_util::Empty<bytes::Bytes>>) -> Option<bytes::Bytes> {
    ///     body.as_full()
    /// }
    /// ```
    pub fn as_full(&self) -> Option<Bytes> {
        match &self.kind {
            Kind::Full { bytes } => Some(bytes.clone().unwrap_or_default()),
            _ => None,
        }
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Full { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            KindProj::Streaming { prefix, rest } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                rest.poll_frame(cx).map_err(Into::into)
            }
            KindProj::Broken { error } => Poll::Ready(error.take().map(Err)),
            KindProj::Stored {
                first,
                rx,
                remaining,
            } => match first
                .take()
                .map(|b| Some(Ok(b)))
                .map_or_else(|| rx.poll_recv(cx), Poll::Ready)
            {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    *remaining = remaining.saturating_sub(bytes.len() as u64);
                    Poll::Ready(Some(Ok(Frame::data(bytes))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) if *remaining > 0 => {
                    *remaining = 0;
                    Poll::Ready(Some(Err("the stored body ended early".into())))
                }
                Poll::Ready(None) => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { bytes } => bytes.is_none(),
            Kind::Streaming { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
            Kind::Broken { error } => error.is_none(),
            // The end is known when the chunks' task has closed the channel (after its last
            // check), not when the last byte has been received.
            Kind::Stored { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Kind::Streaming { prefix, rest } => {
                let extra = prefix.as_ref().map_or(0, |b| b.len() as u64);
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(extra));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(extra));
                }
                hint
            }
            Kind::Broken { .. } => SizeHint::default(),
            Kind::Stored { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

/// A body read up to a limit.
pub(crate) enum Limited<B> {
    /// All of it.
    Complete(Bytes),
    /// More than the limit: what was read, and the rest still to stream.
    TooLarge(Bytes, B),
}

/// Reads a body to its end, or until it passes `max` bytes.
pub(crate) async fn read_limited<B>(mut body: B, max: usize) -> Result<Limited<B>, BoxError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Into::into)?;
        if let Ok(data) = frame.into_data() {
            if buf.is_empty() && data.len() <= max && body.is_end_stream() {
                // The whole body in one frame: no copy.
                return Ok(Limited::Complete(data));
            }
            buf.extend_from_slice(&data);
            if buf.len() > max {
                return Ok(Limited::TooLarge(buf.freeze(), body));
            }
        }
    }
    Ok(Limited::Complete(buf.freeze()))
}
