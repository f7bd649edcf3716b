//! API boundary: what the service needs from a job store.
//!
//! The store is the truth about every job. It applies the phase state machine itself
//! ([`crate::ExecutionPhase::can_become`]) atomically with the write, so two workers that both
//! believe they own a job, or a message that arrives late, cannot corrupt it.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::error::UwsError;
use crate::job::{ExecutionPhase, Job, JobError, JobId, JobResult, NewJob};
use crate::params::Parameters;
use crate::timestamp;

/// A phase change and the data that goes with it.
#[derive(Debug, Clone)]
pub enum Transition {
    /// PENDING → QUEUED (`PHASE=RUN`), or EXECUTING → QUEUED (handed back to the queue).
    Queue,
    /// QUEUED → EXECUTING; records the start time.
    Start,
    /// EXECUTING → COMPLETED with the results, all of them already fully written.
    Complete(Vec<JobResult>),
    /// Any active phase → ERROR.
    Fail(JobError),
    /// Any active phase → ABORTED.
    Abort,
    /// COMPLETED → ARCHIVED: the results are gone (their objects deleted by the caller after
    /// this), the job stays until its destruction time with an empty result list.
    Archive,
}

impl Transition {
    pub fn target(&self) -> ExecutionPhase {
        match self {
            Transition::Queue => ExecutionPhase::Queued,
            Transition::Start => ExecutionPhase::Executing,
            Transition::Complete(_) => ExecutionPhase::Completed,
            Transition::Fail(_) => ExecutionPhase::Error,
            Transition::Abort => ExecutionPhase::Aborted,
            Transition::Archive => ExecutionPhase::Archived,
        }
    }
}

/// What [`JobStore::create`] did: stored a new job, or found the very same create already done.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// This call stored the job.
    New(Job),
    /// A job with this ID, owner and parameters already existed (an earlier attempt whose
    /// answer was lost, or a repeated `Idempotency-Key`): it is answered as it is now.
    Existing(Job),
}

impl Created {
    pub fn job(self) -> Job {
        match self {
            Created::New(job) | Created::Existing(job) => job,
        }
    }
}

/// Filters of the UWS job list (`PHASE` repeatable, `AFTER` strict, `LAST` newest first).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub phases: Vec<ExecutionPhase>,
    pub after: Option<OffsetDateTime>,
    pub last: Option<u32>,
    /// Continue a paged list: only entries that come after this cursor in list order.
    pub cursor: Option<ListCursor>,
}

impl JobFilter {
    /// The filters of a job-list request: `PHASE` (repeatable), `AFTER` (an instant) and `LAST`
    /// (a count); other parameters are ignored.
    pub fn from_parameters(request: &Parameters) -> Result<JobFilter, UwsError> {
        let phases = request
            .all("PHASE")
            .map(str::parse)
            .collect::<Result<Vec<ExecutionPhase>, _>>()?;
        let after = request.first("AFTER").map(timestamp::parse).transpose()?;
        let last = request
            .first("LAST")
            .map(|v| {
                v.trim().parse::<u32>().map_err(|_| {
                    UwsError::Usage(format!("LAST must be a non-negative integer, got {v:?}"))
                })
            })
            .transpose()?;
        Ok(JobFilter {
            phases,
            after,
            last,
            cursor: None,
        })
    }
}

/// Where a page of the job list ended: the position of its last entry in list order (newest
/// first, ties broken by ID). Keyset paging stays fast however deep the page and never skips or
/// repeats an entry when jobs are created or deleted between pages, which an offset would.
///
/// Callers see it only as an opaque token ([`ListCursor::token`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    pub creation_time: OffsetDateTime,
    pub id: JobId,
}

impl ListCursor {
    /// The cursor just past `entry`.
    pub fn after(entry: &JobSummary) -> ListCursor {
        ListCursor {
            creation_time: entry.creation_time,
            id: entry.id.clone(),
        }
    }

    pub fn token(&self) -> String {
        format!("{}.{}", timestamp::to_micros(self.creation_time), self.id)
    }

    pub fn parse(token: &str) -> Result<ListCursor, UwsError> {
        let bad = || UwsError::Usage(format!("not a job-list cursor: {token:?}"));
        let (micros, id) = token.split_once('.').ok_or_else(bad)?;
        Ok(ListCursor {
            creation_time: timestamp::from_micros(micros.parse().map_err(|_| bad())?),
            id: JobId::parse(id).map_err(|_| bad())?,
        })
    }
}

