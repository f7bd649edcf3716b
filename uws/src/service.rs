//! The UWS operations on jobs, written once over the store, queue and event traits.
//!
//! Handlers call these and render what comes back; every rule of the protocol that does not
//! depend on what a job computes lives here (owner checks, phase changes, WAIT, the limits on
//! destruction and execution duration).

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use crate::error::UwsError;
use crate::events::{JobWaiters, JobWatch, PhaseChange, PhaseEvents, ProgressChange, Wake};
use crate::job::{Admission, ErrorCode, ExecutionPhase, Job, JobError, JobId, NewJob, Progress};
use crate::params::Parameters;
use crate::queue::{DelegatedToken, JobQueue, Priority, QueuedJob};
use crate::results::ResultStore;
use crate::store::{Created, JobFilter, JobStore, JobSummary, JobUpdate, Transition};
use crate::timestamp;

/// The UWS control parameters: read by this module, never stored as job parameters.
pub const CONTROL_PARAMETERS: &[&str] = &[
    "PHASE",
    "RUNID",
    "DESTRUCTION",
    "EXECUTIONDURATION",
    "WAIT",
    "ACTION",
    "AFTER",
    "LAST",
];

/// Longest `RUNID` accepted, in bytes: it is stored with the job and echoed in every job
/// document.
pub const MAX_RUN_ID_LEN: usize = 256;

fn checked_run_id(value: Option<&str>) -> Result<Option<String>, UwsError> {
    match value {
        Some(v) if v.len() > MAX_RUN_ID_LEN => Err(UwsError::Usage(format!(
            "RUNID is {} bytes long; at most {MAX_RUN_ID_LEN}",
            v.len()
        ))),
        v => Ok(v.map(str::to_owned)),
    }
}

/// How long a waiter sleeps between re-reads of the store when no event arrives: the safety
/// net for a lost event, not the normal wake-up.
pub(crate) const FALLBACK_REREAD: Duration = Duration::from_secs(5);

/// Limits that the service enforces on every job.
#[derive(Debug, Clone)]
pub struct JobLimits {
    /// Seconds; 0 means unlimited.
    pub default_execution_duration: u32,
    /// Seconds; 0 means unlimited. Requests above it are capped to it.
    pub max_execution_duration: u32,
    pub default_lifetime: Duration,
    /// A destruction time later than creation + this is clamped.
    pub max_lifetime: Duration,
    /// The server's cap on `WAIT`, and what `WAIT=-1` means.
    pub max_wait: Duration,
    /// An owner who already has this many jobs QUEUED gets further async jobs queued in the
    /// [`Priority::Bulk`] lane, behind every other owner's; 0 turns fair share off.
    pub fair_share_queued: u32,
    /// How long a create whose outcome is unknown (the store failed or its answer was lost) is
    /// repeated with the same job ID before the caller is told the store is unavailable.
    pub create_retry: Duration,
    /// How long a COMPLETED job's results are kept after it ends (`None`: as long as the job);
    /// [`Uws::sweep_archived`] then deletes them and archives the job.
    pub result_lifetime: Option<Duration>,
}

impl Default for JobLimits {
    fn default() -> Self {
        JobLimits {
            default_execution_duration: 600,
            max_execution_duration: 3600,
            default_lifetime: Duration::from_secs(7 * 24 * 3600),
            max_lifetime: Duration::from_secs(30 * 24 * 3600),
            max_wait: Duration::from_secs(60),
            fair_share_queued: 10,
            create_retry: Duration::from_secs(10),
            result_lifetime: None,
        }
    }
}

/// The UWS control parameters of a job-creation request, read and checked before anything is
/// stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Creation {
    /// `PHASE=RUN`: queue the job as soon as it exists.
    pub run: bool,
    /// `RUNID`, at most [`MAX_RUN_ID_LEN`] bytes.
    pub run_id: Option<String>,
    /// `EXECUTIONDURATION` in seconds (0: unlimited), capped by the limits.
    pub execution_duration: u32,
    /// `DESTRUCTION`, clamped to the longest lifetime the limits allow.
    pub destruction: OffsetDateTime,
}

