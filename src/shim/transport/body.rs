//! Response bodies: a whole JSON document, or a stream of chunks fed by a channel (a watch), each chunk sent to
//! the client as soon as it is produced. Knows nothing of what the chunks mean.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body as HttpBody, Frame};
use tokio::sync::mpsc;

pub type Body = Either<Full<Bytes>, ChannelBody>;

/// The chunks a task sends into the channel, until it drops its sender; dropping this body (the client left)
/// makes the task's next send fail, which ends it.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> ChannelBody {
        ChannelBody { rx }
    }
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Left(Full::new(bytes.into()))
}

pub fn streamed(rx: mpsc::Receiver<Bytes>) -> Body {
    Either::Right(ChannelBody::new(rx))
}
