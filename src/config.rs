//! Skycut's configuration: one typed tree, loaded once at start.
//!
//! Layers, each overriding the one before: built-in defaults, the TOML file given with
//! `--config`, environment variables `SKYCUT_KEY` or `SKYCUT_SECTION__KEY` (values in TOML
//! syntax, or plain strings), then command-line flags. `docs/configuration.md` lists every key.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// A secret that never shows up in logs or debug output.
#[derive(Clone, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Holds the SQLite job store, the local result bucket, scratch files and the signing key.
    pub data_dir: PathBuf,
    /// Job store URL; default: the SQLite file `jobs.sqlite` in `data_dir`.
    pub database_url: Option<Secret>,
    /// External base URL of the service (`https://host/api/cutout`); default: from each request.
    pub public_url: Option<String>,
    /// Hex key for signing result URLs; default: generated once into `data_dir/signing.key`.
    pub signing_key: Option<Secret>,
    /// Proxies whose `X-Forwarded-Proto`/`X-Forwarded-Host` headers are believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Image repositories: name → directory.
    pub repositories: BTreeMap<String, PathBuf>,
    /// Serve images that are symbolic links to files outside their repository directory.
    pub follow_repository_symlinks: bool,
    /// Name under which this service's jobs are kept in the job store (one database may serve
    /// several services).
    pub service_name: String,
    /// Redis, for the queue and phase events of the distributed topology.
    pub redis_url: Secret,
    /// Prefix of every Redis key and channel, so deployments can share a Redis.
    pub redis_prefix: String,
    /// How log lines look on stderr; default: text on a terminal, JSON otherwise.
    pub log_format: Option<LogFormat>,
    pub jobs: JobsConfig,
    pub worker: WorkerConfig,
    pub bucket: BucketConfig,
    pub wobbly: WobblyConfig,
    pub auth: AuthConfig,
    pub quotas: QuotasConfig,
    pub ranges: RangesConfig,
    pub http: HttpConfig,
    pub index: IndexConfig,
    pub bulk: BulkConfig,
}

/// What one client may take of a role's HTTP server (every role: frontend, serve, wobbly and the
/// worker's health port).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Seconds from the moment a connection waits for a request until its whole head has
    /// arrived; also how long a kept-alive connection may sit idle.
    pub header_timeout: u64,
    /// Seconds from a request's arrival until its whole body has arrived.
    pub body_timeout: u64,
    /// Connections open at once; one more is answered 503 and closed.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout: 10,
            body_timeout: 30,
            max_connections: 512,
        }
    }
}

impl HttpConfig {
    pub fn limits(&self) -> crate::http::Limits {
        crate::http::Limits {
            header_timeout: Duration::from_secs(self.header_timeout.max(1)),
            body_timeout: Duration::from_secs(self.body_timeout.max(1)),
            max_connections: self.max_connections.max(1),
        }
    }
}

/// The sky index of the repositories (SIA 2.0 discovery and light curves).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// Whether `skycut serve` indexes its repositories in the background at start.
    pub enabled: bool,
    /// Seconds between re-scans of the repositories by `skycut serve` (a re-scan reads only
    /// the files whose size or modification time changed); 0: scan once, at start.
    pub rescan_interval: u64,
    /// Image files read at once while indexing.
    pub concurrency: usize,
    /// Most images a light curve (a cutout request with a circle and no ID) may cut; more is
    /// refused before any work. Any request may make this many cutouts (at least 100).
    pub max_epochs: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            enabled: true,
            rescan_interval: 600,
            concurrency: 2,
            // Rubin expects more than 800 visits of a field.
            max_epochs: 1000,
        }
    }
}

impl IndexConfig {
    /// How often `skycut serve` scans its repositories again (zero: once, at start).
    pub fn rescan_every(&self) -> Duration {
        Duration::from_secs(self.rescan_interval)
    }
}

