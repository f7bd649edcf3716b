//! The web page at `/api/cutout/`: a cutout form, the caller's jobs, and the stylesheet that
//! shows UWS documents in a browser, so that a person can try the service without a client.
//!
//! The page is rendered on the server ([`view`], maud templates checked at compile time) and
//! works without JavaScript: the form posts to `/ui/cutout`, which runs the same code as `/sync`
//! and `/jobs` ([`crate::sync::run`], [`crate::jobs::create_job`]) and shows the outcome, and each
//! job's buttons post to `/ui/jobs/{id}`. The script (`ui/app.js`) only follows the phase events
//! (`/jobs/events`) to redraw a job's row, and sends the buttons without leaving the page.
//! The assets are compiled into the binary (`include_str!`), so the page needs no network and no
//! build step of its own.
//!
//! The page acts for the caller as the API does (the same [`Owner`]); it never sees a token, and
//! its state-changing routes take POST only and refuse other sites
//! ([`crate::origin::always_same_origin`]).

pub mod form;
pub mod view;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::future::try_join_all;
use maud::Markup;
use uws::sky_index::ImageContent;
use uws::store::JobFilter;
use uws::{Job, Parameters};

use crate::error::FrontendError;
use crate::extract::{DaliParams, Delegated, IdempotencyKey, Owner, PublicBase};
use crate::origin::origin_of;
use crate::state::AppState;
use crate::sync::{self, SyncOutcome};
use crate::{jobs, sia};
use form::{CutoutForm, Mode};
use view::{ImageChoice, Outcome};

/// The XSLT that UWS job and job-list documents name in their `<?xml-stylesheet?>`.
pub const STYLESHEET: &str = "uws.xsl";

/// Jobs the page lists (the newest).
const SHOWN_JOBS: usize = 25;

/// Images the form offers from the sky index.
const OFFERED_IMAGES: usize = 500;

/// The embedded assets: name, media type, content.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
    (
        STYLESHEET,
        "text/xsl; charset=utf-8",
        include_str!("../../ui/uws.xsl"),
    ),
];

type Result<T> = std::result::Result<T, FrontendError>;

/// `GET /`: the page.
#[utoipa::path(
    get,
    operation_id = "ui_page",
    path = "/",
    tag = "Web page",
    responses(
        (status = 200, description = "The web page: cutout form and the caller's jobs", content_type = "text/html", body = String),
        (status = 503, description = "ServiceUnavailable: the job store is down", content_type = "text/plain", body = String)
    )
)]
pub async fn page(
    State(app): State<AppState>,
    Owner(owner): Owner,
    base: PublicBase,
) -> Result<Response> {
    let images = offered_images(&app).await;
    let first = images.first();
    let form = CutoutForm::initial(first.map(|i| i.0.id.as_str()), first.map(|i| i.1));
    let images: Vec<ImageChoice> = images.into_iter().map(|(i, _)| i).collect();
    let jobs = my_jobs(&app, &owner).await?;
    Ok(html(
        StatusCode::OK,
        &base,
        view::page(&base, &images, &form, None, &jobs, SHOWN_JOBS),
    ))
}

