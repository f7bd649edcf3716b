//! One job, from QUEUED to COMPLETED, ERROR or ABORTED.
//!
//! The job store is the truth: the worker moves a job to EXECUTING only if the store agrees it is
//! QUEUED, and a result counts only if the store accepts COMPLETED afterwards. A job aborted or
//! deleted while it runs is cancelled at once (its cutout thread finishes in the background and
//! its objects are removed).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use soda::repository::Repositories;
use tokio_util::sync::CancellationToken;
use uws::queue::DelegatedToken;
use uws::service::Uws;
use uws::store::Transition;
use uws::{ErrorCode, ExecutionPhase, JobError, JobId, JobResult, UwsError};

/// What a worker needs to know beyond its collaborators.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Where cutouts are written before they are stored.
    pub scratch_dir: PathBuf,
    /// Recorded in every result's provenance.
    pub software: String,
    /// Most bytes of one result file of a bulk job's stamps; more stamps go to further,
    /// numbered parts, each a valid file on its own.
    pub part_bytes: u64,
    /// How a bulk job's plan is split into shards that any worker may cut.
    pub shards: crate::shards::ShardLimits,
    /// Most pixels a side of a bulk job's `RADIUS` stamp (`[jobs] max_stamp_size`); a wider
    /// one is an error of its row, refused before its pixels are read.
    pub max_stamp_side: Option<usize>,
    /// The most jobs this worker runs at once, in slots of both kinds
    /// ([`crate::Slots::total`]): a sync result cut into memory may take at most this share of
    /// the result store's memory, so that cuts running together never hold more than it.
    pub jobs_at_once: usize,
}

/// How long after an abort a store call cut short may still finish its object.
const LATE_OBJECT_GRACE: Duration = Duration::from_secs(5);

/// The result keys one attempt at a job has begun to store, recorded before each store call so
/// that an attempt that does not complete can remove them, even when its future is dropped
/// half-way. Cloning shares the list.
#[derive(Clone, Default)]
pub(crate) struct StoredKeys(Arc<Mutex<Vec<String>>>);

impl StoredKeys {
    pub(crate) fn record(&self, key: &str) {
        if let Ok(mut keys) = self.0.lock() {
            keys.push(key.to_owned());
        }
    }

    fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut keys| std::mem::take(&mut *keys))
            .unwrap_or_default()
    }
}

/// What happened to one job, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
    Aborted,
    /// The job was not QUEUED (a duplicate or late message, or a deleted job): nothing done.
    Skipped,
}

/// A cutout worker. Cloning is cheap: everything is behind `Arc`s.
#[derive(Clone)]
pub struct Worker {
    uws: Uws,
    repositories: Arc<Repositories>,
    /// Where images from bucket repositories are kept; None when every repository is local.
    source_cache: Option<Arc<bucket::SourceCache>>,
    settings: Arc<WorkerSettings>,
    /// What runs here of each job (the job itself and shards of it), with one token that
    /// cancels them all.
    running: Arc<Mutex<HashMap<JobId, (CancellationToken, usize)>>>,
}

