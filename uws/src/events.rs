//! API boundary: phase-change events, so that `WAIT` and synchronous requests wake when a job
//! moves instead of polling the store.
//!
//! Events are hints: a missed one costs a waiter only a slow fallback re-read of the store.

use tokio::sync::broadcast;

use crate::job::{ExecutionPhase, JobId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseChange {
    pub id: JobId,
    /// Whose job it is, so that a per-user event stream can filter without reading the store.
    pub owner: String,
    pub phase: ExecutionPhase,
}

pub trait PhaseEvents: Send + Sync {
    /// Announces a change that is already recorded in the store.
    fn publish(&self, change: PhaseChange);

    /// Every change published after this call, in this process.
    fn subscribe(&self) -> broadcast::Receiver<PhaseChange>;
}

/// Phase events inside one process: a broadcast channel. Cloning shares the channel.
#[derive(Debug, Clone)]
pub struct LocalPhaseEvents {
    sender: broadcast::Sender<PhaseChange>,
}

impl LocalPhaseEvents {
    pub fn new() -> LocalPhaseEvents {
        let (sender, _) = broadcast::channel(4096);
        LocalPhaseEvents { sender }
    }
}

impl Default for LocalPhaseEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl PhaseEvents for LocalPhaseEvents {
    fn publish(&self, change: PhaseChange) {
        // No subscriber is not an error: nobody is waiting.
        let _ = self.sender.send(change);
    }

    fn subscribe(&self) -> broadcast::Receiver<PhaseChange> {
        self.sender.subscribe()
    }
}
