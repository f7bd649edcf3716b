//! API boundary: phase-change events, so that `WAIT` and synchronous requests wake when a job
//! moves instead of polling the store, and progress events, so that a live stream can show how
//! far a running job has come.
//!
//! Events are hints: a missed one costs a waiter only a slow fallback re-read of the store.
//! Progress travels on a channel of its own ([`PhaseEvents::publish_progress`]), never with the
//! phase changes: a progress report leaves the job in its phase, and a `WAIT` woken by one would
//! end early, which UWS forbids; [`JobWaiters`] never subscribes to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};

use crate::job::{ExecutionPhase, JobId, Progress};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseChange {
    pub id: JobId,
    /// Whose job it is, so that a per-user event stream can filter without reading the store.
    pub owner: String,
    pub phase: ExecutionPhase,
}

/// How far a job has come, as its worker reported it and the store recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressChange {
    pub id: JobId,
    /// Whose job it is, so that a per-user event stream can filter without reading the store.
    pub owner: String,
    pub progress: Progress,
}

pub trait PhaseEvents: Send + Sync {
    /// Announces a change that is already recorded in the store.
    fn publish(&self, change: PhaseChange);

    /// Every change published after this call, in this process.
    fn subscribe(&self) -> broadcast::Receiver<PhaseChange>;

    /// Announces a job's progress that is already recorded in the store, apart from the phase
    /// changes: no subscriber of [`PhaseEvents::subscribe`] ever hears it.
    fn publish_progress(&self, change: ProgressChange);

    /// Every progress report published after this call, in this process (where it is heard at
    /// all: a distributed worker, which only needs final phases, hears none).
    fn subscribe_progress(&self) -> broadcast::Receiver<ProgressChange>;
}

/// Phase and progress events inside one process: two broadcast channels. Cloning shares them.
#[derive(Debug, Clone)]
pub struct LocalPhaseEvents {
    sender: broadcast::Sender<PhaseChange>,
    progress: broadcast::Sender<ProgressChange>,
}

impl LocalPhaseEvents {
    pub fn new() -> LocalPhaseEvents {
        let (sender, _) = broadcast::channel(4096);
        let (progress, _) = broadcast::channel(1024);
        LocalPhaseEvents { sender, progress }
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

    fn publish_progress(&self, change: ProgressChange) {
        let _ = self.progress.send(change);
    }

    fn subscribe_progress(&self) -> broadcast::Receiver<ProgressChange> {
        self.progress.subscribe()
    }
}

/// What a task waiting on one job is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The job entered this phase (the latest of its changes since the waiter last looked).
    Phase(ExecutionPhase),
    /// Events were missed, perhaps this job's: the store must be read.
    Reread,
}

type Watched = Arc<Mutex<HashMap<JobId, watch::Sender<Option<Wake>>>>>;

/// Routes phase events to the tasks waiting on each job. One task reads the process's event
/// stream and wakes only the waiters of the job that changed: with every waiter reading the
/// whole stream itself, each change woke every waiting request of the process (64 sync
/// requests waiting: 64 wake-ups, each re-arming a timer, per phase change of any job).
#[derive(Default)]
pub(crate) struct JobWaiters {
    jobs: Watched,
    dispatcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl JobWaiters {
    /// Watches `id`: every change of it published after this call reaches the watch. Must be
    /// called inside a Tokio runtime (the routing task is started on first use, and again if
    /// its runtime went away).
    pub(crate) fn watch(&self, events: &dyn PhaseEvents, id: &JobId) -> JobWatch {
        if let Ok(mut dispatcher) = self.dispatcher.lock()
            && dispatcher.as_ref().is_none_or(|d| d.is_finished())
        {
            // Subscribed here, before any watch is registered, so that no change published
            // after this call can slip past the routing task while it starts.
            let receiver = events.subscribe();
            *dispatcher = Some(tokio::spawn(dispatch(receiver, self.jobs.clone())));
        }
        let receiver = match self.jobs.lock() {
            Ok(mut jobs) => jobs
                .entry(id.clone())
                .or_insert_with(|| watch::channel(None).0)
                .subscribe(),
            // Never woken: the waiter falls back to reading the store now and then.
            Err(_) => watch::channel(None).1,
        };
        JobWatch {
            id: id.clone(),
            receiver,
            jobs: self.jobs.clone(),
        }
    }
}

async fn dispatch(mut receiver: broadcast::Receiver<PhaseChange>, jobs: Watched) {
    loop {
        let wake = match receiver.recv().await {
            Ok(change) => Some((change.id, Wake::Phase(change.phase))),
            Err(broadcast::error::RecvError::Lagged(_)) => None,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Ok(jobs) = jobs.lock() else { return };
        match wake {
            Some((id, wake)) => {
                if let Some(sender) = jobs.get(&id) {
                    sender.send_replace(Some(wake));
                }
            }
            None => {
                for sender in jobs.values() {
                    sender.send_replace(Some(Wake::Reread));
                }
            }
        }
    }
}

/// One waiter's view of one job's changes; unregistered on drop.
pub(crate) struct JobWatch {
    id: JobId,
    receiver: watch::Receiver<Option<Wake>>,
    jobs: Watched,
}

impl JobWatch {
    /// The next change of the job; None when no change can come any more (the routing task
    /// ended), which leaves the waiter to read the store.
    pub(crate) async fn changed(&mut self) -> Option<Wake> {
        self.receiver.changed().await.ok()?;
        *self.receiver.borrow_and_update()
    }
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.jobs.lock()
            && jobs
                .get(&self.id)
                .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            // The last waiter on this job (its own receiver is dropped right after this).
            jobs.remove(&self.id);
        }
    }
}
