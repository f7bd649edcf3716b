//! Opening cloud stores (S3 and Google Cloud Storage) through `object_store`, from settings the
//! binary hands in; nothing here reads the environment.
//!
//! One crate covers both protocols, their signing (AWS SigV4 presigned GET, GCS V4 signing with
//! a service-account key, done offline), multipart upload and retries, so Skycut carries no
//! hand-written cloud client.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::signer::Signer;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::error::BucketError;

/// Which protocol a bucket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    S3,
    Gcs,
}

/// A bucket and a key prefix inside it, parsed from `s3://BUCKET/PREFIX` or `gs://BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUrl {
    pub scheme: Scheme,
    pub bucket: String,
    /// No leading or trailing `/`; may be empty.
    pub prefix: String,
}

impl BucketUrl {
    /// Whether a string names a bucket rather than a local directory.
    pub fn is_bucket_url(s: &str) -> bool {
        s.starts_with("s3://") || s.starts_with("gs://")
    }

    pub fn parse(s: &str) -> Result<BucketUrl, BucketError> {
        let (scheme, rest) = if let Some(rest) = s.strip_prefix("s3://") {
            (Scheme::S3, rest)
        } else if let Some(rest) = s.strip_prefix("gs://") {
            (Scheme::Gcs, rest)
        } else {
            return Err(BucketError::Config(format!(
                "{s:?} is not an s3:// or gs:// URL"
            )));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(BucketError::Config(format!("{s:?} names no bucket")));
        }
        Ok(BucketUrl {
            scheme,
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    /// The object path of `name` under the prefix.
    pub fn object_path(&self, name: &str) -> object_store::path::Path {
        if self.prefix.is_empty() {
            object_store::path::Path::from(name)
        } else {
            object_store::path::Path::from(format!("{}/{name}", self.prefix))
        }
    }

    /// `s3://bucket/prefix/name`, for messages.
    pub fn display_object(&self, name: &str) -> String {
        let scheme = match self.scheme {
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
        };
        format!("{scheme}://{}/{}", self.bucket, self.object_path(name))
    }
}

/// Credentials and endpoints for cloud stores, as the binary's configuration gives them. Any
/// `s3://` bucket (results or image sources) uses the S3 settings, any `gs://` one the GCS key.
#[derive(Clone, Default)]
pub struct CloudSettings {
    /// S3 endpoint for S3-compatible stores (MinIO, Ceph, moto); None = AWS.
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    /// A GCS service-account key file (JSON); it also signs URLs, offline.
    pub gcs_service_account_path: Option<PathBuf>,
    /// How long one request may take before it is retried or fails.
    pub request_timeout: Duration,
    /// How many times a failed request is retried (with backoff) before the job sees the error.
    pub max_retries: usize,
}

impl std::fmt::Debug for CloudSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudSettings")
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field("s3_secret_access_key", &"[redacted]")
            .field("gcs_service_account_path", &self.gcs_service_account_path)
            .finish_non_exhaustive()
    }
}

/// An opened bucket: the same client seen as a store and as a URL signer.
#[derive(Debug, Clone)]
pub struct OpenedStore {
    pub store: Arc<dyn ObjectStore>,
    pub signer: Arc<dyn Signer>,
}

impl CloudSettings {
    fn client_options(&self) -> ClientOptions {
        ClientOptions::new()
            .with_timeout(self.request_timeout)
            .with_connect_timeout(Duration::from_secs(5))
            .with_allow_http(
                self.s3_endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://")),
            )
    }

    fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.request_timeout.saturating_mul(2),
        }
    }

    /// Builds a client for one bucket. No request is made here.
    pub fn open(&self, url: &BucketUrl) -> Result<OpenedStore, BucketError> {
        let config = |e: object_store::Error| BucketError::Config(e.to_string());
        match url.scheme {
            Scheme::S3 => {
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(&url.bucket)
                    .with_region(self.s3_region.as_deref().unwrap_or("us-east-1"))
                    .with_client_options(self.client_options())
                    .with_retry(self.retry());
                if let Some(endpoint) = &self.s3_endpoint {
                    b = b.with_endpoint(endpoint);
                }
                if let Some(id) = &self.s3_access_key_id {
                    b = b.with_access_key_id(id);
                }
                if let Some(secret) = &self.s3_secret_access_key {
                    b = b.with_secret_access_key(secret);
                }
                let s3 = Arc::new(b.build().map_err(config)?);
                Ok(OpenedStore {
                    store: s3.clone(),
                    signer: s3,
                })
            }
            Scheme::Gcs => {
                let mut b = GoogleCloudStorageBuilder::new()
                    .with_bucket_name(&url.bucket)
                    .with_client_options(self.client_options())
                    .with_retry(self.retry());
                if let Some(path) = &self.gcs_service_account_path {
                    b = b.with_service_account_path(path.display().to_string());
                }
                let gcs = Arc::new(b.build().map_err(config)?);
                Ok(OpenedStore {
                    store: gcs.clone(),
                    signer: gcs,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_urls_parse() {
        let u = BucketUrl::parse("s3://results/skycut/").expect("parse");
        assert_eq!(u.scheme, Scheme::S3);
        assert_eq!(u.bucket, "results");
        assert_eq!(u.prefix, "skycut");
        assert_eq!(u.object_path("a/b.fits").as_ref(), "skycut/a/b.fits");
        let g = BucketUrl::parse("gs://images").expect("parse");
        assert_eq!((g.scheme, g.prefix.as_str()), (Scheme::Gcs, ""));
        assert_eq!(g.display_object("x.fits"), "gs://images/x.fits");
        assert!(BucketUrl::parse("s3:///x").is_err());
        assert!(BucketUrl::parse("/data/images").is_err());
    }
}
