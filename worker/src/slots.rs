//! Worker slots: how many jobs a worker runs at once, with synchronous requests' jobs apart.
//!
//! A synchronous request's job is one small cutout whose client holds a connection open, and
//! most of its time in a slot is spent waiting (on the job store, for a blocking thread), not
//! cutting: with the async slots alone (two per core) a loaded service left a third of its CPU
//! idle while sync requests queued for a slot. So sync jobs have slots of their own
//! (`sync_concurrency`), and may also take an idle general slot; async and bulk jobs, which may
//! be large and long, take only the general slots (`concurrency`). An async flood therefore
//! never holds up a waiting client, and sync jobs never crowd out more than their own slots.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uws::queue::Priority;

/// The two kinds of slot of one worker. Cloning shares them.
#[derive(Clone, Debug)]
pub struct Slots {
    general: Arc<Semaphore>,
    sync: Arc<Semaphore>,
    general_count: usize,
    sync_count: usize,
}

/// The slots free when a worker looked: at least one of the two.
#[derive(Debug)]
pub struct FreeSlots {
    general: Option<OwnedSemaphorePermit>,
    sync: Option<OwnedSemaphorePermit>,
}

impl Slots {
    /// `concurrency` general slots (at least one) and `sync_concurrency` sync-only ones.
    pub fn new(concurrency: usize, sync_concurrency: usize) -> Slots {
        let general_count = concurrency.max(1);
        Slots {
            general: Arc::new(Semaphore::new(general_count)),
            sync: Arc::new(Semaphore::new(sync_concurrency)),
            general_count,
            sync_count: sync_concurrency,
        }
    }

    /// The most jobs that can run at once, in slots of both kinds.
    pub fn total(&self) -> usize {
        self.general_count + self.sync_count
    }

    /// Waits until a slot of either kind is free and holds every free one of the two kinds;
    /// `None` once the slots are closed.
    pub async fn free(&self) -> Option<FreeSlots> {
        loop {
            let general = self.general.clone().try_acquire_owned().ok();
            let sync = self.sync.clone().try_acquire_owned().ok();
            if general.is_some() || sync.is_some() {
                return Some(FreeSlots { general, sync });
            }
            // Neither is free: wait for one to be, then take what is free then (the permit
            // waited for is given back at once, so no slot is held twice).
            let freed = tokio::select! {
                permit = self.general.acquire() => permit.is_ok(),
                permit = self.sync.acquire() => permit.is_ok(),
            };
            if !freed {
                return None;
            }
        }
    }

    /// Waits until a general slot is free (it is given back at once): for a worker that holds
    /// only a sync slot and waits for a sync job, the moment to look at every lane again.
    pub async fn general_freed(&self) {
        let _ = self.general.acquire().await;
    }

    /// Waits until every slot is free: every job run in one has ended.
    pub async fn all_free(&self) {
        let general = u32::try_from(self.general_count).unwrap_or(u32::MAX);
        let sync = u32::try_from(self.sync_count).unwrap_or(u32::MAX);
        let _ = self.general.acquire_many(general).await;
        let _ = self.sync.acquire_many(sync).await;
    }
}

