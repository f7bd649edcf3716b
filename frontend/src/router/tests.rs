//! Fast tests of the routes through [`tower::ServiceExt::oneshot`]: the whole router over
//! `uws::testing`'s in-memory store and queue, with no process, socket or database.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::Response;
use soda::repository::Repositories;
use tower::ServiceExt;
use uws::testing::Harness;

use crate::auth::{Authenticator, USER_HEADER};
use crate::state::{App, AppState, FrontendSettings};

struct Setup {
    h: Harness,
    router: Router,
    _dir: tempfile::TempDir,
}

/// The router with the demo images, callers named by the `X-Auth-Request-User` header.
fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temporary directory");
    let images = dir.path().join("demo");
    soda::write_demo_repository(&images).expect("demo images");
    let h = Harness::default();
    let app = App {
        uws: h.uws.clone(),
        repositories: Arc::new(Repositories::new([("demo".to_owned(), images)])),
        local_bucket: None,
        settings: FrontendSettings::default(),
        auth: Authenticator::Ingress { trust_any: true },
        started: uws::timestamp::now(),
        health: vec![Arc::new(uws::health::QueueHealth(h.queue.clone()))],
        sky_index: None,
    };
    Setup {
        router: crate::router::build(AppState(Arc::new(app))),
        h,
        _dir: dir,
    }
}

fn request(method: Method, uri: &str, user: &str, form: Option<&str>) -> Request<Body> {
    let builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "skycut.test")
        .header(USER_HEADER, user);
    match form {
        Some(form) => builder
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned())),
        None => builder.body(Body::empty()),
    }
    .expect("request")
}

async fn send(s: &Setup, request: Request<Body>) -> Response {
    s.router.clone().oneshot(request).await.expect("infallible")
}

async fn text(response: Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .expect("body");
    String::from_utf8_lossy(&bytes).into_owned()
}

fn content_type(response: &Response) -> &str {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

const M31: &str = "ID=butler://demo/m31&CIRCLE=10.684708+41.26875+0.01";

#[tokio::test]
async fn vosi_availability_says_available_with_each_component() {
    let s = setup();
    let r = send(
        &s,
        request(Method::GET, "/api/cutout/availability", "alice", None),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(content_type(&r).starts_with("application/xml"));
    let body = text(r).await;
    assert!(
        body.contains("<vosi:available>true</vosi:available>"),
        "{body}"
    );
}

#[tokio::test]
async fn a_sync_parameter_error_is_a_dali_400_and_creates_no_job() {
    let s = setup();
    let uri = "/api/cutout/sync?ID=butler://demo/m31&CIRCLE=10+41";
    let r = send(&s, request(Method::GET, uri, "alice", None)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(content_type(&r).starts_with("text/plain"));
    let body = text(r).await;
    assert!(body.starts_with("UsageError: "), "{body}");
    assert!(s.h.store.is_empty());
}

#[tokio::test]
async fn creating_a_job_answers_303_to_the_job_and_queues_nothing_until_run() {
    let s = setup();
    let r = send(
        &s,
        request(Method::POST, "/api/cutout/jobs", "alice", Some(M31)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = r
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_owned();
    let id = location
        .strip_prefix("http://skycut.test/api/cutout/jobs/")
        .expect("the job's URL");
    assert_eq!(s.h.store.len(), 1);
    assert!(s.h.queue.sent().is_empty());
    let r = send(
        &s,
        request(
            Method::GET,
            &format!("/api/cutout/jobs/{id}/phase"),
            "alice",
            None,
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(text(r).await.trim(), "PENDING");
}

#[tokio::test]
async fn creating_a_job_with_phase_run_queues_it() {
    let s = setup();
    let form = format!("{M31}&PHASE=RUN");
    let r = send(
        &s,
        request(Method::POST, "/api/cutout/jobs", "alice", Some(&form)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(s.h.queue.sent().len(), 1);
}

#[tokio::test]
async fn another_owners_job_is_not_found() {
    let s = setup();
    let r = send(
        &s,
        request(Method::POST, "/api/cutout/jobs", "alice", Some(M31)),
    )
    .await;
    let location = r
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("Location")
        .to_owned();
    let path = location.trim_start_matches("http://skycut.test");
    let r = send(&s, request(Method::GET, path, "bob", None)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(text(r).await.starts_with("UsageError: "));
    let r = send(&s, request(Method::GET, path, "alice", None)).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unknown_route_is_404() {
    let s = setup();
    let r = send(
        &s,
        request(Method::GET, "/api/cutout/nowhere", "alice", None),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = send(&s, request(Method::GET, "/elsewhere", "alice", None)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// The served document, parsed.
async fn document(s: &Setup) -> serde_json::Value {
    let r = send(
        s,
        request(Method::GET, "/api/cutout/openapi.json", "alice", None),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(content_type(&r), "application/json");
    serde_json::from_str(&text(r).await).expect("JSON")
}

const METHODS: [&str; 5] = ["get", "post", "delete", "put", "patch"];

#[tokio::test]
async fn every_operation_of_the_openapi_document_has_its_own_id() {
    let s = setup();
    let doc = document(&s).await;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    assert_eq!(doc["servers"][0]["url"], "/api/cutout");
    let mut ids = BTreeSet::new();
    for item in doc["paths"].as_object().expect("paths").values() {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                let id = operation["operationId"].as_str().expect("operationId");
                assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            }
        }
    }
    assert!(ids.len() > 25, "{ids:?}");
}

/// Every operation the document describes is routed: its method on its path (with each path
/// parameter filled in) reaches a handler, which a 405 or the router's empty 404 would not.
#[tokio::test]
async fn every_operation_of_the_openapi_document_reaches_a_handler() {
    let s = setup();
    let doc = document(&s).await;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let uri = format!(
            "/api/cutout{}",
            path.replace("{id}", "nosuchjob")
                .replace("{result}", "result")
                .replace("{asset}", "nosuchasset")
                .replace("{key}", "nosuchjob/result.fits")
        );
        for method in METHODS {
            if item.get(method).is_none() {
                continue;
            }
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let r = send(&s, request(m, &uri, "alice", None)).await;
            let status = r.status();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            if status == StatusCode::NOT_FOUND {
                assert!(!text(r).await.is_empty(), "{method} {uri}: not routed");
            }
        }
    }
}
