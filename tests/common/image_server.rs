//! A protected image server on loopback, like an archive's HTTPS datastore behind token auth:
//! it serves the files of one directory under `/images/` only to a request whose Bearer token is
//! one of its readers' (401 without a token, 403 with another), and records every
//! `Authorization` it was shown.
//!
//! It answers `Range: bytes=A-B` with 206 and `Content-Range`, and `If-Match` with 412 when
//! the ETag (the file's size and a version counter bumped on each replacement) differs, as a
//! real server would; it logs every request (range asked, bytes sent), and can misbehave on
//! demand: replace a file between two requests, ignore `If-Match` (as some servers do), send
//! fewer bytes than its `Content-Range` promises, or answer a shorter range than was asked.
//!
//! Started with [`ImageServer::start_public`], it serves anyone, like an archive's public
//! download area (where a bulk catalogue may be fetched from); it can also redirect a name
//! elsewhere, and send whole files without a `Content-Length`, as a server streaming them does.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    log: Mutex<Vec<Served>>,
    /// Contents that replace a file, one after each request for it.
    replacements: Mutex<VecDeque<(String, Vec<u8>)>>,
    version: AtomicU64,
    short_reads: Mutex<ShortReads>,
    ignore_if_match: AtomicBool,
    /// Serves without a token.
    public: bool,
    /// Names answered `302 Found` to another URL.
    redirects: Mutex<HashMap<String, String>>,
    /// Whole files are sent as a stream of chunks, with no `Content-Length`.
    without_length: AtomicBool,
}

/// How a ranged answer falls short of what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortReads {
    /// Whole answers.
    Off,
    /// One byte less than its own `Content-Range` says.
    Body,
    /// A `Content-Range` one byte shorter than asked, and that many bytes: a consistent answer
    /// to another question.
    Range,
}

