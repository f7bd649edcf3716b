//! Source images read from buckets, kept in a size-bounded local cache that every job of a
//! worker shares: a popular image is downloaded once, the least recently used files are evicted
//! when the cache outgrows its bound, and concurrent jobs that need the same uncached image wait
//! for one download instead of starting their own (single flight).
//!
//! A file in use by a job is pinned ([`CachedSource`]) and never evicted under it; the cache may
//! exceed its bound while every file in it is pinned. The cache directory is emptied at start:
//! its index lives in memory.
//!
//! An image server (`http(s)://` repository) decides per user who may read an image, so a copy
//! cached for one user is never handed to another unchecked: every fetch first asks the server
//! (`HEAD`, with the reader's delegated token) whether this reader may read the image, and
//! whether the cached copy is still the server's version.
//!
//! A cutout may instead read only the bytes it needs ([`SourceCache::remote`], see `ranges`):
//! the cache then keeps the walked header bytes per reader and object, and counts ranged reads
//! per object, so that the [`RangePolicy`] can send a popular object to a whole download.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::cloud::{BucketUrl, CloudSettings, Scheme};
use crate::error::BucketError;
use crate::ranges::{ObjectPrefix, RangePolicy, RangeState, RemoteObject};

/// Cache hits and misses since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

struct Entry {
    path: PathBuf,
    /// The server's version of the object (ETag, else size and modification time) when it was
    /// fetched from an image server; None for buckets, whose objects are written once.
    version: Option<String>,
    size: u64,
    last_used: u64,
    pins: usize,
}

#[derive(Default)]
struct Index {
    entries: HashMap<String, Entry>,
    total: u64,
    clock: u64,
}

impl Index {
    /// Pins and touches an entry; None if it is not cached, or cached in another version than
    /// `version` (when one is given).
    fn pin(&mut self, url: &str, version: Option<&str>) -> Option<PathBuf> {
        self.clock += 1;
        let clock = self.clock;
        let entry = self
            .entries
            .get_mut(url)
            .filter(|e| version.is_none() || e.version.as_deref() == version)?;
        entry.pins += 1;
        entry.last_used = clock;
        Some(entry.path.clone())
    }

    /// Least recently used unpinned entries to remove until the total fits `max_bytes`.
    fn evict(&mut self, max_bytes: u64) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        while self.total > max_bytes {
            let victim = self
                .entries
                .iter()
                .filter(|(_, e)| e.pins == 0)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else { break };
            if let Some(e) = self.entries.remove(&victim) {
                self.total -= e.size;
                removed.push(e.path);
            }
        }
        removed
    }
}

/// A worker's cache of source images from buckets. Share it behind an `Arc`.
pub struct SourceCache {
    dir: PathBuf,
    max_bytes: u64,
    settings: CloudSettings,
    stores: Mutex<HashMap<(Scheme, String), Arc<dyn ObjectStore>>>,
    index: Arc<Mutex<Index>>,
    /// One lock per image being downloaded: the single-flight gate.
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    policy: RangePolicy,
    ranges: RangeState,
    scratch_names: AtomicU64,
}

/// A cached source file, pinned until this is dropped.
pub struct CachedSource {
    path: PathBuf,
    url: String,
    index: Arc<Mutex<Index>>,
    /// Requests made to the store to produce it (0 for a cache hit without a check).
    requests: u64,
    /// Bytes downloaded to produce it (0 for a cache hit).
    fetched_bytes: u64,
}

impl CachedSource {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Requests made to the store for this file: 0 for a plain cache hit.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Bytes downloaded for this file: its size on a miss, 0 on a hit.
    pub fn fetched_bytes(&self) -> u64 {
        self.fetched_bytes
    }
}

impl Drop for CachedSource {
    fn drop(&mut self) {
        if let Ok(mut index) = self.index.lock()
            && let Some(e) = index.entries.get_mut(&self.url)
        {
            e.pins = e.pins.saturating_sub(1);
        }
    }
}