/// `POST /ui/cutout`: the form. A synchronous cutout shows the page again with the preview and
/// the FITS link (or the service's error); a job answers 303 to the page, where it is listed.
#[utoipa::path(
    post,
    operation_id = "ui_cutout",
    path = "/ui/cutout",
    tag = "Web page",
    request_body(content = String, description = "The page's form: ID, RA, DEC (degrees or sexagesimal), RADIUS (arcsec), FORMAT (FITS, PNG, JPEG), MASK, RUNID, MODE (sync or async)", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The page with the cutout's preview and FITS link", content_type = "text/html", body = String),
        (status = 303, description = "See Other: the job was created; Location is the page"),
        (status = 400, description = "The page with the service's DALI error", content_type = "text/html", body = String),
        (status = 403, description = "AuthorizationError: the form was sent from another site", content_type = "text/plain", body = String)
    )
)]
pub async fn cutout(
    State(app): State<AppState>,
    Owner(owner): Owner,
    Delegated(token): Delegated,
    base: PublicBase,
    DaliParams(params): DaliParams,
) -> Result<Response> {
    let form = CutoutForm::from_parameters(&params);
    let (status, outcome) = match run_form(&app, &owner, token, &base, &form).await {
        Ok(Ran::Created(id)) => {
            return Ok(Redirect::to(&format!("{}/#job-{}", base.0, id.as_str())).into_response());
        }
        Ok(Ran::Cut(outcome)) => (StatusCode::OK, outcome),
        // The page shows the refusal as the API words it, with the status the API would give.
        Err(e) => (e.status(), Outcome::Error(format!("{}: {e}", e.label()))),
    };
    let images = offered_images(&app).await.into_iter().map(|(i, _)| i);
    let jobs = my_jobs(&app, &owner).await?;
    Ok(html(
        status,
        &base,
        view::page(
            &base,
            &images.collect::<Vec<_>>(),
            &form,
            Some(&outcome),
            &jobs,
            SHOWN_JOBS,
        ),
    ))
}

enum Ran {
    Created(uws::JobId),
    Cut(Outcome),
}

async fn run_form(
    app: &AppState,
    owner: &str,
    token: Option<uws::queue::DelegatedToken>,
    base: &PublicBase,
    form: &CutoutForm,
) -> Result<Ran> {
    let params = form.to_parameters()?;
    let no_key = IdempotencyKey(None);
    if form.mode == Mode::Async {
        let id = jobs::create_job(app, owner, token, &no_key, params).await?;
        return Ok(Ran::Created(id));
    }
    Ok(Ran::Cut(
        match sync::run(app, owner, token, &no_key, params).await? {
            SyncOutcome::Completed { job, .. } => {
                let link = |wanted: fn(&str) -> bool| {
                    job.results
                        .iter()
                        .find(|r| wanted(&r.mime_type))
                        .map(|r| format!("{}/results/{}", base.job(job.id.as_str()), r.id))
                };
                Outcome::Cutout {
                    preview: link(|m| m.starts_with("image/")),
                    fits: link(|m| m == soda::request::FITS),
                    job: job.id.as_str().to_owned(),
                }
            }
            SyncOutcome::NoData(why) => Outcome::NoData(why),
        },
    ))
}

/// `GET /ui/jobs/{id}`: one job's table row, which the page's script puts in place of the old
/// one when the job changes phase.
#[utoipa::path(
    get,
    operation_id = "ui_job_row",
    path = "/ui/jobs/{id}",
    tag = "Web page",
    params(("id" = String, Path, description = "Job ID")),
    responses(
        (status = 200, description = "The job's row of the page's table (an HTML fragment)", content_type = "text/html", body = String),
        crate::openapi::JobReadFailures
    )
)]
pub async fn job_row(
    State(app): State<AppState>,
    Owner(owner): Owner,
    base: PublicBase,
    Path(id): Path<String>,
) -> Result<Response> {
    let job = app.uws.job(&owner, &id).await?;
    Ok(html(StatusCode::OK, &base, view::job_row(&base, &job)))
}

