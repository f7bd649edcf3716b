//! A protected image server on loopback, like an archive's HTTPS datastore behind token auth:
//! it serves the files of one directory under `/images/` only to a request whose Bearer token is
//! one of its readers' (401 without a token, 403 with another), and records every
//! `Authorization` it was shown.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

struct Shared {
    dir: PathBuf,
    readers: Vec<String>,
    seen: Mutex<Vec<String>>,
}

pub struct ImageServer {
    /// `http://127.0.0.1:PORT/images`: a repository location.
    pub url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ImageServer {
    /// Serves `dir` to the holders of `readers`' tokens.
    pub fn start(dir: PathBuf, readers: &[&str]) -> ImageServer {
        let shared = Arc::new(Shared {
            dir,
            readers: readers.iter().map(|r| (*r).to_owned()).collect(),
            seen: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}/images", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/images/{name}", get(serve))
            .with_state(shared.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        stopped.await.ok();
                    })
                    .await
                    .expect("image server");
            });
        });
        ImageServer {
            url,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Every `Authorization` header value received so far ("" for a request without one).
    pub fn authorizations(&self) -> Vec<String> {
        self.shared.seen.lock().expect("seen").clone()
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

async fn serve(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    shared
        .seen
        .lock()
        .expect("seen")
        .push(authorization.clone());
    let Some(token) = authorization.strip_prefix("Bearer ") else {
        return (StatusCode::UNAUTHORIZED, "a token is required").into_response();
    };
    if !shared.readers.iter().any(|r| r == token) {
        return (StatusCode::FORBIDDEN, "this token may not read images").into_response();
    }
    if name.contains('/') || name.starts_with('.') {
        return StatusCode::NOT_FOUND.into_response();
    }
    match std::fs::read(shared.dir.join(&name)) {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "application/fits".to_owned()),
                (header::ETAG, format!("\"{}\"", bytes.len())),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