/// The parsers of the UWS control parameters: pure functions of the request, the limits and the
/// current time, so that they are tested (and fuzzed, `fuzz/fuzz_targets/uws_parameters.rs`)
/// without a store.
impl JobLimits {
    /// Reads `PHASE`, `RUNID`, `EXECUTIONDURATION` and `DESTRUCTION` of a creation request made
    /// at `now`; the service's own parameters are left to the caller.
    pub fn creation(
        &self,
        request: &Parameters,
        now: OffsetDateTime,
    ) -> Result<Creation, UwsError> {
        let run = match request.first("PHASE") {
            None => false,
            Some(p) if p.trim().eq_ignore_ascii_case("RUN") => true,
            Some(p) => {
                return Err(UwsError::Usage(format!(
                    "PHASE={p} is not allowed when creating a job (only RUN)"
                )));
            }
        };
        let execution_duration = match request.first("EXECUTIONDURATION") {
            Some(v) => self.execution_duration(v)?,
            None => self.default_execution_duration,
        };
        let destruction = match request.first("DESTRUCTION") {
            Some(v) => self.destruction(v, now)?,
            None => now + self.default_lifetime,
        };
        Ok(Creation {
            run,
            run_id: checked_run_id(request.first("RUNID"))?,
            execution_duration,
            destruction,
        })
    }

    /// An `EXECUTIONDURATION` value: whole seconds, 0 for unlimited, capped to the maximum
    /// (which also replaces 0 when there is one).
    pub fn execution_duration(&self, value: &str) -> Result<u32, UwsError> {
        let seconds: i64 = value.trim().parse().map_err(|_| {
            UwsError::Usage(format!(
                "EXECUTIONDURATION must be an integer number of seconds, got {value:?}"
            ))
        })?;
        if seconds < 0 {
            return Err(UwsError::Usage(format!(
                "EXECUTIONDURATION must be 0 (unlimited) or more, got {seconds}"
            )));
        }
        let max = self.max_execution_duration;
        let seconds = u32::try_from(seconds).unwrap_or(u32::MAX);
        Ok(if max > 0 && (seconds == 0 || seconds > max) {
            max
        } else {
            seconds
        })
    }

    /// A `DESTRUCTION` value for a job created at `created`, clamped to its longest lifetime.
    pub fn destruction(
        &self,
        value: &str,
        created: OffsetDateTime,
    ) -> Result<OffsetDateTime, UwsError> {
        let wanted = timestamp::parse(value)?;
        Ok(wanted.min(created + self.max_lifetime))
    }

    /// A `WAIT` value: whole seconds, `-1` for the server's longest wait, capped to it.
    pub fn wait_timeout(&self, value: &str) -> Result<Duration, UwsError> {
        let seconds: i64 = value.trim().parse().map_err(|_| {
            UwsError::Usage(format!(
                "WAIT must be an integer number of seconds, got {value:?}"
            ))
        })?;
        match seconds {
            -1 => Ok(self.max_wait),
            s if s < -1 => Err(UwsError::Usage(format!("WAIT must be -1 or more, got {s}"))),
            s => Ok(Duration::from_secs(s.unsigned_abs()).min(self.max_wait)),
        }
    }
}

/// The UWS service. Cloning shares the same store, queue and event channel.
#[derive(Clone)]
pub struct Uws {
    store: Arc<dyn JobStore>,
    queue: Arc<dyn JobQueue>,
    events: Arc<dyn PhaseEvents>,
    results: Arc<dyn ResultStore>,
    limits: JobLimits,
    finished: Arc<FinishedJobs>,
    waiters: Arc<JobWaiters>,
}

/// Final jobs handed from [`Uws::finish`] to synchronous waiters in the same process, so that a
/// waiter woken by the final phase event need not read the job back from the store. Only jobs
/// someone waits on are kept, and only until that waiter takes them; a waiter that finds
/// nothing (the job finished in another process, or before the waiter registered) reads the
/// store as before.
#[derive(Default)]
struct FinishedJobs(std::sync::Mutex<std::collections::HashMap<JobId, Option<Job>>>);

impl FinishedJobs {
    fn watch(&self, id: &JobId) {
        if let Ok(mut jobs) = self.0.lock() {
            jobs.insert(id.clone(), None);
        }
    }

    fn deliver(&self, job: &Job) {
        if let Ok(mut jobs) = self.0.lock()
            && let Some(slot) = jobs.get_mut(&job.id)
        {
            *slot = Some(job.clone());
        }
    }

    fn take(&self, id: &JobId) -> Option<Job> {
        self.0.lock().ok()?.get_mut(id)?.take()
    }

    fn forget(&self, id: &JobId) {
        if let Ok(mut jobs) = self.0.lock() {
            jobs.remove(id);
        }
    }

    fn len(&self) -> usize {
        self.0.lock().map_or(0, |jobs| jobs.len())
    }

    fn contains(&self, id: &JobId) -> bool {
        self.0.lock().is_ok_and(|jobs| jobs.contains_key(id))
    }
}

