//! Opening cloud stores (S3 and Google Cloud Storage, and plain HTTP(S) image servers for source
//! images) through `object_store`, from settings the binary hands in; nothing here reads the
//! environment.
//!
//! One crate covers both protocols, their signing (AWS SigV4 presigned GET, GCS V4 signing with
//! a service-account key, done offline), multipart upload and retries, so Skycut carries no
//! hand-written cloud client.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::signer::Signer;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::error::BucketError;

/// Which protocol a bucket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    S3,
    Gcs,
    /// An image server read with plain GET and HEAD, with the job owner's delegated token:
    /// it decides per user who may read what, so source images only.
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The server checks each reader's own credentials (the job owner's delegated token) rather
    /// than the service's.
    pub fn checks_each_reader(self) -> bool {
        matches!(self, Scheme::Http | Scheme::Https)
    }
}

/// A bucket and a key prefix inside it, parsed from `s3://BUCKET/PREFIX` or `gs://BUCKET/PREFIX`;
/// for an image server `https://HOST[:PORT]/PREFIX`, the "bucket" is the host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUrl {
    pub scheme: Scheme,
    pub bucket: String,
    /// No leading or trailing `/`; may be empty.
    pub prefix: String,
}

impl BucketUrl {
    /// Whether a string names a bucket (or image server) rather than a local directory.
    pub fn is_bucket_url(s: &str) -> bool {
        ["s3://", "gs://", "http://", "https://"]
            .iter()
            .any(|scheme| s.starts_with(scheme))
    }

    pub fn parse(s: &str) -> Result<BucketUrl, BucketError> {
        let (scheme, rest) = [Scheme::S3, Scheme::Gcs, Scheme::Http, Scheme::Https]
            .into_iter()
            .find_map(|scheme| {
                s.strip_prefix(scheme.as_str())
                    .and_then(|r| r.strip_prefix("://"))
                    .map(|rest| (scheme, rest))
            })
            .ok_or_else(|| {
                BucketError::Config(format!(
                    "{s:?} is not an s3://, gs://, http:// or https:// URL"
                ))
            })?;
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
        format!(
            "{}://{}/{}",
            self.scheme.as_str(),
            self.bucket,
            self.object_path(name)
        )
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
            Scheme::Http | Scheme::Https => Err(BucketError::Config(format!(
                "{} is an image server: it can hold source images, not results",
                url.display_object("")
            ))),
        }
    }

    /// A client for an image server, reading as the holder of `token` (sent as
    /// `Authorization: Bearer`, marked sensitive so that no log of the client shows it); without
    /// a token, anonymously. No request is made here.
    pub fn open_image_server(
        &self,
        url: &BucketUrl,
        token: Option<&str>,
    ) -> Result<Arc<dyn ObjectStore>, BucketError> {
        if !url.scheme.checks_each_reader() {
            return Ok(self.open(url)?.store);
        }
        let mut options = self
            .client_options()
            .with_allow_http(url.scheme == Scheme::Http);
        if let Some(token) = token {
            let mut value =
                http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    BucketError::Config("the delegated token is not a header value".into())
                })?;
            value.set_sensitive(true);
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, value);
            options = options.with_default_headers(headers);
        }
        let store = HttpBuilder::new()
            .with_url(format!("{}://{}", url.scheme.as_str(), url.bucket))
            .with_client_options(options)
            .with_retry(self.retry())
            .build()
            .map_err(|e| BucketError::Config(e.to_string()))?;
        Ok(Arc::new(store))
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
        let h = BucketUrl::parse("https://images.example.org:8443/repo/v1/").expect("parse");
        assert_eq!(h.scheme, Scheme::Https);
        assert_eq!(h.bucket, "images.example.org:8443");
        assert_eq!(
            h.display_object("m31.fits"),
            "https://images.example.org:8443/repo/v1/m31.fits"
        );
        assert!(BucketUrl::parse("s3:///x").is_err());
        assert!(BucketUrl::parse("/data/images").is_err());
    }
}
