//! Error bodies read to classify them are handed back whole: data, trailers and a read
//! error in their order; success bodies pass through unread.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use ratelayer_core::{BoxError, LimitState, ReplayBody};
use ratelayer_retry::{Backoff, BackoffRetryLayer};
use tower::{Layer, ServiceExt, service_fn};

/// A body of scripted frames.
struct Frames(VecDeque<Result<Frame<Bytes>, std::io::Error>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.0.pop_front())
    }
}

async fn through(status: u16, frames: Vec<Result<Frame<Bytes>, std::io::Error>>) -> Vec<String> {
    let frames = std::sync::Arc::new(std::sync::Mutex::new(Some(frames)));
    let inner = service_fn(move |_req: Request<ReplayBody>| {
        let f = frames.lock().unwrap().take().unwrap();
        std::future::ready(Ok::<_, BoxError>(
            Response::builder()
                .status(status)
                .body(Frames(f.into()))
                .unwrap(),
        ))
    });
    let svc = BackoffRetryLayer::builder(LimitState::new())
        .transient(Backoff::new(Duration::from_millis(500), 2.0, 0))
        .max_error_body(4)
        .build()
        .unwrap()
        .layer(inner);
    let resp = svc
        .oneshot(Request::new(ReplayBody::empty()))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut out = vec![];
    while let Some(f) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        out.push(match f {
            Ok(f) if f.is_data() => {
                format!("data {}", String::from_utf8_lossy(&f.into_data().unwrap()))
            }
            Ok(f) => format!("trailers {}", f.into_trailers().unwrap().len()),
            Err(e) => format!("error {}", e.kind()),
        });
    }
    out
}

fn data(s: &'static str) -> Result<Frame<Bytes>, std::io::Error> {
    Ok(Frame::data(Bytes::from_static(s.as_bytes())))
}

fn trailers() -> Result<Frame<Bytes>, std::io::Error> {
    let mut t = HeaderMap::new();
    t.insert("x-t", "1".parse().unwrap());
    Ok(Frame::trailers(t))
}

#[tokio::test(start_paused = true)]
async fn frames_come_back_in_order() {
    // Within the bound: read whole (trailers kept).
    assert_eq!(
        through(500, vec![data("ab"), trailers()]).await,
        ["data ab", "trailers 1"]
    );
    // Beyond the bound (4 bytes): the read part, then the rest unread.
    assert_eq!(
        through(500, vec![data("abc"), data("def"), data("gh"), trailers()]).await,
        ["data abcdef", "data gh", "trailers 1"]
    );
    // A read error while classifying is handed back after the bytes before it.
    let broken = Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    assert_eq!(
        through(500, vec![data("ab"), broken]).await,
        ["data ab", "error connection reset"]
    );
    // Success bodies are not read: frames pass through one by one.
    assert_eq!(
        through(200, vec![data("a"), data("b"), trailers()]).await,
        ["data a", "data b", "trailers 1"]
    );
}