impl Uws {
    pub fn new(
        store: Arc<dyn JobStore>,
        queue: Arc<dyn JobQueue>,
        events: Arc<dyn PhaseEvents>,
        results: Arc<dyn ResultStore>,
        limits: JobLimits,
    ) -> Uws {
        Uws {
            store,
            queue,
            events,
            results,
            limits,
            finished: Arc::default(),
            waiters: Arc::default(),
        }
    }

    pub fn limits(&self) -> &JobLimits {
        &self.limits
    }

    /// Synchronous requests of this process now waiting in [`Uws::run_and_wait`]: each holds a
    /// slot for its final job until it returns, so a number that only grows is a leak.
    pub fn sync_waiters(&self) -> usize {
        self.finished.len()
    }

    /// Whether a synchronous request of this process waits for the job now: its result is read
    /// at once through the open connection, then not again (see
    /// [`ResultStore::put_transient`]). False for a job awaited in another process.
    pub fn awaited_here(&self, id: &JobId) -> bool {
        self.finished.contains(id)
    }

    /// Every phase change announced after this call (for live progress streams).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<PhaseChange> {
        self.events.subscribe()
    }

    /// Every progress report recorded after this call (for live progress streams); never a
    /// phase change.
    pub fn subscribe_progress(&self) -> tokio::sync::broadcast::Receiver<ProgressChange> {
        self.events.subscribe_progress()
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    pub fn queue(&self) -> &Arc<dyn JobQueue> {
        &self.queue
    }

    pub fn results(&self) -> &Arc<dyn ResultStore> {
        &self.results
    }

    /// Creates a job from a creation request, exactly once, under the ID the caller drew before
    /// the first attempt (a [`JobId::random`], or the ID of an `Idempotency-Key`).
    /// `job_parameters` are the service's own parameters, already validated; the UWS control
    /// parameters are read from `request`. `PHASE=RUN` in the request starts the job at once, and
    /// `token` (the caller's delegated credential) travels with it to the worker.
    ///
    /// A repeat of a create that already happened (the same ID, owner and parameters) answers the
    /// job as it is now and queues nothing: the first request queued it.
    ///
    /// The store refuses the job with [`UwsError::OverQuota`] when its owner is at a limit of
    /// `admission`.
    #[expect(
        clippy::too_many_arguments,
        reason = "the protocol's inputs; a request struct is issue 19's route-table work"
    )]
    pub async fn create(
        &self,
        id: JobId,
        owner: &str,
        request: &Parameters,
        job_parameters: Parameters,
        priority: Priority,
        token: Option<DelegatedToken>,
        admission: Admission,
    ) -> Result<Job, UwsError> {
        self.create_with_progress(
            id,
            owner,
            request,
            job_parameters,
            priority,
            token,
            admission,
            None,
        )
        .await
    }

    /// [`Uws::create`] of a job that says how big it is before it runs: `progress` (its counts
    /// with nothing done, a bulk job's stamps, images and shards) is stored in the same write
    /// as the job, so its `jobInfo` and quote know the job's size while it waits. The worker's
    /// reports replace it once the job runs.
    #[expect(
        clippy::too_many_arguments,
        reason = "the protocol's inputs; a request struct is issue 19's route-table work"
    )]
    pub async fn create_with_progress(
        &self,
        id: JobId,
        owner: &str,
        request: &Parameters,
        job_parameters: Parameters,
        priority: Priority,
        token: Option<DelegatedToken>,
        admission: Admission,
        progress: Option<Progress>,
    ) -> Result<Job, UwsError> {
        let now = timestamp::now();
        let creation = self.limits.creation(request, now)?;
        let (job, ours) = self
            .create_once(NewJob {
                id,
                owner: owner.to_owned(),
                run_id: creation.run_id,
                parameters: job_parameters.into_vec(),
                execution_duration: creation.execution_duration,
                destruction: creation.destruction,
                creation_time: now,
                queued: creation.run,
                sync: priority == Priority::Sync,
                admission,
                progress,
            })
            .await?;
        if !ours {
            return Ok(job);
        }
        if creation.run {
            // Created QUEUED by the same write, unless the store does not know how (then it is
            // PENDING and `start` queues it).
            let id = job.id.clone();
            let queued = (job.phase == ExecutionPhase::Queued).then_some(job);
            let started = self.start(&id, priority, token, queued).await;
            if started.is_err() {
                // The caller hears an error, so the job it was never told about must not stay
                // (failed, it would still be listed and counted).
                self.delete_in_doubt(id).await;
            }
            started
        } else {
            Ok(job)
        }
    }

    /// Stores `job`, repeating the create with the same ID while its outcome is unknown (a store
    /// error: the write may have happened and only its answer been lost), for at most
    /// [`JobLimits::create_retry`]. Returns the job and whether this call created it (an
    /// existing job found after an attempt in doubt is this call's own).
    ///
    /// When time runs out, the store is read: a job found is answered; a job not found was never
    /// created; when even the read fails, the job is deleted (in the background until the store
    /// answers), so that a caller told "unavailable" never finds a job it was told does not exist.
    async fn create_once(&self, job: NewJob) -> Result<(Job, bool), UwsError> {
        let deadline = Instant::now() + self.limits.create_retry;
        let mut pause = Duration::from_millis(50);
        let mut in_doubt = false;
        loop {
            let error = match self.store.create(job.clone()).await {
                Ok(Created::New(job)) => return Ok((job, true)),
                Ok(Created::Existing(job)) => return Ok((job, in_doubt)),
                Err(UwsError::Store(e)) => e,
                Err(e) => return Err(e),
            };
            in_doubt = true;
            if Instant::now() + pause >= deadline {
                tracing::warn!(job = %job.id, error = %error, "job creation gave up; making sure the job does not exist");
                return match self.store.get(&job.id).await {
                    Ok(Some(found)) => Ok((found, true)),
                    Ok(None) => Err(UwsError::Store(error)),
                    Err(_) => {
                        self.delete_in_doubt(job.id.clone()).await;
                        Err(UwsError::Store(error))
                    }
                };
            }
            tracing::warn!(job = %job.id, error = %error, "job creation in doubt; repeating it");
            metrics::counter!("skycut_job_create_retries_total").increment(1);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Deletes a job whose creation is in doubt: at once if the store answers, else in the
    /// background, retried for ten minutes, so that a lost create never becomes a phantom job.
    async fn delete_in_doubt(&self, id: JobId) {
        if self.store.delete(&id).await.is_ok() {
            return;
        }
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            let give_up = Instant::now() + Duration::from_secs(600);
            while Instant::now() < give_up {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if store.delete(&id).await.is_ok() {
                    tracing::info!(job = %id, "job in doubt deleted");
                    return;
                }
            }
            tracing::error!(job = %id, "a job whose creation failed could not be deleted; it may exist");
        });
    }

    /// The owner's job; another owner's job is reported exactly as a missing one.
    pub async fn job(&self, owner: &str, id: &str) -> Result<Job, UwsError> {
        let id = JobId::parse(id)?;
        match self.store.get(&id).await? {
            Some(job) if job.owner == owner => Ok(job),
            _ => Err(UwsError::JobNotFound(id.to_string())),
        }
    }

    /// The job list with the UWS filters `PHASE` (repeatable), `AFTER` and `LAST`.
    pub async fn list(
        &self,
        owner: &str,
        request: &Parameters,
    ) -> Result<Vec<JobSummary>, UwsError> {
        let mut filter = JobFilter::from_parameters(request)?;
        // UWS 1.1 §2.2.3.1: ARCHIVED jobs are listed only when asked for by PHASE.
        if filter.phases.is_empty() {
            filter.phases = ExecutionPhase::ALL
                .into_iter()
                .filter(|p| *p != ExecutionPhase::Archived)
                .collect();
        }
        self.store.list(owner, &filter).await
    }

    /// `POST /phase` with `PHASE=RUN` or `PHASE=ABORT`; a run hands `token` to the worker.
    pub async fn set_phase(
        &self,
        owner: &str,
        id: &str,
        phase: Option<&str>,
        token: Option<DelegatedToken>,
    ) -> Result<Job, UwsError> {
        let job = self.job(owner, id).await?;
        match phase.map(str::trim) {
            Some(p) if p.eq_ignore_ascii_case("RUN") => match job.phase {
                ExecutionPhase::Pending => {
                    match self.start(&job.id, Priority::Async, token, None).await {
                        // Another RUN queued it between the read and the transition.
                        Err(UwsError::IllegalTransition { .. }) => {
                            self.job(owner, job.id.as_str()).await
                        }
                        started => started,
                    }
                }
                // A repeated RUN (its first answer lost): the job runs already and is queued
                // once, so it is answered as it is.
                ExecutionPhase::Queued | ExecutionPhase::Executing => Ok(job),
                phase => Err(UwsError::Usage(format!(
                    "job {} is {phase}: PHASE=RUN is only allowed while PENDING",
                    job.id
                ))),
            },
            Some(p) if p.eq_ignore_ascii_case("ABORT") => self.abort(job).await,
            Some(p) => Err(UwsError::Usage(format!(
                "PHASE must be RUN or ABORT, got {p:?}"
            ))),
            None => Err(UwsError::Usage("PHASE is required (RUN or ABORT)".into())),
        }
    }

    /// Queues a PENDING job, or hands to the queue a job the store `created_queued`. The job is
    /// QUEUED in the store before this returns, so a client that reads it right after sees it
    /// QUEUED or later.
    async fn start(
        &self,
        id: &JobId,
        priority: Priority,
        token: Option<DelegatedToken>,
        created_queued: Option<Job>,
    ) -> Result<Job, UwsError> {
        let job = match created_queued {
            Some(job) => job,
            None => {
                self.store
                    .transition(id, Transition::Queue, timestamp::now())
                    .await?
            }
        };
        count_transition(job.phase);
        self.events.publish(PhaseChange {
            id: id.clone(),
            owner: job.owner.clone(),
            phase: job.phase,
        });
        let priority = self.lane(&job.owner, priority).await;
        if let Err(e) = self
            .queue
            .enqueue(QueuedJob {
                id: id.clone(),
                priority,
                token,
                shard: None,
            })
            .await
        {
            // A job that can never be picked up must not sit QUEUED forever.
            let error = JobError::new(ErrorCode::Unavailable, format!("could not queue: {e}"));
            self.finish(id, Transition::Fail(error)).await.ok();
            return Err(e);
        }
        Ok(job)
    }

    /// Fair share: an async job whose owner already has `fair_share_queued` other jobs waiting
    /// goes to the bulk lane. Sync jobs keep their lane (a client is waiting on them).
    async fn lane(&self, owner: &str, priority: Priority) -> Priority {
        let threshold = u64::from(self.limits.fair_share_queued);
        if priority != Priority::Async || threshold == 0 {
            return priority;
        }
        // The job being queued is already QUEUED in the store: the others are one fewer.
        match self.store.queued_count(owner, threshold + 1).await {
            Ok(queued) if queued > threshold => Priority::Bulk,
            Ok(_) => priority,
            Err(e) => {
                // Fairness is not worth failing a run over: the job keeps its lane.
                tracing::warn!(owner, error = %e, "queued jobs not counted; fair share skipped");
                priority
            }
        }
    }

    /// Aborts an active job; a finished job is left as it is.
    async fn abort(&self, job: Job) -> Result<Job, UwsError> {
        if !job.phase.is_active() {
            return Ok(job);
        }
        match self.finish(&job.id, Transition::Abort).await {
            Ok(job) => Ok(job),
            // The job finished between the read and the abort: nothing to do.
            Err(UwsError::IllegalTransition { .. }) => self.job(&job.owner, job.id.as_str()).await,
            Err(e) => Err(e),
        }
    }

    /// Records how far an EXECUTING job has come (shown in its `jobInfo`), then announces it
    /// as a progress event (never a phase event: it wakes no `WAIT`). A report that comes after
    /// the job ended is refused as `WrongPhase`, which a worker may ignore, and announced to
    /// nobody.
    pub async fn report_progress(&self, id: &JobId, progress: Progress) -> Result<(), UwsError> {
        let job = self
            .store
            .update(id, JobUpdate::Progress(progress.clone()))
            .await?;
        self.events.publish_progress(ProgressChange {
            id: job.id,
            owner: job.owner,
            progress,
        });
        Ok(())
    }

    /// Ends a job: applies a transition to a final phase (`Complete`, `Fail`, `Abort`,
    /// `Archive`) and announces it. Any other transition is refused with `UwsError::Usage`
    /// before the store is asked: a worker takes a job with [`Uws::begin`] and gives it back
    /// with [`Uws::hand_back`].
    pub async fn finish(&self, id: &JobId, transition: Transition) -> Result<Job, UwsError> {
        let to = transition.target();
        if !to.is_final() {
            return Err(UwsError::Usage(format!(
                "finish ends job {id}, but {to} is not a final phase"
            )));
        }
        self.apply(id, transition).await
    }

    /// QUEUED → EXECUTING: a worker takes the job (recording its start time), and says so.
    pub async fn begin(&self, id: &JobId) -> Result<Job, UwsError> {
        self.apply(id, Transition::Start).await
    }

    /// EXECUTING → QUEUED: a worker gives the job back (draining, or taking over the job of a
    /// worker that died), and says so; the caller puts it on the queue again.
    pub async fn hand_back(&self, id: &JobId) -> Result<Job, UwsError> {
        self.apply(id, Transition::Queue).await
    }

    /// Puts on the queue again, in the async lane, every job the store holds QUEUED or
    /// EXECUTING (at most `limit`), handing the EXECUTING ones back first: for a process whose
    /// in-process queue died with its previous run while the store did not. Returns how many.
    pub async fn requeue_unfinished(&self, limit: u32) -> Result<usize, UwsError> {
        let ids = self
            .store
            .in_phases(&[ExecutionPhase::Queued, ExecutionPhase::Executing], limit)
            .await?;
        for id in &ids {
            match self.hand_back(id).await {
                // A QUEUED job refuses this, which is fine: it only needs queueing.
                Ok(_) | Err(UwsError::IllegalTransition { .. }) => {}
                Err(e) => tracing::warn!(job = %id, error = %e, "unfinished job not handed back"),
            }
            self.queue
                .enqueue(QueuedJob::new(id.clone(), Priority::Async))
                .await?;
        }
        Ok(ids.len())
    }

    /// Applies a transition the store accepts and announces it: the transition metric, the
    /// final job to a synchronous run waiting in this process, then the phase event.
    async fn apply(&self, id: &JobId, transition: Transition) -> Result<Job, UwsError> {
        let job = self
            .store
            .transition(id, transition, timestamp::now())
            .await?;
        count_transition(job.phase);
        if job.phase.is_final() {
            // Before the event, so that the waiter it wakes finds the job.
            self.finished.deliver(&job);
        }
        self.events.publish(PhaseChange {
            id: id.clone(),
            owner: job.owner.clone(),
            phase: job.phase,
        });
        Ok(job)
    }

    /// Deletes a job and its result objects. A running job is told to stop.
    /// A repeated DELETE whose first answer was lost finds no job (404); the results of the job
    /// read here are removed even when the store no longer returns it.
    pub async fn delete(&self, owner: &str, id: &str) -> Result<(), UwsError> {
        let job = self.job(owner, id).await?;
        let deleted = self.store.delete(&job.id).await?;
        self.forget(deleted.or(Some(job))).await;
        Ok(())
    }

    /// Deletes a job whatever its owner (the destruction sweeper).
    pub async fn purge(&self, id: &JobId) -> Result<(), UwsError> {
        let deleted = self.store.delete(id).await?;
        self.forget(deleted).await;
        Ok(())
    }

    /// Tells a deleted job's worker to stop and removes its result objects.
    async fn forget(&self, deleted: Option<Job>) {
        if let Some(job) = deleted {
            if job.phase.is_active() {
                self.events.publish(PhaseChange {
                    id: job.id.clone(),
                    owner: job.owner.clone(),
                    phase: ExecutionPhase::Aborted,
                });
            }
            for result in &job.results {
                if let Err(e) = self.results.delete(&result.key).await {
                    tracing::warn!(job = %job.id, key = %result.key, error = %e, "result object not deleted");
                }
            }
        }
    }

    /// Deletes every job past its destruction time; returns how many.
    pub async fn sweep_expired(&self) -> Result<usize, UwsError> {
        let expired = self.store.expired(timestamp::now(), 500).await?;
        for id in &expired {
            self.purge(id).await?;
        }
        Ok(expired.len())
    }

    /// Archives every COMPLETED job whose results have outlived [`JobLimits::result_lifetime`]:
    /// the store records ARCHIVED with no results first, so no client is handed a URL to a
    /// deleted object, then the result objects are deleted; returns how many jobs. Jobs past
    /// their destruction time are left to [`Uws::sweep_expired`].
    pub async fn sweep_archived(&self) -> Result<usize, UwsError> {
        let Some(lifetime) = self.limits.result_lifetime else {
            return Ok(0);
        };
        let now = timestamp::now();
        let ended_before = now - lifetime;
        let mut archived = 0;
        for id in self.store.results_expired(ended_before, 500).await? {
            let Some(job) = self.store.get(&id).await? else {
                continue;
            };
            if job.destruction <= now {
                continue;
            }
            let done = match self.store.transition(&id, Transition::Archive, now).await {
                Ok(done) => done,
                // Deleted or archived meanwhile (another frontend's sweep): nothing to do.
                Err(UwsError::IllegalTransition { .. } | UwsError::JobNotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            self.events.publish(PhaseChange {
                id: done.id.clone(),
                owner: done.owner.clone(),
                phase: done.phase,
            });
            for result in &job.results {
                if let Err(e) = self.results.delete(&result.key).await {
                    tracing::warn!(job = %job.id, key = %result.key, error = %e, "archived result object not deleted");
                }
            }
            archived += 1;
        }
        Ok(archived)
    }

    /// Deletes the result prefixes that no job of the store owns and in which nothing was
    /// written for `grace` (objects left by an attempt cut short, by a job deleted while its
    /// results were being stored, or by a crash); returns how many. The result store must
    /// belong to this service alone: another service's prefixes would count as orphans.
    pub async fn sweep_orphans(&self, grace: Duration) -> Result<usize, UwsError> {
        let mut removed = 0;
        for (prefix, age) in self.results.prefixes().await? {
            let Ok(id) = JobId::parse(&prefix) else {
                continue;
            };
            if age < grace || self.store.get(&id).await?.is_some() {
                continue;
            }
            self.results.delete_prefix(&prefix).await?;
            tracing::info!(prefix, "removed results that no job owns");
            removed += 1;
        }
        Ok(removed)
    }

    pub async fn set_destruction(
        &self,
        owner: &str,
        id: &str,
        value: Option<&str>,
    ) -> Result<Job, UwsError> {
        let job = self.job(owner, id).await?;
        let value = value.ok_or_else(|| UwsError::Usage("DESTRUCTION is required".to_owned()))?;
        let destruction = self.limits.destruction(value, job.creation_time)?;
        self.store
            .update(&job.id, JobUpdate::Destruction(destruction))
            .await
    }

    pub async fn set_execution_duration(
        &self,
        owner: &str,
        id: &str,
        value: Option<&str>,
    ) -> Result<Job, UwsError> {
        let job = self.job(owner, id).await?;
        let value =
            value.ok_or_else(|| UwsError::Usage("EXECUTIONDURATION is required".to_owned()))?;
        let seconds = self.limits.execution_duration(value)?;
        if job.phase != ExecutionPhase::Pending {
            return Err(UwsError::WrongPhase {
                id: job.id.to_string(),
                phase: job.phase,
                what: "executionduration can only be changed while PENDING".into(),
            });
        }
        self.store
            .update(&job.id, JobUpdate::ExecutionDuration(seconds))
            .await
    }

    /// `POST /parameters`: replaces the named parameters of a PENDING job (already validated as
    /// a whole by the caller) and its run ID if given.
    pub async fn set_parameters(
        &self,
        job: &Job,
        parameters: Parameters,
        run_id: Option<&str>,
    ) -> Result<Job, UwsError> {
        if job.phase != ExecutionPhase::Pending {
            return Err(UwsError::WrongPhase {
                id: job.id.to_string(),
                phase: job.phase,
                what: "parameters can only be changed while PENDING".into(),
            });
        }
        let run_id = checked_run_id(run_id)?;
        let mut job = job.clone();
        if let Some(run_id) = run_id {
            job = self
                .store
                .update(&job.id, JobUpdate::RunId(Some(run_id)))
                .await?;
        }
        if parameters.is_empty() {
            return Ok(job);
        }
        self.store
            .update(&job.id, JobUpdate::Parameters(parameters.into_vec()))
            .await
    }

    /// `GET job?WAIT=n[&PHASE=p]`: blocks while the job is active (and, with `PHASE`, in that
    /// phase) until its phase changes or the wait ends, then returns the job as it is.
    pub async fn wait(
        &self,
        owner: &str,
        id: &str,
        wait: &str,
        phase: Option<&str>,
    ) -> Result<Job, UwsError> {
        let timeout = self.limits.wait_timeout(wait)?;
        let expected = phase.map(str::parse::<ExecutionPhase>).transpose()?;
        // Watch before reading, so a change between the read and the wait is not missed.
        let watch = self.waiters.watch(self.events.as_ref(), &JobId::parse(id)?);
        let job = self.job(owner, id).await?;
        if !job.phase.is_active() || expected.is_some_and(|p| p != job.phase) {
            return Ok(job);
        }
        let from = job.phase;
        self.wait_while(watch, job, Instant::now() + timeout, |p| p == from)
            .await
    }

    /// Creates a job that runs at once (as `PHASE=RUN` would) and waits until it reaches a final
    /// phase or `timeout` passes: a synchronous request. Subscribed to phase events before the
    /// job exists, so the store is never read just to learn the job's phase, and handed the final
    /// job by [`Uws::finish`] when the worker runs in this process.
    #[expect(
        clippy::too_many_arguments,
        reason = "the protocol's inputs; a request struct is issue 19's route-table work"
    )]
    pub async fn run_and_wait(
        &self,
        id: JobId,
        owner: &str,
        job_parameters: Parameters,
        priority: Priority,
        token: Option<DelegatedToken>,
        timeout: Duration,
        admission: Admission,
    ) -> Result<Job, UwsError> {
        let deadline = Instant::now() + timeout;
        let watch = self.waiters.watch(self.events.as_ref(), &id);
        let mut run = Parameters::new();
        run.push("PHASE", "RUN");
        let job = self
            .create(id, owner, &run, job_parameters, priority, token, admission)
            .await?;
        let id = job.id.clone();
        self.finished.watch(&id);
        let waited = self
            .wait_while(watch, job, deadline, |p| !p.is_final())
            .await;
        self.finished.forget(&id);
        waited
    }

    /// Waits until the job reaches a final phase or the deadline passes (synchronous requests).
    pub async fn wait_final(&self, id: &JobId, timeout: Duration) -> Result<Job, UwsError> {
        let watch = self.waiters.watch(self.events.as_ref(), id);
        let job = self
            .store
            .get(id)
            .await?
            .ok_or_else(|| UwsError::JobNotFound(id.to_string()))?;
        self.wait_while(watch, job, Instant::now() + timeout, |p| !p.is_final())
            .await
    }

    async fn wait_while(
        &self,
        mut watch: JobWatch,
        mut job: Job,
        deadline: Instant,
        keep_waiting: impl Fn(ExecutionPhase) -> bool,
    ) -> Result<Job, UwsError> {
        // True once an event said the job moved on without the store being read since: the
        // job must be read before it is returned.
        let mut stale = false;
        while keep_waiting(job.phase) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let nap = (deadline - now).min(FALLBACK_REREAD);
            let reread = match tokio::time::timeout(nap, watch.changed()).await {
                // A change that does not end the wait is noted, not read: the event names the
                // phase, and a waiter needs the whole job only when it stops waiting.
                Ok(Some(Wake::Phase(phase))) if keep_waiting(phase) => {
                    job.phase = phase;
                    stale = true;
                    false
                }
                Ok(Some(Wake::Phase(_))) => match self.finished.take(&job.id) {
                    Some(finished) => {
                        job = finished;
                        stale = false;
                        false
                    }
                    None => true,
                },
                // Missed events, or no more events: the store still knows.
                Ok(Some(Wake::Reread)) => true,
                Ok(None) => {
                    tokio::time::sleep(nap).await;
                    true
                }
                Err(_elapsed) => true,
            };
            if reread {
                job = self
                    .store
                    .get(&job.id)
                    .await?
                    .ok_or_else(|| UwsError::JobNotFound(job.id.to_string()))?;
                stale = false;
            }
        }
        if stale {
            job = self
                .store
                .get(&job.id)
                .await?
                .ok_or_else(|| UwsError::JobNotFound(job.id.to_string()))?;
        }
        Ok(job)
    }
}

