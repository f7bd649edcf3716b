//! UWS 1.1 asynchronous cutout jobs: creation, phases, every job resource, WAIT, deletion, the
//! job list, and schema validity of every document.

use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn creating_a_job_answers_303_to_a_pending_job() {
    let app = spawn_app();
    let id = app.cutout_job();
    let doc = app.job_xml(&id);
    assert_uws_valid(&doc);
    assert_eq!(element(&doc, "uws:phase").as_deref(), Some("PENDING"));
    assert_eq!(element(&doc, "uws:jobId").as_deref(), Some(id.as_str()));
    assert!(doc.contains("version=\"1.1\""));
    assert_eq!(element(&doc, "uws:ownerId").as_deref(), Some("anonymous"));
    for name in ["uws:creationTime", "uws:destruction"] {
        assert_timestamp(&element(&doc, name).expect(name));
    }
    assert_eq!(
        element(&doc, "uws:executionDuration").as_deref(),
        Some("600")
    );
    assert!(
        doc.contains("<uws:parameter id=\"ID\">butler://test/field</uws:parameter>"),
        "{doc}"
    );
}

#[test]
fn run_queues_the_job_and_it_completes_with_a_fits_result() {
    let app = spawn_app();
    let id = app.cutout_job();
    let r = app.post(&format!("/jobs/{id}/phase"), &[("PHASE", "RUN")]);
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), app.url(&format!("/jobs/{id}")));
    // When the 303 is sent the job is already QUEUED or later.
    assert_ne!(app.phase(&id), "PENDING");
    let doc = app.wait_final(&id);
    assert_uws_valid(&doc);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    for name in ["uws:startTime", "uws:endTime"] {
        assert_timestamp(&element(&doc, name).expect(name));
    }
    let hrefs = attributes(&doc, "uws:result", "xlink:href");
    assert_eq!(attributes(&doc, "uws:result", "id"), ["result"]);
    assert_eq!(
        attributes(&doc, "uws:result", "mime-type"),
        ["application/fits"]
    );
    let r = app.get_url(&hrefs[0]);
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), "application/fits");
    let size: usize = attributes(&doc, "uws:result", "size")[0]
        .parse()
        .expect("size");
    assert_eq!(r.bytes().expect("body").len(), size);

    let results = app.get(&format!("/jobs/{id}/results"), &[]);
    assert_eq!(results.status(), 200);
    let results = results.text().expect("body");
    assert_uws_valid(&results);
    // The stable result link redirects to a freshly signed URL.
    let r = app.get(&format!("/jobs/{id}/results/result"), &[]);
    assert_eq!(r.status(), 303);
    assert_eq!(app.get_url(&location(&r)).status(), 200);
}

#[test]
fn phase_run_in_the_creation_request_starts_the_job() {
    let app = spawn_app();
    let id = app.create_job(&[
        ("ID", IMAGE),
        ("CIRCLE", &circle(RA, DEC, 5.0)),
        ("phase", "run"),
    ]);
    assert_ne!(app.phase(&id), "PENDING");
    let doc = app.wait_final(&id);
    assert_eq!(element(&doc, "uws:phase").as_deref(), Some("COMPLETED"));
}

#[test]
fn a_second_run_is_a_usage_error() {
    let app = spawn_app();
    let id = app.cutout_job();
    app.run_job(&id);
    app.wait_final(&id);
    let r = app.post(&format!("/jobs/{id}/phase"), &[("PHASE", "RUN")]);
    assert_eq!(r.status(), 400);
    assert!(r.text().expect("body").starts_with("UsageError: "));
}

#[test]
fn abort_stops_a_pending_job_and_leaves_a_finished_one_alone() {
    let app = spawn_app();
    let id = app.cutout_job();
    let r = app.post(&format!("/jobs/{id}/phase"), &[("PHASE", "ABORT")]);
    assert_eq!(r.status(), 303);
    assert_eq!(app.phase(&id), "ABORTED");
    let done = app.cutout_job();
    app.run_job(&done);
    app.wait_final(&done);
    let r = app.post(&format!("/jobs/{done}/phase"), &[("PHASE", "ABORT")]);
    assert_eq!(r.status(), 303);
    assert_eq!(app.phase(&done), "COMPLETED");
    let r = app.post(&format!("/jobs/{done}/phase"), &[("PHASE", "SUSPEND")]);
    assert_eq!(r.status(), 400);
}

