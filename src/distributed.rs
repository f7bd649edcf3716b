//! The roles of the distributed topology, each its own process: `skycut frontend` (HTTP, enqueues
//! into Redis) and `skycut worker` (any number, on any host, taking jobs from Redis). They share
//! the job store (PostgreSQL) and the result bucket, and hear each other through Redis pub/sub.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bucket::{LocalBucket, UrlSigner};
use frontend::{App, AppState};
use soda::repository::Repositories;
use tokio_util::sync::CancellationToken;
use uws::events::PhaseEvents;
use uws::health::HealthCheck;
use uws::service::Uws;
use uws::store::JobStore;
use uws::timestamp;
use worker::distributed::{LoopSettings, run_redis};
use worker::redis::{RedisConsumer, RedisQueue, Streams};
use worker::redis_events::RedisPhaseEvents;
use worker::{Worker, WorkerSettings};

use crate::config::Config;
use crate::serve::{health_checks, serve_http, shutdown_signal, signing_key, sweep};

/// What both roles connect to.
struct Shared {
    uws: Uws,
    queue: RedisQueue,
    events: Arc<RedisPhaseEvents>,
    local_bucket: Option<LocalBucket>,
    /// The result bucket as availability and `/readyz` probe it.
    bucket_health: Arc<dyn HealthCheck>,
    repositories: Arc<Repositories>,
    streams: Streams,
    /// The job store as VOSI availability asks it.
    store_health: Arc<dyn HealthCheck>,
}

async fn connect(config: &Config) -> anyhow::Result<Shared> {
    crate::serve::warn_of_missing_repositories(config);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let (store, store_health) = connect_store(config).await?;
    let store: Arc<dyn JobStore> = Arc::new(uws::store::TimedJobStore(store));
    let redis_url = config.redis_url.expose();
    let client = worker::redis::connect(redis_url)
        .await
        .context("cannot connect to Redis")?;
    let streams = Streams::new(&config.redis_prefix);
    let events = Arc::new(
        RedisPhaseEvents::start(client.clone(), redis_url, &streams.events_channel())
            .await
            .context("cannot subscribe to phase events")?,
    );
    let queue = RedisQueue::new(client, streams.clone());
    let signer = UrlSigner::new(&signing_key(config, &config.data_dir)?);
    let crate::buckets::ResultBucket {
        store: results,
        local: local_bucket,
        health: bucket_health,
    } = crate::buckets::build_result_store(
        config,
        LocalBucket::new(config.data_dir.join("bucket"), signer),
    )?;
    let uws = Uws::new(
        store,
        Arc::new(queue.clone()),
        events.clone(),
        results,
        config.jobs.limits(),
    );
    Ok(Shared {
        uws,
        queue,
        events,
        local_bucket,
        bucket_health,
        repositories: Arc::new(
            Repositories::new(config.repositories.clone())
                .following_symlinks_out(config.follow_repository_symlinks),
        ),
        streams,
        store_health,
    })
}

/// The longest wait between two attempts to reach a job store that is not up yet.
const MAX_RETRY: Duration = Duration::from_secs(10);

/// Opens the job store (the wobbly service if configured, else the database itself), retrying
/// with backoff for as long as it takes: a role started before its job store waits for it
/// rather than crashing. Only a store that answers and refuses (bad migration) is fatal.
async fn connect_store(
    config: &Config,
) -> anyhow::Result<(Arc<dyn JobStore>, Arc<dyn HealthCheck>)> {
    if let Some(url) = &config.wobbly.url {
        let client =
            wobbly::WobblyClient::new(url, &config.service_name, config.wobbly.token_key()?)?;
        let mut delay = Duration::from_millis(200);
        for attempt in 1.. {
            if client.ping().await {
                break;
            }
            tracing::warn!(url, attempt, retry_in = ?delay, "job store service not reachable yet");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY);
        }
        let client = Arc::new(client);
        return Ok((client.clone(), client));
    }
    let store = open_database(config, 16).await?;
    let store = Arc::new(store);
    Ok((store.clone(), store))
}

