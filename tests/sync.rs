//! SODA synchronous cutouts (`/sync`): redirects to a signed FITS file, 204 for no overlap,
//! DALI errors for bad input, and results that keep every pixel's value and sky position.
//! `META=true` (or `KIND=HEADER`) answers the cutout's header as text; `SUB` cuts a pixel
//! section.

use fitsio::FitsFile;
use fitsio::hdu::HduInfo;

use crate::common::*;

/// GETs a sync cutout and returns the signed URL it redirects to.
fn sync_redirect(app: &TestApp, params: &[(&str, &str)]) -> String {
    let r = app.get("/sync", params);
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    location(&r)
}

fn download(app: &TestApp, url: &str) -> std::path::PathBuf {
    let r = app.get_url(url);
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), "application/fits");
    let path = app
        .dir
        .path()
        .join(format!("dl-{}.fits", uws_like_random()));
    std::fs::write(&path, r.bytes().expect("body")).expect("write");
    path
}

fn uws_like_random() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

fn read_f32(path: &std::path::Path, hdu: usize) -> (Vec<f32>, usize, usize) {
    let mut f = FitsFile::open(path).expect("open");
    let hdu = f.hdu(hdu).expect("hdu");
    let shape = match &hdu.info {
        HduInfo::ImageInfo { shape, .. } => shape.clone(),
        other => panic!("not an image: {other:?}"),
    };
    let data: Vec<f32> = hdu.read_image(&mut f).expect("pixels");
    (data, shape[1], shape[0])
}

