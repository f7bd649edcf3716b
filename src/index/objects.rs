//! One object of a bucket repository (`s3://BUCKET/PREFIX`, `gs://…`) described for the sky
//! index without downloading it: its headers are walked by ranged reads (`soda::layout::walk_all`,
//! every HDU's header, about one request for a single-image file), written at their offsets into
//! a sparse scratch file of the object's size, and that file is described by
//! `soda::sky::describe_file`, the code that describes local files, so an image's footprint is
//! the same wherever it is stored. The data between the headers are holes the description never
//! reads.
//!
//! Every read is pinned to the version the listing gave (`If-Match` on its ETag), so the stamp
//! the index records is the stamp of the bytes described. A tile-compressed object
//! (`X.fits.fz`), or one whose headers the walk is unsure of, is read whole instead.
//!
//! The bucket crate moves bytes and the soda crate reads FITS; this module is where the two
//! meet, as `worker::ranged` is for cutouts.

use std::path::PathBuf;

use bucket::{BucketError, ListedObject, ObjectVersion, RemoteObject, SourceCache, write_sparse};
use bytes::Bytes;
use soda::layout::{self, Walk};
use soda::sky::DescribedImage;
use tokio::sync::Semaphore;

/// Bytes asked for per header read: ten blocks hold 360 cards, so most headers come in one
/// request.
const HEADER_READ: u64 = 10 * layout::BLOCK;

/// Header reads one object may take before it is read whole instead (a file of many
/// extensions).
const MAX_HEADER_READS: usize = 64;

/// What describing one object gave, and what it cost.
pub(super) struct ObjectRead {
    /// The object's images, or why it is not FITS at all.
    pub(super) described: Result<Vec<DescribedImage>, soda::SodaError>,
    /// Why it was read whole rather than by its headers, if it was.
    pub(super) whole: Option<String>,
    /// Requests made to the store, and bytes received.
    pub(super) requests: u64,
    pub(super) bytes: u64,
}

/// A scratch file, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

/// Describes the version `object.version` of object `object.name` of the bucket `repository`
/// (its URL). `describing` bounds the descriptions run at once (they take CPU; the reads before
/// them only wait). A store failure, including the object changing since it was listed, is an
/// error, which says why: the object is then left for the next scan, not described from mixed
/// versions.
pub(super) async fn describe(
    cache: &SourceCache,
    repository: &str,
    object: &ListedObject,
    describing: &Semaphore,
) -> Result<ObjectRead, String> {
    let store = |e: BucketError| e.to_string();
    let task = |e: tokio::task::JoinError| format!("index task failed: {e}");
    let remote = cache
        .remote(repository, &object.name, None)
        .map_err(store)?;
    let scratch = Scratch(cache.scratch_file());
    let version = &object.version;
    let whole = if object.name.ends_with(".fits.fz") {
        Some("a tile-compressed image is read whole".to_owned())
    } else {
        match headers(&remote, version).await.map_err(store)? {
            Ok(chunks) => {
                let (path, size) = (scratch.0.clone(), version.size);
                tokio::task::spawn_blocking(move || write_sparse(&path, Some(size), &chunks))
                    .await
                    .map_err(task)?
                    .map_err(store)?;
                None
            }
            Err(why) => Some(why),
        }
    };
    if whole.is_some() {
        remote
            .read_to_file(&scratch.0, version)
            .await
            .map_err(store)?;
    }
    let _permit = describing.acquire().await.map_err(|e| e.to_string())?;
    let path = scratch.0.clone();
    let described = tokio::task::spawn_blocking(move || soda::sky::describe_file(&path))
        .await
        .map_err(task)?;
    let (requests, bytes) = remote.fetched();
    Ok(ObjectRead {
        described,
        whole,
        requests,
        bytes,
    })
}

/// Every header of `version` of the object, as `(offset, bytes)` chunks; or why the walk is
/// unsure of them, so that the object should be read whole.
async fn headers(
    object: &RemoteObject,
    version: &ObjectVersion,
) -> Result<Result<Vec<(u64, Bytes)>, String>, BucketError> {
    let mut chunks: Vec<(u64, Bytes)> = Vec::new();
    loop {
        let views: Vec<(u64, &[u8])> = chunks.iter().map(|(o, b)| (*o, &b[..])).collect();
        match layout::walk_all(&views, version.size) {
            Walk::Found(_) => return Ok(Ok(chunks)),
            Walk::Unsure(why) => return Ok(Err(why)),
            Walk::Need(offset) => {
                if chunks.len() >= MAX_HEADER_READS {
                    return Ok(Err(format!(
                        "the headers take more than {MAX_HEADER_READS} reads"
                    )));
                }
                let (bytes, _) = object
                    .read(offset..offset + HEADER_READ, Some(version))
                    .await?;
                chunks.push((offset, bytes));
            }
        }
    }
}
