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

/// The events of job `id` that `stream` carries until the job's final phase (that one
/// included), skipping those of other jobs.
fn events_until_final(stream: &mut impl BufRead, id: &str) -> Vec<SseEvent> {
    let mut events = Vec::new();
    loop {
        let event = next_event(stream);
        if event.data["jobId"] != id {
            continue;
        }
        let last = event.kind == "phase"
            && matches!(
                event.data["phase"].as_str(),
                Some("COMPLETED" | "ERROR" | "ABORTED")
            );
        events.push(event);
        if last {
            return events;
        }
    }
}

/// The `stamps` count (done, total) of a `progress` event.
fn stamps_of(event: &SseEvent) -> (u64, u64) {
    let counts = event.data["progress"].as_array().expect("progress counts");
    let stamps = counts
        .iter()
        .find(|c| c["name"] == "stamps")
        .expect("a stamps count");
    (
        stamps["done"].as_u64().expect("done"),
        stamps["total"].as_u64().expect("total"),
    )
}

#[test]
fn a_bulk_jobs_progress_reaches_the_event_stream() {
    let app = spawn_app();
    let mut stream = open_stream(&app, DEFAULT_USER);
    let (catalogue, rows) = slow_bulk_catalogue(&app, 8);
    let id = create_bulk(&app, &catalogue);
    let events = events_until_final(&mut stream, &id);
    let last = events.last().expect("events");
    assert_eq!(last.data["phase"], "COMPLETED", "{}", last.data);
    let progress: Vec<&SseEvent> = events.iter().filter(|e| e.kind == "progress").collect();
    assert!(!progress.is_empty(), "no progress event before COMPLETED");
    for event in &progress {
        assert_eq!(
            event.data["href"],
            app.url(&format!("/jobs/{id}")).as_str(),
            "{}",
            event.data
        );
        let names: Vec<&str> = event.data["progress"]
            .as_array()
            .expect("counts")
            .iter()
            .map(|c| c["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["stamps", "images", "shards"], "{}", event.data);
        assert_eq!(stamps_of(event).1, rows as u64, "{}", event.data);
    }
    // Reported as the job ran (once an image is cut, then every two seconds), and counted to
    // the end before COMPLETED.
    assert!(
        progress.iter().any(|e| {
            let (done, total) = stamps_of(e);
            done > 0 && done < total
        }),
        "no report part-way"
    );
    let done: Vec<u64> = progress.iter().map(|e| stamps_of(e).0).collect();
    assert!(done.is_sorted(), "{done:?}");
    assert_eq!(done.last(), Some(&(rows as u64)));
    // A progress event never passes for a phase change: the phases are QUEUED, EXECUTING and
    // COMPLETED, once each.
    let phases: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "phase")
        .map(|e| e.data["phase"].as_str().expect("phase"))
        .collect();
    assert_eq!(phases, ["QUEUED", "EXECUTING", "COMPLETED"]);
}

#[test]
fn another_users_stream_gets_no_progress_of_a_bulk_job() {
    let app = app()
        .config("AUTH__MODE", "ingress")
        .config("TRUSTED_PROXIES", "[]")
        .config("AUTH__TRUST_HEADERS_FROM_ANY", "true")
        .start();
    let mut owners_stream = open_stream(&app, DEFAULT_USER);
    let mut bobs_stream = open_stream(&app, "bob");
    let (catalogue, _) = slow_bulk_catalogue(&app, 4);
    let id = create_bulk(&app, &catalogue);
    let owners = events_until_final(&mut owners_stream, &id);
    assert!(
        owners.iter().any(|e| e.kind == "progress"),
        "the owner's stream had progress events"
    );
    // Bob's own job is the first thing his stream says: no event of the bulk job came before.
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
    assert_eq!(event.kind, "phase", "{}", event.data);
    assert_eq!(event.data["jobId"], bobs.as_str(), "{}", event.data);
}
