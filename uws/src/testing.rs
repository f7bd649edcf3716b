//! Test support, behind the `testing` feature: in-memory implementations of the service traits,
//! so that the protocol rules of [`crate::service::Uws`] are tested in milliseconds, without a
//! database, Redis or a bucket.
//!
//! - [`MemoryJobStore`]: a [`JobStore`] in a map, applying the phase state machine as the SQL
//!   store does, counting its reads, and able to fail on demand.
//! - [`MemoryQueue`]: an in-process [`JobQueue`] that keeps every message, so a test can see the
//!   lane and token a job was queued with, and take jobs the way a worker does.
//! - [`RecordingResultStore`]: a [`ResultStore`] that records what was put and deleted.
//! - [`Harness`]: a [`Uws`] over the three, with handles on each.
//!
//! These are test doubles, not the `serve`-mode implementations (those live in `wobbly` and
//! `worker`, and their own tests run against real SQLite, PostgreSQL and Redis).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::error::UwsError;
use crate::events::LocalPhaseEvents;
use crate::job::{ExecutionPhase, Job, JobId, NewJob};
use crate::queue::{JobQueue, Priority, QueuedJob};
use crate::results::{ObjectMeta, ResultStore};
use crate::service::{JobLimits, Uws};
use crate::store::{
    Created, JobFilter, JobStore, JobSummary, JobUpdate, OwnerUsage, RecentRun, Transition,
};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock has already failed; the data is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A job store in memory. It refuses what the SQL store refuses (illegal transitions, updates
/// outside PENDING) with the same errors.
#[derive(Default)]
pub struct MemoryJobStore {
    jobs: Mutex<HashMap<JobId, Job>>,
    /// Every store call fails with [`UwsError::Store`] while set.
    failing: AtomicBool,
    /// Calls to [`JobStore::get`], so that a test can tell whether a waiter read the store.
    gets: AtomicUsize,
    /// Creates still to be stored and then answered with [`UwsError::Store`], as a create whose
    /// answer the network lost.
    lost_answers: AtomicUsize,
}

/// A job of `phase` owned by `alice`, created at 1,000,000 s after the epoch and with nothing
/// else set: for tests of what renders or estimates a job.
pub fn job_in(phase: crate::ExecutionPhase) -> Job {
    let at = |s| OffsetDateTime::from_unix_timestamp(s).expect("instant");
    Job {
        id: crate::JobId::parse("0123456789abcdef0123456789abcdef").expect("id"),
        run_id: None,
        owner: "alice".into(),
        phase,
        quote: None,
        creation_time: at(1_000_000),
        start_time: None,
        end_time: None,
        execution_duration: 600,
        destruction: at(3_000_000),
        parameters: Vec::new(),
        results: Vec::new(),
        error: None,
        planned_bytes: None,
        progress: None,
    }
}

impl MemoryJobStore {
    pub fn new() -> MemoryJobStore {
        MemoryJobStore::default()
    }

    /// Makes every following call fail (`true`) or work again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Stores each of the next `n` creates and then answers it with [`UwsError::Store`]: the
    /// write happened, its answer was lost.
    pub fn lose_create_answers(&self, n: usize) {
        self.lost_answers.store(n, Ordering::SeqCst);
    }

    /// How many times [`JobStore::get`] was called.
    pub fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    /// The number of jobs held.
    pub fn len(&self) -> usize {
        lock(&self.jobs).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores a job as it is, whatever its phase (to set up a test).
    pub fn insert(&self, job: Job) {
        lock(&self.jobs).insert(job.id.clone(), job);
    }

    fn check(&self) -> Result<(), UwsError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(UwsError::Store(
                "the memory store is failing on purpose".into(),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn create(&self, job: NewJob) -> Result<Created, UwsError> {
        self.check()?;
        // Idempotent on the caller's ID, as the SQL store is: the same create answers the job,
        // another create under that ID is a conflict.
        if let Some(existing) = lock(&self.jobs).get(&job.id) {
            return if existing.owner == job.owner
                && existing.run_id == job.run_id
                && existing.parameters == job.parameters
            {
                Ok(Created::Existing(existing.clone()))
            } else {
                Err(UwsError::Conflict(format!(
                    "job {} exists with other parameters",
                    job.id
                )))
            };
        }
        let created = Job {
            id: job.id,
            run_id: job.run_id,
            owner: job.owner,
            phase: if job.queued {
                ExecutionPhase::Queued
            } else {
                ExecutionPhase::Pending
            },
            quote: None,
            creation_time: job.creation_time,
            start_time: None,
            end_time: None,
            execution_duration: job.execution_duration,
            destruction: job.destruction,
            parameters: job.parameters,
            results: Vec::new(),
            error: None,
            planned_bytes: job.admission.planned_bytes,
            progress: job.progress,
        };
        self.insert(created.clone());
        let lost = self
            .lost_answers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if lost.is_ok() {
            return Err(UwsError::Store("the answer to a create was lost".into()));
        }
        Ok(Created::New(created))
    }

    async fn get(&self, id: &JobId) -> Result<Option<Job>, UwsError> {
        self.check()?;
        self.gets.fetch_add(1, Ordering::SeqCst);
        Ok(lock(&self.jobs).get(id).cloned())
    }

    async fn list(&self, owner: &str, filter: &JobFilter) -> Result<Vec<JobSummary>, UwsError> {
        self.check()?;
        let mut jobs: Vec<JobSummary> = lock(&self.jobs)
            .values()
            .filter(|j| j.owner == owner)
            .filter(|j| filter.phases.is_empty() || filter.phases.contains(&j.phase))
            .filter(|j| filter.after.is_none_or(|after| j.creation_time > after))
            .filter(|j| {
                filter
                    .cursor
                    .as_ref()
                    .is_none_or(|c| (j.creation_time, &j.id) < (c.creation_time, &c.id))
            })
            .map(|j| JobSummary {
                id: j.id.clone(),
                run_id: j.run_id.clone(),
                owner: j.owner.clone(),
                phase: j.phase,
                creation_time: j.creation_time,
            })
            .collect();
        jobs.sort_by(|a, b| (b.creation_time, &b.id).cmp(&(a.creation_time, &a.id)));
        if let Some(last) = filter.last {
            jobs.truncate(last as usize);
        }
        Ok(jobs)
    }

    async fn transition(
        &self,
        id: &JobId,
        transition: Transition,
        at: OffsetDateTime,
    ) -> Result<Job, UwsError> {
        self.check()?;
        let mut jobs = lock(&self.jobs);
        let job = jobs
            .get_mut(id)
            .ok_or_else(|| UwsError::JobNotFound(id.to_string()))?;
        let to = transition.target();
        if !job.phase.can_become(to) {
            return Err(UwsError::IllegalTransition {
                id: id.to_string(),
                from: job.phase,
                to,
            });
        }
        job.phase = to;
        match transition {
            Transition::Queue => {}
            Transition::Start => job.start_time = Some(at),
            Transition::Complete(results) => {
                job.results = results;
                job.end_time = Some(at);
            }
            Transition::Fail(error) => {
                job.error = Some(error);
                job.end_time = Some(at);
            }
            Transition::Abort => job.end_time = Some(at),
            Transition::Archive => job.results.clear(),
        }
        Ok(job.clone())
    }

    async fn update(&self, id: &JobId, update: JobUpdate) -> Result<Job, UwsError> {
        self.check()?;
        let mut jobs = lock(&self.jobs);
        let job = jobs
            .get_mut(id)
            .ok_or_else(|| UwsError::JobNotFound(id.to_string()))?;
        if matches!(update, JobUpdate::Progress(_)) && job.phase != ExecutionPhase::Executing {
            return Err(UwsError::WrongPhase {
                id: id.to_string(),
                phase: job.phase,
                what: "progress is reported only while EXECUTING".into(),
            });
        }
        let pending_only = !matches!(update, JobUpdate::Destruction(_) | JobUpdate::Progress(_));
        if pending_only && job.phase != ExecutionPhase::Pending {
            return Err(UwsError::WrongPhase {
                id: id.to_string(),
                phase: job.phase,
                what: "this can only be changed while PENDING".into(),
            });
        }
        match update {
            JobUpdate::Destruction(t) => job.destruction = t,
            JobUpdate::ExecutionDuration(s) => job.execution_duration = s,
            JobUpdate::Parameters(p) => job.parameters = p,
            JobUpdate::RunId(r) => job.run_id = r,
            JobUpdate::Progress(p) => job.progress = Some(p),
        }
        Ok(job.clone())
    }

    async fn delete(&self, id: &JobId) -> Result<Option<Job>, UwsError> {
        self.check()?;
        Ok(lock(&self.jobs).remove(id))
    }

    async fn expired(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<JobId>, UwsError> {
        self.check()?;
        let mut expired: Vec<(OffsetDateTime, JobId)> = lock(&self.jobs)
            .values()
            .filter(|j| j.destruction <= now)
            .map(|j| (j.destruction, j.id.clone()))
            .collect();
        expired.sort();
        Ok(expired
            .into_iter()
            .take(limit as usize)
            .map(|(_, id)| id)
            .collect())
    }

    async fn results_expired(
        &self,
        ended_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<JobId>, UwsError> {
        self.check()?;
        let mut ended: Vec<(OffsetDateTime, JobId)> = lock(&self.jobs)
            .values()
            .filter(|j| j.phase == ExecutionPhase::Completed)
            .filter_map(|j| {
                j.end_time
                    .filter(|t| *t <= ended_before)
                    .map(|t| (t, j.id.clone()))
            })
            .collect();
        ended.sort();
        Ok(ended
            .into_iter()
            .take(limit as usize)
            .map(|(_, id)| id)
            .collect())
    }

    async fn usage(&self, owner: &str, since: OffsetDateTime) -> Result<OwnerUsage, UwsError> {
        self.check()?;
        let jobs = lock(&self.jobs);
        let mut usage = OwnerUsage::default();
        for job in jobs.values().filter(|j| j.owner == owner) {
            match job.phase {
                ExecutionPhase::Queued => usage.queued += 1,
                ExecutionPhase::Executing => usage.executing += 1,
                ExecutionPhase::Completed => {
                    usage.result_bytes += job.results.iter().filter_map(|r| r.size).sum::<u64>();
                }
                _ => {}
            }
            if job.creation_time >= since {
                usage.created_since += 1;
                usage.oldest_since = Some(
                    usage
                        .oldest_since
                        .map_or(job.creation_time, |t| t.min(job.creation_time)),
                );
            }
        }
        Ok(usage)
    }

    async fn queued_count(&self, owner: &str, cap: u64) -> Result<u64, UwsError> {
        self.check()?;
        let queued = lock(&self.jobs)
            .values()
            .filter(|j| j.owner == owner && j.phase == ExecutionPhase::Queued)
            .count();
        Ok((queued as u64).min(cap))
    }

    async fn recent_runs(&self, limit: u32) -> Result<Vec<RecentRun>, UwsError> {
        self.check()?;
        let jobs = lock(&self.jobs);
        let mut runs: Vec<(OffsetDateTime, RecentRun)> = jobs
            .values()
            .filter(|j| j.phase == ExecutionPhase::Completed)
            .filter_map(|j| {
                let run_time = (j.end_time? - j.start_time?).unsigned_abs();
                let bytes = j.results.iter().filter_map(|r| r.size).sum();
                Some((
                    j.creation_time,
                    RecentRun {
                        run_time,
                        result_bytes: Some(bytes),
                    },
                ))
            })
            .collect();
        runs.sort_by_key(|run| std::cmp::Reverse(run.0));
        Ok(runs
            .into_iter()
            .take(limit as usize)
            .map(|(_, run)| run)
            .collect())
    }

    async fn in_phases(
        &self,
        phases: &[ExecutionPhase],
        limit: u32,
    ) -> Result<Vec<JobId>, UwsError> {
        self.check()?;
        let mut jobs: Vec<(OffsetDateTime, JobId)> = lock(&self.jobs)
            .values()
            .filter(|j| phases.contains(&j.phase))
            .map(|j| (j.creation_time, j.id.clone()))
            .collect();
        jobs.sort();
        Ok(jobs
            .into_iter()
            .take(limit as usize)
            .map(|(_, id)| id)
            .collect())
    }
}

/// An in-process queue that keeps every message. [`MemoryQueue::take`] hands them out as a
/// worker takes them: the first waiting job of the first non-empty lane.
#[derive(Default)]
pub struct MemoryQueue {
    waiting: Mutex<VecDeque<(Instant, QueuedJob)>>,
    /// Every message ever enqueued, in order.
    sent: Mutex<Vec<QueuedJob>>,
    failing: AtomicBool,
}

impl MemoryQueue {
    pub fn new() -> MemoryQueue {
        MemoryQueue::default()
    }

    /// Makes every following enqueue fail (`true`) or work again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Every message enqueued so far, taken or not, in order.
    pub fn sent(&self) -> Vec<QueuedJob> {
        lock(&self.sent).clone()
    }

    /// The next job a worker would take, removed from the queue.
    pub fn take(&self) -> Option<QueuedJob> {
        let mut waiting = lock(&self.waiting);
        let lane = Priority::ALL
            .into_iter()
            .find(|&p| waiting.iter().any(|(_, j)| j.priority == p))?;
        let at = waiting.iter().position(|(_, j)| j.priority == lane)?;
        waiting.remove(at).map(|(_, job)| job)
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn enqueue(&self, job: QueuedJob) -> Result<(), UwsError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(UwsError::Queue(
                "the memory queue is failing on purpose".into(),
            ));
        }
        lock(&self.sent).push(job.clone());
        lock(&self.waiting).push_back((Instant::now(), job));
        Ok(())
    }

    async fn depth(&self) -> Result<u64, UwsError> {
        Ok(lock(&self.waiting).len() as u64)
    }

    async fn oldest_age(&self) -> Result<Option<Duration>, UwsError> {
        Ok(lock(&self.waiting).front().map(|(at, _)| at.elapsed()))
    }
}

/// What happened to a [`RecordingResultStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultEvent {
    /// `put_file(key, path)`, with the content type.
    Put {
        key: String,
        path: PathBuf,
        content_type: String,
    },
    Delete(String),
    /// `delete_prefix(prefix)`.
    DeletePrefix(String),
}

/// A result store that keeps nothing but a record of the calls; objects are "stored" with the
/// size of the file put.
#[derive(Default)]
pub struct RecordingResultStore {
    events: Mutex<Vec<ResultEvent>>,
    /// What `prefixes` lists: each prefix with the age of its newest object.
    prefixes: Mutex<Vec<(String, Duration)>>,
}

impl RecordingResultStore {
    pub fn new() -> RecordingResultStore {
        RecordingResultStore::default()
    }

    pub fn events(&self) -> Vec<ResultEvent> {
        lock(&self.events).clone()
    }

    /// Lists these prefixes, with the age of each one's newest object, until one is deleted.
    pub fn set_prefixes(&self, prefixes: &[(&str, Duration)]) {
        *lock(&self.prefixes) = prefixes
            .iter()
            .map(|&(p, age)| (p.to_owned(), age))
            .collect();
    }

    /// The file of the newest put of `key` that no delete followed.
    fn stored(&self, key: &str) -> Option<std::path::PathBuf> {
        let mut source = None;
        for event in lock(&self.events).iter() {
            match event {
                ResultEvent::Put { key: k, path, .. } if k == key => source = Some(path.clone()),
                ResultEvent::Delete(k) if k == key => source = None,
                _ => {}
            }
        }
        source
    }

    /// The keys deleted so far, in order.
    pub fn deleted(&self) -> Vec<String> {
        lock(&self.events)
            .iter()
            .filter_map(|e| match e {
                ResultEvent::Delete(key) => Some(key.clone()),
                ResultEvent::Put { .. } | ResultEvent::DeletePrefix(_) => None,
            })
            .collect()
    }
}

#[async_trait]
impl ResultStore for RecordingResultStore {
    async fn put_file(&self, key: &str, path: &Path, meta: &ObjectMeta) -> Result<u64, UwsError> {
        let size = std::fs::metadata(path)
            .map_err(|e| UwsError::ResultStore(format!("{}: {e}", path.display())))?
            .len();
        lock(&self.events).push(ResultEvent::Put {
            key: key.to_owned(),
            path: path.to_owned(),
            content_type: meta.content_type.clone(),
        });
        Ok(size)
    }

    async fn signed_url(
        &self,
        key: &str,
        valid_for: Duration,
        public_base: &str,
    ) -> Result<String, UwsError> {
        Ok(format!(
            "{public_base}/results/{key}?valid={}",
            valid_for.as_secs()
        ))
    }

    async fn get_file(&self, key: &str, path: &Path) -> Result<u64, UwsError> {
        let source = self
            .stored(key)
            .ok_or_else(|| UwsError::ResultStore(format!("no object {key}")))?;
        std::fs::copy(&source, path)
            .map_err(|e| UwsError::ResultStore(format!("{}: {e}", source.display())))
    }

    async fn exists(&self, key: &str) -> Result<bool, UwsError> {
        Ok(self.stored(key).is_some())
    }

    async fn prefixes(&self) -> Result<Vec<(String, Duration)>, UwsError> {
        Ok(lock(&self.prefixes).clone())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), UwsError> {
        lock(&self.prefixes).retain(|(p, _)| p != prefix);
        lock(&self.events).push(ResultEvent::DeletePrefix(prefix.to_owned()));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), UwsError> {
        lock(&self.events).push(ResultEvent::Delete(key.to_owned()));
        Ok(())
    }
}

/// A [`Uws`] over a memory store, a memory queue, in-process events and a recording result
/// store, with a handle on each.
#[derive(Clone)]
pub struct Harness {
    pub uws: Uws,
    pub store: Arc<MemoryJobStore>,
    pub queue: Arc<MemoryQueue>,
    pub results: Arc<RecordingResultStore>,
    pub events: LocalPhaseEvents,
}

impl Harness {
    pub fn new(limits: JobLimits) -> Harness {
        let store = Arc::new(MemoryJobStore::new());
        let queue = Arc::new(MemoryQueue::new());
        let results = Arc::new(RecordingResultStore::new());
        let events = LocalPhaseEvents::new();
        let uws = Uws::new(
            store.clone(),
            queue.clone(),
            Arc::new(events.clone()),
            results.clone(),
            limits,
        );
        Harness {
            uws,
            store,
            queue,
            results,
            events,
        }
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new(JobLimits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ObjectMeta {
        ObjectMeta {
            content_type: "application/octet-stream".to_owned(),
            filename: "x".to_owned(),
        }
    }

    #[tokio::test]
    async fn the_recording_store_reads_back_the_newest_put_that_no_delete_followed() {
        let dir = std::env::temp_dir().join(format!("uws-recording-{}", JobId::random()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let (first, second, copy) = (dir.join("a"), dir.join("b"), dir.join("copy"));
        std::fs::write(&first, b"first").expect("write");
        std::fs::write(&second, b"second!").expect("write");
        let store = RecordingResultStore::new();
        assert!(!store.exists("k").await.expect("the store answers"));
        assert!(store.get_file("k", &copy).await.is_err());

        store
            .put_file("k", &first, &meta())
            .await
            .expect("the store answers");
        store
            .put_file("other", &second, &meta())
            .await
            .expect("the store answers");
        assert!(store.exists("k").await.expect("the store answers"));
        assert_eq!(
            store.get_file("k", &copy).await.expect("the store answers"),
            5
        );
        assert_eq!(std::fs::read(&copy).expect("the copy"), b"first");

        store
            .put_file("k", &second, &meta())
            .await
            .expect("the store answers");
        assert_eq!(
            store.get_file("k", &copy).await.expect("the store answers"),
            7
        );
        assert_eq!(std::fs::read(&copy).expect("the copy"), b"second!");

        store.delete("k").await.expect("the store answers");
        assert!(!store.exists("k").await.expect("the store answers"));
        assert!(store.get_file("k", &copy).await.is_err());
        assert!(store.exists("other").await.expect("the store answers"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
