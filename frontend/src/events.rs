//! `GET /jobs/events`: the caller's phase changes as Server-Sent Events, so a web page can show
//! job progress live without polling.
//!
//! The stream is fed by the same phase events that wake `WAIT` (Redis pub/sub in production, a
//! broadcast channel in one process). Events are hints there, so the stream says so when it
//! falls behind: a `resync` event tells the page to re-read the job list rather than trust a
//! stream with holes. On connect it first sends the caller's unfinished jobs, subscribing before
//! reading them so that nothing between the read and the first live event is lost.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::stream;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use uws::events::PhaseChange;
use uws::store::JobFilter;
use uws::{ExecutionPhase, JobId};

use crate::error::FrontendError;
use crate::extract::{Owner, PublicBase};
use crate::state::AppState;

/// How often an idle stream sends a comment, so proxies do not close it.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /jobs/events`: `phase` events (`{"jobId", "phase", "href"}`) for the caller's jobs.
#[utoipa::path(
    get,
    operation_id = "job_events",
    path = "/jobs/events",
    tag = "UWS",
    responses(
        (status = 200, description = "text/event-stream: a `phase` event (JSON data: jobId, phase, href) for each unfinished job of the caller, then one per phase change of the caller's jobs; `resync` when events were missed (re-read the job list)", content_type = "text/event-stream", body = String),
        (status = 503, description = "ServiceUnavailable: the job store is down", content_type = "text/plain", body = String)
    )
)]
pub async fn events(
    State(app): State<AppState>,
    Owner(owner): Owner,
    base: PublicBase,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, FrontendError> {
    let live = app.uws.subscribe();
    let unfinished = app
        .uws
        .store()
        .list(
            &owner,
            &JobFilter {
                phases: vec![
                    ExecutionPhase::Pending,
                    ExecutionPhase::Queued,
                    ExecutionPhase::Executing,
                    ExecutionPhase::Held,
                    ExecutionPhase::Suspended,
                ],
                ..JobFilter::default()
            },
        )
        .await?;
    let snapshot = unfinished
        .into_iter()
        .rev()
        .map(|job| phase_event(&base, &job.id, job.phase))
        .collect();
    let feed = Feed {
        snapshot,
        live,
        owner,
        base,
    };
    Ok(
        Sse::new(stream::unfold(feed, Feed::next))
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE)),
    )
}

/// What the stream still has to say: the snapshot first, then the live changes.
struct Feed {
    snapshot: VecDeque<Event>,
    live: Receiver<PhaseChange>,
    owner: String,
    base: PublicBase,
}

impl Feed {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Feed)> {
        if let Some(event) = self.snapshot.pop_front() {
            return Some((Ok(event), self));
        }
        loop {
            match self.live.recv().await {
                Ok(change) if change.owner == self.owner => {
                    let event = phase_event(&self.base, &change.id, change.phase);
                    return Some((Ok(event), self));
                }
                Ok(_someone_else) => continue,
                Err(RecvError::Lagged(missed)) => {
                    let event = Event::default().event("resync").data(missed.to_string());
                    return Some((Ok(event), self));
                }
                // The process is shutting down: end the stream; the client reconnects.
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

fn phase_event(base: &PublicBase, id: &JobId, phase: ExecutionPhase) -> Event {
    let data = serde_json::json!({
        "jobId": id.as_str(),
        "phase": phase.to_string(),
        "href": base.job(id.as_str()),
    });
    Event::default().event("phase").data(data.to_string())
}
