//! API boundary: the job queue between whoever runs `PHASE=RUN` and the workers.

use async_trait::async_trait;

use crate::error::UwsError;
use crate::job::JobId;

/// Which lane a job waits in. A worker takes the first waiting job of the first non-empty lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// A client waits on an open connection.
    Sync,
    /// An async job of an owner with few jobs waiting.
    Async,
    /// An async job of an owner who already has many jobs waiting ([`JobLimits::fair_share_queued`]
    /// or more): served only when no other owner's job waits, so one user's flood cannot starve
    /// the rest.
    ///
    /// [`JobLimits::fair_share_queued`]: crate::service::JobLimits::fair_share_queued
    Bulk,
}

impl Priority {
    /// Every lane, in the order workers take from them.
    pub const ALL: [Priority; 3] = [Priority::Sync, Priority::Async, Priority::Bulk];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Sync => "sync",
            Priority::Async => "async",
            Priority::Bulk => "bulk",
        }
    }
}

/// The caller's own credential, handed on to the worker so that it can read source images the
/// user may read (an image server that checks the user's token). It is a secret: it is never
/// formatted (its `Debug` is redacted and it has no `Display`), never stored with the job, and
/// dropped with the queue message when the job ends.
#[derive(Clone, PartialEq, Eq)]
pub struct DelegatedToken(String);

impl DelegatedToken {
    pub fn new(token: impl Into<String>) -> DelegatedToken {
        DelegatedToken(token.into())
    }

    /// The token itself, for the one place that sends it on.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DelegatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DelegatedToken([redacted])")
    }
}

/// The message a queue carries: the job's identity, its lane, the owner's delegated token if
/// there is one, and for a shard of a bulk job, which one. Everything else is read from the job
/// store, which is the truth, so a message replayed after a crash is harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    pub id: JobId,
    pub priority: Priority,
    pub token: Option<DelegatedToken>,
    /// A shard of the job that any worker may cut while the job's own worker runs it (the
    /// shard's name, as that worker chose it); `None` for the job itself.
    pub shard: Option<String>,
}

impl QueuedJob {
    pub fn new(id: JobId, priority: Priority) -> QueuedJob {
        QueuedJob {
            id,
            priority,
            token: None,
            shard: None,
        }
    }
}

#[async_trait]
pub trait JobQueue: Send + Sync {
    async fn enqueue(&self, job: QueuedJob) -> Result<(), UwsError>;

    /// Number of jobs waiting (for availability and throttling).
    async fn depth(&self) -> Result<u64, UwsError>;

    /// How long the oldest job counted by [`JobQueue::depth`] has been in the queue; `None` when
    /// the queue is empty. Operators alert on it: a growing age means workers fall behind.
    async fn oldest_age(&self) -> Result<Option<std::time::Duration>, UwsError>;

    /// How many worker processes take jobs from this queue now, when the queue can tell (a
    /// shared queue whose consumers it sees); `None` when it cannot, as for the in-process
    /// queue of one process. The quote of a bulk job divides its run among them.
    async fn workers(&self) -> Result<Option<u64>, UwsError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delegated_token_never_shows_in_debug_output() {
        let job = QueuedJob {
            id: JobId::random(),
            priority: Priority::Async,
            token: Some(DelegatedToken::new("gt-secret-value")),
            shard: None,
        };
        let shown = format!("{job:?}");
        assert!(!shown.contains("gt-secret-value"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }
}
