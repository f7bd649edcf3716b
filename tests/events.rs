//! The per-user Server-Sent Events stream of phase changes (`GET /jobs/events`).

use std::io::{BufRead, BufReader};
use std::time::Duration;

use crate::common::*;

/// One event of a `text/event-stream`: its type and its JSON data.
struct SseEvent {
    kind: String,
    data: serde_json::Value,
}

/// Reads the next event, skipping keep-alive comments.
fn next_event(stream: &mut impl BufRead) -> SseEvent {
    let (mut kind, mut data) = (String::new(), String::new());
    loop {
        let mut line = String::new();
        let n = stream.read_line(&mut line).expect("read event stream");
        assert!(n > 0, "event stream ended");
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if !kind.is_empty() || !data.is_empty() {
                let data = serde_json::from_str(&data).unwrap_or(serde_json::Value::Null);
                return SseEvent { kind, data };
            }
        } else if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim());
        }
    }
}

/// Opens the stream as `user` (the authenticating-ingress header; embedded mode ignores it).
fn open_stream(app: &TestApp, user: &str) -> BufReader<reqwest::blocking::Response> {
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
        .get(app.url("/jobs/events"))
        .header("x-auth-request-user", user)
        .send()
        .expect("GET /jobs/events");
    assert_eq!(r.status(), 200);
    assert!(content_type(&r).starts_with("text/event-stream"));
    BufReader::new(r)
}

#[test]
fn the_event_stream_starts_with_the_callers_unfinished_jobs() {
    let app = spawn_app();
    let id = app.cutout_job();
    let mut stream = open_stream(&app, DEFAULT_USER);
    let event = next_event(&mut stream);
    assert_eq!(event.kind, "phase");
    assert_eq!(event.data["jobId"], id.as_str());
    assert_eq!(event.data["phase"], "PENDING");
    assert_eq!(event.data["href"], app.url(&format!("/jobs/{id}")).as_str());
}

#[test]
fn the_event_stream_reports_each_phase_change_until_completed() {
    let app = spawn_app();
    let mut stream = open_stream(&app, DEFAULT_USER);
    let id = app.cutout_job();
    app.run_job(&id);
    let mut phases = Vec::new();
    while phases.last().map(String::as_str) != Some("COMPLETED") {
        let event = next_event(&mut stream);
        assert_eq!(event.kind, "phase");
        assert_eq!(event.data["jobId"], id.as_str());
        phases.push(event.data["phase"].as_str().expect("phase").to_owned());
    }
    assert_eq!(phases.first().map(String::as_str), Some("QUEUED"));
    assert_eq!(app.phase(&id), "COMPLETED");
}

#[test]
fn the_event_stream_never_shows_another_users_jobs() {
    let app = app()
        .config("AUTH__MODE", "ingress")
        .config("TRUSTED_PROXIES", "[]")
        .config("AUTH__TRUST_HEADERS_FROM_ANY", "true")
        .start();
    let mut bobs_stream = open_stream(&app, "bob");
    let alices = app.cutout_job();
    app.run_job(&alices);
    app.wait_final(&alices);
    // Bob's own job is the first thing his stream says: nothing of Alice's came before it.
    let bob = app.as_caller(&[("x-auth-request-user", "bob")]);
    let r = bob.post(
        "/jobs",
        &[
            ("ID", IMAGE),
            ("CIRCLE", &circle(RA, DEC, 20.0)),
            ("PHASE", "RUN"),
        ],
    );
    assert_eq!(r.status(), 303);
    let bobs = location(&r).rsplit('/').next().expect("id").to_owned();
    let event = next_event(&mut bobs_stream);
    assert_eq!(event.data["jobId"], bobs.as_str(), "{}", event.data);
    assert_eq!(event.data["phase"], "QUEUED");
}
