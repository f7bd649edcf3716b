//! Cubes and SODA `BAND` end to end, through `/sync` and `/jobs`: a cube with RA, Dec and a
//! linear wavelength axis keeps every plane without `BAND`, only the planes whose centres lie
//! in the interval with it (CRPIX3 shifted), and a `BAND` that misses every plane is no overlap;
//! `BAND` on an image without a wavelength axis is a UsageError; `{links}` offers `BAND` with the
//! cube's wavelength range.

use std::path::Path;

use fitsio::FitsFile;
use fitsio::hdu::HduInfo;

use crate::common::*;

/// `butler://test/cube`: 64 x 48 x 6, 1 arcsec pixels centred on (RA, DEC + 0.1), planes at
/// 500, 510, ... 550 nm; pixel (x, y, k) = 100000 k + 1000 y + x.
const CUBE: &str = "butler://test/cube";
const CUBE_RA: f64 = RA;
const CUBE_DEC: f64 = DEC + 0.1;
const PLANES: usize = 6;

/// Writes the cube into the app's test repository (a directory every role reads, in either
/// topology).
fn write_cube(app: &TestApp) {
    let path = source_image(app).with_file_name("cube.fits");
    let data: Vec<f32> = (0..PLANES)
        .flat_map(|k| (0..48).flat_map(move |y| (0..64).map(move |x| value(x, y, k))))
        .collect();
    write_primary_image(
        &path,
        &[PLANES, 48, 64],
        &[
            ("CTYPE1", "RA---TAN"),
            ("CTYPE2", "DEC--TAN"),
            ("CTYPE3", "WAVE"),
            ("CUNIT1", "deg"),
            ("CUNIT2", "deg"),
            ("CUNIT3", "m"),
            ("RADESYS", "ICRS"),
        ],
        &[
            ("CRPIX1", 32.5),
            ("CRPIX2", 24.5),
            ("CRVAL1", CUBE_RA),
            ("CRVAL2", CUBE_DEC),
            ("CDELT1", -PIXEL_DEG),
            ("CDELT2", PIXEL_DEG),
            ("CRPIX3", 1.0),
            ("CRVAL3", 5.0e-7),
            ("CDELT3", 1.0e-8),
        ],
        &data,
    );
}

fn value(x: usize, y: usize, k: usize) -> f32 {
    (100_000 * k + 1000 * y + x) as f32
}

/// A FITS result: the `CUTOUT` extension's shape (C order), CRPIX3, first source pixel
/// (SKYCX0/SKYCY0, 0-based) and pixels.
struct Result3 {
    shape: Vec<usize>,
    crpix3: f64,
    origin: (usize, usize),
    pixels: Vec<f32>,
}

fn read_result(app: &TestApp, url: &str, name: &str) -> Result3 {
    let r = app.get_url(url);
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), "application/fits");
    let path = app.dir.path().join(name);
    std::fs::write(&path, r.bytes().expect("body")).expect("write");
    read_fits(&path)
}

fn read_fits(path: &Path) -> Result3 {
    let mut f = FitsFile::open(path).expect("open");
    let hdu = f.hdu("CUTOUT").expect("CUTOUT");
    let HduInfo::ImageInfo { shape, .. } = &hdu.info else {
        panic!("not an image: {:?}", hdu.info);
    };
    let shape = shape.clone();
    let crpix3 = hdu.read_key::<f64>(&mut f, "CRPIX3").expect("CRPIX3");
    let ctype3 = hdu.read_key::<String>(&mut f, "CTYPE3").expect("CTYPE3");
    assert_eq!(ctype3, "WAVE");
    let x0 = hdu.read_key::<i64>(&mut f, "SKYCX0").expect("SKYCX0") as usize - 1;
    let y0 = hdu.read_key::<i64>(&mut f, "SKYCY0").expect("SKYCY0") as usize - 1;
    Result3 {
        shape,
        crpix3,
        origin: (x0, y0),
        pixels: hdu.read_image(&mut f).expect("pixels"),
    }
}

/// The cube cut by a 5-pixel circle at its centre with `extra` parameters, once through
/// `/sync` and once as a job: the two results.
fn cut_both_ways(app: &TestApp, extra: &[(&str, &str)]) -> [Result3; 2] {
    let stencil = circle(CUBE_RA, CUBE_DEC, 5.0);
    let mut params = vec![("ID", CUBE), ("CIRCLE", stencil.as_str())];
    params.extend_from_slice(extra);
    let r = app.get("/sync", &params);
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    let sync = read_result(app, &location(&r), "sync.fits");

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
    let job = read_result(app, &hrefs[0], "job.fits");
    [sync, job]
}