fn key_f64(path: &std::path::Path, hdu: usize, key: &str) -> f64 {
    let mut f = FitsFile::open(path).expect("open");
    let hdu = f.hdu(hdu).expect("hdu");
    hdu.read_key::<f64>(&mut f, key)
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn key_string(path: &std::path::Path, hdu: usize, key: &str) -> String {
    let mut f = FitsFile::open(path).expect("open");
    let hdu = f.hdu(hdu).expect("hdu");
    hdu.read_key::<String>(&mut f, key)
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

#[test]
fn sync_cutout_redirects_to_signed_fits_with_exact_pixels() {
    let app = spawn_app();
    let url = sync_redirect(&app, &[("ID", IMAGE), ("CIRCLE", &circle(RA, DEC, 50.0))]);
    assert!(url.starts_with(&app.url("/files/")), "{url}");
    assert!(url.contains("signature="));
    let cut = download(&app, &url);

    let mut f = FitsFile::open(&cut).expect("open");
    match &f.primary_hdu().expect("primary").info {
        HduInfo::ImageInfo { shape, .. } => assert!(shape.is_empty(), "primary HDU must be empty"),
        other => panic!("{other:?}"),
    }
    drop(f);
    let (pixels, w, h) = read_f32(&cut, 1);
    assert!(
        (100..=102).contains(&w) && (100..=102).contains(&h),
        "{w}x{h}"
    );
    let (source, sw, _) = read_f32(&source_image(&app), 0);
    // SKYCX0/SKYCY0: 1-based source pixel of the cutout's first pixel.
    let x0 = key_f64(&cut, 1, "SKYCX0") as usize - 1;
    let y0 = key_f64(&cut, 1, "SKYCY0") as usize - 1;
    for y in 0..h {
        for x in 0..w {
            assert_eq!(
                pixels[y * w + x],
                source[(y0 + y) * sw + x0 + x],
                "pixel ({x},{y})"
            );
        }
    }
    // The WCS moves with the pixels: CRPIX shifted by the offset, CRVAL unchanged.
    let crpix1 = key_f64(&source_image(&app), 0, "CRPIX1");
    let crpix2 = key_f64(&source_image(&app), 0, "CRPIX2");
    assert_eq!(key_f64(&cut, 1, "CRPIX1"), crpix1 - x0 as f64);
    assert_eq!(key_f64(&cut, 1, "CRPIX2"), crpix2 - y0 as f64);
    assert_eq!(key_f64(&cut, 1, "CRVAL1"), RA);
    assert_eq!(key_f64(&cut, 1, "CRVAL2"), DEC);
    assert_eq!(key_string(&cut, 1, "SKYCSRC"), IMAGE);
    assert!(key_string(&cut, 1, "CREATOR").starts_with("Skycut"));
}

#[test]
fn sync_accepts_post_and_case_insensitive_names() {
    let app = spawn_app();
    let r = app.post(
        "/sync",
        &[("id", IMAGE), ("Circle", &circle(RA, DEC, 10.0))],
    );
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    download(&app, &location(&r));
}

#[test]
fn sync_accepts_polygon_and_pos_stencils() {
    let app = spawn_app();
    let d = 20.0 * PIXEL_DEG;
    let polygon = format!(
        "{} {} {} {} {} {}",
        RA - d,
        DEC - d,
        RA + d,
        DEC - d,
        RA,
        DEC + d
    );
    for (name, value) in [
        ("POLYGON", polygon.clone()),
        ("POS", format!("POLYGON {polygon}")),
        ("POS", format!("CIRCLE {}", circle(RA, DEC, 10.0))),
        (
            "POS",
            format!("RANGE {} {} {} {}", RA - d, RA + d, DEC - d, DEC + d),
        ),
    ] {
        let url = sync_redirect(&app, &[("ID", IMAGE), (name, &value)]);
        download(&app, &url);
    }
}

#[test]
fn sync_clips_a_stencil_at_the_image_edge() {
    let app = spawn_app();
    // Centred on the image's left edge: only half of the circle is inside.
    let edge_ra = RA + 256.0 * PIXEL_DEG / DEC.to_radians().cos();
    let url = sync_redirect(
        &app,
        &[("ID", IMAGE), ("CIRCLE", &circle(edge_ra, DEC, 30.0))],
    );
    let (_, w, h) = read_f32(&download(&app, &url), 1);
    assert!(w < 40 && h > 55, "{w}x{h}");
}

#[test]
fn sync_stencil_outside_the_image_answers_204() {
    let app = spawn_app();
    let r = app.get(
        "/sync",
        &[("ID", IMAGE), ("CIRCLE", &circle(RA + 10.0, DEC, 10.0))],
    );
    assert_eq!(r.status(), 204);
}

#[test]
fn sync_unknown_image_is_404_naming_it() {
    let app = spawn_app();
    let r = app.get(
        "/sync",
        &[
            ("ID", "butler://test/missing"),
            ("CIRCLE", &circle(RA, DEC, 5.0)),
        ],
    );
    assert_eq!(r.status(), 404);
    assert_eq!(content_type(&r), "text/plain; charset=utf-8");
    let body = r.text().expect("body");
    assert!(
        body.starts_with("UsageError: ") && body.contains("butler://test/missing"),
        "{body}"
    );
    let r = app.get(
        "/sync",
        &[
            ("ID", "butler://nowhere/field"),
            ("CIRCLE", &circle(RA, DEC, 5.0)),
        ],
    );
    assert_eq!(r.status(), 404);
}

#[test]
fn sync_bad_input_is_a_usage_error_and_creates_no_job() {
    let app = spawn_app();
    type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str);
    let cases: &[Case] = &[
        (
            &[("ID", IMAGE), ("CIRCLE", "150 2 -1")],
            400,
            "UsageError: ",
        ),
        (&[("ID", IMAGE), ("CIRCLE", "150 2")], 400, "UsageError: "),
        (
            &[("ID", IMAGE), ("CIRCLE", "nan 2 0.1")],
            400,
            "UsageError: ",
        ),
        (
            &[("ID", IMAGE), ("CIRCLE", "150 95 0.1")],
            400,
            "UsageError: ",
        ),
        (
            &[("ID", IMAGE), ("POLYGON", "1 1 2 2")],
            400,
            "UsageError: ",
        ),
        (
            &[("ID", IMAGE), ("POS", "BOX 1 2 3 4")],
            400,
            "UsageError: ",
        ),
        (&[("ID", IMAGE)], 400, "UsageError: "),
        // Without ID a CIRCLE is a light curve; a POLYGON cannot centre one.
        (
            &[("POLYGON", "149.9 1.9 150.1 1.9 150.1 2.1")],
            400,
            "UsageError: ",
        ),
        (
            &[
                ("ID", "butler://test/../etc/passwd"),
                ("CIRCLE", "150 2 0.1"),
            ],
            400,
            "UsageError: ",
        ),
        (
            &[("ID", "file:///etc/passwd"), ("CIRCLE", "150 2 0.1")],
            400,
            "UsageError: ",
        ),
        (
            &[("ID", IMAGE), ("CIRCLE", "150 2 0.1"), ("MASK", "perhaps")],
            400,
            "UsageError: ",
        ),
    ];
    for (params, status, label) in cases {
        let r = app.get("/sync", params);
        assert_eq!(r.status().as_u16(), *status, "{params:?}");
        assert_eq!(content_type(&r), "text/plain; charset=utf-8");
        let body = r.text().expect("body");
        assert!(body.starts_with(label), "{params:?}: {body}");
        // One line, ended, so that a terminal prompt does not start after it.
        assert!(
            body.ends_with('\n') && body.matches('\n').count() == 1,
            "{params:?}: {body:?}"
        );
    }
    assert!(
        app.job_ids(&[]).is_empty(),
        "a rejected request must not create a job"
    );
}

#[test]
fn tampered_or_expired_result_urls_get_403_and_no_data() {
    let app = app().config("JOBS__RESULT_URL_LIFETIME", "0").start();
    let url = sync_redirect(&app, &[("ID", IMAGE), ("CIRCLE", &circle(RA, DEC, 5.0))]);
    let tampered = url.replace("result.fits", "result-2.fits");
    let r = app.get_url(&tampered);
    assert_eq!(r.status(), 403);
    assert!(r.text().expect("body").starts_with("AuthorizationError: "));
    let forged = format!("{}0", url);
    assert_eq!(app.get_url(&forged).status(), 403);
    let unsigned = url.split('?').next().expect("path").to_owned();
    assert_eq!(app.get_url(&unsigned).status(), 403);
    // Valid for 0 s: expired as soon as the second it was made in has passed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = app.get_url(&url);
        if r.status() == 403 {
            assert!(r.text().expect("body").contains("expired"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "URL never expired");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn sync_is_refused_with_retry_after_when_the_queue_is_full_and_creates_no_job() {
    // No worker, so the queued job keeps the queue at the limit.
    let app = app()
        .config("AUTH__MODE", "ingress")
        .config("JOBS__SYNC_MAX_QUEUE_DEPTH", "1")
        .config("JOBS__SYNC_TIMEOUT", "7")
        .topology(Topology::Distributed { workers: 0 })
        .start();
    let alice = app.as_caller(&[("x-auth-request-user", "alice")]);
    let circle = circle(RA, DEC, 5.0);
    let params = [("ID", IMAGE), ("CIRCLE", circle.as_str())];
    let queued = alice.create_job(&[("ID", IMAGE), ("CIRCLE", &circle), ("PHASE", "RUN")]);
    assert_eq!(alice.job_ids(), vec![queued.clone()]);

    let r = alice.get("/sync", &params);
    assert_eq!(r.status(), 503);
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(retry_after.as_deref(), Some("7"));
    let body = r.text().expect("body");
    assert!(body.starts_with("ServiceUnavailable: "), "{body}");
    assert!(body.contains("async endpoint /jobs"), "{body}");
    assert_eq!(alice.job_ids(), vec![queued]);
}

#[test]
fn a_sync_request_is_answered_while_async_work_fills_every_general_slot() {
    // One worker with one general slot, taken by a long bulk job: the sync request runs in a
    // slot of its own instead of waiting for the bulk job to end.
    let topology = match Topology::from_env() {
        Topology::Embedded => Topology::Embedded,
        Topology::Distributed { .. } => Topology::Distributed { workers: 1 },
    };
    let app = app()
        .config("WORKER__CONCURRENCY", "1")
        .topology(topology)
        .start();
    let (catalogue, _) = slow_bulk_catalogue(&app, 60);
    let bulk = create_bulk(&app, &catalogue);
    assert_eq!(app.wait_until_not_queued(&bulk), "EXECUTING");

    let url = sync_redirect(&app, &[("ID", IMAGE), ("CIRCLE", &circle(RA, DEC, 5.0))]);
    let (pixels, w, h) = read_f32(&download(&app, &url), 1);
    assert_eq!(pixels.len(), w * h);
    assert!((10..=12).contains(&w), "{w}x{h}");
    assert_eq!(
        app.phase(&bulk),
        "EXECUTING",
        "the sync request was answered only after the bulk job"
    );

    let r = app.post(&format!("/jobs/{bulk}/phase"), &[("PHASE", "ABORT")]);
    assert_eq!(r.status(), 303);
    app.wait_final(&bulk);
}

/// Writes `images/mef.fits`: an empty primary HDU, then the test image as extension `VAR` and,
/// with every pixel doubled, as extension `SCI`.
fn write_two_extension_image(app: &TestApp) {
    let source = source_image(app);
    let path = source.with_file_name("mef.fits");
    let mut src = FitsFile::open(&source).expect("open");
    let primary = src.primary_hdu().expect("primary");
    let pixels: Vec<f32> = primary.read_image(&mut src).expect("pixels");
    let HduInfo::ImageInfo { shape, .. } = &primary.info else {
        panic!("not an image");
    };
    let description = fitsio::images::ImageDescription {
        data_type: fitsio::images::ImageType::Float,
        dimensions: shape,
    };
    let mut dst = FitsFile::create(&path).open().expect("create");
    for (name, factor) in [("VAR", 1.0), ("SCI", 2.0)] {
        let hdu = dst.create_image(name, &description).expect("extension");
        // The test image's WCS (soda::write_synthetic_image writes these).
        for key in ["CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "RADESYS"] {
            let value: String = primary.read_key(&mut src, key).expect(key);
            hdu.write_key(&mut dst, key, value).expect(key);
        }
        for key in [
            "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "EQUINOX",
        ] {
            let value: f64 = primary.read_key(&mut src, key).expect(key);
            hdu.write_key(&mut dst, key, value).expect(key);
        }
        let scaled: Vec<f32> = pixels.iter().map(|p| p * factor).collect();
        hdu.write_image(&mut dst, &scaled).expect("write");
    }
}

#[test]
fn an_id_with_ext_cuts_that_extension_and_an_unknown_extension_is_404() {
    let app = spawn_app();
    write_two_extension_image(&app);
    let stencil = circle(RA, DEC, 10.0);
    let cut = |id: &str| {
        let url = sync_redirect(&app, &[("ID", id), ("CIRCLE", &stencil)]);
        read_f32(&download(&app, &url), 1).0
    };
    let plain = cut(IMAGE);
    assert_eq!(
        cut("butler://test/mef"),
        plain,
        "no ext: the first image extension"
    );
    assert_eq!(cut("butler://test/mef?ext=VAR"), plain);
    let doubled: Vec<f32> = plain.iter().map(|p| p * 2.0).collect();
    assert_eq!(cut("butler://test/mef?ext=SCI"), doubled);

    let r = app.get(
        "/sync",
        &[("ID", "butler://test/mef?ext=DQ"), ("CIRCLE", &stencil)],
    );
    assert_eq!(r.status(), 404);
    let body = r.text().expect("body");
    assert!(
        body.starts_with("UsageError") && body.contains("DQ"),
        "{body}"
    );
    let r = app.get(
        "/sync",
        &[("ID", "butler://test/mef?hdu=2"), ("CIRCLE", &stencil)],
    );
    assert_eq!(r.status(), 400);
}

#[test]
fn meta_true_or_kind_header_answers_the_cutouts_header_as_text() {
    let app = spawn_app();
    let stencil = circle(RA, DEC, 20.0);
    let cutout = download(
        &app,
        &sync_redirect(&app, &[("ID", IMAGE), ("CIRCLE", &stencil)]),
    );
    let (_, width, height) = read_f32(&cutout, 1);
    for extra in [("META", "true"), ("kind", "header")] {
        let url = sync_redirect(&app, &[("ID", IMAGE), ("CIRCLE", &stencil), extra]);
        let r = app.get_url(&url);
        assert_eq!(r.status(), 200);
        assert_eq!(content_type(&r), "text/plain");
        let text = r.text().expect("body");
        let cards: Vec<&str> = text.lines().collect();
        assert!(cards.iter().all(|c| c.len() == 80), "{text}");
        assert_eq!(cards.last().map(|c| c.trim_end()), Some("END"));
        let value = |key: &str| {
            cards
                .iter()
                .find(|c| c[..8].trim_end() == key)
                .and_then(|c| c[10..].split(" /").next())
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("{key} missing: {text}"))
        };
        assert_eq!(value("XTENSION"), "'IMAGE   '");
        assert_eq!(value("NAXIS1"), width.to_string());
        assert_eq!(value("NAXIS2"), height.to_string());
        assert_eq!(
            value("CRPIX1").parse::<f64>().expect("CRPIX1"),
            key_f64(&cutout, 1, "CRPIX1")
        );
        assert!(
            cards
                .iter()
                .any(|c| c.starts_with("SKYCSRC ") && c.contains(IMAGE)),
            "{text}"
        );
    }
    let r = app.get(
        "/sync",
        &[
            ("ID", IMAGE),
            ("CIRCLE", &stencil),
            ("META", "true"),
            ("RESPONSEFORMAT", "image/png"),
        ],
    );
    assert_eq!(r.status(), 400);
    assert!(r.text().expect("body").starts_with("UsageError: "));
}

#[test]
fn sub_cuts_the_pixel_section_it_names_and_combines_with_no_sky_stencil() {
    let app = spawn_app();
    // Columns 11-30 and rows 21-35 (1-based, inclusive), as cfitsio reads [11:30,21:35].
    let url = sync_redirect(&app, &[("ID", IMAGE), ("SUB", "[11:30,21:35]")]);
    let cut = download(&app, &url);
    let (pixels, w, h) = read_f32(&cut, 1);
    assert_eq!((w, h), (20, 15));
    let (source, sw, _) = read_f32(&source_image(&app), 0);
    for y in 0..h {
        for x in 0..w {
            assert_eq!(pixels[y * w + x], source[(20 + y) * sw + 10 + x]);
        }
    }
    assert_eq!(
        key_f64(&cut, 1, "CRPIX1"),
        key_f64(&source_image(&app), 0, "CRPIX1") - 10.0
    );
    assert_eq!(key_f64(&cut, 1, "SKYCX0"), 11.0);
    assert_eq!(key_string(&cut, 1, "SKYCSTCL"), "SUB [11:30,21:35]");
    // A section running off the image is clipped to it; one wholly outside is no overlap.
    let (_, w, h) = read_f32(
        &download(
            &app,
            &sync_redirect(&app, &[("ID", IMAGE), ("SUB", "[500:600,*]")]),
        ),
        1,
    );
    assert_eq!((w, h), (13, 512));
    let r = app.get("/sync", &[("ID", IMAGE), ("SUB", "[600:700,1:10]")]);
    assert_eq!(r.status(), 204);
    for (name, value) in [
        ("CIRCLE", circle(RA, DEC, 5.0)),
        ("MASK", "true".to_owned()),
    ] {
        let r = app.get(
            "/sync",
            &[("ID", IMAGE), ("SUB", "[1:10,1:10]"), (name, &value)],
        );
        assert_eq!(r.status(), 400, "{name}");
        let text = r.text().expect("body");
        assert!(
            text.starts_with("UsageError: SUB cannot be combined with"),
            "{text}"
        );
    }
    let r = app.get("/sync", &[("ID", IMAGE), ("SUB", "[1:10:2,1:10]")]);
    assert_eq!(r.status(), 400);
    assert!(r.text().expect("body").contains("only steps of 1"));
}

#[test]
fn with_sync_memory_a_sync_result_is_served_from_memory_and_leaves_no_file() {
    let app = app()
        .topology(Topology::Embedded)
        .config("BUCKET__SYNC_MEMORY_BYTES", "10000000")
        .start();
    let stencil = circle(RA, DEC, 50.0);
    let url = sync_redirect(&app, &[("ID", IMAGE), ("CIRCLE", &stencil)]);
    let served = download(&app, &url);
    // The same pixels as the async job's result, which is a file.
    let id = app.create_job(&[("ID", IMAGE), ("CIRCLE", &stencil)]);
    app.run_job(&id);
    let doc = app.wait_final(&id);
    assert!(doc.contains("COMPLETED"), "{doc}");
    let files = bucket_objects(&app, &id);
    assert_eq!(files.len(), 1, "the async result is a file: {files:?}");
    let href = attributes(&doc, "uws:result", "xlink:href")[0].clone();
    let stored = download(&app, &href);
    assert_eq!(read_f32(&served, 1), read_f32(&stored, 1));
    let sync_job = url
        .split("/files/")
        .nth(1)
        .and_then(|k| k.split('/').next())
        .expect("the URL names the job");
    assert!(
        bucket_objects(&app, sync_job).is_empty(),
        "the sync result left a file: {:?}",
        bucket_objects(&app, sync_job)
    );
}

#[test]
fn size_cuts_a_stamp_of_exactly_that_size_blank_where_it_hangs_over_the_edge() {
    let app = spawn_app();
    // 250.2 pixels east of the centre of the 512-pixel image: a 40-pixel stamp there starts
    // left of the first column.
    let ra = RA + 250.2 * PIXEL_DEG / DEC.to_radians().cos();
    let url = sync_redirect(
        &app,
        &[
            ("ID", IMAGE),
            ("CIRCLE", &circle(ra, DEC, 1.0)),
            ("SIZE", "40"),
        ],
    );
    let cut = download(&app, &url);
    let (pixels, w, h) = read_f32(&cut, 1);
    assert_eq!((w, h), (40, 40));
    let (source, sw, sh) = read_f32(&source_image(&app), 0);
    let x0 = key_f64(&cut, 1, "SKYCX0") as i64 - 1;
    let y0 = key_f64(&cut, 1, "SKYCY0") as i64 - 1;
    assert!(x0 < 0 && y0 > 0, "the stamp starts at ({x0}, {y0})");
    let mut blanks = 0;
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            let (sx, sy) = (x0 + x, y0 + y);
            let got = pixels[(y * w as i64 + x) as usize];
            if (0..sw as i64).contains(&sx) && (0..sh as i64).contains(&sy) {
                assert_eq!(got, source[(sy * sw as i64 + sx) as usize], "({x},{y})");
            } else {
                assert!(got.is_nan(), "({x},{y}) off the image holds {got}");
                blanks += 1;
            }
        }
    }
    assert_eq!(blanks, -x0 * 40);
    let crpix1 = key_f64(&source_image(&app), 0, "CRPIX1");
    assert_eq!(key_f64(&cut, 1, "CRPIX1"), crpix1 - x0 as f64);
    // The position is in the middle of the stamp (pixel 19.5 of 0..39, within half a pixel).
    let crpix = key_f64(&cut, 1, "CRPIX1") - 1.0;
    let x_of_ra = crpix - 250.2;
    assert!((x_of_ra - 19.5).abs() <= 0.5 + 1e-3, "{x_of_ra}");
}

#[test]
fn size_must_be_a_whole_number_of_pixels_within_max_stamp_size() {
    let app = app().config("JOBS__MAX_STAMP_SIZE", "64").start();
    let stencil = circle(RA, DEC, 5.0);
    let ask = |size: &str| {
        let r = app.get(
            "/sync",
            &[("ID", IMAGE), ("CIRCLE", &stencil), ("SIZE", size)],
        );
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    let (status, body) = ask("65");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.starts_with("UsageError") && body.contains("max_stamp_size"),
        "{body}"
    );
    for bad in ["0", "-1", "3.5", "big"] {
        let (status, body) = ask(bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body.starts_with("UsageError: SIZE must be"),
            "{bad}: {body}"
        );
    }
    assert_eq!(ask("64").0, 303);
    let r = app.get(
        "/sync",
        &[
            ("ID", IMAGE),
            ("POLYGON", "150 2 150.01 2 150 2.01"),
            ("SIZE", "8"),
        ],
    );
    assert_eq!(r.status(), 400);
}

#[test]
fn a_stamp_table_holds_each_stamp_once_and_lists_the_rows_it_could_not_cut() {
    let app = spawn_app();
    let east = |pixels: f64| RA + pixels * PIXEL_DEG / DEC.to_radians().cos();
    let (inside, edge, off) = (
        circle(east(-3.3), DEC + 10.2 * PIXEL_DEG, 1.0),
        circle(east(250.2), DEC, 1.0),
        circle(east(400.0), DEC, 1.0),
    );
    let id = app.create_job(&[
        ("ID", IMAGE),
        ("CIRCLE", &inside),
        ("CIRCLE", &edge),
        ("CIRCLE", &off),
        ("SIZE", "16"),
        ("RESPONSEFORMAT", "application/fits;content=stamp-table"),
    ]);
    app.run_job(&id);
    let doc = app.wait_final(&id);
    assert_uws_valid(&doc);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    assert_eq!(attributes(&doc, "uws:result", "id"), ["stamps", "errors"]);
    assert_eq!(
        attributes(&doc, "uws:result", "mime-type"),
        ["application/fits;content=stamp-table", "text/csv"]
    );
    let hrefs = attributes(&doc, "uws:result", "xlink:href");
    let table = app.get_url(&hrefs[0]).bytes().expect("table");
    let rows = stamp_rows(&table, 16);
    assert_eq!(rows.len(), 2, "one row per stamp that could be cut");
    for (n, (row, image, crpix1, crpix2, pixels)) in rows.iter().enumerate() {
        assert_eq!((*row, *image), (n as i64, 0));
        assert_stamp_is_a_source_window(&app, (*crpix1, *crpix2), pixels, 16);
    }
    let errors = app.get_url(&hrefs[1]).text().expect("errors");
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines.len(), 2, "{errors}");
    assert_eq!(lines[0], "row,image,reason");
    assert!(
        lines[1].starts_with(&format!("2,{IMAGE},\"UsageError: ")),
        "{errors}"
    );
}

