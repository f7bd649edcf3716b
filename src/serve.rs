//! `skycut serve`: frontend, worker and job store in one process, wired from the configuration.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bucket::{LocalBucket, UrlSigner};
use frontend::{App, AppState};
use soda::repository::Repositories;
use tokio_util::sync::CancellationToken;
use uws::events::{LocalPhaseEvents, PhaseEvents};
use uws::service::Uws;
use uws::store::JobStore;
use uws::timestamp;
use worker::{LocalQueue, Worker, WorkerSettings};

use crate::config::Config;

/// A started embedded service.
pub struct Running {
    /// `http://ADDR/api/cutout`.
    pub base: String,
    pub demo_images: Vec<soda::DemoImage>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    worker: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops taking requests, lets running jobs finish, and returns when everything has stopped.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let served = self.server.await;
        self.worker.await.ok();
        served?
    }
}

/// `skycut serve`: starts, prints where it listens, and runs until SIGINT or SIGTERM.
pub async fn run(config: Config, demo: bool) -> anyhow::Result<()> {
    let running = start(config, demo).await?;
    {
        let base = &running.base;
        let mut out = std::io::stdout().lock();
        writeln!(out, "skycut listening on {base}")?;
        if let Some(image) = running.demo_images.first() {
            writeln!(
                out,
                "curl --fail-with-body -L -o cutout.fits '{base}/sync?ID=butler://demo/{}&CIRCLE={}+{}+{}'",
                image.name,
                image.ra_deg,
                image.dec_deg,
                (image.radius_deg / 4.0 * 1e4).round() / 1e4
            )?;
        }
        out.flush()?;
    }
    shutdown_signal(running.shutdown.clone()).await;
    running.stop().await
}

/// Builds the embedded service from the configuration and starts serving on its listen address.
pub async fn start(mut config: Config, demo: bool) -> anyhow::Result<Running> {
    // Before anything is recorded: the requeue of the previous run's jobs counts its
    // transitions, and metrics recorded before a recorder exists are lost.
    crate::ops::recorder()?;
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let demo_images = if demo {
        let dir = data_dir.join("demo");
        std::fs::create_dir_all(&dir)?;
        let images = soda::write_demo_repository(&dir).context("cannot write demo images")?;
        config.repositories.entry("demo".into()).or_insert(dir);
        images
    } else {
        Vec::new()
    };
    warn_of_missing_repositories(&config);

    let signer = UrlSigner::new(&signing_key(&config, &data_dir)?);
    let store = wobbly::SqlJobStore::connect(&config.database_url(), &config.service_name, 8)
        .await
        .context("cannot open the job store")?;
    let sky_index: Arc<dyn uws::sky_index::ImageIndex> = Arc::new(store.sky_index());
    let store = Arc::new(store);
    let store_health: Arc<dyn uws::health::HealthCheck> = store.clone();
    let store: Arc<dyn JobStore> = Arc::new(uws::store::TimedJobStore(store));
    let events = Arc::new(LocalPhaseEvents::new());
    let (queue, queue_rx) = LocalQueue::new();
    let queue = Arc::new(queue);
    let crate::buckets::ResultBucket {
        store: results,
        local: local_bucket,
        health: bucket_health,
    } = crate::buckets::build_result_store(&config, local_bucket(&config, &data_dir, signer))?;
    let limits = config.jobs.limits();
    let uws = Uws::new(
        store.clone(),
        queue.clone(),
        events.clone(),
        results,
        limits,
    );
    let repositories = Arc::new(
        Repositories::new(config.repositories.clone())
            .following_symlinks_out(config.follow_repository_symlinks),
    );

    let scratch_dir = data_dir.join("scratch");
    std::fs::create_dir_all(&scratch_dir)?;
    let worker = Worker::new(
        uws.clone(),
        repositories.clone(),
        WorkerSettings {
            scratch_dir,
            software: format!("Skycut {}", env!("CARGO_PKG_VERSION")),
            part_bytes: config.bulk.part_bytes,
            shards: worker::ShardLimits {
                stamps: config.bulk.shard_stamps,
                images: config.bulk.shard_images,
            },
        },
    );
    // The worker and the indexer share one source cache (and its store clients).
    let source_cache = crate::buckets::build_source_cache(&config, &data_dir)?;
    let worker = match &source_cache {
        Some(cache) => worker.with_source_cache(cache.clone()),
        None => worker,
    };
    let shutdown = CancellationToken::new();
    let worker_task = tokio::spawn(worker::run_local(
        worker,
        queue_rx,
        events.clone() as Arc<dyn PhaseEvents>,
        config.worker.concurrency,
        shutdown.clone(),
    ));
    let requeued = uws.requeue_unfinished(100_000).await?;
    if requeued > 0 {
        tracing::info!(
            jobs = requeued,
            "requeued unfinished jobs from the last run"
        );
    }
    tokio::spawn(sweep(
        uws.clone(),
        Duration::from_secs(config.jobs.sweep_interval.max(1)),
        Duration::from_secs(config.jobs.orphan_sweep_interval.max(1)),
        Duration::from_secs(config.jobs.orphan_grace),
        shutdown.clone(),
    ));

    let health = health_checks(
        store_health,
        Arc::new(uws::health::QueueHealth(queue.clone())),
        bucket_health,
    );
    let ops = crate::ops::routes(health.clone(), queue.clone())?;
    let auth = crate::auth::build(&config.auth, crate::auth::Role::Embedded).await?;
    let app = AppState(Arc::new(App {
        uws,
        repositories,
        local_bucket,
        settings: config.frontend_settings(),
        auth,
        started: timestamp::now(),
        health,
        sky_index: Some(sky_index.clone()),
    }));
    if config.index.enabled {
        tokio::spawn(crate::index::run_in_background(
            sky_index,
            config.repositories.clone(),
            source_cache,
            config.index.concurrency,
            Duration::from_secs(config.index.rescan_interval),
            shutdown.clone(),
        ));
    }
    crate::auth::spawn_refresh(&config.auth, app.clone(), shutdown.clone())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    let server = serve_http(listener, app, ops, config.http.limits(), shutdown.clone());
    Ok(Running {
        base: format!("http://{local}/api/cutout"),
        demo_images,
        shutdown,
        server,
        worker: worker_task,
    })
}

