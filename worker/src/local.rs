//! The in-process queue of `skycut serve`, and the loop that runs its jobs.
//!
//! Two channels give synchronous requests priority: a worker slot always takes a waiting sync job
//! before an async one. Concurrency is a semaphore of worker slots; each job runs in its own task.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uws::events::PhaseEvents;
use uws::queue::{JobQueue, Priority, QueuedJob};
use uws::{JobId, UwsError};

use crate::runner::Worker;

/// The sending side; cloning shares the channels.
#[derive(Clone)]
pub struct LocalQueue {
    sync: mpsc::UnboundedSender<JobId>,
    async_: mpsc::UnboundedSender<JobId>,
    depth: Arc<std::sync::atomic::AtomicU64>,
    waiting: Arc<Waiting>,
}

/// The receiving side, owned by [`run_local`].
pub struct LocalQueueReceiver {
    sync: mpsc::UnboundedReceiver<JobId>,
    async_: mpsc::UnboundedReceiver<JobId>,
    depth: Arc<std::sync::atomic::AtomicU64>,
    waiting: Arc<Waiting>,
}

/// When each waiting job was enqueued, per channel. Channels are FIFO, so the front of each list
/// belongs to the job its channel hands out next, and the oldest waiting job is the older front.
#[derive(Default)]
struct Waiting {
    sync: Mutex<VecDeque<Instant>>,
    async_: Mutex<VecDeque<Instant>>,
}

impl Waiting {
    fn list(&self, priority: Priority) -> &Mutex<VecDeque<Instant>> {
        match priority {
            Priority::Sync => &self.sync,
            Priority::Async => &self.async_,
        }
    }

    fn oldest(&self) -> Option<Instant> {
        let front = |list: &Mutex<VecDeque<Instant>>| list.lock().ok()?.front().copied();
        match (front(&self.sync), front(&self.async_)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl LocalQueue {
    pub fn new() -> (LocalQueue, LocalQueueReceiver) {
        let (sync_tx, sync_rx) = mpsc::unbounded_channel();
        let (async_tx, async_rx) = mpsc::unbounded_channel();
        let depth = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let waiting = Arc::new(Waiting::default());
        (
            LocalQueue {
                sync: sync_tx,
                async_: async_tx,
                depth: depth.clone(),
                waiting: waiting.clone(),
            },
            LocalQueueReceiver {
                sync: sync_rx,
                async_: async_rx,
                depth,
                waiting,
            },
        )
    }
}

#[async_trait]
impl JobQueue for LocalQueue {
    async fn enqueue(&self, job: QueuedJob) -> Result<(), UwsError> {
        let channel = match job.priority {
            Priority::Sync => &self.sync,
            Priority::Async => &self.async_,
        };
        // Recorded before the send, so the receiver never pops an instant that is not there yet.
        let list = self.waiting.list(job.priority);
        if let Ok(mut list) = list.lock() {
            list.push_back(Instant::now());
        }
        if channel.send(job.id).is_err() {
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
    /// The next job, sync ones first; None when every sender is gone.
    async fn next(&mut self) -> Option<JobId> {
        let id = tokio::select! {
            biased;
            Some(id) = self.sync.recv() => Some((id, Priority::Sync)),
            Some(id) = self.async_.recv() => Some((id, Priority::Async)),
            else => None,
        };
        let id = id.map(|(id, priority)| {
            if let Ok(mut list) = self.waiting.list(priority).lock() {
                list.pop_front();
            }
            id
        });
        if id.is_some() {
            self.depth
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        id
    }
}

/// Runs jobs from the local queue, `concurrency` at a time, until `shutdown` is cancelled; then
/// waits for the running jobs to finish.
pub async fn run_local(
    worker: Worker,
    mut queue: LocalQueueReceiver,
    events: Arc<dyn PhaseEvents>,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let watcher = tokio::spawn(watch_aborts(worker.clone(), events, shutdown.clone()));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let next = tokio::select! {
            () = shutdown.cancelled() => None,
            id = queue.next() => id,
        };
        let Some(id) = next else { break };
        let worker = worker.clone();
        tokio::spawn(async move {
            match worker.run_job(&id, false).await {
                Ok(outcome) => tracing::debug!(job = %id, ?outcome, "job done"),
                Err(e) => tracing::error!(job = %id, error = %e, "job could not be recorded"),
            }
            drop(permit);
        });
    }
    // Drain: every slot back means every running job is done.
    let _ = slots
        .acquire_many(u32::try_from(concurrency.max(1)).unwrap_or(1))
        .await;
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

    fn job(n: u8, priority: Priority) -> QueuedJob {
        QueuedJob {
            id: JobId::parse(&format!("{n:032x}")).expect("id"),
            priority,
        }
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
        assert_eq!(receiver.next().await, Some(job(2, Priority::Sync).id));
        let age = queue.oldest_age().await.expect("age").expect("waiting");
        assert!(age >= first, "{age:?} < {first:?}");
        assert_eq!(receiver.next().await, Some(job(1, Priority::Async).id));
        assert_eq!(queue.oldest_age().await.expect("age"), None);
    }
}