impl FreeSlots {
    /// The lanes a job may be taken from with these slots: the sync lane always (either kind of
    /// slot runs a sync job), the others only with a general slot.
    pub fn lanes(&self) -> &'static [Priority] {
        match self.general {
            Some(_) => &Priority::ALL,
            None => &[Priority::Sync],
        }
    }

    /// True when these slots hold a general one, so every lane may be taken from.
    pub fn has_general(&self) -> bool {
        self.general.is_some()
    }

    /// The slot a job of `lane` runs in: a sync job its own kind when there is one free (the
    /// general slot then stays free for an async job), every other job a general slot. The
    /// other slot is given back. `None` for a lane these slots may not run (see
    /// [`FreeSlots::lanes`]).
    pub fn take(self, lane: Priority) -> Option<OwnedSemaphorePermit> {
        match lane {
            Priority::Sync => self.sync.or(self.general),
            Priority::Async | Priority::Bulk => self.general,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn soon<F: std::future::Future>(future: F) -> Option<F::Output> {
        tokio::time::timeout(Duration::from_millis(200), future)
            .await
            .ok()
    }

    #[tokio::test]
    async fn sync_jobs_take_their_own_slots_before_a_general_one() {
        let slots = Slots::new(1, 2);
        let free = slots.free().await.expect("free");
        assert_eq!(free.lanes(), &Priority::ALL);
        let first = free.take(Priority::Sync).expect("a slot");
        // The general slot was given back, so an async job still finds it.
        let free = slots.free().await.expect("free");
        assert!(free.has_general());
        let second = free.take(Priority::Sync).expect("a slot");
        let free = slots.free().await.expect("free");
        let third = free.take(Priority::Sync).expect("the general slot");
        assert!(
            soon(slots.free()).await.is_none(),
            "three slots, three jobs"
        );
        drop((first, second, third));
        assert_eq!(slots.total(), 3);
    }

    #[tokio::test]
    async fn a_worker_with_every_slot_taken_gets_the_next_one_freed() {
        let slots = Slots::new(1, 1);
        let sync_job = slots.free().await.expect("free").take(Priority::Sync);
        let async_job = slots.free().await.expect("free").take(Priority::Async);
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.free().await.map(|free| free.lanes().to_vec()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "every slot is taken");
        drop(sync_job);
        let lanes = soon(waiting).await.expect("woken").expect("task");
        assert_eq!(lanes.as_deref(), Some(&[Priority::Sync][..]));
        drop(async_job);
    }

    #[tokio::test]
    async fn with_no_sync_slots_all_free_waits_for_the_general_ones_alone() {
        let slots = Slots::new(1, 0);
        assert!(soon(slots.all_free()).await.is_some());
    }

    #[tokio::test]
    async fn async_and_bulk_jobs_take_only_general_slots() {
        let slots = Slots::new(1, 4);
        let async_job = slots
            .free()
            .await
            .expect("free")
            .take(Priority::Async)
            .expect("the general slot");
        let free = slots.free().await.expect("a sync slot is free");
        assert_eq!(free.lanes(), &[Priority::Sync]);
        assert!(!free.has_general());
        assert!(free.take(Priority::Bulk).is_none());
        drop(async_job);
        let free = slots.free().await.expect("free");
        assert!(free.take(Priority::Bulk).is_some());
    }

    #[tokio::test]
    async fn a_worker_waiting_with_a_sync_slot_hears_when_a_general_one_frees() {
        let slots = Slots::new(1, 1);
        let running = slots
            .free()
            .await
            .expect("free")
            .take(Priority::Async)
            .expect("the general slot");
        assert!(soon(slots.general_freed()).await.is_none());
        drop(running);
        assert!(soon(slots.general_freed()).await.is_some());
    }

    #[tokio::test]
    async fn all_free_waits_for_every_running_job() {
        let slots = Slots::new(1, 1);
        let sync_job = slots
            .free()
            .await
            .expect("free")
            .take(Priority::Sync)
            .expect("the sync slot");
        assert!(soon(slots.all_free()).await.is_none());
        drop(sync_job);
        assert!(soon(slots.all_free()).await.is_some());
    }

    #[tokio::test]
    async fn with_no_sync_slots_sync_jobs_share_the_general_ones() {
        let slots = Slots::new(2, 0);
        let one = slots
            .free()
            .await
            .expect("free")
            .take(Priority::Sync)
            .expect("a general slot");
        let two = slots
            .free()
            .await
            .expect("free")
            .take(Priority::Sync)
            .expect("a general slot");
        assert!(soon(slots.free()).await.is_none());
        drop((one, two));
        assert_eq!(slots.total(), 2);
    }
}
