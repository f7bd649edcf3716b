//! Source-cache cost: a cutout whose source lives in an S3 bucket, opened the way a worker opens
//! it (`worker::sources::JobSources`), cold by ranged reads (headers and rows only), cold by a
//! whole download into an empty cache, and warm (the cached copy), each then cut; each row names
//! the bytes fetched and the requests made. Any S3-compatible server on loopback will do, e.g.
//! `moto_server`.
//!
//! A loopback store answers in well under a millisecond, which hides what a cloud store's
//! latency does to each way of reading. So the two cold reads are timed again through a relay
//! that holds every request `--s3-latency-ms` before passing it on ([`delaying_relay`]): the
//! extra time over the direct read, in units of that latency, is the number of round trips the
//! read waits for one after another.

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
    let latency = Duration::from_millis(args.s3_latency_ms);
    let relay = if latency.is_zero() {
        None
    } else {
        Some(delaying_relay(endpoint, latency).await?)
    };
    let slow_settings = relay.as_ref().map(|(url, _)| bucket::CloudSettings {
        s3_endpoint: Some(url.clone()),
        ..settings.clone()
    });
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
    // The same two cold reads through the delaying relay: (latencies, requests).
    let mut slow_ranged = (Vec::with_capacity(args.cache_requests), 0);
    let mut slow_whole = (Vec::with_capacity(args.cache_requests), 0);
    if let Some(slow) = &slow_settings {
        for _ in 0..args.cache_requests {
            for (policy, into) in [
                (bucket::RangePolicy::default(), &mut slow_ranged),
                (whole_only.clone(), &mut slow_whole),
            ] {
                let cache = bucket::SourceCache::new(cache_dir.clone(), u64::MAX, slow.clone())?
                    .with_range_policy(policy);
                let started = Instant::now();
                let source = open_source(&cache, &repositories, &id, stencil, &options).await?;
                cut(&source.path)?;
                into.0.push(started.elapsed());
                into.1 = source.requests;
            }
        }
    }
    if let Some((_, task)) = relay {
        task.abort();
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
    let ranged_median = stats(ranged.0.clone()).median;
    let whole_median = stats(whole.0.clone()).median;
    let mut rows = vec![
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
    ];
    if !latency.is_zero() {
        for (way, (samples, requests), direct) in [
            ("cold by ranges", slow_ranged, ranged_median),
            ("cold whole download", slow_whole, whole_median),
        ] {
            let slow = stats(samples);
            let round_trips =
                (slow.median.as_secs_f64() - direct.as_secs_f64()) / latency.as_secs_f64();
            rows.push(Row {
                latency: Some(slow),
                ..Row::cutout(format!(
                    "{what}, {way} + cut, store {} ms away per request ({requests} requests): \
                     direct + {round_trips:.1} round trips",
                    args.s3_latency_ms
                ))
            });
        }
    }
    Ok(rows)
}

/// A TCP relay on loopback to the S3 server at `endpoint` that holds each piece of a request
/// for `delay` before passing it on (a GET is one piece), and passes answers straight back:
/// a store `delay` away per request. Returns its URL and the task to abort when done.
async fn delaying_relay(
    endpoint: &str,
    delay: Duration,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let upstream = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let requests = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                        tokio::time::sleep(delay).await;
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    to_server.shutdown().await.ok();
                };
                let answers = async {
                    tokio::io::copy(&mut from_server, &mut to_client).await.ok();
                    to_client.shutdown().await.ok();
                };
                tokio::join!(requests, answers);
            });
        }
    });
    Ok((url, task))
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
