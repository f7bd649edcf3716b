//! Bulk cutouts (`POST /bulk`): a catalogue of positions in, one stamp table out, as a UWS job.

use std::time::{Duration, Instant};

use crate::common::image_server::ImageServer;
use crate::common::*;

const STAMP_TABLE: &str = "application/fits;content=stamp-table";

/// RA, Dec of the test image's pixel (`dx`, `dy`) from its centre (east is left).
fn offset(dx: f64, dy: f64) -> (f64, f64) {
    (
        RA - dx * PIXEL_DEG / DEC.to_radians().cos(),
        DEC + dy * PIXEL_DEG,
    )
}

/// Waits until the background index has located the test image.
fn wait_for_index(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !app
        .get("/sia/query", &[("POS", "CIRCLE 150 2 0.01")])
        .text()
        .expect("body")
        .contains("<TR>")
    {
        assert!(
            Instant::now() < deadline,
            "the index never located the image"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// POSTs a bulk request with `catalogue` as the part `cat`; returns the response.
fn post_bulk(
    app: &TestApp,
    params: &[(&str, &str)],
    catalogue: &str,
) -> reqwest::blocking::Response {
    let mut fields = vec![("UPLOAD", "cat,param:cat")];
    fields.extend_from_slice(params);
    app.post_multipart("/bulk", &fields, &[("cat", catalogue.as_bytes())])
}

/// Creates and runs a bulk job (303 expected); returns the final job document.
fn run_bulk(app: &TestApp, params: &[(&str, &str)], catalogue: &str) -> String {
    let mut params = params.to_vec();
    params.push(("PHASE", "RUN"));
    let r = post_bulk(app, &params, catalogue);
    assert_eq!(r.status(), 303, "{:?}", r.text());
    let id = location(&r).rsplit('/').next().expect("id").to_owned();
    let doc = app.wait_final(&id);
    assert_uws_valid(&doc);
    doc
}

#[test]
fn a_catalogue_becomes_one_stamp_per_covering_image_and_an_errors_list() {
    let app = app().topology(Topology::Embedded).start();
    wait_for_index(&app);
    let rows = [offset(-3.3, 10.2), offset(250.2, 0.0), offset(0.0, -120.7)];
    let mut catalogue = String::from("# written by hand\nname,RA,Dec\n");
    for (n, (ra, dec)) in rows.iter().enumerate() {
        catalogue.push_str(&format!("src{n},{ra},{dec}\n"));
    }
    // Row 3 lies where no image is.
    catalogue.push_str("far,10.0,-40.0\n");
    let doc = run_bulk(&app, &[("SIZE", "16")], &catalogue);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    assert_eq!(attributes(&doc, "uws:result", "id"), ["stamps", "errors"]);
    assert_eq!(
        attributes(&doc, "uws:result", "mime-type"),
        [STAMP_TABLE, "text/csv"]
    );
    let hrefs = attributes(&doc, "uws:result", "xlink:href");
    let table = app.get_url(&hrefs[0]).bytes().expect("table");
    let stamps = stamp_rows(&table, 16);
    assert_eq!(
        stamps.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
        [(0, 0), (1, 0), (2, 0)],
        "one row per stamp, catalogue rows in order, all of image 0"
    );
    for (_, _, crpix1, crpix2, pixels) in &stamps {
        assert_stamp_is_a_source_window(&app, (*crpix1, *crpix2), pixels, 16);
    }
    let errors = app.get_url(&hrefs[1]).text().expect("errors");
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines.len(), 2, "{errors}");
    assert_eq!(lines[0], "row,image,reason");
    assert!(
        lines[1].starts_with("3,,\"UsageError: no indexed image covers (10, -40)"),
        "{errors}"
    );
    // The job keeps the request's bulk parameters.
    let parameters = app.get(
        &format!(
            "/jobs/{}/parameters",
            element(&doc, "uws:jobId").expect("id")
        ),
        &[],
    );
    let parameters = parameters.text().expect("parameters");
    assert!(parameters.contains("id=\"UPLOAD\""), "{parameters}");
    assert!(parameters.contains("id=\"SIZE\""), "{parameters}");
}

#[test]
fn rows_with_an_id_are_cut_from_that_image_without_a_sky_index() {
    // Both topologies: the distributed frontend has no sky index, and its workers read the plan
    // from the shared bucket.
    let app = spawn_app();
    let (ra, dec) = offset(10.0, 20.0);
    let catalogue = format!("ra,dec,id\n{ra},{dec},{IMAGE}\n{ra},{dec},butler://test/missing\n");
    let doc = run_bulk(
        &app,
        &[("SIZE", "9"), ("RESPONSEFORMAT", STAMP_TABLE)],
        &catalogue,
    );
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    let hrefs = attributes(&doc, "uws:result", "xlink:href");
    let stamps = stamp_rows(&app.get_url(&hrefs[0]).bytes().expect("table"), 9);
    assert_eq!(stamps.len(), 1);
    assert_stamp_is_a_source_window(&app, (stamps[0].2, stamps[0].3), &stamps[0].4, 9);
    let errors = app.get_url(&hrefs[1]).text().expect("errors");
    assert!(errors.contains("\n1,,\""), "{errors}");
    assert!(errors.contains("missing"), "{errors}");
}

#[test]
fn a_catalogue_that_no_image_serves_makes_an_error_job_that_says_why() {
    let app = app().topology(Topology::Embedded).start();
    wait_for_index(&app);
    let doc = run_bulk(&app, &[("SIZE", "8")], "ra,dec\n10,-40\n11,-41\n");
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("ERROR"),
        "{doc}"
    );
    assert!(
        doc.contains("none of the 2 catalogue rows could be cut"),
        "{doc}"
    );
    assert!(doc.contains("no indexed image covers (10, -40)"), "{doc}");
}

#[test]
fn a_bad_bulk_request_is_a_usage_error_and_creates_nothing() {
    let app = app()
        .topology(Topology::Embedded)
        .config("BULK__MAX_ROWS", "3")
        .config("BULK__MAX_UPLOAD_BYTES", "4000")
        .start();
    wait_for_index(&app);
    let good = "ra,dec\n150,2\n";
    // What is wrong, the parameters, the catalogue, and what the error must name.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, &'a str);
    let cases: Vec<Case> = vec![
        ("no SIZE", vec![], good.to_owned(), "SIZE"),
        ("SIZE 0", vec![("SIZE", "0")], good.to_owned(), "SIZE"),
        (
            "SIZE and RADIUS",
            vec![("SIZE", "8"), ("RADIUS", "0.01")],
            good.to_owned(),
            "not both",
        ),
        ("RADIUS 0", vec![("RADIUS", "0")], good.to_owned(), "RADIUS"),
        (
            "RADIUS not a number",
            vec![("RADIUS", "wide")],
            good.to_owned(),
            "RADIUS",
        ),
        (
            "a row's size of 0",
            vec![("RADIUS", "0.01")],
            "ra,dec,size\n150,2,0\n".to_owned(),
            "row 0",
        ),
        (
            "a row with both a size and a radius",
            vec![("SIZE", "8")],
            "ra,dec,size,radius\n150,2,,\n150,2,8,0.01\n".to_owned(),
            "row 1",
        ),
        (
            "a row's size over max_stamp_size",
            vec![("SIZE", "8")],
            "ra,dec,size\n150,2,5000\n".to_owned(),
            "max_stamp_size",
        ),
        (
            "a row without a size when the request has none",
            vec![],
            "ra,dec,size\n150,2,8\n150,2,\n".to_owned(),
            "row 1 has neither",
        ),
        (
            "another format",
            vec![("SIZE", "8"), ("RESPONSEFORMAT", "image/png")],
            good.to_owned(),
            "RESPONSEFORMAT",
        ),
        (
            "bad EPOCHS",
            vec![("SIZE", "8"), ("EPOCHS", "most")],
            good.to_owned(),
            "EPOCHS",
        ),
        (
            "missing columns",
            vec![("SIZE", "8")],
            "x,y\n150,2\n".to_owned(),
            "no column \"ra\"",
        ),
        (
            "RACOL naming no column",
            vec![("SIZE", "8"), ("RACOL", "alpha")],
            good.to_owned(),
            "\"alpha\"",
        ),
        (
            "NaN coordinates",
            vec![("SIZE", "8")],
            "ra,dec\n150,2\nnan,2\n".to_owned(),
            "row 1",
        ),
        (
            "a declination past the pole",
            vec![("SIZE", "8")],
            "ra,dec\n150,95\n".to_owned(),
            "row 0",
        ),
        (
            "no rows",
            vec![("SIZE", "8")],
            "ra,dec\n".to_owned(),
            "no rows",
        ),
        (
            "over max_rows",
            vec![("SIZE", "8")],
            "ra,dec\n150,2\n150,2\n150,2\n150,2\n".to_owned(),
            "max_rows",
        ),
        (
            "over max_upload_bytes",
            vec![("SIZE", "8")],
            format!("ra,dec\n{}", "150.000000,2.000000\n".repeat(300)),
            "max_upload_bytes",
        ),
        (
            "EPOCHS=nearest without times",
            vec![("SIZE", "8"), ("EPOCHS", "nearest")],
            good.to_owned(),
            "t_min",
        ),
    ];
    for (what, params, catalogue, says) in cases {
        let r = post_bulk(&app, &params, &catalogue);
        let status = r.status();
        let body = r.text().expect("body");
        assert_eq!(status, 400, "{what}: {body}");
        assert!(body.starts_with("UsageError"), "{what}: {body}");
        assert!(body.contains(says), "{what}: {body} does not name {says}");
    }
    // No UPLOAD at all, an UPLOAD naming no part, and one naming a URL.
    for (upload, says) in [
        (None, "UPLOAD=cat,param:cat"),
        (Some("cat,param:other"), "no part \"other\""),
        (
            Some("cat,https://example.org/cat.csv"),
            "operator allows none: [bulk] upload_urls",
        ),
    ] {
        let mut fields = vec![("SIZE", "8")];
        if let Some(upload) = upload {
            fields.push(("UPLOAD", upload));
        }
        let r = app.post_multipart("/bulk", &fields, &[("cat", good.as_bytes())]);
        assert_eq!(r.status(), 400);
        let body = r.text().expect("body");
        assert!(body.contains(says), "{upload:?}: {body}");
    }
    assert!(
        app.job_ids(&[]).is_empty(),
        "a refused request created a job"
    );
}

#[test]
fn a_small_catalogue_may_come_as_a_form_parameter() {
    let app = app().topology(Topology::Embedded).start();
    wait_for_index(&app);
    let (ra, dec) = offset(0.0, 0.0);
    let r = app.post(
        "/bulk",
        &[
            ("UPLOAD", "cat,param:cat"),
            ("cat", &format!("ra,dec\n{ra},{dec}\n")),
            ("SIZE", "5"),
            ("PHASE", "RUN"),
        ],
    );
    assert_eq!(r.status(), 303, "{:?}", r.text());
    let id = location(&r).rsplit('/').next().expect("id").to_owned();
    let doc = app.wait_final(&id);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    assert_eq!(attributes(&doc, "uws:result", "id"), ["stamps"]);
    // A text part (no file name) larger than a form may be is refused as it arrives, although
    // the body is within the upload limit.
    let huge = "x".repeat(1_100_000);
    let r = app.post_multipart(
        "/bulk",
        &[("UPLOAD", "cat,param:cat"), ("SIZE", "8"), ("cat", &huge)],
        &[],
    );
    assert_eq!(r.status(), 400);
    let body = r.text().expect("body");
    assert!(body.contains("send a catalogue as a file part"), "{body}");
}

/// The catalogue of three rows on the test image (the second hangs over its east edge).
fn three_rows() -> String {
    let mut catalogue = String::from("ra,dec\n");
    for (ra, dec) in [offset(-3.3, 10.2), offset(250.2, 0.0), offset(0.0, -120.7)] {
        catalogue.push_str(&format!("{ra},{dec}\n"));
    }
    catalogue
}

#[test]
fn stamps_come_as_a_multi_extension_file_with_a_wcs_per_stamp() {
    let app = app().topology(Topology::Embedded).start();
    wait_for_index(&app);
    let doc = run_bulk(
        &app,
        &[("SIZE", "12"), ("RESPONSEFORMAT", "application/fits")],
        &three_rows(),
    );
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    assert_eq!(attributes(&doc, "uws:result", "id"), ["stamps"]);
    assert_eq!(
        attributes(&doc, "uws:result", "mime-type"),
        ["application/fits"]
    );
    let bytes = app
        .get_url(&attributes(&doc, "uws:result", "xlink:href")[0])
        .bytes()
        .expect("file");
    let path = app.dir.path().join("stamps.fits");
    std::fs::write(&path, &bytes).expect("write");
    let mut f = fitsio::FitsFile::open(&path).expect("open");
    assert_eq!(
        f.num_hdus().expect("hdus"),
        4,
        "an empty primary and one HDU per stamp"
    );
    for n in 1..4 {
        let hdu = f.hdu(n).expect("hdu");
        assert_eq!(
            hdu.read_key::<i64>(&mut f, "SKYROW").expect("SKYROW"),
            n as i64 - 1
        );
        assert_eq!(
            hdu.read_key::<String>(&mut f, "SKYIMAGE")
                .expect("SKYIMAGE"),
            IMAGE
        );
        let crpix = (
            hdu.read_key::<f64>(&mut f, "CRPIX1").expect("CRPIX1"),
            hdu.read_key::<f64>(&mut f, "CRPIX2").expect("CRPIX2"),
        );
        assert_eq!(
            hdu.read_key::<String>(&mut f, "CTYPE1").expect("CTYPE1"),
            "RA---TAN"
        );
        let pixels: Vec<f32> = hdu.read_image(&mut f).expect("pixels");
        assert_stamp_is_a_source_window(&app, crpix, &pixels, 12);
    }
}

#[test]
fn stamps_come_as_a_zip_of_fits_files_with_an_index() {
    let app = app().topology(Topology::Embedded).start();
    wait_for_index(&app);
    let doc = run_bulk(
        &app,
        &[("SIZE", "10"), ("RESPONSEFORMAT", "application/zip")],
        &three_rows(),
    );
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    assert_eq!(
        attributes(&doc, "uws:result", "mime-type"),
        ["application/zip"]
    );
    let bytes = app
        .get_url(&attributes(&doc, "uws:result", "xlink:href")[0])
        .bytes()
        .expect("zip");
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).expect("a zip");
    let mut index = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("index.csv").expect("index"), &mut index)
        .expect("index text");
    let lines: Vec<&str> = index.lines().collect();
    assert_eq!(lines[0], "file,row,ra,dec,image,x,y,mjd");
    assert_eq!(lines.len(), 4, "{index}");
    for (n, line) in lines[1..].iter().enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[1], n.to_string(), "{line}");
        assert_eq!(fields[4], format!("\"{IMAGE}\""), "{line}");
        let mut file = Vec::new();
        std::io::Read::read_to_end(&mut zip.by_name(fields[0]).expect("entry"), &mut file)
            .expect("entry bytes");
        let path = app.dir.path().join(format!("stamp{n}.fits"));
        std::fs::write(&path, &file).expect("write");
        let mut f = fitsio::FitsFile::open(&path).expect("a FITS file");
        let hdu = f.primary_hdu().expect("primary");
        let crpix = (
            hdu.read_key::<f64>(&mut f, "CRPIX1").expect("CRPIX1"),
            hdu.read_key::<f64>(&mut f, "CRPIX2").expect("CRPIX2"),
        );
        let pixels: Vec<f32> = hdu.read_image(&mut f).expect("pixels");
        assert_stamp_is_a_source_window(&app, crpix, &pixels, 10);
    }
}

