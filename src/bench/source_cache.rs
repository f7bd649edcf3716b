//! Source-cache cost: a cutout whose source lives in an S3 bucket, opened the way a worker opens
//! it (`worker::sources::JobSources`), cold by ranged reads (headers and rows only), cold by a
//! whole download into an empty cache, and warm (the cached copy), each then cut; each row names
//! the bytes fetched and the requests made. Any S3-compatible server on loopback will do, e.g.
//! `moto_server`.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::BenchArgs;
use super::Row;
use super::load::stats;

/// Cutouts whose source is in an S3 bucket: cold by ranges, cold by a whole download, warm.
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
    // The worker's own way in: `JobSources::open`, which chooses between ranged reads, a whole
    // download and the cached copy exactly as a job does.
    let repositories = soda::repository::Repositories::new([(
        "bench".to_owned(),
        std::path::PathBuf::from(repository),
    )]);
    let id = soda::SourceId::parse("butler://bench/bench")?;
    let options = soda::CutOptions::default();
    let cache_dir = dir.join("source-cache");
    let fresh = |policy: bucket::RangePolicy| -> anyhow::Result<bucket::SourceCache> {
        Ok(
            bucket::SourceCache::new(cache_dir.clone(), u64::MAX, settings.clone())?
                .with_range_policy(policy),
        )
    };
    let whole_only = bucket::RangePolicy {
        enabled: false,
        ..bucket::RangePolicy::default()
    };
    // (latencies, bytes fetched, requests) of each way.
    let mut ranged = (Vec::with_capacity(args.cache_requests), 0, 0);
    let mut whole = (Vec::with_capacity(args.cache_requests), 0, 0);
    let mut warm = (Vec::with_capacity(args.cache_requests), 0, 0);
    for _ in 0..args.cache_requests {
        for (policy, into) in [
            (bucket::RangePolicy::default(), &mut ranged),
            (whole_only.clone(), &mut whole),
        ] {
            let cache = fresh(policy)?;
            let started = Instant::now();
            let source = open_source(&cache, &repositories, &id, stencil, &options).await?;
            cut(&source.path)?;
            into.0.push(started.elapsed());
            (into.1, into.2) = (source.fetched_bytes, source.requests);
        }
    }
    let cache = fresh(bucket::RangePolicy::default())?;
    drop(cache.fetch(repository, "bench.fits").await?);
    for _ in 0..args.cache_requests {
        let started = Instant::now();
        let source = open_source(&cache, &repositories, &id, stencil, &options).await?;
        cut(&source.path)?;
        warm.0.push(started.elapsed());
        (warm.1, warm.2) = (source.fetched_bytes, source.requests);
    }
    let what = format!(
        "{}x{} cutout of an S3-held {} MiB image",
        args.cutout_size, args.cutout_size, mib
    );
    let fetched = |bytes: u64, requests: u64| {
        format!(
            "{:.1} KiB in {requests} request{}",
            bytes as f64 / 1024.0,
            if requests == 1 { "" } else { "s" }
        )
    };
    Ok(vec![
        Row {
            latency: Some(stats(ranged.0)),
            ..Row::cutout(format!(
                "{what}, cold by ranges ({}) + cut",
                fetched(ranged.1, ranged.2)
            ))
        },
        Row {
            latency: Some(stats(whole.0)),
            ..Row::cutout(format!(
                "{what}, cold whole download ({}) + cut",
                fetched(whole.1, whole.2)
            ))
        },
        Row {
            latency: Some(stats(warm.0)),
            ..Row::cutout(format!(
                "{what}, warm: cached copy ({}) + cut",
                fetched(warm.1, warm.2)
            ))
        },
    ])
}

/// Opens the bench image as a job's cutout of `stencil` would.
async fn open_source(
    cache: &bucket::SourceCache,
    repositories: &soda::repository::Repositories,
    id: &soda::SourceId,
    stencil: &soda::Stencil,
    options: &soda::CutOptions,
) -> anyhow::Result<worker::sources::SourceFile> {
    let sources = worker::sources::JobSources {
        repositories,
        cache: Some(cache),
        token: None,
    };
    sources
        .open(id, Some((stencil, options)), |e| {
            uws::JobError::new(uws::ErrorCode::Internal, e.to_string())
        })
        .await
        .map_err(|e| anyhow::anyhow!("opening the bench image: {}", e.message))
}
