//! `skycut wobbly`: the job store as an HTTP+JSON service, so that frontends and workers reach
//! PostgreSQL through one component that owns the schema and its migrations.
//!
//! Every request needs a valid token (see [`crate::auth`]); a missing or bad one gets 401 and
//! changes nothing. A token that names a user confines the caller to that user's jobs: it reads,
//! lists and changes only them, is refused the service-wide routes (`/v1/expired`,
//! `/v1/active`), and sets no time (its jobs get the service's default lifetime and duration,
//! and the server's clock). Whoever completes a job may name only result keys under the job's
//! own prefix (`{id}/`), which the frontend later signs.

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use uws::store::{Created, JobStore, JobUpdate, ListCursor, Transition};
use uws::{Job, JobId, NewJob, UwsError, timestamp};

use crate::api::{
    IdsQuery, JobJson, JobPage, ListQuery, NewJobJson, Problem, QueuedJson, QueuedQuery,
    RecentRunJson, SummaryJson, TransitionRequest, UpdateJson, UsageJson, UsageQuery, phases,
};
use crate::auth::{Claims, TokenKey};
use crate::store::SqlJobStore;

/// The most jobs one list answer holds; longer lists are read page by page with the cursor.
pub const MAX_PAGE: u32 = 1000;

#[derive(Clone)]
struct ServiceState {
    store: SqlJobStore,
    key: TokenKey,
}

/// The routes of the job-store service, under `/v1`, plus the unauthenticated probes `/healthz`
/// (the process serves) and `/readyz` (its database answers).
pub fn router(store: SqlJobStore, key: TokenKey) -> Router {
    let state = ServiceState { store, key };
    let v1 = Router::new()
        .route("/jobs", post(create).get(list))
        .route("/jobs/{id}", get(read).patch(update).delete(delete))
        .route("/jobs/{id}/transition", post(transition))
        .route("/expired", get(expired))
        .route("/results-expired", get(results_expired))
        .route("/active", get(active))
        .route("/usage", get(usage))
        .route("/queued", get(queued))
        .route("/recent-runs", get(recent_runs))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state.clone());
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        .with_state(state)
}

/// An error answer: the status tells the kind, the body lets the client rebuild the error.
enum Failure {
    Uws(UwsError),
    /// 403: a user-confined token asked for what only service-wide tokens may do.
    Refused(String),
}

