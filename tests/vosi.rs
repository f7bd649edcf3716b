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
    let note = element(&doc, "vosi:note").expect("note");
    for component in ["job store: ", "job queue: ", "result bucket: "] {
        assert!(note.contains(component), "{note}");
    }
}

#[test]
fn availability_names_the_failing_component() {
    let app = spawn_app();
    // A result bucket that cannot take files: its directory replaced by a plain file.
    let bucket = app.dir.path().join("data/bucket");
    if bucket.is_dir() {
        std::fs::remove_dir_all(&bucket).expect("remove bucket");
    }
    std::fs::write(&bucket, b"not a directory").expect("write");
    let r = app.get("/availability", &[]);
    assert_eq!(r.status(), 200);
    let doc = r.text().expect("body");
    assert_valid(&doc, "VOSIAvailability-v1.0.xsd");
    assert_eq!(element(&doc, "vosi:available").as_deref(), Some("false"));
    let note = element(&doc, "vosi:note").expect("note");
    assert!(note.starts_with("result bucket unavailable: "), "{note}");
    assert!(note.contains("job store: "), "{note}");
}