/// One request, as the server saw it.
#[derive(Debug, Clone)]
pub struct Served {
    pub method: String,
    pub name: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
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
        ImageServer::start_serving(dir, readers, false)
    }

    /// Serves `dir` to anyone, token or not.
    pub fn start_public(dir: PathBuf) -> ImageServer {
        ImageServer::start_serving(dir, &[], true)
    }

    fn start_serving(dir: PathBuf, readers: &[&str], public: bool) -> ImageServer {
        let shared = Arc::new(Shared {
            dir,
            readers: readers.iter().map(|r| (*r).to_owned()).collect(),
            seen: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            replacements: Mutex::new(VecDeque::new()),
            version: AtomicU64::new(0),
            short_reads: Mutex::new(ShortReads::Off),
            ignore_if_match: AtomicBool::new(false),
            public,
            redirects: Mutex::new(HashMap::new()),
            without_length: AtomicBool::new(false),
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

    /// Every request answered so far.
    pub fn log(&self) -> Vec<Served> {
        self.shared.log.lock().expect("log").clone()
    }

    pub fn clear_log(&self) {
        self.shared.log.lock().expect("log").clear();
    }

    /// After each of the next requests for `name`, replace it with the next of `versions` (other
    /// files' replacements wait their own requests).
    pub fn replace_after_requests(&self, name: &str, versions: Vec<Vec<u8>>) {
        let mut queue = self.shared.replacements.lock().expect("replacements");
        queue.extend(versions.into_iter().map(|v| (name.to_owned(), v)));
    }

    /// Replaces `name` now (a new version, so a new ETag).
    pub fn replace(&self, name: &str, bytes: Vec<u8>) {
        std::fs::write(self.shared.dir.join(name), bytes).expect("replace");
        self.shared.version.fetch_add(1, Ordering::SeqCst);
    }

    /// Ranged answers fall short this way from now on.
    pub fn send_short_reads(&self, how: ShortReads) {
        *self.shared.short_reads.lock().expect("short reads") = how;
    }

    /// `If-Match` is ignored (the answer still names the current ETag).
    pub fn ignore_if_match(&self, on: bool) {
        self.shared.ignore_if_match.store(on, Ordering::SeqCst);
    }

    /// A request for `name` is answered `302 Found` with `Location: to`.
    pub fn redirect(&self, name: &str, to: &str) {
        let mut redirects = self.shared.redirects.lock().expect("redirects");
        redirects.insert(name.to_owned(), to.to_owned());
    }

    /// Whole files go as a stream of chunks with no `Content-Length` from now on.
    pub fn send_without_length(&self, on: bool) {
        self.shared.without_length.store(on, Ordering::SeqCst);
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
    method: axum::http::Method,
    headers: HeaderMap,
) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = answer(&shared, &name, &headers, range.as_deref());
    // A HEAD answer's body is dropped on the way out.
    let bytes = if method == axum::http::Method::HEAD {
        0
    } else {
        axum::body::HttpBody::size_hint(response.body())
            .exact()
            .unwrap_or(0)
    };
    shared.log.lock().expect("log").push(Served {
        method: method.to_string(),
        name: name.clone(),
        range,
        status: response.status().as_u16(),
        bytes,
    });
    let next = {
        let mut queue = shared.replacements.lock().expect("replacements");
        queue
            .iter()
            .position(|(n, _)| *n == name)
            .and_then(|i| queue.remove(i))
    };
    if let Some((name, bytes)) = next {
        std::fs::write(shared.dir.join(&name), bytes).expect("replace");
        shared.version.fetch_add(1, Ordering::SeqCst);
    }
    response
}

fn answer(shared: &Shared, name: &str, headers: &HeaderMap, range: Option<&str>) -> Response {
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
    if let Some(to) = shared.redirects.lock().expect("redirects").get(name) {
        return (StatusCode::FOUND, [(header::LOCATION, to.clone())]).into_response();
    }
    if !shared.public {
        let Some(token) = authorization.strip_prefix("Bearer ") else {
            return (StatusCode::UNAUTHORIZED, "a token is required").into_response();
        };
        if !shared.readers.iter().any(|r| r == token) {
            return (StatusCode::FORBIDDEN, "this token may not read images").into_response();
        }
    }
    if name.contains('/') || name.starts_with('.') {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Ok(mut file) = std::fs::File::open(shared.dir.join(name)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let size = file.metadata().expect("metadata").len();
    let etag = format!("\"{size}-{}\"", shared.version.load(Ordering::SeqCst));
    if let Some(wanted) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
        && wanted != etag
        && !shared.ignore_if_match.load(Ordering::SeqCst)
    {
        return StatusCode::PRECONDITION_FAILED.into_response();
    }
    let Some(range) = range else {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).expect("read");
        if shared.without_length.load(Ordering::SeqCst) {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                bytes.chunks(4096).map(|c| Ok(c.to_vec())).collect();
            let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
            return ([(header::ETAG, etag)], body).into_response();
        }
        return (
            [
                (header::CONTENT_TYPE, "application/fits".to_owned()),
                (header::ETAG, etag),
            ],
            bytes,
        )
            .into_response();
    };
    let parsed = range.strip_prefix("bytes=").and_then(|r| {
        let (a, b) = r.split_once('-')?;
        let a: u64 = a.parse().ok()?;
        let b: u64 = if b.is_empty() {
            size - 1
        } else {
            b.parse().ok()?
        };
        (a < size && a <= b).then_some((a, b.min(size - 1)))
    });
    let Some((first, mut last)) = parsed else {
        return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
    };
    let short = *shared.short_reads.lock().expect("short reads");
    if short == ShortReads::Range && last > first {
        last -= 1;
    }
    let mut bytes = vec![0u8; (last - first + 1) as usize];
    file.seek(SeekFrom::Start(first)).expect("seek");
    file.read_exact(&mut bytes).expect("read");
    if short == ShortReads::Body {
        bytes.pop();
    }
    (
        StatusCode::PARTIAL_CONTENT,
        [
            (header::CONTENT_TYPE, "application/fits".to_owned()),
            (header::ETAG, etag),
            (
                header::CONTENT_RANGE,
                format!("bytes {first}-{last}/{size}"),
            ),
        ],
        bytes,
    )
        .into_response()
}
