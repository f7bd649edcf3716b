//! The state every handler shares: one [`AppState`] wrapping one [`App`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bucket::LocalBucket;
use soda::repository::Repositories;
use time::OffsetDateTime;
use uws::health::HealthCheck;
use uws::service::Uws;
use uws::sky_index::ImageIndex;

use crate::auth::Authenticator;
use crate::cutout::SizeLimits;
use crate::quota::Quotas;

/// Frontend settings, taken from the binary's configuration.
#[derive(Debug, Clone)]
pub struct FrontendSettings {
    /// The external base URL (`https://host/api/cutout`) if fixed by configuration; otherwise it
    /// is derived from each request's `Host` (and forwarded headers from trusted proxies).
    pub public_url: Option<String>,
    /// Peers whose `X-Forwarded-Proto` and `X-Forwarded-Host` are believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// How long a signed result URL stays valid.
    pub url_lifetime: Duration,
    /// How long a synchronous request waits for its cutout before answering 503.
    pub sync_timeout: Duration,
    /// Queued jobs at or above which a synchronous request is refused (503, pointing to the
    /// async endpoint) rather than queued behind them; 0 = never refused.
    pub sync_max_queue_depth: u64,
    /// Per-user limits on jobs and result bytes.
    pub quotas: Quotas,
    /// Limits on the size of what one request makes.
    pub size_limits: SizeLimits,
    /// With `Some`, state-changing requests from another site are refused except from these
    /// origins (`scheme://host[:port]`) and the service's own (see [`crate::origin`]).
    pub allowed_origins: Option<Vec<String>>,
    /// Most images a light curve (a cutout request with a position and no ID) may cut.
    pub max_epochs: usize,
    /// Limits on one bulk request.
    pub bulk: crate::bulk::BulkLimits,
    /// Where a bulk catalogue may be fetched from by URL (none by default).
    pub upload_urls: crate::upload::UrlUploads,
    /// How the workers split a bulk job into shards: the frontend counts a job's shards by the
    /// same rule when it plans the job, for its size and quote.
    pub shards: soda::bulk_plan::ShardLimits,
}

impl Default for FrontendSettings {
    fn default() -> Self {
        FrontendSettings {
            public_url: None,
            trusted_proxies: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ],
            url_lifetime: Duration::from_secs(15 * 60),
            sync_timeout: Duration::from_secs(60),
            sync_max_queue_depth: 0,
            quotas: Quotas::default(),
            size_limits: SizeLimits::default(),
            allowed_origins: None,
            max_epochs: soda::request::MAX_PAIRS,
            bulk: crate::bulk::BulkLimits::default(),
            upload_urls: crate::upload::UrlUploads::default(),
            shards: soda::bulk_plan::ShardLimits::default(),
        }
    }
}

/// Everything a request may need.
pub struct App {
    pub uws: Uws,
    pub repositories: Arc<Repositories>,
    /// Present when results live in a local directory that this frontend serves itself.
    pub local_bucket: Option<LocalBucket>,
    pub settings: FrontendSettings,
    /// Decides who each request acts for.
    pub auth: Authenticator,
    pub started: OffsetDateTime,
    /// Every dependency VOSI availability asks before saying the service is up.
    pub health: Vec<Arc<dyn HealthCheck>>,
    /// Where images are on the sky (SIA 2.0 queries), when this deployment reaches one.
    pub sky_index: Option<Arc<dyn ImageIndex>>,
}

/// Shared handle to the [`App`]; cloning copies one pointer.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}
