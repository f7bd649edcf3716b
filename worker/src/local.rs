//! The in-process queue of `skycut serve`, and the loop that runs its jobs.
//!
//! One channel per lane ([`Priority`]): a worker slot always takes a waiting sync job first, then
//! an async one, then a bulk one (fair share). Concurrency is the worker's [`Slots`] (sync jobs
//! have slots of their own beside the general ones); each job runs in its own task.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uws::UwsError;
use uws::events::PhaseEvents;
use uws::queue::{JobQueue, Priority, QueuedJob};

use crate::runner::Worker;
use crate::slots::Slots;

/// One lane's channel ends, indexed like [`Priority::ALL`].
fn lane(priority: Priority) -> usize {
    match priority {
        Priority::Sync => 0,
        Priority::Async => 1,
        Priority::Bulk => 2,
    }
}

/// The sending side; cloning shares the channels.
#[derive(Clone)]
pub struct LocalQueue {
    lanes: [mpsc::UnboundedSender<QueuedJob>; 3],
    depth: Arc<std::sync::atomic::AtomicU64>,
    waiting: Arc<Waiting>,
}

/// The receiving side, owned by [`run_local`].
pub struct LocalQueueReceiver {
    lanes: [mpsc::UnboundedReceiver<QueuedJob>; 3],
    depth: Arc<std::sync::atomic::AtomicU64>,
    waiting: Arc<Waiting>,
}

/// When each waiting job was enqueued, per lane. Channels are FIFO, so the front of each list
/// belongs to the job its channel hands out next, and the oldest waiting job is the oldest front.
#[derive(Default)]
struct Waiting {
    lanes: [Mutex<VecDeque<Instant>>; 3],
}

impl Waiting {
    fn list(&self, priority: Priority) -> &Mutex<VecDeque<Instant>> {
        &self.lanes[lane(priority)]
    }

    fn oldest(&self) -> Option<Instant> {
        self.lanes
            .iter()
            .filter_map(|list| list.lock().ok()?.front().copied())
            .min()
    }
}

impl LocalQueue {
    pub fn new() -> (LocalQueue, LocalQueueReceiver) {
        let (sync_tx, sync_rx) = mpsc::unbounded_channel();
        let (async_tx, async_rx) = mpsc::unbounded_channel();
        let (bulk_tx, bulk_rx) = mpsc::unbounded_channel();
        let depth = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let waiting = Arc::new(Waiting::default());
        (
            LocalQueue {
                lanes: [sync_tx, async_tx, bulk_tx],
                depth: depth.clone(),
                waiting: waiting.clone(),
            },
            LocalQueueReceiver {
                lanes: [sync_rx, async_rx, bulk_rx],
                depth,
                waiting,
            },
        )
    }
}

