//! SODA `TIME` and `POL` end to end, through `/sync` and `/jobs`: a cube with RA, Dec, a Stokes
//! axis (I Q U V) and a time axis keeps the exposures `TIME` holds and the span of the Stokes
//! planes `POL` names, in axis order; a 2-D image is kept or rejected whole by its observation
//! interval (DATE-OBS + EXPTIME): 204 sync, ERROR async when it misses; a malformed `TIME`, an
//! unknown `POL` and `POL` on an image without a Stokes axis are UsageErrors; `{links}` offers
//! `TIME` between the first and last instants and `POL` with the cube's states.

use fitsio::FitsFile;
use fitsio::hdu::HduInfo;

use crate::common::*;

/// `butler://test/stokes`: 64 x 48 x 4 x 3, 1 arcsec pixels centred on (RA, DEC + 0.2),
/// Stokes I Q U V along NAXIS3, three exposures an hour apart from MJD 60000 along NAXIS4
/// (seconds from MJDREF); every pixel of plane (s, t) holds 10 t + s.
const STOKES_CUBE: &str = "butler://test/stokes";
const CUBE_DEC: f64 = DEC + 0.2;
const HOUR: f64 = 1.0 / 24.0;

/// `butler://test/dated`: a 2-D image observed for 2 hours from 2023-06-15T06:00:00
/// (MJD 60110.25 to 60110.3333).
const DATED: &str = "butler://test/dated";

fn write_stokes_cube(app: &TestApp) {
    let path = source_image(app).with_file_name("stokes.fits");
    let data: Vec<f32> = (0..3)
        .flat_map(|t| (0..4).flat_map(move |s| (0..48 * 64).map(move |_| (10 * t + s) as f32)))
        .collect();
    write_primary_image(
        &path,
        &[3, 4, 48, 64],
        &[
            ("CTYPE1", "RA---TAN"),
            ("CTYPE2", "DEC--TAN"),
            ("CTYPE3", "STOKES"),
            ("CTYPE4", "TIME"),
            ("CUNIT4", "s"),
            ("RADESYS", "ICRS"),
        ],
        &[
            ("CRPIX1", 32.5),
            ("CRPIX2", 24.5),
            ("CRVAL1", RA),
            ("CRVAL2", CUBE_DEC),
            ("CDELT1", -PIXEL_DEG),
            ("CDELT2", PIXEL_DEG),
            ("CRPIX3", 1.0),
            ("CRVAL3", 1.0),
            ("CDELT3", 1.0),
            ("CRPIX4", 1.0),
            ("CRVAL4", 0.0),
            ("CDELT4", 3600.0),
            ("MJDREF", 60000.0),
        ],
        &data,
    );
}

fn write_dated_image(app: &TestApp) {
    let path = source_image(app).with_file_name("dated.fits");
    soda::write_synthetic_image(
        &path,
        &soda::SyntheticImage {
            nx: 100,
            ny: 100,
            ra_deg: RA,
            dec_deg: DEC,
            pixel_scale_deg: PIXEL_DEG,
        },
    )
    .expect("dated image");
    let mut f = FitsFile::edit(&path).expect("edit");
    let hdu = f.primary_hdu().expect("primary");
    hdu.write_key(&mut f, "DATE-OBS", "2023-06-15T06:00:00")
        .expect("DATE-OBS");
    hdu.write_key(&mut f, "EXPTIME", 7200.0).expect("EXPTIME");
}

/// A cutout's shape (C order) and the plane number (10 t + s) of each plane, in order.
fn planes_of(app: &TestApp, url: &str, name: &str) -> (Vec<usize>, Vec<f32>) {
    let r = app.get_url(url);
    assert_eq!(r.status(), 200);
    let path = app.dir.path().join(name);
    std::fs::write(&path, r.bytes().expect("body")).expect("write");
    let mut f = FitsFile::open(&path).expect("open");
    let hdu = f.hdu("CUTOUT").expect("CUTOUT");
    let HduInfo::ImageInfo { shape, .. } = &hdu.info else {
        panic!("not an image: {:?}", hdu.info);
    };
    let shape = shape.clone();
    let pixels: Vec<f32> = hdu.read_image(&mut f).expect("pixels");
    let plane = shape[2] * shape[3];
    // Every pixel of a plane holds its number: the first stands for all.
    for chunk in pixels.chunks(plane) {
        assert!(chunk.iter().all(|p| *p == chunk[0]), "a plane mixes values");
    }
    (shape, pixels.chunks(plane).map(|p| p[0]).collect())
}

