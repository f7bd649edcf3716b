//! Per-user quotas through the real process: over a limit, 429 with `Retry-After` and a DALI
//! `UsageError`, and no job created; other users are not affected. `jobs_running` runs in the
//! distributed topology, whose worker process the test can freeze mid-cut.

use crate::common::*;

/// An app whose users are named by the (loopback, trusted) ingress header.
fn app_with(quota: &str, value: &str) -> AppBuilder {
    app()
        .config("AUTH__MODE", "ingress")
        .config(&format!("QUOTAS__{quota}"), value)
}

fn request() -> Vec<(&'static str, String)> {
    vec![("ID", IMAGE.to_owned()), ("CIRCLE", circle(RA, DEC, 5.0))]
}

fn with_run(mut params: Vec<(&'static str, String)>) -> Vec<(&'static str, String)> {
    params.push(("PHASE", "RUN".to_owned()));
    params
}

fn refs<'a>(params: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    params.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn assert_over_quota(r: reqwest::blocking::Response, expected: &str) -> u64 {
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    let body = r.text().expect("body");
    assert!(body.starts_with("UsageError: over quota: "), "{body}");
    assert!(body.contains(expected), "{body}");
    retry_after
}

#[test]
fn jobs_per_hour_refuses_the_job_past_the_limit_with_retry_after() {
    let app = app_with("JOBS_PER_HOUR", "2").start();
    let alice = app.as_caller(&[("x-auth-request-user", "alice")]);
    alice.create_job(&refs(&request()));
    alice.create_job(&refs(&request()));
    let retry_after = assert_over_quota(
        alice.post("/jobs", &refs(&request())),
        "2 jobs in the last hour",
    );
    assert!((3590..=3600).contains(&retry_after), "{retry_after}");
    assert_over_quota(alice.get("/sync", &refs(&request())), "in the last hour");
    assert_eq!(alice.job_ids().len(), 2);
    let bob = app.as_caller(&[("x-auth-request-user", "bob")]);
    bob.create_job(&refs(&request()));
}

#[test]
fn result_bytes_refuses_new_jobs_until_results_are_deleted() {
    let app = app_with("RESULT_BYTES", "1000").start();
    let alice = app.as_caller(&[("x-auth-request-user", "alice")]);
    let id = alice.create_job(&refs(&with_run(request())));
    let doc = alice.wait_final(&id);
    assert!(doc.contains("COMPLETED"), "{doc}");
    let retry_after = assert_over_quota(
        alice.post("/jobs", &refs(&request())),
        "delete finished jobs",
    );
    assert!(retry_after > 0);
    assert_eq!(alice.job_ids(), vec![id.clone()]);
    assert_eq!(alice.delete(&format!("/jobs/{id}")).status(), 303);
    alice.create_job(&refs(&request()));
}

#[test]
fn jobs_queued_refuses_queueing_past_the_limit_but_not_pending_jobs() {
    // No worker, so queued jobs stay queued.
    let app = app_with("JOBS_QUEUED", "2")
        .topology(Topology::Distributed { workers: 0 })
        .start();
    let alice = app.as_caller(&[("x-auth-request-user", "alice")]);
    alice.create_job(&refs(&with_run(request())));
    alice.create_job(&refs(&with_run(request())));
    assert_over_quota(
        alice.post("/jobs", &refs(&with_run(request()))),
        "2 jobs queued",
    );
    let pending = alice.create_job(&refs(&request()));
    let retry_after = assert_over_quota(
        alice.post(&format!("/jobs/{pending}/phase"), &[("PHASE", "RUN")]),
        "2 jobs queued",
    );
    assert!(retry_after > 0);
    let phase = alice.get(&format!("/jobs/{pending}/phase"), &[]);
    assert_eq!(phase.text().expect("phase"), "PENDING");
    assert_eq!(alice.job_ids().len(), 3);
    let bob = app.as_caller(&[("x-auth-request-user", "bob")]);
    bob.create_job(&refs(&with_run(request())));
}

#[test]
fn jobs_running_refuses_runs_while_the_users_job_executes_and_allows_them_once_it_completes() {
    // One worker cutting one job at a time, so that alice's job alone holds it.
    let app = app_with("JOBS_RUNNING", "1")
        .topology(Topology::Distributed { workers: 1 })
        .config("WORKER__CONCURRENCY", "1")
        .start();
    let image = big_image(&app);
    let alice = app.as_caller(&[("x-auth-request-user", "alice")]);
    let slow_circle = format!("{RA} {DEC} 1");
    let running = alice.create_job(&[("ID", image), ("CIRCLE", &slow_circle), ("PHASE", "RUN")]);
    assert_eq!(alice.wait_until_not_queued(&running), "EXECUTING");
    // Frozen mid-cut, the job stays EXECUTING in the store for as long as the test needs.
    signal(&app.workers[0], "STOP");
    assert_eq!(alice.phase(&running), "EXECUTING");

    let before = alice.job_ids();
    let retry_after = assert_over_quota(
        alice.post("/jobs", &refs(&with_run(request()))),
        "1 jobs running",
    );
    assert!(retry_after > 0);
    assert_eq!(alice.job_ids(), before, "the refused request created a job");
    // A PENDING job is not held to the limit, but running it is.
    let pending = alice.create_job(&refs(&request()));
    assert_over_quota(
        alice.post(&format!("/jobs/{pending}/phase"), &[("PHASE", "RUN")]),
        "1 jobs running",
    );
    assert_eq!(alice.phase(&pending), "PENDING");

    let bob = app.as_caller(&[("x-auth-request-user", "bob")]);
    let bobs = bob.create_job(&refs(&with_run(request())));
    assert_eq!(bob.phase(&bobs), "QUEUED");

    signal(&app.workers[0], "CONT");
    let doc = alice.wait_final(&running);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    let again = alice.create_job(&refs(&with_run(request())));
    for (caller, id) in [(&alice, &again), (&bob, &bobs)] {
        let doc = caller.wait_final(id);
        assert_eq!(
            element(&doc, "uws:phase").as_deref(),
            Some("COMPLETED"),
            "{doc}"
        );
    }
}
