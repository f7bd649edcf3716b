//! The job store against both real databases: SQLite in a temporary file and the PostgreSQL
//! server at `TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! Each test uses its own service name, so tests never see each other's jobs.

use std::time::Duration;

use uws::store::{Created, JobFilter, JobStore, JobUpdate, ListCursor, Transition};
use uws::{ErrorCode, ExecutionPhase, JobError, JobResult, NewJob, UwsError, timestamp};
use wobbly::SqlJobStore;

fn postgres_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn unique_service(name: &str) -> String {
    format!("test-{name}-{}", uws::JobId::random())
}

async fn sqlite(dir: &tempfile::TempDir, name: &str) -> SqlJobStore {
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("jobs.sqlite").display()
    );
    SqlJobStore::connect(&url, &unique_service(name), 4)
        .await
        .expect("sqlite store")
}

async fn postgres(name: &str) -> SqlJobStore {
    SqlJobStore::connect(&postgres_url(), &unique_service(name), 4)
        .await
        .expect("postgres store (is PostgreSQL running on 127.0.0.1:5432?)")
}

fn new_job(owner: &str, offset_ms: i64) -> NewJob {
    let now = timestamp::now() + time::Duration::milliseconds(offset_ms);
    NewJob {
        id: uws::JobId::random(),
        owner: owner.into(),
        run_id: Some("run".into()),
        parameters: vec![
            ("ID".into(), "butler://demo/a".into()),
            ("CIRCLE".into(), "1 2 3".into()),
        ],
        execution_duration: 60,
        destruction: now + Duration::from_secs(3600),
        creation_time: now,
        queued: false,
        sync: false,
        admission: uws::Admission::default(),
        progress: None,
    }
}

async fn job_lifecycle_is_stored_exactly(store: SqlJobStore) {
    let job = store
        .create(new_job("alice", 0))
        .await
        .expect("create")
        .job();
    assert_eq!(job.phase, ExecutionPhase::Pending);
    assert_eq!(store.get(&job.id).await.expect("get"), Some(job.clone()));

    let at = timestamp::now();
    let queued = store
        .transition(&job.id, Transition::Queue, at)
        .await
        .expect("queue");
    assert_eq!(queued.phase, ExecutionPhase::Queued);
    let started = store
        .transition(&job.id, Transition::Start, at)
        .await
        .expect("start");
    assert_eq!(started.start_time, Some(at));
    let result = JobResult {
        id: "result".into(),
        key: "k/1.fits".into(),
        mime_type: "application/fits".into(),
        size: Some(5760),
    };
    let done = store
        .transition(&job.id, Transition::Complete(vec![result.clone()]), at)
        .await
        .expect("complete");
    assert_eq!(done.phase, ExecutionPhase::Completed);
    assert_eq!(done.results, vec![result]);
    assert_eq!(done.end_time, Some(at));
    assert_eq!(done.parameters, job.parameters);
}

async fn illegal_transitions_change_nothing(store: SqlJobStore) {
    let job = store
        .create(new_job("alice", 0))
        .await
        .expect("create")
        .job();
    let at = timestamp::now();
    let err = store.transition(&job.id, Transition::Start, at).await;
    assert!(matches!(
        err,
        Err(UwsError::IllegalTransition {
            from: ExecutionPhase::Pending,
            ..
        })
    ));
    store
        .transition(&job.id, Transition::Abort, at)
        .await
        .expect("abort");
    let late = store
        .transition(&job.id, Transition::Complete(vec![]), at)
        .await;
    assert!(matches!(
        late,
        Err(UwsError::IllegalTransition {
            from: ExecutionPhase::Aborted,
            ..
        })
    ));
    let failed = store
        .transition(
            &job.id,
            Transition::Fail(JobError::new(ErrorCode::Internal, "x")),
            at,
        )
        .await;
    assert!(failed.is_err());
    let job = store.get(&job.id).await.expect("get").expect("job");
    assert_eq!(job.phase, ExecutionPhase::Aborted);
    assert_eq!(job.error, None);
}

async fn list_is_newest_first_and_filtered(store: SqlJobStore) {
    let a = store
        .create(new_job("alice", -3000))
        .await
        .expect("a")
        .job();
    let b = store
        .create(new_job("alice", -2000))
        .await
        .expect("b")
        .job();
    let c = store
        .create(new_job("alice", -1000))
        .await
        .expect("c")
        .job();
    store.create(new_job("bob", 0)).await.expect("bob").job();
    store
        .transition(&b.id, Transition::Queue, timestamp::now())
        .await
        .expect("queue");

    let all = store
        .list("alice", &JobFilter::default())
        .await
        .expect("list");
    let ids: Vec<_> = all.iter().map(|j| j.id.clone()).collect();
    assert_eq!(ids, [c.id.clone(), b.id.clone(), a.id.clone()]);

    let last = store
        .list(
            "alice",
            &JobFilter {
                last: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect("last");
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].id, c.id);

    let after = store
        .list(
            "alice",
            &JobFilter {
                after: Some(b.creation_time),
                ..Default::default()
            },
        )
        .await
        .expect("after");
    assert_eq!(
        after.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [c.id.as_str()]
    );

    let queued = store
        .list(
            "alice",
            &JobFilter {
                phases: vec![ExecutionPhase::Queued],
                ..Default::default()
            },
        )
        .await
        .expect("phase");
    assert_eq!(
        queued.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [b.id.as_str()]
    );
}

