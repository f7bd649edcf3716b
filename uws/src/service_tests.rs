//! Fast tests of [`crate::service::Uws`] on the in-memory store, queue and result store of
//! [`crate::testing`]: owner isolation, every phase rule the service applies, WAIT, synchronous
//! runs, fair-share lanes, limits, deletion and expiry.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use crate::Admission;
use crate::error::UwsError;
use crate::events::{PhaseChange, PhaseEvents};
use crate::job::{ErrorCode, ExecutionPhase, Job, JobError, JobId, JobResult};
use crate::params::Parameters;
use crate::queue::{DelegatedToken, Priority};
use crate::service::{FALLBACK_REREAD, JobLimits};
use crate::store::{JobStore, Transition};
use crate::testing::Harness;
use crate::timestamp;

use ExecutionPhase::*;

fn params(pairs: &[(&str, &str)]) -> Parameters {
    pairs.iter().copied().collect()
}

fn cutout() -> Parameters {
    params(&[("CIRCLE", "10 20 0.1")])
}

async fn pending(h: &Harness, owner: &str) -> Job {
    h.uws
        .create(
            JobId::random(),
            owner,
            &params(&[]),
            cutout(),
            Priority::Async,
            None,
            Admission::default(),
        )
        .await
        .expect("create")
}

async fn queued(h: &Harness, owner: &str, priority: Priority) -> Job {
    h.uws
        .create(
            JobId::random(),
            owner,
            &params(&[("PHASE", "RUN")]),
            cutout(),
            priority,
            None,
            Admission::default(),
        )
        .await
        .expect("create")
}

/// A synchronous request of alice's for [`cutout`], waiting at most `timeout`.
async fn sync_run(h: &Harness, timeout: Duration) -> Job {
    h.uws
        .run_and_wait(
            JobId::random(),
            "alice",
            cutout(),
            Priority::Sync,
            None,
            timeout,
            Admission::default(),
        )
        .await
        .expect("run")
}

/// An async job of alice's created with one UWS control parameter.
async fn create_with(h: &Harness, name: &str, value: &str) -> Job {
    h.uws
        .create(
            JobId::random(),
            "alice",
            &params(&[(name, value)]),
            cutout(),
            Priority::Async,
            None,
            Admission::default(),
        )
        .await
        .expect("create")
}

fn result(key: &str) -> JobResult {
    JobResult {
        id: "cutout".into(),
        key: key.into(),
        mime_type: "application/fits".into(),
        size: Some(2880),
    }
}

/// Waits (at most 10 s) for `job` to reach a final phase, and returns it as it ends.
async fn wait_to_the_end(h: &Harness, job: &Job) -> Job {
    h.uws
        .wait_final(&job.id, Duration::from_secs(10))
        .await
        .expect("wait")
}

/// Runs a queued job to COMPLETED as a worker would.
async fn complete(h: &Harness, job: &Job, key: &str) -> Job {
    h.uws.begin(&job.id).await.expect("start");
    h.uws
        .finish(&job.id, Transition::Complete(vec![result(key)]))
        .await
        .expect("complete")
}

fn is_not_found<T: std::fmt::Debug>(r: Result<T, UwsError>) -> bool {
    matches!(r, Err(UwsError::JobNotFound(_)))
}

#[tokio::test]
async fn another_owners_job_is_reported_as_missing_everywhere() {
    let h = Harness::default();
    let job = pending(&h, "alice").await;
    let id = job.id.as_str();
    assert_eq!(h.uws.job("alice", id).await.ok(), Some(job.clone()));
    assert!(is_not_found(h.uws.job("bob", id).await));
    assert!(is_not_found(
        h.uws.set_phase("bob", id, Some("RUN"), None).await
    ));
    assert!(is_not_found(
        h.uws.set_phase("bob", id, Some("ABORT"), None).await
    ));
    assert!(is_not_found(h.uws.wait("bob", id, "0", None).await));
    assert!(is_not_found(
        h.uws
            .set_destruction("bob", id, Some("2099-01-01T00:00:00Z"))
            .await
    ));
    assert!(is_not_found(
        h.uws.set_execution_duration("bob", id, Some("5")).await
    ));
    assert!(is_not_found(h.uws.delete("bob", id).await));
    assert!(
        h.uws
            .list("bob", &params(&[]))
            .await
            .expect("list")
            .is_empty()
    );
    // Nothing bob tried changed alice's job.
    assert_eq!(h.store.get(&job.id).await.expect("get"), Some(job));
    assert!(h.queue.sent().is_empty());
    // An ID that cannot name a job is a missing job, not a usage error.
    assert!(is_not_found(h.uws.job("alice", "../../etc").await));
}

#[tokio::test]
async fn a_job_created_without_run_waits_pending_and_queues_nothing() {
    let h = Harness::default();
    let job = pending(&h, "alice").await;
    assert_eq!(job.phase, Pending);
    assert_eq!(job.parameters, cutout().into_vec());
    assert!(h.queue.sent().is_empty());
    let listed = h.uws.list("alice", &params(&[])).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, job.id);
}

#[tokio::test]
async fn phase_run_at_creation_queues_the_job_once_with_its_lane_and_token() {
    let h = Harness::default();
    let token = DelegatedToken::new("gt-alice");
    let job = h
        .uws
        .create(
            JobId::random(),
            "alice",
            &params(&[("phase", " run ")]),
            cutout(),
            Priority::Async,
            Some(token.clone()),
            Admission::default(),
        )
        .await
        .expect("create");
    assert_eq!(job.phase, Queued);
    let sent = h.queue.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].id, job.id);
    assert_eq!(sent[0].priority, Priority::Async);
    assert_eq!(sent[0].token, Some(token));
    assert_eq!(
        h.store.get(&job.id).await.expect("get").map(|j| j.phase),
        Some(Queued)
    );
}