/// A job list entry (`uws:jobref`).
#[derive(Debug, Clone, PartialEq)]
pub struct JobSummary {
    pub id: JobId,
    pub run_id: Option<String>,
    pub owner: String,
    pub phase: ExecutionPhase,
    pub creation_time: OffsetDateTime,
}

/// Settable job attributes outside the state machine.
#[derive(Debug, Clone)]
pub enum JobUpdate {
    Destruction(OffsetDateTime),
    ExecutionDuration(u32),
    /// Replaces the job's parameters (only while PENDING).
    Parameters(Vec<(String, String)>),
    RunId(Option<String>),
    /// How far the job has come (only while EXECUTING; not written durably).
    Progress(crate::job::Progress),
}

/// One COMPLETED job's cost, for completion estimates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecentRun {
    /// From start to end.
    pub run_time: std::time::Duration,
    /// The bytes of its results; None for a job completed before the store kept them.
    pub result_bytes: Option<u64>,
}

/// What one owner holds in the store, for quotas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerUsage {
    /// Jobs in QUEUED.
    pub queued: u64,
    /// Jobs in EXECUTING.
    pub executing: u64,
    /// Jobs created at or after the `since` instant asked about.
    pub created_since: u64,
    /// The oldest creation time among those, so a caller can tell when one leaves the window.
    pub oldest_since: Option<OffsetDateTime>,
    /// Bytes of all results of the owner's COMPLETED jobs (results of unknown size count 0).
    pub result_bytes: u64,
}

#[async_trait]
pub trait JobStore: Send + Sync {
    /// Stores a new PENDING (or QUEUED) job under the caller's ID, exactly once: a repeat of the
    /// same create (same ID, owner, run ID and parameters) answers the existing job as
    /// [`Created::Existing`] and changes nothing; another create with an ID that already exists
    /// is [`UwsError::Conflict`].
    async fn create(&self, job: NewJob) -> Result<Created, UwsError>;

    /// Reads a job whatever its owner; owner checks belong to the caller.
    async fn get(&self, id: &JobId) -> Result<Option<Job>, UwsError>;

    /// The owner's jobs matching the filter, newest first.
    async fn list(&self, owner: &str, filter: &JobFilter) -> Result<Vec<JobSummary>, UwsError>;

    /// Applies a transition if the state machine allows it from the job's current phase,
    /// atomically. Refused transitions give [`UwsError::IllegalTransition`] and change nothing.
    async fn transition(
        &self,
        id: &JobId,
        transition: Transition,
        at: OffsetDateTime,
    ) -> Result<Job, UwsError>;

    /// Changes an attribute. Parameter and run-ID updates apply only while the job is PENDING.
    async fn update(&self, id: &JobId, update: JobUpdate) -> Result<Job, UwsError>;

    /// Deletes a job and returns it, so the caller can remove its result objects.
    async fn delete(&self, id: &JobId) -> Result<Option<Job>, UwsError>;