async fn updates_apply_only_while_pending(store: SqlJobStore) {
    let job = store
        .create(new_job("alice", 0))
        .await
        .expect("create")
        .job();
    let updated = store
        .update(&job.id, JobUpdate::ExecutionDuration(5))
        .await
        .expect("duration");
    assert_eq!(updated.execution_duration, 5);
    store
        .transition(&job.id, Transition::Queue, timestamp::now())
        .await
        .expect("queue");
    let refused = store.update(&job.id, JobUpdate::ExecutionDuration(9)).await;
    assert!(matches!(refused, Err(UwsError::WrongPhase { .. })));
    let t = timestamp::now();
    let later = store
        .update(&job.id, JobUpdate::Destruction(t))
        .await
        .expect("destruction");
    assert_eq!(later.destruction, t);
    assert_eq!(
        store.expired(t, 10).await.expect("expired"),
        vec![job.id.clone()]
    );
    assert!(store.delete(&job.id).await.expect("delete").is_some());
    assert_eq!(store.get(&job.id).await.expect("get"), None);
    assert!(store.delete(&job.id).await.expect("delete twice").is_none());
}

/// Pages read with the cursor give the whole list once, in order, even where creation times tie.
async fn cursor_pages_cover_the_list_once_in_order(store: SqlJobStore) {
    let tied = new_job("carol", -500);
    for i in 0..25 {
        let job = if i % 3 == 0 {
            // The same creation time, another job.
            NewJob {
                id: uws::JobId::random(),
                ..tied.clone()
            }
        } else {
            new_job("carol", -10_000 + i)
        };
        store.create(job).await.expect("create").job();
    }
    let whole = store
        .list("carol", &JobFilter::default())
        .await
        .expect("whole list");
    assert_eq!(whole.len(), 25);

    let mut paged = Vec::new();
    let mut filter = JobFilter {
        last: Some(4),
        ..Default::default()
    };
    loop {
        let page = store.list("carol", &filter).await.expect("page");
        let Some(last) = page.last() else { break };
        filter.cursor = Some(ListCursor::after(last));
        paged.extend(page);
    }
    assert_eq!(paged, whole);
}

async fn usage_counts_one_owners_queue_window_and_result_bytes(store: SqlJobStore) {
    let old = store
        .create(new_job("alice", -7_200_000))
        .await
        .expect("old")
        .job();
    let queued = store
        .create(new_job("alice", -1000))
        .await
        .expect("queued")
        .job();
    let running = store
        .create(new_job("alice", -500))
        .await
        .expect("running")
        .job();
    store.create(new_job("bob", 0)).await.expect("bob").job();
    let at = timestamp::now();
    for id in [&old.id, &queued.id, &running.id] {
        store
            .transition(id, Transition::Queue, at)
            .await
            .expect("queue");
    }
    for id in [&old.id, &running.id] {
        store
            .transition(id, Transition::Start, at)
            .await
            .expect("start");
    }
    let result = |size| JobResult {
        id: "r".into(),
        key: "k".into(),
        mime_type: "application/fits".into(),
        size,
    };
    store
        .transition(
            &old.id,
            Transition::Complete(vec![result(Some(100)), result(Some(23)), result(None)]),
            at,
        )
        .await
        .expect("complete");
    let since = timestamp::now() - Duration::from_secs(3600);
    let usage = store.usage("alice", since).await.expect("usage");
    assert_eq!(usage.queued, 1);
    assert_eq!(usage.executing, 1);
    assert_eq!(usage.created_since, 2);
    assert_eq!(usage.oldest_since, Some(queued.creation_time));
    assert_eq!(usage.result_bytes, 123);
    let nobody = store.usage("carol", since).await.expect("usage");
    assert_eq!(nobody, uws::store::OwnerUsage::default());
}

async fn queued_count_counts_one_owners_queued_jobs_up_to_the_cap(store: SqlJobStore) {
    let at = timestamp::now();
    for n in 0..5 {
        let job = store
            .create(new_job("alice", n))
            .await
            .expect("create")
            .job();
        store
            .transition(&job.id, Transition::Queue, at)
            .await
            .expect("queue");
        if n == 0 {
            store
                .transition(&job.id, Transition::Start, at)
                .await
                .expect("start");
        }
    }
    store
        .create(new_job("alice", 10))
        .await
        .expect("pending")
        .job();
    let bobs = store.create(new_job("bob", 0)).await.expect("bob").job();
    store
        .transition(&bobs.id, Transition::Queue, at)
        .await
        .expect("queue");
    assert_eq!(store.queued_count("alice", 100).await.expect("count"), 4);
    assert_eq!(store.queued_count("alice", 3).await.expect("count"), 3);
    assert_eq!(store.queued_count("bob", 100).await.expect("count"), 1);
    assert_eq!(store.queued_count("carol", 100).await.expect("count"), 0);
}

