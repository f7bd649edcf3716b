//! The web page through the real process, without a browser: it is served with its assets, its
//! form runs the same cutout as `/sync`, its POST routes refuse other sites in every deployment,
//! its links follow a trusted proxy, and UWS documents name its XSLT yet still validate.
//! (`tests/interop/test_ui.py` drives it in a real browser.)

use crate::common::*;

fn form_post(
    app: &TestApp,
    path: &str,
    origin: &str,
    params: &[(&str, &str)],
) -> reqwest::blocking::Response {
    app.as_caller(&[("origin", origin)]).post(path, params)
}

fn own_origin(app: &TestApp) -> String {
    let base = app.url("");
    base[..base.find("/api/").expect("service path")].to_owned()
}

#[test]
fn the_page_and_its_assets_are_served_from_the_binary() {
    let app = spawn_app();
    let page = app.get("/", &[]);
    assert_eq!(page.status(), 200);
    assert_eq!(content_type(&page), "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let html = page.text().expect("body");
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(
        html.contains(&format!(r#"action="{}""#, app.url("/ui/cutout"))),
        "{html}"
    );
    for (asset, media_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("uws.xsl", "text/xsl; charset=utf-8"),
    ] {
        let r = app.get(&format!("/ui/{asset}"), &[]);
        assert_eq!(r.status(), 200, "{asset}");
        assert_eq!(content_type(&r), media_type);
        assert!(!r.text().expect("body").is_empty());
    }
    let missing = app.get("/ui/nothing.js", &[]);
    assert_eq!(missing.status(), 404);
    assert!(missing.text().expect("body").starts_with("UsageError: "));
}

#[test]
fn job_documents_name_the_stylesheet_and_still_validate() {
    let app = spawn_app();
    let id = app.cutout_job();
    let instruction = format!(
        r#"<?xml-stylesheet type="text/xsl" href="{}"?>"#,
        app.url("/ui/uws.xsl")
    );
    let job = app.job_xml(&id);
    assert_eq!(job.lines().nth(1), Some(instruction.as_str()), "{job}");
    assert_uws_valid(&job);
    let list = app.get("/jobs", &[]).text().expect("body");
    assert_eq!(list.lines().nth(1), Some(instruction.as_str()), "{list}");
    assert_uws_valid(&list);
}

#[test]
fn the_form_runs_a_sync_cutout_and_links_its_preview_and_fits() {
    let app = spawn_app();
    let origin = own_origin(&app);
    let r = form_post(
        &app,
        "/ui/cutout",
        &origin,
        &[
            ("ID", IMAGE),
            ("RA", "10:00:00"),
            ("DEC", "+02:00:00"),
            ("RADIUS", "10"),
            ("FORMAT", "PNG"),
            ("MODE", "sync"),
        ],
    );
    assert_eq!(r.status(), 200);
    let html = r.text().expect("body");
    let src = attributes(&html, "img", "src");
    assert_eq!(src.len(), 1, "{html}");
    let preview = app.get_url(&src[0]);
    assert_eq!(preview.status(), 303);
    let png = app.get_url(&location(&preview));
    assert_eq!(content_type(&png), "image/png");
    let fits = attributes(&html, "a", "href")
        .into_iter()
        .find(|h| h.contains("/results/") && !src.contains(h))
        .expect("FITS link");
    let fits = app.get_url(&location(&app.get_url(&fits)));
    assert!(fits.bytes().expect("body").starts_with(b"SIMPLE"));
}

#[test]
fn a_refused_form_shows_the_services_dali_message_and_creates_nothing() {
    let app = spawn_app();
    let origin = own_origin(&app);
    let r = form_post(
        &app,
        "/ui/cutout",
        &origin,
        &[
            ("ID", "butler://test/missing"),
            ("RA", "150"),
            ("DEC", "2"),
            ("RADIUS", "10"),
            ("MODE", "async"),
        ],
    );
    assert_eq!(r.status(), 404);
    let html = r.text().expect("body");
    assert!(html.contains(r#"role="alert">UsageError: "#), "{html}");
    assert!(app.job_ids(&[]).is_empty());
}

#[test]
fn the_page_refuses_forms_from_another_site_even_without_check_origin() {
    let app = spawn_app();
    let id = app.cutout_job();
    let forged = form_post(
        &app,
        &format!("/ui/jobs/{id}"),
        "https://elsewhere.example",
        &[("ACTION", "DELETE")],
    );
    assert_eq!(forged.status(), 403);
    assert!(
        forged
            .text()
            .expect("body")
            .starts_with("AuthorizationError: ")
    );
    assert_eq!(app.get(&format!("/jobs/{id}"), &[]).status(), 200);
    let deleted = form_post(
        &app,
        &format!("/ui/jobs/{id}"),
        &own_origin(&app),
        &[("ACTION", "DELETE")],
    );
    assert_eq!(deleted.status(), 303);
    assert_eq!(location(&deleted), format!("{}/#jobs", app.url("")));
    assert_eq!(app.get(&format!("/jobs/{id}"), &[]).status(), 404);
}

#[test]
fn the_page_links_follow_a_trusted_proxy() {
    let app = spawn_app();
    let page = app
        .as_caller(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "portal.example.org"),
        ])
        .get("/", &[]);
    let html = page.text().expect("body");
    assert!(
        html.contains(r#"src="https://portal.example.org/api/cutout/ui/app.js""#),
        "{html}"
    );
    // A form the browser sends from that public origin is the page's own.
    let id = app.cutout_job();
    let run = app
        .as_caller(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "portal.example.org"),
            ("origin", "https://portal.example.org"),
        ])
        .post(&format!("/ui/jobs/{id}"), &[("ACTION", "RUN")]);
    assert_eq!(run.status(), 303, "{:?}", run.text());
}
