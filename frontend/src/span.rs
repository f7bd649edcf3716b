//! The span every request runs in, so each log line of a request names its route, the caller
//! (`user`) and, on job routes, the job. The URI itself is never recorded: a signed result URL
//! carries its signature in the query string.

use axum::extract::FromRequestParts;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::extract::Owner;
use crate::state::AppState;

/// Runs the rest of the request inside a `request` span carrying `user` and `job_id`, and logs
/// its status at debug.
pub async fn request_span(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let user = match Owner::from_request_parts(&mut parts, &state).await {
        Ok(owner) => {
            let user = owner.0.clone();
            // The handler's `Owner` takes it from here instead of authenticating again.
            parts.extensions.insert(owner);
            user
        }
        Err(_) => String::new(),
    };
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let job_id = RawPathParams::from_request_parts(&mut parts, &state)
        .await
        .ok()
        .and_then(|params| {
            params
                .iter()
                .find(|(name, _)| *name == "id")
                .map(|(_, value)| value.to_owned())
        });
    // A request without a job in its path leaves `job_id` unset, for the handler that creates
    // one to record it (`jobs::create`).
    let span = tracing::info_span!(
        "request",
        method = %parts.method,
        route,
        user,
        job_id = tracing::field::Empty,
    );
    if let Some(job_id) = job_id {
        span.record("job_id", job_id);
    }
    async move {
        let response = next.run(Request::from_parts(parts, body)).await;
        // An access-log line, at debug: the counts are in /metrics already.
        tracing::debug!(status = response.status().as_u16(), "request done");
        response
    }
    .instrument(span)
    .await
}
