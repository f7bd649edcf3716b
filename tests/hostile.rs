//! Hostile input: oversized bodies, too many parameters, huge polygons, long or traversing IDs,
//! NaN/Inf/out-of-range coordinates. Each gets a 400 `UsageError` that says what is wrong, on
//! both job creation and sync, and leaves the job store as it was.

use crate::common::*;

/// Posts the request to `/jobs` and GETs it on `/sync`; both must be a 400 UsageError whose
/// message contains `expected`, and the caller's job list must still be empty.
fn assert_refused(app: &TestApp, params: &[(&str, &str)], expected: &str) {
    let r = app.post("/jobs", params);
    assert_eq!(r.status(), 400, "POST /jobs");
    let body = r.text().expect("body");
    assert!(body.starts_with("UsageError: "), "{body}");
    assert!(body.contains(expected), "{body:.300}");
    let r = app.post("/sync", params);
    assert_eq!(r.status(), 400, "POST /sync");
    let body = r.text().expect("body");
    assert!(body.contains(expected), "{body:.300}");
    assert!(app.job_ids(&[]).is_empty(), "a job was created");
}

#[test]
fn request_body_over_the_limit_is_a_usage_error() {
    let app = spawn_app();
    let filler = "x".repeat(1024 * 1024 + 1);
    let params = [
        ("ID", IMAGE),
        ("CIRCLE", &circle(RA, DEC, 5.0)[..]),
        ("FILLER", &filler[..]),
    ];
    assert_refused(&app, &params, "larger than 1048576 bytes");
}

#[test]
fn too_many_parameters_is_a_usage_error() {
    let app = spawn_app();
    let circle = circle(RA, DEC, 5.0);
    let mut params = vec![("ID", IMAGE), ("CIRCLE", &circle[..])];
    params.extend(std::iter::repeat_n(("X", "1"), 500));
    assert_refused(&app, &params, "at most 500 parameters");
}

#[test]
fn polygon_with_too_many_vertices_is_a_usage_error() {
    let app = spawn_app();
    let vertices: Vec<String> = (0..1001)
        .map(|i| {
            let a = f64::from(i) / 1001.0 * std::f64::consts::TAU;
            format!("{} {}", RA + 0.01 * a.cos(), DEC + 0.01 * a.sin())
        })
        .collect();
    let polygon = vertices.join(" ");
    assert_refused(
        &app,
        &[("ID", IMAGE), ("POLYGON", &polygon)],
        "at most 1000",
    );
}

#[test]
fn overlong_id_is_a_usage_error_that_does_not_echo_it() {
    let app = spawn_app();
    let id = format!("butler://test/{}", "a".repeat(300));
    let circle = circle(RA, DEC, 5.0);
    assert_refused(
        &app,
        &[("ID", &id), ("CIRCLE", &circle)],
        "ID is 314 bytes long; at most 256",
    );
    let r = app.post("/jobs", &[("ID", &id), ("CIRCLE", &circle)]);
    assert!(!r.text().expect("body").contains(&id));
}

#[test]
fn ids_that_traverse_paths_are_usage_errors() {
    let app = spawn_app();
    let circle = circle(RA, DEC, 5.0);
    for id in [
        "butler://test/../images/field",
        "butler://../test/field",
        "butler://test/%2e%2e/field",
        "butler://test/.field",
        "butler://test/sub/field",
        "file:///etc/passwd",
    ] {
        assert_refused(&app, &[("ID", id), ("CIRCLE", &circle)], "malformed ID");
    }
}

#[test]
fn job_ids_that_traverse_paths_are_not_found() {
    let app = spawn_app();
    // Percent-encoded, so that the client does not resolve the dots before sending.
    for id in ["..%2F..%2Fsigning.key", "%2e%2e%2Fx", &"a".repeat(5000)] {
        let r = app.get(&format!("/jobs/{id}"), &[]);
        assert_eq!(r.status(), 404, "{id}");
        let body = r.text().expect("body");
        assert!(body.starts_with("UsageError: "), "{body}");
        assert!(body.len() < 200, "the ID is echoed whole: {body:.300}");
    }
}

#[test]
fn non_finite_and_out_of_range_coordinates_are_usage_errors() {
    let app = spawn_app();
    for (stencil, value, expected) in [
        ("CIRCLE", "NaN 2 0.01", "finite"),
        ("CIRCLE", "inf 2 0.01", "finite"),
        ("CIRCLE", "150 -inf 0.01", "finite"),
        ("CIRCLE", "150 2 NaN", "finite"),
        ("CIRCLE", "150 95 0.01", "outside [-90, 90]"),
        ("CIRCLE", "400 2 0.01", "outside [0, 360]"),
        ("CIRCLE", "150 2 -1", "positive"),
        ("CIRCLE", "150 2 1e308", "exceeds 180"),
        ("POLYGON", "150 2 150.1 2 150 NaN", "finite"),
        ("POLYGON", "150 2 150.1 2 150 91", "outside [-90, 90]"),
        ("POS", "RANGE NaN 151 1 3", "NaN"),
        ("POS", "RANGE 149 151 -100 3", "outside [-90, 90]"),
        ("POS", "CIRCLE 1e400 2 0.1", "finite"),
    ] {
        assert_refused(&app, &[("ID", IMAGE), (stencil, value)], expected);
    }
}

#[test]
fn overlong_runid_is_a_usage_error() {
    let app = spawn_app();
    let run_id = "r".repeat(257);
    let circle = circle(RA, DEC, 5.0);
    let r = app.post(
        "/jobs",
        &[("ID", IMAGE), ("CIRCLE", &circle), ("RUNID", &run_id)],
    );
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .expect("body")
            .contains("RUNID is 257 bytes long; at most 256")
    );
    assert!(app.job_ids(&[]).is_empty());
}

#[test]
fn stencil_far_larger_than_the_image_gives_at_most_the_whole_image() {
    let app = spawn_app();
    let r = app.get("/sync", &[("ID", IMAGE), ("CIRCLE", "150 2 180")]);
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    let fits = app.get_url(&location(&r));
    assert_eq!(fits.status(), 200);
    let file = app.dir.path().join("all.fits");
    std::fs::write(&file, fits.bytes().expect("FITS")).expect("write");
    let mut f = fitsio::FitsFile::open(&file).expect("open FITS");
    let hdu = f.hdu(1).expect("cutout HDU");
    let naxis1: i64 = hdu.read_key(&mut f, "NAXIS1").expect("NAXIS1");
    let naxis2: i64 = hdu.read_key(&mut f, "NAXIS2").expect("NAXIS2");
    assert_eq!((naxis1, naxis2), (512, 512));
}

#[test]
fn control_characters_in_parameters_are_usage_errors() {
    let app = spawn_app();
    let circle = circle(RA, DEC, 5.0);
    assert_refused(
        &app,
        &[("ID", IMAGE), ("CIRCLE", &circle), ("RUNID", "a\u{0}b")],
        "parameter \"RUNID\" holds a control character",
    );
    assert_refused(
        &app,
        &[("ID", IMAGE), ("CIRCLE", &format!("{circle}\u{1b}"))],
        "control character",
    );
}
