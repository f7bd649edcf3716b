//! Faults in the distributed topology (frontend and workers as separate processes, PostgreSQL,
//! Redis): a worker killed mid-job, a worker stopped while busy, a worker exiting after
//! `max_jobs`, a worker started before its Redis, a private Redis restarted empty, a private
//! PostgreSQL stopped under a running service, and a load of many clients at once.
//! These tests always run distributed.

use std::time::{Duration, Instant};

use crate::common::*;

fn distributed(workers: usize) -> AppBuilder {
    app().topology(Topology::Distributed { workers })
}

fn count_with_phase(app: &TestApp, phase: &str) -> usize {
    app.job_ids(&[("PHASE", phase)]).len()
}

/// How many attempts at the job stored a result (the key is `{job}/{attempt}/{result}`).
fn result_objects(app: &TestApp, id: &str) -> usize {
    let attempts: std::collections::HashSet<String> = bucket_objects(app, id)
        .iter()
        .filter_map(|p| {
            p.file_name()?
                .to_str()?
                .split('+')
                .nth(1)
                .map(str::to_owned)
        })
        .collect();
    attempts.len()
}

/// Waits for each job to end and asserts that it COMPLETED.
fn assert_all_completed(app: &TestApp, ids: &[String]) {
    for id in ids {
        let doc = app.wait_final(id);
        assert_eq!(
            element(&doc, "uws:phase").as_deref(),
            Some("COMPLETED"),
            "{id}: {doc}"
        );
    }
}

#[test]
fn a_job_whose_worker_is_killed_completes_once() {
    let mut app = distributed(1)
        .config("WORKER__VISIBILITY_TIMEOUT", "2")
        .config("WORKER__CONCURRENCY", "1")
        .start();
    let image = big_image(&app);
    let id = app.create_job(&[
        ("ID", image),
        ("CIRCLE", &format!("{RA} {DEC} 1")),
        ("PHASE", "RUN"),
    ]);
    assert_eq!(app.wait_until_not_queued(&id), "EXECUTING");
    app.workers[0].kill().expect("SIGKILL the worker");
    app.workers[0].wait().expect("reap");
    // The store still believes the dead worker is running it.
    assert_eq!(app.phase(&id), "EXECUTING");

    app.start_worker();
    let doc = app.wait_final(&id);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    let hrefs = attributes(&doc, "uws:result", "xlink:href");
    assert_eq!(hrefs.len(), 1);
    let r = app.get_url(&hrefs[0]);
    assert_eq!(r.status(), 200);
    let size: usize = attributes(&doc, "uws:result", "size")[0]
        .parse()
        .expect("size");
    assert_eq!(r.bytes().expect("body").len(), size);
    assert_eq!(result_objects(&app, &id), 1, "exactly one stored attempt");
    assert_eq!(app.job_ids(&[]), [id.as_str()]);
}

#[test]
fn a_stopped_busy_worker_exits_cleanly_and_loses_no_job() {
    // A short visibility timeout: an entry the stopped worker had read but not started is
    // claimed by the next worker at once rather than after the default 30 s.
    let mut app = distributed(1)
        .config("WORKER__CONCURRENCY", "2")
        .config("WORKER__DRAIN_TIMEOUT", "0")
        .config("WORKER__VISIBILITY_TIMEOUT", "2")
        .start();
    let image = big_image(&app);
    let ids: Vec<String> = (0..3)
        .map(|_| {
            app.create_job(&[
                ("ID", image),
                ("CIRCLE", &format!("{RA} {DEC} 1")),
                ("PHASE", "RUN"),
            ])
        })
        .collect();
    assert_eq!(app.wait_until_not_queued(&ids[0]), "EXECUTING");
    signal(&app.workers[0], "TERM");
    let status = app.workers[0].wait().expect("worker exit");
    assert!(status.success(), "worker exited with {status}");
    // Nothing is left EXECUTING by the stopped worker: finished or handed back to the queue.
    assert_eq!(count_with_phase(&app, "EXECUTING"), 0);

    app.start_worker();
    assert_all_completed(&app, &ids);
}

