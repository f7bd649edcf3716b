//! Reading parts of a source object instead of all of it: ranged GETs pinned to one version of
//! the object, with the policy that decides when downloading the whole object is the better
//! deal, and a small LRU of object prefixes (the header bytes a caller walked) per reader.
//!
//! The bucket still knows nothing of what the bytes mean: the worker says which ranges it
//! needs. What this module guarantees is that every range of one read comes from one version
//! of the object (each request after the first carries `If-Match` with the first's ETag, and
//! the answer's ETag is compared as well, for servers that ignore `If-Match`), and that a
//! range comes back whole or as an error: a short answer is [`BucketError::Unavailable`],
//! never fewer bytes.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::{GetOptions, GetRange, ObjectStore};

use crate::error::BucketError;

/// When a cutout reads an object by ranges and when it downloads the whole object into the
/// cache; the thresholds come from the binary's configuration.
#[derive(Debug, Clone)]
pub struct RangePolicy {
    /// Off: every source object is downloaded whole, as before ranged reads existed.
    pub enabled: bool,
    /// After this many ranged reads of one object within `window`, the next cutout downloads
    /// it whole (and later ones read the cached copy).
    pub reads_before_download: u32,
    pub window: Duration,
    /// A cutout that needs more than this fraction of the object downloads it whole.
    pub max_fraction: f64,
    /// Ranged GETs of one cutout in flight at once.
    pub concurrency: usize,
    /// Ranges closer than this many bytes are fetched as one.
    pub coalesce_bytes: u64,
    /// Object prefixes (walked headers) kept per reader and object.
    pub header_cache_entries: usize,
}

impl Default for RangePolicy {
    fn default() -> Self {
        RangePolicy {
            enabled: true,
            reads_before_download: 2,
            window: Duration::from_secs(600),
            max_fraction: 0.25,
            concurrency: 64,
            coalesce_bytes: 8192,
            header_cache_entries: 256,
        }
    }
}

/// The version of an object that a ranged read saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// The ETag, sent back as `If-Match` on later reads.
    pub etag: Option<String>,
    /// The object's size in bytes.
    pub size: u64,
    /// The ETag, else size and modification time: what two reads compare.
    tag: String,
}

impl ObjectVersion {
    fn of(meta: &object_store::ObjectMeta) -> ObjectVersion {
        ObjectVersion {
            etag: meta.e_tag.clone(),
            size: meta.size,
            tag: meta.e_tag.clone().unwrap_or_else(|| {
                format!("{}@{}", meta.size, meta.last_modified.timestamp_micros())
            }),
        }
    }
}

/// One source object, ready to be read by ranges as one reader (the store client carries the
/// reader's token for image servers). No request is made until a read.
pub struct RemoteObject {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) path: object_store::path::Path,
    pub(crate) url: String,
    /// The header cache key: the object, and for image servers the reader.
    pub(crate) key: String,
    pub(crate) concurrency: usize,
    pub(crate) requests: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

