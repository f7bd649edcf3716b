//! The worker process of the distributed topology: jobs from Redis Streams, many at once,
//! heartbeats while they run, and a drain on shutdown that finishes or hands back every job.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uws::events::PhaseEvents;
use uws::queue::JobQueue;
use uws::service::Uws;
use uws::{ExecutionPhase, JobId, UwsError};

use crate::local::watch_aborts;
use crate::redis::{Delivery, RedisConsumer, RedisQueue};
use crate::runner::Worker;
use crate::slots::Slots;

/// How the worker loop behaves.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// General slots, for jobs of every lane (`[worker] concurrency`).
    pub concurrency: usize,
    /// Slots for synchronous requests' jobs alone (`[worker] sync_concurrency`).
    pub sync_concurrency: usize,
    /// An entry idle this long is presumed abandoned by a dead worker.
    pub visibility_timeout: Duration,
    /// On shutdown, how long running jobs may take before they are handed back to the queue.
    pub drain_timeout: Duration,
    /// How often to check whether Redis lost its data (and rebuild the queue if so).
    pub recovery_interval: Duration,
    /// Jobs to take before draining and returning; 0: no limit.
    pub max_jobs: u64,
    /// How often to log the one-line summary; `None`: never.
    pub summary_interval: Option<Duration>,
}

/// How long a read holding only sync slots waits for a sync job before looking again, when a
/// general slot may have freed.
const SYNC_ONLY_BLOCK: Duration = Duration::from_millis(50);

/// Runs jobs from Redis until `shutdown` (or until it has taken `max_jobs`), then drains. Returns
/// when every job this worker took has finished or been handed back.
pub async fn run_redis(
    worker: Worker,
    uws: Uws,
    consumer: Arc<RedisConsumer>,
    queue: RedisQueue,
    events: Arc<dyn PhaseEvents>,
    settings: LoopSettings,
    shutdown: CancellationToken,
) {
    let watcher_stop = CancellationToken::new();
    let watcher = tokio::spawn(watch_aborts(worker.clone(), events, watcher_stop.clone()));
    let recovery = tokio::spawn(recover_periodically(
        uws.clone(),
        consumer.clone(),
        queue.clone(),
        settings.recovery_interval,
        shutdown.clone(),
    ));
    let done = Arc::new(AtomicU64::new(0));
    let summary = settings.summary_interval.map(|every| {
        tokio::spawn(summarise(
            done.clone(),
            queue.clone(),
            every,
            shutdown.clone(),
        ))
    });
    let slots = Slots::new(settings.concurrency, settings.sync_concurrency);
    let running: Arc<Mutex<HashMap<JobId, Delivery>>> = Arc::default();
    let mut tasks = JoinSet::new();
    let mut taken: u64 = 0;
    loop {
        if settings.max_jobs > 0 && taken >= settings.max_jobs {
            tracing::info!(jobs = taken, "max_jobs reached; finishing and exiting");
            break;
        }
        let free = tokio::select! {
            () = shutdown.cancelled() => break,
            free = slots.free() => match free {
                Some(free) => free,
                None => break,
            },
        };
        // Holding only a sync slot, the read asks the sync stream alone; a general slot freed
        // meanwhile is seen at the next read, so that read blocks only briefly (a blocking
        // XREADGROUP cannot be interrupted): with a second, a worker whose general slots were
        // busy took its next async job up to a second after one freed.
        let block = match free.has_general() {
            true => Duration::from_secs(1),
            false => SYNC_ONLY_BLOCK,
        };
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            next = consumer.next(block, free.lanes()) => next,
        };
        let delivery = match next {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "queue read failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        taken += 1;
        // Always a slot: the read took only from the lanes these slots run.
        let permit = free.take(delivery.job.priority);
        // A shard is not handed back at a drain: the job's own worker cuts whatever shard
        // nobody else finished.
        let shard = delivery.job.shard.clone();
        if shard.is_none()
            && let Ok(mut r) = running.lock()
        {
            r.insert(delivery.job.id.clone(), delivery.clone());
        }
        let done = done.clone();
        let worker = worker.clone();
        let consumer = consumer.clone();
        let running = running.clone();
        let heartbeat_every = settings.visibility_timeout / 3;
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let id = delivery.job.id.clone();
            let token = delivery.job.token.as_ref();
            let work = async {
                match &shard {
                    Some(shard) => worker.run_shard(&id, shard, token).await,
                    None => worker.run_job(&id, delivery.takeover, token).await,
                }
            };
            tokio::pin!(work);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut work => break outcome,
                    () = tokio::time::sleep(heartbeat_every) => {
                        if let Err(e) = consumer.heartbeat(&delivery).await {
                            tracing::warn!(job = %id, error = %e, "heartbeat failed");
                        }
                    }
                }
            };
            let handed_back = shard.is_none()
                && running.lock().map(|mut r| r.remove(&id).is_none()).unwrap_or(false);
            match outcome {
                Ok(outcome) => {
                    done.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(job = %id, ?outcome, "job done");
                }
                // The store could not be reached: leave the entry pending so another attempt
                // (after the visibility timeout) records the job.
                Err(e) => {
                    tracing::error!(job = %id, error = %e, "job could not be recorded; left for retry");
                    drop(permit);
                    return;
                }
            }
            if !handed_back
                && let Err(e) = consumer.ack(&delivery).await
            {
                tracing::warn!(job = %id, error = %e, "ack failed; the entry will be retried harmlessly");
            }
            drop(permit);
        });
    }
    recovery.abort();
    if let Some(summary) = summary {
        summary.abort();
    }
    drain(
        &worker,
        &uws,
        &consumer,
        &queue,
        &running,
        &mut tasks,
        settings.drain_timeout,
    )
    .await;
    watcher_stop.cancel();
    watcher.await.ok();
}