#[test]
fn a_job_whose_stencil_misses_the_image_ends_in_error() {
    let app = spawn_app();
    let id = app.create_job(&[
        ("ID", IMAGE),
        ("CIRCLE", &circle(RA + 10.0, DEC, 5.0)),
        ("PHASE", "RUN"),
    ]);
    let doc = app.wait_final(&id);
    assert_uws_valid(&doc);
    assert_eq!(element(&doc, "uws:phase").as_deref(), Some("ERROR"));
    assert!(
        doc.contains("<uws:errorSummary type=\"fatal\" hasDetail=\"true\">"),
        "{doc}"
    );
    let message = element(&doc, "uws:message").expect("message");
    assert!(
        message.starts_with("UsageError: ") && message.contains("overlap"),
        "{message}"
    );
    let r = app.get(&format!("/jobs/{id}/error"), &[]);
    assert_eq!(r.status(), 200);
    let votable = r.text().expect("body");
    assert_valid(&votable, "VOTable-v1.4.xsd");
    assert!(votable.contains("QUERY_STATUS") && votable.contains(&message));
    assert_eq!(app.get(&format!("/jobs/{id}/results"), &[]).status(), 404);
}

#[test]
fn error_and_results_of_a_job_without_them_are_404() {
    let app = spawn_app();
    let id = app.cutout_job();
    for child in ["error", "results", "results/result"] {
        let r = app.get(&format!("/jobs/{id}/{child}"), &[]);
        assert_eq!(r.status(), 404, "{child}");
        assert!(r.text().expect("body").starts_with("UsageError: "));
    }
}

#[test]
fn job_children_are_plain_text() {
    let app = spawn_app();
    let id = app.cutout_job();
    let text = |child: &str| {
        let r = app.get(&format!("/jobs/{id}/{child}"), &[]);
        assert_eq!(r.status(), 200, "{child}");
        assert_eq!(content_type(&r), "text/plain; charset=utf-8", "{child}");
        r.text().expect("body")
    };
    assert_eq!(text("phase"), "PENDING");
    assert_eq!(text("executionduration"), "600");
    assert_timestamp(&text("destruction"));
    assert_timestamp(&text("quote"));
    assert_eq!(text("owner"), "anonymous");
    let r = app.get(&format!("/jobs/{id}/parameters"), &[]);
    assert_eq!(r.status(), 200);
    assert_uws_valid(&r.text().expect("body"));
}

#[test]
fn quote_is_an_instant_after_creation_and_the_end_time_once_completed() {
    let app = spawn_app();
    let id = app.cutout_job();
    let created = element(&app.job_xml(&id), "uws:creationTime").expect("creationTime");
    let quote = |app: &TestApp| {
        let r = app.get(&format!("/jobs/{id}/quote"), &[]);
        assert_eq!(r.status(), 200);
        r.text().expect("quote")
    };
    let pending = quote(&app);
    assert_timestamp(&pending);
    // Same-width UTC timestamps order as strings.
    assert!(
        pending > created,
        "quote {pending} not after creation {created}"
    );
    app.run_job(&id);
    let doc = app.wait_final(&id);
    assert!(doc.contains("COMPLETED"), "{doc}");
    let end = element(&doc, "uws:endTime").expect("endTime");
    assert_eq!(quote(&app), end);
    assert_eq!(element(&doc, "uws:quote"), Some(end));
}

#[test]
fn destruction_is_clamped_and_validated() {
    let app = spawn_app();
    let id = app.cutout_job();
    let r = app.post(
        &format!("/jobs/{id}/destruction"),
        &[("DESTRUCTION", "2030-01-01T00:00:00.5")],
    );
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), app.url(&format!("/jobs/{id}")));
    let clamped = app
        .get(&format!("/jobs/{id}/destruction"), &[])
        .text()
        .expect("body");
    assert_timestamp(&clamped);
    assert!(clamped.as_str() < "2030-01-01", "not clamped: {clamped}");
    let soon = "2026-12-01T00:00:00Z";
    assert_eq!(
        app.post(&format!("/jobs/{id}/destruction"), &[("destruction", soon)])
            .status(),
        303
    );
    assert_eq!(
        app.get(&format!("/jobs/{id}/destruction"), &[])
            .text()
            .expect("body"),
        "2026-12-01T00:00:00.000Z"
    );
    let r = app.post(
        &format!("/jobs/{id}/destruction"),
        &[("DESTRUCTION", "next week")],
    );
    assert_eq!(r.status(), 400);
    assert!(r.text().expect("body").starts_with("UsageError: "));
}

