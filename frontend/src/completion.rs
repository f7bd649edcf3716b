//! The UWS `quote` of a job, its estimated completion: when a job is expected to complete,
//! estimated on each read from the queue depth, the cost of recently completed jobs
//! (`JobStore::recent_runs`) and the size of the job's own results.
//!
//! A cutout's run time is modelled as a fixed cost plus a cost per byte, fitted by least squares
//! to the run times and result sizes of the last 100 COMPLETED jobs ([`RunCost`]). The job's own
//! size is the one planned on the image headers when its request arrived
//! (`cutout::job_parameters`, kept with the job as `planned_bytes`), so a read never plans again;
//! when it is unknown (images in a bucket), and for the jobs ahead of it in the queue, the mean
//! run time stands in. The estimate assumes one job at a time, so with several workers it errs
//! late; a quote is a hint to the client, and late is the safe side. The estimate itself is not
//! stored: it moves with the queue.

use std::time::Duration;

use time::OffsetDateTime;
use uws::store::RecentRun;
use uws::{ExecutionPhase, Job};

use crate::error::FrontendError;
use crate::state::AppState;

/// Run time assumed before any job has completed: a typical cutout of a few megapixels.
pub const DEFAULT_RUN_TIME: Duration = Duration::from_secs(5);

/// How many recent completed jobs the cost model learns from.
const RECENT_JOBS: u32 = 100;

/// What a cutout job costs, learnt from recent ones: `fixed + per_byte × bytes` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunCost {
    /// The mean run time, for a job of unknown size.
    pub mean: Duration,
    fixed: f64,
    per_byte: f64,
}

impl RunCost {
    /// Fits the model to `runs`; `None` without any. With fewer than two different sizes (or a
    /// fit that says bigger is cheaper), every job costs the mean.
    pub fn fit(runs: &[RecentRun]) -> Option<RunCost> {
        if runs.is_empty() {
            return None;
        }
        let n = runs.len() as f64;
        let mean_seconds = runs.iter().map(|r| r.run_time.as_secs_f64()).sum::<f64>() / n;
        let mean = Duration::try_from_secs_f64(mean_seconds).unwrap_or(DEFAULT_RUN_TIME);
        let flat = RunCost {
            mean,
            fixed: mean_seconds,
            per_byte: 0.0,
        };
        let sized: Vec<(f64, f64)> = runs
            .iter()
            .filter_map(|r| Some((r.result_bytes? as f64, r.run_time.as_secs_f64())))
            .collect();
        if sized.len() < 2 {
            return Some(flat);
        }
        let m = sized.len() as f64;
        let mean_x = sized.iter().map(|(x, _)| x).sum::<f64>() / m;
        let mean_y = sized.iter().map(|(_, y)| y).sum::<f64>() / m;
        let var: f64 = sized.iter().map(|(x, _)| (x - mean_x).powi(2)).sum();
        let cov: f64 = sized.iter().map(|(x, y)| (x - mean_x) * (y - mean_y)).sum();
        if var <= 0.0 || cov <= 0.0 {
            return Some(flat);
        }
        let per_byte = cov / var;
        Some(RunCost {
            mean,
            fixed: (mean_y - per_byte * mean_x).max(0.0),
            per_byte,
        })
    }

    /// The expected run time of a job whose cutouts hold `bytes`, or of an average job.
    pub fn predict(&self, bytes: Option<u64>) -> Duration {
        match bytes {
            Some(b) => Duration::try_from_secs_f64(self.fixed + self.per_byte * b as f64)
                .unwrap_or(self.mean),
            None => self.mean,
        }
    }
}

/// The instant `job` is expected to complete, given `queued` jobs in the queue, the cost model
/// (`None`: no history) and the bytes of the job's own cutouts if known. A final job's quote is
/// when it ended; a held or suspended job has none, as nothing says when it will resume.
pub fn estimate(
    job: &Job,
    now: OffsetDateTime,
    queued: u64,
    cost: Option<&RunCost>,
    own_bytes: Option<u64>,
) -> Option<OffsetDateTime> {
    let mean = cost.map_or(DEFAULT_RUN_TIME, |c| c.mean);
    let own = cost.map_or(DEFAULT_RUN_TIME, |c| c.predict(own_bytes));
    let runs = |n: u64| mean.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
    match job.phase {
        // Counted in the queue itself, so the jobs ahead are the others.
        ExecutionPhase::Queued => Some(now + runs(queued.saturating_sub(1)) + own),
        // Would join the back of the queue when run.
        ExecutionPhase::Pending => Some(now + runs(queued) + own),
        ExecutionPhase::Executing => {
            let started = job.start_time.unwrap_or(now);
            Some((started + own).max(now))
        }
        phase if phase.is_final() => job.end_time,
        _ => None,
    }
}

