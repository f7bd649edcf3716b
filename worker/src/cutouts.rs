//! The cutouts of one job and the results they become, apart from the job's phases (which are
//! `runner`'s business).
//!
//! SODA's rule: every (ID, stencil) pair is one cutout and one result. A job of one pair keeps
//! the result ID `result` (pyvo looks for it); with several pairs the results are `cutout-1`,
//! `cutout-2`, … in pair order (IDs outer, stencils inner), and a pair that cannot be cut (its
//! stencil misses the image, say) becomes a `text/plain` result holding the labelled error
//! (`UsageError: …`, SODA §6) instead of failing the others. A job of several pairs also gets
//! `cutouts`, one multi-extension FITS file holding every cutout that was made. A job none of
//! whose pairs could be cut fails with the first pair's error.
//!
//! With `RESPONSEFORMAT=image/png` (or `image/jpeg`) every cutout also gets a preview in that
//! format, `preview` (one pair) or `preview-N` (pair N), all listed before the FITS results: SODA
//! puts the preview first, and a sync request redirects to the first result.
//!
//! With `META=true` (or `KIND=HEADER`) each pair's result is instead the header its cutout would
//! have, as text ([`soda::request::HEADER`]), with the same result IDs and no combined file; no
//! pixel is read.
//!
//! With `RESPONSEFORMAT=application/fits;content=stamp-table` (and `SIZE`) the results are
//! instead `stamps`, one FITS table of every stamp, and `errors` for the stamps that could not
//! be cut; a bulk job (one with `UPLOAD`) makes the same from its plan. Both are `stamps`'
//! business.

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::Instant;

use soda::repository::Repositories;
use soda::request::{CutoutRequest, FITS, HEADER};
use soda::{CutOptions, Provenance, SodaError, SourceId, Stencil};
use uws::queue::DelegatedToken;
use uws::results::{ObjectMeta, Offer, ResultStore};
use uws::{ErrorCode, JobError, JobResult, timestamp};

use crate::runner::{StoredKeys, WorkerSettings};
use crate::sources::JobSources;

/// The media type of a pair's error result.
const TEXT: &str = "text/plain";

/// Scratch files of one attempt at a job, removed when the job's cutouts are done with, however
/// that ends (including an abort that drops the job's future half-way). Names carry a
/// per-attempt prefix: a job run twice at once on one worker (a takeover of a job whose first
/// run was only slow) never deletes the other attempt's files under it.
pub(crate) struct Scratch {
    prefix: PathBuf,
    files: Vec<PathBuf>,
}

impl Scratch {
    pub(crate) fn new(dir: &std::path::Path, job: &uws::JobId) -> Scratch {
        Scratch {
            prefix: dir.join(format!("{job}-{:016x}", rand::random::<u64>())),
            files: Vec::new(),
        }
    }

    /// `{dir}/{job}-{attempt}-{name}`, removed on drop.
    pub(crate) fn file(&mut self, name: &str) -> PathBuf {
        let mut path = self.prefix.clone().into_os_string();
        path.push(format!("-{name}"));
        let path = PathBuf::from(path);
        self.files.push(path.clone());
        path
    }

    /// Removes `path` with the others: a file named after [`Scratch::file`]'s, written elsewhere.
    pub(crate) fn adopt(&mut self, path: PathBuf) {
        self.files.push(path);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for f in &self.files {
            std::fs::remove_file(f).ok();
        }
    }
}

/// What became of one pair.
enum Pair {
    /// The cutout was written to this scratch file.
    Cut(PathBuf),
    Failed(JobError),
}