#[tokio::test]
async fn phase_run_queues_a_pending_job_and_a_repeated_run_queues_nothing() {
    let h = Harness::default();
    let job = pending(&h, "alice").await;
    let mut events = h.uws.subscribe();
    let token = DelegatedToken::new("gt");
    let run = h
        .uws
        .set_phase("alice", job.id.as_str(), Some("Run"), Some(token.clone()))
        .await
        .expect("run");
    assert_eq!(run.phase, Queued);
    assert_eq!(
        events.try_recv().ok(),
        Some(PhaseChange {
            id: job.id.clone(),
            owner: "alice".into(),
            phase: Queued
        })
    );
    // A repeated RUN (a lost answer, retried) answers the job as it is and queues nothing.
    let again = h
        .uws
        .set_phase("alice", job.id.as_str(), Some("RUN"), None)
        .await
        .expect("repeated run");
    assert_eq!(again.phase, Queued);
    let sent = h.queue.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].token, Some(token));
}

#[tokio::test]
async fn phase_must_be_run_or_abort() {
    let h = Harness::default();
    let job = pending(&h, "alice").await;
    for phase in [Some("SUSPEND"), Some("QUEUED"), Some(""), None] {
        let r = h.uws.set_phase("alice", job.id.as_str(), phase, None).await;
        assert!(matches!(r, Err(UwsError::Usage(_))), "{phase:?}: {r:?}");
    }
    assert_eq!(
        h.uws
            .job("alice", job.id.as_str())
            .await
            .expect("job")
            .phase,
        Pending
    );
}

#[tokio::test]
async fn abort_ends_every_active_phase_and_leaves_a_final_job_alone() {
    let h = Harness::default();
    let pending_job = pending(&h, "alice").await;
    let queued_job = queued(&h, "alice", Priority::Async).await;
    let executing = queued(&h, "alice", Priority::Async).await;
    h.uws.begin(&executing.id).await.expect("start");
    for job in [&pending_job, &queued_job, &executing] {
        let mut events = h.uws.subscribe();
        let aborted = h
            .uws
            .set_phase("alice", job.id.as_str(), Some("abort"), None)
            .await
            .expect("abort");
        assert_eq!(aborted.phase, Aborted);
        assert!(aborted.end_time.is_some());
        assert_eq!(events.try_recv().ok().map(|c| c.phase), Some(Aborted));
    }
    let done = queued(&h, "alice", Priority::Async).await;
    let done = complete(&h, &done, "k").await;
    let mut events = h.uws.subscribe();
    let still = h
        .uws
        .set_phase("alice", done.id.as_str(), Some("ABORT"), None)
        .await
        .expect("abort of a finished job");
    assert_eq!(still, done);
    assert!(
        events.try_recv().is_err(),
        "no event for a job that did not change"
    );
}

#[tokio::test]
async fn a_worker_applies_only_the_state_machine_and_each_change_is_announced() {
    let h = Harness::default();
    let job = queued(&h, "alice", Priority::Async).await;
    let mut events = h.uws.subscribe();
    let started = h.uws.begin(&job.id).await.expect("start");
    assert_eq!(started.phase, Executing);
    assert!(started.start_time.is_some());
    // A duplicate worker message is refused and announces nothing.
    let twice = h.uws.begin(&job.id).await;
    assert!(
        matches!(
            twice,
            Err(UwsError::IllegalTransition {
                from: Executing,
                to: Executing,
                ..
            })
        ),
        "{twice:?}"
    );
    // A draining worker hands the job back.
    let back = h.uws.hand_back(&job.id).await.expect("requeue");
    assert_eq!(back.phase, Queued);
    let queued_twice = h.uws.hand_back(&job.id).await;
    assert!(
        matches!(queued_twice, Err(UwsError::IllegalTransition { .. })),
        "{queued_twice:?}"
    );
    h.uws.begin(&job.id).await.expect("start again");
    let error = JobError::new(ErrorCode::NoData, "no overlap");
    let failed = h
        .uws
        .finish(&job.id, Transition::Fail(error.clone()))
        .await
        .expect("fail");
    assert_eq!((failed.phase, failed.error), (Error, Some(error)));
    let late = h
        .uws
        .finish(&job.id, Transition::Complete(vec![result("k")]))
        .await;
    assert!(
        matches!(
            late,
            Err(UwsError::IllegalTransition {
                from: Error,
                to: Completed,
                ..
            })
        ),
        "{late:?}"
    );
    let seen: Vec<ExecutionPhase> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|c| c.phase)
        .collect();
    assert_eq!(seen, [Executing, Queued, Executing, Error]);
    // A PENDING or QUEUED job can fail too (a job the worker cannot even read).
    for job in [
        pending(&h, "bob").await,
        queued(&h, "bob", Priority::Async).await,
    ] {
        let failed = h
            .uws
            .finish(
                &job.id,
                Transition::Fail(JobError::new(ErrorCode::Internal, "x")),
            )
            .await
            .expect("fail");
        assert_eq!(failed.phase, Error);
    }
    let missing = h.uws.begin(&crate::JobId::random()).await;
    assert!(is_not_found(missing));
}

#[tokio::test]
async fn finish_refuses_a_transition_that_does_not_end_the_job() {
    let h = Harness::default();
    let job = queued(&h, "alice", Priority::Async).await;
    let mut events = h.uws.subscribe();
    for transition in [Transition::Start, Transition::Queue] {
        let refused = h.uws.finish(&job.id, transition).await;
        assert!(matches!(refused, Err(UwsError::Usage(_))), "{refused:?}");
    }
    assert_eq!(
        h.store.get(&job.id).await.expect("get").map(|j| j.phase),
        Some(Queued)
    );
    assert!(
        events.try_recv().is_err(),
        "a refused finish announced a change"
    );
    // The same job ends through finish once it runs.
    h.uws.begin(&job.id).await.expect("start");
    let aborted = h
        .uws
        .finish(&job.id, Transition::Abort)
        .await
        .expect("abort");
    assert_eq!(aborted.phase, Aborted);
}

/// Counts `skycut_job_phase_transitions_total` by phase, for the thread it is set on.
#[derive(Default)]
struct TransitionCounts(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

struct PhaseCounter {
    phase: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl metrics::CounterFn for PhaseCounter {
    fn increment(&self, value: u64) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.extend((0..value).map(|_| self.phase.clone()));
        }
    }

    fn absolute(&self, _: u64) {}
}