/// `job` with its quote filled in from the live queue and store.
pub async fn with_quote(app: &AppState, mut job: Job) -> Result<Job, FrontendError> {
    if !job.phase.is_active() {
        job.quote = estimate(&job, uws::timestamp::now(), 0, None, None);
        return Ok(job);
    }
    let queued = match job.phase {
        ExecutionPhase::Pending | ExecutionPhase::Queued => app.uws.queue().depth().await?,
        _ => 0,
    };
    let runs = app.uws.store().recent_runs(RECENT_JOBS).await?;
    let cost = RunCost::fit(&runs);
    // Planned once, when the request arrived (`cutout::job_parameters`), and kept with the job.
    let own = job.planned_bytes;
    job.quote = estimate(&job, uws::timestamp::now(), queued, cost.as_ref(), own);
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
            planned_bytes: None,
            progress: None,
        }
    }

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).expect("instant")
    }

    /// A model in which every job takes `seconds`.
    fn flat(seconds: u64) -> RunCost {
        let run = RecentRun {
            run_time: Duration::from_secs(seconds),
            result_bytes: None,
        };
        RunCost::fit(&[run]).expect("cost")
    }

    #[test]
    fn a_queued_job_waits_for_the_jobs_ahead_and_its_own_run() {
        let quote = estimate(
            &job(ExecutionPhase::Queued),
            at(2_000_000),
            4,
            Some(&flat(3)),
            None,
        );
        assert_eq!(quote, Some(at(2_000_012)));
    }

    #[test]
    fn a_pending_job_would_join_the_back_of_the_queue() {
        let quote = estimate(
            &job(ExecutionPhase::Pending),
            at(2_000_000),
            4,
            Some(&flat(3)),
            None,
        );
        assert_eq!(quote, Some(at(2_000_015)));
    }

    #[test]
    fn without_history_the_default_run_time_is_assumed() {
        let quote = estimate(&job(ExecutionPhase::Queued), at(2_000_000), 0, None, None);
        assert_eq!(quote, Some(at(2_000_000) + DEFAULT_RUN_TIME));
    }

    #[test]
    fn an_executing_job_ends_a_run_after_it_started_but_never_in_the_past() {
        let mut running = job(ExecutionPhase::Executing);
        running.start_time = Some(at(2_000_000));
        let cost = flat(10);
        assert_eq!(
            estimate(&running, at(2_000_004), 0, Some(&cost), None),
            Some(at(2_000_010))
        );
        assert_eq!(
            estimate(&running, at(2_000_030), 0, Some(&cost), None),
            Some(at(2_000_030))
        );
    }

    #[test]
    fn a_final_job_is_quoted_its_end_and_a_held_job_nothing() {
        let mut done = job(ExecutionPhase::Completed);
        done.end_time = Some(at(1_500_000));
        assert_eq!(
            estimate(&done, at(2_000_000), 9, None, None),
            Some(at(1_500_000))
        );
        assert_eq!(
            estimate(&job(ExecutionPhase::Held), at(2_000_000), 9, None, None),
            None
        );
    }

    fn run(seconds: f64, bytes: u64) -> RecentRun {
        RecentRun {
            run_time: Duration::from_secs_f64(seconds),
            result_bytes: Some(bytes),
        }
    }

    #[test]
    fn the_run_time_grows_with_the_cutout_size_learnt_from_recent_jobs() {
        // 0.5 s fixed + 1 s per megabyte.
        let runs = [run(0.5, 0), run(1.5, 1_000_000), run(4.5, 4_000_000)];
        let cost = RunCost::fit(&runs).expect("cost");
        let close = |d: Duration, s: f64| (d.as_secs_f64() - s).abs() < 1e-9;
        assert!(close(cost.predict(Some(2_000_000)), 2.5));
        assert!(close(cost.predict(Some(0)), 0.5));
        assert!(close(cost.predict(None), 6.5 / 3.0));
        // A bigger cutout is quoted later than a small one queued behind the same jobs.
        let now = at(2_000_000);
        let queued = job(ExecutionPhase::Queued);
        let small = estimate(&queued, now, 3, Some(&cost), Some(10_000));
        let big = estimate(&queued, now, 3, Some(&cost), Some(100_000_000));
        assert!(small < big, "{small:?} {big:?}");
    }

    #[test]
    fn without_a_size_trend_every_job_costs_the_mean() {
        let same_size = [run(1.0, 5000), run(3.0, 5000)];
        let cost = RunCost::fit(&same_size).expect("cost");
        assert_eq!(cost.predict(Some(1_000_000_000)), Duration::from_secs(2));
        let cheaper_when_bigger = [run(3.0, 0), run(1.0, 5000)];
        let cost = RunCost::fit(&cheaper_when_bigger).expect("cost");
        assert_eq!(cost.predict(Some(10)), Duration::from_secs(2));
        assert_eq!(RunCost::fit(&[]), None);
    }
}
