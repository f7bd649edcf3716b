//! What the processes log: a distributed run (wobbly with bearer tokens, a sync cutout behind a
//! signed URL, an async job) leaves no token, token key or URL signature in any process's logs,
//! and its lines are JSON carrying the job and the user; `demo-data` and `migrate` report their
//! progress on stderr.

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
    // The frontend's line for the job's creation names it too, and every JSON line carries its
    // spans once (the `spans` list), never again under `span`.
    let created = logs
        .lines()
        .find(|l| l.contains("\"job created\""))
        .unwrap_or_else(|| panic!("no job created line:\n{logs}"));
    assert!(
        created.contains(&format!("\"job_id\":\"{id}\"")),
        "{created}"
    );
    for line in logs.lines().filter(|l| l.starts_with('{')) {
        assert!(!line.contains("\"span\":{"), "{line}");
    }
}

#[test]
fn text_logs_written_to_a_file_hold_no_escape_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("jobs.sqlite").display()
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skycut"))
        .args(["migrate", "--database-url", &url])
        .env("SKYCUT_LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .output()
        .expect("run skycut");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(" INFO "), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

/// Runs `skycut ARGS` to the end with only `RUST_LOG=info` set, returning (stdout, stderr).
fn run_skycut(args: &[&str]) -> (String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_skycut"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SKYCUT_") {
            command.env_remove(k);
        }
    }
    let out = command
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run skycut");
    assert!(out.status.success(), "skycut {args:?}: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_data_reports_each_image_on_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = dir.path().join("demo");
    let demo = demo.to_str().expect("utf-8 path");
    let (stdout, stderr) = run_skycut(&["demo-data", "--dir", demo]);
    let images = stdout.lines().count();
    assert!(images > 0, "{stdout}");
    let written: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("demo image written"))
        .collect();
    assert_eq!(written.len(), images, "{stderr}");
    assert!(
        written[images - 1].contains(&format!("{images}/{images}")),
        "{stderr}"
    );
    // A second run keeps the images and says so.
    let (_, again) = run_skycut(&["demo-data", "--dir", demo]);
    assert_eq!(
        again.matches("demo image already there").count(),
        images,
        "{again}"
    );
}

#[test]
fn migrate_reports_each_migration_on_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("jobs.sqlite").display()
    );
    let (stdout, stderr) = run_skycut(&["migrate", "--database-url", &url]);
    assert!(stdout.contains("migrations applied"), "{stdout}");
    assert!(stderr.contains("connecting to the job store"), "{stderr}");
    for (_, name, _) in wobbly::schema::MIGRATIONS {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("applying job store migration") && l.contains(name)),
            "{name}: {stderr}"
        );
    }
    // Nothing is left to apply the second time.
    let (_, again) = run_skycut(&["migrate", "--database-url", &url]);
    assert!(!again.contains("applying job store migration"), "{again}");
}
