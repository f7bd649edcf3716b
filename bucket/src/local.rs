//! The local-directory bucket of `skycut serve`: objects are files under one directory, written
//! to a temporary name and renamed into place (or hard-linked) so a reader never sees half an
//! object.
//!
//! Every file-system operation here is paid once per result, all day long, and ext4 makes each
//! inode created and freed dearer under churn (freshly freed inodes are skipped). So an object
//! is one file and nothing else: its key's `/` become `+` in its one flat name (no directory per
//! job or attempt), and its content type and file name live in an extended attribute of that
//! file rather than in a `.meta` file beside it. A file system without user extended attributes
//! gets the `.meta` file, and objects stored in the earlier nested layout (`{job}/{attempt}/…`,
//! with `.meta` files) are still read, listed and deleted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use uws::UwsError;
use uws::results::{ObjectMeta, Offer, ResultStore};

use crate::memory::MemoryObjects;
use crate::signing::UrlSigner;

/// The path of the route that serves local objects, under the service's base URL.
pub const FILES_ROUTE: &str = "files";

/// A result store in a local directory. Cloning shares nothing mutable (a path and a key).
#[derive(Clone, Debug)]
pub struct LocalBucket {
    root: PathBuf,
    signer: UrlSigner,
    /// Where transient results go when they fit (see [`ResultStore::put_transient`]).
    memory: Option<Arc<MemoryObjects>>,
}

impl LocalBucket {
    pub fn new(root: PathBuf, signer: UrlSigner) -> LocalBucket {
        LocalBucket {
            root,
            signer,
            memory: None,
        }
    }

    /// Keeps transient results (synchronous requests') in `memory` while they fit, instead of
    /// on disk.
    pub fn with_memory(mut self, memory: Arc<MemoryObjects>) -> LocalBucket {
        self.memory = Some(memory);
        self
    }

    /// A transient object held in memory, with its metadata; None sends the reader to disk.
    pub fn memory_object(&self, key: &str) -> Option<(bytes::Bytes, ObjectMeta)> {
        self.memory.as_ref()?.get(key)
    }

    pub fn signer(&self) -> &UrlSigner {
        &self.signer
    }

    /// The file that holds an object, or None for a key that could escape the bucket: one flat
    /// name under the root, the key's `/` turned into `+` (which no key holds, so two keys never
    /// share a file).
    pub fn object_path(&self, key: &str) -> Option<PathBuf> {
        if !is_safe_key(key) {
            return None;
        }
        Some(self.root.join(key.replace('/', FLAT_SEPARATOR)))
    }

    /// Where the earlier nested layout kept an object (`{job}/{attempt}/{result}`).
    fn nested_path(&self, key: &str) -> Option<PathBuf> {
        is_safe_key(key).then(|| self.root.join(key))
    }

    fn meta_path(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".meta");
        PathBuf::from(p)
    }

    /// Opens an object for reading, with its content type and file name if it has them: the
    /// flat file first, then the nested layout of objects stored before it. Blocking.
    pub fn open_object(&self, key: &str) -> std::io::Result<(std::fs::File, Option<ObjectMeta>)> {
        let not_found = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let flat = self.object_path(key).ok_or_else(not_found)?;
        let (path, file) = match std::fs::File::open(&flat) {
            Ok(file) => (flat, file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let nested = self.nested_path(key).ok_or_else(not_found)?;
                let file = std::fs::File::open(&nested)?;
                (nested, file)
            }
            Err(e) => return Err(e),
        };
        let meta = read_meta_attribute(&file)
            .or_else(|| Self::parse_meta(&std::fs::read_to_string(Self::meta_path(&path)).ok()?));
        Ok((file, meta))
    }

    /// Reads the content type and file name of an object.
    pub async fn object_meta(&self, key: &str) -> Option<ObjectMeta> {
        let bucket = self.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || bucket.open_object(&key).ok()?.1)
            .await
            .ok()?
    }

    /// The content type and file name from the text of an object's metadata (the extended
    /// attribute, or the `.meta` file): two lines.
    pub fn parse_meta(text: &str) -> Option<ObjectMeta> {
        let mut lines = text.lines();
        Some(ObjectMeta {
            content_type: lines.next()?.to_owned(),
            filename: lines.next()?.to_owned(),
        })
    }
}

