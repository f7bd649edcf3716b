//! The roles of the distributed topology, each its own process: `skycut frontend` (HTTP, enqueues
//! into Redis) and `skycut worker` (any number, on any host, taking jobs from Redis). They share
//! the job store (PostgreSQL) and the result bucket, and hear each other through Redis pub/sub.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bucket::{LocalBucket, UrlSigner};
use soda::repository::Repositories;
use tokio_util::sync::CancellationToken;
use uws::events::PhaseEvents;
use uws::health::HealthCheck;
use uws::queue::JobQueue;
use uws::service::Uws;
use uws::sky_index::ImageIndex;
use uws::store::JobStore;
use worker::distributed::run_redis;
use worker::redis::{RedisConsumer, RedisQueue, Streams};
use worker::redis_events::{Hearing, RedisPhaseEvents};

use crate::config::Config;
use crate::wiring;

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

/// Connects a role that hears the phase changes of `hearing`.
async fn connect(config: &Config, hearing: Hearing) -> anyhow::Result<Shared> {
    wiring::warn_of_missing_repositories(config);
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
        RedisPhaseEvents::start(client.clone(), redis_url, &streams, hearing)
            .await
            .context("cannot subscribe to phase events")?,
    );
    let queue = RedisQueue::new(client, streams.clone())
        .counting_workers_seen_within(config.worker.loop_settings().visibility_timeout);
    let signer = UrlSigner::new(&wiring::signing_key(config, &config.data_dir)?);
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
        repositories: wiring::repositories(config),
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
    let shared = connect(&config, Hearing::Every).await?;
    let shutdown = CancellationToken::new();
    wiring::spawn_sweep(shared.uws.clone(), &config, shutdown.clone());
    // Queue depth is read from Redis, so the queue check is the Redis check.
    let queue: Arc<dyn JobQueue> = Arc::new(shared.queue.clone());
    let health = wiring::health_checks(shared.store_health, queue.clone(), shared.bucket_health);
    let ops = crate::ops::routes(health.clone(), queue)?;
    // The sky index lives in the database (`skycut index` writes it); a frontend that reaches
    // the job store through wobbly has no database URL, and answers SIA queries 503.
    let sky_index: Option<Arc<dyn ImageIndex>> = match config.wobbly.url {
        Some(_) => None,
        None => Some(Arc::new(open_database(&config, 4).await?.sky_index())),
    };
    let app = wiring::build_app(
        &config,
        shared.uws,
        shared.repositories,
        shared.local_bucket,
        auth,
        health,
        sky_index,
    );
    crate::auth::spawn_refresh(&config.auth, app.clone(), shutdown.clone())?;
    let listener = wiring::listen(config.listen, "listen").await?;
    let base = format!("http://{}/api/cutout", listener.local_addr()?);
    let server = wiring::serve_http(listener, app, ops, config.http.limits(), shutdown.clone());
    wiring::announce(&format!("skycut frontend listening on {base}"))?;
    wiring::shutdown_signal(shutdown.clone()).await;
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
    let listener = wiring::listen(config.wobbly.listen, "wobbly.listen").await?;
    let url = format!("http://{}", listener.local_addr()?);
    wiring::announce(&format!("skycut wobbly listening on {url}"))?;
    let shutdown = CancellationToken::new();
    // wobbly's own router has its probes; the binary adds what only it may serve.
    let router = crate::ops::track_requests(
        wobbly::service::router(store, key)
            .merge(crate::ops::metrics_routes(crate::ops::recorder()?, None)),
    );
    let server = crate::http::serve(listener, router, config.http.limits(), shutdown.clone());
    tokio::select! {
        served = server => served?,
        () = wiring::shutdown_signal(shutdown.clone()) => {}
    }
    Ok(())
}

/// `skycut worker`: takes jobs from Redis until SIGTERM (or `worker.max_jobs`), then drains and
/// exits 0.
pub async fn worker(config: Config) -> anyhow::Result<()> {
    // connect: each step waits with backoff for a job store or Redis not reachable yet.
    // A worker needs only final phases (to cancel a job), not every job's QUEUED and EXECUTING.
    let shared = connect(&config, Hearing::FinalOnly).await?;
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
    let settings = config.worker.loop_settings();
    let consumer = Arc::new(RedisConsumer::new(
        reader,
        commands,
        shared.streams.clone(),
        name.clone(),
        settings.visibility_timeout,
    ));
    consumer.ensure_groups().await?;
    worker::distributed::recover_if_lost(&shared.uws, &consumer, &shared.queue).await;
    let source_cache = crate::buckets::build_source_cache(&config, &config.data_dir)?;
    let runner = wiring::build_worker(
        &config,
        shared.uws.clone(),
        shared.repositories,
        source_cache,
    )?;
    let shutdown = CancellationToken::new();
    let health_url = match config.worker.health_listen {
        Some(addr) => {
            let queue: Arc<dyn JobQueue> = Arc::new(shared.queue.clone());
            let checks =
                wiring::health_checks(shared.store_health, queue.clone(), shared.bucket_health);
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
        settings,
        shutdown.clone(),
    );
    let finished = shutdown.clone();
    let task = tokio::spawn(async move {
        run.await;
        finished.cancel();
    });
    match &health_url {
        Some(url) => wiring::announce(&format!("skycut worker {name} ready; health on {url}"))?,
        None => wiring::announce(&format!("skycut worker {name} ready"))?,
    }
    if let Some(after) = config.worker.retire_after() {
        let retire = shutdown.clone();
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
    wiring::shutdown_signal(shutdown.clone()).await;
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
    let listener = wiring::listen(addr, "worker.health_listen").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let router = crate::ops::track_requests(ops);
    tokio::spawn(async move {
        if let Err(e) = crate::http::serve(listener, router, limits, shutdown).await {
            tracing::error!(error = %e, "health endpoint failed");
        }
    });
    Ok(url)
}