#[test]
fn jobs_survive_redis_restarting_empty() {
    let mut redis = redis::PrivateRedis::start();
    let app = distributed(2)
        .config("REDIS_URL", &redis.url)
        .config("WORKER__RECOVERY_INTERVAL", "1")
        .start();
    let circle = circle(RA, DEC, 5.0);
    let mut ids = Vec::new();
    for n in 0..200 {
        if n == 100 {
            // Everything this deployment had in Redis is gone, queued entries included, and
            // every connection to it broke.
            redis.restart_empty();
        }
        ids.push(app.create_job(&[("ID", IMAGE), ("CIRCLE", &circle), ("PHASE", "RUN")]));
    }
    assert_all_completed(&app, &ids);
    assert_eq!(count_with_phase(&app, "COMPLETED"), 200);
}

#[test]
fn worker_started_before_redis_waits_for_it_and_runs_jobs() {
    let mut redis = redis::PrivateRedis::start();
    let mut app = distributed(0).config("REDIS_URL", &redis.url).start();
    // Nothing listens on the Redis port when the worker starts.
    redis.stop();
    let ready = std::thread::scope(|s| {
        let worker = s.spawn(|| app.start_worker());
        // Ordering, not timing: the worker meets the closed port first (it reaches the job store
        // within milliseconds), so it must retry to ever print "ready".
        std::thread::sleep(Duration::from_secs(2));
        redis.restart_empty();
        worker.join()
    });
    assert!(ready.is_ok(), "worker did not wait for Redis");
    let id = app.create_job(&[
        ("ID", IMAGE),
        ("CIRCLE", &circle(RA, DEC, 5.0)),
        ("PHASE", "RUN"),
    ]);
    let doc = app.wait_final(&id);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
}

#[test]
fn a_worker_exits_cleanly_after_max_jobs_and_another_finishes_the_rest() {
    let mut app = distributed(1).config("WORKER__MAX_JOBS", "2").start();
    let circle = circle(RA, DEC, 5.0);
    let ids: Vec<String> = (0..3)
        .map(|_| app.create_job(&[("ID", IMAGE), ("CIRCLE", &circle), ("PHASE", "RUN")]))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = app.workers[0].try_wait().expect("worker status") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "worker did not exit after max_jobs"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "worker exited with {status}");
    assert_eq!(count_with_phase(&app, "COMPLETED"), 2);
    app.start_worker();
    assert_all_completed(&app, &ids);
}

#[test]
fn many_clients_at_once_all_complete_with_correct_results() {
    let app = distributed(2).start();
    let circle = circle(RA, DEC, 5.0);
    let clients = 32;
    let per_client = 2000 / clients;
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    (0..per_client)
                        .map(|_| {
                            app.create_job(&[("ID", IMAGE), ("CIRCLE", &circle), ("PHASE", "RUN")])
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client"))
            .collect()
    });
    assert_eq!(ids.len(), clients * per_client);
    let mut sizes = std::collections::HashSet::new();
    for id in &ids {
        let doc = app.wait_final(id);
        assert_eq!(
            element(&doc, "uws:phase").as_deref(),
            Some("COMPLETED"),
            "{doc}"
        );
        sizes.extend(attributes(&doc, "uws:result", "size"));
    }
    // Every job cut the same region, so every result has the same size.
    assert_eq!(sizes.len(), 1, "{sizes:?}");
    let sample = app.wait_final(&ids[ids.len() / 2]);
    let href = attributes(&sample, "uws:result", "xlink:href").remove(0);
    assert_eq!(app.get_url(&href).status(), 200);
    assert_eq!(app.job_ids(&[]).len(), ids.len());
    assert_eq!(count_with_phase(&app, "COMPLETED"), ids.len());
}

