//! UWS `quote`: when a job is expected to complete, estimated on each read from the queue depth
//! and the mean run time of recently completed jobs (`JobStore::mean_run_time`).
//!
//! The estimate assumes one job at a time, so with several workers it errs late; a quote is a
//! hint to the client, and late is the safe side. Nothing is stored: the estimate moves with the
//! queue.

use std::time::Duration;

use time::OffsetDateTime;
use uws::{ExecutionPhase, Job};

use crate::error::FrontendError;
use crate::state::AppState;

/// Run time assumed before any job has completed: a typical cutout of a few megapixels.
pub const DEFAULT_RUN_TIME: Duration = Duration::from_secs(5);

/// How many recent completed jobs the mean run time covers.
const RECENT_JOBS: u32 = 100;

/// The instant `job` is expected to complete, given `queued` jobs in the queue and the recent
/// mean run time (`None`: no history). A final job's quote is when it ended; a held or
/// suspended job has none, as nothing says when it will resume.
pub fn estimate(
    job: &Job,
    now: OffsetDateTime,
    queued: u64,
    mean_run_time: Option<Duration>,
) -> Option<OffsetDateTime> {
    let run = mean_run_time.unwrap_or(DEFAULT_RUN_TIME);
    let runs = |n: u64| run.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
    match job.phase {
        // Counted in the queue itself, so the jobs ahead are the others.
        ExecutionPhase::Queued => Some(now + runs(queued.max(1))),
        // Would join the back of the queue when run.
        ExecutionPhase::Pending => Some(now + runs(queued.saturating_add(1))),
        ExecutionPhase::Executing => {
            let started = job.start_time.unwrap_or(now);
            Some((started + run).max(now))
        }
        phase if phase.is_final() => job.end_time,
        _ => None,
    }
}

/// `job` with its quote filled in from the live queue and store.
pub async fn with_quote(app: &AppState, mut job: Job) -> Result<Job, FrontendError> {
    let (queued, mean) = match job.phase {
        ExecutionPhase::Pending | ExecutionPhase::Queued => (
            app.uws.queue().depth().await?,
            app.uws.store().mean_run_time(RECENT_JOBS).await?,
        ),
        ExecutionPhase::Executing => (0, app.uws.store().mean_run_time(RECENT_JOBS).await?),
        _ => (0, None),
    };
    job.quote = estimate(&job, uws::timestamp::now(), queued, mean);
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(phase: ExecutionPhase) -> Job {
        Job {
            id: uws::JobId::parse("0123456789abcdef0123456789abcdef").expect("id"),
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
        }
    }

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).expect("instant")
    }

    #[test]
    fn a_queued_job_waits_for_the_jobs_ahead_and_its_own_run() {
        let quote = estimate(
            &job(ExecutionPhase::Queued),
            at(2_000_000),
            4,
            Some(Duration::from_secs(3)),
        );
        assert_eq!(quote, Some(at(2_000_012)));
    }

    #[test]
    fn a_pending_job_would_join_the_back_of_the_queue() {
        let quote = estimate(
            &job(ExecutionPhase::Pending),
            at(2_000_000),
            4,
            Some(Duration::from_secs(3)),
        );
        assert_eq!(quote, Some(at(2_000_015)));
    }

    #[test]
    fn without_history_the_default_run_time_is_assumed() {
        let quote = estimate(&job(ExecutionPhase::Queued), at(2_000_000), 0, None);
        assert_eq!(quote, Some(at(2_000_000) + DEFAULT_RUN_TIME));
    }

    #[test]
    fn an_executing_job_ends_a_mean_run_after_it_started_but_never_in_the_past() {
        let mut running = job(ExecutionPhase::Executing);
        running.start_time = Some(at(2_000_000));
        let mean = Some(Duration::from_secs(10));
        assert_eq!(
            estimate(&running, at(2_000_004), 0, mean),
            Some(at(2_000_010))
        );
        assert_eq!(
            estimate(&running, at(2_000_030), 0, mean),
            Some(at(2_000_030))
        );
    }

    #[test]
    fn a_final_job_is_quoted_its_end_and_a_held_job_nothing() {
        let mut done = job(ExecutionPhase::Completed);
        done.end_time = Some(at(1_500_000));
        assert_eq!(estimate(&done, at(2_000_000), 9, None), Some(at(1_500_000)));
        assert_eq!(
            estimate(&job(ExecutionPhase::Held), at(2_000_000), 9, None),
            None
        );
    }
}