/// A job completed before migration 2 has no `result_bytes`; its result list still counts.
#[tokio::test]
async fn usage_sums_result_lists_of_jobs_completed_before_the_result_bytes_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite(&dir, "legacy_result_bytes").await;
    let job = store
        .create(new_job("alice", 0))
        .await
        .expect("create")
        .job();
    let at = timestamp::now();
    store
        .transition(&job.id, Transition::Queue, at)
        .await
        .expect("queue");
    store
        .transition(&job.id, Transition::Start, at)
        .await
        .expect("start");
    let result = JobResult {
        id: "r".into(),
        key: "k".into(),
        mime_type: "application/fits".into(),
        size: Some(4096),
    };
    store
        .transition(&job.id, Transition::Complete(vec![result]), at)
        .await
        .expect("complete");
    // What a row written by a version without the column looks like.
    let url = format!("sqlite://{}", dir.path().join("jobs.sqlite").display());
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("open the file");
    sqlx::query("UPDATE uws_job SET result_bytes = NULL WHERE id = $1")
        .bind(job.id.as_str())
        .execute(&mut db)
        .await
        .expect("forget the size");
    let since = timestamp::now() - Duration::from_secs(3600);
    let usage = store.usage("alice", since).await.expect("usage");
    assert_eq!(usage.result_bytes, 4096);
}

/// Runs a new job from `start` to `start + seconds` and ends it by `end`.
async fn run(
    store: &SqlJobStore,
    offset_ms: i64,
    seconds: i64,
    end: fn(Vec<JobResult>) -> Transition,
) {
    let job = store
        .create(new_job("alice", offset_ms))
        .await
        .expect("create")
        .job();
    let start = timestamp::now();
    let at = |s: i64| start + time::Duration::seconds(s);
    store
        .transition(&job.id, Transition::Queue, at(0))
        .await
        .expect("queue");
    store
        .transition(&job.id, Transition::Start, at(0))
        .await
        .expect("start");
    store
        .transition(&job.id, end(Vec::new()), at(seconds))
        .await
        .expect("end");
}

async fn recent_runs_are_the_newest_completed_jobs_with_their_result_bytes(store: SqlJobStore) {
    assert_eq!(store.recent_runs(10).await.expect("empty"), Vec::new());
    run(&store, -3000, 100, Transition::Complete).await;
    run(&store, -2000, 2, Transition::Complete).await;
    run(&store, -1000, 4, |_| {
        Transition::Complete(vec![JobResult {
            id: "result".into(),
            key: "k".into(),
            mime_type: "application/fits".into(),
            size: Some(40_000),
        }])
    })
    .await;
    // Failed jobs say nothing about how long a cutout takes.
    run(&store, 0, 50, |_| {
        Transition::Fail(JobError::new(ErrorCode::Internal, "boom"))
    })
    .await;
    let runs = store.recent_runs(2).await.expect("runs");
    assert_eq!(
        runs,
        vec![
            uws::store::RecentRun {
                run_time: Duration::from_secs(4),
                result_bytes: Some(40_000),
            },
            uws::store::RecentRun {
                run_time: Duration::from_secs(2),
                result_bytes: Some(0),
            },
        ]
    );
    assert_eq!(store.recent_runs(10).await.expect("runs").len(), 3);
}

async fn completed_jobs_are_found_by_end_and_archived_without_results(store: SqlJobStore) {
    let result = JobResult {
        id: "result".into(),
        key: "k/1.fits".into(),
        mime_type: "application/fits".into(),
        size: Some(5760),
    };
    let mut ids = Vec::new();
    for ended_ago in [300, 200, 100] {
        let job = store
            .create(new_job("alice", 0))
            .await
            .expect("create")
            .job();
        let at = timestamp::now() - time::Duration::seconds(ended_ago);
        store
            .transition(&job.id, Transition::Queue, at)
            .await
            .expect("queue");
        store
            .transition(&job.id, Transition::Start, at)
            .await
            .expect("start");
        store
            .transition(&job.id, Transition::Complete(vec![result.clone()]), at)
            .await
            .expect("complete");
        ids.push(job.id);
    }
    // A failed job has no results to expire.
    run(&store, 0, 0, |_| {
        Transition::Fail(JobError::new(ErrorCode::Internal, "boom"))
    })
    .await;
    let before = |seconds: i64| timestamp::now() - time::Duration::seconds(seconds);
    assert_eq!(
        store.results_expired(before(150), 10).await.expect("ended"),
        ids[..2]
    );
    assert_eq!(
        store.results_expired(before(150), 1).await.expect("ended"),
        ids[..1]
    );
    let archived = store
        .transition(&ids[0], Transition::Archive, timestamp::now())
        .await
        .expect("archive");
    assert_eq!(archived.phase, ExecutionPhase::Archived);
    assert!(archived.results.is_empty());
    assert_eq!(
        store.get(&ids[0]).await.expect("get"),
        Some(archived.clone())
    );
    assert_eq!(
        store.results_expired(before(150), 10).await.expect("ended"),
        ids[1..2]
    );
    // Archived once, never again; an uncompleted job never.
    assert!(matches!(
        store
            .transition(&ids[0], Transition::Archive, timestamp::now())
            .await,
        Err(UwsError::IllegalTransition { .. })
    ));
    let pending = store
        .create(new_job("alice", 0))
        .await
        .expect("create")
        .job();
    assert!(matches!(
        store
            .transition(&pending.id, Transition::Archive, timestamp::now())
            .await,
        Err(UwsError::IllegalTransition { .. })
    ));
    // Its results no longer count against the owner's bytes.
    let usage = store.usage("alice", timestamp::now()).await.expect("usage");
    assert_eq!(usage.result_bytes, 2 * 5760);
}