#[test]
fn a_result_over_the_part_size_is_split_into_parts_that_are_files_of_their_own() {
    // A table row of an 8×8 stamp takes 324 bytes: two rows a part.
    let app = app()
        .topology(Topology::Embedded)
        .config("BULK__PART_BYTES", "700")
        .start();
    wait_for_index(&app);
    let mut catalogue = three_rows();
    let (ra, dec) = offset(40.0, 40.0);
    catalogue.push_str(&format!("{ra},{dec}\n"));
    let (ra, dec) = offset(-40.0, 40.0);
    catalogue.push_str(&format!("{ra},{dec}\n"));
    let doc = run_bulk(&app, &[("SIZE", "8")], &catalogue);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    assert_eq!(
        attributes(&doc, "uws:result", "id"),
        ["stamps-1", "stamps-2", "stamps-3"]
    );
    let mut rows = Vec::new();
    for href in attributes(&doc, "uws:result", "xlink:href") {
        let table = app.get_url(&href).bytes().expect("part");
        let part = stamp_rows(&table, 8);
        assert!(!part.is_empty() && part.len() <= 2, "{}", part.len());
        for (row, image, crpix1, crpix2, pixels) in part {
            assert_eq!(image, 0, "each part lists its own images");
            assert_stamp_is_a_source_window(&app, (crpix1, crpix2), &pixels, 8);
            rows.push(row);
        }
    }
    assert_eq!(rows, [0, 1, 2, 3, 4]);
}