/// `POST /ui/jobs/{id}`: a job's button, `ACTION=RUN`, `ABORT` or `DELETE`; 303 back to the page.
#[utoipa::path(
    post,
    operation_id = "ui_job_action",
    path = "/ui/jobs/{id}",
    tag = "Web page",
    params(("id" = String, Path, description = "Job ID")),
    request_body(content = String, description = "ACTION=RUN, ABORT or DELETE", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "See Other: Location is the page"),
        (status = 400, description = "UsageError: an unknown ACTION", content_type = "text/plain", body = String),
        crate::openapi::JobChangeFailures
    )
)]
pub async fn job_action(
    State(app): State<AppState>,
    Owner(owner): Owner,
    Delegated(token): Delegated,
    base: PublicBase,
    Path(id): Path<String>,
    DaliParams(params): DaliParams,
) -> Result<Response> {
    let action = params.first("ACTION").unwrap_or_default().trim();
    match action.to_ascii_uppercase().as_str() {
        "DELETE" => app.uws.delete(&owner, &id).await?,
        phase @ ("RUN" | "ABORT") => {
            jobs::change_phase(&app, &owner, token, &id, Some(phase)).await?;
        }
        _ => {
            return Err(FrontendError::Usage(format!(
                "ACTION must be RUN, ABORT or DELETE, got {action:?}"
            )));
        }
    }
    Ok(Redirect::to(&format!("{}/#jobs", base.0)).into_response())
}

/// `GET /ui/{asset}`: the page's script, its style sheet and the UWS XSLT.
#[utoipa::path(
    get,
    operation_id = "ui_asset",
    path = "/ui/{asset}",
    tag = "Web page",
    params(("asset" = String, Path, description = "app.js, style.css or uws.xsl")),
    responses(
        (status = 200, description = "The asset, compiled into the binary", body = String),
        (status = 404, description = "UsageError: no such asset", content_type = "text/plain", body = String)
    )
)]
pub async fn asset(Path(name): Path<String>) -> Result<Response> {
    let (_, media_type, body) = ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| FrontendError::NotFound(format!("the page has no asset {name:?}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, *media_type),
            // Assets change only with the binary; an hour keeps a new release visible soon.
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        *body,
    )
        .into_response())
}

/// The caller's newest jobs, in full (parameters and results).
async fn my_jobs(app: &AppState, owner: &str) -> Result<Vec<Job>> {
    let filter = JobFilter {
        last: Some(SHOWN_JOBS as u32),
        ..JobFilter::default()
    };
    let summaries = app.uws.store().list(owner, &filter).await?;
    // A job deleted between the list and its read is simply not shown.
    let reads = summaries.iter().map(|s| async move {
        match app.uws.job(owner, s.id.as_str()).await {
            Ok(job) => Ok(Some(job)),
            Err(uws::UwsError::JobNotFound(_)) => Ok(None),
            Err(e) => Err(FrontendError::from(e)),
        }
    });
    Ok(try_join_all(reads).await?.into_iter().flatten().collect())
}

/// The images the form offers, with each one's centre, from the sky index when there is one.
/// A failing index only costs the list: the form still takes a typed ID.
async fn offered_images(app: &AppState) -> Vec<(ImageChoice, (f64, f64))> {
    let Some(index) = &app.sky_index else {
        return Vec::new();
    };
    let query: Parameters = [("MAXREC", OFFERED_IMAGES.to_string().as_str())]
        .into_iter()
        .collect();
    let found = match sia::SiaQuery::parse(&query) {
        Ok(query) => sia::search(index.as_ref(), &query).await,
        Err(e) => Err(e),
    };
    match found {
        Ok((images, _)) => images
            .into_iter()
            .filter_map(|image| match image.content {
                ImageContent::Located(location) => Some((
                    ImageChoice {
                        id: image.id,
                        collection: image.collection,
                        size: location.size,
                    },
                    location.center,
                )),
                ImageContent::Unusable(_) => None,
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "the page lists no images: the sky index failed");
            Vec::new()
        }
    }
}

/// An HTML answer with a policy that lets the page load only its own script and style.
fn html(status: StatusCode, base: &PublicBase, markup: Markup) -> Response {
    let own = origin_of(&base.0);
    // Results may be signed URLs of a cloud bucket: images may come from anywhere over HTTP(S).
    let policy = format!(
        "default-src 'none'; script-src 'self' {own}; style-src 'self' {own}; \
         connect-src 'self' {own}; img-src 'self' {own} https: http: data: blob:; \
         form-action 'self' {own}; base-uri 'none'; frame-ancestors 'none'"
    );
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response();
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}
