//! Proxies between a role and a server it calls, each with one misbehaviour made deterministic.
//!
//! [`LossyProxy`] sits between the roles and wobbly and loses answers on purpose: it forwards
//! every request, and for the first N `POST /v1/jobs` (optionally also job reads,
//! `GET /v1/jobs/…`) it waits for wobbly's whole answer and then closes the caller's connection
//! without passing it on. Wobbly has acted (the job is stored), the caller hears a broken
//! connection: the lost answer of a create.
//!
//! [`DelayingProxy`] sits between a worker and a store (moto) and answers in rounds, each at
//! least a fixed delay after its first request: a store that far away, whose answers to
//! requests sent together come back together however slowly the real server works. Counting
//! its rounds ([`DelayingProxy::round_trips`]) counts the round trips a read waited for one
//! after another.
//!
//! HTTP/1.1 only as far as these callers speak it: requests with a `Content-Length` body (or
//! none), one upstream connection per request (`Connection: close` both ways, answer read to
//! EOF).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

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
    let Some(request) = read_request(&client) else {
        return;
    };
    let Some(address) = upstream.get() else {
        return;
    };
    let Some(answer) = forward(address, &request) else {
        return;
    };
    if lose.iter().any(|l| request.line.starts_with(l))
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

/// One request as it goes upstream: its head with `connection: close` put in place of any
/// `Connection` header, and its body.
struct Request {
    /// The request line (`GET /path HTTP/1.1`).
    line: String,
    head: Vec<u8>,
    body: Vec<u8>,
}

fn read_request(client: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(client.try_clone().ok()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut request_line = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
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
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        line: request_line,
        head,
        body,
    })
}

/// The server's whole answer to `request`, read to the end of its connection.
fn forward(address: &str, request: &Request) -> Option<Vec<u8>> {
    let mut server = TcpStream::connect(address).ok()?;
    let mut answer = Vec::new();
    server
        .write_all(&request.head)
        .and_then(|()| server.write_all(&request.body))
        .and_then(|()| server.read_to_end(&mut answer))
        .ok()?;
    Some(answer)
}

/// Marks an answer `connection: close` (in place of any `Connection` header the server sent), so
/// the caller never keeps a connection the proxy is about to close.
fn closing(answer: &[u8]) -> Vec<u8> {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer.to_vec();
    };
    let head = String::from_utf8_lossy(&answer[..end]);
    let mut out = Vec::with_capacity(answer.len() + 20);
    for (i, line) in head.split("\r\n").enumerate() {
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(&answer[end + 4..]);
    out
}

/// One request through a [`DelayingProxy`].
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The request line (`GET /bucket/key HTTP/1.1`).
    pub request: String,
    /// The round trip it was answered in, counted from 1 since the proxy started.
    pub round: u64,
}

/// The round being gathered: requests arrive, the server answers them, and the answers wait
/// until the round is let go.
#[derive(Default)]
struct Rounds {
    /// The round now gathering requests.
    open: u64,
    /// The last round let go.
    released: u64,
    first_arrival: Option<Instant>,
    last_arrival: Option<Instant>,
    /// Requests of the open round the server has not answered yet.
    unanswered: usize,
    /// Answers of the open round waiting to be let go.
    held: usize,
}

/// A store `delay` away, answering in rounds: see the module documentation.
pub struct DelayingProxy {
    /// `http://ADDR`, to configure in place of the server's URL.
    pub url: String,
    log: Arc<Mutex<Vec<Exchange>>>,
}

impl DelayingProxy {
    /// Forwards to the server at `upstream` (`http://ADDR`). Answers are let go in rounds: a
    /// round's answers leave together once the server has answered all of them, no request
    /// has arrived for `quiet`, and `delay` has passed since the round's first request.
    pub fn start(upstream: &str, delay: Duration, quiet: Duration) -> DelayingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let address = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let log: Arc<Mutex<Vec<Exchange>>> = Arc::default();
        let rounds: Arc<(Mutex<Rounds>, Condvar)> = Arc::new((
            Mutex::new(Rounds {
                open: 1,
                ..Rounds::default()
            }),
            Condvar::new(),
        ));
        let releaser = rounds.clone();
        std::thread::spawn(move || {
            let (state, changed) = &*releaser;
            loop {
                std::thread::sleep(Duration::from_millis(5));
                let mut r = state.lock().expect("rounds");
                let now = Instant::now();
                let due = r.held > 0
                    && r.unanswered == 0
                    && r.last_arrival.is_some_and(|t| now >= t + quiet)
                    && r.first_arrival.is_some_and(|t| now >= t + delay);
                if due {
                    r.released = r.open;
                    r.open += 1;
                    (r.first_arrival, r.last_arrival, r.held) = (None, None, 0);
                    changed.notify_all();
                }
            }
        });
        let shared = log.clone();
        std::thread::spawn(move || {
            for mut client in listener.incoming().flatten() {
                let (address, log, rounds) = (address.clone(), shared.clone(), rounds.clone());
                std::thread::spawn(move || {
                    let Some(request) = read_request(&client) else {
                        return;
                    };
                    let (state, changed) = &*rounds;
                    let round = {
                        let mut r = state.lock().expect("rounds");
                        let now = Instant::now();
                        r.first_arrival.get_or_insert(now);
                        r.last_arrival = Some(now);
                        r.unanswered += 1;
                        r.open
                    };
                    let answer = forward(&address, &request);
                    {
                        let mut r = state.lock().expect("rounds");
                        r.unanswered -= 1;
                        r.held += 1;
                        while r.released < round {
                            r = changed.wait(r).expect("rounds");
                        }
                    }
                    let Some(answer) = answer else {
                        return;
                    };
                    let _ = client.write_all(&closing(&answer));
                    let _ = client.shutdown(Shutdown::Both);
                    log.lock().expect("log").push(Exchange {
                        request: request.line.trim_end().to_owned(),
                        round,
                    });
                });
            }
        });
        DelayingProxy { url, log }
    }

    /// Every request answered since the last [`DelayingProxy::clear_log`], in the order the
    /// answers left.
    pub fn log(&self) -> Vec<Exchange> {
        self.log.lock().expect("log").clone()
    }

    pub fn clear_log(&self) {
        self.log.lock().expect("log").clear();
    }

    /// The round trips the logged requests took: requests sent together (within `quiet` of
    /// each other) count once however many there are, and a request sent only once an answer
    /// came counts again. It does not depend on how long the server took.
    pub fn round_trips(&self) -> usize {
        let mut rounds: Vec<u64> = self.log().iter().map(|e| e.round).collect();
        rounds.sort_unstable();
        rounds.dedup();
        rounds.len()
    }
}