#[test]
fn a_bulk_job_split_into_shards_gives_every_stamp_once_in_catalogue_order() {
    // Both topologies: shards go through the in-process queue or Redis to every worker.
    let app = app()
        .config("BULK__SHARD_IMAGES", "2")
        .capture_logs("info")
        .start();
    let (mut catalogue, rows) = slow_bulk_catalogue(&app, 7);
    let (ra, dec) = offset(0.0, 0.0);
    catalogue.push_str(&format!("{ra},{dec},butler://test/missing\n"));
    let doc = run_bulk(&app, &[("SIZE", "16")], &catalogue);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    assert_eq!(attributes(&doc, "uws:result", "id"), ["stamps", "errors"]);
    assert!(doc.contains(r#"name="shards" done="4" total="4""#), "{doc}");
    let hrefs = attributes(&doc, "uws:result", "xlink:href");
    let stamps = stamp_rows(&app.get_url(&hrefs[0]).bytes().expect("table"), 16);
    let order: Vec<i64> = stamps.iter().map(|s| s.0).collect();
    assert_eq!(
        order,
        (0..rows as i64).collect::<Vec<_>>(),
        "each row once, in order"
    );
    // Every image is a link to the big test image.
    let big = app.dir.path().join("images/big.fits");
    for stamp in stamps.iter().step_by(233) {
        assert_stamp_is_a_window_of(&big, (stamp.2, stamp.3), &stamp.4, 16);
    }
    let errors = app.get_url(&hrefs[1]).text().expect("errors");
    assert!(errors.contains(&format!("\n{rows},,")), "{errors}");
    let logs = app.logs();
    assert!(
        logs.contains(r#""bulk job shared as shards","shards":4"#),
        "7 images, 2 a shard: 4 shards\n{logs}"
    );
    // Workers other than the job's own cut shards (the job's worker never runs `run_shard`).
    assert!(logs.contains("cut a bulk shard"), "{logs}");
    // Once done, the shards' objects go; the job's plan stays with the job.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let objects = bucket_objects(&app, &doc_id(&doc));
        let shards: Vec<_> = objects
            .iter()
            .filter(|p| p.to_string_lossy().contains("+shard-"))
            .collect();
        if shards.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {shards:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The pixels and shape of the sync `CIRCLE` cutout of `id` around (`ra`, `dec`).
fn circle_cutout(
    app: &TestApp,
    id: &str,
    ra: f64,
    dec: f64,
    radius: f64,
) -> (Vec<f32>, usize, usize) {
    let r = app.get(
        "/sync",
        &[("ID", id), ("CIRCLE", &format!("{ra} {dec} {radius}"))],
    );
    let r = if r.status().is_redirection() {
        app.get_url(&location(&r))
    } else {
        r
    };
    assert_eq!(r.status(), 200);
    let path = app.dir.path().join(format!("circle-{}.fits", rand_u128()));
    std::fs::write(&path, r.bytes().expect("cutout")).expect("write");
    let mut f = fitsio::FitsFile::open(&path).expect("open");
    let hdu = f.hdu(1).expect("the cutout's HDU");
    let (width, height) = match &hdu.info {
        fitsio::hdu::HduInfo::ImageInfo { shape, .. } => (shape[1], shape[0]),
        other => panic!("{other:?}"),
    };
    (hdu.read_image(&mut f).expect("pixels"), width, height)
}

#[test]
fn radius_and_per_row_sizes_shared_as_shards_give_each_stamp_its_own_shape() {
    // Both topologies, one image a shard: extents travel through shard plans and batches.
    let app = app().config("BULK__SHARD_IMAGES", "1").start();
    let source = source_image(&app);
    let dir = app.dir.path().join("images");
    let radius = 4.0 * PIXEL_DEG;
    let mut catalogue = String::from("ra,dec,id,size,radius\n");
    // (dx, dy, size, radius in pixels): the request's RADIUS, a row's own radius, a row's own
    // size, and the request's RADIUS over the image's edge (clipped, not padded).
    let rows = [
        (-3.3, 10.2, "", ""),
        (20.0, -7.6, "", "7.5"),
        (-15.5, 4.2, "11", ""),
        (254.5, 0.0, "", ""),
    ];
    let images = 3;
    for n in 0..images {
        std::fs::hard_link(&source, dir.join(format!("copy{n}.fits"))).expect("link");
        for (dx, dy, size, own_radius) in rows {
            let (ra, dec) = offset(dx, dy);
            let own_radius = own_radius
                .parse::<f64>()
                .map(|r| (r * PIXEL_DEG).to_string())
                .unwrap_or_default();
            catalogue.push_str(&format!(
                "{ra},{dec},butler://test/copy{n},{size},{own_radius}\n"
            ));
        }
    }
    let doc = run_bulk(&app, &[("RADIUS", &radius.to_string())], &catalogue);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    assert!(doc.contains(r#"name="shards" done="3" total="3""#), "{doc}");
    let hrefs = attributes(&doc, "uws:result", "xlink:href");
    assert_eq!(hrefs.len(), 1, "no errors: {doc}");
    let stamps = varied_stamp_rows(&app.get_url(&hrefs[0]).bytes().expect("table"));
    let order: Vec<i64> = stamps.iter().map(|s| s.row).collect();
    assert_eq!(order, (0..(images * rows.len()) as i64).collect::<Vec<_>>());
    for stamp in &stamps {
        let (dx, dy, size, own_radius) = rows[stamp.row as usize % rows.len()];
        let (ra, dec) = offset(dx, dy);
        let shape = (stamp.width, stamp.height);
        assert_window_of(&source, stamp.crpix, &stamp.pixels, shape);
        if let Ok(size) = size.parse::<usize>() {
            assert_eq!(shape, (size, size), "row {}", stamp.row);
            continue;
        }
        let r = own_radius.parse::<f64>().map_or(radius, |r| r * PIXEL_DEG);
        let (pixels, width, height) = circle_cutout(&app, IMAGE, ra, dec, r);
        assert_eq!(shape, (width, height), "row {}", stamp.row);
        assert_eq!(stamp.pixels, pixels, "row {}", stamp.row);
        assert!(
            stamp.pixels.iter().all(|p| p.is_finite()),
            "row {}",
            stamp.row
        );
    }
    let shapes: std::collections::HashSet<(usize, usize)> =
        stamps.iter().map(|s| (s.width, s.height)).collect();
    let all: Vec<_> = stamps
        .iter()
        .map(|s| (s.row, s.width, s.height, s.crpix))
        .collect();
    assert_eq!(shapes.len(), 4, "{shapes:?} {all:?}");
}

#[test]
fn a_waiting_bulk_job_shows_its_size_and_a_quote_and_is_cut_in_as_many_shards() {
    // The frontend counts the shards by the worker's own rule: 5 images, 2 a shard: 3.
    let app = app().config("BULK__SHARD_IMAGES", "2").start();
    let (catalogue, rows) = slow_bulk_catalogue(&app, 5);
    let r = post_bulk(&app, &[("SIZE", "16")], &catalogue);
    assert_eq!(r.status(), 303, "{:?}", r.text());
    let id = location(&r).rsplit('/').next().expect("id").to_owned();
    let doc = app.job_xml(&id);
    assert_uws_valid(&doc);
    assert_eq!(element(&doc, "uws:phase").as_deref(), Some("PENDING"));
    for size in [
        format!(r#"name="stamps" done="0" total="{rows}""#),
        r#"name="images" done="0" total="5""#.to_owned(),
        r#"name="shards" done="0" total="3""#.to_owned(),
    ] {
        assert!(doc.contains(&size), "{size} in {doc}");
    }
    let created = element(&doc, "uws:creationTime").expect("creationTime");
    let quote = app
        .get(&format!("/jobs/{id}/quote"), &[])
        .text()
        .expect("quote");
    assert_timestamp(&quote);
    assert!(
        quote > created,
        "quote {quote} not after creation {created}"
    );
    app.run_job(&id);
    let doc = app.wait_final(&id);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    assert!(doc.contains(r#"name="shards" done="3" total="3""#), "{doc}");
}

/// The job ID of a job document.
fn doc_id(doc: &str) -> String {
    element(doc, "uws:jobId").expect("jobId")
}

#[test]
fn a_running_bulk_job_shows_its_progress_in_job_info() {
    let app = spawn_app();
    let (catalogue, rows) = slow_bulk_catalogue(&app, 30);
    let id = create_bulk(&app, &catalogue);
    let progress = |doc: &str| -> Option<(u64, u64)> {
        let at = doc.find("<progress xmlns=\"urn:skycut:progress\" name=\"stamps\"")?;
        let attr = |name: &str| -> Option<u64> {
            let rest = &doc[at..];
            let start = rest.find(&format!(" {name}=\""))? + name.len() + 3;
            rest[start..].split('"').next()?.parse().ok()
        };
        Some((attr("done")?, attr("total")?))
    };
    // Seen part-way at least once while it runs (a report every 2 s, the job takes longer).
    let mut partway = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let doc = app.job_xml(&id);
        assert_uws_valid(&doc);
        let phase = element(&doc, "uws:phase").unwrap_or_default();
        if let Some((done, total)) = progress(&doc) {
            assert_eq!(total, rows as u64, "{doc}");
            // Not the size it was created with (0 done): a report.
            if phase == "EXECUTING" && done > 0 && done < total {
                partway = Some(done);
            }
        }
        if phase == "COMPLETED" {
            assert_eq!(progress(&doc), Some((rows as u64, rows as u64)), "{doc}");
            // 30 images, 64 a shard by default: one shard.
            assert!(doc.contains(r#"name="shards" done="1" total="1""#), "{doc}");
            break;
        }
        assert!(phase != "ERROR" && Instant::now() < deadline, "{doc}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(partway.is_some(), "no report while the job ran");
}

#[test]
fn a_votable_catalogue_with_positions_found_by_ucd_is_cut() {
    let app = app().topology(Topology::Embedded).start();
    wait_for_index(&app);
    let rows = [offset(4.2, -7.9), offset(-30.0, 12.5)];
    let trs: String = rows
        .iter()
        .enumerate()
        .map(|(n, (ra, dec))| format!("<TR><TD>src{n}</TD><TD>{ra}</TD><TD>{dec}</TD></TR>\n"))
        .collect();
    // No column is named ra or dec: the UCDs say which are the position.
    let catalogue = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <VOTABLE version=\"1.4\" xmlns=\"http://www.ivoa.net/xml/VOTable/v1.3\"><RESOURCE>\
         <TABLE><FIELD name=\"name\" datatype=\"char\" arraysize=\"*\"/>\
         <FIELD name=\"RAJ2000\" datatype=\"double\" ucd=\"pos.eq.ra;meta.main\" unit=\"deg\"/>\
         <FIELD name=\"DEJ2000\" datatype=\"double\" ucd=\"pos.eq.dec;meta.main\" unit=\"deg\"/>\
         <DATA><TABLEDATA>\n{trs}</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>\n"
    );
    let doc = run_bulk(&app, &[("SIZE", "12")], &catalogue);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    assert_eq!(attributes(&doc, "uws:result", "id"), ["stamps"]);
    let hrefs = attributes(&doc, "uws:result", "xlink:href");
    let stamps = stamp_rows(&app.get_url(&hrefs[0]).bytes().expect("table"), 12);
    assert_eq!(
        stamps.iter().map(|s| s.0).collect::<Vec<_>>(),
        [0, 1],
        "one stamp per row, in catalogue order"
    );
    for (_, _, crpix1, crpix2, pixels) in &stamps {
        assert_stamp_is_a_source_window(&app, (*crpix1, *crpix2), pixels, 12);
    }
}

/// A real Parquet catalogue of `rows` positions (ra, dec as doubles).
fn parquet_catalogue(rows: &[(f64, f64)]) -> Vec<u8> {
    use parquet::data_type::DoubleType;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;

    let schema = parquet::schema::parser::parse_message_type(
        "message catalogue { required double ra; required double dec; }",
    )
    .expect("schema");
    let mut bytes = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut bytes, Arc::new(schema), Default::default())
        .expect("writer");
    let mut group = writer.next_row_group().expect("row group");
    for values in [
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        rows.iter().map(|r| r.1).collect(),
    ] {
        let mut column = group.next_column().expect("column").expect("a column");
        column
            .typed::<DoubleType>()
            .write_batch(&values, None, None)
            .expect("values");
        column.close().expect("column");
    }
    group.close().expect("row group");
    writer.close().expect("file");
    bytes
}

#[test]
fn a_parquet_catalogue_is_cut_and_a_truncated_one_is_a_usage_error_that_creates_nothing() {
    let app = app().topology(Topology::Embedded).start();
    wait_for_index(&app);
    let whole = parquet_catalogue(&[offset(1.0, 2.0), offset(-5.5, 3.25), offset(8.0, -8.0)]);
    for keep in [whole.len() / 2, whole.len() - 3] {
        let r = app.post_multipart(
            "/bulk",
            &[("UPLOAD", "cat,param:cat"), ("SIZE", "8")],
            &[("cat", &whole[..keep])],
        );
        let status = r.status();
        let body = r.text().expect("body");
        assert_eq!(status, 400, "{keep} bytes: {body}");
        assert!(
            body.starts_with("UsageError") && body.contains("Parquet catalogue is cut short"),
            "{keep} bytes: {body}"
        );
    }
    assert!(
        app.job_ids(&[]).is_empty(),
        "a truncated catalogue created a job"
    );
    let r = app.post_multipart(
        "/bulk",
        &[("UPLOAD", "cat,param:cat"), ("SIZE", "8"), ("PHASE", "RUN")],
        &[("cat", &whole)],
    );
    assert_eq!(r.status(), 303, "{:?}", r.text());
    let id = location(&r).rsplit('/').next().expect("id").to_owned();
    let doc = app.wait_final(&id);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    let hrefs = attributes(&doc, "uws:result", "xlink:href");
    let stamps = stamp_rows(&app.get_url(&hrefs[0]).bytes().expect("table"), 8);
    assert_eq!(stamps.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1, 2]);
    for (_, _, crpix1, crpix2, pixels) in &stamps {
        assert_stamp_is_a_source_window(&app, (*crpix1, *crpix2), pixels, 8);
    }
}

/// A server that serves `files` (name, bytes) to anyone under `/images/`, as an archive's public
/// download area does; the directory is removed when the second value is dropped.
fn catalogue_server(files: &[(&str, &[u8])]) -> (ImageServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).expect("write");
    }
    (ImageServer::start_public(dir.path().to_path_buf()), dir)
}

/// POSTs a bulk request whose catalogue is at `url`.
fn post_bulk_url(app: &TestApp, url: &str, params: &[(&str, &str)]) -> reqwest::blocking::Response {
    let upload = format!("cat,{url}");
    let mut fields = vec![("UPLOAD", upload.as_str())];
    fields.extend_from_slice(params);
    app.post("/bulk", &fields)
}

/// The stamps of a completed stamp-table job, as bits, so that NaN blanks compare equal.
fn stamp_bits(app: &TestApp, doc: &str, size: usize) -> Vec<(i64, i32, u64, u64, Vec<u32>)> {
    let hrefs = attributes(doc, "uws:result", "xlink:href");
    stamp_rows(&app.get_url(&hrefs[0]).bytes().expect("table"), size)
        .into_iter()
        .map(|(row, image, x, y, pixels)| {
            let pixels = pixels.iter().map(|p| p.to_bits()).collect();
            (row, image, x.to_bits(), y.to_bits(), pixels)
        })
        .collect()
}

#[test]
fn a_catalogue_from_an_allowed_url_gives_the_same_stamps_as_an_uploaded_one() {
    let catalogue = three_rows();
    let (server, _files) = catalogue_server(&[("cat.csv", catalogue.as_bytes())]);
    let app = app()
        .topology(Topology::Embedded)
        .config("BULK__UPLOAD_URLS", &format!("[\"{}/\"]", server.url))
        .start();
    wait_for_index(&app);
    let uploaded = run_bulk(&app, &[("SIZE", "12")], &catalogue);
    let url = format!("{}/cat.csv", server.url);
    let r = post_bulk_url(&app, &url, &[("SIZE", "12"), ("PHASE", "RUN")]);
    assert_eq!(r.status(), 303, "{:?}", r.text());
    let fetched = app.wait_final(location(&r).rsplit('/').next().expect("id"));
    assert_uws_valid(&fetched);
    for doc in [&uploaded, &fetched] {
        assert_eq!(
            element(doc, "uws:phase").as_deref(),
            Some("COMPLETED"),
            "{doc}"
        );
        assert_eq!(attributes(doc, "uws:result", "id"), ["stamps"]);
    }
    let stamps = stamp_bits(&app, &fetched, 12);
    assert_eq!(
        stamps.iter().map(|s| s.0).collect::<Vec<_>>(),
        [0, 1, 2],
        "every row, the one over the edge included"
    );
    assert!(
        stamps == stamp_bits(&app, &uploaded, 12),
        "the stamps differ from the uploaded catalogue's"
    );
    // Fetched once, by the frontend, with no credentials of the client's.
    let log = server.log();
    assert_eq!(
        log.iter()
            .map(|s| (s.name.as_str(), s.status))
            .collect::<Vec<_>>(),
        [("cat.csv", 200)]
    );
    assert_eq!(server.authorizations(), [""]);
    // The job keeps the URL among its parameters.
    let parameters = app
        .get(&format!("/jobs/{}/parameters", doc_id(&fetched)), &[])
        .text()
        .expect("parameters");
    assert!(parameters.contains(&format!("cat,{url}")), "{parameters}");
}

#[test]
fn a_catalogue_url_outside_the_allowed_prefixes_is_refused_unfetched_and_creates_nothing() {
    let (ra, dec) = offset(0.0, 0.0);
    let catalogue = format!("ra,dec,id\n{ra},{dec},{IMAGE}\n");
    let (server, _files) = catalogue_server(&[("cat.csv", catalogue.as_bytes())]);
    // No slash at the end: the path must still continue at one.
    let app = app()
        .topology(Topology::Embedded)
        .config("BULK__UPLOAD_URLS", &format!("[\"{}\"]", server.url))
        .start();
    let port = server
        .url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/images")
        .parse::<u16>()
        .expect("port");
    let not_under = server.url.as_str();
    for (url, says) in [
        (
            format!("http://127.0.0.1.nip.io:{port}/images/cat.csv"),
            not_under,
        ),
        (format!("http://localhost:{port}/images/cat.csv"), not_under),
        (
            format!("http://127.0.0.1:{}/images/cat.csv", port.wrapping_add(1)),
            not_under,
        ),
        (
            format!("https://127.0.0.1:{port}/images/cat.csv"),
            not_under,
        ),
        (
            format!("http://127.0.0.1:{port}/imagesX/cat.csv"),
            not_under,
        ),
        (
            format!("http://127.0.0.1:{port}/images/../cat.csv"),
            not_under,
        ),
        (
            format!("http://127.0.0.1:{port}@evil.example/images/cat.csv"),
            "user name or password",
        ),
        ("file:///etc/passwd".to_owned(), "only http and https"),
        ("catalogue.csv".to_owned(), "neither param:PART"),
    ] {
        let r = post_bulk_url(&app, &url, &[("SIZE", "8")]);
        let status = r.status();
        let body = r.text().expect("body");
        assert_eq!(status, 400, "{url}: {body}");
        assert!(body.starts_with("UsageError"), "{url}: {body}");
        assert!(body.contains(says), "{url}: {body} does not say {says}");
    }
    assert!(server.log().is_empty(), "a refused URL was fetched");
    assert!(
        app.job_ids(&[]).is_empty(),
        "a refused request created a job"
    );
    // The prefix itself, and a URL under it, are fetched.
    let r = post_bulk_url(&app, &format!("{}/cat.csv", server.url), &[("SIZE", "8")]);
    assert_eq!(r.status(), 303, "{:?}", r.text());
}

#[test]
fn a_catalogue_url_that_cannot_be_fetched_is_a_usage_error_naming_it_and_creates_nothing() {
    let (ra, dec) = offset(0.0, 0.0);
    let catalogue = format!("ra,dec,id\n{ra},{dec},{IMAGE}\n");
    let big = format!("ra,dec\n{}", "150.000000,2.000000\n".repeat(300));
    let (server, _files) = catalogue_server(&[
        ("cat.csv", catalogue.as_bytes()),
        ("big.csv", big.as_bytes()),
    ]);
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let app = app()
        .topology(Topology::Embedded)
        .config(
            "BULK__UPLOAD_URLS",
            &format!("[\"{}/\", \"http://{closed}/\"]", server.url),
        )
        .config("BULK__MAX_UPLOAD_BYTES", "4000")
        .start();
    let under = |name: &str| format!("{}/{name}", server.url);
    server.redirect(
        "moved.csv",
        &format!("http://localhost:{}/cat.csv", closed.port()),
    );
    let refused = |url: &str, says: &str| {
        let r = post_bulk_url(&app, url, &[("SIZE", "8"), ("PHASE", "RUN")]);
        let status = r.status();
        let body = r.text().expect("body");
        assert_eq!(status, 400, "{url}: {body}");
        assert!(
            body.starts_with(&format!(
                "UsageError: cannot fetch the catalogue at {url}: "
            )),
            "{url}: {body}"
        );
        assert!(body.contains(says), "{url}: {body} does not say {says}");
    };
    refused(&under("missing.csv"), "the server answered 404 Not Found");
    // Refused on its Content-Length, then, sent without one, once the spool passes the limit.
    refused(
        &under("big.csv"),
        &format!(
            "its Content-Length, {} bytes, is over the 4000 bytes",
            big.len()
        ),
    );
    server.send_without_length(true);
    refused(
        &under("big.csv"),
        "it is larger than 4000 bytes, the most this service takes (max_upload_bytes)",
    );
    refused(&under("moved.csv"), "it redirects to http://localhost:");
    refused(&format!("http://{closed}/cat.csv"), "error sending request");
    assert!(
        app.job_ids(&[]).is_empty(),
        "a catalogue that could not be fetched created a job"
    );
    // A redirect to an allowed URL is followed, and a body without a length is taken whole.
    server.redirect("alias.csv", &under("cat.csv"));
    let r = post_bulk_url(&app, &under("alias.csv"), &[("SIZE", "8")]);
    assert_eq!(r.status(), 303, "{:?}", r.text());
    assert_eq!(app.job_ids(&[]).len(), 1);
}