/// The local bucket, keeping synchronous requests' results in memory when configured to: the
/// frontend that serves them is in this process.
fn local_bucket(config: &Config, data_dir: &Path, signer: UrlSigner) -> LocalBucket {
    let bucket = LocalBucket::new(data_dir.join("bucket"), signer);
    match config.bucket.sync_memory_bytes {
        0 => bucket,
        bytes => bucket.with_memory(Arc::new(bucket::MemoryObjects::new(
            bytes,
            Duration::from_secs(config.bucket.sync_memory_lifetime.max(1)),
        ))),
    }
}

/// What VOSI availability and `/readyz` ask: the job store, the queue, and the result bucket.
pub(crate) fn health_checks(
    store: Arc<dyn uws::health::HealthCheck>,
    queue: Arc<dyn uws::health::HealthCheck>,
    bucket: Arc<dyn uws::health::HealthCheck>,
) -> Vec<Arc<dyn uws::health::HealthCheck>> {
    vec![store, queue, bucket]
}

/// Warns of each repository directory that does not exist: the role starts (the directory may
/// be mounted later), but every ID in it is unknown until then.
pub(crate) fn warn_of_missing_repositories(config: &Config) {
    for (name, dir) in &config.repositories {
        let location = dir.to_string_lossy();
        let remote = bucket::BucketUrl::is_bucket_url(&location)
            || location.starts_with("http://")
            || location.starts_with("https://");
        if !remote && !dir.is_dir() {
            tracing::warn!(repository = %name, dir = %dir.display(), "repository directory does not exist");
        }
    }
}

/// Serves the frontend's routes and the operations routes `ops` until `shutdown`.
pub(crate) fn serve_http(
    listener: tokio::net::TcpListener,
    app: AppState,
    ops: axum::Router,
    limits: crate::http::Limits,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let router = crate::ops::track_requests(frontend::build(app).merge(ops));
    tokio::spawn(async move {
        crate::http::serve(listener, router, limits, shutdown).await?;
        anyhow::Ok(())
    })
}

/// The shortest secret key accepted: an HMAC key shorter than its 32-byte hash is easier to guess
/// than the signatures it makes.
pub(crate) const MIN_KEY_BYTES: usize = 32;

/// The URL-signing key: from configuration, or generated once into the data directory. A key
/// shorter than [`MIN_KEY_BYTES`] is refused.
pub(crate) fn signing_key(config: &Config, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let key = if let Some(key) = &config.signing_key {
        hex::decode(key.expose().trim()).context("signing_key must be hex")?
    } else {
        key_file(&data_dir.join("signing.key"))?
    };
    if key.len() < MIN_KEY_BYTES {
        anyhow::bail!(
            "signing_key is {} bytes; it must be at least {MIN_KEY_BYTES} bytes \
             ({} hex digits): make one with `openssl rand -hex 32`",
            key.len(),
            2 * MIN_KEY_BYTES
        );
    }
    Ok(key)
}

/// The key in `path`, written there first (32 random bytes, hex) if the file does not exist.
///
/// The file appears whole or not at all: the key is written to a private temporary file that is
/// then hard-linked into place (a link never replaces an existing file), so a process sharing the
/// data directory never reads a half-written key, and two that start together agree on one.
fn key_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let read = |path: &Path| -> anyhow::Result<Vec<u8>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        hex::decode(text.trim()).with_context(|| format!("{} must hold a hex key", path.display()))
    };
    if path.exists() {
        return read(path);
    }
    let key: [u8; 32] = rand::random();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!("{name}.{:016x}.tmp", rand::random::<u64>()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(hex::encode(key).as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok(key.to_vec()),
        // Another process sharing the data directory made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// Deletes jobs past their destruction time, with their results, and archives jobs whose
/// results outlived `jobs.result_lifetime`, until shutdown; every
/// `orphans_every` it also deletes result prefixes that no job owns (untouched for
/// `orphan_grace`).
pub(crate) async fn sweep(
    uws: Uws,
    every: Duration,
    orphans_every: Duration,
    orphan_grace: Duration,
    shutdown: CancellationToken,
) {
    let mut orphans_swept: Option<std::time::Instant> = None;
    loop {
        match uws.sweep_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "destroyed expired jobs"),
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
        match uws.sweep_archived().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "archived jobs whose results expired"),
            Err(e) => tracing::warn!(error = %e, "result sweep failed"),
        }
        if orphans_swept.is_none_or(|at| at.elapsed() >= orphans_every) {
            orphans_swept = Some(std::time::Instant::now());
            match uws.sweep_orphans(orphan_grace).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(prefixes = n, "removed results that no job owns"),
                Err(e) => tracing::warn!(error = %e, "orphaned-result sweep failed"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Returns on SIGINT, SIGTERM or when `shutdown` is cancelled.
pub(crate) async fn shutdown_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        () = term => {}
        () = shutdown.cancelled() => {}
    }
    tracing::info!("shutting down");
}