impl RemoteObject {
    /// `s3://bucket/prefix/name`, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests made and bytes received so far through this handle.
    pub fn fetched(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// The bytes of `range` (cut short only by the end of the object). Without `version` the
    /// read learns the object's version; with one, a read of another version fails with
    /// [`BucketError::Changed`].
    pub async fn read(
        &self,
        range: Range<u64>,
        version: Option<&ObjectVersion>,
    ) -> Result<(Bytes, ObjectVersion), BucketError> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            if_match: version.and_then(|v| v.etag.clone()),
            ..GetOptions::default()
        };
        let (got, seen) = self.get(options, "range", version).await?;
        let expected = range.end.min(seen.size).saturating_sub(range.start);
        let bytes = got
            .bytes()
            .await
            .map_err(|e| BucketError::from_store(&self.url, e))?;
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        metrics::counter!("skycut_source_fetched_bytes_total", "path" => "range")
            .increment(bytes.len() as u64);
        if bytes.len() as u64 != expected {
            return Err(BucketError::Unavailable {
                url: self.url.clone(),
                message: format!(
                    "short read: {} bytes of the {expected} asked for at offset {}",
                    bytes.len(),
                    range.start
                ),
            });
        }
        Ok((bytes, seen))
    }

    /// One counted GET; an answer that is not `version` (when given) fails with
    /// [`BucketError::Changed`], whether the store refused the `If-Match` or ignored it.
    async fn get(
        &self,
        options: GetOptions,
        path: &'static str,
        version: Option<&ObjectVersion>,
    ) -> Result<(object_store::GetResult, ObjectVersion), BucketError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("skycut_source_requests_total", "path" => path).increment(1);
        let got = self
            .store
            .get_opts(&self.path, options)
            .await
            .map_err(|e| match e {
                object_store::Error::Precondition { .. } => BucketError::Changed(self.url.clone()),
                other => BucketError::from_store(&self.url, other),
            })?;
        let seen = ObjectVersion::of(&got.meta);
        if version.is_some_and(|v| v.tag != seen.tag || v.size != seen.size) {
            return Err(BucketError::Changed(self.url.clone()));
        }
        Ok((got, seen))
    }

    /// The bytes of each of `ranges` of `version`, in order, a bounded number of requests in
    /// flight at once; the first failure fails the whole read.
    pub async fn read_all(
        &self,
        ranges: &[Range<u64>],
        version: &ObjectVersion,
    ) -> Result<Vec<Bytes>, BucketError> {
        futures_util::stream::iter(ranges.iter().cloned())
            .map(|r| async move { self.read(r, Some(version)).await.map(|(b, _)| b) })
            .buffered(self.concurrency.max(1))
            .try_collect()
            .await
    }

    /// The whole of `version` of the object, streamed into a new file at `path` (for an object
    /// its reader must see whole, a tile-compressed image say); an object that is no longer
    /// that version fails with [`BucketError::Changed`]. Returns the bytes written.
    pub async fn read_to_file(
        &self,
        path: &std::path::Path,
        version: &ObjectVersion,
    ) -> Result<u64, BucketError> {
        use tokio::io::AsyncWriteExt;
        let options = GetOptions {
            if_match: version.etag.clone(),
            ..GetOptions::default()
        };
        let (got, _) = self.get(options, "whole", Some(version)).await?;
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| BucketError::io(path, e))?;
        let mut written = 0u64;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| BucketError::from_store(&self.url, e))?;
            written += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(|e| BucketError::io(path, e))?;
        }
        file.flush().await.map_err(|e| BucketError::io(path, e))?;
        self.bytes.fetch_add(written, Ordering::Relaxed);
        metrics::counter!("skycut_source_fetched_bytes_total", "path" => "whole")
            .increment(written);
        if written != version.size {
            return Err(BucketError::Unavailable {
                url: self.url.clone(),
                message: format!("short read: {written} of {} bytes", version.size),
            });
        }
        Ok(written)
    }
}

/// Writes each chunk at its offset into the file at `path`, creating it first (`size` bytes,
/// all holes) when `size` is given: a sparse local copy of an object of which only some ranges
/// were read, which local code can then open like the whole file as long as it reads only
/// those ranges.
pub fn write_sparse(
    path: &std::path::Path,
    size: Option<u64>,
    chunks: &[(u64, Bytes)],
) -> Result<(), BucketError> {
    use std::os::unix::fs::FileExt;
    let io = |e: std::io::Error| BucketError::io(path, e);
    let file = match size {
        Some(size) => {
            let file = std::fs::File::create(path).map_err(io)?;
            file.set_len(size).map_err(io)?;
            file
        }
        None => std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io)?,
    };
    for (offset, bytes) in chunks {
        file.write_all_at(bytes, *offset).map_err(io)?;
    }
    Ok(())
}

/// An object a listing found directly under a bucket prefix.
#[derive(Debug, Clone)]
pub struct ListedObject {
    /// Its key below the prefix (`X.fits` for `s3://BUCKET/PREFIX/X.fits`).
    pub name: String,
    /// The version listed, to which reads of it can be pinned.
    pub version: ObjectVersion,
    /// Its last modification, in microseconds since the epoch.
    pub last_modified: i64,
}

impl ListedObject {
    pub(crate) fn of(name: String, meta: &object_store::ObjectMeta) -> ListedObject {
        ListedObject {
            name,
            version: ObjectVersion::of(meta),
            last_modified: meta.last_modified.timestamp_micros(),
        }
    }
}

/// The start of an object one reader walked: the chunks read, at their offsets, and the
/// version they belong to.
#[derive(Debug)]
pub struct ObjectPrefix {
    pub version: ObjectVersion,
    pub chunks: Vec<(u64, Bytes)>,
}

/// Ranged-read bookkeeping shared by a worker's jobs: recent ranged reads per object (the
/// download policy) and the LRU of walked prefixes.
#[derive(Default)]
pub(crate) struct RangeState {
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
    prefixes: Mutex<PrefixLru>,
}

#[derive(Default)]
struct PrefixLru {
    entries: HashMap<String, (u64, Arc<ObjectPrefix>)>,
    clock: u64,
}

