//! The assembly every role shares: the parts `src/serve.rs` (the embedded role) and
//! `src/distributed.rs` (the frontend, worker and wobbly roles) put together, each built here
//! once so that the roles differ only in which store, queue and events they pass in.
//!
//! Read a role's file top to bottom; come here for what it calls: [`build_app`] (the frontend's
//! [`AppState`]), [`build_worker`] (the job runner), [`health_checks`], [`serve_http`],
//! [`spawn_sweep`], [`signing_key`] and [`shutdown_signal`].

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bucket::{LocalBucket, SourceCache};
use frontend::auth::Authenticator;
use frontend::{App, AppState};
use soda::repository::Repositories;
use tokio_util::sync::CancellationToken;
use uws::health::{HealthCheck, QueueHealth};
use uws::queue::JobQueue;
use uws::service::Uws;
use uws::sky_index::ImageIndex;
use uws::timestamp;
use worker::Worker;

use crate::config::Config;

/// The image repositories of the configuration, as the frontend and the worker read them.
pub(crate) fn repositories(config: &Config) -> Arc<Repositories> {
    Arc::new(
        Repositories::new(config.repositories.clone())
            .following_symlinks_out(config.follow_repository_symlinks),
    )
}

/// The frontend's state: everything a request may need, from the parts a role connected.
pub(crate) fn build_app(
    config: &Config,
    uws: Uws,
    repositories: Arc<Repositories>,
    local_bucket: Option<LocalBucket>,
    auth: Authenticator,
    health: Vec<Arc<dyn HealthCheck>>,
    sky_index: Option<Arc<dyn ImageIndex>>,
) -> AppState {
    AppState(Arc::new(App {
        uws,
        repositories,
        local_bucket,
        settings: config.frontend_settings(),
        auth,
        started: timestamp::now(),
        health,
        sky_index,
    }))
}

/// The job runner, with its scratch directory made and the source cache (for repositories in a
/// bucket) if there is one.
pub(crate) fn build_worker(
    config: &Config,
    uws: Uws,
    repositories: Arc<Repositories>,
    source_cache: Option<Arc<SourceCache>>,
) -> anyhow::Result<Worker> {
    let settings = config.worker_settings();
    std::fs::create_dir_all(&settings.scratch_dir).with_context(|| {
        format!(
            "cannot create scratch directory {}",
            settings.scratch_dir.display()
        )
    })?;
    let worker = Worker::new(uws, repositories, settings);
    Ok(match source_cache {
        Some(cache) => worker.with_source_cache(cache),
        None => worker,
    })
}

/// What VOSI availability and `/readyz` ask: the job store, the queue, and the result bucket.
pub(crate) fn health_checks(
    store: Arc<dyn HealthCheck>,
    queue: Arc<dyn JobQueue>,
    bucket: Arc<dyn HealthCheck>,
) -> Vec<Arc<dyn HealthCheck>> {
    vec![store, Arc::new(QueueHealth(queue)), bucket]
}

/// Binds the listen address `what` names in the configuration.
pub(crate) async fn listen(
    addr: std::net::SocketAddr,
    what: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

/// Prints the line a supervisor or a test waits for, once the role is ready.
pub(crate) fn announce(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
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

/// Runs [`sweep`] in the background with the intervals of `[jobs]`, until `shutdown`.
pub(crate) fn spawn_sweep(uws: Uws, config: &Config, shutdown: CancellationToken) {
    let every = config.jobs.sweep_every();
    let orphans = config.jobs.orphan_sweep_every();
    let grace = config.jobs.orphan_grace_period();
    tokio::spawn(sweep(uws, every, orphans, grace, shutdown));
}

/// Deletes jobs past their destruction time, with their results, and archives jobs whose
/// results outlived `jobs.result_lifetime`, until shutdown; every
/// `orphans_every` it also deletes result prefixes that no job owns (untouched for
/// `orphan_grace`).
async fn sweep(
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