impl Worker {
    pub fn new(uws: Uws, repositories: Arc<Repositories>, settings: WorkerSettings) -> Worker {
        Worker {
            uws,
            repositories,
            source_cache: None,
            settings: Arc::new(settings),
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Reads images of bucket repositories through `cache`.
    pub fn with_source_cache(mut self, cache: Arc<bucket::SourceCache>) -> Worker {
        self.source_cache = Some(cache);
        self
    }

    /// Cancels a running job (its phase has already been set by whoever aborted or deleted it).
    pub fn cancel(&self, id: &JobId) {
        if let Some(token) = self
            .running
            .lock()
            .ok()
            .and_then(|running| running.get(id).map(|(token, _)| token.clone()))
        {
            token.cancel();
        }
    }

    /// Records a running job (or a shard of one) so that an abort can reach it.
    fn register(&self, id: &JobId) -> CancellationToken {
        match self.running.lock() {
            Ok(mut running) => {
                let (token, count) = running
                    .entry(id.clone())
                    .or_insert_with(|| (CancellationToken::new(), 0));
                *count += 1;
                token.clone()
            }
            Err(_) => CancellationToken::new(),
        }
    }

    fn unregister(&self, id: &JobId) {
        if let Ok(mut running) = self.running.lock()
            && let Some((_, count)) = running.get_mut(id)
        {
            *count -= 1;
            if *count == 0 {
                running.remove(id);
            }
        }
    }

    /// Runs one job to a final phase. With `takeover`, a job the store says is EXECUTING is
    /// taken over (its worker died, or Redis lost its entry): handed back to QUEUED, then run.
    /// `token` is the owner's delegated credential, used only to read source images.
    /// Every log line of the job carries its `job_id`, and its `user` once the job is read.
    #[tracing::instrument(name = "job", skip_all, fields(job_id = %id, user = tracing::field::Empty))]
    pub async fn run_job(
        &self,
        id: &JobId,
        takeover: bool,
        token: Option<&DelegatedToken>,
    ) -> Result<Outcome, UwsError> {
        if takeover {
            match self.uws.store().get(id).await? {
                Some(job) if job.phase == ExecutionPhase::Executing => {
                    match self.uws.hand_back(id).await {
                        Ok(_) | Err(UwsError::IllegalTransition { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                _ => {}
            }
        }
        let job = match self.uws.begin(id).await {
            Ok(job) => job,
            Err(UwsError::IllegalTransition { .. } | UwsError::JobNotFound(_)) => {
                return Ok(Outcome::Skipped);
            }
            Err(e) => return Err(e),
        };
        tracing::Span::current().record("user", job.owner.as_str());
        tracing::debug!("job started");
        let cancelled = self.register(id);
        let stored = StoredKeys::default();
        let work = self.cut_all(&job, token, &stored);
        let limit = match job.execution_duration {
            0 => Duration::MAX,
            s => Duration::from_secs(u64::from(s)),
        };
        let outcome = tokio::select! {
            result = tokio::time::timeout(limit, work) => match result {
                Ok(Ok(results)) => self.complete(id, results).await,
                Ok(Err(error)) => self.fail(id, error).await,
                Err(_elapsed) => {
                    self.fail(id, JobError::new(
                        ErrorCode::Internal,
                        format!("the job exceeded its execution duration of {} s", job.execution_duration),
                    )).await
                }
            },
            () = cancelled.cancelled() => Ok(Outcome::Aborted),
        };
        self.unregister(id);
        if matches!(outcome, Ok(Outcome::Failed | Outcome::Aborted)) {
            // Whatever this attempt stored belongs to no result list: a failure after some
            // results were stored, an abort or a deletion half-way, a timeout. (After a store
            // error nobody knows whether COMPLETED was recorded: the objects stay.)
            self.remove_stored(stored.take());
        }
        outcome
    }

    /// Cuts one shard of a bulk job that another worker runs (see `stamps`), if the job still
    /// runs and nobody has cut the shard yet. Whatever happens, the job is the other worker's:
    /// this never changes its phase. A shard cut here after the job ended is removed.
    #[tracing::instrument(name = "shard", skip_all, fields(job_id = %id, shard = %shard))]
    pub async fn run_shard(
        &self,
        id: &JobId,
        shard: &str,
        token: Option<&DelegatedToken>,
    ) -> Result<Outcome, UwsError> {
        let Some(job) = self.uws.store().get(id).await? else {
            return Ok(Outcome::Skipped);
        };
        if job.phase != ExecutionPhase::Executing {
            return Ok(Outcome::Skipped);
        }
        let cancelled = self.register(id);
        let stored = StoredKeys::default();
        let sources = crate::sources::JobSources {
            repositories: &self.repositories,
            cache: self.source_cache.as_deref(),
            token,
        };
        let work = crate::stamps::cut_shard(
            &job,
            shard,
            &self.settings,
            &sources,
            self.uws.results().as_ref(),
            &stored,
        );
        let outcome = tokio::select! {
            outcome = work => outcome,
            () = cancelled.cancelled() => Err(JobError::new(ErrorCode::Internal, "the job ended")),
        };
        self.unregister(id);
        let ended = !matches!(
            self.uws.store().get(id).await,
            Ok(Some(ref job)) if job.phase == ExecutionPhase::Executing
        );
        match outcome {
            Ok(cut) if !ended => {
                if cut {
                    tracing::info!("cut a bulk shard");
                }
                Ok(if cut {
                    Outcome::Completed
                } else {
                    Outcome::Skipped
                })
            }
            // The job ended while the shard was cut (or a store failure left its question
            // open): what was stored belongs to nobody.
            Ok(_) => {
                self.remove_stored(stored.take());
                Ok(Outcome::Aborted)
            }
            Err(error) => {
                tracing::info!(error = %error.labelled(), "bulk shard not cut");
                self.remove_stored(stored.take());
                Ok(Outcome::Failed)
            }
        }
    }

    /// Deletes what an attempt stored (see [`remove_later`]).
    fn remove_stored(&self, keys: Vec<String>) {
        remove_later(self.uws.results().clone(), keys);
    }

    async fn complete(&self, id: &JobId, results: Vec<JobResult>) -> Result<Outcome, UwsError> {
        match self
            .uws
            .finish(id, Transition::Complete(results.clone()))
            .await
        {
            Ok(_) => Ok(Outcome::Completed),
            // Aborted or deleted while the last cutout was written: its objects are orphans.
            Err(UwsError::IllegalTransition { .. } | UwsError::JobNotFound(_)) => {
                for r in &results {
                    self.uws.results().delete(&r.key).await.ok();
                }
                Ok(Outcome::Aborted)
            }
            Err(e) => Err(e),
        }
    }

    async fn fail(&self, id: &JobId, error: JobError) -> Result<Outcome, UwsError> {
        tracing::info!(job = %id, error = %error.labelled(), "job failed");
        match self.uws.finish(id, Transition::Fail(error)).await {
            Ok(_) => Ok(Outcome::Failed),
            Err(UwsError::IllegalTransition { .. } | UwsError::JobNotFound(_)) => {
                Ok(Outcome::Aborted)
            }
            Err(e) => Err(e),
        }
    }

    /// Cuts every (image, stencil) pair of the job and stores the results (see `cutouts`).
    async fn cut_all(
        &self,
        job: &uws::Job,
        token: Option<&DelegatedToken>,
        stored: &StoredKeys,
    ) -> Result<Vec<JobResult>, JobError> {
        let store = crate::cutouts::Store {
            job,
            results: self.uws.results().as_ref(),
            stored_keys: stored,
            // A sync request waiting in this process reads its result once, at once.
            transient: self.uws.awaited_here(&job.id),
            uws: &self.uws,
        };
        crate::cutouts::cut_all(
            job,
            &self.repositories,
            &self.settings,
            store,
            self.source_cache.as_deref(),
            token,
        )
        .await
    }
}

#[cfg(test)]
mod tests;

/// Deletes `keys` from the result store, now and once more a little later: a store call cut
/// short by an abort may still finish its object in the background (the local bucket links it
/// on a blocking thread) after the first delete.
pub(crate) fn remove_later(results: Arc<dyn uws::results::ResultStore>, keys: Vec<String>) {
    if keys.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for pass in 0..2 {
            if pass > 0 {
                tokio::time::sleep(LATE_OBJECT_GRACE).await;
            }
            for key in &keys {
                if let Err(e) = results.delete(key).await {
                    tracing::warn!(key, error = %e, "cannot remove an object nothing refers to");
                }
            }
        }
    });
}