async fn a_job_created_queued_starts_at_once(store: SqlJobStore) {
    let job = store
        .create(NewJob {
            queued: true,
            sync: false,
            ..new_job("alice", 0)
        })
        .await
        .expect("create")
        .job();
    assert_eq!(job.phase, ExecutionPhase::Queued);
    let started = store
        .transition(&job.id, Transition::Start, timestamp::now())
        .await
        .expect("start");
    assert_eq!(started.phase, ExecutionPhase::Executing);
}

/// A job created with its size (a bulk job's counts, nothing done) holds it as its progress
/// from the insert on, with and without admission limits (two different INSERTs), until the
/// worker's first report replaces it.
async fn a_job_created_with_its_size_holds_it_as_progress(store: SqlJobStore) {
    let size = uws::Progress(vec![
        uws::ProgressCount {
            name: "stamps".into(),
            done: 0,
            total: 500,
        },
        uws::ProgressCount {
            name: "shards".into(),
            done: 0,
            total: 3,
        },
    ]);
    let limited = uws::Admission {
        jobs_queued: Some(10),
        ..uws::Admission::default()
    };
    for admission in [uws::Admission::default(), limited] {
        let job = store
            .create(NewJob {
                queued: true,
                admission,
                progress: Some(size.clone()),
                ..new_job("alice", 0)
            })
            .await
            .expect("create")
            .job();
        assert_eq!(job.progress.as_ref(), Some(&size));
        assert_eq!(
            store
                .get(&job.id)
                .await
                .expect("get")
                .and_then(|j| j.progress),
            Some(size.clone())
        );
        store
            .transition(&job.id, Transition::Start, timestamp::now())
            .await
            .expect("start");
        let report = stamps_progress(100, 500);
        let reported = store
            .update(&job.id, JobUpdate::Progress(report.clone()))
            .await
            .expect("report");
        assert_eq!(reported.progress, Some(report));
    }
}

/// A synchronous request's job is written without waiting for the disk (PostgreSQL: through
/// the connections with `synchronous_commit = off`), with and without admission limits, and
/// reads back exactly like any other job at every step.
async fn a_sync_jobs_writes_read_back_like_any_others(store: SqlJobStore) {
    let limited = uws::Admission {
        jobs_queued: Some(10),
        jobs_per_hour: Some(100),
        ..uws::Admission::default()
    };
    for (n, admission) in [uws::Admission::default(), limited].into_iter().enumerate() {
        let job = store
            .create(NewJob {
                queued: true,
                sync: true,
                admission,
                ..new_job("alice", n as i64)
            })
            .await
            .expect("create")
            .job();
        assert_eq!(job.phase, ExecutionPhase::Queued);
        store
            .transition(&job.id, Transition::Start, timestamp::now())
            .await
            .expect("start");
        let result = JobResult {
            id: "result".into(),
            key: format!("{}/0a/result.fits", job.id),
            mime_type: "application/fits".into(),
            size: Some(5760),
        };
        store
            .transition(
                &job.id,
                Transition::Complete(vec![result.clone()]),
                timestamp::now(),
            )
            .await
            .expect("complete");
        let read = store.get(&job.id).await.expect("get").expect("the job");
        assert_eq!(read.phase, ExecutionPhase::Completed);
        assert_eq!(read.results, [result]);
    }
}

/// A bulk job's progress in stamps alone.
fn stamps_progress(done: u64, total: u64) -> uws::Progress {
    uws::Progress(vec![uws::ProgressCount {
        name: "stamps".into(),
        done,
        total,
    }])
}

fn sync_job(owner: &str) -> NewJob {
    NewJob {
        queued: true,
        sync: true,
        ..new_job(owner, 0)
    }
}

fn a_result(job: &uws::Job) -> JobResult {
    JobResult {
        id: "result".into(),
        key: format!("{}/0a/result.fits", job.id),
        mime_type: "application/fits".into(),
        size: Some(5760),
    }
}

/// Completes `job` now with its one result.
async fn complete_now(store: &SqlJobStore, job: &uws::Job) -> Result<uws::Job, UwsError> {
    store
        .transition(
            &job.id,
            Transition::Complete(vec![a_result(job)]),
            timestamp::now(),
        )
        .await
}