/// Cuts every (image, stencil) pair of `job`, stores the results and returns them in the order
/// a client should see them. Fails only when no pair could be cut, or a result cannot be stored.
pub(crate) async fn cut_all(
    job: &uws::Job,
    repositories: &Repositories,
    settings: &WorkerSettings,
    store: Store<'_>,
    cache: Option<&bucket::SourceCache>,
    token: Option<&DelegatedToken>,
) -> Result<Vec<JobResult>, JobError> {
    let sources = JobSources {
        repositories,
        cache,
        token,
    };
    let mut scratch = Scratch::new(&settings.scratch_dir, &job.id);
    // A bulk job's cutouts are in its plan, not its parameters.
    if job.parameters.iter().any(|(name, _)| name == "UPLOAD") {
        return crate::stamps::bulk(job, settings, &sources, &store, &mut scratch).await;
    }
    // The frontend admitted the job under its own limit on cutouts (light curves may have more
    // epochs than the default), so none is applied again here.
    let request = CutoutRequest::from_parameters_up_to(
        job.parameters.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        usize::MAX,
    )
    .map_err(job_error)?;
    let options = |id: &SourceId| request.options(id);
    if request.stamp_table {
        return crate::stamps::stamp_table(job, &request, &sources, &store, &mut scratch).await;
    }
    let pairs: Vec<(&SourceId, &Stencil)> = request.pairs().collect();
    // A synchronous request's one cutout, when the store would keep it in memory: cut into
    // memory, so that no file is created for it at all.
    if let [(id, stencil)] = pairs[..]
        && store.transient
        && !request.header_only
        && request.preview.is_none()
        && let Some(room) = NonZeroU64::new(memory_share(
            store.results.transient_room(),
            settings.jobs_at_once,
        ))
    {
        let room = room.get();
        let cut = cut_one_to_memory(&sources, settings, id, stencil, options(id), room).await?;
        if let Some(bytes) = cut {
            let meta = ObjectMeta {
                content_type: FITS.to_owned(),
                filename: crate::sources::result_filename(id, &stencil.to_string()),
            };
            let stored = store.put_bytes("result", "fits", bytes, &mut scratch, meta);
            return Ok(vec![stored.await?]);
        }
    }
    let mut outcomes = Vec::with_capacity(pairs.len());
    let (content_type, extension) = if request.header_only {
        (HEADER, "txt")
    } else {
        (FITS, "fits")
    };
    for (n, (id, stencil)) in pairs.iter().enumerate() {
        let out = scratch.file(&format!("{n}.{extension}"));
        let cut = cut_one(
            &sources,
            settings,
            id,
            stencil,
            &out,
            options(id),
            request.header_only,
        );
        outcomes.push(match cut.await {
            Ok(()) => Pair::Cut(out),
            Err(e) => Pair::Failed(e),
        });
    }

    if !outcomes.iter().any(|o| matches!(o, Pair::Cut(_))) {
        return Err(outcomes
            .into_iter()
            .find_map(|o| match o {
                Pair::Failed(e) => Some(e),
                Pair::Cut(_) => None,
            })
            .unwrap_or_else(|| JobError::new(ErrorCode::Internal, "the job has no cutout")));
    }

    let single = pairs.len() == 1;
    let mut stored = Vec::new();
    if let Some(format) = request.preview {
        for (n, ((id, stencil), outcome)) in pairs.iter().zip(&outcomes).enumerate() {
            let Pair::Cut(cutout) = outcome else {
                continue;
            };
            let result_id = if single {
                "preview".to_owned()
            } else {
                format!("preview-{}", n + 1)
            };
            let extension = format.extension();
            let out = scratch.file(&format!("{n}.{extension}"));
            let (cutout, preview) = (cutout.clone(), out.clone());
            tokio::task::spawn_blocking(move || {
                soda::preview::preview_to_file(&cutout, &preview, format)
            })
            .await
            .map_err(|e| internal(format!("preview thread failed: {e}")))?
            .map_err(job_error)?;
            let filename = crate::sources::result_filename(id, &stencil.to_string());
            let meta = ObjectMeta {
                content_type: format.media_type().to_owned(),
                filename: format!(
                    "{}.{extension}",
                    filename.strip_suffix(".fits").unwrap_or(&filename)
                ),
            };
            stored.push(store.put(&result_id, extension, &out, meta).await?);
        }
    }
    for (n, ((id, stencil), outcome)) in pairs.iter().zip(&outcomes).enumerate() {
        let result_id = if single {
            "result".to_owned()
        } else {
            format!("cutout-{}", n + 1)
        };
        let result = match outcome {
            Pair::Cut(path) => {
                let filename = crate::sources::result_filename(id, &stencil.to_string());
                let meta = ObjectMeta {
                    content_type: content_type.to_owned(),
                    filename: if request.header_only {
                        format!(
                            "{}.txt",
                            filename.strip_suffix(".fits").unwrap_or(&filename)
                        )
                    } else {
                        filename
                    },
                };
                store.put(&result_id, extension, path, meta).await?
            }
            Pair::Failed(error) => {
                let path = scratch.file(&format!("{n}.txt"));
                tokio::fs::write(&path, format!("{}\n", error.labelled()))
                    .await
                    .map_err(|e| unavailable(format!("writing an error result failed: {e}")))?;
                let meta = ObjectMeta {
                    content_type: TEXT.to_owned(),
                    filename: format!("{}-{result_id}-error.txt", id.image()),
                };
                store.put(&result_id, "txt", &path, meta).await?
            }
        };
        stored.push(result);
    }

    if !single && !request.header_only {
        let parts: Vec<PathBuf> = outcomes
            .iter()
            .filter_map(|o| match o {
                Pair::Cut(p) => Some(p.clone()),
                Pair::Failed(_) => None,
            })
            .collect();
        let out = scratch.file("all.fits");
        let mef = out.clone();
        tokio::task::spawn_blocking(move || {
            let parts: Vec<&std::path::Path> = parts.iter().map(|p| p.as_path()).collect();
            soda::combine_to_file(&parts, &mef)
        })
        .await
        .map_err(|e| internal(format!("cutout thread failed: {e}")))?
        .map_err(job_error)?;
        let meta = ObjectMeta {
            content_type: FITS.to_owned(),
            filename: format!("{}-cutouts.fits", job.id),
        };
        stored.push(store.put("cutouts", "fits", &out, meta).await?);
    }
    Ok(stored)
}

