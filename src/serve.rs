//! `skycut serve`: frontend, worker and job store in one process, wired from the configuration.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bucket::{LocalBucket, UrlSigner};
use tokio_util::sync::CancellationToken;
use uws::events::{LocalPhaseEvents, PhaseEvents};
use uws::health::HealthCheck;
use uws::service::Uws;
use uws::sky_index::ImageIndex;
use uws::store::JobStore;
use worker::LocalQueue;

use crate::config::Config;
use crate::wiring;

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
    wiring::shutdown_signal(running.shutdown.clone()).await;
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
    wiring::warn_of_missing_repositories(&config);

    // The outside world, in process: SQLite, an in-process queue and events, a local bucket.
    let signer = UrlSigner::new(&wiring::signing_key(&config, &data_dir)?);
    let store = wobbly::SqlJobStore::connect(&config.database_url(), &config.service_name, 8)
        .await
        .context("cannot open the job store")?;
    let sky_index: Arc<dyn ImageIndex> = Arc::new(store.sky_index());
    let store = Arc::new(store);
    let store_health: Arc<dyn HealthCheck> = store.clone();
    let store: Arc<dyn JobStore> = Arc::new(uws::store::TimedJobStore(store));
    let events = Arc::new(LocalPhaseEvents::new());
    let (queue, queue_rx) = LocalQueue::new();
    let queue = Arc::new(queue);
    let crate::buckets::ResultBucket {
        store: results,
        local: local_bucket,
        health: bucket_health,
    } = crate::buckets::build_result_store(&config, local_bucket(&config, &data_dir, signer))?;
    let uws = Uws::new(
        store,
        queue.clone(),
        events.clone(),
        results,
        config.jobs.limits(),
    );
    let repositories = wiring::repositories(&config);

    // The worker, on the in-process queue. It shares one source cache (and its store clients)
    // with the indexer.
    let source_cache = crate::buckets::build_source_cache(&config, &data_dir)?;
    let worker = wiring::build_worker(
        &config,
        uws.clone(),
        repositories.clone(),
        source_cache.clone(),
    )?;
    let shutdown = CancellationToken::new();
    let worker_task = tokio::spawn(worker::run_local(
        worker,
        queue_rx,
        events.clone() as Arc<dyn PhaseEvents>,
        config.worker.slots(),
        shutdown.clone(),
    ));
    let requeued = uws.requeue_unfinished(100_000).await?;
    if requeued > 0 {
        tracing::info!(
            jobs = requeued,
            "requeued unfinished jobs from the last run"
        );
    }
    wiring::spawn_sweep(uws.clone(), &config, shutdown.clone());

    // The frontend, and the sky index it answers SIA queries from.
    let health = wiring::health_checks(store_health, queue.clone(), bucket_health);
    let ops = crate::ops::routes(health.clone(), queue)?;
    let auth = crate::auth::build(&config.auth, crate::auth::Role::Embedded).await?;
    let app = wiring::build_app(
        &config,
        uws,
        repositories,
        local_bucket,
        auth,
        health,
        Some(sky_index.clone()),
    );
    if config.index.enabled {
        tokio::spawn(crate::index::run_in_background(
            sky_index,
            config.repositories.clone(),
            source_cache,
            config.index.concurrency,
            config.index.rescan_every(),
            shutdown.clone(),
        ));
    }
    crate::auth::spawn_refresh(&config.auth, app.clone(), shutdown.clone())?;
    let listener = wiring::listen(config.listen, "listen").await?;
    let local = listener.local_addr()?;
    let server = wiring::serve_http(listener, app, ops, config.http.limits(), shutdown.clone());
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
            config.bucket.sync_memory_lifetime(),
        ))),
    }
}