#[test]
fn a_stopped_database_gives_503_and_the_service_recovers_by_itself() {
    let pg = postgres::PrivatePostgres::start();
    let app = distributed(1)
        .config("DATABASE_URL", &pg.url)
        .config("WORKER__VISIBILITY_TIMEOUT", "2")
        .config("WORKER__RECOVERY_INTERVAL", "1")
        .start();
    let circle = circle(RA, DEC, 5.0);
    let before = app.create_job(&[("ID", IMAGE), ("CIRCLE", &circle), ("PHASE", "RUN")]);
    assert_eq!(
        element(&app.wait_final(&before), "uws:phase").as_deref(),
        Some("COMPLETED")
    );
    // Jobs in flight when the database goes away.
    let in_flight: Vec<String> = (0..5)
        .map(|_| app.create_job(&[("ID", IMAGE), ("CIRCLE", &circle), ("PHASE", "RUN")]))
        .collect();

    pg.stop();
    let refused = app.post("/jobs", &[("ID", IMAGE), ("CIRCLE", &circle)]);
    assert_eq!(refused.status(), 503);
    assert!(
        refused
            .text()
            .expect("body")
            .starts_with("ServiceUnavailable:")
    );
    let read = app.get(&format!("/jobs/{before}"), &[]);
    assert_eq!(read.status(), 503);
    let availability = app.get("/availability", &[]).text().expect("body");
    assert!(availability.contains(">false<"), "{availability}");

    pg.resume();
    // No restart of any Skycut process: the first reads after the outage may still fail while
    // connections are re-established, then everything answers again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.get(&format!("/jobs/{before}"), &[]).status() != 200 {
        assert!(Instant::now() < deadline, "the frontend did not recover");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(app.phase(&before), "COMPLETED");
    assert_all_completed(&app, &in_flight);
    let after = app.create_job(&[("ID", IMAGE), ("CIRCLE", &circle), ("PHASE", "RUN")]);
    assert_eq!(
        element(&app.wait_final(&after), "uws:phase").as_deref(),
        Some("COMPLETED")
    );
    // The refused request created nothing.
    assert_eq!(app.job_ids(&[]).len(), 7);
}

#[test]
fn a_worker_retires_after_max_uptime_and_exits_cleanly() {
    let mut app = distributed(1).config("WORKER__MAX_UPTIME", "2").start();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = app.workers[0].try_wait().expect("worker status") {
            break status;
        }
        assert!(Instant::now() < deadline, "the worker did not retire");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "worker exited with {status}");
    // Its replacement takes the work.
    app.start_worker();
    let id = app.create_job(&[
        ("ID", IMAGE),
        ("CIRCLE", &circle(RA, DEC, 5.0)),
        ("PHASE", "RUN"),
    ]);
    assert_eq!(
        element(&app.wait_final(&id), "uws:phase").as_deref(),
        Some("COMPLETED")
    );
}

#[test]
fn roles_started_before_the_database_wait_for_it() {
    let pg = postgres::PrivatePostgres::start();
    pg.stop();
    // The database comes up only after wobbly (and, behind it, frontend and worker) started.
    let resumed = std::thread::scope(|scope| {
        let resume = scope.spawn(|| {
            std::thread::sleep(Duration::from_secs(3));
            pg.resume();
        });
        let app = distributed(1).config("DATABASE_URL", &pg.url).start();
        resume.join().expect("resume");
        app
    });
    let id = resumed.create_job(&[
        ("ID", IMAGE),
        ("CIRCLE", &circle(RA, DEC, 5.0)),
        ("PHASE", "RUN"),
    ]);
    assert_eq!(
        element(&resumed.wait_final(&id), "uws:phase").as_deref(),
        Some("COMPLETED")
    );
}

#[test]
fn a_bulk_job_whose_worker_is_killed_gives_every_stamp_exactly_once() {
    let mut app = distributed(1)
        .config("WORKER__VISIBILITY_TIMEOUT", "2")
        .config("WORKER__CONCURRENCY", "1")
        .start();
    let (catalogue, rows) = slow_bulk_catalogue(&app, 60);
    let id = create_bulk(&app, &catalogue);
    assert_eq!(app.wait_until_not_queued(&id), "EXECUTING");
    app.workers[0].kill().expect("SIGKILL the worker");
    app.workers[0].wait().expect("reap");
    assert_eq!(
        app.phase(&id),
        "EXECUTING",
        "the job ended before its worker was killed: make it longer"
    );

    app.start_worker();
    let mut seen = completed_stamp_rows(&app, &id);
    assert_eq!(seen.len(), rows, "one stamp per row, none twice");
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..rows as i64).collect::<Vec<_>>());
    // Only the finishing attempt stored a table (the plan is the job's input, under `bulk`).
    let attempts: std::collections::HashSet<String> = bucket_objects(&app, &id)
        .iter()
        .filter_map(|p| {
            p.file_name()?
                .to_str()?
                .split('+')
                .nth(1)
                .map(str::to_owned)
        })
        .filter(|attempt| attempt != "bulk")
        .collect();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
}

