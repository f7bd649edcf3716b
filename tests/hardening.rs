//! What a hostile client can take of each role's HTTP port (`serve`, `frontend`, `wobbly`, the
//! worker's health port): metric labels it can mint, and connections it can hold by being slow.
//! Every exchange is raw TCP, so the test controls each byte and its timing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;

/// `HOST:PORT` of a `http://HOST:PORT…` URL.
fn address(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// Every role's port of a started app: (role, `HOST:PORT`).
fn ports(app: &TestApp) -> Vec<(&'static str, String)> {
    let mut ports = Vec::new();
    if app.is_distributed() {
        ports.push(("frontend", address(app.root())));
        ports.push(("wobbly", address(app.wobbly_url().expect("wobbly"))));
        ports.push(("worker", address(&app.worker_ops[0])));
    } else {
        ports.push(("serve", address(app.root())));
    }
    ports
}

fn connect(addr: &str) -> TcpStream {
    let tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    tcp
}

/// Sends `request` on a new connection and reads until the server closes it.
fn exchange(addr: &str, request: &[u8]) -> String {
    let mut tcp = connect(addr);
    tcp.write_all(request).expect("send");
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("{addr}: no answer: {e}"));
    String::from_utf8_lossy(&answer).into_owned()
}

/// Reads until the server closes the connection; returns how long that took and what it sent.
fn wait_closed(tcp: &mut TcpStream) -> (Duration, String) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("connection still open after {:?}: {e}", started.elapsed()),
        }
    }
    (
        started.elapsed(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

/// The body of `GET /metrics`.
fn metrics(addr: &str) -> String {
    let answer = exchange(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{addr}: {answer:.200}");
    answer
}

/// Requests with invented methods, each 10 KB long and different, before any authentication;
/// afterwards `/metrics` names none of them (they count as `other`) and stays small.
fn assert_odd_methods_leave_metrics_small(app: &TestApp) {
    for (role, addr) in ports(app) {
        for i in 0..20 {
            let method = format!("YYYY{i:04}{}", "Y".repeat(10 * 1024));
            let request = format!("{method} /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let answer = exchange(&addr, request.as_bytes());
            assert!(answer.starts_with("HTTP/1.1 "), "{role}: {answer:.200}");
        }
        let text = metrics(&addr);
        assert!(
            !text.contains("YYYY"),
            "{role}: a client-chosen method became a label"
        );
        assert!(
            text.contains(r#"method="other",route="unmatched""#),
            "{role}: odd methods not counted as other: {text:.3000}"
        );
        assert!(
            text.len() < 256 * 1024,
            "{role}: /metrics is {} bytes",
            text.len()
        );
    }
}

#[test]
fn odd_methods_are_counted_as_other_on_the_serve_port() {
    let app = app().topology(Topology::Embedded).start();
    assert_odd_methods_leave_metrics_small(&app);
}

#[test]
fn odd_methods_are_counted_as_other_on_every_distributed_port() {
    let app = app().topology(Topology::Distributed { workers: 1 }).start();
    assert_odd_methods_leave_metrics_small(&app);
}

/// A request whose body is sent one byte at a time, 200 ms apart, to a route that reads it.
fn slow_body_request(app: &TestApp, role: &str) -> Option<Vec<u8>> {
    let (path, auth) = match role {
        "serve" | "frontend" => ("/api/cutout/jobs".to_owned(), String::new()),
        "wobbly" => {
            let key = app
                .env_value("SKYCUT_WOBBLY__TOKEN_KEY")
                .expect("wobbly token key");
            let token = wobbly::TokenKey::new(key.as_bytes())
                .expect("key")
                .issue(&app.scope, None, 300)
                .expect("token");
            (
                "/v1/jobs".to_owned(),
                format!("Authorization: Bearer {token}\r\n"),
            )
        }
        // The worker's port has no route that reads a body.
        _ => return None,
    };
    Some(
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}X-Auth-Request-User: {DEFAULT_USER}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
        )
        .into_bytes(),
    )
}

/// With a 1 s header timeout, a 2 s body timeout and 4 connections at most: an idle connection,
/// a request head sent a byte at a time and a body sent a byte at a time are all cut off within
/// a few seconds, and a fifth connection is answered 503 at once while four are held open.
fn assert_slow_clients_are_cut_off(app: &TestApp) {
    for (role, addr) in ports(app) {
        // Idle: never sends a byte.
        let mut idle = connect(&addr);
        let (took, _) = wait_closed(&mut idle);
        assert!(took < Duration::from_secs(4), "{role}: idle for {took:?}");

        // Slowloris: a request head that never ends.
        let mut slow = connect(&addr);
        slow.write_all(b"GET /healthz HTTP/1.1\r\n").expect("send");
        let started = Instant::now();
        let mut cut_off = false;
        while started.elapsed() < Duration::from_secs(6) {
            std::thread::sleep(Duration::from_millis(200));
            if slow.write_all(b"X-A: b\r\n").is_err() {
                cut_off = true;
                break;
            }
        }
        if !cut_off {
            let (took, _) = wait_closed(&mut slow);
            assert!(
                took < Duration::from_secs(1),
                "{role}: slow head still read"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{role}: slow head read for {:?}",
            started.elapsed()
        );

        // A body at 5 bytes a second.
        if let Some(head) = slow_body_request(app, role) {
            let mut tcp = connect(&addr);
            tcp.write_all(&head).expect("send head");
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(8) {
                std::thread::sleep(Duration::from_millis(200));
                if tcp.write_all(b"a").is_err() {
                    break;
                }
                tcp.set_nonblocking(true).expect("nonblocking");
                let mut probe = [0u8; 1];
                let answered = !matches!(tcp.peek(&mut probe), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock);
                tcp.set_nonblocking(false).expect("blocking");
                if answered {
                    break;
                }
            }
            let (_, answer) = wait_closed(&mut tcp);
            assert!(
                started.elapsed() < Duration::from_secs(6),
                "{role}: a trickling body was read for {:?}: {answer:.200}",
                started.elapsed()
            );
        }

        // Four connections held open by sending half a request head; the fifth is refused.
        let held: Vec<TcpStream> = (0..4)
            .map(|_| {
                let mut tcp = connect(&addr);
                tcp.write_all(b"GET /healthz HTTP/1.1\r\n").expect("send");
                tcp
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let answer = exchange(
            &addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(
            answer.starts_with("HTTP/1.1 503"),
            "{role}: fifth connection: {answer:.200}"
        );
        drop(held);
        // Once they are gone the port serves again.
        let started = Instant::now();
        loop {
            let answer = exchange(
                &addr,
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            );
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{role}: still refused after the held connections closed: {answer:.200}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn slow_client_app(topology: Topology) -> TestApp {
    app()
        .topology(topology)
        .config("HTTP__HEADER_TIMEOUT", "1")
        .config("HTTP__BODY_TIMEOUT", "2")
        .config("HTTP__MAX_CONNECTIONS", "4")
        .start()
}

#[test]
fn slow_clients_are_cut_off_on_the_serve_port() {
    let app = slow_client_app(Topology::Embedded);
    assert_slow_clients_are_cut_off(&app);
}

#[test]
fn slow_clients_are_cut_off_on_every_distributed_port() {
    let app = slow_client_app(Topology::Distributed { workers: 1 });
    assert_slow_clients_are_cut_off(&app);
}

#[test]
fn status_pages_name_components_but_no_paths_and_forbid_sniffing() {
    let app = app().topology(Topology::Embedded).start();
    let data = app.dir.path().display().to_string();
    let r = app.get("/availability", &[]);
    assert_eq!(
        r.headers()
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    let availability = r.text().expect("body");
    assert!(availability.contains("result bucket: "), "{availability}");
    let ready = reqwest::blocking::get(format!("{}/readyz", app.root()))
        .expect("readyz")
        .text()
        .expect("body");
    assert!(ready.contains("result bucket: "), "{ready}");
    for body in [&availability, &ready] {
        assert!(!body.contains(&data), "a path is shown: {body}");
    }
    let r = app.get("/jobs/nothing", &[]);
    assert_eq!(
        r.headers()
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff"),
        "an error answer"
    );
}

/// `n` CIRCLE parameters of `radius_px` pixels on the test image, and its ID.
fn circles(n: usize, radius_px: f64) -> Vec<(&'static str, String)> {
    let mut params = vec![("ID", IMAGE.to_owned())];
    params.extend((0..n).map(|_| ("CIRCLE", circle(RA, DEC, radius_px))));
    params
}

fn refs<'a>(params: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    params.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

#[test]
fn oversized_cutouts_and_jobs_are_refused_naming_the_limit() {
    let app = app()
        .topology(Topology::Embedded)
        .config("JOBS__MAX_CUTOUT_PIXELS", "10000")
        .config("JOBS__MAX_JOB_BYTES", "200000")
        .start();
    // One 40-pixel-wide cutout (about 1,600 pixels): under both limits.
    app.create_job(&refs(&circles(1, 20.0)));
    // One 200-pixel-wide cutout: 40,000 pixels.
    for path in ["/jobs", "/sync"] {
        let r = app.post(path, &refs(&circles(1, 100.0)));
        assert_eq!(r.status(), 400, "{path}");
        let body = r.text().expect("body");
        assert!(
            body.starts_with("UsageError: ") && body.contains("max_cutout_pixels"),
            "{body}"
        );
    }
    // Ten 80-pixel-wide cutouts of about 6,400 pixels each, stored twice (one file each and
    // the combined file): far over 200,000 bytes.
    for path in ["/jobs", "/sync"] {
        let r = app.post(path, &refs(&circles(10, 40.0)));
        assert_eq!(r.status(), 400, "{path}");
        let body = r.text().expect("body");
        assert!(
            body.starts_with("UsageError: ") && body.contains("max_job_bytes"),
            "{body}"
        );
    }
    assert_eq!(app.job_ids(&[]).len(), 1, "a refused request created a job");
}

#[test]
fn only_soda_parameters_are_kept_and_their_size_is_capped() {
    let app = app().topology(Topology::Embedded).start();
    let filler = "x".repeat(100_000);
    let circle = circle(RA, DEC, 20.0);
    let id = app.create_job(&[
        ("ID", IMAGE),
        ("CIRCLE", &circle),
        ("FILLER", &filler),
        ("Unknown", "1"),
    ]);
    let parameters = app
        .get(&format!("/jobs/{id}/parameters"), &[])
        .text()
        .expect("body");
    assert!(parameters.contains("CIRCLE"), "{parameters}");
    assert!(
        !parameters.contains("FILLER") && !parameters.to_ascii_uppercase().contains("UNKNOWN"),
        "{parameters:.300}"
    );
    // Twelve polygons of 990 vertices: about 380 KB of SODA parameters.
    let polygon: String = (0..990)
        .map(|i| {
            let a = f64::from(i) / 990.0 * std::f64::consts::TAU;
            format!(
                "{:.12} {:.12} ",
                RA + 0.001 * a.cos(),
                DEC + 0.001 * a.sin()
            )
        })
        .collect();
    let mut params = vec![("ID", IMAGE)];
    params.extend(std::iter::repeat_n(("POLYGON", polygon.trim()), 12));
    let r = app.post("/jobs", &params);
    assert_eq!(r.status(), 400);
    let body = r.text().expect("body");
    assert!(body.contains("at most 262144"), "{body:.300}");
    assert_eq!(app.job_ids(&[]), vec![id]);
}

/// 40 creates at once; returns how many were admitted (303), checking the others were 429.
fn concurrent_creates(app: &TestApp, params: &[(&str, &str)]) -> usize {
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..40)
            .map(|_| {
                s.spawn(|| {
                    let r = app.post("/jobs", params);
                    let status = r.status().as_u16();
                    (status, r.text().unwrap_or_default())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let unexpected: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 303 && *status != 429)
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    answers.iter().filter(|(status, _)| *status == 303).count()
}

fn assert_jobs_per_hour_holds(app: &TestApp) {
    let circle = circle(RA, DEC, 20.0);
    let params = [("ID", IMAGE), ("CIRCLE", &circle[..])];
    assert_eq!(concurrent_creates(app, &params), 5);
    let ids = app.job_ids(&[]);
    assert_eq!(ids.len(), 5);
    // Deleting them gives nothing back: creations are counted in a ledger.
    for id in &ids {
        assert_eq!(app.delete(&format!("/jobs/{id}")).status(), 303);
    }
    assert!(app.job_ids(&[]).is_empty());
    let r = app.post("/jobs", &params);
    assert_eq!(r.status(), 429, "{}", r.text().unwrap_or_default());
}

#[test]
fn forty_concurrent_creates_admit_five_per_hour_and_deleting_gives_none_back_sqlite() {
    let app = app()
        .topology(Topology::Embedded)
        .config("QUOTAS__JOBS_PER_HOUR", "5")
        .start();
    assert_jobs_per_hour_holds(&app);
}

#[test]
fn forty_concurrent_creates_admit_five_per_hour_and_three_queued_postgres() {
    {
        let app = app()
            .topology(Topology::Distributed { workers: 0 })
            .config("QUOTAS__JOBS_PER_HOUR", "5")
            .start();
        assert_jobs_per_hour_holds(&app);
        // Stopped before the next starts: a burst grows wobbly's pool, and two such pools beside
        // another test's services can reach PostgreSQL's 100 connections.
    }

    // No worker runs: jobs created with PHASE=RUN stay QUEUED.
    let app = app_queued_limit();
    let circle = circle(RA, DEC, 20.0);
    let params = [("ID", IMAGE), ("CIRCLE", &circle[..]), ("PHASE", "RUN")];
    assert_eq!(concurrent_creates(&app, &params), 3);
    assert_eq!(app.job_ids(&[("PHASE", "QUEUED")]).len(), 3);
}

fn app_queued_limit() -> TestApp {
    app()
        .topology(Topology::Distributed { workers: 0 })
        .config("QUOTAS__JOBS_QUEUED", "3")
        .start()
}

#[test]
fn planned_result_bytes_are_reserved_when_a_job_is_created() {
    // Each job's planned bytes (thousands) are reserved as it is created, and jobs are admitted
    // only while the reservations are under the limit: of 40 concurrent creates against one
    // byte, one is admitted (without reservations all 40 were, nothing being stored yet).
    let app = app()
        .topology(Topology::Embedded)
        .config("QUOTAS__RESULT_BYTES", "1")
        .start();
    let circle = circle(RA, DEC, 20.0);
    let params = [("ID", IMAGE), ("CIRCLE", &circle[..])];
    assert_eq!(concurrent_creates(&app, &params), 1);
}

#[test]
fn aborting_a_job_while_it_stores_results_leaves_no_object_behind() {
    let app = app().topology(Topology::Embedded).start();
    // 100 whole-image cutouts (1 MB each) and their combined file.
    let params = circles(100, 256.0);
    let id = app.create_job(&refs(&params));
    app.run_job(&id);
    let started = Instant::now();
    while bucket_objects(&app, &id).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no result was ever stored"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let r = app.post(&format!("/jobs/{id}/phase"), &[("PHASE", "ABORT")]);
    assert_eq!(r.status(), 303);
    assert!(app.wait_final(&id).contains("ABORTED"));
    let started = Instant::now();
    loop {
        let left = bucket_objects(&app, &id);
        if left.is_empty() {
            break;
        }
        let bytes: u64 = left
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} objects ({bytes} bytes) left behind by the aborted job",
            left.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn result_prefixes_that_no_job_owns_are_swept() {
    let app = app()
        .topology(Topology::Embedded)
        .config("JOBS__SWEEP_INTERVAL", "1")
        .config("JOBS__ORPHAN_SWEEP_INTERVAL", "1")
        .config("JOBS__ORPHAN_GRACE", "0")
        .start();
    let id = app.cutout_job();
    app.run_job(&id);
    assert!(app.wait_final(&id).contains("COMPLETED"));
    let bucket = app.dir.path().join("data/bucket");
    let orphan = bucket.join("0123456789abcdef0123456789abcdef/00000000000000aa");
    std::fs::create_dir_all(&orphan).expect("orphan dir");
    std::fs::write(orphan.join("result.fits"), vec![0u8; 2880]).expect("orphan object");
    // The flat layout: one file per object, named after its key.
    let flat_orphan = bucket.join("fedcba9876543210fedcba9876543210+00000000000000bb+result.fits");
    std::fs::write(&flat_orphan, vec![0u8; 2880]).expect("flat orphan object");
    let started = Instant::now();
    while orphan.exists() || flat_orphan.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the orphaned prefix was not swept"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !bucket_objects(&app, &id).is_empty(),
        "a job's own results were swept"
    );
}

#[test]
fn with_check_origin_cross_site_posts_are_refused() {
    let app = app()
        .topology(Topology::Embedded)
        .config("AUTH__CHECK_ORIGIN", "true")
        .config("AUTH__ALLOWED_ORIGINS", "[\"https://portal.example.org\"]")
        .start();
    let circle = circle(RA, DEC, 20.0);
    let params = [("ID", IMAGE), ("CIRCLE", &circle[..])];
    let own = app.root().to_owned();
    for headers in [
        vec![("sec-fetch-site", "cross-site")],
        vec![("origin", "https://evil.example.com")],
        vec![
            ("sec-fetch-site", "same-site"),
            ("origin", "https://evil.example.com"),
        ],
    ] {
        let r = app.as_caller(&headers).post("/jobs", &params);
        assert_eq!(r.status(), 403, "{headers:?}");
        assert!(r.text().expect("body").starts_with("AuthorizationError: "));
    }
    assert!(app.job_ids(&[]).is_empty());
    for headers in [
        vec![],
        vec![("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
        vec![
            ("origin", "https://portal.example.org"),
            ("sec-fetch-site", "cross-site"),
        ],
    ] {
        let r = app.as_caller(&headers).post("/jobs", &params);
        assert_eq!(r.status(), 303, "{headers:?}");
    }
    // Reads are never checked.
    let r = app
        .as_caller(&[("sec-fetch-site", "cross-site")])
        .get("/jobs", &[]);
    assert_eq!(r.status(), 200);
}