/// The cube cut by a 5-pixel circle with `extra` parameters through `/sync` and as a job.
fn cut_both_ways(app: &TestApp, extra: &[(&str, &str)]) -> [(Vec<usize>, Vec<f32>); 2] {
    let stencil = circle(RA, CUBE_DEC, 5.0);
    let mut params = vec![("ID", STOKES_CUBE), ("CIRCLE", stencil.as_str())];
    params.extend_from_slice(extra);
    let r = app.get("/sync", &params);
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    let sync = planes_of(app, &location(&r), "sync.fits");
    params.push(("PHASE", "RUN"));
    let id = app.create_job(&params);
    let doc = app.wait_final(&id);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    let hrefs = attributes(&doc, "uws:result", "xlink:href");
    assert_eq!(hrefs.len(), 1, "{doc}");
    [sync, planes_of(app, &hrefs[0], "job.fits")]
}

#[test]
fn time_keeps_the_exposures_it_holds_and_pol_the_stokes_planes_in_axis_order() {
    let app = spawn_app();
    write_stokes_cube(&app);
    // From half an hour after the first exposure: the second and third.
    let time = format!("{} +Inf", 60000.0 + 0.5 * HOUR);
    for (shape, planes) in cut_both_ways(&app, &[("TIME", &time)]) {
        assert_eq!(shape[..2], [2, 4]);
        assert_eq!(planes, [10.0, 11.0, 12.0, 13.0, 20.0, 21.0, 22.0, 23.0]);
    }
    // U and Q, in that order: Q then U, as the axis holds them; with the first exposure only.
    let first = format!("{0} {0}", 60000.0);
    for (shape, planes) in cut_both_ways(&app, &[("POL", "U"), ("POL", "Q"), ("TIME", &first)]) {
        assert_eq!(shape[..2], [1, 2]);
        assert_eq!(planes, [1.0, 2.0]);
    }
    // I and V: the span I Q U V, in every exposure.
    for (shape, planes) in cut_both_ways(&app, &[("POL", "V"), ("POL", "I")]) {
        assert_eq!(shape[..2], [3, 4]);
        assert_eq!(planes.len(), 12);
    }
}

#[test]
fn time_or_pol_that_selects_nothing_is_no_overlap() {
    let app = spawn_app();
    write_stokes_cube(&app);
    write_dated_image(&app);
    let cube_circle = circle(RA, CUBE_DEC, 5.0);
    let image_circle = circle(RA, DEC, 5.0);
    let misses: [&[(&str, &str)]; 3] = [
        &[
            ("ID", STOKES_CUBE),
            ("CIRCLE", &cube_circle),
            ("TIME", "60001 +Inf"),
        ],
        &[("ID", STOKES_CUBE), ("CIRCLE", &cube_circle), ("POL", "RR")],
        &[
            ("ID", DATED),
            ("CIRCLE", &image_circle),
            ("TIME", "60110.34 60111"),
        ],
    ];
    for params in misses {
        let r = app.get("/sync", params);
        assert_eq!(
            r.status(),
            204,
            "{params:?}: {}",
            r.text().unwrap_or_default()
        );
        let mut params = params.to_vec();
        params.push(("PHASE", "RUN"));
        let id = app.create_job(&params);
        let doc = app.wait_final(&id);
        assert_eq!(
            element(&doc, "uws:phase").as_deref(),
            Some("ERROR"),
            "{doc}"
        );
    }
}