impl metrics::Recorder for TransitionCounts {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        if key.name() != "skycut_job_phase_transitions_total" {
            return metrics::Counter::noop();
        }
        let phase = key
            .labels()
            .find(|l| l.key() == "phase")
            .map(|l| l.value().to_owned())
            .unwrap_or_default();
        metrics::Counter::from_arc(std::sync::Arc::new(PhaseCounter {
            phase,
            seen: self.0.clone(),
        }))
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[tokio::test]
async fn requeue_unfinished_queues_every_unfinished_job_again_and_announces_the_hand_back() {
    let h = Harness::default();
    let waiting = queued(&h, "alice", Priority::Async).await;
    let running = queued(&h, "bob", Priority::Async).await;
    let done = queued(&h, "carol", Priority::Async).await;
    h.uws.begin(&running.id).await.expect("start");
    complete(&h, &done, "k").await;
    // The previous run's in-process queue died with it.
    while h.queue.take().is_some() {}
    let counts = TransitionCounts::default();
    let mut events = h.uws.subscribe();
    let requeued = {
        // A current-thread test runtime: the recorder sees every increment of this test.
        let _recorder = metrics::set_default_local_recorder(&counts);
        h.uws.requeue_unfinished(100).await.expect("requeue")
    };
    assert_eq!(requeued, 2);
    let mut sent: Vec<(JobId, Priority)> = std::iter::from_fn(|| h.queue.take())
        .map(|j| (j.id, j.priority))
        .collect();
    sent.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let mut want = vec![
        (waiting.id.clone(), Priority::Async),
        (running.id.clone(), Priority::Async),
    ];
    want.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    assert_eq!(sent, want);
    for (job, phase) in [(&running, Queued), (&waiting, Queued), (&done, Completed)] {
        let now = h.store.get(&job.id).await.expect("get").map(|j| j.phase);
        assert_eq!(now, Some(phase), "{}", job.id);
    }
    // Only the EXECUTING job changed phase: one event, one count.
    let seen: Vec<(JobId, ExecutionPhase)> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|c| (c.id, c.phase))
        .collect();
    assert_eq!(seen, [(running.id.clone(), Queued)]);
    assert_eq!(*counts.0.lock().expect("counts"), ["QUEUED"]);
}

#[tokio::test]
async fn a_job_that_cannot_be_queued_is_not_left_behind() {
    let h = Harness::default();
    h.queue.set_failing(true);
    let r = h
        .uws
        .create(
            JobId::random(),
            "alice",
            &params(&[("PHASE", "RUN")]),
            cutout(),
            Priority::Async,
            None,
            Admission::default(),
        )
        .await;
    assert!(matches!(r, Err(UwsError::Queue(_))), "{r:?}");
    // The caller heard an error, so no job of that create may be listed or counted.
    let jobs = h.uws.list("alice", &params(&[])).await.expect("list");
    assert!(jobs.is_empty(), "{jobs:?}");
    assert!(h.store.is_empty());
}

#[tokio::test]
async fn fair_share_sends_an_owners_flood_to_the_bulk_lane_but_never_a_sync_job() {
    let h = Harness::new(JobLimits {
        fair_share_queued: 2,
        ..JobLimits::default()
    });
    let lanes =
        |h: &Harness| -> Vec<Priority> { h.queue.sent().iter().map(|j| j.priority).collect() };
    queued(&h, "alice", Priority::Async).await;
    queued(&h, "alice", Priority::Async).await;
    assert_eq!(lanes(&h), [Priority::Async, Priority::Async]);
    // Two of alice's jobs wait already: her third goes to the bulk lane...
    queued(&h, "alice", Priority::Async).await;
    assert_eq!(lanes(&h)[2], Priority::Bulk);
    // ...another owner's does not...
    queued(&h, "bob", Priority::Async).await;
    assert_eq!(lanes(&h)[3], Priority::Async);
    // ...and alice's sync request keeps its lane: a client is waiting on it.
    queued(&h, "alice", Priority::Sync).await;
    assert_eq!(lanes(&h)[4], Priority::Sync);
    // A worker takes the sync job first, then bob's, then alice's bulk job last.
    let order: Vec<Priority> = std::iter::from_fn(|| h.queue.take())
        .map(|j| j.priority)
        .collect();
    assert_eq!(
        order,
        [
            Priority::Sync,
            Priority::Async,
            Priority::Async,
            Priority::Async,
            Priority::Bulk
        ]
    );
    // Jobs that stopped waiting no longer count.
    for job in h.store.in_phases(&[Queued], 100).await.expect("queued") {
        h.uws.begin(&job).await.expect("start");
    }
    queued(&h, "alice", Priority::Async).await;
    assert_eq!(lanes(&h)[5], Priority::Async);
}

#[tokio::test]
async fn fair_share_zero_turns_it_off() {
    let h = Harness::new(JobLimits {
        fair_share_queued: 0,
        ..JobLimits::default()
    });
    for _ in 0..4 {
        queued(&h, "alice", Priority::Async).await;
    }
    assert!(h.queue.sent().iter().all(|j| j.priority == Priority::Async));
}

