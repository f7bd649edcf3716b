//! SODA synchronous cutouts: an async job that the frontend runs at sync priority and waits on
//! (woken by phase events), answering 303 to the signed URL of the result.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use uws::queue::{DelegatedToken, Priority};
use uws::{ErrorCode, ExecutionPhase, Job, Parameters};

use crate::cutout;
use crate::error::FrontendError;
use crate::extract::{DaliParams, Delegated, IdempotencyKey, Owner, PublicBase};
use crate::jobs::{repeats_a_create, result_urls};
use crate::quota::{self, Intent};
use crate::state::AppState;

/// `GET|POST /sync`: 303 to the FITS cutout, 204 if the stencil misses the image, or the job's
/// error as text/plain. With an `Idempotency-Key`, a repeat by the same owner waits on (or
/// answers) the job of the first request rather than cutting again.
#[utoipa::path(
    method(get, post),
    path = "/sync",
    tag = "SODA",
    params(
        crate::openapi::SodaParams,
        ("Idempotency-Key" = Option<String>, Header, description = "The client's name for this request: a repeat with the same key answers the first job's outcome")
    ),
    responses(
        (status = 303, description = "See Other: Location is the signed URL of the FITS cutout"),
        (status = 204, description = "The stencil does not overlap the image (SODA 1.0 §5.1)"),
        (status = 400, description = "UsageError or MultiValuedParamNotSupported: bad parameters", content_type = "text/plain", body = String),
        (status = 404, description = "UsageError: the image is unknown", content_type = "text/plain", body = String),
        (status = 422, description = "UsageError: the Idempotency-Key was used for another request", content_type = "text/plain", body = String),
        (status = 503, description = "ServiceUnavailable: a dependency is down, the queue is too deep for a synchronous request (use /jobs; Retry-After says when to try again), or the cutout took too long", content_type = "text/plain", body = String)
    )
)]
pub async fn sync(
    State(app): State<AppState>,
    Owner(owner): Owner,
    Delegated(token): Delegated,
    key: IdempotencyKey,
    base: PublicBase,
    DaliParams(params): DaliParams,
) -> Result<Response, FrontendError> {
    match run(&app, &owner, token, &key, params).await? {
        SyncOutcome::Completed { job, chosen } => {
            let urls = result_urls(&app, &base, &job).await?;
            let url = urls.get(chosen).ok_or_else(|| {
                FrontendError::Internal(format!("job {} completed without a result", job.id))
            })?;
            Ok(Redirect::to(url).into_response())
        }
        SyncOutcome::NoData(_) => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// How a synchronous cutout ended, when it did not fail.
pub enum SyncOutcome {
    /// The job completed; `chosen` is the result a SODA client is sent to (the preview when one
    /// was asked for, the multi-extension file of a light curve).
    Completed { job: Box<Job>, chosen: usize },
    /// Nothing to cut: the stencil misses the image, or no indexed image covers a light curve's
    /// position (SODA 1.0 §5.1: 204). The message says which.
    NoData(String),
}

/// Runs one synchronous cutout to its end, as `/sync` does (also for the web page's form): the
/// validation, quotas and queue-depth refusal happen before any job exists.
pub async fn run(
    app: &AppState,
    owner: &str,
    token: Option<DelegatedToken>,
    key: &IdempotencyKey,
    params: Parameters,
) -> Result<SyncOutcome, FrontendError> {
    // A position without ID is a light curve: it answers the multi-extension file of every
    // epoch, or 204 when no indexed image covers the position.
    let (params, light_curve) = match cutout::light_curve(app, &params).await? {
        cutout::LightCurve::NotOne => (params, false),
        cutout::LightCurve::Epochs { parameters, .. } => (parameters, true),
        cutout::LightCurve::NoImage(message) => return Ok(SyncOutcome::NoData(message)),
    };
    // UWS control parameters mean nothing here; only the SODA ones are kept.
    let cutout = cutout::job_parameters(app, &params).await?;
    let id = key.job_id(owner);
    if !repeats_a_create(app, key, owner, &id).await {
        quota::check(app, owner, Intent::CreateAndRun).await?;
        refuse_if_queue_full(app).await?;
    }
    let job = app
        .uws
        .run_and_wait(
            id,
            owner,
            cutout.parameters,
            Priority::Sync,
            token,
            app.settings.sync_timeout,
            quota::admission(app, cutout.planned_bytes),
        )
        .await?;
    match job.phase {
        ExecutionPhase::Completed => {
            let chosen = match light_curve {
                true => job
                    .results
                    .iter()
                    .position(|r| r.id == "cutouts")
                    .unwrap_or(0),
                false => 0,
            };
            Ok(SyncOutcome::Completed {
                job: Box::new(job),
                chosen,
            })
        }
        ExecutionPhase::Error => match &job.error {
            Some(e) if e.code == ErrorCode::NoData => Ok(SyncOutcome::NoData(e.message.clone())),
            Some(e) => Err(FrontendError::from_job_error(e)),
            None => Err(FrontendError::Internal(format!(
                "job {} failed without an error",
                job.id
            ))),
        },
        phase => Err(FrontendError::Unavailable(format!(
            "the cutout did not finish within {} s (job {} is {phase}); try the async endpoint",
            app.settings.sync_timeout.as_secs(),
            job.id
        ))),
    }
}

/// Refuses a synchronous request while the queue holds `sync_max_queue_depth` jobs or more: its
/// job would wait behind them and likely time out while holding a connection, so the client is
/// told to submit it to `/jobs` instead (DMTN-208). Checked before the job exists, so a refused
/// request leaves nothing behind.
async fn refuse_if_queue_full(app: &AppState) -> Result<(), FrontendError> {
    let limit = app.settings.sync_max_queue_depth;
    if limit == 0 {
        return Ok(());
    }
    let depth = app.uws.queue().depth().await?;
    if depth < limit {
        return Ok(());
    }
    Err(FrontendError::Overloaded {
        message: format!(
            "{depth} jobs are queued (the limit for synchronous requests is {limit}); \
             submit the cutout to the async endpoint /jobs instead"
        ),
        // A sync request would have waited up to this long anyway; by then the queue has moved.
        retry_after: app.settings.sync_timeout.as_secs().max(1),
    })
}