/// Stands for `/` in an object's flat file name; never in a key (see [`is_safe_key`]).
const FLAT_SEPARATOR: &str = "+";

/// The extended attribute that holds an object's metadata.
const META_ATTRIBUTE: &str = "user.skycut.meta";

/// The metadata attribute of an open object, if it has one.
fn read_meta_attribute(file: &std::fs::File) -> Option<ObjectMeta> {
    let mut buffer = [0u8; 1024];
    let len = rustix::fs::fgetxattr(file, META_ATTRIBUTE, &mut buffer[..]).ok()?;
    LocalBucket::parse_meta(std::str::from_utf8(buffer.get(..len)?).ok()?)
}

/// Keys are what the worker makes (`{job}/{result}.fits`): plain path segments only.
fn is_safe_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

fn io(e: std::io::Error) -> UwsError {
    UwsError::Store(format!("local bucket: {e}"))
}

/// Makes the object appear whole at `path` with its metadata: a hard link to `source` where the
/// file system allows it (no byte is copied; `source` is complete and never changed again, see
/// [`ResultStore::put_file`]), else a copy to a temporary name renamed into place (a rename is
/// atomic only within one file system, and the scratch file may be elsewhere). The metadata is
/// set on the file before it gets its name, so a reader never finds the object without it.
fn put(root: &Path, path: &Path, source: &Path, meta_text: &str) -> Result<u64, UwsError> {
    let size = std::fs::metadata(source).map_err(io)?.len();
    let linked = with_meta(path, source, meta_text)
        .and_then(|()| std::fs::hard_link(source, path))
        .or_else(|e| match e.kind() {
            // The first object of a fresh bucket: its directory is made once.
            std::io::ErrorKind::NotFound if !root.exists() => {
                std::fs::create_dir_all(root)?;
                std::fs::hard_link(source, path)
            }
            _ => Err(e),
        });
    if linked.is_ok() {
        return Ok(size);
    }
    let tmp = path.with_extension("partial");
    let size = std::fs::copy(source, &tmp).map_err(io)?;
    with_meta(path, &tmp, meta_text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(size)
}

/// Gives `file` (to be named `path`) its metadata: an extended attribute, or on a file system
/// without them the `.meta` file beside `path`.
fn with_meta(path: &Path, file: &Path, meta_text: &str) -> std::io::Result<()> {
    let flags = rustix::fs::XattrFlags::empty();
    if rustix::fs::setxattr(file, META_ATTRIBUTE, meta_text.as_bytes(), flags).is_ok() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(LocalBucket::meta_path(path), meta_text)
}

/// The job prefix of a flat object's file name (`{job}+…`), or None for another entry.
fn flat_prefix(name: &str) -> Option<&str> {
    name.split_once(FLAT_SEPARATOR).map(|(prefix, _)| prefix)
}

/// The key prefixes under `root` (one per job: the flat files named `{job}+…`, and the
/// directories of the nested layout), each with the age of the newest entry under it (the
/// directory itself included). Names that start with `.` (health probes) are skipped.
fn list_prefixes(root: &Path) -> Result<Vec<(String, Duration)>, UwsError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let now = std::time::SystemTime::now();
    let age = |path: &Path| -> Duration {
        std::fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default()
    };
    // Prefix → age of its newest entry, over both layouts.
    let mut prefixes: std::collections::HashMap<String, Duration> =
        std::collections::HashMap::new();
    let mut note = |prefix: &str, newest: Duration| {
        prefixes
            .entry(prefix.to_owned())
            .and_modify(|n| *n = (*n).min(newest))
            .or_insert(newest);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            if let Some(prefix) = flat_prefix(&name) {
                note(prefix, age(&entry.path()));
            }
            continue;
        }
        let dir = entry.path();
        let mut newest = age(&dir);
        let mut pending = vec![dir];
        while let Some(dir) = pending.pop() {
            for inner in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = inner.path();
                newest = newest.min(age(&path));
                if inner.file_type().is_ok_and(|t| t.is_dir()) {
                    pending.push(path);
                }
            }
        }
        note(&name, newest);
    }
    Ok(prefixes.into_iter().collect())
}