#[tokio::test]
async fn wait_zero_answers_at_once_with_the_job() {
    let h = Harness::default();
    let job = pending(&h, "alice").await;
    let started = Instant::now();
    let waited = h
        .uws
        .wait("alice", job.id.as_str(), "0", None)
        .await
        .expect("WAIT=0");
    assert_eq!(waited, job);
    assert!(
        started.elapsed() < FALLBACK_REREAD,
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn wait_returns_at_once_for_a_final_job_or_another_phase() {
    let h = Harness::default();
    let done = queued(&h, "alice", Priority::Async).await;
    let done = complete(&h, &done, "k").await;
    assert_eq!(
        h.uws.wait("alice", done.id.as_str(), "-1", None).await.ok(),
        Some(done)
    );
    let job = queued(&h, "alice", Priority::Async).await;
    let other = h
        .uws
        .wait("alice", job.id.as_str(), "-1", Some("EXECUTING"))
        .await
        .expect("wait");
    assert_eq!(other.phase, Queued);
}

#[tokio::test]
async fn wait_refuses_bad_values_before_reading_the_job() {
    let h = Harness::default();
    let job = pending(&h, "alice").await;
    for (wait, phase) in [("-2", None), ("soon", None), ("5", Some("DONE"))] {
        let r = h.uws.wait("alice", job.id.as_str(), wait, phase).await;
        assert!(
            matches!(r, Err(UwsError::Usage(_))),
            "{wait} {phase:?}: {r:?}"
        );
    }
}

#[tokio::test]
async fn wait_times_out_with_the_job_unchanged() {
    let h = Harness::default();
    let job = pending(&h, "alice").await;
    let started = Instant::now();
    let waited = h
        .uws
        .wait("alice", job.id.as_str(), "1", None)
        .await
        .expect("wait");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(waited, job);
}

#[tokio::test]
async fn wait_is_capped_by_the_configured_longest_wait() {
    let h = Harness::new(JobLimits {
        max_wait: Duration::from_secs(1),
        ..JobLimits::default()
    });
    assert_eq!(h.uws.limits().max_wait, Duration::from_secs(1));
    let job = pending(&h, "alice").await;
    let started = Instant::now();
    let waited = h
        .uws
        .wait("alice", job.id.as_str(), "-1", None)
        .await
        .expect("wait");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < FALLBACK_REREAD,
        "{took:?}"
    );
    assert_eq!(waited.phase, Pending);
}

#[tokio::test]
async fn wait_wakes_on_the_phase_change_not_the_fallback_reread() {
    let h = Harness::default();
    let job = queued(&h, "alice", Priority::Async).await;
    let other = queued(&h, "bob", Priority::Async).await;
    let worker = {
        let h = h.clone();
        let (job, other) = (job.clone(), other.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            // Another job's change must not end alice's wait.
            h.uws.begin(&other.id).await.expect("start other");
            tokio::time::sleep(Duration::from_millis(50)).await;
            h.uws.begin(&job.id).await.expect("start");
        })
    };
    let reads = h.store.gets();
    let started = Instant::now();
    let waited = h
        .uws
        .wait("alice", job.id.as_str(), "30", None)
        .await
        .expect("wait");
    assert!(
        started.elapsed() < FALLBACK_REREAD,
        "{:?}",
        started.elapsed()
    );
    // One read to find the job, one when its own change ends the wait: another job's change
    // is not a reason to read the store.
    assert_eq!(h.store.gets(), reads + 2);
    assert_eq!(waited.phase, Executing);
    assert!(
        waited.start_time.is_some(),
        "the job is read back, not patched"
    );
    worker.await.expect("worker");
}

#[tokio::test]
async fn wait_with_phase_waits_only_while_the_job_is_in_it() {
    let h = Harness::default();
    let job = queued(&h, "alice", Priority::Async).await;
    h.uws.begin(&job.id).await.expect("start");
    let worker = {
        let h = h.clone();
        let id = job.id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            // A draining worker hands the job back: it is no longer EXECUTING.
            h.uws.hand_back(&id).await.expect("requeue");
        })
    };
    let started = Instant::now();
    let waited = h
        .uws
        .wait("alice", job.id.as_str(), "30", Some("executing"))
        .await
        .expect("wait");
    assert!(
        started.elapsed() < FALLBACK_REREAD,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(waited.phase, Queued);
    worker.await.expect("worker");
}

/// A worker for [`Uws::run_and_wait`]: takes each queued job and completes it.
fn spawn_worker(h: &Harness, jobs: usize) -> tokio::task::JoinHandle<Vec<Priority>> {
    let h = h.clone();
    tokio::spawn(async move {
        let mut lanes = Vec::new();
        while lanes.len() < jobs {
            let Some(message) = h.queue.take() else {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            };
            lanes.push(message.priority);
            let job = h.store.get(&message.id).await.expect("get").expect("job");
            complete(&h, &job, &format!("{}/cutout.fits", job.id)).await;
        }
        lanes
    })
}

#[tokio::test]
async fn a_sync_run_is_handed_its_final_job_and_leaves_no_waiter_behind() {
    let h = Harness::default();
    let worker = spawn_worker(&h, 1);
    let done = sync_run(&h, Duration::from_secs(10)).await;
    assert_eq!(done.phase, Completed);
    assert_eq!(done.results.len(), 1);
    assert_eq!(worker.await.expect("worker"), [Priority::Sync]);
    // The worker read the job once; the waiter was handed it and read nothing.
    assert_eq!(h.store.gets(), 1);
    assert_eq!(h.uws.sync_waiters(), 0);
}

#[tokio::test]
async fn a_sync_run_that_times_out_returns_the_job_as_it_is_and_forgets_it() {
    let h = Harness::default();
    let started = Instant::now();
    let job = sync_run(&h, Duration::from_millis(100)).await;
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(job.phase, Queued);
    assert_eq!(h.uws.sync_waiters(), 0);
}

#[tokio::test]
async fn a_sync_run_of_an_owner_over_the_fair_share_threshold_stays_in_the_sync_lane() {
    let h = Harness::new(JobLimits {
        fair_share_queued: 1,
        ..JobLimits::default()
    });
    for _ in 0..3 {
        queued(&h, "alice", Priority::Async).await;
    }
    let worker = spawn_worker(&h, 1);
    let done = sync_run(&h, Duration::from_secs(10)).await;
    assert_eq!(done.phase, Completed);
    // The worker took the sync job before alice's three async ones.
    assert_eq!(worker.await.expect("worker"), [Priority::Sync]);
}

#[tokio::test]
async fn wait_final_of_a_missing_job_is_not_found() {
    let h = Harness::default();
    let r = h
        .uws
        .wait_final(&crate::JobId::random(), Duration::from_millis(10))
        .await;
    assert!(is_not_found(r));
    let job = queued(&h, "alice", Priority::Async).await;
    let done = complete(&h, &job, "k").await;
    assert_eq!(
        h.uws
            .wait_final(&job.id, Duration::from_secs(30))
            .await
            .ok(),
        Some(done)
    );
}

