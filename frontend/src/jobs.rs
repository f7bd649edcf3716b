//! The UWS 1.1 job routes: the job list, job creation, and every child resource of a job.
//! Each handler parses, calls [`uws::service::Uws`], and renders.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use uws::{ExecutionPhase, Job, Parameters, UwsError, timestamp, xml};

use crate::completion;
use crate::cutout;
use crate::error::FrontendError;
use crate::extract::{DaliParams, Delegated, IdempotencyKey, Owner, PublicBase};
use crate::quota::{self, Intent};
use crate::state::AppState;

type Result<T> = std::result::Result<T, FrontendError>;

fn xml_response(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn text_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// Freshly signed URLs for a job's results, in result order.
pub async fn result_urls(app: &AppState, base: &PublicBase, job: &Job) -> Result<Vec<String>> {
    let mut urls = Vec::with_capacity(job.results.len());
    for result in &job.results {
        urls.push(
            app.uws
                .results()
                .signed_url(&result.key, app.settings.url_lifetime, &base.0)
                .await?,
        );
    }
    Ok(urls)
}

/// `GET /jobs`: the caller's jobs, newest first, filtered by `PHASE`, `AFTER`, `LAST`.
#[utoipa::path(
    get,
    operation_id = "list_jobs",
    path = "/jobs",
    tag = "UWS",
    params(crate::openapi::JobListParams),
    responses(
        (status = 200, description = "uws:jobs, newest first", content_type = "application/xml", body = String),
        (status = 400, description = "UsageError or MultiValuedParamNotSupported: bad parameters", content_type = "text/plain", body = String),
        (status = 503, description = "ServiceUnavailable: the job store or queue is down", content_type = "text/plain", body = String)
    )
)]
pub async fn list(
    State(app): State<AppState>,
    Owner(owner): Owner,
    base: PublicBase,
    DaliParams(params): DaliParams,
) -> Result<Response> {
    let jobs = app.uws.list(&owner, &params).await?;
    Ok(xml_response(xml::with_stylesheet(
        xml::job_list(&jobs, |id| base.job(id)),
        &base.ui(crate::ui::STYLESHEET),
    )))
}

/// `POST /jobs`: creates a job (303 to it); `PHASE=RUN` starts it at once. With an
/// `Idempotency-Key`, a repeat of the same request by the same owner answers the job the first
/// one created (while it exists), and the key reused for another request is refused (422).
#[utoipa::path(
    post,
    operation_id = "create_job",
    path = "/jobs",
    tag = "UWS",
    request_body(content = crate::openapi::JobCreation, content_type = "application/x-www-form-urlencoded"),
    params(("Idempotency-Key" = Option<String>, Header, description = "The client's name for this create: a repeat with the same key answers the first job")),
    responses(
        (status = 303, description = "See Other: Location is the job"),
        (status = 400, description = "UsageError or MultiValuedParamNotSupported: bad parameters", content_type = "text/plain", body = String),
        (status = 404, description = "UsageError: the image is unknown", content_type = "text/plain", body = String),
        (status = 422, description = "UsageError: the Idempotency-Key was used for another request", content_type = "text/plain", body = String),
        (status = 503, description = "ServiceUnavailable: the job store or queue is down; no job was created", content_type = "text/plain", body = String)
    )
)]
pub async fn create(
    State(app): State<AppState>,
    Owner(owner): Owner,
    Delegated(token): Delegated,
    key: IdempotencyKey,
    base: PublicBase,
    DaliParams(params): DaliParams,
) -> Result<Response> {
    let id = create_job(&app, &owner, token, &key, params).await?;
    Ok(Redirect::to(&base.job(id.as_str())).into_response())
}