/// Removes every object of `prefix`: its flat files and its nested directory.
fn remove_prefix(root: &Path, prefix: &str) -> std::io::Result<()> {
    match std::fs::remove_dir_all(root.join(prefix)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if flat_prefix(&name.to_string_lossy()) != Some(prefix) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes a file that may already be gone; true when it was there.
fn remove_if_present(path: &Path) -> Result<bool, UwsError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(e)),
    }
}

/// Removes an object: its flat file (and a `.meta` file beside it, if its file system took no
/// extended attribute), or else its nested-layout file, `.meta` file and emptied directories.
fn remove_object(root: &Path, flat: &Path, nested: &Path) -> Result<(), UwsError> {
    if remove_if_present(flat)? {
        // Only a file system without extended attributes has these; trying is one lookup.
        remove_if_present(&LocalBucket::meta_path(flat))?;
        return Ok(());
    }
    remove_if_present(&LocalBucket::meta_path(nested))?;
    remove_if_present(nested)?;
    // Removes the job's directories once their last object is gone; fails harmlessly otherwise.
    let mut dir = nested.parent();
    while let Some(d) = dir.filter(|d| *d != root && d.starts_with(root)) {
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

#[async_trait]
impl ResultStore for LocalBucket {
    async fn put_file(&self, key: &str, source: &Path, meta: &ObjectMeta) -> Result<u64, UwsError> {
        let path = self
            .object_path(key)
            .ok_or_else(|| UwsError::Store(format!("unsafe object key {key:?}")))?;
        let meta_text = format!("{}\n{}\n", meta.content_type, meta.filename);
        let source = source.to_path_buf();
        let root = self.root.clone();
        // One blocking task for the whole put rather than one per file-system call.
        tokio::task::spawn_blocking(move || put(&root, &path, &source, &meta_text))
            .await
            .map_err(|e| UwsError::Store(format!("local bucket: {e}")))?
    }

    async fn put_transient(
        &self,
        key: &str,
        source: &Path,
        meta: &ObjectMeta,
    ) -> Result<u64, UwsError> {
        if let Some(memory) = &self.memory {
            if !is_safe_key(key) {
                return Err(UwsError::Store(format!("unsafe object key {key:?}")));
            }
            let (path, limits) = (source.to_path_buf(), memory.clone());
            // One blocking task opens, sizes and reads the file (unless it could never fit).
            let read = tokio::task::spawn_blocking(move || -> std::io::Result<Option<Vec<u8>>> {
                let mut file = std::fs::File::open(&path)?;
                let size = file.metadata()?.len();
                if !limits.could_hold(size) {
                    return Ok(None);
                }
                let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                std::io::Read::read_to_end(&mut file, &mut bytes)?;
                Ok(Some(bytes))
            })
            .await
            .map_err(|e| UwsError::Store(format!("local bucket: {e}")))?
            .map_err(io)?;
            if let Some(bytes) = read {
                let size = bytes.len() as u64;
                if memory.insert(key, bytes.into(), meta.clone()).is_ok() {
                    return Ok(size);
                }
            }
        }
        self.put_file(key, source, meta).await
    }

    fn transient_room(&self) -> u64 {
        self.memory.as_ref().map_or(0, |memory| memory.max_bytes())
    }

    async fn offer_transient(
        &self,
        key: &str,
        bytes: Vec<u8>,
        meta: &ObjectMeta,
    ) -> Result<Offer, UwsError> {
        let Some(memory) = &self.memory else {
            return Ok(Offer::Declined(bytes));
        };
        if !is_safe_key(key) {
            return Err(UwsError::Store(format!("unsafe object key {key:?}")));
        }
        let size = bytes.len() as u64;
        Ok(match memory.insert(key, bytes.into(), meta.clone()) {
            Ok(()) => Offer::Kept(size),
            // Held by nobody else: the conversion back gives the same allocation.
            Err(bytes) => Offer::Declined(Vec::from(bytes)),
        })
    }

    async fn signed_url(
        &self,
        key: &str,
        valid_for: Duration,
        public_base: &str,
    ) -> Result<String, UwsError> {
        let expires = OffsetDateTime::now_utc().unix_timestamp()
            + i64::try_from(valid_for.as_secs()).unwrap_or(i64::MAX / 2);
        let signature = self.signer.sign(key, expires);
        Ok(format!(
            "{}/{FILES_ROUTE}/{key}?expires={expires}&signature={signature}",
            public_base.trim_end_matches('/')
        ))
    }

    async fn get_file(&self, key: &str, path: &Path) -> Result<u64, UwsError> {
        let bucket = self.clone();
        let (key, path) = (key.to_owned(), path.to_path_buf());
        tokio::task::spawn_blocking(move || -> Result<u64, UwsError> {
            let (mut object, _) = bucket.open_object(&key).map_err(io)?;
            let mut file = std::fs::File::create(&path).map_err(io)?;
            std::io::copy(&mut object, &mut file).map_err(io)
        })
        .await
        .map_err(|e| UwsError::Store(format!("local bucket: {e}")))?
    }

    async fn exists(&self, key: &str) -> Result<bool, UwsError> {
        if self.memory_object(key).is_some() {
            return Ok(true);
        }
        let bucket = self.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || match bucket.open_object(&key) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(e)),
        })
        .await
        .map_err(|e| UwsError::Store(format!("local bucket: {e}")))?
    }

    async fn delete(&self, key: &str) -> Result<(), UwsError> {
        if let Some(memory) = &self.memory
            && memory.remove(key)
        {
            return Ok(());
        }
        let (Some(flat), Some(nested)) = (self.object_path(key), self.nested_path(key)) else {
            return Ok(());
        };
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || remove_object(&root, &flat, &nested))
            .await
            .map_err(|e| UwsError::Store(format!("local bucket: {e}")))?
    }

    async fn prefixes(&self) -> Result<Vec<(String, Duration)>, UwsError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || list_prefixes(&root))
            .await
            .map_err(|e| UwsError::Store(format!("local bucket: {e}")))?
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), UwsError> {
        if !is_safe_key(prefix) || prefix.contains('/') {
            return Err(UwsError::Store(format!("unsafe object prefix {prefix:?}")));
        }
        let (root, prefix) = (self.root.clone(), prefix.to_owned());
        tokio::task::spawn_blocking(move || remove_prefix(&root, &prefix))
            .await
            .map_err(|e| UwsError::Store(format!("local bucket: {e}")))?
            .map_err(io)
    }
}