/// Bulk cutouts (`POST /bulk`): limits on one request, each refused before any work.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkConfig {
    /// Most rows of one catalogue.
    pub max_rows: u64,
    /// Most stamps of one bulk job (a row that several images cover makes several).
    pub max_stamps: u64,
    /// Most bytes of one bulk request's body, the catalogue included.
    pub max_upload_bytes: u64,
    /// Most bytes of one result file of a bulk job; more stamps go to further numbered parts.
    pub part_bytes: u64,
    /// A bulk job is split into shards that any worker may cut: a shard closes once it holds
    /// this many stamps (an image's stamps are never split)...
    pub shard_stamps: u64,
    /// ...or this many images.
    pub shard_images: u64,
    /// URL prefixes a catalogue may be fetched from (`UPLOAD=cat,https://…`); empty: none.
    pub upload_urls: Vec<UploadUrl>,
    /// Seconds a catalogue fetched by URL may take, from connecting to its last byte.
    pub upload_timeout: u64,
}

/// One of `[bulk] upload_urls`, checked as the configuration is read.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct UploadUrl(frontend::upload::UrlPrefix);

impl TryFrom<String> for UploadUrl {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        frontend::upload::UrlPrefix::parse(&text)
            .map(UploadUrl)
            .map_err(|e| format!("bulk.upload_urls: {e}"))
    }
}

impl Default for BulkConfig {
    fn default() -> Self {
        let limits = frontend::bulk::BulkLimits::default();
        BulkConfig {
            max_rows: limits.max_rows,
            max_stamps: limits.max_stamps,
            max_upload_bytes: limits.max_upload_bytes,
            part_bytes: 2 << 30,
            shard_stamps: worker::ShardLimits::default().stamps,
            shard_images: worker::ShardLimits::default().images,
            upload_urls: Vec::new(),
            upload_timeout: frontend::upload::UrlUploads::default().timeout.as_secs(),
        }
    }
}

impl BulkConfig {
    /// How a bulk job is split into shards: by the worker that runs it, and by the frontend
    /// that counts them for the job's quote.
    pub fn shard_limits(&self) -> soda::bulk_plan::ShardLimits {
        soda::bulk_plan::ShardLimits {
            stamps: self.shard_stamps,
            images: self.shard_images,
        }
    }
}

/// Per-user limits; 0 is unlimited.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotasConfig {
    /// Jobs of one user executing at once, beyond which starting another is refused.
    pub jobs_running: u64,
    /// Jobs of one user queued at once.
    pub jobs_queued: u64,
    /// Jobs one user may create in any hour.
    pub jobs_per_hour: u64,
    /// Bytes of results one user may hold.
    pub result_bytes: u64,
}

impl QuotasConfig {
    pub fn quotas(&self) -> frontend::quota::Quotas {
        let limit = |v: u64| (v > 0).then_some(v);
        frontend::quota::Quotas {
            jobs_running: limit(self.jobs_running),
            jobs_queued: limit(self.jobs_queued),
            jobs_per_hour: limit(self.jobs_per_hour),
            result_bytes: limit(self.result_bytes),
        }
    }
}

/// How requests are authenticated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request is the owner `anonymous`; only `skycut serve` accepts it.
    #[default]
    Anonymous,
    /// An authenticating proxy (Gafaelfawr) names the user in `X-Auth-Request-User`.
    Ingress,
    /// A Bearer JWT validated by Skycut against a JWKS.
    Jwt,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Ingress: believe `X-Auth-Request-User` from any peer, not only from `trusted_proxies`
    /// (for networks where nothing but the proxy can reach the frontend).
    pub trust_headers_from_any: bool,
    /// JWT: a JWKS file with the issuer's public keys.
    pub jwks_path: Option<PathBuf>,
    /// JWT: a JWKS URL, fetched at start and every `jwks_refresh` seconds.
    pub jwks_url: Option<String>,
    pub jwks_refresh: u64,
    /// JWT: required `iss`.
    pub issuer: Option<String>,
    /// JWT: required member of `aud`.
    pub audience: Option<String>,
    /// JWT: a scope the `scope` claim must hold.
    pub required_scope: String,
    /// JWT: the claim that names the user.
    pub username_claim: String,
    /// JWT: seconds a token may be valid for (`exp` − `iat`, or `exp` − now without `iat`);
    /// a longer-lived token is refused. 0: no limit.
    pub max_token_lifetime: u64,
    /// Refuse state-changing requests that a browser says come from another site (for
    /// deployments behind a proxy that authenticates browsers by cookie).
    pub check_origin: bool,
    /// With `check_origin`: other origins (`https://portal.example.org`) allowed to send them.
    pub allowed_origins: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Anonymous,
            trust_headers_from_any: false,
            jwks_path: None,
            jwks_url: None,
            jwks_refresh: 300,
            issuer: None,
            audience: None,
            required_scope: "read:image".to_owned(),
            username_claim: "sub".to_owned(),
            max_token_lifetime: 0,
            check_origin: false,
            allowed_origins: Vec::new(),
        }
    }
}