#[test]
fn execution_duration_is_capped_and_validated() {
    let app = spawn_app();
    let id = app.cutout_job();
    let path = format!("/jobs/{id}/executionduration");
    assert_eq!(
        app.post(&path, &[("EXECUTIONDURATION", "30")]).status(),
        303
    );
    assert_eq!(app.get(&path, &[]).text().expect("body"), "30");
    assert_eq!(
        app.post(&path, &[("EXECUTIONDURATION", "999999")]).status(),
        303
    );
    assert_eq!(app.get(&path, &[]).text().expect("body"), "3600");
    for bad in ["-5", "soon", "1.5"] {
        let r = app.post(&path, &[("EXECUTIONDURATION", bad)]);
        assert_eq!(r.status(), 400, "{bad}");
    }
}

#[test]
fn parameters_can_change_only_while_pending() {
    let app = spawn_app();
    let id = app.cutout_job();
    let path = format!("/jobs/{id}/parameters");
    let r = app.post(
        &path,
        &[("CIRCLE", &circle(RA, DEC, 7.0)), ("RUNID", "mine")],
    );
    assert_eq!(r.status(), 303);
    let doc = app.job_xml(&id);
    assert_eq!(element(&doc, "uws:runId").as_deref(), Some("mine"));
    assert!(doc.contains(&circle(RA, DEC, 7.0)));
    let r = app.post(&path, &[("CIRCLE", "1 2 -3")]);
    assert_eq!(r.status(), 400);
    app.run_job(&id);
    app.wait_final(&id);
    assert_eq!(
        app.post(&path, &[("CIRCLE", &circle(RA, DEC, 8.0))])
            .status(),
        403
    );
}

#[test]
fn delete_and_action_delete_remove_the_job() {
    let app = spawn_app();
    let a = app.cutout_job();
    let r = app.delete(&format!("/jobs/{a}"));
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), app.url("/jobs"));
    assert_eq!(app.get(&format!("/jobs/{a}"), &[]).status(), 404);

    let b = app.cutout_job();
    app.run_job(&b);
    let doc = app.wait_final(&b);
    let href = attributes(&doc, "uws:result", "xlink:href").remove(0);
    let r = app.post(&format!("/jobs/{b}"), &[("ACTION", "DELETE")]);
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), app.url("/jobs"));
    assert_eq!(app.get(&format!("/jobs/{b}"), &[]).status(), 404);
    assert_eq!(app.get(&format!("/jobs/{b}/phase"), &[]).status(), 404);
    // The result object went with the job.
    assert_eq!(app.get_url(&href).status(), 404);
    assert_eq!(app.delete(&format!("/jobs/{b}")).status(), 404);
}

#[test]
fn post_to_a_job_without_action_delete_deletes_nothing() {
    let app = spawn_app();
    let id = app.cutout_job();
    let r = app.post(&format!("/jobs/{id}"), &[("PHASE", "RUN")]);
    assert_eq!(r.status(), 400);
    let r = app.post(&format!("/jobs/{id}"), &[("ACTION", "DESTROY")]);
    assert_eq!(r.status(), 400);
    assert_eq!(app.phase(&id), "PENDING");
}

#[test]
fn unknown_jobs_are_404() {
    let app = spawn_app();
    for path in [
        "/jobs/0123456789abcdef0123456789abcdef",
        "/jobs/0123456789abcdef0123456789abcdef/phase",
        "/jobs/not-a-job",
        "/jobs/..%2F..%2Fetc/phase",
    ] {
        let r = app.get(path, &[]);
        assert_eq!(r.status(), 404, "{path}");
    }
}

#[test]
fn wait_returns_when_the_phase_changes() {
    let app = spawn_app();
    let id = app.cutout_job();
    let started = Instant::now();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| app.get(&format!("/jobs/{id}"), &[("WAIT", "30")]));
        // The waiter is blocked on PENDING; running the job changes the phase.
        while app.phase(&id) == "PENDING" {
            app.post(&format!("/jobs/{id}/phase"), &[("PHASE", "RUN")]);
        }
        let doc = waiter.join().expect("waiter").text().expect("body");
        assert_ne!(element(&doc, "uws:phase").as_deref(), Some("PENDING"));
    });
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "WAIT did not wake on the change"
    );
}