/// Waits for bulk job `id` to end, checks it COMPLETED with one stamp table of 16×16 stamps,
/// and returns the table's `ROW` column.
fn completed_stamp_rows(app: &TestApp, id: &str) -> Vec<i64> {
    let doc = app.wait_final(id);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    assert_eq!(attributes(&doc, "uws:result", "id"), ["stamps"]);
    let table = app
        .get_url(&attributes(&doc, "uws:result", "xlink:href")[0])
        .bytes()
        .expect("table");
    stamp_rows(&table, 16).iter().map(|r| r.0).collect()
}

#[test]
fn a_bulk_shard_whose_worker_is_killed_is_cut_again_and_every_stamp_is_there_once() {
    // One job slot each: the job's own worker never takes a shard message, so the shard that
    // the other worker is cutting when it dies is cut by nobody else at that moment.
    let mut app = distributed(2)
        .config("WORKER__CONCURRENCY", "1")
        .config("BULK__SHARD_IMAGES", "4")
        .capture_logs("info")
        .start();
    let (catalogue, rows) = slow_bulk_catalogue(&app, 40);
    let id = create_bulk(&app, &catalogue);
    let deadline = Instant::now() + Duration::from_secs(120);
    let helper = loop {
        let logs = app.worker_logs();
        let cutting = |log: &String| log.contains("cutting a bulk shard");
        if let Some(n) = logs.iter().position(cutting) {
            break n;
        }
        assert!(
            Instant::now() < deadline && app.phase(&id) != "COMPLETED",
            "no worker took a shard: make the job longer\n{}",
            app.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        !app.worker_logs()[helper].contains("bulk job shared as shards"),
        "the job's own worker took a shard message"
    );
    app.workers[helper]
        .kill()
        .expect("SIGKILL the worker cutting a shard");
    app.workers[helper].wait().expect("reap");
    assert_eq!(
        app.phase(&id),
        "EXECUTING",
        "the job ended before the shard's worker was killed: make it longer"
    );

    let seen = completed_stamp_rows(&app, &id);
    assert_eq!(
        seen,
        (0..rows as i64).collect::<Vec<_>>(),
        "every row once, in catalogue order"
    );
}

#[test]
fn an_aborted_bulk_job_stops_and_leaves_no_stamps_behind() {
    // Shared as shards, so both workers have stamps to leave behind.
    let app = distributed(2)
        .config("WORKER__CONCURRENCY", "1")
        .config("BULK__SHARD_IMAGES", "4")
        .start();
    let (catalogue, _) = slow_bulk_catalogue(&app, 60);
    let id = create_bulk(&app, &catalogue);
    assert_eq!(app.wait_until_not_queued(&id), "EXECUTING");
    let r = app.post(&format!("/jobs/{id}/phase"), &[("PHASE", "ABORT")]);
    assert_eq!(r.status(), 303);
    let doc = app.wait_final(&id);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("ABORTED"),
        "{doc}"
    );
    // No result object and no shard, only the job's plan, and the scratch files are gone once
    // the workers let go.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stored: Vec<_> = bucket_objects(&app, &id)
            .into_iter()
            .filter(|p| !p.to_string_lossy().ends_with("+bulk+plan.txt"))
            .collect();
        let scratch: Vec<_> = std::fs::read_dir(app.dir.path().join("data/scratch"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&id))
            .collect();
        if stored.is_empty() && scratch.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {stored:?} {:?}",
            scratch.iter().map(|e| e.path()).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