/// How log lines look on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for a log collector.
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

/// A configuration and what loading it had to warn about, to be logged once logging is set up
/// (which the configuration itself decides).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WobblyConfig {
    /// Address `skycut wobbly` binds.
    pub listen: SocketAddr,
    /// Where frontends and workers reach the job-store service; unset: they open `database_url`
    /// themselves.
    pub url: Option<String>,
    /// Shared secret that signs the tokens callers present to wobbly (required to run or use it).
    pub token_key: Option<Secret>,
}

impl Default for WobblyConfig {
    fn default() -> Self {
        WobblyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            url: None,
            token_key: None,
        }
    }
}

impl WobblyConfig {
    pub fn token_key(&self) -> anyhow::Result<wobbly::TokenKey> {
        let secret = self
            .token_key
            .as_ref()
            .context("wobbly.token_key must be set (SKYCUT_WOBBLY__TOKEN_KEY)")?;
        let min = crate::wiring::MIN_KEY_BYTES;
        if secret.expose().len() < min {
            anyhow::bail!(
                "wobbly.token_key is {} bytes; it must be at least {min}: make one with \
                 `openssl rand -hex 32`",
                secret.expose().len()
            );
        }
        wobbly::TokenKey::new(secret.expose().as_bytes()).context("invalid wobbly.token_key")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Seconds a job may run when the client does not say; 0 = unlimited.
    pub default_execution_duration: u32,
    /// Upper bound on a job's execution duration, in seconds; 0 = unlimited.
    pub max_execution_duration: u32,
    /// Seconds from creation to destruction when the client does not say.
    pub default_lifetime: u64,
    /// Latest destruction a client may ask for, in seconds after creation.
    pub max_lifetime: u64,
    /// Server cap on `WAIT`, in seconds (and what `WAIT=-1` means).
    pub max_wait: u64,
    /// Seconds a synchronous request waits for its cutout before answering 503.
    pub sync_timeout: u64,
    /// Queued jobs at or above which `/sync` answers 503 and points to `/jobs`; 0 = never.
    pub sync_max_queue_depth: u64,
    /// Fair share: a user who already has this many jobs QUEUED gets further async jobs queued
    /// behind every other user's; 0 = first come, first served.
    pub fair_share_queued: u32,
    /// Seconds a signed result URL stays valid.
    pub result_url_lifetime: u64,
    /// Seconds between sweeps that delete jobs past their destruction time.
    pub sweep_interval: u64,
    /// Seconds a COMPLETED job's results are kept after it ends; a job still before its
    /// destruction time then loses them and becomes ARCHIVED. 0: results live as long as the job.
    pub result_lifetime: u64,
    /// Seconds a job creation whose outcome is unknown is repeated (same job ID) before 503.
    pub create_retry: u64,
    /// Bytes the results of one job may take, planned on the image headers when the request
    /// arrives; 0 = unlimited.
    pub max_job_bytes: u64,
    /// Pixels one cutout may hold (every axis kept); 0 = unlimited.
    pub max_cutout_pixels: u64,
    /// Most pixels a side of a `SIZE` stamp; 0 is unlimited (then only `max_cutout_pixels`).
    pub max_stamp_size: u64,
    /// Seconds between sweeps of result prefixes that no job owns.
    pub orphan_sweep_interval: u64,
    /// Seconds a result prefix that no job owns must have gone unwritten before it is deleted.
    pub orphan_grace: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Jobs of every lane one worker runs at once (its general slots).
    pub concurrency: usize,
    /// Synchronous requests' jobs one worker runs at once beside them (slots of their own; a
    /// sync job also takes an idle general slot).
    pub sync_concurrency: usize,
    /// Seconds a queue entry may go without a heartbeat before another worker takes the job.
    pub visibility_timeout: u64,
    /// Seconds a stopping worker lets running jobs finish before handing them back.
    pub drain_timeout: u64,
    /// Seconds between checks that Redis still holds the queue (rebuilt from the store if not).
    pub recovery_interval: u64,
    /// Address where `skycut worker` serves `/healthz`, `/readyz` and `/metrics`; unset: none
    /// (the worker has no other HTTP port).
    pub health_listen: Option<SocketAddr>,
    /// Jobs a worker takes before it drains and exits 0 (for a supervisor to restart it);
    /// 0: no limit.
    pub max_jobs: u64,
    /// Seconds after its start at which a worker drains and exits 0, as on SIGTERM (for a
    /// supervisor to restart it); 0: never.
    pub max_uptime: u64,
    /// Seconds between the worker's one-line summaries at info (jobs done, rate, queue depth);
    /// 0: none.
    pub summary_interval: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./skycut-data"),
            database_url: None,
            public_url: None,
            signing_key: None,
            trusted_proxies: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ],
            repositories: BTreeMap::new(),
            follow_repository_symlinks: false,
            service_name: "cutout".to_owned(),
            redis_url: Secret("redis://127.0.0.1:6379".to_owned()),
            redis_prefix: "skycut".to_owned(),
            log_format: None,
            jobs: JobsConfig::default(),
            worker: WorkerConfig::default(),
            wobbly: WobblyConfig::default(),
            bucket: BucketConfig::default(),
            auth: AuthConfig::default(),
            quotas: QuotasConfig::default(),
            ranges: RangesConfig::default(),
            http: HttpConfig::default(),
            index: IndexConfig::default(),
            bulk: BulkConfig::default(),
        }
    }
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            default_execution_duration: 600,
            max_execution_duration: 3600,
            default_lifetime: 7 * 24 * 3600,
            max_lifetime: 30 * 24 * 3600,
            max_wait: 60,
            sync_timeout: 60,
            sync_max_queue_depth: 0,
            fair_share_queued: 10,
            result_url_lifetime: 15 * 60,
            sweep_interval: 60,
            result_lifetime: 0,
            create_retry: 10,
            max_job_bytes: 1 << 30,
            max_cutout_pixels: 1 << 26,
            max_stamp_size: 1024,
            orphan_sweep_interval: 3600,
            orphan_grace: 600,
        }
    }
}

