//! The UWS `quote` of a job, its estimated completion: when a job is expected to complete,
//! estimated on each read from the queue depth, the cost of recently completed jobs
//! (`JobStore::recent_runs`) and the size of the job's own results.
//!
//! A cutout's run time is modelled as a fixed cost plus a cost per byte, fitted by least squares
//! to the run times and result sizes of the last 100 COMPLETED jobs ([`RunCost`]). The job's own
//! size is the one planned on the image headers when its request arrived
//! (`cutout::job_parameters`, kept with the job as `planned_bytes`), so a read never plans again;
//! when it is unknown (images in a bucket), and for the jobs ahead of it in the queue, the mean
//! run time stands in. The estimate assumes the jobs ahead run one at a time, so with several
//! workers it errs late; a quote is a hint to the client, and late is the safe side. The
//! estimate itself is not stored: it moves with the queue.
//!
//! A bulk job is priced by its shards and its progress:
//! - EXECUTING, once its worker reports stamps done: extrapolated from its own pace, start +
//!   elapsed × total/done stamps ([`extrapolate`]), never in the past. The quote users see most,
//!   and the only one that knows how fast this job's images and workers really are.
//! - QUEUED or PENDING (and EXECUTING before its first report): the run time of its planned
//!   bytes divided by the parallelism it can get, min(shards, workers) ([`parallelism`]). Its
//!   shards are counted when its plan is written (`bulk::plan`), by the rule the worker splits the
//!   plan with (`soda::bulk_plan::ShardRule`), and kept with the job as the `shards` total of the
//!   progress it is created with (so `jobInfo` shows the job's size while it waits, and no
//!   column or plan read is needed). The workers are those the queue can tell of
//!   (`JobQueue::workers`: in the distributed topology the Redis consumers that took or
//!   heartbeated an entry within the visibility timeout), else one: `skycut serve` is one
//!   process, which already cuts several images of a job at once.

use std::time::Duration;

use time::OffsetDateTime;
use uws::store::RecentRun;
use uws::{ExecutionPhase, Job, ProgressCount};

use crate::error::FrontendError;
use crate::state::AppState;

/// Run time assumed before any job has completed: a typical cutout of a few megapixels.
pub const DEFAULT_RUN_TIME: Duration = Duration::from_secs(5);

/// How many recent completed jobs the cost model learns from.
const RECENT_JOBS: u32 = 100;

/// The progress count of a bulk job's stamps, done of total (as its worker reports them).
pub const STAMPS: &str = "stamps";

/// The progress count of a bulk job's shards: its total is the job's shard count, from its
/// creation on.
pub const SHARDS: &str = "shards";

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

/// The count called `name` of the job's progress, if it has one.
fn count<'a>(job: &'a Job, name: &str) -> Option<&'a ProgressCount> {
    job.progress.as_ref()?.0.iter().find(|c| c.name == name)
}