/// Opens and migrates the database, waiting with backoff while it cannot be reached.
async fn open_database(config: &Config, connections: u32) -> anyhow::Result<wobbly::SqlJobStore> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        match wobbly::SqlJobStore::connect(
            &config.database_url(),
            &config.service_name,
            connections,
        )
        .await
        {
            Ok(store) => return Ok(store),
            Err(e @ wobbly::WobblyError::Connect { .. }) => {
                tracing::warn!(error = %e, attempt, retry_in = ?delay, "database not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY);
            }
            Err(e) => return Err(e).context("cannot open the job store"),
        }
    }
}

/// `skycut frontend`: the public HTTP service.
pub async fn frontend(config: Config) -> anyhow::Result<()> {
    let auth = crate::auth::build(&config.auth, crate::auth::Role::Frontend).await?;
    let shared = connect(&config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(sweep(
        shared.uws.clone(),
        Duration::from_secs(config.jobs.sweep_interval.max(1)),
        Duration::from_secs(config.jobs.orphan_sweep_interval.max(1)),
        Duration::from_secs(config.jobs.orphan_grace),
        shutdown.clone(),
    ));
    let queue: Arc<dyn uws::queue::JobQueue> = Arc::new(shared.queue.clone());
    // Queue depth is read from Redis, so the queue check is the Redis check.
    let health = health_checks(
        shared.store_health,
        Arc::new(uws::health::QueueHealth(queue.clone())),
        shared.bucket_health.clone(),
    );
    let ops = crate::ops::routes(health.clone(), queue)?;
    // The sky index lives in the database (`skycut index` writes it); a frontend that reaches
    // the job store through wobbly has no database URL, and answers SIA queries 503.
    let sky_index: Option<Arc<dyn uws::sky_index::ImageIndex>> = match config.wobbly.url {
        Some(_) => None,
        None => Some(Arc::new(open_database(&config, 4).await?.sky_index())),
    };
    let app = AppState(Arc::new(App {
        uws: shared.uws,
        repositories: shared.repositories,
        local_bucket: shared.local_bucket,
        settings: config.frontend_settings(),
        auth,
        started: timestamp::now(),
        health,
        sky_index,
    }));
    crate::auth::spawn_refresh(&config.auth, app.clone(), shutdown.clone())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let base = format!("http://{}/api/cutout", listener.local_addr()?);
    let server = serve_http(listener, app, ops, config.http.limits(), shutdown.clone());
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "skycut frontend listening on {base}")?;
        out.flush()?;
    }
    shutdown_signal(shutdown.clone()).await;
    shutdown.cancel();
    server.await?
}

/// `skycut wobbly`: the job store as an HTTP+JSON service over the database.
pub async fn wobbly(config: Config) -> anyhow::Result<()> {
    let key = config.wobbly.token_key()?;
    if config.database_url.is_none() {
        // Fine on one host, but the point of wobbly is to be shared.
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
        tracing::warn!(
            database = %config.database_url(),
            "database_url is not set: wobbly keeps jobs in this SQLite file, which only this host \
             can reach; set database_url (SKYCUT_DATABASE_URL) to a PostgreSQL database"
        );
    }
    let store = open_database(&config, 32).await?;
    let listener = tokio::net::TcpListener::bind(config.wobbly.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.wobbly.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "skycut wobbly listening on {url}")?;
        out.flush()?;
    }
    let shutdown = CancellationToken::new();
    // wobbly's own router has its probes; the binary adds what only it may serve.
    let router = crate::ops::track_requests(
        wobbly::service::router(store, key)
            .merge(crate::ops::metrics_routes(crate::ops::recorder()?, None)),
    );
    let server = crate::http::serve(listener, router, config.http.limits(), shutdown.clone());
    tokio::select! {
        served = server => served?,
        () = shutdown_signal(shutdown.clone()) => {}
    }
    Ok(())
}