#[test]
fn time_keeps_a_dated_image_whose_observation_meets_it() {
    let app = spawn_app();
    write_dated_image(&app);
    let stencil = circle(RA, DEC, 5.0);
    for time in [
        "60110.3 60110.3",
        "-Inf 60110.25",
        "60110.33 +Inf",
        "-Inf +Inf",
    ] {
        let r = app.get(
            "/sync",
            &[("ID", DATED), ("CIRCLE", &stencil), ("TIME", time)],
        );
        assert_eq!(r.status(), 303, "{time}: {}", r.text().unwrap_or_default());
    }
}

#[test]
fn malformed_time_unknown_pol_and_pol_or_time_without_their_axis_are_usage_errors() {
    let app = spawn_app();
    let stencil = circle(RA, DEC, 5.0);
    for (name, value, problem) in [
        ("TIME", "2023-06-15 2023-06-16", "TIME value"),
        ("TIME", "60111 60110", "not an interval"),
        ("TIME", "60110", "needs 2 numbers"),
        ("POL", "POLI", "FITS Stokes code"),
        ("POL", "I", "no polarization axis"),
        (
            "TIME",
            "60110 60111",
            "neither a time axis nor an observation time",
        ),
    ] {
        let params = [("ID", IMAGE), ("CIRCLE", stencil.as_str()), (name, value)];
        let r = app.get("/sync", &params);
        assert_eq!(r.status(), 400, "{name}={value}");
        let text = r.text().expect("body");
        assert!(
            text.starts_with("UsageError: ") && text.contains(problem),
            "{name}={value}: {text}"
        );
        // Nor does an async request create a job.
        let r = app.post("/jobs", &params);
        assert_eq!(r.status(), 400, "{name}={value}");
    }
    assert!(app.job_ids(&[]).is_empty());
}

#[test]
fn links_offer_time_between_the_first_and_last_instants_and_pol_with_the_cubes_states() {
    let app = spawn_app();
    write_stokes_cube(&app);
    write_dated_image(&app);
    let doc = app
        .get(
            "/links",
            &[("ID", STOKES_CUBE), ("ID", DATED), ("ID", IMAGE)],
        )
        .text()
        .expect("body");
    assert_valid(&doc, "VOTable-v1.4.xsd");
    let param = |from: usize, name: &str| -> Option<String> {
        let start = from + doc[from..].find(&format!(r#"<PARAM name="{name}""#))?;
        let end = start + doc[start..].find("</PARAM>")?;
        // Only within this image's descriptor.
        let next = doc[from + 1..]
            .find("<RESOURCE type=\"meta\"")
            .map_or(doc.len(), |n| from + 1 + n);
        (start < next).then(|| doc[start..end].to_owned())
    };
    let descriptors: Vec<usize> = doc
        .match_indices("<RESOURCE type=\"meta\"")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(descriptors.len(), 3, "{doc}");
    let bound =
        |p: &str, name: &str| -> f64 { attributes(p, name, "value")[0].parse().expect("a number") };
    // The cube: exposures centred on 60000, +1 h, +2 h, an hour wide.
    let time = param(descriptors[0], "TIME").expect("TIME on the cube");
    assert_eq!(attributes(&time, "PARAM", "unit"), ["d"], "{time}");
    assert_eq!(attributes(&time, "PARAM", "xtype"), ["interval"], "{time}");
    assert!(
        (bound(&time, "MIN") - (60000.0 - 0.5 * HOUR)).abs() < 1e-9,
        "{time}"
    );
    assert!(
        (bound(&time, "MAX") - (60000.0 + 2.5 * HOUR)).abs() < 1e-9,
        "{time}"
    );
    let pol = param(descriptors[0], "POL").expect("POL on the cube");
    assert_eq!(attributes(&pol, "OPTION", "value"), ["I", "Q", "U", "V"]);
    // The dated image: its observation; no POL.
    let time = param(descriptors[1], "TIME").expect("TIME on the dated image");
    assert!((bound(&time, "MIN") - 60110.25).abs() < 1e-9, "{time}");
    assert!(
        (bound(&time, "MAX") - (60110.25 + 2.0 * HOUR)).abs() < 1e-9,
        "{time}"
    );
    assert!(param(descriptors[1], "POL").is_none(), "{doc}");
    // The undated image: neither.
    assert!(param(descriptors[2], "TIME").is_none() && param(descriptors[2], "POL").is_none());
}
