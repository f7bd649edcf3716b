//! The OpenAPI description at `/openapi.json` covers every route that `router.rs` lays out, with
//! every method, and describes nothing that does not exist.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::*;

const METHODS: [&str; 5] = ["get", "post", "delete", "put", "patch"];

/// `(path, method)` of every `.route(...)` in frontend/src/router.rs, read from the source so
/// that a new route without an annotation fails this test.
fn routes_in_router() -> BTreeSet<(String, String)> {
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("frontend/src/router.rs"),
    )
    .expect("router.rs");
    let mut routes = BTreeSet::new();
    for chunk in source.split(".route(").skip(1) {
        let path = chunk.split('"').nth(1).expect("route path literal");
        // `{*key}` (axum's catch-all) is `{key}` in OpenAPI, whose paths are relative to the
        // service path (the page's `/api/cutout/` is routed outside the nested service).
        let path = path.replace("{*", "{");
        let path = match path.strip_prefix("/api/cutout") {
            Some(relative) => relative.to_owned(),
            None => path,
        };
        for method in METHODS {
            let call = format!("{method}(");
            let called = chunk
                .match_indices(&call)
                .any(|(i, _)| i == 0 || matches!(chunk.as_bytes()[i - 1], b' ' | b'.' | b'\n'));
            if called {
                routes.insert((path.clone(), method.to_owned()));
            }
        }
    }
    routes
}

#[test]
fn openapi_describes_every_route_and_only_those() {
    let app = spawn_app();
    let r = app.get("/openapi.json", &[]);
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), "application/json");
    let doc: serde_json::Value = serde_json::from_str(&r.text().expect("body")).expect("JSON");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["servers"][0]["url"], "/api/cutout");
    let mut described = BTreeSet::new();
    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                described.insert((path.clone(), method.to_owned()));
                let id = operation["operationId"].as_str().expect("operationId");
                assert!(
                    operation_ids.insert(id.to_owned()),
                    "operationId {id} twice"
                );
            }
        }
    }
    let routes = routes_in_router();
    assert!(routes.len() > 20, "router.rs not parsed: {routes:?}");
    let missing: Vec<_> = routes.difference(&described).collect();
    let phantom: Vec<_> = described.difference(&routes).collect();
    assert!(
        missing.is_empty(),
        "routes without a description: {missing:?}"
    );
    assert!(phantom.is_empty(), "described but not routed: {phantom:?}");
}