/// `skycut worker`: takes jobs from Redis until SIGTERM (or `worker.max_jobs`), then drains and
/// exits 0.
pub async fn worker(config: Config) -> anyhow::Result<()> {
    // connect: each step waits with backoff for a job store or Redis not reachable yet.
    let shared = connect(&config).await?;
    let redis_url = config.redis_url.expose();
    let reader = worker::redis::connect(redis_url)
        .await
        .context("cannot connect to Redis")?;
    let commands = worker::redis::connect(redis_url)
        .await
        .context("cannot connect to Redis")?;
    let name = format!(
        "{}-{}-{:08x}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned()),
        std::process::id(),
        rand::random::<u32>()
    );
    let settings = &config.worker;
    let consumer = Arc::new(RedisConsumer::new(
        reader,
        commands,
        shared.streams.clone(),
        name.clone(),
        Duration::from_secs(settings.visibility_timeout.max(1)),
    ));
    consumer.ensure_groups().await?;
    worker::distributed::recover_if_lost(&shared.uws, &consumer, &shared.queue).await;
    let scratch_dir = config.data_dir.join("scratch");
    std::fs::create_dir_all(&scratch_dir)?;
    let runner = Worker::new(
        shared.uws.clone(),
        shared.repositories.clone(),
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
    let runner = match crate::buckets::build_source_cache(&config, &config.data_dir)? {
        Some(cache) => runner.with_source_cache(cache),
        None => runner,
    };
    let shutdown = CancellationToken::new();
    let health_url = match settings.health_listen {
        Some(addr) => {
            let queue: Arc<dyn uws::queue::JobQueue> = Arc::new(shared.queue.clone());
            let checks = health_checks(
                shared.store_health.clone(),
                Arc::new(uws::health::QueueHealth(queue.clone())),
                shared.bucket_health.clone(),
            );
            let ops = crate::ops::routes(checks, queue)?;
            Some(serve_ops(addr, ops, config.http.limits(), shutdown.clone()).await?)
        }
        None => None,
    };
    // start: the loop runs until SIGTERM, or until it has taken `max_jobs` and drained, when it
    // stops the rest of the process itself.
    let run = run_redis(
        runner,
        shared.uws,
        consumer,
        shared.queue,
        shared.events as Arc<dyn PhaseEvents>,
        LoopSettings {
            concurrency: settings.concurrency,
            visibility_timeout: Duration::from_secs(settings.visibility_timeout.max(1)),
            drain_timeout: Duration::from_secs(settings.drain_timeout),
            recovery_interval: Duration::from_secs(settings.recovery_interval.max(1)),
            max_jobs: settings.max_jobs,
            summary_interval: (settings.summary_interval > 0)
                .then(|| Duration::from_secs(settings.summary_interval)),
        },
        shutdown.clone(),
    );
    let finished = shutdown.clone();
    let task = tokio::spawn(async move {
        run.await;
        finished.cancel();
    });
    {
        let mut out = std::io::stdout().lock();
        match &health_url {
            Some(url) => writeln!(out, "skycut worker {name} ready; health on {url}")?,
            None => writeln!(out, "skycut worker {name} ready")?,
        }
        out.flush()?;
    }
    if settings.max_uptime > 0 {
        let retire = shutdown.clone();
        let after = Duration::from_secs(settings.max_uptime);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            tracing::info!(
                seconds = after.as_secs(),
                "max_uptime reached; finishing and exiting"
            );
            retire.cancel();
        });
    }
    // stop: no new jobs; running ones finish or go back to the queue.
    shutdown_signal(shutdown.clone()).await;
    shutdown.cancel();
    task.await?;
    // close: the Redis and job-store clients are dropped with the loop; nothing is buffered.
    tracing::info!("worker stopped");
    Ok(())
}

/// Serves the worker's probes and metrics on their own port until `shutdown`; returns `http://ADDR`.
async fn serve_ops(
    addr: std::net::SocketAddr,
    ops: axum::Router,
    limits: crate::http::Limits,
    shutdown: CancellationToken,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (worker.health_listen)"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let router = crate::ops::track_requests(ops);
    tokio::spawn(async move {
        if let Err(e) = crate::http::serve(listener, router, limits, shutdown).await {
            tracing::error!(error = %e, "health endpoint failed");
        }
    });
    Ok(url)
}
