//! One cutout's source read by ranges: the headers are walked by ranged GETs (`soda::layout`),
//! the cutout is planned on them (`soda::cutout_reads`), and only the planned rows are
//! fetched, into a sparse local file of the object's size (unread parts are holes), which the
//! ordinary cutout then reads like any local file. BITPIX, scaling, BLANK, masks and the WCS
//! thus go through exactly the code of a local cutout.
//!
//! Every byte of one read comes from one version of the object (the bucket checks each range
//! against the first read's ETag); an object that changes under the read is read once more
//! from the start, then fails as transient. Whenever the header walk cannot be sure it models
//! cfitsio (a tile-compressed image, random groups, an unknown extension), or the policy says
//! so, the caller downloads the whole file instead: [`Ranged::Whole`].

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bucket::{BucketError, ObjectPrefix, ObjectVersion, RemoteObject, SourceCache, write_sparse};
use bytes::Bytes;
use soda::layout::{self, Walk};
use soda::{CutOptions, SodaError, Stencil};

/// Bytes asked for per header read: ten blocks hold 360 cards, so most headers come in one
/// request.
const HEADER_READ: u64 = 10 * layout::BLOCK;

/// Header reads one walk may make before it gives up on ranges (a file of many extensions).
const MAX_HEADER_READS: usize = 16;

/// A partial local copy of a source object, removed when dropped.
pub(crate) struct SparseCopy {
    pub(crate) path: PathBuf,
    /// Requests and bytes it took.
    pub(crate) requests: u64,
    pub(crate) bytes: u64,
}

impl Drop for SparseCopy {
    fn drop(&mut self) {
        std::fs::remove_file(&self.path).ok();
    }
}

pub(crate) enum Ranged {
    Read(SparseCopy),
    /// Download the whole object instead, for this reason.
    Whole(String),
}

pub(crate) enum RangedError {
    Bucket(BucketError),
    /// The cutout cannot be made (off the image, a bad BAND...), known from the headers.
    Science(SodaError),
}

impl From<BucketError> for RangedError {
    fn from(e: BucketError) -> Self {
        RangedError::Bucket(e)
    }
}

/// What one cutout asks of its source.
pub(crate) struct Want<'a> {
    pub(crate) stencil: &'a Stencil,
    pub(crate) options: &'a CutOptions,
    /// The ID, for messages.
    pub(crate) source_id: &'a str,
}

/// Reads what `want` needs of object `name` of `repository` as the holder of `token`, or says
/// why the whole object should be downloaded instead.
pub(crate) async fn read(
    cache: &SourceCache,
    repository: &str,
    name: &str,
    token: Option<&str>,
    want: &Want<'_>,
) -> Result<Ranged, RangedError> {
    let object = cache.remote(repository, name, token)?;
    let policy = cache.range_policy();
    let recent = cache.recent_range_reads(&object);
    if recent >= policy.reads_before_download as usize {
        return Ok(Ranged::Whole(format!(
            "read by ranges {recent} times within {} s",
            policy.window.as_secs()
        )));
    }
    let mut copy = SparseCopy {
        path: cache.scratch_file(),
        requests: 0,
        bytes: 0,
    };
    let mut outcome = attempt(cache, &object, want, &copy.path).await;
    if matches!(outcome, Err(RangedError::Bucket(BucketError::Changed(_)))) {
        // Changed between two reads: start again on the new version, once.
        cache.forget_prefix(&object);
        outcome = attempt(cache, &object, want, &copy.path).await;
        if outcome.is_err() {
            cache.forget_prefix(&object);
        }
    }
    (copy.requests, copy.bytes) = object.fetched();
    match outcome? {
        None => {
            cache.note_range_read(&object);
            Ok(Ranged::Read(copy))
        }
        Some(reason) => Ok(Ranged::Whole(reason)),
    }
}

/// One try: the headers (kept, or read), the plan, the rows, written into the file at `path`.
/// Some(reason) when the whole object should be read instead.
async fn attempt(
    cache: &SourceCache,
    object: &RemoteObject,
    want: &Want<'_>,
    path: &std::path::Path,
) -> Result<Option<String>, RangedError> {
    let extension = want.options.extension.as_deref();
    let kept = cache.prefix(object);
    let mut version: Option<ObjectVersion> = kept.as_ref().map(|p| p.version.clone());
    let mut chunks: Vec<(u64, Bytes)> = kept.as_ref().map(|p| p.chunks.clone()).unwrap_or_default();
    let kept_chunks = chunks.len();
    let hdus = loop {
        let size = version.as_ref().map_or(u64::MAX, |v| v.size);
        let views: Vec<(u64, &[u8])> = chunks.iter().map(|(o, b)| (*o, &b[..])).collect();
        match layout::walk(&views, size, extension) {
            Walk::Found(hdus) => break hdus,
            Walk::Unsure(why) => return Ok(Some(why)),
            Walk::Need(offset) => {
                if chunks.len() >= MAX_HEADER_READS {
                    return Ok(Some(format!(
                        "the image HDU is more than {MAX_HEADER_READS} header reads in"
                    )));
                }
                let (bytes, seen) = object
                    .read(offset..offset + HEADER_READ, version.as_ref())
                    .await?;
                version = Some(seen);
                chunks.push((offset, bytes));
            }
        }
    };
    let (Some(version), Some(image)) = (version, hdus.last()) else {
        return Ok(Some("the header walk read nothing".to_owned()));
    };
    if chunks.len() > kept_chunks {
        cache.keep_prefix(
            object,
            Arc::new(ObjectPrefix {
                version: version.clone(),
                chunks: chunks.clone(),
            }),
        );
    }

    // The headers in place, in a file of the object's size, and the cutout planned on them.
    let (file, stencil, options) = (
        path.to_path_buf(),
        want.stencil.clone(),
        want.options.clone(),
    );
    let (size, source_id) = (version.size, want.source_id.to_owned());
    let headers: Vec<(u64, Bytes)> = chunks;
    let plan = tokio::task::spawn_blocking(move || {
        write_sparse(&file, Some(size), &headers).map_err(RangedError::Bucket)?;
        soda::cutout_reads(&file, &stencil, &options, &source_id).map_err(RangedError::Science)
    })
    .await
    .map_err(|e| RangedError::Bucket(BucketError::Config(format!("planning thread: {e}"))))??;
    let axes: Vec<u64> = plan.axes.iter().map(|&n| n as u64).collect();
    if plan.hdu != image.index || axes != image.axes || plan.pixel_bytes != image.pixel_bytes {
        return Ok(Some(format!(
            "the header walk chose HDU {} but cfitsio HDU {}",
            image.index, plan.hdu
        )));
    }
    let rows = plan.byte_ranges(image.data_start);
    let needed: u64 = rows.iter().map(|r| r.end - r.start).sum();
    let policy = cache.range_policy();
    if needed as f64 > policy.max_fraction * version.size as f64 {
        return Ok(Some(format!(
            "the cutout needs {needed} of the {} bytes",
            version.size
        )));
    }
    let ranges = layout::coalesce(&rows, policy.coalesce_bytes);
    let parts = object.read_all(&ranges, &version).await?;
    let pieces: Vec<(u64, Bytes)> = ranges
        .iter()
        .map(|r: &Range<u64>| r.start)
        .zip(parts)
        .collect();
    let file = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_sparse(&file, None, &pieces))
        .await
        .map_err(|e| RangedError::Bucket(BucketError::Config(format!("writing thread: {e}"))))??;
    Ok(None)
}
