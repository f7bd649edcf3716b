//! API boundary: the job queue between whoever runs `PHASE=RUN` and the workers.

use async_trait::async_trait;

use crate::error::UwsError;
use crate::job::JobId;

/// Synchronous requests have a client waiting on an open connection, so they go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    Sync,
    Async,
}

/// The message a queue carries: only the job's identity and priority. Everything else is read
/// from the job store, which is the truth, so a message replayed after a crash is harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    pub id: JobId,
    pub priority: Priority,
}

#[async_trait]
pub trait JobQueue: Send + Sync {
    async fn enqueue(&self, job: QueuedJob) -> Result<(), UwsError>;

    /// Number of jobs waiting (for availability and throttling).
    async fn depth(&self) -> Result<u64, UwsError>;

    /// How long the oldest job counted by [`JobQueue::depth`] has been in the queue; `None` when
    /// the queue is empty. Operators alert on it: a growing age means workers fall behind.
    async fn oldest_age(&self) -> Result<Option<std::time::Duration>, UwsError>;
}