/// A sync job's `begin` is held by the store that created it, not written: that store answers
/// it EXECUTING from then on, its row stays QUEUED until the final write gives it the phase and
/// the start time together. `elsewhere` is another process on the same database.
async fn a_sync_job_begins_in_memory_and_ends_in_one_write(
    here: SqlJobStore,
    elsewhere: SqlJobStore,
) {
    let job = here.create(sync_job("alice")).await.expect("create").job();
    let at = timestamp::now();
    let begun = here
        .transition(&job.id, Transition::Start, at)
        .await
        .expect("begin");
    assert_eq!(begun.phase, ExecutionPhase::Executing);
    assert_eq!(begun.start_time, Some(at));
    let row = elsewhere.get(&job.id).await.expect("get").expect("job");
    assert_eq!((row.phase, row.start_time), (ExecutionPhase::Queued, None));
    assert_eq!(here.get(&job.id).await.expect("get"), Some(begun.clone()));
    let listed = here
        .list("alice", &JobFilter::default())
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|j| (&j.id, j.phase)).collect::<Vec<_>>(),
        [(&job.id, ExecutionPhase::Executing)]
    );
    match here.transition(&job.id, Transition::Start, at).await {
        Err(UwsError::IllegalTransition { from, .. }) => {
            assert_eq!(from, ExecutionPhase::Executing)
        }
        other => panic!("a second begin must be refused: {other:?}"),
    }
    let end = timestamp::now();
    let completed = here
        .transition(&job.id, Transition::Complete(vec![a_result(&job)]), end)
        .await
        .expect("complete");
    let row = elsewhere.get(&job.id).await.expect("get").expect("job");
    assert_eq!(row, completed);
    assert_eq!(
        (row.phase, row.start_time, row.end_time),
        (ExecutionPhase::Completed, Some(at), Some(end))
    );
    assert_eq!(row.results, [a_result(&job)]);
}

/// A sync job running in memory here and aborted by another process is refused its completion,
/// and read as the row has it.
async fn a_sync_job_ended_elsewhere_is_not_completed_here(
    here: SqlJobStore,
    elsewhere: SqlJobStore,
) {
    let job = here.create(sync_job("alice")).await.expect("create").job();
    here.transition(&job.id, Transition::Start, timestamp::now())
        .await
        .expect("begin");
    elsewhere
        .transition(&job.id, Transition::Abort, timestamp::now())
        .await
        .expect("abort elsewhere");
    match complete_now(&here, &job).await {
        Err(UwsError::IllegalTransition { from, .. }) => assert_eq!(from, ExecutionPhase::Aborted),
        other => panic!("the completion must be refused: {other:?}"),
    }
    let read = here.get(&job.id).await.expect("get").expect("job");
    assert_eq!(read.phase, ExecutionPhase::Aborted);
    assert!(read.results.is_empty());
}

/// A sync job handed back (a draining worker) is QUEUED again and begins anew; the final row
/// has the start of the run that completed it.
async fn a_sync_job_handed_back_begins_again(here: SqlJobStore, elsewhere: SqlJobStore) {
    let job = here.create(sync_job("alice")).await.expect("create").job();
    here.transition(&job.id, Transition::Start, timestamp::now())
        .await
        .expect("begin");
    let back = here
        .transition(&job.id, Transition::Queue, timestamp::now())
        .await
        .expect("hand back");
    assert_eq!(back.phase, ExecutionPhase::Queued);
    assert_eq!(
        here.get(&job.id).await.expect("get").map(|j| j.phase),
        Some(ExecutionPhase::Queued)
    );
    let again = timestamp::now() + Duration::from_secs(1);
    here.transition(&job.id, Transition::Start, again)
        .await
        .expect("begin again");
    complete_now(&here, &job).await.expect("complete");
    let row = elsewhere.get(&job.id).await.expect("get").expect("job");
    assert_eq!(
        (row.phase, row.start_time),
        (ExecutionPhase::Completed, Some(again))
    );
}

/// A progress report of a sync job running in memory is accepted, and writes its row EXECUTING,
/// which holds the phase from then on.
async fn a_sync_job_reporting_progress_is_written_executing(
    here: SqlJobStore,
    elsewhere: SqlJobStore,
) {
    let job = here.create(sync_job("alice")).await.expect("create").job();
    let at = timestamp::now();
    here.transition(&job.id, Transition::Start, at)
        .await
        .expect("begin");
    let report = stamps_progress(1, 2);
    let reported = here
        .update(&job.id, JobUpdate::Progress(report.clone()))
        .await
        .expect("report");
    assert_eq!(
        (reported.phase, reported.start_time, reported.progress),
        (ExecutionPhase::Executing, Some(at), Some(report))
    );
    let row = elsewhere.get(&job.id).await.expect("get").expect("job");
    assert_eq!(
        (row.phase, row.start_time),
        (ExecutionPhase::Executing, Some(at))
    );
    complete_now(&here, &job).await.expect("complete");
}

