//! The caller's delegated token (`X-Auth-Request-Token` from the ingress) goes with the job to
//! the worker, which reads an image server (an `http://` repository) as that user, and nowhere
//! else: not into the job, its parameters, results or error, not into any log, and not left in
//! Redis once the job has ended.

use std::process::Command;

use crate::common::image_server::ImageServer;
use crate::common::*;

const PROTECTED: &str = "butler://protected/field";
const ALICE_TOKEN: &str = "gt-alice-5f1d0c";
const BOB_TOKEN: &str = "gt-bob-93ab47";

/// An image server holding the test image for alice's token only, and an app whose repository
/// `protected` is that server.
fn protected_app() -> (ImageServer, TestApp, tempfile::TempDir) {
    let served = tempfile::tempdir().expect("tempdir");
    let server = ImageServer::start(served.path().to_path_buf(), &[ALICE_TOKEN]);
    let app = app()
        .config("AUTH__MODE", "ingress")
        .config("REPOSITORIES__PROTECTED", &server.url)
        .capture_logs("debug,hyper=info,h2=info")
        .start();
    std::fs::copy(source_image(&app), served.path().join("field.fits")).expect("serve image");
    (server, app, served)
}

fn user<'a>(app: &'a TestApp, name: &str, token: Option<&str>) -> Caller<'a> {
    let mut headers = vec![("x-auth-request-user", name)];
    if let Some(token) = token {
        headers.push(("x-auth-request-token", token));
    }
    app.as_caller(&headers)
}

fn sync_cutout(caller: &Caller<'_>) -> reqwest::blocking::Response {
    caller.get(
        "/sync",
        &[("ID", PROTECTED), ("CIRCLE", &circle(RA, DEC, 10.0))],
    )
}

#[test]
fn the_worker_reads_a_protected_image_with_the_callers_token() {
    let (server, app, _served) = protected_app();
    let alice = user(&app, "alice", Some(ALICE_TOKEN));
    let r = sync_cutout(&alice);
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    let file = app.get_url(&location(&r));
    assert_eq!(file.status(), 200);
    assert!(file.bytes().expect("body").starts_with(b"SIMPLE"));
    let seen = server.authorizations();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|a| *a == format!("Bearer {ALICE_TOKEN}")),
        "{seen:?}"
    );
}

#[test]
fn another_user_cannot_read_a_protected_image_even_once_it_is_cached() {
    let (server, app, _served) = protected_app();
    let alice = user(&app, "alice", Some(ALICE_TOKEN));
    // Two cutouts by ranged reads (the walked header kept for alice only), then the third
    // downloads the image into the shared cache (`ranges.reads_before_download`).
    for _ in 0..3 {
        assert_eq!(sync_cutout(&alice).status(), 303);
    }
    for caller in [
        user(&app, "bob", Some(BOB_TOKEN)),
        user(&app, "carol", None),
    ] {
        let r = sync_cutout(&caller);
        assert_eq!(r.status(), 404);
        let body = r.text().expect("body");
        assert!(body.starts_with("UsageError: "), "{body}");
        assert!(
            body.contains("unknown or your credentials may not read it"),
            "{body}"
        );
        assert!(!body.contains(BOB_TOKEN), "{body}");
    }
    let seen = server.authorizations();
    assert!(seen.contains(&format!("Bearer {BOB_TOKEN}")), "{seen:?}");
    assert!(seen.contains(&String::new()), "{seen:?}");
}

#[test]
fn the_delegated_token_is_never_stored_logged_or_left_in_the_queue() {
    let (server, app, _served) = protected_app();
    let circle = circle(RA, DEC, 10.0);
    let alice = user(&app, "alice", Some(ALICE_TOKEN));
    let done = alice.create_job(&[("ID", PROTECTED), ("CIRCLE", &circle), ("PHASE", "RUN")]);
    let doc = alice.wait_final(&done);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    // A job created now and run later carries the token of the request that runs it.
    let later = alice.create_job(&[("ID", PROTECTED), ("CIRCLE", &circle)]);
    let r = alice.post(&format!("/jobs/{later}/phase"), &[("PHASE", "RUN")]);
    assert_eq!(r.status(), 303);
    let doc = alice.wait_final(&later);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    let bob = user(&app, "bob", Some(BOB_TOKEN));
    let refused = bob.create_job(&[("ID", PROTECTED), ("CIRCLE", &circle), ("PHASE", "RUN")]);
    let doc = bob.wait_final(&refused);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("ERROR"),
        "{doc}"
    );
    assert!(
        server
            .authorizations()
            .contains(&format!("Bearer {ALICE_TOKEN}"))
    );

    for (caller, id) in [(&alice, &done), (&alice, &later), (&bob, &refused)] {
        for path in ["", "/parameters", "/results", "/error"] {
            let body = caller
                .get(&format!("/jobs/{id}{path}"), &[])
                .text()
                .expect("body");
            for token in [ALICE_TOKEN, BOB_TOKEN] {
                assert!(!body.contains(token), "{path} of {id}: {body}");
            }
        }
    }
    let logs = app.logs();
    assert!(!logs.is_empty());
    for token in [ALICE_TOKEN, BOB_TOKEN] {
        assert!(!logs.contains(token), "a log holds {token}");
    }
    if let Some(prefix) = app.env_value("SKYCUT_REDIS_PREFIX") {
        // Every entry was acknowledged and deleted with its job, and its token with it.
        for lane in ["sync", "async", "bulk"] {
            let out = Command::new("redis-cli")
                .args([
                    "-u",
                    &redis_url(),
                    "XRANGE",
                    &format!("{prefix}:jobs:{lane}"),
                    "-",
                    "+",
                ])
                .output()
                .expect("redis-cli");
            let text = String::from_utf8_lossy(&out.stdout);
            for token in [ALICE_TOKEN, BOB_TOKEN] {
                assert!(!text.contains(token), "{lane} stream holds {token}: {text}");
            }
        }
    }
}
