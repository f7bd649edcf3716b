//! The HTTP server every role runs its router on, with the limits a slow or greedy client meets.
//!
//! `axum::serve` has no timeouts and no connection cap: an idle socket stays open for ever, a
//! body sent at one byte a second is read for as long as it lasts, and enough idle connections
//! exhaust the process's file descriptors. [`serve`] accepts connections itself and hands each to
//! hyper's HTTP/1 server with
//! - a header timeout (hyper's `header_read_timeout`, which starts as soon as the connection
//!   waits for a request: it is also how long a kept-alive connection may sit idle),
//! - a deadline on each request body, counted from the request's arrival (not reset by each
//!   byte, so a trickle cannot stretch it),
//! - a cap on connections open at once: one more is answered `503` at once and closed, rather
//!   than left waiting in the accept queue.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// What a client may take of one server (`[http]` in the configuration).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From the moment a connection waits for a request until the request head has arrived.
    pub header_timeout: Duration,
    /// From a request's arrival until its whole body has arrived.
    pub body_timeout: Duration,
    /// Connections open at once; one more is answered 503 and closed.
    pub max_connections: usize,
}

/// What a connection beyond the cap is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nContent-Length: 39\r\nConnection: close\r\n\r\nServiceUnavailable: too many connections";

/// How long a refused connection is given to take [`BUSY`].
const BUSY_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a stopping server lets open connections finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown`, then lets open connections finish (up to
/// [`DRAIN_TIMEOUT`]). Each request carries the peer's [`ConnectInfo<SocketAddr>`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let max = limits.max_connections.max(1);
    let open = Arc::new(Semaphore::new(max));
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Without TCP_NODELAY a response written in pieces (headers, then body) waits for the
        // client's delayed ACK: 40 ms per result download.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
        match open.clone().try_acquire_owned() {
            Ok(permit) => {
                let router = router.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    serve_connection(tcp, peer, router, limits, shutdown).await;
                    drop(permit);
                });
            }
            Err(_) => {
                metrics::counter!("skycut_http_connections_refused_total").increment(1);
                tokio::spawn(refuse(tcp));
            }
        }
    }
    drop(listener);
    // Every connection holds a permit until it ends.
    let max = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, open.acquire_many(max))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
    Ok(())
}

/// Answers 503 to a connection beyond the cap, without reading its request.
async fn refuse(mut tcp: TcpStream) {
    let _ = tokio::time::timeout(BUSY_WRITE_TIMEOUT, async {
        tcp.write_all(BUSY).await?;
        tcp.shutdown().await
    })
    .await;
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let router = router.clone();
        async move {
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(ConnectInfo(peer));
            // A request without a body (every GET of a sync cutout or a result) needs no
            // deadline: no timer is armed for it, which many small requests would each pay.
            let body = if body.is_end_stream() {
                Body::new(body)
            } else {
                Body::new(DeadlineBody {
                    inner: body,
                    deadline: Box::pin(tokio::time::sleep(limits.body_timeout)),
                })
            };
            router.oneshot(Request::from_parts(parts, body)).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let connection = builder.serve_connection(TokioIo::new(tcp), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended");
            }
        }
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended");
            }
        }
    }
}

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    inner: hyper::body::Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl HttpBody for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request body not received within the body timeout",
            )
            .into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
