//! What the processes log: a distributed run (wobbly with bearer tokens, a sync cutout behind a
//! signed URL, an async job) leaves no token, token key or URL signature in any process's logs,
//! and its lines are JSON carrying the job and the user.

use crate::common::*;

#[test]
fn logs_of_a_distributed_run_hold_no_tokens_or_signed_urls() {
    let app = app()
        .topology(Topology::Distributed { workers: 1 })
        .capture_logs("debug,hyper=info,h2=info")
        .start();
    let circle = circle(RA, DEC, 5.0);

    let sync = app.get("/sync", &[("ID", IMAGE), ("CIRCLE", &circle)]);
    assert_eq!(sync.status(), 303);
    let signed = location(&sync);
    assert!(signed.contains("signature="), "{signed}");
    assert_eq!(app.get_url(&signed).status(), 200);

    let id = app.create_job(&[("ID", IMAGE), ("CIRCLE", &circle), ("PHASE", "RUN")]);
    assert_eq!(
        element(&app.wait_final(&id), "uws:phase").as_deref(),
        Some("COMPLETED")
    );
    let result = app.get(&format!("/jobs/{id}/results/result"), &[]);
    assert_eq!(app.get_url(&location(&result)).status(), 200);

    let logs = app.logs();
    let token_key = app
        .env_value("SKYCUT_WOBBLY__TOKEN_KEY")
        .expect("distributed apps have a token key");
    let signing_key = app.env_value("SKYCUT_SIGNING_KEY").expect("signing key");
    let (_, signature) = signed.split_once("signature=").expect("signature");
    for secret in [
        "signature=",
        "X-Amz-Signature",
        "X-Goog-Signature",
        "Bearer ",
        token_key,
        signing_key,
        signature,
    ] {
        assert!(!logs.contains(secret), "logs contain {secret:?}:\n{logs}");
    }
    // The run did log (so the checks above looked at something), as JSON lines, and the
    // worker's lines for the job carry its ID and owner.
    let job_line = logs
        .lines()
        .filter(|l| l.starts_with('{'))
        .find(|l| l.contains(&format!("\"job_id\":\"{id}\"")))
        .unwrap_or_else(|| panic!("no JSON line names job {id}:\n{logs}"));
    assert!(job_line.contains("\"user\":"), "{job_line}");
}