impl From<UwsError> for Failure {
    fn from(e: UwsError) -> Self {
        Failure::Uws(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let error = match self {
            Failure::Uws(e) => e,
            Failure::Refused(message) => {
                return (StatusCode::FORBIDDEN, message).into_response();
            }
        };
        let status = match &error {
            UwsError::JobNotFound(_) => StatusCode::NOT_FOUND,
            UwsError::IllegalTransition { .. }
            | UwsError::WrongPhase { .. }
            | UwsError::Conflict(_) => StatusCode::CONFLICT,
            UwsError::Usage(_) => StatusCode::BAD_REQUEST,
            UwsError::OverQuota(_) => StatusCode::TOO_MANY_REQUESTS,
            UwsError::ResourceNotFound(_)
            | UwsError::Store(_)
            | UwsError::Queue(_)
            | UwsError::ResultStore(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(Problem::from_error(&error))).into_response()
    }
}

/// Refuses a user-confined token a route or a field that only the service's own components use.
fn service_wide(claims: &Claims, what: &str) -> Result<(), Failure> {
    match &claims.user {
        Some(_) => Err(Failure::Refused(format!(
            "{what} needs a service-wide token, not one confined to a user"
        ))),
        None => Ok(()),
    }
}

/// Result keys must lie under the job's own prefix, since the frontend signs whatever key a
/// completed job names.
fn check_result_keys(id: &JobId, transition: &Transition) -> Result<(), UwsError> {
    let Transition::Complete(results) = transition else {
        return Ok(());
    };
    let prefix = format!("{id}/");
    for result in results {
        let inside = result.key.strip_prefix(&prefix).is_some_and(|rest| {
            !rest.is_empty()
                && !rest
                    .split('/')
                    .any(|s| s.is_empty() || s == "." || s == "..")
        });
        if !inside {
            return Err(UwsError::Usage(format!(
                "result key {:?} is not under the job's prefix {prefix:?}",
                result.key
            )));
        }
    }
    Ok(())
}

async fn authenticate(
    State(state): State<ServiceState>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.map(|t| state.key.verify(t)) {
        Some(Ok(claims)) => {
            request.extensions_mut().insert(claims);
            next.run(request).await
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid bearer token is required",
        )
            .into_response(),
    }
}

/// The store scoped to the caller's service.
fn scoped(state: &ServiceState, claims: &Claims) -> SqlJobStore {
    state.store.for_service(&claims.service)
}

/// A user-confined caller sees only their own jobs; anything else is reported as missing.
fn visible(claims: &Claims, job: Job) -> Result<Job, UwsError> {
    match &claims.user {
        Some(user) if *user != job.owner => Err(UwsError::JobNotFound(job.id.to_string())),
        _ => Ok(job),
    }
}

async fn find(store: &SqlJobStore, claims: &Claims, id: &str) -> Result<Job, UwsError> {
    let id = JobId::parse(id)?;
    let job = store
        .get(&id)
        .await?
        .ok_or_else(|| UwsError::JobNotFound(id.to_string()))?;
    visible(claims, job)
}

/// Answering is the whole check: a database outage must not get the process restarted.
async fn alive() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn ready(State(state): State<ServiceState>) -> Response {
    if state.store.ping().await {
        (StatusCode::OK, "ready\njob store: database answers\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready\njob store unavailable: the database does not answer\n",
        )
            .into_response()
    }
}

/// 201 with a new job, 200 with the job an identical earlier create made (see [`NewJobJson`]).
async fn create(
    State(state): State<ServiceState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Json(body): Json<NewJobJson>,
) -> Result<Response, Failure> {
    let mut job = NewJob::try_from(body)?;
    if let Some(user) = &claims.user {
        // Only the service's own components choose times; a user gets the defaults.
        let defaults = uws::service::JobLimits::default();
        let now = timestamp::now();
        job.owner = user.clone();
        job.creation_time = now;
        job.destruction = now + defaults.default_lifetime;
        job.execution_duration = defaults.default_execution_duration;
    }
    let (status, job) = match scoped(&state, &claims).create(job).await? {
        Created::New(job) => (StatusCode::CREATED, job),
        Created::Existing(job) => (StatusCode::OK, job),
    };
    Ok((status, Json(JobJson::from(&job))).into_response())
}

async fn read(
    State(state): State<ServiceState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path(id): Path<String>,
) -> Result<Json<JobJson>, Failure> {
    let job = find(&scoped(&state, &claims), &claims, &id).await?;
    Ok(Json(JobJson::from(&job)))
}

/// One page of the owner's list; a page holds at most [`MAX_PAGE`] jobs, and `next` continues it.
async fn list(
    State(state): State<ServiceState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Query(query): Query<ListQuery>,
) -> Result<Json<JobPage>, Failure> {
    let owner = claims.user.clone().unwrap_or_else(|| query.owner.clone());
    let mut filter = query.filter()?;
    let page_size = filter.last.unwrap_or(MAX_PAGE).min(MAX_PAGE);
    filter.last = Some(page_size);
    let jobs = scoped(&state, &claims).list(&owner, &filter).await?;
    let full = jobs.len() == page_size as usize;
    let next = jobs
        .last()
        .filter(|_| full)
        .map(|last| ListCursor::after(last).token());
    Ok(Json(JobPage {
        jobs: jobs.iter().map(SummaryJson::from).collect(),
        next,
    }))
}

async fn usage(
    State(state): State<ServiceState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Query(query): Query<UsageQuery>,
) -> Result<Json<UsageJson>, Failure> {
    let owner = claims.user.clone().unwrap_or_else(|| query.owner.clone());
    let since = timestamp::parse(&query.since)?;
    let usage = scoped(&state, &claims).usage(&owner, since).await?;
    Ok(Json(UsageJson::from(&usage)))
}

async fn queued(
    State(state): State<ServiceState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Query(query): Query<QueuedQuery>,
) -> Result<Json<QueuedJson>, Failure> {
    let owner = claims.user.clone().unwrap_or_else(|| query.owner.clone());
    let queued = scoped(&state, &claims)
        .queued_count(&owner, query.cap)
        .await?;
    Ok(Json(QueuedJson { queued }))
}

async fn recent_runs(
    State(state): State<ServiceState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Query(query): Query<IdsQuery>,
) -> Result<Json<Vec<RecentRunJson>>, Failure> {
    let runs = scoped(&state, &claims).recent_runs(query.limit).await?;
    Ok(Json(runs.iter().map(RecentRunJson::from).collect()))
}

async fn transition(
    State(state): State<ServiceState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path(id): Path<String>,
    Json(body): Json<TransitionRequest>,
) -> Result<Json<JobJson>, Failure> {
    let store = scoped(&state, &claims);
    let job = find(&store, &claims, &id).await?;
    // A user-confined caller does not choose the instants it records.
    let at = match claims.user {
        Some(_) => timestamp::now(),
        None => timestamp::parse(&body.at)?,
    };
    let transition = Transition::from(body.transition);
    if let Transition::Archive = transition {
        // Archiving is the result sweeper's, which deletes the objects after it.
        service_wide(&claims, "archiving a job")?;
    }
    check_result_keys(&job.id, &transition)?;
    let job = store.transition(&job.id, transition, at).await?;
    Ok(Json(JobJson::from(&job)))
}

async fn update(
    State(state): State<ServiceState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path(id): Path<String>,
    Json(body): Json<UpdateJson>,
) -> Result<Json<JobJson>, Failure> {
    let store = scoped(&state, &claims);
    let job = find(&store, &claims, &id).await?;
    let update = JobUpdate::try_from(body)?;
    if let JobUpdate::Destruction(_) | JobUpdate::ExecutionDuration(_) = update {
        service_wide(&claims, "setting a job's times")?;
    }
    if let JobUpdate::Progress(_) = update {
        service_wide(&claims, "reporting a job's progress")?;
    }
    let job = store.update(&job.id, update).await?;
    Ok(Json(JobJson::from(&job)))
}

async fn delete(
    State(state): State<ServiceState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path(id): Path<String>,
) -> Result<Json<JobJson>, Failure> {
    let store = scoped(&state, &claims);
    let job = find(&store, &claims, &id).await?;
    let job = store
        .delete(&job.id)
        .await?
        .ok_or_else(|| UwsError::JobNotFound(id.clone()))?;
    Ok(Json(JobJson::from(&job)))
}

async fn expired(
    State(state): State<ServiceState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Query(query): Query<IdsQuery>,
) -> Result<Json<Vec<String>>, Failure> {
    // Every owner's jobs: the destruction sweeper's route.
    service_wide(&claims, "/v1/expired")?;
    let now = query
        .now
        .as_deref()
        .map(timestamp::parse)
        .transpose()?
        .unwrap_or_else(timestamp::now);
    let ids = scoped(&state, &claims).expired(now, query.limit).await?;
    Ok(Json(ids.iter().map(ToString::to_string).collect()))
}

async fn results_expired(
    State(state): State<ServiceState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Query(query): Query<IdsQuery>,
) -> Result<Json<Vec<String>>, Failure> {
    // Every owner's jobs: the result sweeper's route.
    service_wide(&claims, "/v1/results-expired")?;
    let ended_before = query
        .now
        .as_deref()
        .map(timestamp::parse)
        .transpose()?
        .ok_or_else(|| UwsError::Usage("now (the latest end) is required".to_owned()))?;
    let ids = scoped(&state, &claims)
        .results_expired(ended_before, query.limit)
        .await?;
    Ok(Json(ids.iter().map(ToString::to_string).collect()))
}

async fn active(
    State(state): State<ServiceState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Query(query): Query<IdsQuery>,
) -> Result<Json<Vec<String>>, Failure> {
    // Every owner's jobs: the workers' queue rebuild.
    service_wide(&claims, "/v1/active")?;
    let list = phases(query.phases.as_deref().unwrap_or_default())?;
    let ids = scoped(&state, &claims)
        .in_phases(&list, query.limit)
        .await?;
    Ok(Json(ids.iter().map(ToString::to_string).collect()))
}