#[async_trait]
impl JobQueue for LocalQueue {
    async fn enqueue(&self, job: QueuedJob) -> Result<(), UwsError> {
        let priority = job.priority;
        let channel = &self.lanes[lane(priority)];
        // Recorded before the send, so the receiver never pops an instant that is not there yet.
        let list = self.waiting.list(priority);
        if let Ok(mut list) = list.lock() {
            list.push_back(Instant::now());
        }
        if channel.send(job).is_err() {
            if let Ok(mut list) = list.lock() {
                list.pop_back();
            }
            return Err(UwsError::Queue("the worker has stopped".into()));
        }
        self.depth
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn depth(&self) -> Result<u64, UwsError> {
        Ok(self.depth.load(std::sync::atomic::Ordering::Relaxed))
    }

    async fn oldest_age(&self) -> Result<Option<Duration>, UwsError> {
        Ok(self.waiting.oldest().map(|at| at.elapsed()))
    }
}

impl LocalQueueReceiver {
    /// The next job of `lanes`, from the first lane that has one; None when every sender is
    /// gone. Cancel-safe: a job is taken only when this returns it.
    async fn next(&mut self, lanes: &[Priority]) -> Option<QueuedJob> {
        let [sync, async_, bulk] = &mut self.lanes;
        let wants = |lane: Priority| lanes.contains(&lane);
        let job = tokio::select! {
            biased;
            Some(job) = sync.recv(), if wants(Priority::Sync) => job,
            Some(job) = async_.recv(), if wants(Priority::Async) => job,
            Some(job) = bulk.recv(), if wants(Priority::Bulk) => job,
            else => return None,
        };
        if let Ok(mut list) = self.waiting.list(job.priority).lock() {
            list.pop_front();
        }
        self.depth
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        Some(job)
    }
}

/// Runs jobs from the local queue, as many at once as `slots` allow, until `shutdown` is
/// cancelled; then waits for the running jobs to finish.
pub async fn run_local(
    worker: Worker,
    mut queue: LocalQueueReceiver,
    events: Arc<dyn PhaseEvents>,
    slots: Slots,
    shutdown: CancellationToken,
) {
    let watcher = tokio::spawn(watch_aborts(worker.clone(), events, shutdown.clone()));
    loop {
        let free = tokio::select! {
            () = shutdown.cancelled() => None,
            free = slots.free() => free,
        };
        let Some(free) = free else { break };
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            job = queue.next(free.lanes()) => job,
            // Holding only a sync slot, a freed general slot is the moment to look at every
            // lane again (an async job may be waiting).
            () = slots.general_freed(), if !free.has_general() => continue,
        };
        let Some(job) = next else { break };
        // Always a slot: `next` takes only from the lanes these slots run.
        let permit = free.take(job.priority);
        let worker = worker.clone();
        tokio::spawn(async move {
            let id = job.id;
            // The token lives in this task only, and is dropped with it when the job ends.
            let outcome = match &job.shard {
                Some(shard) => worker.run_shard(&id, shard, job.token.as_ref()).await,
                None => worker.run_job(&id, false, job.token.as_ref()).await,
            };
            match outcome {
                Ok(outcome) => tracing::debug!(job = %id, ?outcome, "job done"),
                Err(e) => tracing::error!(job = %id, error = %e, "job could not be recorded"),
            }
            drop(permit);
        });
    }
    // Drain: every slot back means every running job is done.
    slots.all_free().await;
    watcher.abort();
}

/// Cancels a running job as soon as its phase event says it was aborted or deleted.
pub(crate) async fn watch_aborts(
    worker: Worker,
    events: Arc<dyn PhaseEvents>,
    shutdown: CancellationToken,
) {
    let mut rx = events.subscribe();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            change = rx.recv() => match change {
                Ok(change) if change.phase.is_final() => {
                    worker.cancel(&change.id);
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uws::JobId;

    fn job(n: u8, priority: Priority) -> QueuedJob {
        QueuedJob::new(JobId::parse(&format!("{n:032x}")).expect("id"), priority)
    }

    #[tokio::test]
    async fn oldest_age_follows_the_longest_waiting_job_whatever_its_priority() {
        let (queue, mut receiver) = LocalQueue::new();
        assert_eq!(queue.oldest_age().await.expect("age"), None);
        queue
            .enqueue(job(1, Priority::Async))
            .await
            .expect("enqueue");
        let first = queue.oldest_age().await.expect("age").expect("waiting");
        queue
            .enqueue(job(2, Priority::Sync))
            .await
            .expect("enqueue");
        // The sync job is taken first; the async one is still the oldest waiting.
        assert_eq!(
            receiver.next(&Priority::ALL).await,
            Some(job(2, Priority::Sync))
        );
        let age = queue.oldest_age().await.expect("age").expect("waiting");
        assert!(age >= first, "{age:?} < {first:?}");
        assert_eq!(
            receiver.next(&Priority::ALL).await,
            Some(job(1, Priority::Async))
        );
        assert_eq!(queue.oldest_age().await.expect("age"), None);
    }

    #[tokio::test]
    async fn lanes_are_served_sync_then_async_then_bulk_each_in_order() {
        let (queue, mut receiver) = LocalQueue::new();
        let sent = [
            job(1, Priority::Bulk),
            job(2, Priority::Async),
            job(3, Priority::Bulk),
            job(4, Priority::Sync),
            job(5, Priority::Async),
        ];
        for j in &sent {
            queue.enqueue(j.clone()).await.expect("enqueue");
        }
        assert_eq!(queue.depth().await.expect("depth"), 5);
        let mut taken = Vec::new();
        for _ in 0..sent.len() {
            taken.push(receiver.next(&Priority::ALL).await.expect("job").id);
        }
        let order: Vec<JobId> = [4, 2, 5, 1, 3]
            .into_iter()
            .map(|n| job(n, Priority::Sync).id)
            .collect();
        assert_eq!(taken, order);
        assert_eq!(queue.depth().await.expect("depth"), 0);
    }
}