    /// Jobs whose destruction time has passed.
    async fn expired(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<JobId>, UwsError>;

    /// COMPLETED jobs that ended at or before `ended_before`, oldest end first: the jobs whose
    /// results have outlived `jobs.result_lifetime` and are to be archived.
    async fn results_expired(
        &self,
        ended_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<JobId>, UwsError>;

    /// The owner's queued and executing jobs, jobs created since `since`, and result bytes held.
    async fn usage(&self, owner: &str, since: OffsetDateTime) -> Result<OwnerUsage, UwsError>;

    /// The owner's QUEUED jobs, counted up to `cap`: fair share needs to know only whether
    /// there are that many, and must not pay for counting a flood of thousands on every run.
    async fn queued_count(&self, owner: &str, cap: u64) -> Result<u64, UwsError>;

    /// Run time (start to end) and result bytes of the (at most `limit`) most recently created
    /// COMPLETED jobs, newest first: what completion estimates learn the cost of a cutout from.
    async fn recent_runs(&self, limit: u32) -> Result<Vec<RecentRun>, UwsError>;

    /// Jobs in the given phases, oldest first (to rebuild a lost queue).
    async fn in_phases(
        &self,
        phases: &[ExecutionPhase],
        limit: u32,
    ) -> Result<Vec<JobId>, UwsError>;
}

/// A job store that times every operation into the `skycut_job_store_latency_seconds`
/// histogram (by operation and outcome), whatever store it wraps: operators see the database
/// (or the wobbly service) from the roles that depend on it.
pub struct TimedJobStore(pub std::sync::Arc<dyn JobStore>);

fn timed<T>(
    operation: &'static str,
    started: std::time::Instant,
    result: Result<T, UwsError>,
) -> Result<T, UwsError> {
    let outcome = match &result {
        Ok(_) => "ok",
        // Refused transitions and missing jobs are answers, not store failures.
        Err(UwsError::Store(_)) => "error",
        Err(_) => "refused",
    };
    metrics::histogram!(
        "skycut_job_store_latency_seconds",
        "operation" => operation,
        "outcome" => outcome
    )
    .record(started.elapsed().as_secs_f64());
    result
}

#[async_trait]
impl JobStore for TimedJobStore {
    async fn create(&self, job: NewJob) -> Result<Created, UwsError> {
        let started = std::time::Instant::now();
        timed("create", started, self.0.create(job).await)
    }

    async fn get(&self, id: &JobId) -> Result<Option<Job>, UwsError> {
        let started = std::time::Instant::now();
        timed("get", started, self.0.get(id).await)
    }

    async fn list(&self, owner: &str, filter: &JobFilter) -> Result<Vec<JobSummary>, UwsError> {
        let started = std::time::Instant::now();
        timed("list", started, self.0.list(owner, filter).await)
    }

    async fn transition(
        &self,
        id: &JobId,
        transition: Transition,
        at: OffsetDateTime,
    ) -> Result<Job, UwsError> {
        let started = std::time::Instant::now();
        timed(
            "transition",
            started,
            self.0.transition(id, transition, at).await,
        )
    }

    async fn update(&self, id: &JobId, update: JobUpdate) -> Result<Job, UwsError> {
        let started = std::time::Instant::now();
        timed("update", started, self.0.update(id, update).await)
    }

    async fn delete(&self, id: &JobId) -> Result<Option<Job>, UwsError> {
        let started = std::time::Instant::now();
        timed("delete", started, self.0.delete(id).await)
    }

    async fn expired(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<JobId>, UwsError> {
        let started = std::time::Instant::now();
        timed("expired", started, self.0.expired(now, limit).await)
    }

    async fn results_expired(
        &self,
        ended_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<JobId>, UwsError> {
        let started = std::time::Instant::now();
        timed(
            "results_expired",
            started,
            self.0.results_expired(ended_before, limit).await,
        )
    }

    async fn usage(&self, owner: &str, since: OffsetDateTime) -> Result<OwnerUsage, UwsError> {
        let started = std::time::Instant::now();
        timed("usage", started, self.0.usage(owner, since).await)
    }

    async fn queued_count(&self, owner: &str, cap: u64) -> Result<u64, UwsError> {
        let started = std::time::Instant::now();
        timed(
            "queued_count",
            started,
            self.0.queued_count(owner, cap).await,
        )
    }

    async fn recent_runs(&self, limit: u32) -> Result<Vec<RecentRun>, UwsError> {
        let started = std::time::Instant::now();
        timed("recent_runs", started, self.0.recent_runs(limit).await)
    }

    async fn in_phases(
        &self,
        phases: &[ExecutionPhase],
        limit: u32,
    ) -> Result<Vec<JobId>, UwsError> {
        let started = std::time::Instant::now();
        timed("in_phases", started, self.0.in_phases(phases, limit).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_list_filters_come_from_phase_after_and_last() {
        let request: Parameters = [
            ("phase", "QUEUED"),
            ("PHASE", "executing"),
            ("AFTER", "2026-11-29T10:00:00.5Z"),
            ("last", " 10"),
            ("ID", "ignored"),
        ]
        .into_iter()
        .collect();
        let filter = JobFilter::from_parameters(&request).expect("filter");
        assert_eq!(
            filter.phases,
            [ExecutionPhase::Queued, ExecutionPhase::Executing]
        );
        assert_eq!(
            filter.after.map(timestamp::format).as_deref(),
            Some("2026-11-29T10:00:00.500Z")
        );
        assert_eq!(filter.last, Some(10));
        for bad in [("PHASE", "DONE"), ("AFTER", "now"), ("LAST", "-1")] {
            let request: Parameters = [bad].into_iter().collect();
            assert!(
                matches!(
                    JobFilter::from_parameters(&request),
                    Err(UwsError::Usage(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_cursor_token_round_trips() {
        let cursor = ListCursor {
            creation_time: timestamp::from_micros(1_764_000_000_123_456),
            id: JobId::random(),
        };
        assert_eq!(ListCursor::parse(&cursor.token()).ok(), Some(cursor));
    }

    #[test]
    fn a_forged_cursor_is_a_usage_error() {
        for token in [
            "",
            "12",
            "x.0123456789abcdef0123456789abcdef",
            "12.not-an-id",
        ] {
            assert!(
                matches!(ListCursor::parse(token), Err(UwsError::Usage(_))),
                "{token}"
            );
        }
    }
}
