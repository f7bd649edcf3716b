//! The result store and the source-image cache, chosen by the `[bucket]` configuration.
//!
//! Kept apart from `serve.rs` so the roles that will run alone (frontend, worker) build their
//! buckets the same way.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bucket::{BucketUrl, CloudSettings, LocalBucket, ObjectBucket, SourceCache};
use uws::health::HealthCheck;
use uws::results::ResultStore;

use crate::config::{BucketKind, Config};

/// Credentials and endpoints for every cloud bucket, results and sources alike.
pub fn cloud_settings(config: &Config) -> CloudSettings {
    let b = &config.bucket;
    CloudSettings {
        s3_endpoint: b.s3_endpoint.clone(),
        s3_region: b.s3_region.clone(),
        s3_access_key_id: b.s3_access_key_id.clone(),
        s3_secret_access_key: b
            .s3_secret_access_key
            .as_ref()
            .map(|s| s.expose().to_owned()),
        gcs_service_account_path: b.gcs_service_account_path.clone(),
        request_timeout: Duration::from_secs(b.request_timeout.max(1)),
        max_retries: b.max_retries,
    }
}

/// The result store the configuration asks for.
pub struct ResultBucket {
    pub store: Arc<dyn ResultStore>,
    /// The local bucket when it is the one in use, since the frontend then serves its objects.
    pub local: Option<LocalBucket>,
    /// The bucket as VOSI availability and `/readyz` probe it, local or cloud alike.
    pub health: Arc<dyn HealthCheck>,
}

pub fn build_result_store(config: &Config, local: LocalBucket) -> anyhow::Result<ResultBucket> {
    let b = &config.bucket;
    let scheme = match b.kind {
        BucketKind::Local => {
            return Ok(ResultBucket {
                store: Arc::new(local.clone()),
                health: Arc::new(local.clone()),
                local: Some(local),
            });
        }
        BucketKind::S3 => "s3://",
        BucketKind::Gcs => "gs://",
    };
    let url = b
        .url
        .as_deref()
        .with_context(|| format!("bucket.url ({scheme}BUCKET/PREFIX) is required"))?;
    anyhow::ensure!(
        url.starts_with(scheme),
        "bucket.url {url:?} does not match bucket.kind: it must start with {scheme}"
    );
    let bucket = ObjectBucket::open(url, &cloud_settings(config))
        .with_context(|| format!("cannot open the result bucket {url}"))?;
    Ok(ResultBucket {
        store: Arc::new(bucket.clone()),
        local: None,
        health: Arc::new(bucket),
    })
}

/// The cache for source images of bucket repositories, if any repository is a bucket.
pub fn build_source_cache(
    config: &Config,
    data_dir: &Path,
) -> anyhow::Result<Option<Arc<SourceCache>>> {
    let mut any = false;
    for (name, location) in &config.repositories {
        let Some(url) = location.to_str().filter(|u| BucketUrl::is_bucket_url(u)) else {
            continue;
        };
        BucketUrl::parse(url).with_context(|| format!("repository {name}"))?;
        any = true;
    }
    if !any {
        return Ok(None);
    }
    let cache = SourceCache::new(
        data_dir.join("source-cache"),
        config.bucket.source_cache_max_bytes,
        cloud_settings(config),
    )
    .context("cannot create the source cache")?
    .with_range_policy(config.ranges.policy());
    Ok(Some(Arc::new(cache)))
}