impl JobsConfig {
    pub fn limits(&self) -> uws::service::JobLimits {
        uws::service::JobLimits {
            default_execution_duration: self.default_execution_duration,
            max_execution_duration: self.max_execution_duration,
            default_lifetime: Duration::from_secs(self.default_lifetime),
            max_lifetime: Duration::from_secs(self.max_lifetime),
            max_wait: Duration::from_secs(self.max_wait),
            fair_share_queued: self.fair_share_queued,
            create_retry: Duration::from_secs(self.create_retry),
            result_lifetime: (self.result_lifetime > 0)
                .then(|| Duration::from_secs(self.result_lifetime)),
        }
    }

    /// How often the sweeper deletes expired jobs and archives expired results (at least 1 s).
    pub fn sweep_every(&self) -> Duration {
        Duration::from_secs(self.sweep_interval.max(1))
    }

    /// How often the sweeper looks for result prefixes that no job owns (at least 1 s).
    pub fn orphan_sweep_every(&self) -> Duration {
        Duration::from_secs(self.orphan_sweep_interval.max(1))
    }

    /// How long a result prefix that no job owns must go unwritten before it is deleted.
    pub fn orphan_grace_period(&self) -> Duration {
        Duration::from_secs(self.orphan_grace)
    }
}

impl WorkerConfig {
    /// The settings of `skycut worker`'s loop over the Redis queue.
    pub fn loop_settings(&self) -> worker::distributed::LoopSettings {
        worker::distributed::LoopSettings {
            concurrency: self.concurrency,
            sync_concurrency: self.sync_concurrency,
            visibility_timeout: Duration::from_secs(self.visibility_timeout.max(1)),
            drain_timeout: Duration::from_secs(self.drain_timeout),
            recovery_interval: Duration::from_secs(self.recovery_interval.max(1)),
            max_jobs: self.max_jobs,
            summary_interval: (self.summary_interval > 0)
                .then(|| Duration::from_secs(self.summary_interval)),
        }
    }

