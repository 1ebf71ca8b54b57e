//! A request that waited for a permit carries, on its response, when it was really sent
//! (`SentAt`), so layers outside count its costs from then.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use ratelayer_concurrency::{ConcurrencyConfig, ConcurrencyLayer, Limits};
use ratelayer_core::SentAt;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

fn request() -> Request<String> {
    common::req("p", "")
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_says_when_it_was_sent() {
    let layer = ConcurrencyLayer::new(
        ConcurrencyConfig::new().provider("p", Limits::new().max_concurrent(1)),
    )
    .unwrap();
    let svc = layer.layer(tower::service_fn(|_req: Request<String>| async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
    }));
    let t0 = Instant::now();
    let first = async {
        let resp = svc.clone().oneshot(request()).await.unwrap();
        let sent = resp.extensions().get::<SentAt>().copied();
        resp.into_body().collect().await.unwrap();
        sent
    };
    let second = async {
        let resp = svc.clone().oneshot(request()).await.unwrap();
        resp.extensions().get::<SentAt>().copied()
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first, None, "sent at once: nothing to correct");
    assert_eq!(second, Some(SentAt(t0 + Duration::from_secs(2))));
}