/// Checks that `cut` holds source planes `first..first + count` of the cube at its origin.
fn assert_planes(cut: &Result3, first: usize, count: usize) {
    let (height, width) = (cut.shape[1], cut.shape[2]);
    assert_eq!(cut.shape[0], count, "NAXIS3");
    assert!(width >= 10 && height >= 10, "{:?}", cut.shape);
    // Plane 1 of the cutout is source plane first + 1, so its wavelength stays the same.
    assert_eq!(cut.crpix3, 1.0 - first as f64, "CRPIX3");
    let (x0, y0) = cut.origin;
    for k in 0..count {
        for j in 0..height {
            for i in 0..width {
                assert_eq!(
                    cut.pixels[(k * height + j) * width + i],
                    value(x0 + i, y0 + j, first + k),
                    "pixel ({i}, {j}, {k})"
                );
            }
        }
    }
}

#[test]
fn a_cube_without_band_keeps_every_plane() {
    let app = spawn_app();
    write_cube(&app);
    for cut in cut_both_ways(&app, &[]) {
        assert_planes(&cut, 0, PLANES);
    }
}

#[test]
fn band_keeps_the_planes_whose_centres_it_holds_with_crpix3_shifted() {
    let app = spawn_app();
    write_cube(&app);
    // 515 to 540 nm: the planes at 520, 530 and 540 nm (source planes 2, 3 and 4).
    for cut in cut_both_ways(&app, &[("BAND", "5.15e-7 5.4e-7")]) {
        assert_planes(&cut, 2, 3);
    }
}

#[test]
fn a_band_that_misses_every_plane_is_no_overlap() {
    let app = spawn_app();
    write_cube(&app);
    let stencil = circle(CUBE_RA, CUBE_DEC, 5.0);
    let params = [
        ("ID", CUBE),
        ("CIRCLE", stencil.as_str()),
        ("BAND", "6e-7 +Inf"),
    ];
    let r = app.get("/sync", &params);
    assert_eq!(r.status(), 204, "{}", r.text().unwrap_or_default());

    let mut params = params.to_vec();
    params.push(("PHASE", "RUN"));
    let id = app.create_job(&params);
    let doc = app.wait_final(&id);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("ERROR"),
        "{doc}"
    );
    let message = element(&doc, "uws:message").expect("message");
    assert!(
        message.starts_with("UsageError: ") && message.contains("overlap"),
        "{message}"
    );
}

#[test]
fn band_on_a_2d_image_is_a_usage_error() {
    let app = spawn_app();
    let r = app.get(
        "/sync",
        &[
            ("ID", IMAGE),
            ("CIRCLE", &circle(RA, DEC, 10.0)),
            ("BAND", "5e-7 6e-7"),
        ],
    );
    assert_eq!(r.status(), 400);
    let text = r.text().expect("body");
    assert!(
        text.starts_with("UsageError: ") && text.contains("no wavelength axis"),
        "{text}"
    );
}

#[test]
fn links_of_a_cube_offer_band_between_the_edges_of_its_planes() {
    let app = spawn_app();
    write_cube(&app);
    let doc = app.get("/links", &[("ID", CUBE)]).text().expect("body");
    assert_valid(&doc, "VOTable-v1.4.xsd");
    let start = doc.find(r#"<PARAM name="BAND""#).expect("BAND offered");
    let band = &doc[start..start + doc[start..].find("</PARAM>").expect("end")];
    for (attr, value) in [("unit", "m"), ("xtype", "interval"), ("arraysize", "2")] {
        assert_eq!(attributes(band, "PARAM", attr), [value], "{band}");
    }
    // Planes at 500 ... 550 nm, 10 nm wide: from 495 to 555 nm.
    let bound = |name: &str| -> f64 {
        attributes(band, name, "value")[0]
            .parse()
            .expect("a number")
    };
    assert!((bound("MIN") - 4.95e-7).abs() < 1e-15, "{band}");
    assert!((bound("MAX") - 5.55e-7).abs() < 1e-15, "{band}");
}