impl SourceCache {
    /// A cache in `dir` (emptied now) holding at most about `max_bytes` of source files.
    pub fn new(
        dir: PathBuf,
        max_bytes: u64,
        settings: CloudSettings,
    ) -> Result<SourceCache, BucketError> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| BucketError::io(&dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| BucketError::io(&dir, e))?;
        Ok(SourceCache {
            dir,
            max_bytes,
            settings,
            stores: Mutex::new(HashMap::new()),
            index: Arc::new(Mutex::new(Index::default())),
            flights: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            policy: RangePolicy::default(),
            ranges: RangeState::default(),
            scratch_names: AtomicU64::new(0),
        })
    }

    /// The same cache, with `policy` deciding between ranged reads and whole downloads.
    pub fn with_range_policy(mut self, policy: RangePolicy) -> SourceCache {
        self.policy = policy;
        self
    }

    pub fn range_policy(&self) -> &RangePolicy {
        &self.policy
    }

    /// Object `name` of `repository`, to be read by ranges as the holder of `token` (image
    /// servers; buckets ignore it). No request is made here.
    pub fn remote(
        &self,
        repository: &str,
        name: &str,
        token: Option<&str>,
    ) -> Result<RemoteObject, BucketError> {
        let bucket = BucketUrl::parse(repository)?;
        let url = bucket.display_object(name);
        let (store, key) = if bucket.scheme.checks_each_reader() {
            // Walked headers are kept per reader: one user's read never answers another's.
            let mut digest = Sha256::new();
            digest.update(token.unwrap_or_default().as_bytes());
            let reader = hex::encode(digest.finalize());
            let store = self.settings.open_image_server(&bucket, token)?;
            (store, format!("{url}\0{reader}"))
        } else {
            (self.store(&bucket)?, url.clone())
        };
        Ok(RemoteObject {
            store,
            path: bucket.object_path(name),
            url,
            key,
            concurrency: self.policy.concurrency,
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    /// The objects directly under the prefix of the bucket `repository` (`s3://BUCKET/PREFIX`
    /// or `gs://…`), with the version of each, sorted by name; an object below a further `/`
    /// is not listed (no image ID can name it). Image servers are not listed: their listing is
    /// no protocol, and what they hold depends on who asks.
    pub async fn list(
        &self,
        repository: &str,
    ) -> Result<Vec<crate::ranges::ListedObject>, BucketError> {
        let bucket = BucketUrl::parse(repository)?;
        if bucket.scheme.checks_each_reader() {
            return Err(BucketError::Config(format!(
                "{repository} is an image server, which cannot be listed"
            )));
        }
        let store = self.store(&bucket)?;
        let root = (!bucket.prefix.is_empty())
            .then(|| object_store::path::Path::from(bucket.prefix.as_str()));
        let listed = store
            .list_with_delimiter(root.as_ref())
            .await
            .map_err(|e| BucketError::from_store(&bucket.display_object(""), e))?;
        let mut objects: Vec<crate::ranges::ListedObject> = listed
            .objects
            .iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?.to_owned();
                Some(crate::ranges::ListedObject::of(name, meta))
            })
            .collect();
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(objects)
    }

    /// Ranged reads of `object` within the policy's window.
    pub fn recent_range_reads(&self, object: &RemoteObject) -> usize {
        self.ranges.recent_reads(&object.url, self.policy.window)
    }

    /// Counts a ranged read of `object` towards the policy's whole-download threshold.
    pub fn note_range_read(&self, object: &RemoteObject) {
        self.ranges.note_read(&object.url, self.policy.window);
    }

    /// The prefix (walked headers) of `object` kept from an earlier read by the same reader.
    pub fn prefix(&self, object: &RemoteObject) -> Option<Arc<ObjectPrefix>> {
        self.ranges.prefix(&object.key)
    }

    pub fn keep_prefix(&self, object: &RemoteObject, prefix: Arc<ObjectPrefix>) {
        self.ranges
            .keep_prefix(&object.key, prefix, self.policy.header_cache_entries);
    }

    /// Drops a kept prefix whose object has changed since.
    pub fn forget_prefix(&self, object: &RemoteObject) {
        self.ranges.forget_prefix(&object.key);
    }

    /// A fresh file name in the cache directory for a partial copy that its user removes
    /// (never indexed, never evicted; the next start empties the directory anyway).
    pub fn scratch_file(&self) -> PathBuf {
        let n = self.scratch_names.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("ranged-{}-{n}.fits", std::process::id()))
    }

    /// The cached copy of object `name`, if one is cached and (for an image server, which is
    /// asked with `token` then) still current and readable by this reader; never downloads.
    pub async fn cached_as(
        &self,
        repository: &str,
        name: &str,
        token: Option<&str>,
    ) -> Result<Option<CachedSource>, BucketError> {
        let bucket = BucketUrl::parse(repository)?;
        let url = bucket.display_object(name);
        let known = self
            .index
            .lock()
            .map_err(|_| BucketError::Config("source cache index poisoned".into()))?
            .entries
            .contains_key(&url);
        if !known {
            return Ok(None);
        }
        let (_, version, requests) = self.resolve(&bucket, name, &url, token).await?;
        let hit = self.pinned(&url, version.as_deref(), requests);
        if hit.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("skycut_source_cache_lookups_total", "result" => "hit").increment(1);
        }
        Ok(hit)
    }

    /// The store client for `bucket`, and for an image server the object's current version,
    /// asked for with `token` (one HEAD request, counted).
    async fn resolve(
        &self,
        bucket: &BucketUrl,
        name: &str,
        url: &str,
        token: Option<&str>,
    ) -> Result<(Arc<dyn ObjectStore>, Option<String>, u64), BucketError> {
        if !bucket.scheme.checks_each_reader() {
            return Ok((self.store(bucket)?, None, 0));
        }
        let store = self.settings.open_image_server(bucket, token)?;
        metrics::counter!("skycut_source_requests_total", "path" => "whole").increment(1);
        let meta = store
            .head(&bucket.object_path(name))
            .await
            .map_err(|e| BucketError::from_store(url, e))?;
        let version = meta
            .e_tag
            .clone()
            .unwrap_or_else(|| format!("{}@{}", meta.size, meta.last_modified.timestamp_micros()));
        Ok((store, Some(version), 1))
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Bytes of source files the cache holds now.
    pub fn size(&self) -> u64 {
        self.index.lock().map_or(0, |i| i.total)
    }

    fn store(&self, url: &BucketUrl) -> Result<Arc<dyn ObjectStore>, BucketError> {
        let mut stores = self
            .stores
            .lock()
            .map_err(|_| BucketError::Config("source store table poisoned".into()))?;
        let key = (url.scheme, url.bucket.clone());
        if let Some(store) = stores.get(&key) {
            return Ok(store.clone());
        }
        let store = self.settings.open(url)?.store;
        stores.insert(key, store.clone());
        Ok(store)
    }

    fn pinned(&self, url: &str, version: Option<&str>, requests: u64) -> Option<CachedSource> {
        let path = self.index.lock().ok()?.pin(url, version)?;
        Some(CachedSource {
            path,
            url: url.to_owned(),
            index: self.index.clone(),
            requests,
            fetched_bytes: 0,
        })
    }

    /// The local copy of object `name` in the bucket `repository` (`s3://BUCKET/PREFIX`),
    /// downloaded first if it is not cached.
    pub async fn fetch(&self, repository: &str, name: &str) -> Result<CachedSource, BucketError> {
        self.fetch_as(repository, name, None).await
    }

    /// [`SourceCache::fetch`] on behalf of the holder of `token`: an image server is asked with
    /// it whether this reader may read the image, even when a copy is cached. Buckets ignore it.
    pub async fn fetch_as(
        &self,
        repository: &str,
        name: &str,
        token: Option<&str>,
    ) -> Result<CachedSource, BucketError> {
        let bucket = BucketUrl::parse(repository)?;
        let url = bucket.display_object(name);
        let (store, version, requests) = self.resolve(&bucket, name, &url, token).await?;
        if let Some(hit) = self.pinned(&url, version.as_deref(), requests) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("skycut_source_cache_lookups_total", "result" => "hit").increment(1);
            return Ok(hit);
        }
        let gate = {
            let mut flights = self
                .flights
                .lock()
                .map_err(|_| BucketError::Config("flight table poisoned".into()))?;
            flights.entry(url.clone()).or_default().clone()
        };
        let _flight = gate.lock().await;
        // Whoever held the gate before us may have cached it.
        if let Some(hit) = self.pinned(&url, version.as_deref(), requests) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("skycut_source_cache_lookups_total", "result" => "hit").increment(1);
            return Ok(hit);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("skycut_source_cache_lookups_total", "result" => "miss").increment(1);
        let result = self
            .download(store.as_ref(), &bucket, name, &url, version)
            .await
            .map(|mut got| {
                got.requests += requests;
                got
            });
        if let Ok(mut flights) = self.flights.lock() {
            flights.remove(&url);
        }
        result
    }

    async fn download(
        &self,
        store: &dyn ObjectStore,
        bucket: &BucketUrl,
        name: &str,
        url: &str,
        version: Option<String>,
    ) -> Result<CachedSource, BucketError> {
        // Each version of an image server's object gets its own file, so replacing it never
        // changes a file a job is reading.
        let mut digest = Sha256::new();
        digest.update(url.as_bytes());
        if let Some(v) = &version {
            digest.update(b"\0");
            digest.update(v.as_bytes());
        }
        let file_name = hex::encode(digest.finalize());
        let path = self.dir.join(format!("{file_name}.fits"));
        let partial = self.dir.join(format!("{file_name}.partial"));
        metrics::counter!("skycut_source_requests_total", "path" => "whole").increment(1);
        let got = store
            .get(&bucket.object_path(name))
            .await
            .map_err(|e| BucketError::from_store(url, e))?;
        let written = async {
            let mut file = tokio::fs::File::create(&partial)
                .await
                .map_err(|e| BucketError::io(&partial, e))?;
            let mut size = 0u64;
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| BucketError::from_store(url, e))?;
                size += chunk.len() as u64;
                metrics::counter!("skycut_source_fetched_bytes_total", "path" => "whole")
                    .increment(chunk.len() as u64);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| BucketError::io(&partial, e))?;
            }
            file.flush()
                .await
                .map_err(|e| BucketError::io(&partial, e))?;
            tokio::fs::rename(&partial, &path)
                .await
                .map_err(|e| BucketError::io(&path, e))?;
            Ok::<u64, BucketError>(size)
        }
        .await;
        let size = match written {
            Ok(size) => size,
            Err(e) => {
                tokio::fs::remove_file(&partial).await.ok();
                return Err(e);
            }
        };
        let evicted = {
            let mut index = self
                .index
                .lock()
                .map_err(|_| BucketError::Config("source cache index poisoned".into()))?;
            index.clock += 1;
            let clock = index.clock;
            let replaced = index.entries.insert(
                url.to_owned(),
                Entry {
                    path: path.clone(),
                    version,
                    size,
                    last_used: clock,
                    pins: 1,
                },
            );
            index.total += size;
            let mut evicted = Vec::new();
            // An older version of an image server's object: its own file, removed unless a job
            // still reads it (then it stays until the next start empties the cache).
            if let Some(old) = replaced {
                index.total -= old.size;
                if old.pins == 0 && old.path != path {
                    evicted.push(old.path);
                }
            }
            evicted.extend(index.evict(self.max_bytes));
            evicted
        };
        for old in evicted {
            tokio::fs::remove_file(&old).await.ok();
        }
        Ok(CachedSource {
            path,
            url: url.to_owned(),
            index: self.index.clone(),
            requests: 1,
            fetched_bytes: size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, size: u64, last_used: u64, pins: usize) -> (String, Entry) {
        (
            name.to_owned(),
            Entry {
                path: PathBuf::from(name),
                version: None,
                size,
                last_used,
                pins,
            },
        )
    }

    #[test]
    fn eviction_takes_least_recently_used_unpinned_files() {
        let mut index = Index {
            entries: [
                entry("a", 10, 1, 1),
                entry("b", 10, 2, 0),
                entry("c", 10, 3, 0),
                entry("d", 10, 4, 0),
            ]
            .into_iter()
            .collect(),
            total: 40,
            clock: 4,
        };
        // "a" is oldest but pinned: "b" then "c" go.
        assert_eq!(
            index.evict(20),
            vec![PathBuf::from("b"), PathBuf::from("c")]
        );
        assert_eq!(index.total, 20);
        // Touching "a" makes "d" the oldest; everything pinned stays even past the bound.
        assert!(index.pin("a", None).is_some());
        assert_eq!(index.evict(10), vec![PathBuf::from("d")]);
        assert!(index.evict(0).is_empty());
        assert_eq!(index.total, 10);
    }

    /// A cache whose bucket `s3://b` is an in-memory store holding `p/{x,y,w}.fits`, 5000 bytes
    /// each.
    async fn cache_over_memory(dir: &Path, max_bytes: u64) -> Arc<SourceCache> {
        let cache = SourceCache::new(dir.join("cache"), max_bytes, CloudSettings::default())
            .expect("cache");
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        for (name, byte) in [("p/x.fits", 1u8), ("p/y.fits", 2u8), ("p/w.fits", 3u8)] {
            store
                .put(
                    &object_store::path::Path::from(name),
                    vec![byte; 5000].into(),
                )
                .await
                .expect("put");
        }
        cache
            .stores
            .lock()
            .expect("stores")
            .insert((Scheme::S3, "b".into()), store);
        Arc::new(cache)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_of_one_image_share_one_download() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = cache_over_memory(dir.path(), 1 << 20).await;
        let fetches: Vec<_> = (0..4)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.fetch("s3://b/p", "x.fits").await })
            })
            .collect();
        let mut paths = Vec::new();
        for f in fetches {
            let got = f.await.expect("task").expect("fetch");
            assert_eq!(std::fs::read(got.path()).expect("read"), vec![1u8; 5000]);
            paths.push(got.path().to_path_buf());
        }
        paths.dedup();
        assert_eq!(paths.len(), 1);
        assert_eq!(cache.stats(), CacheStats { hits: 3, misses: 1 });
        assert_eq!(cache.size(), 5000);
    }

    #[tokio::test]
    async fn the_least_recently_used_image_leaves_when_the_cache_is_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = cache_over_memory(dir.path(), 6000).await;
        let x = cache.fetch("s3://b/p", "x.fits").await.expect("x");
        let x_path = x.path().to_path_buf();
        // x is in use, so fetching y overfills the cache rather than pull x from under its job.
        let y = cache.fetch("s3://b/p", "y.fits").await.expect("y");
        assert!(x_path.exists());
        assert_eq!(cache.size(), 10_000);
        drop((x, y));
        // A failed download changes nothing; the next one evicts unpinned images, least recently
        // used first, until the cache fits again: x, then y.
        let missing = cache.fetch("s3://b/p", "z.fits").await;
        assert!(matches!(missing, Err(BucketError::NotFound(ref u)) if u == "s3://b/p/z.fits"));
        assert_eq!(cache.size(), 10_000);
        let _w = cache.fetch("s3://b/p", "w.fits").await.expect("w");
        assert!(!x_path.exists());
        assert_eq!(cache.stats(), CacheStats { hits: 0, misses: 4 });
        assert_eq!(cache.size(), 5000);
    }

    #[tokio::test]
    async fn a_listing_gives_the_objects_directly_under_the_prefix_with_their_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = cache_over_memory(dir.path(), 1 << 20).await;
        let store = cache
            .store(&BucketUrl::parse("s3://b/p").expect("url"))
            .expect("store");
        for name in ["p/sub/z.fits", "pq/v.fits", "other/u.fits"] {
            store
                .put(&object_store::path::Path::from(name), vec![9u8; 10].into())
                .await
                .expect("put");
        }
        let listed = cache.list("s3://b/p").await.expect("list");
        let names: Vec<&str> = listed.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["w.fits", "x.fits", "y.fits"]);
        assert!(listed.iter().all(|o| o.version.size == 5000));
        assert!(listed.iter().all(|o| o.last_modified > 0));
        // Each listed version pins a read: the listed object is read, a replaced one refused.
        let object = cache.remote("s3://b/p", "x.fits", None).expect("remote");
        let copy = dir.path().join("x.copy");
        let x = &listed[1];
        assert_eq!(
            object.read_to_file(&copy, &x.version).await.expect("read"),
            5000
        );
        assert_eq!(std::fs::read(&copy).expect("copy"), vec![1u8; 5000]);
        store
            .put(
                &object_store::path::Path::from("p/x.fits"),
                vec![4u8; 5000].into(),
            )
            .await
            .expect("replace");
        assert!(matches!(
            object.read_to_file(&copy, &x.version).await,
            Err(BucketError::Changed(_))
        ));
        assert!(matches!(
            object.read(0..10, Some(&x.version)).await,
            Err(BucketError::Changed(_))
        ));
        assert!(cache.list("https://images.example.org/repo").await.is_err());
    }
}
