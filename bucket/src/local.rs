//! The local-directory bucket of `skycut serve`: objects are files under one directory, written
//! to a temporary name and renamed into place so a reader never sees half an object.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use uws::UwsError;
use uws::results::{ObjectMeta, ResultStore};

use crate::signing::UrlSigner;

/// The path of the route that serves local objects, under the service's base URL.
pub const FILES_ROUTE: &str = "files";

/// A result store in a local directory. Cloning shares nothing mutable (a path and a key).
#[derive(Clone, Debug)]
pub struct LocalBucket {
    root: PathBuf,
    signer: UrlSigner,
}

impl LocalBucket {
    pub fn new(root: PathBuf, signer: UrlSigner) -> LocalBucket {
        LocalBucket { root, signer }
    }

    pub fn signer(&self) -> &UrlSigner {
        &self.signer
    }

    /// The file that holds an object, or None for a key that could escape the bucket.
    pub fn object_path(&self, key: &str) -> Option<PathBuf> {
        if !is_safe_key(key) {
            return None;
        }
        Some(self.root.join(key))
    }

    fn meta_path(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".meta");
        PathBuf::from(p)
    }

    /// Reads the content type and file name stored beside an object.
    pub async fn object_meta(&self, key: &str) -> Option<ObjectMeta> {
        let path = self.object_meta_path(key)?;
        Self::parse_meta(&tokio::fs::read_to_string(path).await.ok()?)
    }

    /// The file beside an object that holds its metadata (see [`LocalBucket::parse_meta`]).
    pub fn object_meta_path(&self, key: &str) -> Option<PathBuf> {
        Some(Self::meta_path(&self.object_path(key)?))
    }

    /// The content type and file name from the text of an object's metadata file.
    pub fn parse_meta(text: &str) -> Option<ObjectMeta> {
        let mut lines = text.lines();
        Some(ObjectMeta {
            content_type: lines.next()?.to_owned(),
            filename: lines.next()?.to_owned(),
        })
    }
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

/// Writes the metadata beside the object, then makes the object appear whole at `path`: a hard
/// link to `source` where the file system allows it (no byte is copied; `source` is complete and
/// never changed again, see [`ResultStore::put_file`]), else a copy to a temporary name renamed
/// into place (a rename is atomic only within one file system, and the scratch file may be
/// elsewhere).
fn put(path: &Path, source: &Path, meta_text: &str) -> Result<u64, UwsError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(LocalBucket::meta_path(path), meta_text).map_err(io)?;
    if std::fs::hard_link(source, path).is_ok() {
        return Ok(std::fs::metadata(path).map_err(io)?.len());
    }
    let tmp = path.with_extension("partial");
    let size = std::fs::copy(source, &tmp).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(size)
}

/// The directories under `root` (one per job), each with the age of the newest entry under it
/// (the directory itself included). Names that start with `.` (health probes) are skipped.
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
    let mut prefixes = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
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
        prefixes.push((name, newest));
    }
    Ok(prefixes)
}

#[async_trait]
impl ResultStore for LocalBucket {
    async fn put_file(&self, key: &str, source: &Path, meta: &ObjectMeta) -> Result<u64, UwsError> {
        let path = self
            .object_path(key)
            .ok_or_else(|| UwsError::Store(format!("unsafe object key {key:?}")))?;
        let meta_text = format!("{}\n{}\n", meta.content_type, meta.filename);
        let source = source.to_path_buf();
        // One blocking task for the whole put rather than one per file-system call.
        tokio::task::spawn_blocking(move || put(&path, &source, &meta_text))
            .await
            .map_err(|e| UwsError::Store(format!("local bucket: {e}")))?
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

    async fn delete(&self, key: &str) -> Result<(), UwsError> {
        let Some(path) = self.object_path(key) else {
            return Ok(());
        };
        for p in [Self::meta_path(&path), path.clone()] {
            match tokio::fs::remove_file(&p).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        if let Some(parent) = path.parent() {
            // Removes the job's directory once its last object is gone; fails harmlessly otherwise.
            let _ = tokio::fs::remove_dir(parent).await;
        }
        Ok(())
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
        match tokio::fs::remove_dir_all(self.root.join(prefix)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
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
