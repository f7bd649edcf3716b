//! The whole URL space of the service, on one screen.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::middleware::{from_fn_with_state, map_response};
use axum::response::Response;
use axum::routing::{get, post};

use crate::extract::{MAX_BODY_BYTES, SERVICE_PATH};
use crate::state::AppState;
use crate::{bulk, datalink, events, files, jobs, openapi, sia, sync, ui, vosi};

/// Every route under `/api/cutout`.
pub fn build(state: AppState) -> Router {
    // The web page (see `crate::ui`): its forms are refused from other sites in every deployment.
    let page = Router::new()
        .route("/", get(ui::page))
        .route("/ui/cutout", post(ui::cutout))
        .route("/ui/jobs/{id}", get(ui::job_row).post(ui::job_action))
        .route("/ui/{asset}", get(ui::asset))
        .route_layer(from_fn_with_state(
            state.clone(),
            crate::origin::always_same_origin,
        ));
    // A catalogue may be far larger than a form: the bulk route takes its own body limit.
    let upload_limit = usize::try_from(state.settings.bulk.max_upload_bytes).unwrap_or(usize::MAX);
    let service = Router::new()
        .route(
            "/bulk",
            post(bulk::create).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/sync", get(sync::sync).post(sync::sync))
        .route("/links", get(datalink::links).post(datalink::links))
        .route("/sia/query", get(sia::query).post(sia::query))
        .route("/jobs", get(jobs::list).post(jobs::create))
        .route("/jobs/events", get(events::events))
        .route(
            "/jobs/{id}",
            get(jobs::get).post(jobs::post).delete(jobs::delete),
        )
        .route(
            "/jobs/{id}/phase",
            get(jobs::get_phase).post(jobs::post_phase),
        )
        .route(
            "/jobs/{id}/executionduration",
            get(jobs::get_execution_duration).post(jobs::post_execution_duration),
        )
        .route(
            "/jobs/{id}/destruction",
            get(jobs::get_destruction).post(jobs::post_destruction),
        )
        .route("/jobs/{id}/error", get(jobs::get_error))
        .route("/jobs/{id}/quote", get(jobs::get_quote))
        .route("/jobs/{id}/owner", get(jobs::get_owner))
        .route(
            "/jobs/{id}/parameters",
            get(jobs::get_parameters).post(jobs::post_parameters),
        )
        .route("/jobs/{id}/results", get(jobs::get_results))
        .route("/jobs/{id}/results/{result}", get(jobs::get_result))
        .route("/availability", get(vosi::availability))
        .route("/capabilities", get(vosi::capabilities))
        .route("/files/{*key}", get(files::get))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(page)
        .route_layer(from_fn_with_state(state.clone(), crate::span::request_span))
        .route_layer(from_fn_with_state(
            state.clone(),
            crate::origin::same_origin,
        ));
    // The page's own address ends with a slash, which a route nested at the service path
    // cannot match (`/` there is the service path itself, which serves the page too).
    Router::new()
        .route("/api/cutout/", get(ui::page))
        .route_layer(from_fn_with_state(state.clone(), crate::span::request_span))
        .nest(SERVICE_PATH, service)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(map_response(no_sniffing))
        .with_state(state)
}

/// Every answer says its content type is to be believed: a browser must not guess HTML or script
/// from a body that echoes what a client sent (an error message, a parameter).
async fn no_sniffing(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