#[test]
fn wait_returns_the_job_when_the_wait_ends() {
    let app = spawn_app();
    let id = app.cutout_job();
    let started = Instant::now();
    let r = app.get(&format!("/jobs/{id}"), &[("WAIT", "1")]);
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        element(&r.text().expect("body"), "uws:phase").as_deref(),
        Some("PENDING")
    );
}

#[test]
fn wait_is_capped_by_the_server() {
    let app = app().config("JOBS__MAX_WAIT", "1").start();
    let id = app.cutout_job();
    let started = Instant::now();
    assert_eq!(
        app.get(&format!("/jobs/{id}"), &[("WAIT", "-1")]).status(),
        200
    );
    assert_eq!(
        app.get(&format!("/jobs/{id}"), &[("WAIT", "600")]).status(),
        200
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn wait_with_another_phase_or_a_finished_job_returns_at_once() {
    let app = spawn_app();
    let id = app.cutout_job();
    let started = Instant::now();
    let r = app.get(
        &format!("/jobs/{id}"),
        &[("WAIT", "30"), ("PHASE", "EXECUTING")],
    );
    assert_eq!(r.status(), 200);
    app.run_job(&id);
    app.wait_final(&id);
    assert_eq!(
        app.get(&format!("/jobs/{id}"), &[("WAIT", "30")]).status(),
        200
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    for bad in ["soon", "-2"] {
        assert_eq!(
            app.get(&format!("/jobs/{id}"), &[("WAIT", bad)]).status(),
            400
        );
    }
}

#[test]
fn job_list_is_newest_first_and_filtered() {
    let app = spawn_app();
    // Creation times have the millisecond resolution UWS documents show, so jobs created within
    // one millisecond are equally new: these are created further apart.
    let created_apart = || {
        let id = app.cutout_job();
        std::thread::sleep(std::time::Duration::from_millis(3));
        id
    };
    let a = created_apart();
    let b = created_apart();
    let c = created_apart();
    app.run_job(&b);
    app.wait_final(&b);
    let r = app.get("/jobs", &[]);
    assert_eq!(r.status(), 200);
    let doc = r.text().expect("body");
    assert_uws_valid(&doc);
    assert!(doc.contains("version=\"1.1\""));
    assert_eq!(app.job_ids(&[]), [c.clone(), b.clone(), a.clone()]);
    assert_eq!(app.job_ids(&[("LAST", "2")]), [c.clone(), b.clone()]);
    assert_eq!(app.job_ids(&[("PHASE", "COMPLETED")]), [b.as_str()]);
    assert_eq!(
        app.job_ids(&[("phase", "PENDING"), ("PHASE", "COMPLETED")]),
        [c.clone(), b.clone(), a.clone()]
    );
    let b_created = element(&app.job_xml(&b), "uws:creationTime").expect("time");
    assert_eq!(app.job_ids(&[("AFTER", &b_created)]), [c.as_str()]);
    // DALI timestamps may stop at the minute or the day (midnight UTC), with or without the Z.
    let a_created = element(&app.job_xml(&a), "uws:creationTime").expect("time");
    let (day, minute) = (&a_created[..10], &a_created[..16]);
    let all = [c.clone(), b.clone(), a.clone()];
    assert_eq!(app.job_ids(&[("AFTER", day)]), all);
    assert_eq!(app.job_ids(&[("AFTER", &format!("{day}Z"))]), all);
    assert_eq!(app.job_ids(&[("AFTER", &format!("{minute}Z"))]), all);
    assert!(app.job_ids(&[("AFTER", "2999-01-01")]).is_empty());
    for (name, bad) in [
        ("PHASE", "FINISHED"),
        ("LAST", "-1"),
        ("LAST", "many"),
        ("AFTER", "yesterday"),
        ("AFTER", "2015-10-26T09"),
    ] {
        let r = app.get("/jobs", &[(name, bad)]);
        assert_eq!(r.status(), 400, "{name}={bad}");
        assert!(r.text().expect("body").starts_with("UsageError: "));
    }
}

#[test]
fn creation_with_bad_parameters_creates_no_job() {
    let app = spawn_app();
    for params in [
        vec![("ID", IMAGE), ("CIRCLE", "1 2")],
        vec![("ID", "butler://test/missing"), ("CIRCLE", "150 2 0.01")],
        vec![("ID", IMAGE), ("CIRCLE", "150 2 0.01"), ("PHASE", "ABORT")],
        vec![
            ("ID", IMAGE),
            ("CIRCLE", "150 2 0.01"),
            ("DESTRUCTION", "never"),
        ],
    ] {
        let r = app.post("/jobs", &params);
        assert!(
            r.status() == 400 || r.status() == 404,
            "{params:?}: {}",
            r.status()
        );
    }
    assert!(app.job_ids(&[]).is_empty());
}

#[test]
fn forwarded_headers_from_a_trusted_proxy_shape_every_url() {
    let app = spawn_app();
    let id = app.cutout_job();
    let r = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(app.url(&format!("/jobs/{id}")))
        // The distributed topology runs behind an ingress that names the user.
        .header("x-auth-request-user", DEFAULT_USER)
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "data.example.org")
        .send()
        .expect("GET");
    assert_eq!(r.status(), 200);
    let list = app.get_with_header("/jobs", "X-Forwarded-Host", "data.example.org");
    let doc = list.text().expect("body");
    assert!(
        doc.contains(&format!(
            "xlink:href=\"http://data.example.org/api/cutout/jobs/{id}\""
        )),
        "{doc}"
    );
}

#[test]
fn a_job_past_its_destruction_time_is_swept_with_its_results() {
    let app = app().config("JOBS__SWEEP_INTERVAL", "1").start();
    let id = app.cutout_job();
    app.run_job(&id);
    let doc = app.wait_final(&id);
    let href = attributes(&doc, "uws:result", "xlink:href")[0].clone();
    assert!(
        !bucket_objects(&app, &id).is_empty(),
        "the result is stored under its job"
    );

    let r = app.post(
        &format!("/jobs/{id}/destruction"),
        &[("DESTRUCTION", "2000-01-01T00:00:00Z")],
    );
    assert_eq!(r.status(), 303);
    // The sweeper deletes the job, then its result objects.
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.get(&format!("/jobs/{id}"), &[]).status() != 404
        || !bucket_objects(&app, &id).is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "job {id} not swept; objects left: {:?}",
            bucket_objects(&app, &id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!app.job_ids(&[]).contains(&id));
    assert_ne!(app.get_url(&href).status(), 200, "the old URL still serves");
}

#[test]
fn a_completed_job_whose_results_expire_is_archived_and_kept_until_destruction() {
    let app = app()
        .config("JOBS__SWEEP_INTERVAL", "1")
        .config("JOBS__RESULT_LIFETIME", "2")
        .start();
    let id = app.cutout_job();
    app.run_job(&id);
    let doc = app.wait_final(&id);
    assert_eq!(element(&doc, "uws:phase").as_deref(), Some("COMPLETED"));
    let href = attributes(&doc, "uws:result", "xlink:href")[0].clone();
    assert!(
        !bucket_objects(&app, &id).is_empty(),
        "the result is stored"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    while app.phase(&id) != "ARCHIVED" || !bucket_objects(&app, &id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "job {id} not archived: {}; objects left: {:?}",
            app.phase(&id),
            bucket_objects(&app, &id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let doc = app.job_xml(&id);
    assert_uws_valid(&doc);
    assert!(
        attributes(&doc, "uws:result", "xlink:href").is_empty(),
        "{doc}"
    );
    // As for any job without results (`error_and_results_of_a_job_without_them_are_404`).
    assert_eq!(app.get(&format!("/jobs/{id}/results"), &[]).status(), 404);
    assert_ne!(app.get_url(&href).status(), 200, "the old URL still serves");
    // Listed only when asked for, as UWS 1.1 §2.2.3.1 says; until destruction.
    assert!(!app.job_ids(&[]).contains(&id));
    assert_eq!(
        app.job_ids(&[("PHASE", "ARCHIVED")]),
        std::slice::from_ref(&id)
    );
    let r = app.post(
        &format!("/jobs/{id}/destruction"),
        &[("DESTRUCTION", "2000-01-01T00:00:00Z")],
    );
    assert_eq!(r.status(), 303);
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.get(&format!("/jobs/{id}"), &[]).status() != 404 {
        assert!(Instant::now() < deadline, "archived job {id} not destroyed");
        std::thread::sleep(Duration::from_millis(100));
    }
}