/// The sky position (degrees) of 0-based pixel (`x`, `y`) of the test image: its TAN WCS
/// (reference pixel at the centre, `PIXEL_DEG` per pixel, east left) inverted by the gnomonic
/// formulas, independently of the service's wcslib.
fn test_image_sky(x: f64, y: f64) -> (f64, f64) {
    let centre = (512.0 + 1.0) / 2.0;
    let xi = (-PIXEL_DEG * (x + 1.0 - centre)).to_radians();
    let eta = (PIXEL_DEG * (y + 1.0 - centre)).to_radians();
    let (ra0, dec0) = (RA.to_radians(), DEC.to_radians());
    let denominator = dec0.cos() - eta * dec0.sin();
    let ra = ra0 + xi.atan2(denominator);
    let dec = ((eta * dec0.cos() + dec0.sin()) * (ra - ra0).cos()).atan2(denominator);
    (ra.to_degrees().rem_euclid(360.0), dec.to_degrees())
}

#[test]
fn moc_cuts_the_rectangle_covering_its_cells_and_mask_blanks_pixels_outside_them() {
    let app = spawn_app();
    // The depth-14 HEALPix cell (about 13 arcsec, 13 pixels) holding the image centre.
    let depth = 14;
    let in_cell = |x: usize, y: usize| {
        let (ra, dec) = test_image_sky(x as f64, y as f64);
        cdshealpix::nested::hash(depth, ra.to_radians(), dec.to_radians())
    };
    let cell = in_cell(256, 256);
    let moc = format!("{depth}/{cell}");
    // The source pixels whose centres lie in the cell, by brute force around the centre.
    let inside: Vec<(usize, usize)> = (206..306)
        .flat_map(|y| (206..306).map(move |x| (x, y)))
        .filter(|&(x, y)| in_cell(x, y) == cell)
        .collect();
    assert!(inside.len() > 50, "{} pixels", inside.len());
    let span = |coordinate: fn(&(usize, usize)) -> usize| {
        let values = inside.iter().map(coordinate);
        (
            values.clone().min().expect("a pixel"),
            values.max().expect("a pixel"),
        )
    };
    let (x_lo, x_hi) = span(|p| p.0);
    let (y_lo, y_hi) = span(|p| p.1);

    let cut = download(&app, &sync_redirect(&app, &[("ID", IMAGE), ("MOC", &moc)]));
    let (_, w, h) = read_f32(&cut, 1);
    let x0 = key_f64(&cut, 1, "SKYCX0") as usize - 1;
    let y0 = key_f64(&cut, 1, "SKYCY0") as usize - 1;
    // The rectangle holds every pixel of the cell, and at most a pixel more on each side.
    assert!(x0 <= x_lo && x0 + w > x_hi && y0 <= y_lo && y0 + h > y_hi);
    assert!(
        x_lo - x0 <= 1 && x0 + w - 1 - x_hi <= 1,
        "x {x0}+{w} vs {x_lo}..{x_hi}"
    );
    assert!(
        y_lo - y0 <= 1 && y0 + h - 1 - y_hi <= 1,
        "y {y0}+{h} vs {y_lo}..{y_hi}"
    );
    assert_eq!(key_string(&cut, 1, "SKYCSTCL"), format!("MOC {moc}"));

    let masked = download(
        &app,
        &sync_redirect(&app, &[("ID", IMAGE), ("MOC", &moc), ("MASK", "true")]),
    );
    let (pixels, mw, mh) = read_f32(&masked, 1);
    assert_eq!((mw, mh), (w, h));
    let (source, sw, _) = read_f32(&source_image(&app), 0);
    for j in 0..h {
        for i in 0..w {
            let (x, y) = (x0 + i, y0 + j);
            let value = pixels[j * w + i];
            if in_cell(x, y) == cell {
                assert_eq!(value, source[y * sw + x], "pixel ({x}, {y}) is in the cell");
            } else {
                assert!(value.is_nan(), "pixel ({x}, {y}) is outside the cell");
            }
        }
    }
    // A cell elsewhere on the sky is no overlap; a MOC with SUB, or not a MOC, a UsageError.
    let (far_ra, far_dec) = (RA + 90.0, -DEC);
    let far = cdshealpix::nested::hash(depth, far_ra.to_radians(), far_dec.to_radians());
    let r = app.get(
        "/sync",
        &[("ID", IMAGE), ("MOC", &format!("{depth}/{far}"))],
    );
    assert_eq!(r.status(), 204);
    for params in [
        [("MOC", moc.as_str()), ("SUB", "[1:10,1:10]")],
        [("MOC", "14/"), ("MASK", "false")],
        [("MOC", "not a moc"), ("MASK", "false")],
    ] {
        let mut params = params.to_vec();
        params.push(("ID", IMAGE));
        let r = app.get("/sync", &params);
        assert_eq!(r.status(), 400, "{params:?}");
        assert!(r.text().expect("body").starts_with("UsageError: "));
    }
}