#[tokio::test]
async fn creation_uses_the_configured_limits() {
    let limits = JobLimits {
        default_execution_duration: 42,
        max_execution_duration: 0,
        default_lifetime: Duration::from_secs(3600),
        max_lifetime: Duration::from_secs(7200),
        max_wait: Duration::from_secs(7),
        fair_share_queued: 3,
        create_retry: Duration::from_secs(1),
        result_lifetime: None,
    };
    let h = Harness::new(limits.clone());
    assert_eq!(h.uws.limits().default_execution_duration, 42);
    assert_eq!(h.uws.limits().max_wait, Duration::from_secs(7));
    assert_eq!(h.uws.limits().fair_share_queued, 3);
    let job = pending(&h, "alice").await;
    assert_eq!(job.execution_duration, 42);
    assert_eq!(
        job.destruction - job.creation_time,
        time::Duration::hours(1)
    );
    // No maximum: whatever is asked is kept, 0 (unlimited) included.
    for (asked, kept) in [("100000", 100_000), ("0", 0), ("1", 1)] {
        let job = h
            .uws
            .create(
                JobId::random(),
                "alice",
                &params(&[("EXECUTIONDURATION", asked)]),
                cutout(),
                Priority::Async,
                None,
                Admission::default(),
            )
            .await
            .expect("create");
        assert_eq!(job.execution_duration, kept, "{asked}");
    }
    let far = create_with(&h, "DESTRUCTION", "2999-01-01T00:00:00Z").await;
    assert_eq!(
        far.destruction - far.creation_time,
        time::Duration::hours(2)
    );
    assert_eq!(limits.wait_timeout("0").ok(), Some(Duration::ZERO));
    assert_eq!(
        limits.wait_timeout("100").ok(),
        Some(Duration::from_secs(7))
    );
}

#[tokio::test]
async fn execution_duration_changes_only_while_pending_within_the_maximum() {
    let h = Harness::new(JobLimits {
        max_execution_duration: 50,
        ..JobLimits::default()
    });
    let job = pending(&h, "alice").await;
    let id = job.id.as_str();
    for (asked, kept) in [("10", 10), ("100", 50), ("0", 50), (" 50 ", 50)] {
        let changed = h
            .uws
            .set_execution_duration("alice", id, Some(asked))
            .await
            .expect("set");
        assert_eq!(changed.execution_duration, kept, "{asked}");
    }
    for bad in [None, Some("-1"), Some("1.5")] {
        let r = h.uws.set_execution_duration("alice", id, bad).await;
        assert!(matches!(r, Err(UwsError::Usage(_))), "{bad:?}: {r:?}");
    }
    h.uws
        .set_phase("alice", id, Some("RUN"), None)
        .await
        .expect("run");
    let late = h.uws.set_execution_duration("alice", id, Some("10")).await;
    assert!(
        matches!(late, Err(UwsError::WrongPhase { phase: Queued, .. })),
        "{late:?}"
    );
    assert_eq!(
        h.uws
            .job("alice", id)
            .await
            .expect("job")
            .execution_duration,
        50
    );
}

#[tokio::test]
async fn destruction_is_clamped_to_the_longest_lifetime_in_any_phase() {
    let h = Harness::new(JobLimits {
        max_lifetime: Duration::from_secs(600),
        ..JobLimits::default()
    });
    let job = queued(&h, "alice", Priority::Async).await;
    let id = job.id.as_str();
    let soon = job.creation_time + time::Duration::minutes(5);
    let changed = h
        .uws
        .set_destruction("alice", id, Some(&timestamp::format(soon)))
        .await
        .expect("set");
    assert_eq!(
        timestamp::format(changed.destruction),
        timestamp::format(soon)
    );
    let clamped = h
        .uws
        .set_destruction("alice", id, Some("2999-01-01T00:00:00Z"))
        .await
        .expect("set");
    assert_eq!(
        clamped.destruction,
        job.creation_time + time::Duration::minutes(10)
    );
    for bad in [None, Some("next week")] {
        let r = h.uws.set_destruction("alice", id, bad).await;
        assert!(matches!(r, Err(UwsError::Usage(_))), "{bad:?}: {r:?}");
    }
}

#[tokio::test]
async fn parameters_and_run_id_change_only_while_pending() {
    let h = Harness::default();
    let job = pending(&h, "alice").await;
    let changed = h
        .uws
        .set_parameters(&job, params(&[("CIRCLE", "1 2 3")]), Some("mine"))
        .await
        .expect("set");
    assert_eq!(
        changed.parameters,
        params(&[("CIRCLE", "1 2 3")]).into_vec()
    );
    assert_eq!(changed.run_id.as_deref(), Some("mine"));
    let renamed = h
        .uws
        .set_parameters(&changed, Parameters::new(), Some("again"))
        .await
        .expect("run id only");
    assert_eq!(renamed.run_id.as_deref(), Some("again"));
    assert_eq!(renamed.parameters, changed.parameters);
    let long = "x".repeat(crate::service::MAX_RUN_ID_LEN + 1);
    let r = h
        .uws
        .set_parameters(&renamed, Parameters::new(), Some(&long))
        .await;
    assert!(matches!(r, Err(UwsError::Usage(_))), "{r:?}");
    let running = h
        .uws
        .set_phase("alice", job.id.as_str(), Some("RUN"), None)
        .await
        .expect("run");
    let r = h.uws.set_parameters(&running, cutout(), None).await;
    assert!(matches!(r, Err(UwsError::WrongPhase { .. })), "{r:?}");
    assert_eq!(
        h.uws
            .job("alice", job.id.as_str())
            .await
            .expect("job")
            .parameters,
        changed.parameters
    );
}

