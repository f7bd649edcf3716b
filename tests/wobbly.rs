//! The wobbly job-store service seen from outside: it answers only callers with a valid token.

use crate::common::*;

#[test]
fn wobbly_refuses_missing_or_bad_tokens_and_changes_nothing() {
    let app = app().topology(Topology::Distributed { workers: 0 }).start();
    let id = app.cutout_job();
    let wobbly = app.wobbly_url().expect("wobbly");
    let http = reqwest::blocking::Client::new();
    let job = format!("{wobbly}/v1/jobs/{id}");
    let forged = "eyJhbGciOiJIUzI1NiJ9.eyJzZXJ2aWNlIjoieCIsImV4cCI6OTk5OTk5OTk5OX0.c2lnbmF0dXJl";
    for auth in [
        None,
        Some("Bearer nonsense"),
        Some(&format!("Bearer {forged}") as &str),
    ] {
        let mut delete = http.delete(&job);
        let mut list = http.get(format!("{wobbly}/v1/jobs?owner=anonymous"));
        if let Some(a) = auth {
            delete = delete.header("authorization", a);
            list = list.header("authorization", a);
        }
        let r = delete.send().expect("DELETE");
        assert_eq!(r.status(), 401, "{auth:?}");
        assert!(r.headers().contains_key("www-authenticate"));
        assert_eq!(list.send().expect("GET").status(), 401);
    }
    // The job is untouched.
    assert_eq!(app.phase(&id), "PENDING");
    assert_eq!(
        http.get(format!("{wobbly}/healthz"))
            .send()
            .expect("GET")
            .status(),
        200
    );
}
