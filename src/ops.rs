//! The operations endpoints every role serves beside its own routes, for probes and scrapers
//! rather than users: `/healthz` (the process serves), `/readyz` (its dependencies answer) and
//! `/metrics` (Prometheus text format).
//!
//! They live in the binary, not in `frontend` or `worker`: which dependencies a role has is
//! decided where the role is wired, and the library crates never serve anything of their own.
//! Libraries record through the `metrics` facade; [`recorder`] installs the one process-wide
//! Prometheus recorder that [`metrics_routes`] renders, and [`track_requests`] counts HTTP
//! requests by matched route template (never the raw URI, which holds job IDs).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use uws::health::HealthCheck;
use uws::queue::JobQueue;

/// Bucket bounds for every `*_seconds` histogram: cutouts and store calls span milliseconds to
/// minutes.
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes, so that they
/// do not pile up in memory.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use (a process runs one role, but
/// `serve` wires several parts that each ask for it).
pub fn recorder() -> anyhow::Result<PrometheusHandle> {
    if let Some(handle) = RECORDER.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
        .context("invalid histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP_INTERVAL).await;
            upkeep.run_upkeep();
        }
    });
    Ok(RECORDER.get_or_init(|| handle).clone())
}

/// `/metrics`; with a queue, its depth and the age of its oldest job are read at each scrape.
pub fn metrics_routes(handle: PrometheusHandle, queue: Option<Arc<dyn JobQueue>>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(Arc::new((handle, queue)))
}

type MetricsState = Arc<(PrometheusHandle, Option<Arc<dyn JobQueue>>)>;

async fn render_metrics(State(state): State<MetricsState>) -> Response {
    let (handle, queue) = state.as_ref();
    if let Some(queue) = queue {
        // A queue that does not answer leaves the last values in place; `/readyz` reports it.
        match tokio::time::timeout(CHECK_TIMEOUT, queue.depth()).await {
            Ok(Ok(depth)) => metrics::gauge!("skycut_queue_depth").set(depth as f64),
            Ok(Err(e)) => tracing::debug!(error = %e, "queue depth unknown"),
            Err(_) => tracing::debug!("queue depth: no answer"),
        }
        match tokio::time::timeout(CHECK_TIMEOUT, queue.oldest_age()).await {
            Ok(Ok(age)) => metrics::gauge!("skycut_queue_oldest_age_seconds")
                .set(age.map_or(0.0, |a| a.as_secs_f64())),
            Ok(Err(e)) => tracing::debug!(error = %e, "queue age unknown"),
            Err(_) => tracing::debug!("queue age: no answer"),
        }
    }
    handle.run_upkeep();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// Counts every request that `router` routes, by method, matched route template and status, and
/// times it.
pub fn track_requests(router: Router) -> Router {
    router.layer(middleware::from_fn(record_request))
}

async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("skycut_http_request_duration_seconds", "method" => method, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("skycut_http_requests_total", "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

/// The `method` label: one of the methods HTTP defines, else `other`. A client chooses the method
/// freely (any token, of any length), so taking it verbatim would let it mint label values without
/// bound: every series lives in memory until the process ends and is printed on every scrape.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// How long one dependency may take before it counts as unreachable: a probe must answer
/// before the orchestrator's own probe timeout, even when a dependency hangs.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The probes over `checks` and `/metrics` with `queue`'s depth and age: what the frontend and
/// the worker serve.
pub fn routes(
    checks: Vec<Arc<dyn HealthCheck>>,
    queue: Arc<dyn JobQueue>,
) -> anyhow::Result<Router> {
    Ok(health_routes(checks).merge(metrics_routes(recorder()?, Some(queue))))
}

/// `/healthz` and `/readyz` over `checks`.
pub fn health_routes(checks: Vec<Arc<dyn HealthCheck>>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(checks))
}

/// Alive: answering at all is the whole check, so a restart is never triggered by a dependency.
async fn healthz() -> Response {
    plain(StatusCode::OK, "ok\n".to_owned())
}

/// Ready: every dependency answered within [`CHECK_TIMEOUT`]. The body names each one, failing
/// ones first, so that `kubectl describe` shows why a pod is out of rotation.
async fn readyz(State(checks): State<Arc<Vec<Arc<dyn HealthCheck>>>>) -> Response {
    let (failing, working) = run_checks(&checks).await;
    if failing.is_empty() {
        let mut body = "ready\n".to_owned();
        for line in working {
            body.push_str(&line);
            body.push('\n');
        }
        plain(StatusCode::OK, body)
    } else {
        let mut body = "not ready\n".to_owned();
        for line in failing.into_iter().chain(working) {
            body.push_str(&line);
            body.push('\n');
        }
        plain(StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

/// Runs every check at once; returns (failing, working) lines.
async fn run_checks(checks: &[Arc<dyn HealthCheck>]) -> (Vec<String>, Vec<String>) {
    let answers = futures_util::future::join_all(checks.iter().map(|check| async move {
        let component = check.component();
        match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
            Ok(Ok(status)) => Ok(format!("{component}: {status}")),
            Ok(Err(e)) => Err(format!("{component} unavailable: {e}")),
            Err(_) => Err(format!(
                "{component} unavailable: no answer within {} s",
                CHECK_TIMEOUT.as_secs()
            )),
        }
    }))
    .await;
    let mut failing = Vec::new();
    let mut working = Vec::new();
    for answer in answers {
        match answer {
            Ok(line) => working.push(line),
            Err(line) => failing.push(line),
        }
    }
    (failing, working)
}

fn plain(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}