impl RangeState {
    /// Ranged reads of `url` within `window` before now.
    pub(crate) fn recent_reads(&self, url: &str, window: Duration) -> usize {
        let Ok(mut recent) = self.recent.lock() else {
            return 0;
        };
        let now = Instant::now();
        let Some(times) = recent.get_mut(url) else {
            return 0;
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            times.pop_front();
        }
        times.len()
    }

    /// Counts one ranged read of `url`; forgets objects whose reads all left the window.
    pub(crate) fn note_read(&self, url: &str, window: Duration) {
        let Ok(mut recent) = self.recent.lock() else {
            return;
        };
        let now = Instant::now();
        if recent.len() > 10_000 {
            recent.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) <= window)
            });
        }
        recent.entry(url.to_owned()).or_default().push_back(now);
    }

    pub(crate) fn prefix(&self, key: &str) -> Option<Arc<ObjectPrefix>> {
        let mut lru = self.prefixes.lock().ok()?;
        lru.clock += 1;
        let clock = lru.clock;
        let entry = lru.entries.get_mut(key)?;
        entry.0 = clock;
        Some(entry.1.clone())
    }

    pub(crate) fn keep_prefix(&self, key: &str, prefix: Arc<ObjectPrefix>, capacity: usize) {
        let Ok(mut lru) = self.prefixes.lock() else {
            return;
        };
        if capacity == 0 {
            return;
        }
        lru.clock += 1;
        let clock = lru.clock;
        lru.entries.insert(key.to_owned(), (clock, prefix));
        while lru.entries.len() > capacity {
            let oldest = lru
                .entries
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => lru.entries.remove(&k),
                None => break,
            };
        }
    }

    pub(crate) fn forget_prefix(&self, key: &str) {
        if let Ok(mut lru) = self.prefixes.lock() {
            lru.entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    fn prefix(n: u8) -> Arc<ObjectPrefix> {
        Arc::new(ObjectPrefix {
            version: ObjectVersion {
                etag: None,
                size: 1,
                tag: n.to_string(),
            },
            chunks: vec![(0, Bytes::from(vec![n]))],
        })
    }

    #[test]
    fn the_prefix_cache_keeps_the_most_recently_used() {
        let state = RangeState::default();
        state.keep_prefix("a", prefix(1), 2);
        state.keep_prefix("b", prefix(2), 2);
        assert!(state.prefix("a").is_some());
        state.keep_prefix("c", prefix(3), 2);
        assert!(state.prefix("b").is_none());
        assert_eq!(state.prefix("a").expect("a").chunks[0].1[0], 1);
        state.forget_prefix("a");
        assert!(state.prefix("a").is_none());
        assert!(state.prefix("c").is_some());
    }

    #[test]
    fn recent_reads_leave_the_window() {
        let state = RangeState::default();
        state.note_read("u", Duration::from_secs(60));
        state.note_read("u", Duration::from_secs(60));
        assert_eq!(state.recent_reads("u", Duration::from_secs(60)), 2);
        assert_eq!(state.recent_reads("u", Duration::ZERO), 0);
        assert_eq!(state.recent_reads("v", Duration::from_secs(60)), 0);
    }

    #[tokio::test]
    async fn reads_of_one_object_stay_on_its_first_version() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let path = object_store::path::Path::from("p/x.fits");
        store
            .put(&path, (0u8..100).collect::<Vec<u8>>().into())
            .await
            .expect("put");
        let object = RemoteObject {
            store: store.clone(),
            path: path.clone(),
            url: "s3://b/p/x.fits".into(),
            key: "s3://b/p/x.fits".into(),
            concurrency: 2,
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        };
        let (head, version) = object.read(0..10, None).await.expect("read");
        assert_eq!(&head[..], &(0u8..10).collect::<Vec<u8>>()[..]);
        assert_eq!(version.size, 100);
        // Past the end: cut short by the object, not an error.
        let (tail, _) = object.read(95..200, Some(&version)).await.expect("tail");
        assert_eq!(&tail[..], &[95, 96, 97, 98, 99]);
        let parts = object
            .read_all(&[20..22, 50..53], &version)
            .await
            .expect("read_all");
        assert_eq!(
            parts.iter().map(|b| b.to_vec()).collect::<Vec<_>>(),
            [vec![20, 21], vec![50, 51, 52]]
        );
        assert_eq!(object.fetched(), (4, 10 + 5 + 5));
        // Replaced: the old version's reads fail, whatever the byte counts.
        store
            .put(&path, vec![7u8; 100].into())
            .await
            .expect("replace");
        assert!(matches!(
            object.read_all(&[0..2, 4..6], &version).await,
            Err(BucketError::Changed(_))
        ));
    }
}
