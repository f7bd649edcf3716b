//! `GET /jobs/events`: the caller's phase changes and progress reports as Server-Sent Events,
//! so a web page can show job progress live without polling.
//!
//! The stream is fed by the same phase events that wake `WAIT` (Redis pub/sub in production, a
//! broadcast channel in one process), and by the progress events a running bulk job's worker
//! publishes with each report it records (every two seconds), which come on a channel of their
//! own so that they never wake a `WAIT`. Events are hints there, so the stream says so when it
//! falls behind on phases: a `resync` event tells the page to re-read the job list rather than
//! trust a stream with holes. A missed progress report is not announced: the next one, two
//! seconds later, says more. On connect it first sends the caller's unfinished jobs,
//! subscribing before reading them so that nothing between the read and the first live event is
//! lost.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::stream;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use uws::events::{PhaseChange, ProgressChange};
use uws::store::JobFilter;
use uws::{ExecutionPhase, JobId, Progress};

use crate::error::FrontendError;
use crate::extract::{Owner, PublicBase};
use crate::state::AppState;

/// How often an idle stream sends a comment, so proxies do not close it.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /jobs/events`: `phase` events (`{"jobId", "phase", "href"}`) and `progress` events
/// (`{"jobId", "href", "progress": [{"name", "done", "total"}]}`) for the caller's jobs.
#[utoipa::path(
    get,
    operation_id = "job_events",
    path = "/jobs/events",
    tag = "UWS",
    responses(
        (status = 200, description = "text/event-stream: a `phase` event (JSON data: jobId, phase, href) for each unfinished job of the caller, then one per phase change of the caller's jobs; a `progress` event (JSON data: jobId, href, progress: a list of {name, done, total}, a bulk job's stamps, images and shards) each time a running job of the caller reports how far it has come, about every two seconds; `resync` when phase events were missed (re-read the job list)", content_type = "text/event-stream", body = String),
        (status = 503, description = "ServiceUnavailable: the job store is down", content_type = "text/plain", body = String)
    )
)]
pub async fn events(
    State(app): State<AppState>,
    Owner(owner): Owner,
    base: PublicBase,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, FrontendError> {
    let live = app.uws.subscribe();
    let progress = app.uws.subscribe_progress();
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
        progress: Some(progress),
        owner,
        base,
    };
    Ok(
        Sse::new(stream::unfold(feed, Feed::next))
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE)),
    )
}

/// What the stream still has to say: the snapshot first, then the live changes and progress.
struct Feed {
    snapshot: VecDeque<Event>,
    live: Receiver<PhaseChange>,
    /// `None` once the progress channel closed (the phases go on).
    progress: Option<Receiver<ProgressChange>>,
    owner: String,
    base: PublicBase,
}

/// What the live channels gave.
enum Heard {
    Phase(Result<PhaseChange, RecvError>),
    Progress(Result<ProgressChange, RecvError>),
}

impl Feed {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Feed)> {
        if let Some(event) = self.snapshot.pop_front() {
            return Some((Ok(event), self));
        }
        loop {
            let heard = match &mut self.progress {
                // A report is recorded before the phase change that ends its job: progress
                // first when both wait, so the last report comes before COMPLETED.
                Some(progress) => tokio::select! {
                    biased;
                    report = progress.recv() => Heard::Progress(report),
                    change = self.live.recv() => Heard::Phase(change),
                },
                None => Heard::Phase(self.live.recv().await),
            };
            match heard {
                Heard::Phase(Ok(change)) if change.owner == self.owner => {
                    let event = phase_event(&self.base, &change.id, change.phase);
                    return Some((Ok(event), self));
                }
                Heard::Progress(Ok(report)) if report.owner == self.owner => {
                    let event = progress_event(&self.base, &report.id, &report.progress);
                    return Some((Ok(event), self));
                }
                // Someone else's job.
                Heard::Phase(Ok(_)) | Heard::Progress(Ok(_)) => {}
                Heard::Phase(Err(RecvError::Lagged(missed))) => {
                    let event = Event::default().event("resync").data(missed.to_string());
                    return Some((Ok(event), self));
                }
                // Superseded by the next report.
                Heard::Progress(Err(RecvError::Lagged(_))) => {}
                Heard::Progress(Err(RecvError::Closed)) => self.progress = None,
                // The process is shutting down: end the stream; the client reconnects.
                Heard::Phase(Err(RecvError::Closed)) => return None,
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

fn progress_event(base: &PublicBase, id: &JobId, progress: &Progress) -> Event {
    let counts: Vec<serde_json::Value> = progress
        .0
        .iter()
        .map(|c| serde_json::json!({"name": c.name, "done": c.done, "total": c.total}))
        .collect();
    let data = serde_json::json!({
        "jobId": id.as_str(),
        "href": base.job(id.as_str()),
        "progress": counts,
    });
    Event::default().event("progress").data(data.to_string())
}