    /// The worker's slots, general and sync (see `worker::slots`).
    pub fn slots(&self) -> worker::Slots {
        worker::Slots::new(self.concurrency, self.sync_concurrency)
    }

    /// When a worker retires (drains and exits 0) after its start; `None`: never.
    pub fn retire_after(&self) -> Option<Duration> {
        (self.max_uptime > 0).then(|| Duration::from_secs(self.max_uptime))
    }
}

/// The cores this process may use (2 when that cannot be told).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: cores() * 2,
            sync_concurrency: cores() * 16,
            visibility_timeout: 30,
            drain_timeout: 20,
            recovery_interval: 10,
            health_listen: None,
            max_jobs: 0,
            max_uptime: 0,
            summary_interval: 60,
        }
    }
}

/// Where results live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BucketKind {
    /// `data_dir/bucket`, served by the frontend itself.
    #[default]
    Local,
    S3,
    Gcs,
}

/// The result bucket, and the credentials for buckets that hold source images.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BucketConfig {
    pub kind: BucketKind,
    /// `s3://BUCKET/PREFIX` or `gs://BUCKET/PREFIX` for the s3 and gcs kinds.
    pub url: Option<String>,
    /// Endpoint of an S3-compatible store (`http://minio:9000`); default: AWS.
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<Secret>,
    /// Service-account key file (JSON) for GCS; it also signs the result URLs.
    pub gcs_service_account_path: Option<PathBuf>,
    /// Seconds one store request may take.
    pub request_timeout: u64,
    /// Retries of a failed store request before the job sees the error.
    pub max_retries: usize,
    /// Bytes of source images from bucket repositories a worker keeps on local disk.
    pub source_cache_max_bytes: u64,
    /// `skycut serve` with the local bucket: bytes of synchronous requests' results kept in
    /// memory instead of on disk (0: none, every result is a file). On by default: a result
    /// written to disk for a client that reads it once is file-system churn for nothing.
    pub sync_memory_bytes: u64,
    /// Seconds a synchronous request's result kept in memory stays readable.
    pub sync_memory_lifetime: u64,
}

impl Default for BucketConfig {
    fn default() -> Self {
        BucketConfig {
            kind: BucketKind::Local,
            url: None,
            s3_endpoint: None,
            s3_region: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            gcs_service_account_path: None,
            request_timeout: 30,
            max_retries: 3,
            source_cache_max_bytes: 4 << 30,
            sync_memory_bytes: 256 << 20,
            sync_memory_lifetime: 60,
        }
    }
}

impl BucketConfig {
    /// How long a synchronous request's result kept in memory stays readable (at least 1 s).
    pub fn sync_memory_lifetime(&self) -> Duration {
        Duration::from_secs(self.sync_memory_lifetime.max(1))
    }
}