/// Many writers at once (the SQLite writer commits them in batches): each gets its own answer,
/// and a refused transition in a batch fails alone.
async fn concurrent_writes_each_get_their_own_answer(store: SqlJobStore) {
    let writes = (0..40).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let job = store
                .create(NewJob {
                    queued: n % 2 == 0,
                    sync: false,
                    ..new_job("alice", n)
                })
                .await
                .expect("create")
                .job();
            // Refused for the PENDING half, accepted for the QUEUED half.
            let started = store
                .transition(&job.id, Transition::Start, timestamp::now())
                .await;
            assert_eq!(started.is_ok(), n % 2 == 0, "{n}: {started:?}");
            let done = store
                .transition(&job.id, Transition::Abort, timestamp::now())
                .await
                .expect("abort");
            assert_eq!(done.id, job.id);
            assert_eq!(done.phase, ExecutionPhase::Aborted);
            job.id
        })
    });
    let mut ids = Vec::new();
    for write in writes.collect::<Vec<_>>() {
        ids.push(write.await.expect("writer task"));
    }
    for id in ids {
        let job = store.get(&id).await.expect("get").expect("job");
        assert_eq!(job.phase, ExecutionPhase::Aborted);
    }
}

/// The caller's ID makes a create repeatable: the same create answers the job it made (and
/// changes nothing), another create under that ID is a conflict, and so is the same ID from
/// another service sharing the database.
async fn create_is_idempotent_on_the_callers_id(store: SqlJobStore) {
    let first = new_job("alice", 0);
    let created = store.create(first.clone()).await.expect("create");
    let Created::New(job) = created else {
        panic!("first create: {created:?}")
    };
    assert_eq!(job.id, first.id);
    store
        .transition(&job.id, Transition::Queue, timestamp::now())
        .await
        .expect("queue");
    // The repeat (a lost answer) answers the job as it is now, QUEUED, and stores nothing new.
    let again = store.create(first.clone()).await.expect("repeat");
    let Created::Existing(existing) = again else {
        panic!("repeat: {again:?}")
    };
    assert_eq!(existing.id, job.id);
    assert_eq!(existing.phase, ExecutionPhase::Queued);
    assert_eq!(existing.creation_time, job.creation_time);
    let listed = store
        .list("alice", &JobFilter::default())
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);

    let other_parameters = NewJob {
        parameters: vec![("ID".into(), "butler://demo/b".into())],
        ..first.clone()
    };
    let other_owner = NewJob {
        owner: "mallory".into(),
        ..first.clone()
    };
    let other_run_id = NewJob {
        run_id: Some("other".into()),
        ..first.clone()
    };
    for conflicting in [other_parameters, other_owner, other_run_id] {
        let refused = store.create(conflicting).await;
        assert!(matches!(refused, Err(UwsError::Conflict(_))), "{refused:?}");
    }
    let elsewhere = store.for_service(&unique_service("elsewhere"));
    let refused = elsewhere.create(first.clone()).await;
    assert!(matches!(refused, Err(UwsError::Conflict(_))), "{refused:?}");
    let job = store.get(&job.id).await.expect("get").expect("job");
    assert_eq!(job.owner, "alice");
    assert_eq!(job.parameters, first.parameters);
}

/// Concurrent creates with one ID (two requests with the same `Idempotency-Key`): exactly one
/// stores the job, every other answers that job.
async fn concurrent_creates_of_one_id_make_one_job(store: SqlJobStore) {
    let job = new_job("carol", 0);
    let attempts = (0..16).map(|_| {
        let store = store.clone();
        let job = job.clone();
        tokio::spawn(async move { store.create(job).await.expect("create") })
    });
    let mut new = 0;
    for attempt in attempts.collect::<Vec<_>>() {
        match attempt.await.expect("task") {
            Created::New(created) => {
                new += 1;
                assert_eq!(created.id, job.id);
            }
            Created::Existing(existing) => assert_eq!(existing.id, job.id),
        }
    }
    assert_eq!(new, 1);
    let listed = store
        .list("carol", &JobFilter::default())
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
}

