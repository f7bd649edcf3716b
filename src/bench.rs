//! `skycut bench`: measures a sync cutout against its floor on this machine.
//!
//! The floor is the cutout done in-process by `soda::cut_to_file` alone (cfitsio reads the
//! section and writes the result file): what any service must pay. The service figure is a
//! real `skycut serve` in this process, driven over loopback HTTP: GET `/sync` → 303 → GET of
//! the signed URL, sequentially. Both are measured in the same run, so the ratio means
//! something even on a busy machine.
//!
//! With `--s3-endpoint` it also measures a cutout whose source lives in an S3 bucket, through
//! the worker's source cache: a miss (download into an empty cache, then cut) against a hit (the
//! cached copy, then cut). Any S3-compatible server on loopback will do, e.g. `moto_server`.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::Config;
use crate::serve;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Sequential sync requests (and floor repetitions) to time.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Side of the square float32 source image, in pixels.
    #[arg(long, default_value_t = 4096)]
    image_size: usize,
    /// Side of the square cutout, in pixels.
    #[arg(long, default_value_t = 100)]
    cutout_size: usize,
    /// Also leave a copy of the source image here (to time other tools on the same image; the
    /// stencil is the circle printed as `stencil:`).
    #[arg(long)]
    keep_image: Option<std::path::PathBuf>,
    /// Also measure source-cache hits and misses against the S3 server at this endpoint
    /// (`http://127.0.0.1:5000`); the bucket `skycut-bench` is created there.
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// Repetitions of each source-cache measurement (a miss downloads the whole image).
    #[arg(long, default_value_t = 20)]
    cache_requests: usize,
}