impl Config {
    /// Defaults, then the file, then `SKYCUT_*` environment variables.
    ///
    /// A key that names no setting is an error, in the file and in the environment alike, with
    /// the same message naming where it came from; only the variables Kubernetes writes for its
    /// services (`SKYCUT_FRONTEND_SERVICE_HOST`, `SKYCUT_PORT_8080_TCP`, …) are skipped.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Loaded> {
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(name, _)| name.starts_with("SKYCUT_"))
            .collect();
        Config::load_from(file, env)
    }

    fn load_from(file: Option<&Path>, mut env: Vec<(String, String)>) -> anyhow::Result<Loaded> {
        let warnings = Vec::new();
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read configuration {}", path.display()))?;
                toml::from_str::<toml::Table>(&text)
                    .with_context(|| format!("invalid TOML in {}", path.display()))?
            }
            None => toml::Table::new(),
        };
        if let Some(path) = file {
            Config::deserialize(toml::Value::Table(table.clone()))
                .with_context(|| format!("invalid configuration in {}", path.display()))?;
        }
        env.sort();
        for (name, value) in env {
            let key = &name["SKYCUT_".len()..];
            if is_kubernetes_service_variable(key) {
                continue;
            }
            overlay(&mut table, key, &value);
            Config::deserialize(toml::Value::Table(table.clone()))
                .with_context(|| format!("invalid configuration in environment variable {name}"))?;
        }
        let config =
            Config::deserialize(toml::Value::Table(table)).context("invalid configuration")?;
        Ok(Loaded { config, warnings })
    }

    /// The frontend's share of the configuration.
    pub fn frontend_settings(&self) -> frontend::FrontendSettings {
        frontend::FrontendSettings {
            public_url: self.public_url.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            url_lifetime: Duration::from_secs(self.jobs.result_url_lifetime),
            sync_timeout: Duration::from_secs(self.jobs.sync_timeout),
            sync_max_queue_depth: self.jobs.sync_max_queue_depth,
            quotas: self.quotas.quotas(),
            size_limits: frontend::cutout::SizeLimits {
                max_cutout_pixels: (self.jobs.max_cutout_pixels > 0)
                    .then_some(self.jobs.max_cutout_pixels),
                max_job_bytes: (self.jobs.max_job_bytes > 0).then_some(self.jobs.max_job_bytes),
                max_stamp_size: (self.jobs.max_stamp_size > 0).then_some(self.jobs.max_stamp_size),
            },
            allowed_origins: self
                .auth
                .check_origin
                .then(|| self.auth.allowed_origins.clone()),
            max_epochs: self.index.max_epochs,
            bulk: frontend::bulk::BulkLimits {
                max_rows: self.bulk.max_rows,
                max_stamps: self.bulk.max_stamps,
                max_upload_bytes: self.bulk.max_upload_bytes,
            },
            upload_urls: frontend::upload::UrlUploads {
                allowed: self.bulk.upload_urls.iter().map(|u| u.0.clone()).collect(),
                timeout: Duration::from_secs(self.bulk.upload_timeout.max(1)),
            },
            shards: self.bulk.shard_limits(),
        }
    }

    /// The worker's share of the configuration (the same in `skycut serve` and `skycut worker`).
    pub fn worker_settings(&self) -> worker::WorkerSettings {
        worker::WorkerSettings {
            scratch_dir: self.data_dir.join("scratch"),
            software: format!("Skycut {}", env!("CARGO_PKG_VERSION")),
            part_bytes: self.bulk.part_bytes,
            shards: self.bulk.shard_limits(),
            max_stamp_side: (self.jobs.max_stamp_size > 0)
                .then(|| usize::try_from(self.jobs.max_stamp_size).unwrap_or(usize::MAX)),
            jobs_at_once: self.worker.slots().total(),
        }
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_owned(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("jobs.sqlite").display()
            ),
        }
    }
}

/// Whether `key` (after `SKYCUT_`) is one of the variables Kubernetes sets in every pod for each
/// service whose name starts with `skycut` (`SKYCUT_FRONTEND_SERVICE_HOST`,
/// `SKYCUT_FRONTEND_PORT_8080_TCP_ADDR`, …). Service names are DNS labels, so these never hold
/// `__`, which every section key does.
fn is_kubernetes_service_variable(key: &str) -> bool {
    if key.contains("__") {
        return false;
    }
    let padded = format!("_{key}");
    if padded.ends_with("_SERVICE_HOST")
        || padded.ends_with("_SERVICE_PORT")
        || padded.contains("_SERVICE_PORT_")
        || padded.ends_with("_PORT")
    {
        return true;
    }
    // `…_PORT_8080_TCP`, optionally followed by `_PROTO`, `_PORT` or `_ADDR`.
    let parts: Vec<&str> = padded.split('_').collect();
    parts.windows(3).any(|w| {
        w[0] == "PORT"
            && !w[1].is_empty()
            && w[1].bytes().all(|b| b.is_ascii_digit())
            && matches!(w[2], "TCP" | "UDP" | "SCTP")
    })
}