#[tokio::test]
async fn the_job_list_applies_phase_after_and_last() {
    let h = Harness::default();
    let first = pending(&h, "alice").await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    let second = queued(&h, "alice", Priority::Async).await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    let third = pending(&h, "alice").await;
    pending(&h, "bob").await;
    let ids =
        |list: Vec<crate::store::JobSummary>| list.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let all = h.uws.list("alice", &params(&[])).await.expect("list");
    assert_eq!(
        ids(all),
        [third.id.clone(), second.id.clone(), first.id.clone()]
    );
    let pending_only = h
        .uws
        .list("alice", &params(&[("PHASE", "PENDING")]))
        .await
        .expect("list");
    assert_eq!(ids(pending_only), [third.id.clone(), first.id.clone()]);
    let last = h
        .uws
        .list("alice", &params(&[("LAST", "1")]))
        .await
        .expect("list");
    assert_eq!(ids(last), std::slice::from_ref(&third.id));
    let after = timestamp::format(second.creation_time);
    let newer = h
        .uws
        .list("alice", &params(&[("AFTER", &after)]))
        .await
        .expect("list");
    assert_eq!(ids(newer), [third.id]);
    let bad = h.uws.list("alice", &params(&[("LAST", "many")])).await;
    assert!(matches!(bad, Err(UwsError::Usage(_))), "{bad:?}");
}

#[tokio::test]
async fn deleting_a_job_removes_its_results_and_stops_it() {
    let h = Harness::default();
    let done = queued(&h, "alice", Priority::Async).await;
    complete(&h, &done, "alice/result.fits").await;
    h.uws
        .delete("alice", done.id.as_str())
        .await
        .expect("delete");
    assert!(is_not_found(h.uws.job("alice", done.id.as_str()).await));
    assert_eq!(h.results.deleted(), ["alice/result.fits"]);

    let running = queued(&h, "alice", Priority::Async).await;
    h.uws.begin(&running.id).await.expect("start");
    let mut events = h.uws.subscribe();
    h.uws
        .delete("alice", running.id.as_str())
        .await
        .expect("delete");
    assert_eq!(
        events.try_recv().ok(),
        Some(PhaseChange {
            id: running.id.clone(),
            owner: "alice".into(),
            phase: Aborted
        })
    );
    // A final job's deletion announces nothing: nobody runs it.
    let failed = pending(&h, "alice").await;
    h.uws
        .finish(
            &failed.id,
            Transition::Fail(JobError::new(ErrorCode::Usage, "bad")),
        )
        .await
        .expect("fail");
    let mut events = h.uws.subscribe();
    h.uws
        .delete("alice", failed.id.as_str())
        .await
        .expect("delete");
    assert!(events.try_recv().is_err());
    // Purging a job that is already gone is not an error.
    h.uws.purge(&failed.id).await.expect("purge");
    assert!(h.store.is_empty());
}

#[tokio::test]
async fn the_sweeper_deletes_exactly_the_expired_jobs() {
    let h = Harness::default();
    let old = queued(&h, "alice", Priority::Async).await;
    let old = complete(&h, &old, "old.fits").await;
    let young = pending(&h, "alice").await;
    let past = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    h.store.insert(Job {
        destruction: past,
        ..old.clone()
    });
    assert_eq!(h.uws.sweep_expired().await.expect("sweep"), 1);
    assert!(h.store.get(&old.id).await.expect("get").is_none());
    assert!(h.store.get(&young.id).await.expect("get").is_some());
    assert_eq!(h.results.deleted(), ["old.fits"]);
    assert_eq!(h.uws.sweep_expired().await.expect("sweep"), 0);
}

#[tokio::test]
async fn results_past_their_lifetime_are_deleted_and_the_job_archived_until_destruction() {
    let h = Harness::new(JobLimits {
        result_lifetime: Some(Duration::from_secs(60)),
        ..JobLimits::default()
    });
    let hour_ago = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let old = queued(&h, "alice", Priority::Async).await;
    let old = complete(&h, &old, "old.fits").await;
    h.store.insert(Job {
        end_time: Some(hour_ago),
        ..old.clone()
    });
    let fresh = queued(&h, "alice", Priority::Async).await;
    let fresh = complete(&h, &fresh, "fresh.fits").await;
    // Ended an hour ago but destroyed already: the destruction sweep's, not archived.
    let doomed = queued(&h, "alice", Priority::Async).await;
    let doomed = complete(&h, &doomed, "doomed.fits").await;
    h.store.insert(Job {
        end_time: Some(hour_ago),
        destruction: hour_ago,
        ..doomed.clone()
    });
    let mut events = h.uws.subscribe();
    assert_eq!(h.uws.sweep_archived().await.expect("sweep"), 1);
    let archived = h.uws.job("alice", old.id.as_str()).await.expect("job");
    assert_eq!(archived.phase, ExecutionPhase::Archived);
    assert!(archived.results.is_empty());
    assert_eq!(h.results.deleted(), ["old.fits"]);
    assert_eq!(
        events.try_recv().ok().map(|e| (e.id, e.phase)),
        Some((old.id.clone(), ExecutionPhase::Archived))
    );
    let kept = h.uws.job("alice", fresh.id.as_str()).await.expect("job");
    assert_eq!(kept.results.len(), 1);
    assert_eq!(
        h.uws
            .job("alice", doomed.id.as_str())
            .await
            .expect("job")
            .phase,
        Completed
    );
    assert_eq!(h.uws.sweep_archived().await.expect("sweep"), 0);
    // Listed only when asked for by PHASE, as UWS 1.1 says.
    let listed = |phase: Option<&str>| {
        let request: Parameters = phase.map(|p| ("PHASE", p)).into_iter().collect();
        let uws = h.uws.clone();
        async move {
            uws.list("alice", &request)
                .await
                .expect("list")
                .into_iter()
                .map(|j| j.id)
                .collect::<Vec<_>>()
        }
    };
    assert!(!listed(None).await.contains(&old.id));
    assert_eq!(
        listed(Some("ARCHIVED")).await,
        std::slice::from_ref(&old.id)
    );
    // A service without a result lifetime archives nothing.
    let keeps = Harness::default();
    let job = queued(&keeps, "alice", Priority::Async).await;
    let job = complete(&keeps, &job, "a.fits").await;
    keeps.store.insert(Job {
        end_time: Some(hour_ago),
        ..job
    });
    assert_eq!(keeps.uws.sweep_archived().await.expect("sweep"), 0);
}

