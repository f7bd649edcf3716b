//! API boundary: how a dependency tells VOSI availability whether it works.
//!
//! The service is available only when every component it needs answers: the job store, the
//! queue, the result bucket, and whatever a deployment adds (Redis, a remote job store). Each
//! component implements [`HealthCheck`] in the crate that owns it; the binary hands the list to
//! the frontend, so a new dependency is one more entry, not a change to the availability route.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::UwsError;
use crate::queue::JobQueue;

/// A cheap probe of one dependency, run on every availability request.
#[async_trait]
pub trait HealthCheck: Send + Sync {
    /// What the component is called in availability notes, e.g. `job store`.
    fn component(&self) -> &str;

    /// `Ok` with a short status (e.g. `3 jobs queued`) when the component works, or the error
    /// that shows it does not.
    async fn check(&self) -> Result<String, UwsError>;
}

/// The queue answers when it can say how many jobs wait in it.
pub struct QueueHealth(pub Arc<dyn JobQueue>);

#[async_trait]
impl HealthCheck for QueueHealth {
    fn component(&self) -> &str {
        "job queue"
    }

    async fn check(&self) -> Result<String, UwsError> {
        let depth = self.0.depth().await?;
        Ok(format!("{depth} jobs queued"))
    }
}
