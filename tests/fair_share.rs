//! Fair share between users: one user's flood of async jobs does not starve another user's job.
//! Always distributed: every job is queued before a worker starts, so the order in which the
//! worker takes them is the queue's alone.

use crate::common::*;

fn flood(caller: &Caller<'_>, jobs: usize) -> Vec<String> {
    let circle = circle(RA, DEC, 5.0);
    let params = [("ID", IMAGE), ("CIRCLE", circle.as_str()), ("PHASE", "RUN")];
    let per_thread = jobs / 5;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..5)
            .map(|_| {
                s.spawn(move || {
                    (0..per_thread)
                        .map(|_| caller.create_job(&params))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("submitter"))
            .collect()
    })
}

fn completed(caller: &Caller<'_>) -> usize {
    let r = caller.get("/jobs", &[("PHASE", "COMPLETED")]);
    assert_eq!(r.status(), 200);
    attributes(&r.text().expect("body"), "uws:jobref", "id").len()
}

#[test]
fn one_users_flood_of_500_jobs_does_not_starve_another_users_single_job() {
    // One job at a time, so "how many of alice's jobs ran first" is exact. The threshold is the
    // default one (10 queued jobs).
    let mut app = app()
        .topology(Topology::Distributed { workers: 0 })
        .config("WORKER__CONCURRENCY", "1")
        .start();
    let alice = app.as_caller(&[("x-auth-request-user", "alice")]);
    let bob = app.as_caller(&[("x-auth-request-user", "bob")]);
    let flooded = flood(&alice, 500);
    let circle = circle(RA, DEC, 5.0);
    let single = bob.create_job(&[("ID", IMAGE), ("CIRCLE", &circle), ("PHASE", "RUN")]);

    app.start_worker();
    let alice = app.as_caller(&[("x-auth-request-user", "alice")]);
    let bob = app.as_caller(&[("x-auth-request-user", "bob")]);
    let doc = bob.wait_final(&single);
    assert_eq!(element(&doc, "uws:phase").as_deref(), Some("COMPLETED"));
    // First come, first served would run all 500 first. With fair share, only the jobs alice
    // queued before she had 10 waiting go ahead of bob's (a few more when concurrent
    // submissions counted the same queue).
    let before = completed(&alice);
    assert!(
        before <= 20,
        "{before} of alice's jobs ran before bob's single job"
    );
    // Her flood is only delayed, never lost.
    for id in &flooded {
        let doc = alice.wait_final(id);
        assert_eq!(
            element(&doc, "uws:phase").as_deref(),
            Some("COMPLETED"),
            "{id}"
        );
    }
}