/// The local bucket works when its directory takes a new file: a full or read-only disk would
/// fail every job at its last step.
#[async_trait]
impl uws::health::HealthCheck for LocalBucket {
    fn component(&self) -> &str {
        "result bucket"
    }

    async fn check(&self) -> Result<String, UwsError> {
        let failed = |e: std::io::Error| {
            // No path: the line is shown to anyone who asks `/readyz` or `/availability`.
            UwsError::ResultStore(format!("the bucket directory is not writable: {e}"))
        };
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(failed)?;
        // A name no object key can have (keys are `{job}/{result}`), unique per probe.
        let probe = self.root.join(format!(
            ".health-{}",
            OffsetDateTime::now_utc().unix_timestamp_nanos()
        ));
        tokio::fs::write(&probe, b"ok").await.map_err(failed)?;
        tokio::fs::remove_file(&probe).await.map_err(failed)?;
        Ok("the bucket directory is writable".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_bucket() {
        for bad in [
            "",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a b",
            "a\\b",
        ] {
            assert!(!is_safe_key(bad), "{bad:?}");
        }
        assert!(is_safe_key("0123abcd/result.fits"));
    }

    #[tokio::test]
    async fn objects_are_written_whole_and_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bucket = LocalBucket::new(dir.path().join("bucket"), UrlSigner::new(b"k"));
        let src = dir.path().join("src.fits");
        std::fs::write(&src, b"SIMPLE").expect("write");
        let meta = ObjectMeta {
            content_type: "application/fits".into(),
            filename: "x.fits".into(),
        };
        let size = bucket
            .put_file("job/result.fits", &src, &meta)
            .await
            .expect("put");
        assert_eq!(size, 6);
        // The caller removes its scratch file; the object stays.
        std::fs::remove_file(&src).expect("remove the source");
        let path = bucket.object_path("job/result.fits").expect("path");
        assert_eq!(std::fs::read(&path).expect("read"), b"SIMPLE");
        assert_eq!(
            bucket
                .object_meta("job/result.fits")
                .await
                .map(|m| m.filename),
            Some("x.fits".to_owned())
        );
        let url = bucket
            .signed_url(
                "job/result.fits",
                Duration::from_secs(60),
                "http://h/api/cutout/",
            )
            .await
            .expect("url");
        assert!(url.starts_with("http://h/api/cutout/files/job/result.fits?expires="));
        bucket.delete("job/result.fits").await.expect("delete");
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn an_object_is_one_file_with_its_metadata_in_an_attribute() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("bucket");
        let bucket = LocalBucket::new(root.clone(), UrlSigner::new(b"k"));
        let src = dir.path().join("src.fits");
        std::fs::write(&src, b"SIMPLE").expect("write");
        let meta = ObjectMeta {
            content_type: "application/fits".into(),
            filename: "x.fits".into(),
        };
        bucket
            .put_file("job/0a/result.fits", &src, &meta)
            .await
            .expect("put");
        let entries: Vec<String> = std::fs::read_dir(&root)
            .expect("root")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        let xattrs = rustix::fs::getxattr(&src, META_ATTRIBUTE, &mut [0u8; 64][..]).is_ok();
        if xattrs {
            assert_eq!(
                entries,
                ["job+0a+result.fits"],
                "no directory, no .meta file"
            );
        }
        let (_, read) = bucket.open_object("job/0a/result.fits").expect("open");
        assert_eq!(
            read.map(|m| m.content_type).as_deref(),
            Some("application/fits")
        );
        assert_eq!(
            bucket.prefixes().await.expect("prefixes").len(),
            1,
            "one job"
        );
        bucket.delete("job/0a/result.fits").await.expect("delete");
        assert_eq!(std::fs::read_dir(&root).expect("root").count(), 0);
    }

    #[tokio::test]
    async fn objects_of_the_nested_layout_are_still_read_listed_and_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("bucket");
        let bucket = LocalBucket::new(root.clone(), UrlSigner::new(b"k"));
        let nested = root.join("job/0a");
        std::fs::create_dir_all(&nested).expect("dirs");
        std::fs::write(nested.join("result.fits"), b"SIMPLE").expect("object");
        std::fs::write(nested.join("result.fits.meta"), "text/plain\nx.txt\n").expect("meta");
        let (_, meta) = bucket.open_object("job/0a/result.fits").expect("open");
        assert_eq!(meta.map(|m| m.filename).as_deref(), Some("x.txt"));
        let prefixes = bucket.prefixes().await.expect("prefixes");
        assert_eq!(
            prefixes.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            ["job"]
        );
        bucket.delete("job/0a/result.fits").await.expect("delete");
        assert!(
            !root.join("job").exists(),
            "emptied directories are removed"
        );

        // delete_prefix takes both layouts at once.
        std::fs::create_dir_all(&nested).expect("dirs");
        std::fs::write(nested.join("result.fits"), b"SIMPLE").expect("object");
        std::fs::write(root.join("job+0b+result.fits"), b"SIMPLE").expect("flat object");
        std::fs::write(root.join("other+0c+result.fits"), b"SIMPLE").expect("other job");
        bucket.delete_prefix("job").await.expect("delete prefix");
        let left: Vec<String> = std::fs::read_dir(&root)
            .expect("root")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["other+0c+result.fits"]);
    }

    #[tokio::test]
    async fn health_check_fails_when_the_bucket_cannot_take_a_file() {
        use uws::health::HealthCheck;
        let dir = tempfile::tempdir().expect("tempdir");
        let bucket = LocalBucket::new(dir.path().join("bucket"), UrlSigner::new(b"k"));
        bucket.check().await.expect("a fresh directory is writable");
        assert_eq!(
            std::fs::read_dir(dir.path().join("bucket"))
                .expect("bucket dir")
                .count(),
            0,
            "the probe file is removed"
        );
        // A bucket whose root is a plain file cannot hold objects.
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("write");
        let broken = LocalBucket::new(file, UrlSigner::new(b"k"));
        assert!(broken.check().await.is_err());
    }
}