/// Creates a job from a request's parameters, as `POST /jobs` does (also for the web page's
/// form), and returns its ID: the parameters are validated, the quotas checked and a light curve
/// that no image covers recorded as a failed job, all before anything is queued.
pub async fn create_job(
    app: &AppState,
    owner: &str,
    token: Option<uws::queue::DelegatedToken>,
    key: &IdempotencyKey,
    params: Parameters,
) -> Result<uws::JobId> {
    let params = match cutout::light_curve(app, &params).await? {
        cutout::LightCurve::NotOne => params,
        cutout::LightCurve::Epochs { parameters, .. } => parameters,
        cutout::LightCurve::NoImage(message) => {
            return no_image_job(app, owner, key.job_id(owner), &params, message).await;
        }
    };
    let cutout = cutout::job_parameters(app, &params).await?;
    let intent = match params.first("PHASE") {
        Some(p) if p.trim().eq_ignore_ascii_case("RUN") => Intent::CreateAndRun,
        _ => Intent::Create,
    };
    // The ID is drawn once, before the first attempt, so a create in doubt can be repeated.
    let id = key.job_id(owner);
    if !repeats_a_create(app, key, owner, &id).await {
        quota::check(app, owner, intent).await?;
    }
    let job = app
        .uws
        .create(
            id,
            owner,
            &params,
            cutout.parameters,
            uws::queue::Priority::Async,
            token,
            quota::admission(app, cutout.planned_bytes),
        )
        .await?;
    tracing::Span::current().record("job_id", job.id.as_str());
    tracing::info!(phase = %job.phase, "job created");
    Ok(job.id)
}

/// True when the request carries an `Idempotency-Key` whose job the owner already has: a repeat,
/// which answers that job (or a conflict) and so is not charged to the quotas again.
pub async fn repeats_a_create(
    app: &AppState,
    key: &IdempotencyKey,
    owner: &str,
    id: &uws::JobId,
) -> bool {
    key.0.is_some() && app.uws.job(owner, id.as_str()).await.is_ok()
}

/// A light curve that no indexed image covers: the job exists, as the client asked, and is
/// ERROR at once with a message that says so (nothing is queued).
async fn no_image_job(
    app: &AppState,
    owner: &str,
    id: uws::JobId,
    params: &Parameters,
    message: String,
) -> Result<uws::JobId> {
    quota::check(app, owner, Intent::Create).await?;
    let job = app
        .uws
        .create(
            id,
            owner,
            &params.without(&["PHASE"]),
            params.only(soda::request::CUTOUT_PARAMETERS),
            uws::queue::Priority::Async,
            None,
            quota::admission(app, None),
        )
        .await?;
    let job = app
        .uws
        .finish(
            &job.id,
            uws::store::Transition::Fail(uws::JobError::new(uws::ErrorCode::NoData, message)),
        )
        .await?;
    tracing::info!(job = %job.id, owner = %owner, "light-curve job failed: no covering image");
    Ok(job.id)
}

/// `GET /jobs/{id}`, with `WAIT` (and `PHASE`) blocking until the phase changes.
#[utoipa::path(
    get,
    operation_id = "get_job",
    path = "/jobs/{id}",
    tag = "UWS",
    params(("id" = String, Path, description = "Job ID"), crate::openapi::JobWaitParams),
    responses(
        (status = 200, description = "uws:job", content_type = "application/xml", body = String),
        (status = 400, description = "UsageError or MultiValuedParamNotSupported: bad parameters", content_type = "text/plain", body = String),
        crate::openapi::JobReadFailures
    )
)]
pub async fn get(
    State(app): State<AppState>,
    Owner(owner): Owner,
    base: PublicBase,
    Path(id): Path<String>,
    DaliParams(params): DaliParams,
) -> Result<Response> {
    let job = match params.first("WAIT") {
        Some(wait) => {
            app.uws
                .wait(&owner, &id, wait, params.first("PHASE"))
                .await?
        }
        None => app.uws.job(&owner, &id).await?,
    };
    let job = completion::with_quote(&app, job).await?;
    let urls = result_urls(&app, &base, &job).await?;
    Ok(xml_response(xml::with_stylesheet(
        xml::job(&job, &urls),
        &base.ui(crate::ui::STYLESHEET),
    )))
}