/// How many of a job's shards can be cut at once: min(shards, workers), at least one.
pub fn parallelism(shards: u64, workers: u64) -> u32 {
    u32::try_from(shards.min(workers))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// When a job that started at `start` and had done `done` of its `total` units at `now` ends
/// if it goes on at the same pace: start + elapsed × total/done, never before `now`. `None`
/// before anything is done (no pace yet), or for an end too far to be an instant.
pub fn extrapolate(
    start: OffsetDateTime,
    now: OffsetDateTime,
    done: u64,
    total: u64,
) -> Option<OffsetDateTime> {
    if done == 0 {
        return None;
    }
    let elapsed = (now - start).max(time::Duration::ZERO).as_seconds_f64();
    let run = time::Duration::checked_seconds_f64(elapsed * total as f64 / done as f64)?;
    Some(start.checked_add(run)?.max(now))
}

/// The instant `job` is expected to complete, given `queued` jobs in the queue, the cost model
/// (`None`: no history), the bytes of the job's own cutouts if known, and the `parallel` workers
/// its run is shared among (1 but for a bulk job of several shards, [`parallelism`]). An
/// EXECUTING job that reports stamps done is extrapolated from its pace instead. A final job's
/// quote is when it ended; a held or suspended job has none, as nothing says when it will
/// resume.
pub fn estimate(
    job: &Job,
    now: OffsetDateTime,
    queued: u64,
    cost: Option<&RunCost>,
    own_bytes: Option<u64>,
    parallel: u32,
) -> Option<OffsetDateTime> {
    let mean = cost.map_or(DEFAULT_RUN_TIME, |c| c.mean);
    let own = cost.map_or(DEFAULT_RUN_TIME, |c| c.predict(own_bytes)) / parallel.max(1);
    let runs = |n: u64| mean.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
    match job.phase {
        // Counted in the queue itself, so the jobs ahead are the others.
        ExecutionPhase::Queued => Some(now + runs(queued.saturating_sub(1)) + own),
        // Would join the back of the queue when run.
        ExecutionPhase::Pending => Some(now + runs(queued) + own),
        ExecutionPhase::Executing => {
            let started = job.start_time.unwrap_or(now);
            let paced = count(job, STAMPS).and_then(|c| extrapolate(started, now, c.done, c.total));
            Some(paced.unwrap_or((started + own).max(now)))
        }
        phase if phase.is_final() => job.end_time,
        _ => None,
    }
}

/// `job` with its quote filled in from the live queue and store.
pub async fn with_quote(app: &AppState, mut job: Job) -> Result<Job, FrontendError> {
    if !job.phase.is_active() {
        job.quote = estimate(&job, uws::timestamp::now(), 0, None, None, 1);
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
    let parallel = shared_among(app, &job).await;
    job.quote = estimate(
        &job,
        uws::timestamp::now(),
        queued,
        cost.as_ref(),
        own,
        parallel,
    );
    Ok(job)
}

/// How many workers `job`'s run is shared among: min(shards, workers) for a bulk job of several
/// shards that is not yet paced by its own progress, else one (without asking the queue). A
/// queue that cannot tell, or fails to, counts as one worker: late is the safe side.
async fn shared_among(app: &AppState, job: &Job) -> u32 {
    let shards = count(job, SHARDS).map_or(1, |c| c.total);
    let paced =
        job.phase == ExecutionPhase::Executing && count(job, STAMPS).is_some_and(|c| c.done > 0);
    if shards <= 1 || paced {
        return 1;
    }
    let workers = match app.uws.queue().workers().await {
        Ok(workers) => workers.unwrap_or(1),
        Err(e) => {
            tracing::debug!(error = %e, "workers not counted; the quote assumes one");
            1
        }
    };
    parallelism(shards, workers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(phase: ExecutionPhase) -> Job {
        uws::testing::job_in(phase)
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
            1,
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
            1,
        );
        assert_eq!(quote, Some(at(2_000_015)));
    }

    #[test]
    fn without_history_the_default_run_time_is_assumed() {
        let quote = estimate(
            &job(ExecutionPhase::Queued),
            at(2_000_000),
            0,
            None,
            None,
            1,
        );
        assert_eq!(quote, Some(at(2_000_000) + DEFAULT_RUN_TIME));
    }

    #[test]
    fn an_executing_job_ends_a_run_after_it_started_but_never_in_the_past() {
        let mut running = job(ExecutionPhase::Executing);
        running.start_time = Some(at(2_000_000));
        let cost = flat(10);
        assert_eq!(
            estimate(&running, at(2_000_004), 0, Some(&cost), None, 1),
            Some(at(2_000_010))
        );
        assert_eq!(
            estimate(&running, at(2_000_030), 0, Some(&cost), None, 1),
            Some(at(2_000_030))
        );
    }

    #[test]
    fn a_final_job_is_quoted_its_end_and_a_held_job_nothing() {
        let mut done = job(ExecutionPhase::Completed);
        done.end_time = Some(at(1_500_000));
        assert_eq!(
            estimate(&done, at(2_000_000), 9, None, None, 1),
            Some(at(1_500_000))
        );
        assert_eq!(
            estimate(&job(ExecutionPhase::Held), at(2_000_000), 9, None, None, 1),
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
        let small = estimate(&queued, now, 3, Some(&cost), Some(10_000), 1);
        let big = estimate(&queued, now, 3, Some(&cost), Some(100_000_000), 1);
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

    /// A bulk job in `phase` of `stamps` (done, total) and `shards` shards, planned at 1 MB.
    fn bulk(phase: ExecutionPhase, stamps: (u64, u64), shards: u64) -> Job {
        let count = |name: &str, (done, total): (u64, u64)| ProgressCount {
            name: name.to_owned(),
            done,
            total,
        };
        Job {
            planned_bytes: Some(1_000_000),
            progress: Some(uws::Progress(vec![
                count(STAMPS, stamps),
                count("images", (0, 10)),
                count(SHARDS, (0, shards)),
            ])),
            ..job(phase)
        }
    }

    #[test]
    fn progress_is_extrapolated_from_the_start_at_the_pace_so_far() {
        let start = at(2_000_000);
        // A quarter done in 10 s: 40 s in all.
        assert_eq!(
            extrapolate(start, at(2_000_010), 25, 100),
            Some(at(2_000_040))
        );
        assert_eq!(extrapolate(start, at(2_000_010), 1, 3), Some(at(2_000_030)));
        // All done, or more than planned: now, never in the past.
        assert_eq!(
            extrapolate(start, at(2_000_010), 100, 100),
            Some(at(2_000_010))
        );
        assert_eq!(
            extrapolate(start, at(2_000_010), 150, 100),
            Some(at(2_000_010))
        );
        // A start after now (another host's clock): no time has passed since, so that start.
        assert_eq!(
            extrapolate(at(2_000_020), at(2_000_010), 5, 100),
            Some(at(2_000_020))
        );
        // No pace before anything is done, and no instant past the calendar's end.
        assert_eq!(extrapolate(start, at(2_000_010), 0, 100), None);
        assert_eq!(extrapolate(start, at(2_000_010), 1, u64::MAX), None);
    }

    #[test]
    fn an_executing_bulk_job_is_quoted_by_its_pace_not_the_cost_model() {
        let mut running = bulk(ExecutionPhase::Executing, (250, 1000), 4);
        running.start_time = Some(at(2_000_000));
        // 250 of 1000 stamps in 30 s: 120 s in all, whatever recent jobs cost.
        for cost in [None, Some(flat(3)), Some(flat(10_000))] {
            assert_eq!(
                estimate(
                    &running,
                    at(2_000_030),
                    0,
                    cost.as_ref(),
                    Some(1_000_000),
                    4
                ),
                Some(at(2_000_120))
            );
        }
    }

    #[test]
    fn an_executing_bulk_job_without_stamps_done_is_priced_like_a_queued_one() {
        let mut running = bulk(ExecutionPhase::Executing, (0, 1000), 4);
        running.start_time = Some(at(2_000_000));
        // 40 s of planned bytes over 4 workers: 10 s after its start.
        assert_eq!(
            estimate(
                &running,
                at(2_000_002),
                0,
                Some(&flat(40)),
                Some(1_000_000),
                4
            ),
            Some(at(2_000_010))
        );
    }

    #[test]
    fn a_waiting_bulk_job_shares_its_run_among_min_shards_workers() {
        assert_eq!(parallelism(4, 2), 2);
        assert_eq!(parallelism(4, 16), 4);
        assert_eq!(parallelism(1, 16), 1);
        // No worker seen (none has started yet, or the queue cannot tell): one.
        assert_eq!(parallelism(4, 0), 1);
        assert_eq!(parallelism(u64::MAX, u64::MAX), u32::MAX);
        let now = at(2_000_000);
        let cost = flat(40);
        // Two jobs ahead of 40 s each, then its own 40 s over two workers.
        let queued = bulk(ExecutionPhase::Queued, (0, 1000), 4);
        assert_eq!(
            estimate(
                &queued,
                now,
                3,
                Some(&cost),
                queued.planned_bytes,
                parallelism(4, 2)
            ),
            Some(at(2_000_100))
        );
        let pending = bulk(ExecutionPhase::Pending, (0, 1000), 4);
        assert_eq!(
            estimate(
                &pending,
                now,
                3,
                Some(&cost),
                pending.planned_bytes,
                parallelism(4, 2)
            ),
            Some(at(2_000_140))
        );
        // One shard: the whole run, however many workers.
        let one = bulk(ExecutionPhase::Queued, (0, 1000), 1);
        assert_eq!(
            estimate(
                &one,
                now,
                1,
                Some(&cost),
                one.planned_bytes,
                parallelism(1, 8)
            ),
            Some(at(2_000_040))
        );
    }

    #[test]
    fn a_jobs_counts_are_found_by_name() {
        let queued = bulk(ExecutionPhase::Queued, (7, 1000), 3);
        assert_eq!(count(&queued, SHARDS).map(|c| c.total), Some(3));
        assert_eq!(count(&queued, STAMPS).map(|c| c.done), Some(7));
        assert!(count(&job(ExecutionPhase::Queued), SHARDS).is_none());
    }
}