/// 40 creates of one owner at once against `jobs_per_hour = 5` admit exactly 5 (the others are
/// `OverQuota`); deleting them gives nothing back; another owner is not affected; planned bytes
/// are kept with the job and reserved against `result_bytes`.
async fn admission_is_atomic_per_owner_and_outlives_deletion(store: SqlJobStore) {
    let limited = uws::Admission {
        jobs_per_hour: Some(5),
        ..uws::Admission::default()
    };
    let creates = (0..40).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .create(NewJob {
                    admission: limited,
                    ..new_job("alice", n)
                })
                .await
        })
    });
    let mut admitted = Vec::new();
    for create in creates {
        match create.await.expect("task") {
            Ok(created) => admitted.push(created.job().id),
            Err(UwsError::OverQuota(message)) => {
                assert!(message.contains("the most allowed is 5"), "{message}");
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(admitted.len(), 5);
    for id in &admitted {
        store.delete(id).await.expect("delete");
    }
    let again = store
        .create(NewJob {
            admission: limited,
            ..new_job("alice", 100)
        })
        .await;
    assert!(matches!(again, Err(UwsError::OverQuota(_))), "{again:?}");
    store
        .create(NewJob {
            admission: limited,
            ..new_job("bob", 0)
        })
        .await
        .expect("another owner");

    let reserving = |planned: u64| uws::Admission {
        planned_bytes: Some(planned),
        result_bytes: Some(1000),
        ..uws::Admission::default()
    };
    let job = store
        .create(NewJob {
            admission: reserving(1000),
            ..new_job("carol", 0)
        })
        .await
        .expect("within the limit")
        .job();
    assert_eq!(
        store
            .get(&job.id)
            .await
            .expect("get")
            .expect("job")
            .planned_bytes,
        Some(1000)
    );
    let over = store
        .create(NewJob {
            admission: reserving(1),
            ..new_job("carol", 1)
        })
        .await;
    assert!(matches!(over, Err(UwsError::OverQuota(_))), "{over:?}");
    let since = timestamp::now() - Duration::from_secs(3600);
    assert_eq!(
        store
            .usage("carol", since)
            .await
            .expect("usage")
            .result_bytes,
        1000
    );
    // Aborted: nothing is reserved any more.
    store
        .transition(&job.id, Transition::Abort, timestamp::now())
        .await
        .expect("abort");
    store
        .create(NewJob {
            admission: reserving(1),
            ..new_job("carol", 2)
        })
        .await
        .expect("the reservation was released");
}

/// The sky index: files replaced whole, images found by cell (exact and by range), narrowed by
/// time and collection, located rows read back exactly, unusable ones listed and never found.
async fn sky_index_replaces_files_and_finds_images_by_cell(store: SqlJobStore) {
    use uws::sky_index::{
        CellQuery, FileStamp, ImageContent, ImageIndex, ImageLocation, IndexedImage,
    };
    let index = store.sky_index();
    // The sky tables are not scoped by service: a unique collection keeps tests apart.
    let collection = unique_service("sky");
    let image = |name: &str, cells: Vec<i64>, time: Option<(f64, f64)>| IndexedImage {
        id: format!("butler://{collection}/{name}"),
        collection: collection.clone(),
        file: format!("{name}.fits"),
        stamp: FileStamp {
            size: 100,
            mtime: 7,
        },
        content: ImageContent::Located(ImageLocation {
            size: (10, 20),
            center: (1.5, -2.25),
            radius_deg: 0.5,
            corners: vec![(1.0, -2.5), (2.0, -2.5), (2.0, -2.0), (0.1 + 0.2, -2.0)],
            time,
            band: None,
            cells,
        }),
    };
    let january = Some((60_000.0, 60_000.5));
    index
        .replace_file(
            &collection,
            "a.fits",
            vec![image("a", vec![100, 101], january)],
        )
        .await
        .expect("a");
    index
        .replace_file(
            &collection,
            "b.fits",
            vec![image("b", vec![101, 5000], None)],
        )
        .await
        .expect("b");
    let unusable = IndexedImage {
        id: format!("butler://{collection}/bad"),
        collection: collection.clone(),
        file: "bad.fits".to_owned(),
        stamp: FileStamp { size: 1, mtime: 1 },
        content: ImageContent::Unusable("no celestial WCS".to_owned()),
    };
    index
        .replace_file(&collection, "bad.fits", vec![unusable])
        .await
        .expect("bad");
    let query = |cells: Vec<i64>, ranges: Vec<(i64, i64)>, time| CellQuery {
        cells,
        ranges,
        time,
        band: None,
        collections: vec![collection.clone()],
        limit: 10,
    };
    let names = |found: Vec<IndexedImage>| -> Vec<String> {
        found
            .into_iter()
            .map(|i| i.id.rsplit('/').next().unwrap_or_default().to_owned())
            .collect()
    };
    let find = |q: CellQuery| {
        let index = index.clone();
        async move { index.candidates(&q).await.expect("candidates") }
    };
    // Timed images first, then by ID.
    assert_eq!(
        names(find(query(vec![101], vec![], None)).await),
        ["a", "b"]
    );
    assert_eq!(
        names(find(query(vec![], vec![(4000, 6000)], None)).await),
        ["b"]
    );
    assert_eq!(
        names(find(query(vec![101], vec![], Some((60_000.2, 61_000.0)))).await),
        ["a"]
    );
    assert_eq!(
        find(query(vec![100], vec![], None)).await,
        vec![image("a", Vec::new(), january)]
    );
    assert_eq!(index.stamps(&collection).await.expect("stamps").len(), 3);
    // Replacing a file drops its old cells; removing one drops everything of it.
    index
        .replace_file(&collection, "a.fits", vec![image("a", vec![7], None)])
        .await
        .expect("a again");
    assert_eq!(names(find(query(vec![101], vec![], None)).await), ["b"]);
    index
        .remove_file(&collection, "b.fits")
        .await
        .expect("remove");
    assert!(find(query(vec![101, 5000], vec![], None)).await.is_empty());
    assert!(
        index
            .unusable(100_000)
            .await
            .expect("unusable")
            .iter()
            .any(|i| i.id.ends_with(&format!("{collection}/bad")))
    );
}

/// Many files written in one batch, more rows than one INSERT takes, all found; forgetting the
/// collection forgets every one of them and nothing of another collection.
async fn sky_index_writes_files_in_batches_and_forgets_a_collection(store: SqlJobStore) {
    use uws::sky_index::{
        CellQuery, FileStamp, ImageContent, ImageIndex, ImageLocation, IndexedImage,
    };
    let index = store.sky_index();
    let (collection, other) = (unique_service("batch"), unique_service("kept"));
    let image = |collection: &str, n: usize| IndexedImage {
        id: format!("butler://{collection}/i{n}"),
        collection: collection.to_owned(),
        file: format!("i{n}.fits"),
        stamp: FileStamp { size: 1, mtime: 1 },
        content: ImageContent::Located(ImageLocation {
            size: (10, 10),
            center: (1.0, 1.0),
            radius_deg: 0.1,
            corners: vec![(0.9, 0.9), (1.1, 0.9), (1.1, 1.1), (0.9, 1.1)],
            time: Some((60_000.0 + n as f64, 60_000.0 + n as f64)),
            band: None,
            // Three cells each: 3,600 cell rows, more than one INSERT holds.
            cells: vec![42, 1_000_000 + n as i64, 2_000_000 + n as i64],
        }),
    };
    let files = |collection: &str, n: usize| -> Vec<(String, Vec<IndexedImage>)> {
        (0..n)
            .map(|i| (format!("i{i}.fits"), vec![image(collection, i)]))
            .collect()
    };
    index
        .replace_files(&collection, files(&collection, 1200))
        .await
        .expect("batch");
    index
        .replace_files(&other, files(&other, 3))
        .await
        .expect("other");
    let query = |collection: &str| CellQuery {
        cells: vec![42],
        collections: vec![collection.to_owned()],
        limit: 10_000,
        ..CellQuery::default()
    };
    index.settle().await.expect("settle");
    let found = index.candidates(&query(&collection)).await.expect("found");
    assert_eq!(found.len(), 1200);
    // In time order, as a light curve lists its epochs.
    assert_eq!(
        found[0],
        IndexedImage {
            content: match image(&collection, 0).content {
                ImageContent::Located(l) => ImageContent::Located(ImageLocation {
                    cells: Vec::new(),
                    ..l
                }),
                other => other,
            },
            ..image(&collection, 0)
        }
    );
    assert!(found.last().is_some_and(|i| i.id.ends_with("/i1199")));
    index.forget_collection(&collection).await.expect("forget");
    assert!(
        index
            .candidates(&query(&collection))
            .await
            .expect("gone")
            .is_empty()
    );
    assert!(index.stamps(&collection).await.expect("stamps").is_empty());
    assert_eq!(
        index.candidates(&query(&other)).await.expect("kept").len(),
        3
    );
    index.forget_collection(&other).await.expect("forget other");
}

macro_rules! both_databases {
    ($($name:ident),*) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    super::$name(super::sqlite(&dir, stringify!($name)).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::postgres(stringify!($name)).await).await;
                }
            )*
        }
    };
}

