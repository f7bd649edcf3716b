//! The optional cross-site check on requests that change state, for deployments behind a proxy
//! that authenticates browsers by cookie: there a page on another site could make the browser
//! send a POST or DELETE that the proxy would authenticate (cross-site request forgery).
//!
//! A request that changes state (anything but GET, HEAD and OPTIONS) is refused with 403 when
//! the browser says it came from another site: `Sec-Fetch-Site: cross-site` (or `same-site`, a
//! sibling host), or an `Origin` that is neither this service's nor an allowed one. Clients that
//! send neither header (pyvo, curl, other services) are not browsers and pass.

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::FrontendError;
use crate::extract::{PublicBase, peer_of};
use crate::state::AppState;

/// Refuses a cross-site request that changes state, when the check is configured.
pub async fn same_origin(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let Some(allowed) = &app.settings.allowed_origins else {
        return next.run(request).await;
    };
    if let Some(why) = cross_site(&app, &request, allowed) {
        return refused(why);
    }
    next.run(request).await
}

/// The same check, made whether or not it is configured: the web page's own form and buttons
/// (see [`crate::ui`]) are only ever sent by a browser from the page itself, so another site's
/// POST there is refused in every deployment.
pub async fn always_same_origin(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = app.settings.allowed_origins.as_deref().unwrap_or_default();
    if let Some(why) = cross_site(&app, &request, allowed) {
        return refused(why);
    }
    next.run(request).await
}

/// Why a state-changing request comes from another site than this service or an `allowed`
/// origin, or `None` when it does not (or does not change state).
fn cross_site(app: &AppState, request: &Request, allowed: &[String]) -> Option<&'static str> {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return None;
    }
    let headers = request.headers();
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    if matches!(site.as_deref(), Some("cross-site" | "same-site")) {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        // An explicitly allowed origin may still send requests from its own site.
        if !origin.is_some_and(|o| allowed.iter().any(|a| a == o)) {
            return Some("the request comes from another site");
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let own = origin
            .split_once("://")
            .is_some_and(|(_, authority)| !host.is_empty() && authority == host);
        // The origin the page was served from: the configured URL, or the one a trusted proxy
        // forwarded (`X-Forwarded-Proto`, `X-Forwarded-Host`).
        let public = PublicBase::of(app, headers, peer_of(request.extensions()));
        let public = origin_of(&public.0) == origin;
        if !(own || public || allowed.iter().any(|a| a == origin)) {
            return Some("the request's Origin is not this service");
        }
    }
    None
}

/// `scheme://host[:port]` of a URL.
pub fn origin_of(url: &str) -> &str {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').map_or(url.len(), |i| scheme.len() + 3 + i);
            &url[..end]
        }
        None => url,
    }
}

fn refused(why: &str) -> Response {
    FrontendError::Forbidden(format!(
        "{why}: state-changing requests from other sites are refused (auth.check_origin)"
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_of_a_url_is_its_scheme_and_authority() {
        assert_eq!(
            origin_of("https://data.example.org/api/cutout"),
            "https://data.example.org"
        );
        assert_eq!(origin_of("http://h:8080"), "http://h:8080");
    }
}
