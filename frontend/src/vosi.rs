//! VOSI 1.1 availability and capabilities for the cutout service.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use quick_xml::escape::escape;
use uws::timestamp;

use crate::extract::PublicBase;
use crate::state::AppState;

/// How long one component may take to answer before it counts as down: availability must
/// answer even when a dependency hangs.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /availability`: whether the service can take requests now (200 even when it cannot),
/// with a note naming each component's state, failing ones first.
#[utoipa::path(
    get,
    path = "/availability",
    tag = "VOSI",
    responses(
        (status = 200, description = "vosi:availability; available is false when a component is down, and the note names it", content_type = "application/xml", body = String)
    )
)]
pub async fn availability(State(app): State<AppState>) -> Response {
    let mut failing = Vec::new();
    let mut working = Vec::new();
    for check in &app.health {
        let component = check.component();
        match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
            Ok(Ok(status)) => working.push(format!("{component}: {status}")),
            Ok(Err(e)) => failing.push(format!("{component} unavailable: {e}")),
            Err(_) => failing.push(format!(
                "{component} unavailable: no answer within {} s",
                CHECK_TIMEOUT.as_secs()
            )),
        }
    }
    let available = failing.is_empty();
    let note = failing
        .into_iter()
        .chain(working)
        .collect::<Vec<_>>()
        .join("; ");
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<vosi:availability xmlns:vosi=\"http://www.ivoa.net/xml/VOSIAvailability/v1.0\">\n  <vosi:available>{available}</vosi:available>\n  <vosi:upSince>{}</vosi:upSince>\n  <vosi:note>{}</vosi:note>\n</vosi:availability>\n",
        timestamp::format(app.started),
        escape(note.as_str())
    );
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `GET /capabilities`: the VOSI and SODA endpoints with their standard IDs.
#[utoipa::path(
    get,
    path = "/capabilities",
    tag = "VOSI",
    responses(
        (status = 200, description = "vosi:capabilities listing the SODA sync and async and VOSI endpoints", content_type = "application/xml", body = String)
    )
)]
pub async fn capabilities(base: PublicBase) -> Response {
    let capability = |standard: &str, path: &str| {
        format!(
            "  <capability standardID=\"{standard}\">\n    <interface xsi:type=\"vs:ParamHTTP\" role=\"std\">\n      <accessURL use=\"full\">{}/{path}</accessURL>\n    </interface>\n  </capability>\n",
            escape(base.0.as_str())
        )
    };
    // No IVOA standard defines bulk cutouts: a capability without a standardID, whose
    // interface follows no standard (so no role="std").
    let bulk = format!(
        "  <capability>\n    <description>Bulk cutouts: POST a catalogue of positions (DALI UPLOAD) to create a UWS job whose result is one FITS table of stamps</description>\n    <interface xsi:type=\"vs:ParamHTTP\">\n      <accessURL use=\"base\">{}/bulk</accessURL>\n    </interface>\n  </capability>\n",
        escape(base.0.as_str())
    );
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<vosi:capabilities xmlns:vosi=\"http://www.ivoa.net/xml/VOSICapabilities/v1.0\" xmlns:vr=\"http://www.ivoa.net/xml/VOResource/v1.0\" xmlns:vs=\"http://www.ivoa.net/xml/VODataService/v1.1\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n{}{}{}{}{}{}</vosi:capabilities>\n",
        capability("ivo://ivoa.net/std/VOSI#capabilities", "capabilities"),
        capability("ivo://ivoa.net/std/VOSI#availability", "availability"),
        capability("ivo://ivoa.net/std/SODA#sync-1.0", "sync"),
        capability("ivo://ivoa.net/std/SODA#async-1.0", "jobs"),
        capability(crate::sia::SIA_QUERY, "sia/query"),
        bulk,
    );
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}