/// Lets running jobs finish until the deadline, then hands each remaining one back to the
/// queue: cancelled here, QUEUED in the store, a new entry in the stream, the old one acked.
async fn drain(
    worker: &Worker,
    uws: &Uws,
    consumer: &RedisConsumer,
    queue: &RedisQueue,
    running: &Mutex<HashMap<JobId, Delivery>>,
    tasks: &mut JoinSet<()>,
    deadline: Duration,
) {
    let count = running.lock().map(|r| r.len()).unwrap_or(0);
    tracing::info!(running = count, "draining: no new jobs taken");
    let finished = tokio::time::timeout(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if finished.is_ok() {
        return;
    }
    let left: Vec<Delivery> = running
        .lock()
        .map(|mut r| r.drain().map(|(_, d)| d).collect())
        .unwrap_or_default();
    for d in left {
        worker.cancel(&d.job.id);
        match uws.hand_back(&d.job.id).await {
            Ok(_) => {
                if let Err(e) = queue.add(&d.job, false).await {
                    tracing::error!(job = %d.job.id, error = %e, "could not hand back; the stale entry will be reclaimed");
                    continue;
                }
                tracing::info!(job = %d.job.id, "handed back to the queue");
            }
            // It finished (or was aborted) meanwhile: nothing to hand back.
            Err(UwsError::IllegalTransition { .. } | UwsError::JobNotFound(_)) => {}
            Err(e) => {
                tracing::error!(job = %d.job.id, error = %e, "could not hand back; the stale entry will be reclaimed");
                continue;
            }
        }
        consumer.ack(&d).await.ok();
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// Jobs per second between two summaries.
#[derive(Debug)]
struct Rate {
    done: u64,
    at: Instant,
}

impl Rate {
    /// The rate since the previous call (or since `new`), then remembers this point.
    fn next(&mut self, done: u64, now: Instant) -> f64 {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        let jobs = done.saturating_sub(self.done);
        self.done = done;
        self.at = now;
        if secs > 0.0 { jobs as f64 / secs } else { 0.0 }
    }
}

/// Logs one line at info every `every`: jobs done since start, rate since the previous line,
/// and the queue depth (all workers' backlog, so an operator sees whether to add workers).
async fn summarise(
    done: Arc<AtomicU64>,
    queue: RedisQueue,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut rate = Rate {
        done: 0,
        at: Instant::now(),
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let total = done.load(Ordering::Relaxed);
        let per_sec = rate.next(total, Instant::now());
        match queue.depth().await {
            Ok(depth) => tracing::info!(
                jobs_done = total,
                jobs_per_sec = format!("{per_sec:.2}"),
                queue_depth = depth,
                "worker summary"
            ),
            Err(e) => tracing::info!(
                jobs_done = total,
                jobs_per_sec = format!("{per_sec:.2}"),
                queue_depth = "unknown",
                error = %e,
                "worker summary"
            ),
        }
    }
}

/// Rebuilds the queue from the job store whenever Redis turns out to have lost its data.
async fn recover_periodically(
    uws: Uws,
    consumer: Arc<RedisConsumer>,
    queue: RedisQueue,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        recover_if_lost(&uws, &consumer, &queue).await;
        if let Err(e) = consumer.ensure_groups().await {
            tracing::debug!(error = %e, "consumer groups not ensured");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Rebuilds the queue from the job store if Redis lost its data (the epoch key is missing and
/// this process won the right to rebuild). A worker calls it once before it announces itself
/// ready, so that jobs created right after start are not queued a second time by a rebuild
/// that merely found a new deployment's key unset.
pub async fn recover_if_lost(uws: &Uws, consumer: &RedisConsumer, queue: &RedisQueue) {
    match consumer.claim_recovery().await {
        Ok(true) => match requeue_from_store(uws, queue).await {
            Ok(n) => tracing::info!(jobs = n, "queue rebuilt from the job store"),
            Err(e) => {
                tracing::warn!(error = %e, "queue rebuild failed; it is tried again at the next check");
                if let Err(e) = consumer.release_recovery().await {
                    tracing::warn!(error = %e, "recovery claim not released");
                }
            }
        },
        Ok(false) => {}
        Err(e) => tracing::debug!(error = %e, "recovery check failed"),
    }
}

/// Puts every QUEUED and EXECUTING job back in the stream. Duplicates are harmless: the store
/// refuses a second start, and a takeover of a job whose worker still lives ends with one result.
pub async fn requeue_from_store(uws: &Uws, queue: &RedisQueue) -> Result<usize, UwsError> {
    let ids = uws
        .store()
        .in_phases(
            &[ExecutionPhase::Queued, ExecutionPhase::Executing],
            1_000_000,
        )
        .await?;
    for id in &ids {
        queue
            // The owners' tokens were only in the lost entries: these jobs read image servers
            // anonymously (see docs/operator-guide.md).
            .add(
                &uws::queue::QueuedJob::new(id.clone(), uws::queue::Priority::Async),
                true,
            )
            .await?;
    }
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_rate_counts_jobs_since_the_previous_line() {
        let start = Instant::now();
        let mut rate = Rate { done: 0, at: start };
        assert_eq!(rate.next(10, start + Duration::from_secs(5)), 2.0);
        // Ten jobs in total, none since the last line.
        assert_eq!(rate.next(10, start + Duration::from_secs(10)), 0.0);
        assert_eq!(rate.next(40, start + Duration::from_secs(20)), 3.0);
    }
}