/// `POST /jobs/{id}`: only `ACTION=DELETE` (DALI: no parameters on the job URL itself).
#[utoipa::path(
    post,
    operation_id = "post_job",
    path = "/jobs/{id}",
    tag = "UWS",
    params(("id" = String, Path, description = "Job ID")),
    request_body(content = crate::openapi::ActionForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "See Other: Location is the job list"),
        (status = 400, description = "UsageError or MultiValuedParamNotSupported: bad parameters", content_type = "text/plain", body = String),
        crate::openapi::JobReadFailures
    )
)]
pub async fn post(
    State(app): State<AppState>,
    Owner(owner): Owner,
    base: PublicBase,
    Path(id): Path<String>,
    DaliParams(params): DaliParams,
) -> Result<Response> {
    match params.first("ACTION") {
        Some(a) if a.trim().eq_ignore_ascii_case("DELETE") => {
            app.uws.delete(&owner, &id).await?;
            Ok(Redirect::to(&base.jobs()).into_response())
        }
        Some(a) => Err(FrontendError::Usage(format!(
            "ACTION must be DELETE, got {a:?}"
        ))),
        None => {
            // Still a 404 for an unknown job, so IDs cannot be probed through this route.
            app.uws.job(&owner, &id).await?;
            Err(FrontendError::Usage(
                "POST to a job URL accepts only ACTION=DELETE; parameters go to /parameters and phase changes to /phase".into(),
            ))
        }
    }
}

/// `DELETE /jobs/{id}`.
#[utoipa::path(
    delete,
    operation_id = "delete_job",
    path = "/jobs/{id}",
    tag = "UWS",
    params(("id" = String, Path, description = "Job ID")),
    responses(
        (status = 303, description = "See Other: Location is the job list"),
        crate::openapi::JobReadFailures
    )
)]
pub async fn delete(
    State(app): State<AppState>,
    Owner(owner): Owner,
    base: PublicBase,
    Path(id): Path<String>,
) -> Result<Response> {
    app.uws.delete(&owner, &id).await?;
    Ok(Redirect::to(&base.jobs()).into_response())
}

#[utoipa::path(
    get,
    path = "/jobs/{id}/phase",
    tag = "UWS",
    params(("id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "The phase, e.g. EXECUTING", content_type = "text/plain", body = String),
        crate::openapi::JobReadFailures
    )
)]
pub async fn get_phase(
    State(app): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<Response> {
    let job = app.uws.job(&owner, &id).await?;
    Ok(text_response(job.phase.to_string()))
}

/// `POST /phase` with `PHASE=RUN` or `PHASE=ABORT`.
#[utoipa::path(
    post,
    path = "/jobs/{id}/phase",
    tag = "UWS",
    params(("id" = String, Path, description = "Job ID")),
    request_body(content = crate::openapi::PhaseForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "See Other: Location is the job"),
        crate::openapi::JobChangeFailures
    )
)]
pub async fn post_phase(
    State(app): State<AppState>,
    Owner(owner): Owner,
    Delegated(token): Delegated,
    base: PublicBase,
    Path(id): Path<String>,
    DaliParams(params): DaliParams,
) -> Result<Response> {
    let job = change_phase(&app, &owner, token, &id, params.first("PHASE")).await?;
    Ok(Redirect::to(&base.job(job.id.as_str())).into_response())
}

/// `PHASE=RUN` or `PHASE=ABORT` on one of the owner's jobs, as `POST /phase` does (also for the
/// web page's buttons); a run is checked against the quotas first.
pub async fn change_phase(
    app: &AppState,
    owner: &str,
    token: Option<uws::queue::DelegatedToken>,
    id: &str,
    phase: Option<&str>,
) -> Result<Job> {
    if phase.is_some_and(|p| p.trim().eq_ignore_ascii_case("RUN")) {
        // The job is looked up first, so another user's job is still a plain 404.
        app.uws.job(owner, id).await?;
        quota::check(app, owner, Intent::Run).await?;
    }
    Ok(app.uws.set_phase(owner, id, phase, token).await?)
}

