//! The in-process queue of `skycut serve`, and the loop that runs its jobs.
//!
//! Two channels give synchronous requests priority: a worker slot always takes a waiting sync job
//! before an async one. Concurrency is a semaphore of worker slots; each job runs in its own task.

use std::sync::Arc;

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
}

/// The receiving side, owned by [`run_local`].
pub struct LocalQueueReceiver {
    sync: mpsc::UnboundedReceiver<JobId>,
    async_: mpsc::UnboundedReceiver<JobId>,
    depth: Arc<std::sync::atomic::AtomicU64>,
}

impl LocalQueue {
    pub fn new() -> (LocalQueue, LocalQueueReceiver) {
        let (sync_tx, sync_rx) = mpsc::unbounded_channel();
        let (async_tx, async_rx) = mpsc::unbounded_channel();
        let depth = Arc::new(std::sync::atomic::AtomicU64::new(0));
        (
            LocalQueue {
                sync: sync_tx,
                async_: async_tx,
                depth: depth.clone(),
            },
            LocalQueueReceiver {
                sync: sync_rx,
                async_: async_rx,
                depth,
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
        channel
            .send(job.id)
            .map_err(|_| UwsError::Queue("the worker has stopped".into()))?;
        self.depth
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn depth(&self) -> Result<u64, UwsError> {
        Ok(self.depth.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl LocalQueueReceiver {
    /// The next job, sync ones first; None when every sender is gone.
    async fn next(&mut self) -> Option<JobId> {
        let id = tokio::select! {
            biased;
            Some(id) = self.sync.recv() => Some(id),
            Some(id) = self.async_.recv() => Some(id),
            else => None,
        };
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