/// Puts `SKYCUT_JOBS__MAX_WAIT=30` at `jobs.max_wait`. The value is read as TOML if it parses
/// (numbers, booleans, arrays), else as a string.
fn overlay(table: &mut toml::Table, key: &str, value: &str) {
    let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
    let Some((last, sections)) = path.split_last() else {
        return;
    };
    let mut node = table;
    for section in sections {
        let entry = node
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(next) = entry.as_table_mut() else {
            return;
        };
        node = next;
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    node.insert(last.clone(), parsed);
}

/// When a worker reads only the bytes a cutout needs from a bucket or image server, and when it
/// downloads the whole source image into its cache instead.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RangesConfig {
    /// Off: every bucket source image is downloaded whole.
    pub enabled: bool,
    /// Ranged reads of one image within `window` after which the next cutout downloads it whole.
    pub reads_before_download: u32,
    /// Seconds over which ranged reads of one image are counted.
    pub window: u64,
    /// A cutout needing more than this fraction of the image's bytes downloads it whole.
    pub max_fraction: f64,
    /// Ranged requests of one cutout in flight at once.
    pub concurrency: usize,
    /// Byte ranges closer than this are fetched in one request.
    pub coalesce_bytes: u64,
    /// Walked image headers kept per image version and reader.
    pub header_cache_entries: usize,
}

impl Default for RangesConfig {
    fn default() -> Self {
        let policy = bucket::RangePolicy::default();
        RangesConfig {
            enabled: policy.enabled,
            reads_before_download: policy.reads_before_download,
            window: policy.window.as_secs(),
            max_fraction: policy.max_fraction,
            concurrency: policy.concurrency,
            coalesce_bytes: policy.coalesce_bytes,
            header_cache_entries: policy.header_cache_entries,
        }
    }
}