#[tokio::test]
async fn a_failing_store_is_an_error_not_a_missing_job() {
    let h = Harness::default();
    let job = pending(&h, "alice").await;
    h.store.set_failing(true);
    let r = h.uws.job("alice", job.id.as_str()).await;
    assert!(matches!(r, Err(UwsError::Store(_))), "{r:?}");
    let r = h.uws.sweep_expired().await;
    assert!(matches!(r, Err(UwsError::Store(_))), "{r:?}");
}

#[test]
fn the_events_of_a_harness_are_those_of_its_service() {
    let h = Harness::default();
    let mut events = h.uws.subscribe();
    let change = PhaseChange {
        id: crate::JobId::random(),
        owner: "alice".into(),
        phase: Queued,
    };
    h.events.publish(change.clone());
    assert_eq!(events.try_recv().ok(), Some(change));
}

#[tokio::test]
async fn a_run_id_of_exactly_the_longest_length_is_kept() {
    let h = Harness::default();
    let longest = "r".repeat(crate::service::MAX_RUN_ID_LEN);
    let job = create_with(&h, "RUNID", &longest).await;
    assert_eq!(job.run_id.as_deref(), Some(longest.as_str()));
    let renamed = h
        .uws
        .set_parameters(&job, Parameters::new(), Some(&longest))
        .await
        .expect("set");
    assert_eq!(renamed.run_id, job.run_id);
}

#[tokio::test]
async fn a_waiting_sync_run_is_counted_until_it_returns() {
    let h = Harness::default();
    let worker = {
        let h = h.clone();
        tokio::spawn(async move {
            let message = loop {
                if let Some(message) = h.queue.take() {
                    break message;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            let waiting = h.uws.sync_waiters();
            let awaited = (
                h.uws.awaited_here(&message.id),
                h.uws.awaited_here(&JobId::random()),
            );
            let job = h.store.get(&message.id).await.expect("get").expect("job");
            complete(&h, &job, "k").await;
            (waiting, awaited, message.id)
        })
    };
    let done = sync_run(&h, Duration::from_secs(10)).await;
    assert_eq!(done.phase, Completed);
    let (waiting, awaited, id) = worker.await.expect("worker");
    assert_eq!(waiting, 1);
    // The job is awaited here while the request waits, another job is not, and neither after.
    assert_eq!(awaited, (true, false));
    assert!(!h.uws.awaited_here(&id));
    assert_eq!(h.uws.sync_waiters(), 0);
}

/// A create whose answer is lost is repeated with the same ID: one job exists, the caller gets
/// it as its own (queued once, for `PHASE=RUN`), however many answers were lost in a row.
#[tokio::test]
async fn a_create_whose_answer_is_lost_is_repeated_and_makes_one_job() {
    for lost in [1, 3] {
        let h = Harness::default();
        h.store.lose_create_answers(lost);
        let job = create_with(&h, "PHASE", "RUN").await;
        assert_eq!(h.store.len(), 1, "{lost} lost");
        assert_eq!(job.phase, Queued, "{lost} lost");
        let sent = h.queue.sent();
        assert_eq!(sent.len(), 1, "{lost} lost");
        assert_eq!(sent[0].id, job.id);
    }
}

/// A store that keeps failing past `create_retry` is an error after about that long, and no
/// job is left behind.
#[tokio::test]
async fn a_create_that_keeps_failing_gives_up_after_the_retry_time_and_leaves_no_job() {
    let limits = JobLimits {
        create_retry: Duration::from_millis(400),
        ..JobLimits::default()
    };
    let h = Harness::new(limits);
    h.store.set_failing(true);
    let started = std::time::Instant::now();
    let r = h
        .uws
        .create(
            JobId::random(),
            "alice",
            &params(&[]),
            cutout(),
            Priority::Async,
            None,
            Admission::default(),
        )
        .await;
    let took = started.elapsed();
    assert!(matches!(r, Err(UwsError::Store(_))), "{r:?}");
    // Pauses of 50, 100 and 200 ms fit in 400 ms; the next (400 ms) would not.
    assert!(
        took >= Duration::from_millis(340) && took < Duration::from_millis(1_500),
        "{took:?}"
    );
    assert!(h.store.is_empty());
}

#[tokio::test]
async fn wait_final_waits_for_the_end_of_the_job() {
    let h = Harness::default();
    let job = queued(&h, "alice", Priority::Async).await;
    let worker = {
        let h = h.clone();
        let job = job.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            complete(&h, &job, "k").await;
        })
    };
    assert_eq!(wait_to_the_end(&h, &job).await.phase, Completed);
    worker.await.expect("worker");
}

#[tokio::test]
async fn progress_is_recorded_while_executing_and_refused_before_and_after() {
    let h = Harness::default();
    let job = queued(&h, "alice", Priority::Bulk).await;
    let progress = |done| {
        crate::Progress(vec![crate::ProgressCount {
            name: "stamps".into(),
            done,
            total: 10,
        }])
    };
    let early = h.uws.report_progress(&job.id, progress(0)).await;
    assert!(
        matches!(early, Err(UwsError::WrongPhase { .. })),
        "{early:?}"
    );
    h.uws.begin(&job.id).await.expect("start");
    h.uws
        .report_progress(&job.id, progress(4))
        .await
        .expect("report");
    let seen = h.uws.job("alice", job.id.as_str()).await.expect("job");
    assert_eq!(seen.progress, Some(progress(4)));
    h.uws
        .finish(&job.id, Transition::Complete(vec![result("k")]))
        .await
        .expect("complete");
    let late = h.uws.report_progress(&job.id, progress(10)).await;
    assert!(matches!(late, Err(UwsError::WrongPhase { .. })), "{late:?}");
    let done = h.uws.job("alice", job.id.as_str()).await.expect("job");
    assert_eq!(
        done.progress,
        Some(progress(4)),
        "a late report changes nothing"
    );
}