#[utoipa::path(
    get,
    path = "/jobs/{id}/executionduration",
    tag = "UWS",
    params(("id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "Seconds the job may run; 0 is unlimited", content_type = "text/plain", body = String),
        crate::openapi::JobReadFailures
    )
)]
pub async fn get_execution_duration(
    State(app): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<Response> {
    let job = app.uws.job(&owner, &id).await?;
    Ok(text_response(job.execution_duration.to_string()))
}

#[utoipa::path(
    post,
    path = "/jobs/{id}/executionduration",
    tag = "UWS",
    params(("id" = String, Path, description = "Job ID")),
    request_body(content = crate::openapi::ExecutionDurationForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "See Other: Location is the job"),
        crate::openapi::JobChangeFailures
    )
)]
pub async fn post_execution_duration(
    State(app): State<AppState>,
    Owner(owner): Owner,
    base: PublicBase,
    Path(id): Path<String>,
    DaliParams(params): DaliParams,
) -> Result<Response> {
    let job = app
        .uws
        .set_execution_duration(&owner, &id, params.first("EXECUTIONDURATION"))
        .await?;
    Ok(Redirect::to(&base.job(job.id.as_str())).into_response())
}

#[utoipa::path(
    get,
    path = "/jobs/{id}/destruction",
    tag = "UWS",
    params(("id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "When the job is destroyed (ISO 8601 UTC)", content_type = "text/plain", body = String),
        crate::openapi::JobReadFailures
    )
)]
pub async fn get_destruction(
    State(app): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<Response> {
    let job = app.uws.job(&owner, &id).await?;
    Ok(text_response(timestamp::format(job.destruction)))
}

#[utoipa::path(
    post,
    path = "/jobs/{id}/destruction",
    tag = "UWS",
    params(("id" = String, Path, description = "Job ID")),
    request_body(content = crate::openapi::DestructionForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "See Other: Location is the job"),
        crate::openapi::JobChangeFailures
    )
)]
pub async fn post_destruction(
    State(app): State<AppState>,
    Owner(owner): Owner,
    base: PublicBase,
    Path(id): Path<String>,
    DaliParams(params): DaliParams,
) -> Result<Response> {
    let job = app
        .uws
        .set_destruction(&owner, &id, params.first("DESTRUCTION"))
        .await?;
    Ok(Redirect::to(&base.job(job.id.as_str())).into_response())
}

