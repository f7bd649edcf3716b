//! A proxy between the roles and wobbly that loses answers on purpose: it forwards every request,
//! and for the first N `POST /v1/jobs` (optionally also job reads, `GET /v1/jobs/…`) it waits for
//! wobbly's whole answer and then closes the caller's connection without passing it on. Wobbly has acted (the job is stored), the caller
//! hears a broken connection: the lost answer of a create, made deterministic.
//!
//! HTTP/1.1 only as far as the roles speak it to wobbly: requests with a `Content-Length` body
//! (or none), one upstream connection per request (`Connection: close`, answer read to EOF).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

pub struct LossyProxy {
    /// `http://ADDR` for the roles to use as wobbly's URL.
    pub url: String,
    upstream: Arc<OnceLock<String>>,
    /// Request lines whose answers are lost.
    lose: &'static [&'static str],
    to_drop: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl LossyProxy {
    /// Loses the answers of the first `n` creates.
    pub fn dropping_creates(n: usize) -> LossyProxy {
        LossyProxy::start(n, &["POST /v1/jobs "])
    }

    /// Loses the answers of every create and every read of one job: a frontend that gives up
    /// cannot learn whether the job exists.
    pub fn dropping_creates_and_reads() -> LossyProxy {
        LossyProxy::start(usize::MAX, &["POST /v1/jobs ", "GET /v1/jobs/"])
    }

    /// Listens at once; forwards once [`LossyProxy::forward_to`] names wobbly's address.
    fn start(n: usize, lose: &'static [&'static str]) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let proxy = LossyProxy {
            url,
            upstream: Arc::default(),
            lose,
            to_drop: Arc::new(AtomicUsize::new(n)),
            dropped: Arc::default(),
        };
        let (upstream, to_drop, dropped) = (
            proxy.upstream.clone(),
            proxy.to_drop.clone(),
            proxy.dropped.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, to_drop, dropped) =
                    (upstream.clone(), to_drop.clone(), dropped.clone());
                std::thread::spawn(move || serve(client, &upstream, lose, &to_drop, &dropped));
            }
        });
        proxy
    }

    /// Wobbly's base URL (`http://ADDR`).
    pub fn forward_to(&self, wobbly: &str) {
        let address = wobbly.trim_start_matches("http://").trim_end_matches('/');
        let _ = self.upstream.set(address.to_owned());
    }

    /// How many answers were lost so far.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

/// One request per connection: the answer carries wobbly's `connection: close`, so the caller
/// opens a new connection for its next request.
fn serve(
    mut client: TcpStream,
    upstream: &OnceLock<String>,
    lose: &[&str],
    to_drop: &AtomicUsize,
    dropped: &AtomicUsize,
) {
    let mut reader = BufReader::new(client.try_clone().expect("clone stream"));
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut request_line = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if request_line.is_empty() {
            request_line = line.clone();
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            head.extend_from_slice(b"connection: close\r\n\r\n");
            break;
        }
        if !lower.starts_with("connection:") {
            head.extend_from_slice(line.as_bytes());
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let Some(address) = upstream.get() else {
        return;
    };
    let Ok(mut wobbly) = TcpStream::connect(address) else {
        return;
    };
    let mut answer = Vec::new();
    let forwarded = wobbly
        .write_all(&head)
        .and_then(|()| wobbly.write_all(&body))
        .and_then(|()| wobbly.read_to_end(&mut answer));
    if forwarded.is_err() {
        return;
    }
    if lose.iter().any(|l| request_line.starts_with(l))
        && to_drop
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        // Wobbly has answered (the job exists); the caller never hears it.
        dropped.fetch_add(1, Ordering::SeqCst);
    } else {
        let _ = client.write_all(&answer);
    }
    let _ = client.shutdown(Shutdown::Both);
}
