//! VOSI availability and capabilities documents.

use crate::common::*;

#[test]
fn capabilities_list_the_sync_and_async_endpoints() {
    let app = spawn_app();
    let r = app.get("/capabilities", &[]);
    assert_eq!(r.status(), 200);
    let doc = r.text().expect("body");
    assert_valid(&doc, "examples/capabilities-driver.xsd");
    for (standard, path) in [
        ("ivo://ivoa.net/std/SODA#sync-1.0", "/sync"),
        ("ivo://ivoa.net/std/SODA#async-1.0", "/jobs"),
        ("ivo://ivoa.net/std/VOSI#availability", "/availability"),
        ("ivo://ivoa.net/std/VOSI#capabilities", "/capabilities"),
    ] {
        assert!(
            doc.contains(&format!("standardID=\"{standard}\"")),
            "{standard}"
        );
        assert!(
            doc.contains(&format!(
                "<accessURL use=\"full\">{}</accessURL>",
                app.url(path)
            )),
            "{path}"
        );
    }
}

#[test]
fn availability_says_the_service_is_up() {
    let app = spawn_app();
    let r = app.get("/availability", &[]);
    assert_eq!(r.status(), 200);
    let doc = r.text().expect("body");
    assert_valid(&doc, "VOSIAvailability-v1.0.xsd");
    assert_eq!(element(&doc, "vosi:available").as_deref(), Some("true"));
}