/// `GET /error`: the DALI error VOTable of a failed job; 404 for any other job.
#[utoipa::path(
    get,
    path = "/jobs/{id}/error",
    tag = "UWS",
    params(("id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "DALI error VOTable of a failed job", content_type = "application/x-votable+xml", body = String),
        crate::openapi::JobReadFailures
    )
)]
pub async fn get_error(
    State(app): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<Response> {
    let job = app.uws.job(&owner, &id).await?;
    match (&job.error, job.phase) {
        (Some(error), ExecutionPhase::Error) => Ok((
            [(header::CONTENT_TYPE, "application/x-votable+xml")],
            xml::error_votable(error),
        )
            .into_response()),
        _ => Err(UwsError::ResourceNotFound(format!(
            "job {} has no error: it is {}",
            job.id, job.phase
        ))
        .into()),
    }
}

/// `GET /quote`: when the job is expected to complete (see [`crate::completion`]); empty for a held or
/// suspended job.
#[utoipa::path(
    get,
    path = "/jobs/{id}/quote",
    tag = "UWS",
    params(("id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "Estimated completion instant; empty when unknown", content_type = "text/plain", body = String),
        crate::openapi::JobReadFailures
    )
)]
pub async fn get_quote(
    State(app): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<Response> {
    let job = completion::with_quote(&app, app.uws.job(&owner, &id).await?).await?;
    Ok(text_response(
        job.quote.map(timestamp::format).unwrap_or_default(),
    ))
}

#[utoipa::path(
    get,
    path = "/jobs/{id}/owner",
    tag = "UWS",
    params(("id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "The job's owner", content_type = "text/plain", body = String),
        crate::openapi::JobReadFailures
    )
)]
pub async fn get_owner(
    State(app): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<Response> {
    let job = app.uws.job(&owner, &id).await?;
    Ok(text_response(job.owner))
}

#[utoipa::path(
    get,
    path = "/jobs/{id}/parameters",
    tag = "UWS",
    params(("id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "uws:parameters", content_type = "application/xml", body = String),
        crate::openapi::JobReadFailures
    )
)]
pub async fn get_parameters(
    State(app): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<Response> {
    let job = app.uws.job(&owner, &id).await?;
    Ok(xml_response(xml::parameters(&job)))
}

/// `POST /parameters`: while PENDING, replaces the named parameters (the whole set is validated
/// again) and accepts `RUNID`; 403 in any other phase.
#[utoipa::path(
    post,
    path = "/jobs/{id}/parameters",
    tag = "UWS",
    params(("id" = String, Path, description = "Job ID")),
    request_body(content = crate::openapi::ParametersForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "See Other: Location is the job"),
        crate::openapi::JobChangeFailures
    )
)]
pub async fn post_parameters(
    State(app): State<AppState>,
    Owner(owner): Owner,
    base: PublicBase,
    Path(id): Path<String>,
    DaliParams(params): DaliParams,
) -> Result<Response> {
    let job = app.uws.job(&owner, &id).await?;
    let changed = params.without(uws::service::CONTROL_PARAMETERS);
    let mut merged = Parameters::new();
    for (name, value) in &job.parameters {
        if !changed.contains(name) {
            merged.push(name, value);
        }
    }
    for (name, value) in changed.iter() {
        merged.push(name, value);
    }
    let merged = if changed.is_empty() {
        Parameters::new()
    } else {
        cutout::job_parameters(&app, &merged).await?.parameters
    };
    let job = app
        .uws
        .set_parameters(&job, merged, params.first("RUNID"))
        .await?;
    Ok(Redirect::to(&base.job(job.id.as_str())).into_response())
}

/// `GET /results`: the result list; 404 for a job without results.
#[utoipa::path(
    get,
    path = "/jobs/{id}/results",
    tag = "UWS",
    params(("id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "uws:results with freshly signed URLs", content_type = "application/xml", body = String),
        crate::openapi::JobReadFailures
    )
)]
pub async fn get_results(
    State(app): State<AppState>,
    Owner(owner): Owner,
    base: PublicBase,
    Path(id): Path<String>,
) -> Result<Response> {
    let job = app.uws.job(&owner, &id).await?;
    if job.results.is_empty() {
        return Err(UwsError::ResourceNotFound(format!(
            "job {} has no results: it is {}",
            job.id, job.phase
        ))
        .into());
    }
    let urls = result_urls(&app, &base, &job).await?;
    Ok(xml_response(xml::results(&job, &urls)))
}

/// `GET /results/{result}`: a stable link that redirects to a freshly signed URL, so a bookmarked
/// result keeps working until the job is destroyed.
#[utoipa::path(
    get,
    path = "/jobs/{id}/results/{result}",
    tag = "UWS",
    params(("id" = String, Path, description = "Job ID"), ("result" = String, Path, description = "Result ID")),
    responses(
        (status = 303, description = "See Other: Location is a freshly signed URL of the result"),
        crate::openapi::JobReadFailures
    )
)]
pub async fn get_result(
    State(app): State<AppState>,
    Owner(owner): Owner,
    base: PublicBase,
    Path((id, result)): Path<(String, String)>,
) -> Result<Response> {
    let job = app.uws.job(&owner, &id).await?;
    let found = job.results.iter().find(|r| r.id == result).ok_or_else(|| {
        UwsError::ResourceNotFound(format!("job {} has no result {result:?}", job.id))
    })?;
    let url = app
        .uws
        .results()
        .signed_url(&found.key, app.settings.url_lifetime, &base.0)
        .await?;
    Ok(Redirect::to(&url).into_response())
}
