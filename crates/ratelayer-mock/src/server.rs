//! The mock served over HTTP (HTTP/1.1 and HTTP/2, hyper-util) on a local address.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tower_service::Service;

use crate::MockProvider;

/// A running HTTP mock; see [`serve`]. Dropping it stops the server and closes its
/// connections (so does [`shutdown`](Self::shutdown), which also waits for that).
///
/// ```
/// # use bytes::Bytes;
/// use http_body_util::Full;
/// use hyper_util::{client::legacy::Client, rt::TokioExecutor};
/// use ratelayer_core::Dialect;
/// use ratelayer_mock::{ChatRequest, MockProvider};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mock = MockProvider::builder().rpm(60).build().unwrap();
/// let server = mock.serve(([127, 0, 0, 1], 0).into()).await.unwrap();
/// let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
/// let req = ChatRequest::new("gpt-4o-mini").base_url(server.url()).user("Hi");
/// let resp = client.request(req.build(Dialect::OpenAi)).await.unwrap();
/// assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "59");
/// server.shutdown().await;
/// assert!(client.request(req.build(Dialect::OpenAi)).await.is_err()); // stopped
/// # }
/// ```
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// The bound address (with the real port when `0` was asked for).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let mock = ratelayer_mock::MockProvider::builder().build().unwrap();
    /// let server = ratelayer_mock::serve(mock, ([127, 0, 0, 1], 0).into()).await.unwrap();
    /// assert_ne!(server.local_addr().port(), 0);
    /// # }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, such as `http://127.0.0.1:40123`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let mock = ratelayer_mock::MockProvider::builder().build().unwrap();
    /// let server = ratelayer_mock::serve(mock, ([127, 0, 0, 1], 0).into()).await.unwrap();
    /// assert!(server.url().starts_with("http://127.0.0.1:"));
    /// # }
    /// ```
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, closes every connection and waits until the server task ended.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let mock = ratelayer_mock::MockProvider::builder().build().unwrap();
    /// let server = ratelayer_mock::serve(mock, ([127, 0, 0, 1], 0).into()).await.unwrap();
    /// let addr = server.local_addr();
    /// server.shutdown().await;
    /// assert!(tokio::net::TcpStream::connect(addr).await.is_err()); // no longer listening
    /// # }
    /// ```
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl MockProvider {
    /// Serves this provider (sharing its state) over HTTP on `addr`; see [`serve`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mock = ratelayer_mock::MockProvider::builder().rpm(60).build().unwrap();
    /// let server = mock.serve(([127, 0, 0, 1], 0).into()).await.unwrap();
    /// assert!(server.local_addr().ip().is_loopback());
    /// # }
    /// ```
    pub async fn serve(&self, addr: SocketAddr) -> io::Result<MockServer> {
        serve(self.clone(), addr).await
    }
}

/// Serves `provider` over HTTP on `addr` (use a loopback address such as
/// `127.0.0.1:0`), returning once it is bound.
///
/// The provider keeps its in-process behaviour: the same limits, journal and faults; a
/// connection-closed fault drops the connection without an answer and a cut stream
/// aborts the response body. Time is `tokio::time`, which runs in real time here.
///
/// ```
/// # use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mock = ratelayer_mock::MockProvider::builder().rpm(60).build().unwrap();
/// let server = ratelayer_mock::serve(mock.clone(), ([127, 0, 0, 1], 0).into()).await.unwrap();
/// let mut conn = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
/// conn.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
/// let mut answer = String::new();
/// conn.read_to_string(&mut answer).await.unwrap();
/// assert!(answer.starts_with("HTTP/1.1 "));
/// assert_eq!(mock.journal().len(), 1); // the clone shares the journal
/// # }
/// ```
pub async fn serve(provider: MockProvider, addr: SocketAddr) -> io::Result<MockServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        tracing::trace!(%peer, "mock: connection accepted");
                        let provider = provider.clone();
                        conns.spawn(async move {
                            let service = hyper::service::service_fn(
                                move |req: http::Request<Incoming>| provider.clone().call(req),
                            );
                            let builder = auto::Builder::new(TokioExecutor::new());
                            if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                                tracing::trace!(error = %e, "mock: connection ended with an error");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "mock: accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.shutdown().await;
    });
    Ok(MockServer {
        addr,
        stop: Some(stop),
        task: Some(task),
    })
}
