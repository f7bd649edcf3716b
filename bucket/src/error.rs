//! The one error type of the bucket crate, sorted by what a job should make of it: a missing
//! object is the client's `NotFound`, refused credentials need an operator (fatal), anything else
//! (unreachable, throttled, I/O) may pass and is transient.

/// Why a bucket operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// A bucket URL or configuration that cannot work (`s3://` without a bucket name, ...).
    #[error("bucket configuration: {0}")]
    Config(String),
    /// The object does not exist.
    #[error("object {0} does not exist")]
    NotFound(String),
    /// The store refused our credentials or their rights.
    #[error("the store refused access to {url}: {message}")]
    PermissionDenied { url: String, message: String },
    /// The store could not be reached or failed; trying again later may succeed.
    #[error("the store failed on {url}: {message}")]
    Unavailable { url: String, message: String },
    /// The object changed while it was being read by ranges (another ETag), so its parts would
    /// mix versions; reading it again may succeed.
    #[error("the object {0} changed while it was being read")]
    Changed(String),
    /// Local disk trouble (the source cache).
    #[error("local file {path}: {message}")]
    Io { path: String, message: String },
}

impl BucketError {
    /// Sorts an `object_store` error about `url`.
    pub(crate) fn from_store(url: &str, e: object_store::Error) -> BucketError {
        match e {
            object_store::Error::NotFound { .. } => BucketError::NotFound(url.to_owned()),
            object_store::Error::PermissionDenied { source, .. }
            | object_store::Error::Unauthenticated { source, .. } => {
                BucketError::PermissionDenied {
                    url: url.to_owned(),
                    message: source.to_string(),
                }
            }
            other => BucketError::Unavailable {
                url: url.to_owned(),
                message: other.to_string(),
            },
        }
    }

    pub(crate) fn io(path: &std::path::Path, e: std::io::Error) -> BucketError {
        BucketError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}