/// Tests of two stores on one database and service, as two processes would open it.
macro_rules! both_databases_twice {
    ($($name:ident),*) => {
        mod sqlite_twice {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let url = format!(
                        "sqlite://{}?mode=rwc",
                        dir.path().join("jobs.sqlite").display()
                    );
                    let service = super::unique_service(stringify!($name));
                    let open = || wobbly::SqlJobStore::connect(&url, &service, 4);
                    let here = open().await.expect("sqlite store");
                    let elsewhere = open().await.expect("sqlite store");
                    super::$name(here, elsewhere).await;
                }
            )*
        }
        mod postgres_twice {
            $(
                #[tokio::test]
                async fn $name() {
                    let url = super::postgres_url();
                    let service = super::unique_service(stringify!($name));
                    let open = || wobbly::SqlJobStore::connect(&url, &service, 4);
                    let here = open().await.expect("postgres store");
                    let elsewhere = open().await.expect("postgres store");
                    super::$name(here, elsewhere).await;
                }
            )*
        }
    };
}

both_databases_twice!(
    a_sync_job_begins_in_memory_and_ends_in_one_write,
    a_sync_job_ended_elsewhere_is_not_completed_here,
    a_sync_job_handed_back_begins_again,
    a_sync_job_reporting_progress_is_written_executing
);

both_databases!(
    job_lifecycle_is_stored_exactly,
    illegal_transitions_change_nothing,
    list_is_newest_first_and_filtered,
    updates_apply_only_while_pending,
    cursor_pages_cover_the_list_once_in_order,
    usage_counts_one_owners_queue_window_and_result_bytes,
    queued_count_counts_one_owners_queued_jobs_up_to_the_cap,
    recent_runs_are_the_newest_completed_jobs_with_their_result_bytes,
    completed_jobs_are_found_by_end_and_archived_without_results,
    a_job_created_queued_starts_at_once,
    a_job_created_with_its_size_holds_it_as_progress,
    a_sync_jobs_writes_read_back_like_any_others,
    concurrent_writes_each_get_their_own_answer,
    create_is_idempotent_on_the_callers_id,
    concurrent_creates_of_one_id_make_one_job,
    admission_is_atomic_per_owner_and_outlives_deletion,
    sky_index_replaces_files_and_finds_images_by_cell,
    sky_index_writes_files_in_batches_and_forgets_a_collection
);
