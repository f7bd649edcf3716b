//! API boundary: where result objects live and how a client is handed one.
//!
//! A result is written once, completely, before its job becomes COMPLETED; the URL a client
//! follows is signed afresh from the object key on every read and never stored.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::UwsError;

/// What a client needs to know about a result object when it downloads it.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    pub content_type: String,
    /// The file name offered in `Content-Disposition`.
    pub filename: String,
}

/// What became of a result offered to [`ResultStore::offer_transient`].
#[derive(Debug)]
pub enum Offer {
    /// Stored, this many bytes.
    Kept(u64),
    /// Not taken: the bytes, back.
    Declined(Vec<u8>),
}

#[async_trait]
pub trait ResultStore: Send + Sync {
    /// Stores the file at `path` under `key`, all or nothing, and returns its size in bytes.
    /// A store may keep the file itself rather than a copy (the local bucket links it), so the
    /// caller must not change the file afterwards; it may delete it.
    async fn put_file(&self, key: &str, path: &Path, meta: &ObjectMeta) -> Result<u64, UwsError>;

    /// Stores a result whose client reads it at once and then not again (a synchronous
    /// request's): like [`ResultStore::put_file`], except that a store may keep it for less than
    /// the job's lifetime (a bounded time, in memory). The object is readable when this returns.
    async fn put_transient(
        &self,
        key: &str,
        path: &Path,
        meta: &ObjectMeta,
    ) -> Result<u64, UwsError> {
        self.put_file(key, path, meta).await
    }

    /// The most bytes of one transient result this store would keep in memory rather than in
    /// a file ([`ResultStore::offer_transient`]); 0, the default, when it keeps none there, so
    /// that a worker cuts such a result to a file as any other.
    fn transient_room(&self) -> u64 {
        0
    }

    /// Offers a transient result (see [`ResultStore::put_transient`]) that is already in
    /// memory, so that a store that keeps such results there takes it without a file ever
    /// being written. A store without room (or without memory) declines and hands the bytes
    /// back, for the caller to store as a file. A kept object is readable when this returns.
    async fn offer_transient(
        &self,
        key: &str,
        bytes: Vec<u8>,
        meta: &ObjectMeta,
    ) -> Result<Offer, UwsError> {
        let _ = (key, meta);
        Ok(Offer::Declined(bytes))
    }

    /// A URL that gives the object to anyone holding it, for `valid_for`. `public_base` is the
    /// service's external base URL, for stores the service itself serves.
    async fn signed_url(
        &self,
        key: &str,
        valid_for: Duration,
        public_base: &str,
    ) -> Result<String, UwsError>;

    /// Copies the object `key` to a new file at `path` and returns its size: how a worker reads
    /// an input that the frontend stored beside a job's results (a bulk job's plan). A missing
    /// object is an error.
    async fn get_file(&self, key: &str, path: &Path) -> Result<u64, UwsError>;

    /// Whether an object is stored under `key`: how workers sharing a bulk job find the shards
    /// already cut.
    async fn exists(&self, key: &str) -> Result<bool, UwsError>;

    /// Removes an object; a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), UwsError>;

    /// The first segments of the keys in the store (a job's results are all under its ID),
    /// each with the age of the newest object under it, for the sweep of prefixes that no job
    /// owns. A store that cannot list answers none.
    async fn prefixes(&self) -> Result<Vec<(String, Duration)>, UwsError> {
        Ok(Vec::new())
    }

    /// Removes every object whose key starts with `prefix/`.
    async fn delete_prefix(&self, prefix: &str) -> Result<(), UwsError> {
        let _ = prefix;
        Ok(())
    }
}