/// Median and 95th percentile of a set of durations.
struct Stats {
    median: Duration,
    p95: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).copied().unwrap_or_default()
    };
    Stats {
        median: at(0.5),
        p95: at(0.95),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("skycut-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("images"))?;
    let result = measure(&args, &dir).await;
    std::fs::remove_dir_all(&dir).ok();
    result
}

async fn measure(args: &BenchArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let scale = 0.2 / 3600.0;
    let (ra, dec) = (150.0, 2.0);
    let image = dir.join("images/bench.fits");
    eprintln!(
        "writing a {0}x{0} float32 image ({1} MiB)…",
        args.image_size,
        args.image_size * args.image_size * 4 / (1 << 20)
    );
    soda::write_synthetic_image(
        &image,
        &soda::SyntheticImage {
            nx: args.image_size,
            ny: args.image_size,
            ra_deg: ra,
            dec_deg: dec,
            pixel_scale_deg: scale,
        },
    )?;
    // A circle of diameter N−1 pixels spans N pixel centres.
    let radius = (args.cutout_size as f64 - 1.0) / 2.0 * scale;
    let circle = format!("{ra} {dec} {radius}");

    // Floor: the cutout alone, in this process.
    let stencil = soda::Stencil::parse_circle(&circle)?;
    let provenance = soda::Provenance {
        source_id: "butler://bench/bench".into(),
        stencil: stencil.to_string(),
        software: "bench".into(),
        time_utc: uws::timestamp::format(uws::timestamp::now()),
    };
    let out = dir.join("floor.fits");
    let mut floor = Vec::with_capacity(args.requests);
    let mut masked = Vec::with_capacity(args.requests);
    let mut shape = (0, 0);
    let mask = soda::CutOptions {
        mask: true,
        ..soda::CutOptions::default()
    };
    // Masked and plain cutouts alternate, so that both see the same machine load.
    for _ in 0..args.requests {
        let started = Instant::now();
        let cut = soda::cut_to_file(&image, &stencil, &provenance, &out)?;
        floor.push(started.elapsed());
        shape = (cut.region.width(), cut.region.height());
        let started = Instant::now();
        soda::cut_to_file_with(&image, &stencil, &provenance, &out, mask)?;
        masked.push(started.elapsed());
    }
    let floor = stats(floor);
    let masked = stats(masked);
    if let Some(keep) = &args.keep_image {
        std::fs::copy(&image, keep)
            .with_context(|| format!("copying the image to {}", keep.display()))?;
    }
    if let Some(endpoint) = &args.s3_endpoint {
        measure_source_cache(args, endpoint, dir, &image, &stencil, &provenance).await?;
    }

    // The service, embedded, over loopback HTTP.
    let loaded = Config::load(None)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let mut config = loaded.config;
    config.listen = "127.0.0.1:0".parse()?;
    config.data_dir = dir.join("data");
    config
        .repositories
        .insert("bench".into(), dir.join("images"));
    let running = serve::start(config, false).await?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let url = format!("{}/sync", running.base);
    let query = [("ID", "butler://bench/bench"), ("CIRCLE", circle.as_str())];
    let mut sync = Vec::with_capacity(args.requests);
    let mut errors = 0usize;
    for i in 0..args.requests + 5 {
        let started = Instant::now();
        let ok = one_sync(&client, &url, &query).await;
        // The first few requests warm connections and caches; they are not counted.
        if i >= 5 {
            sync.push(started.elapsed());
            errors += usize::from(ok.is_err());
        }
        if let Err(e) = ok {
            eprintln!("request failed: {e:#}");
        }
    }
    running.stop().await?;
    let sync = stats(sync);

    println!(
        "sync cutout {}x{} of a {n}x{n} float32 image, {} sequential requests",
        shape.0,
        shape.1,
        args.requests,
        n = args.image_size
    );
    println!("stencil: CIRCLE {circle}");
    println!("| measure | median ms | p95 ms | median / floor |");
    println!("|---|---|---|---|");
    println!(
        "| floor: soda::cut_to_file in-process | {} | {} | 1.00 |",
        ms(floor.median),
        ms(floor.p95)
    );
    println!(
        "| soda::cut_to_file_with MASK=true in-process | {} | {} | {:.2} |",
        ms(masked.median),
        ms(masked.p95),
        masked.median.as_secs_f64() / floor.median.as_secs_f64().max(1e-9)
    );
    println!(
        "| skycut serve: GET sync → 303 → GET signed URL | {} | {} | {:.2} |",
        ms(sync.median),
        ms(sync.p95),
        sync.median.as_secs_f64() / floor.median.as_secs_f64().max(1e-9)
    );
    println!("errors: {errors}");
    Ok(())
}

async fn one_sync(
    client: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
) -> anyhow::Result<()> {
    let r = client.get(url).query(query).send().await?;
    anyhow::ensure!(r.status() == 303, "sync answered {}", r.status());
    let location = r
        .headers()
        .get("location")
        .context("303 without Location")?
        .to_str()?
        .to_owned();
    let r = client.get(location).send().await?;
    anyhow::ensure!(r.status() == 200, "result answered {}", r.status());
    r.bytes().await?;
    Ok(())
}

/// Cutouts whose source is in an S3 bucket: miss (empty cache: download, then cut) and hit.
async fn measure_source_cache(
    args: &BenchArgs,
    endpoint: &str,
    dir: &std::path::Path,
    image: &std::path::Path,
    stencil: &soda::Stencil,
    provenance: &soda::Provenance,
) -> anyhow::Result<()> {
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
    let (misses, hits) = (stats(misses), stats(hits));
    println!(
        "{}x{} cutout of an S3-held {n}x{n} float32 image ({} MiB), {} repetitions each",
        args.cutout_size,
        args.cutout_size,
        mib,
        args.cache_requests,
        n = args.image_size
    );
    println!("| source cache | median ms | p95 ms |");
    println!("|---|---|---|");
    println!(
        "| miss: download + cut | {} | {} |",
        ms(misses.median),
        ms(misses.p95)
    );
    println!(
        "| hit: cached copy + cut | {} | {} |",
        ms(hits.median),
        ms(hits.p95)
    );
    Ok(())
}
