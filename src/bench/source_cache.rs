//! Source-cache cost: a cutout whose source lives in an S3 bucket, through the worker's source
//! cache, as a miss (download into an empty cache, then cut) and as a hit (the cached copy, then
//! cut). Any S3-compatible server on loopback will do, e.g. `moto_server`.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::BenchArgs;
use super::Row;
use super::load::stats;

/// Cutouts whose source is in an S3 bucket: miss (empty cache: download, then cut) and hit.
pub async fn measure_source_cache(
    args: &BenchArgs,
    endpoint: &str,
    dir: &std::path::Path,
    image: &std::path::Path,
    stencil: &soda::Stencil,
    provenance: &soda::Provenance,
) -> anyhow::Result<Vec<Row>> {
    use object_store::ObjectStoreExt;

    // S3 servers for tests (moto) create a bucket on an authorised PUT; the signature itself is
    // not checked. A bucket that already exists answers an error, which is fine.
    let create = reqwest::Client::new()
        .put(format!("{}/skycut-bench", endpoint.trim_end_matches('/')))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=bench/20200101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
        )
        .send()
        .await;
    if let Err(e) = create {
        anyhow::bail!("cannot reach the S3 server at {endpoint}: {e}");
    }
    let settings = bucket::CloudSettings {
        s3_endpoint: Some(endpoint.to_owned()),
        s3_region: Some("us-east-1".into()),
        s3_access_key_id: Some("bench".into()),
        s3_secret_access_key: Some("bench".into()),
        request_timeout: Duration::from_secs(120),
        max_retries: 0,
        ..bucket::CloudSettings::default()
    };
    let repository = "s3://skycut-bench/images";
    let url = bucket::BucketUrl::parse(repository)?;
    let store = settings.open(&url)?.store;
    let bytes = std::fs::read(image)?;
    let mib = bytes.len() >> 20;
    store
        .put(&url.object_path("bench.fits"), bytes.into())
        .await
        .context("cannot upload the bench image")?;
    let out = dir.join("cached.fits");
    let cut = |source: &std::path::Path| -> anyhow::Result<()> {
        soda::cut_to_file(source, stencil, provenance, &out)?;
        Ok(())
    };
    let mut misses = Vec::with_capacity(args.cache_requests);
    for _ in 0..args.cache_requests {
        let cache = bucket::SourceCache::new(dir.join("source-cache"), u64::MAX, settings.clone())?;
        let started = Instant::now();
        let source = cache.fetch(repository, "bench.fits").await?;
        cut(source.path())?;
        misses.push(started.elapsed());
    }
    let cache = bucket::SourceCache::new(dir.join("source-cache"), u64::MAX, settings.clone())?;
    drop(cache.fetch(repository, "bench.fits").await?);
    let mut hits = Vec::with_capacity(args.cache_requests);
    for _ in 0..args.cache_requests {
        let started = Instant::now();
        let source = cache.fetch(repository, "bench.fits").await?;
        cut(source.path())?;
        hits.push(started.elapsed());
    }
    let what = format!(
        "{}x{} cutout of an S3-held {} MiB image",
        args.cutout_size, args.cutout_size, mib
    );
    Ok(vec![
        Row {
            latency: Some(stats(misses)),
            ..Row::cutout(format!("{what}, source-cache miss: download + cut"))
        },
        Row {
            latency: Some(stats(hits)),
            ..Row::cutout(format!("{what}, source-cache hit: cached copy + cut"))
        },
    ])
}
