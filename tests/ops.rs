//! The operations endpoints of every role: `/healthz` (alive), `/readyz` (dependencies answer).

use crate::common::*;

fn get(url: &str) -> (u16, String) {
    let r = reqwest::blocking::get(url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    (status, r.text().expect("body"))
}

#[test]
fn frontend_probes_answer_at_the_root() {
    let app = spawn_app();
    assert_eq!(
        get(&format!("{}/healthz", app.root())),
        (200, "ok\n".into())
    );
    let (status, body) = get(&format!("{}/readyz", app.root()));
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ready\n"), "{body}");
    for component in ["job store: ", "job queue: "] {
        assert!(body.contains(component), "{body}");
    }
}

#[test]
fn frontend_readyz_answers_503_naming_the_failing_dependency_while_healthz_stays_200() {
    let app = spawn_app();
    // A result bucket that cannot take files: its directory replaced by a plain file.
    let bucket = app.dir.path().join("data/bucket");
    if bucket.is_dir() {
        std::fs::remove_dir_all(&bucket).expect("remove bucket");
    }
    std::fs::write(&bucket, b"not a directory").expect("write");
    let (status, body) = get(&format!("{}/readyz", app.root()));
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("not ready\nresult bucket unavailable: "),
        "{body}"
    );
    assert_eq!(get(&format!("{}/healthz", app.root())).0, 200);
}

#[test]
fn worker_and_wobbly_probes_follow_the_job_store() {
    let mut app = app().topology(Topology::Distributed { workers: 1 }).start();
    let wobbly = app.wobbly_url().expect("wobbly").to_owned();
    let worker = app.worker_ops[0].clone();
    assert_eq!(get(&format!("{wobbly}/healthz")).0, 200);
    let (status, body) = get(&format!("{wobbly}/readyz"));
    assert_eq!(
        (status, body.as_str()),
        (200, "ready\njob store: database answers\n")
    );
    assert_eq!(get(&format!("{worker}/healthz")), (200, "ok\n".into()));
    let (status, body) = get(&format!("{worker}/readyz"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("job store: ") && body.contains("job queue: "),
        "{body}"
    );

    app.kill_wobbly();
    for root in [worker.as_str(), app.root()] {
        let (status, body) = get(&format!("{root}/readyz"));
        assert_eq!(status, 503, "{root}: {body}");
        assert!(body.contains("job store unavailable: "), "{root}: {body}");
        assert_eq!(get(&format!("{root}/healthz")).0, 200, "{root}");
    }
}

/// One sample of a Prometheus text exposition: name, the text between the braces, value.
struct Sample {
    name: String,
    labels: String,
    value: f64,
}

/// Scrapes `url` and parses every line: `# HELP`/`# TYPE` comments or `name{labels} value`.
fn scrape(url: &str) -> Vec<Sample> {
    let r = reqwest::blocking::get(url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(r.status(), 200, "{url}");
    assert!(
        content_type(&r).starts_with("text/plain; version=0.0.4"),
        "{url}"
    );
    let text = r.text().expect("body");
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (
                name,
                rest.strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}")),
            ),
            None => (series, ""),
        };
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad metric name in {line:?}"
        );
        samples.push(Sample {
            name: name.to_owned(),
            labels: labels.to_owned(),
            value,
        });
    }
    samples
}

/// Sum of the samples called `name` whose labels include every one of `labels`.
fn total(samples: &[Sample], name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|l| s.labels.contains(l)))
        .map(|s| s.value)
        .sum()
}

fn present(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|s| s.name == name)
}

#[test]
fn metrics_move_after_a_cutout_on_every_role() {
    let app = spawn_app();
    let metrics = format!("{}/metrics", app.root());
    let before = scrape(&metrics);
    let sync_route = ["route=\"/api/cutout/sync\"", "status=\"303\""];
    assert_eq!(
        total(&before, "skycut_http_requests_total", &sync_route),
        0.0
    );

    let r = app.get(
        "/sync",
        &[("ID", IMAGE), ("CIRCLE", &circle(RA, DEC, 20.0))],
    );
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());

    let frontend = scrape(&metrics);
    assert_eq!(
        total(&frontend, "skycut_http_requests_total", &sync_route),
        1.0
    );
    // The job ID never becomes a label: routes are templates.
    assert!(
        frontend
            .iter()
            .all(|s| !s.labels.contains("/jobs/") || s.labels.contains("/jobs/{id}")),
        "a raw URI became a label"
    );
    assert!(
        total(
            &frontend,
            "skycut_job_phase_transitions_total",
            &["phase=\"QUEUED\""]
        ) >= 1.0
    );
    assert!(present(&frontend, "skycut_queue_depth"));
    assert!(
        total(
            &frontend,
            "skycut_job_store_latency_seconds_count",
            &["operation=\"create\"", "outcome=\"ok\""]
        ) >= 1.0
    );
    assert!(present(&frontend, "skycut_queue_oldest_age_seconds"));

    // Where the cutout ran: the same process, or the workers.
    let workers: Vec<Vec<Sample>> = if app.is_distributed() {
        app.worker_ops
            .iter()
            .map(|ops| scrape(&format!("{ops}/metrics")))
            .collect()
    } else {
        vec![frontend]
    };
    let sum = |name: &str, labels: &[&str]| -> f64 {
        workers.iter().map(|w| total(w, name, labels)).sum()
    };
    assert_eq!(
        sum(
            "skycut_job_phase_transitions_total",
            &["phase=\"COMPLETED\""]
        ),
        1.0
    );
    assert_eq!(
        sum("skycut_cutout_duration_seconds_count", &["outcome=\"ok\""]),
        1.0
    );
    assert!(sum("skycut_cutout_duration_seconds_bucket", &["le=\"+Inf\""]) >= 1.0);
    // The float32 pixels of a circle 20 pixels in radius: a region about 40 pixels square.
    assert!(sum("skycut_source_bytes_read_total", &[]) >= 39.0 * 39.0 * 4.0);
    assert!(sum("skycut_result_bytes_written_total", &[]) > 0.0);
    assert_eq!(
        sum(
            "skycut_result_store_latency_seconds_count",
            &["outcome=\"ok\""]
        ),
        1.0
    );
    // The job was started and completed through the job store.
    assert!(
        sum(
            "skycut_job_store_latency_seconds_count",
            &["operation=\"transition\"", "outcome=\"ok\""]
        ) >= 2.0
    );

    if let Some(wobbly) = app.wobbly_url() {
        let samples = scrape(&format!("{wobbly}/metrics"));
        assert!(
            total(
                &samples,
                "skycut_http_requests_total",
                &["route=\"/v1/jobs\""]
            ) >= 1.0,
            "wobbly counted no job creation"
        );
    }
}