fn stamps_done(done: u64) -> crate::Progress {
    crate::Progress(vec![crate::ProgressCount {
        name: "stamps".into(),
        done,
        total: 10,
    }])
}

#[tokio::test]
async fn wait_is_not_woken_by_progress() {
    let h = Harness::default();
    let job = queued(&h, "alice", Priority::Bulk).await;
    h.uws.begin(&job.id).await.expect("start");
    let mut reports = h.uws.subscribe_progress();
    let worker = {
        let h = h.clone();
        let id = job.id.clone();
        tokio::spawn(async move {
            for done in 1..=5 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                h.uws
                    .report_progress(&id, stamps_done(done))
                    .await
                    .expect("report");
            }
        })
    };
    let started = Instant::now();
    let waited = h
        .uws
        .wait("alice", job.id.as_str(), "1", None)
        .await
        .expect("wait");
    // The job stayed EXECUTING: WAIT lasts its whole time, whatever progress came meanwhile.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(waited.phase, Executing);
    assert_eq!(waited.progress, Some(stamps_done(5)));
    worker.await.expect("worker");
    for done in 1..=5 {
        let heard = reports.try_recv().expect("a progress event per report");
        assert_eq!(heard.progress, stamps_done(done));
    }
}

#[tokio::test]
async fn a_recorded_progress_report_is_announced_apart_from_the_phase_changes() {
    let h = Harness::default();
    let job = queued(&h, "alice", Priority::Bulk).await;
    let mut phases = h.uws.subscribe();
    let mut reports = h.uws.subscribe_progress();
    // Refused before EXECUTING: nothing recorded, nothing announced.
    assert!(
        h.uws
            .report_progress(&job.id, stamps_done(0))
            .await
            .is_err()
    );
    h.uws.begin(&job.id).await.expect("start");
    h.uws
        .report_progress(&job.id, stamps_done(3))
        .await
        .expect("report");
    assert_eq!(
        reports.try_recv().ok(),
        Some(crate::events::ProgressChange {
            id: job.id.clone(),
            owner: "alice".to_owned(),
            progress: stamps_done(3),
        })
    );
    assert!(reports.try_recv().is_err(), "one event per recorded report");
    assert_eq!(phases.try_recv().map(|c| c.phase).ok(), Some(Executing));
    assert!(phases.try_recv().is_err(), "no phase event for a report");
}

#[tokio::test]
async fn a_job_created_with_its_size_shows_it_before_it_runs() {
    let h = Harness::default();
    let job = h
        .uws
        .create_with_progress(
            JobId::random(),
            "alice",
            &params(&[("PHASE", "RUN")]),
            cutout(),
            Priority::Bulk,
            None,
            Admission::default(),
            Some(stamps_done(0)),
        )
        .await
        .expect("create");
    assert_eq!(job.phase, Queued);
    let seen = h.uws.job("alice", job.id.as_str()).await.expect("job");
    assert_eq!(seen.progress, Some(stamps_done(0)));
}

/// The orphan sweep removes exactly the result prefixes that are job IDs no job of the store
/// owns and that were left unwritten for the grace time, and counts them.
#[tokio::test]
async fn the_orphan_sweep_removes_only_old_prefixes_of_jobs_that_do_not_exist() {
    let h = Harness::default();
    let owned = pending(&h, "alice").await;
    let (old, young, edge) = (JobId::random(), JobId::random(), JobId::random());
    let grace = Duration::from_secs(600);
    h.results.set_prefixes(&[
        (old.as_str(), Duration::from_secs(3_600)),
        (young.as_str(), Duration::from_secs(10)),
        (edge.as_str(), grace),
        (owned.id.as_str(), Duration::from_secs(3_600)),
        ("not-a-job-id", Duration::from_secs(3_600)),
    ]);
    assert_eq!(h.uws.sweep_orphans(grace).await.expect("sweep"), 2);
    let removed: Vec<String> = h
        .results
        .events()
        .into_iter()
        .filter_map(|e| match e {
            crate::testing::ResultEvent::DeletePrefix(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(removed, [old.as_str(), edge.as_str()]);
    // Nothing is left to remove.
    assert_eq!(h.uws.sweep_orphans(grace).await.expect("sweep"), 0);
}

/// A change of the awaited job that does not end the wait (EXECUTING, while waiting for the
/// end) is noted from the event, not read from the store.
#[tokio::test]
async fn a_change_that_does_not_end_the_wait_is_not_read_from_the_store() {
    let h = Harness::default();
    let job = queued(&h, "alice", Priority::Async).await;
    let reads = h.store.gets();
    let worker = {
        let h = h.clone();
        let job = job.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            h.uws.begin(&job.id).await.expect("start");
            tokio::time::sleep(Duration::from_millis(100)).await;
            let reads_while_executing = h.store.gets();
            h.uws
                .finish(&job.id, Transition::Complete(vec![result("k")]))
                .await
                .expect("complete");
            reads_while_executing
        })
    };
    assert_eq!(wait_to_the_end(&h, &job).await.phase, Completed);
    // One read to find the job, none for the change to EXECUTING.
    assert_eq!(worker.await.expect("worker"), reads + 1);
}

#[tokio::test]
async fn a_store_keeps_no_transient_result_in_memory_unless_it_says_so() {
    use crate::results::{ObjectMeta, Offer, ResultStore};
    let store = crate::testing::RecordingResultStore::new();
    assert_eq!(store.transient_room(), 0, "a worker then cuts to a file");
    let meta = ObjectMeta {
        content_type: "application/fits".to_owned(),
        filename: "x.fits".to_owned(),
    };
    let offered = store.offer_transient("j/a/result.fits", vec![1, 2, 3], &meta);
    match offered.await.expect("offer") {
        Offer::Declined(bytes) => assert_eq!(bytes, [1, 2, 3], "the bytes come back"),
        Offer::Kept(size) => panic!("kept {size} bytes"),
    }
}