impl RangesConfig {
    pub fn policy(&self) -> bucket::RangePolicy {
        bucket::RangePolicy {
            enabled: self.enabled,
            reads_before_download: self.reads_before_download,
            window: Duration::from_secs(self.window),
            max_fraction: self.max_fraction.clamp(0.0, 1.0),
            concurrency: self.concurrency.max(1),
            coalesce_bytes: self.coalesce_bytes,
            header_cache_entries: self.header_cache_entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_nested_keys() {
        let mut t = toml::Table::new();
        overlay(&mut t, "JOBS__MAX_WAIT", "30");
        overlay(&mut t, "PUBLIC_URL", "https://example.org/api/cutout");
        let c = Config::deserialize(toml::Value::Table(t)).expect("config");
        assert_eq!(c.jobs.max_wait, 30);
        assert_eq!(
            c.public_url.as_deref(),
            Some("https://example.org/api/cutout")
        );
    }

    #[test]
    fn worker_health_listen_is_set_from_the_environment() {
        let mut t = toml::Table::new();
        overlay(&mut t, "WORKER__HEALTH_LISTEN", "0.0.0.0:9090");
        let c = Config::deserialize(toml::Value::Table(t)).expect("config");
        assert_eq!(
            c.worker.health_listen,
            Some(SocketAddr::from(([0, 0, 0, 0], 9090)))
        );
        assert_eq!(Config::default().worker.health_listen, None);
    }

    #[test]
    fn log_format_is_json_or_text_and_nothing_else() {
        let parse = |value: &str| {
            let mut t = toml::Table::new();
            overlay(&mut t, "LOG_FORMAT", value);
            Config::deserialize(toml::Value::Table(t)).map(|c| c.log_format)
        };
        assert_eq!(parse("json").ok(), Some(Some(LogFormat::Json)));
        assert_eq!(parse("text").ok(), Some(Some(LogFormat::Text)));
        assert!(parse("xml").is_err());
        assert_eq!(Config::default().log_format, None);
    }

    #[test]
    fn a_typo_is_an_error_in_the_file_and_in_the_environment_alike() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        let ok = Config::load_from(None, env(&[("SKYCUT_JOBS__MAX_WAIT", "30")])).expect("valid");
        assert_eq!(ok.config.jobs.max_wait, 30);
        let e =
            Config::load_from(None, env(&[("SKYCUT_JOBS__MAX_WAITT", "30")])).expect_err("typo");
        let message = format!("{e:#}");
        assert!(
            message.starts_with(
                "invalid configuration in environment variable SKYCUT_JOBS__MAX_WAITT: unknown field `max_waitt`"
            ),
            "{message}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("skycut.toml");
        std::fs::write(&file, "[jobs]\nmax_waitt = 30\n").expect("write");
        let e = Config::load_from(Some(&file), Vec::new()).expect_err("typo");
        let message = format!("{e:#}");
        assert!(
            message.starts_with(&format!(
                "invalid configuration in {}: unknown field `max_waitt`",
                file.display()
            )),
            "{message}"
        );
        // Kubernetes' service links are not settings, and not errors.
        let k8s = Config::load_from(
            None,
            env(&[
                ("SKYCUT_FRONTEND_SERVICE_HOST", "10.0.0.1"),
                ("SKYCUT_FRONTEND_SERVICE_PORT_HTTP", "8080"),
                ("SKYCUT_FRONTEND_PORT", "tcp://10.0.0.1:8080"),
                ("SKYCUT_FRONTEND_PORT_8080_TCP_ADDR", "10.0.0.1"),
                ("SKYCUT_PORT", "tcp://10.0.0.1:8080"),
            ]),
        )
        .expect("service links are skipped");
        assert_eq!(k8s.config.listen, Config::default().listen);
        assert!(Config::load_from(None, env(&[("SKYCUT_LISTN", "0.0.0.0:1")])).is_err());
    }

    #[test]
    fn short_secret_keys_are_refused_with_how_to_make_one() {
        let dir = std::env::temp_dir();
        for key in ["", "00", &"ab".repeat(31)] {
            let c = Config {
                signing_key: Some(Secret(key.to_owned())),
                ..Config::default()
            };
            let e = crate::wiring::signing_key(&c, &dir).expect_err(key);
            assert!(format!("{e:#}").contains("openssl rand -hex 32"), "{e:#}");
        }
        let c = Config {
            signing_key: Some(Secret("ab".repeat(32))),
            ..Config::default()
        };
        assert_eq!(
            crate::wiring::signing_key(&c, &dir)
                .expect("32 bytes")
                .len(),
            32
        );
        for key in ["", "x", "change-me"] {
            let w = WobblyConfig {
                token_key: Some(Secret(key.to_owned())),
                ..WobblyConfig::default()
            };
            let Err(e) = w.token_key() else {
                panic!("short token key accepted: {key:?}")
            };
            assert!(format!("{e:#}").contains("openssl rand -hex 32"), "{e:#}");
        }
        let w = WobblyConfig {
            token_key: Some(Secret("k".repeat(32))),
            ..WobblyConfig::default()
        };
        assert!(w.token_key().is_ok());
    }

    #[test]
    fn upload_urls_are_checked_as_the_configuration_is_read() {
        let env = |value: &str| vec![("SKYCUT_BULK__UPLOAD_URLS".to_owned(), value.to_owned())];
        let ok =
            Config::load_from(None, env(r#"["https://data.example.org/cats/"]"#)).expect("valid");
        let allowed = ok.config.frontend_settings().upload_urls.allowed;
        assert_eq!(allowed.len(), 1);
        assert_eq!(allowed[0].as_str(), "https://data.example.org/cats/");
        assert!(
            Config::default()
                .frontend_settings()
                .upload_urls
                .allowed
                .is_empty()
        );
        for bad in [
            r#"["ftp://data.example.org/"]"#,
            r#"["data.example.org"]"#,
            r#"["https://data.example.org/?key=1"]"#,
        ] {
            let e = Config::load_from(None, env(bad)).expect_err(bad);
            let message = format!("{e:#}");
            assert!(message.contains("bulk.upload_urls"), "{message}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let c = Config {
            signing_key: Some(Secret("abc123".into())),
            ..Config::default()
        };
        assert!(!format!("{c:?}").contains("abc123"));
    }
}