/// Cuts one pair into `out` on a blocking thread (or, `header_only`, writes its header there).
async fn cut_one(
    sources: &JobSources<'_>,
    settings: &WorkerSettings,
    id: &SourceId,
    stencil: &Stencil,
    out: &std::path::Path,
    options: CutOptions,
    header_only: bool,
) -> Result<(), JobError> {
    // Pinned in the source cache until the cut is done.
    let source = sources
        .open(id, Some((stencil, &options)), job_error)
        .await?;
    let path = source.path.clone();
    let provenance = provenance(id, stencil, settings);
    let stencil = stencil.clone();
    let out = out.to_path_buf();
    if header_only {
        return tokio::task::spawn_blocking(move || {
            soda::header_to_file(&path, &stencil, &provenance, &out, options)
        })
        .await
        .map_err(|e| internal(format!("header thread failed: {e}")))?
        .map(drop)
        .map_err(|e| source.explain(job_error(e)));
    }
    let started = Instant::now();
    let cut = tokio::task::spawn_blocking(move || {
        soda::cut_to_file_with(&path, &stencil, &provenance, &out, options)
    })
    .await
    .map_err(|e| internal(format!("cutout thread failed: {e}")))?;
    let outcome = if cut.is_ok() { "ok" } else { "error" };
    metrics::histogram!("skycut_cutout_duration_seconds", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    let cutout = cut.map_err(|e| source.explain(job_error(e)))?;
    metrics::counter!("skycut_source_bytes_read_total").increment(cutout.source_bytes);
    Ok(())
}

/// Cuts one pair into memory on a blocking thread, if its cutout is at most `max_bytes` (else
/// `None`, and nothing is cut: the caller cuts it to a file).
/// The most bytes one sync result may take when cut into memory: its job's share of the
/// store's memory (`room`) among every job this worker may run at once, so that those cuts
/// together never hold more memory than the store keeps; a larger result is cut to a file.
fn memory_share(room: u64, jobs_at_once: usize) -> u64 {
    room / u64::try_from(jobs_at_once.max(1)).unwrap_or(u64::MAX)
}

async fn cut_one_to_memory(
    sources: &JobSources<'_>,
    settings: &WorkerSettings,
    id: &SourceId,
    stencil: &Stencil,
    options: CutOptions,
    max_bytes: u64,
) -> Result<Option<Vec<u8>>, JobError> {
    // Pinned in the source cache until the cut is done.
    let source = sources
        .open(id, Some((stencil, &options)), job_error)
        .await?;
    let path = source.path.clone();
    let provenance = provenance(id, stencil, settings);
    let stencil = stencil.clone();
    let started = Instant::now();
    let cut = tokio::task::spawn_blocking(move || {
        soda::cut_to_memory(&path, &stencil, &provenance, options, max_bytes)
    })
    .await
    .map_err(|e| internal(format!("cutout thread failed: {e}")))?;
    let outcome = if cut.is_ok() { "ok" } else { "error" };
    metrics::histogram!("skycut_cutout_duration_seconds", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    let Some((bytes, cutout)) = cut.map_err(|e| source.explain(job_error(e)))? else {
        return Ok(None);
    };
    metrics::counter!("skycut_source_bytes_read_total").increment(cutout.source_bytes);
    Ok(Some(bytes))
}

fn provenance(id: &SourceId, stencil: &Stencil, settings: &WorkerSettings) -> Provenance {
    Provenance {
        source_id: id.to_string(),
        stencil: stencil.to_string(),
        software: settings.software.clone(),
        time_utc: timestamp::format(timestamp::now()),
    }
}

/// Where one job's results go: `transient` for a synchronous request's (see
/// [`ResultStore::put_transient`]).
pub(crate) struct Store<'a> {
    pub(crate) job: &'a uws::Job,
    pub(crate) results: &'a dyn ResultStore,
    /// Each key is recorded here before its object is stored.
    pub(crate) stored_keys: &'a StoredKeys,
    pub(crate) transient: bool,
    /// Where a long job reports its progress.
    pub(crate) uws: &'a uws::service::Uws,
}

impl Store<'_> {
    /// Stores a result made in memory: offered to the store as it is when the result is
    /// transient, and otherwise (or when the store declines it) written to a scratch file and
    /// stored as a file.
    pub(crate) async fn put_bytes(
        &self,
        result_id: &str,
        extension: &str,
        bytes: Vec<u8>,
        scratch: &mut Scratch,
        meta: ObjectMeta,
    ) -> Result<JobResult, JobError> {
        let bytes = match self.transient {
            true => {
                let key = self.key(result_id, extension);
                let started = Instant::now();
                let offered = self.results.offer_transient(&key, bytes, &meta).await;
                let outcome = if offered.is_ok() { "ok" } else { "error" };
                metrics::histogram!("skycut_result_store_latency_seconds", "operation" => "put", "outcome" => outcome)
                    .record(started.elapsed().as_secs_f64());
                match offered.map_err(|e| unavailable(format!("storing the result failed: {e}")))? {
                    Offer::Kept(size) => {
                        metrics::counter!("skycut_result_bytes_written_total").increment(size);
                        return Ok(JobResult {
                            id: result_id.to_owned(),
                            key,
                            mime_type: meta.content_type,
                            size: Some(size),
                        });
                    }
                    Offer::Declined(bytes) => bytes,
                }
            }
            false => bytes,
        };
        let path = scratch.file(&format!("{result_id}.{extension}"));
        let file = path.clone();
        tokio::task::spawn_blocking(move || std::fs::write(&file, bytes))
            .await
            .map_err(|e| internal(format!("writing a result failed: {e}")))?
            .map_err(|e| unavailable(format!("writing a result failed: {e}")))?;
        self.put(result_id, extension, &path, meta).await
    }

    /// A new key for a result of this job, recorded as stored before anything is stored.
    ///
    /// A per-attempt prefix: a job run twice (a worker presumed dead was only slow) never
    /// overwrites or deletes the result that the store recorded. Recorded before the store is
    /// called: an abort may drop the storing future while the object is being written.
    fn key(&self, result_id: &str, extension: &str) -> String {
        let key = format!(
            "{}/{:016x}/{result_id}.{extension}",
            self.job.id,
            rand::random::<u64>()
        );
        self.stored_keys.record(&key);
        key
    }

    pub(crate) async fn put(
        &self,
        result_id: &str,
        extension: &str,
        path: &std::path::Path,
        meta: ObjectMeta,
    ) -> Result<JobResult, JobError> {
        let results = self.results;
        let key = self.key(result_id, extension);
        let mime_type = meta.content_type.clone();
        let started = Instant::now();
        let stored = match self.transient {
            true => results.put_transient(&key, path, &meta).await,
            false => results.put_file(&key, path, &meta).await,
        };
        let outcome = if stored.is_ok() { "ok" } else { "error" };
        metrics::histogram!("skycut_result_store_latency_seconds", "operation" => "put", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
        let size = stored.map_err(|e| unavailable(format!("storing the result failed: {e}")))?;
        metrics::counter!("skycut_result_bytes_written_total").increment(size);
        Ok(JobResult {
            id: result_id.to_owned(),
            key,
            mime_type,
            size: Some(size),
        })
    }
}

pub(crate) fn internal(message: String) -> JobError {
    JobError::new(ErrorCode::Internal, message)
}

pub(crate) fn unavailable(message: String) -> JobError {
    JobError::new(ErrorCode::Unavailable, message)
}

/// How a science error becomes a job error: with the code [`SodaError::code`] gives it, as the
/// frontend answers the same error on the request path.
pub(crate) fn job_error(e: SodaError) -> JobError {
    JobError::new(e.code(), e.to_string())
}

#[cfg(test)]
mod tests {
    use super::memory_share;

    #[test]
    fn a_cut_into_memory_may_take_its_share_of_the_memory_among_the_worker_s_slots() {
        assert_eq!(memory_share(1000, 4), 250);
        assert_eq!(memory_share(1000, 3), 333);
        assert_eq!(memory_share(1000, 1), 1000);
        // No slot count (a worker built by hand): the whole memory.
        assert_eq!(memory_share(1000, 0), 1000);
        assert_eq!(memory_share(0, 4), 0);
    }
}