/// Counts a phase change the store accepted, by the phase entered (`skycut_job_phase_transitions_total`).
/// Refused transitions are not counted, so duplicates and late messages do not inflate it.
fn count_transition(phase: ExecutionPhase) {
    metrics::counter!("skycut_job_phase_transitions_total", "phase" => phase.as_str()).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> Parameters {
        pairs.iter().copied().collect()
    }

    fn now() -> OffsetDateTime {
        timestamp::parse("2026-11-29T10:00:00Z").expect("time")
    }

    #[test]
    fn creation_reads_the_control_parameters_and_applies_the_limits() {
        let limits = JobLimits::default();
        let c = limits
            .creation(
                &request(&[
                    ("phase", "run"),
                    ("RUNID", "r1"),
                    ("ExecutionDuration", "0"),
                    ("DESTRUCTION", "2099-01-01T00:00:00Z"),
                    ("CIRCLE", "1 2 3"),
                ]),
                now(),
            )
            .expect("creation");
        assert!(c.run);
        assert_eq!(c.run_id.as_deref(), Some("r1"));
        assert_eq!(c.execution_duration, limits.max_execution_duration);
        assert_eq!(c.destruction, now() + limits.max_lifetime);
        let defaults = limits.creation(&request(&[]), now()).expect("creation");
        assert!(!defaults.run && defaults.run_id.is_none());
        assert_eq!(
            defaults.execution_duration,
            limits.default_execution_duration
        );
        assert_eq!(defaults.destruction, now() + limits.default_lifetime);
    }

    #[test]
    fn creation_refuses_bad_control_parameters() {
        let limits = JobLimits::default();
        let long = "x".repeat(MAX_RUN_ID_LEN + 1);
        for bad in [
            [("PHASE", "ABORT")],
            [("EXECUTIONDURATION", "-1")],
            [("EXECUTIONDURATION", "soon")],
            [("DESTRUCTION", "tomorrow")],
            [("RUNID", long.as_str())],
        ] {
            assert!(
                matches!(
                    limits.creation(&request(&bad), now()),
                    Err(UwsError::Usage(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn wait_is_capped_and_minus_one_means_the_cap() {
        let limits = JobLimits::default();
        assert_eq!(limits.wait_timeout("-1").ok(), Some(limits.max_wait));
        assert_eq!(
            limits.wait_timeout(" 5 ").ok(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(limits.wait_timeout("99999").ok(), Some(limits.max_wait));
        for bad in ["-2", "", "1.5"] {
            assert!(limits.wait_timeout(bad).is_err(), "{bad:?}");
        }
    }
}
