//! The whole URL space of the service, on one screen, and the one list of routes: each
//! `routes!(handler, ...)` line routes the handlers of one path and adds their `#[utoipa::path]`
//! operations to the OpenAPI document, so a route cannot be left out of the description.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::middleware::{from_fn_with_state, map_response};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::extract::{MAX_BODY_BYTES, SERVICE_PATH};
use crate::openapi::{ApiDoc, Described};
use crate::state::AppState;
use crate::{bulk, datalink, events, files, jobs, openapi, sia, sync, ui, vosi};

/// Every route under `/api/cutout`.
pub fn build(state: AppState) -> Router {
    let (service, document) = service(&state).split_for_parts();
    let document = Described::new(document);
    // The page's own address ends with a slash, which a route nested at the service path
    // cannot match (`/` there is the service path itself, which serves the page too); the
    // document's `/` is this address (its server URL is the service path).
    #[expect(
        clippy::disallowed_methods,
        reason = "the page's second address, described as the document's `/`"
    )]
    let page_with_slash = Router::new().route("/api/cutout/", get(ui::page));
    page_with_slash
        .route_layer(from_fn_with_state(state.clone(), crate::span::request_span))
        .nest(SERVICE_PATH, service.layer(Extension(Arc::new(document))))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(map_response(no_sniffing))
        .with_state(state)
}

/// The routes of the service path with their OpenAPI operations, relative to the service path.
fn service(state: &AppState) -> OpenApiRouter<AppState> {
    // The web page (see `crate::ui`): its forms are refused from other sites in every deployment.
    let page = OpenApiRouter::new()
        .routes(routes!(ui::page))
        .routes(routes!(ui::cutout))
        .routes(routes!(ui::job_row, ui::job_action))
        .routes(routes!(ui::asset))
        .route_layer(from_fn_with_state(
            state.clone(),
            crate::origin::always_same_origin,
        ));
    // A catalogue may be far larger than a form: the bulk route takes its own body limit.
    let upload_limit = usize::try_from(state.settings.bulk.max_upload_bytes).unwrap_or(usize::MAX);
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(bulk::create).layer(DefaultBodyLimit::max(upload_limit)))
        .routes(routes!(sync::sync))
        .routes(routes!(datalink::links))
        .routes(routes!(sia::query))
        .routes(routes!(jobs::list, jobs::create))
        .routes(routes!(events::events))
        .routes(routes!(jobs::get, jobs::post, jobs::delete))
        .routes(routes!(jobs::get_phase, jobs::post_phase))
        .routes(routes!(
            jobs::get_execution_duration,
            jobs::post_execution_duration
        ))
        .routes(routes!(jobs::get_destruction, jobs::post_destruction))
        .routes(routes!(jobs::get_error))
        .routes(routes!(jobs::get_quote))
        .routes(routes!(jobs::get_owner))
        .routes(routes!(jobs::get_parameters, jobs::post_parameters))
        .routes(routes!(jobs::get_results))
        .routes(routes!(jobs::get_result))
        .routes(routes!(vosi::availability))
        .routes(routes!(vosi::capabilities))
        .routes(routes!(files::get))
        .routes(routes!(openapi::openapi_json))
        .merge(page)
        .route_layer(from_fn_with_state(state.clone(), crate::span::request_span))
        .route_layer(from_fn_with_state(
            state.clone(),
            crate::origin::same_origin,
        ))
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

#[cfg(test)]
mod tests;
