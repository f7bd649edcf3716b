//! Results in an S3 bucket and source images read from one, against a real S3 protocol server
//! (moto) on loopback: signed URLs straight into the bucket, expiry sweeping, the source cache,
//! and faults of the store.

use std::time::{Duration, Instant};

use fitsio::FitsFile;
use fitsio::hdu::HduInfo;
use fitsio::images::{ImageDescription, ImageType};

use crate::common::moto::Moto;
use crate::common::*;

const RESULTS: &str = "results";
const IMAGES: &str = "images";
/// `butler://sky/X` is `s3://images/survey/X.fits`.
const SKY_FIELD: &str = "butler://sky/field";

/// A moto server with a result bucket and an image bucket, and an app configured to use both.
fn s3_app(extra: &[(&str, &str)]) -> (Moto, TestApp) {
    let moto = Moto::start();
    moto.create_bucket(RESULTS);
    moto.create_bucket(IMAGES);
    // The bucket behaviour is the same in both topologies, and the source cache is per process:
    // these tests run once, embedded (scripts/test skips them in the distributed pass).
    let mut builder = app()
        .topology(Topology::Embedded)
        .config("BUCKET__KIND", "s3")
        .config("BUCKET__URL", "s3://results/skycut")
        .config("BUCKET__S3_ENDPOINT", &moto.endpoint)
        .config("BUCKET__S3_REGION", "us-east-1")
        .config("BUCKET__S3_ACCESS_KEY_ID", "testing")
        .config("BUCKET__S3_SECRET_ACCESS_KEY", "testing")
        .config("BUCKET__MAX_RETRIES", "0")
        .config("REPOSITORIES__SKY", "s3://images/survey");
    for (k, v) in extra {
        builder = builder.config(k, v);
    }
    let app = builder.start();
    let image = std::fs::read(source_image(&app)).expect("test image");
    moto.put_object(IMAGES, "survey/field.fits", image);
    (moto, app)
}

fn sync_cutout(app: &TestApp, id: &str) -> reqwest::blocking::Response {
    app.get("/sync", &[("ID", id), ("CIRCLE", &circle(RA, DEC, 50.0))])
}

fn plain_get(url: &str) -> reqwest::blocking::Response {
    reqwest::blocking::Client::new()
        .get(url)
        .send()
        .expect("GET signed URL")
}

#[test]
fn sync_cutout_redirects_straight_to_a_presigned_bucket_url() {
    let (moto, app) = s3_app(&[]);
    let r = sync_cutout(&app, SKY_FIELD);
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    let url = location(&r);
    assert!(
        url.starts_with(&format!("{}/{RESULTS}/skycut/", moto.endpoint)),
        "{url}"
    );
    for part in [
        "X-Amz-Signature=",
        "X-Amz-Expires=900",
        "X-Amz-Credential=testing",
    ] {
        assert!(url.contains(part), "{part} missing from {url}");
    }
    let got = plain_get(&url);
    assert_eq!(got.status(), 200);
    assert_eq!(content_type(&got), "application/fits");
    let disposition = got
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"field_circle-150-2-"),
        "{disposition}"
    );
    let body = got.bytes().expect("body");
    assert!(body.starts_with(b"SIMPLE  ="), "not FITS");
    assert_eq!(body.len() % 2880, 0);
}

#[test]
fn job_results_are_signed_afresh_on_every_read() {
    let (_moto, app) = s3_app(&[]);
    let id = app.create_job(&[("ID", SKY_FIELD), ("CIRCLE", &circle(RA, DEC, 30.0))]);
    app.run_job(&id);
    let doc = app.wait_final(&id);
    assert_eq!(element(&doc, "uws:phase").as_deref(), Some("COMPLETED"));
    assert_uws_valid(&doc);
    let first = attributes(&doc, "uws:result", "xlink:href");
    assert_eq!(first.len(), 1);
    let url = first[0].replace("&amp;", "&");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    assert_eq!(plain_get(&url).status(), 200);
    // A later read signs again: a different URL for the same object, also valid.
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        let doc = app.job_xml(&id);
        let href = attributes(&doc, "uws:result", "xlink:href")[0].replace("&amp;", "&");
        if href != url {
            break href;
        }
        assert!(Instant::now() < deadline, "the URL was never re-signed");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(plain_get(&again).status(), 200);
}

#[test]
fn bucket_sources_are_read_once_through_the_cache() {
    // Whole downloads only: a ranged read keeps no copy.
    let (moto, app) = s3_app(&[("RANGES__ENABLED", "false")]);
    assert_eq!(sync_cutout(&app, SKY_FIELD).status(), 303);
    // The object is gone from the bucket, but the worker's copy still serves cutouts.
    moto.delete_object(IMAGES, "survey/field.fits");
    let r = sync_cutout(&app, SKY_FIELD);
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    // An image that was never cached and is not in the bucket is unknown.
    let r = sync_cutout(&app, "butler://sky/nothing");
    assert_eq!(r.status(), 404);
    let text = r.text().expect("body");
    assert!(text.contains("s3://images/survey/nothing.fits"), "{text}");
}

/// Writes the image of `source` (the test image) tile-compressed, as `fpack` would: an empty
/// primary HDU and the image in a compressed extension (cfitsio's `[compress]` file-name syntax,
/// GZIP, floats not quantised, so the pixels stay exact).
pub(crate) fn tile_compressed(source: &std::path::Path, out: &std::path::Path) -> Vec<u8> {
    let mut src = FitsFile::open(source).expect("open source");
    let hdu = src.primary_hdu().expect("primary");
    let HduInfo::ImageInfo { shape, .. } = &hdu.info else {
        panic!("not an image");
    };
    let pixels: Vec<f32> = hdu.read_image(&mut src).expect("pixels");
    let mut dst = FitsFile::create(format!("{}[compress GZIP 64,64; q 0]", out.display()))
        .open()
        .expect("create compressed");
    let description = ImageDescription {
        data_type: ImageType::Float,
        dimensions: shape,
    };
    let ext = dst.create_image("SCI", &description).expect("extension");
    for key in ["CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "RADESYS"] {
        let value: String = hdu.read_key(&mut src, key).expect(key);
        ext.write_key(&mut dst, key, value).expect(key);
    }
    for key in [
        "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "EQUINOX",
    ] {
        let value: f64 = hdu.read_key(&mut src, key).expect(key);
        ext.write_key(&mut dst, key, value).expect(key);
    }
    ext.write_image(&mut dst, &pixels).expect("write pixels");
    drop(dst);
    // The image really is tile-compressed: to the header it is a binary table.
    let mut check = FitsFile::open(out).expect("open compressed");
    let packed = check.hdu(1).expect("extension 1");
    let xtension: String = packed.read_key(&mut check, "XTENSION").expect("XTENSION");
    assert_eq!(xtension, "BINTABLE");
    std::fs::read(out).expect("read compressed")
}

/// The shape (C order) and pixels of the `CUTOUT` extension of the FITS file at `url`.
fn cutout_at(app: &TestApp, url: &str, name: &str) -> (Vec<usize>, Vec<f32>) {
    let got = plain_get(url);
    assert_eq!(got.status(), 200);
    let path = app.dir.path().join(name);
    std::fs::write(&path, got.bytes().expect("body")).expect("write");
    let mut f = FitsFile::open(&path).expect("open");
    let hdu = f.hdu("CUTOUT").expect("CUTOUT");
    let HduInfo::ImageInfo { shape, .. } = &hdu.info else {
        panic!("not an image");
    };
    (shape.clone(), hdu.read_image(&mut f).expect("pixels"))
}

#[test]
fn a_bucket_id_without_a_fits_object_reads_its_fits_fz_twin() {
    let (moto, app) = s3_app(&[]);
    let packed = tile_compressed(&source_image(&app), &app.dir.path().join("packed.fits.fz"));
    // Only the compressed object exists for `packed`.
    moto.put_object(IMAGES, "survey/packed.fits.fz", packed);
    let cut = |id: &str, name: &str| {
        let r = sync_cutout(&app, id);
        assert_eq!(r.status(), 303, "{id}: {}", r.text().unwrap_or_default());
        cutout_at(&app, &location(&r), name)
    };
    let plain = cut(SKY_FIELD, "plain.fits");
    let compressed = cut("butler://sky/packed", "compressed.fits");
    // A 50-pixel circle: about 100 x 100 pixels, across several 64 x 64 tiles.
    assert!(plain.1.len() > 100 * 100, "{:?}", plain.0);
    assert_eq!(compressed, plain);
    // Neither object: unknown, naming both.
    let r = sync_cutout(&app, "butler://sky/absent");
    assert_eq!(r.status(), 404);
    let text = r.text().expect("body");
    assert!(
        text.contains("s3://images/survey/absent.fits (nor s3://images/survey/absent.fits.fz)"),
        "{text}"
    );
}

#[test]
fn expired_jobs_lose_their_bucket_objects() {
    let (moto, app) = s3_app(&[("JOBS__SWEEP_INTERVAL", "1")]);
    let destruction = time_in(3);
    let id = app.create_job(&[
        ("ID", SKY_FIELD),
        ("CIRCLE", &circle(RA, DEC, 30.0)),
        ("DESTRUCTION", &destruction),
    ]);
    app.run_job(&id);
    let doc = app.wait_final(&id);
    assert_eq!(element(&doc, "uws:phase").as_deref(), Some("COMPLETED"));
    // The signed URL names the object: {endpoint}/{bucket}/{key}?{signature}.
    let href = attributes(&doc, "uws:result", "xlink:href").remove(0);
    let marker = format!("/{RESULTS}/");
    let start = href.find(&marker).expect("bucket in URL") + marker.len();
    let key = href[start..].split('?').next().expect("key").to_owned();
    assert!(key.starts_with(&format!("skycut/{id}/")), "{key}");
    assert!(moto.object_exists(RESULTS, &key));
    let deadline = Instant::now() + Duration::from_secs(30);
    while moto.object_exists(RESULTS, &key) {
        assert!(Instant::now() < deadline, "{key} outlived its job");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(app.get(&format!("/jobs/{id}"), &[]).status(), 404);
}

#[test]
fn a_store_that_goes_away_fails_the_job_as_transient_never_completed() {
    let (mut moto, app) = s3_app(&[]);
    // The source is local, so only writing the result needs the store.
    let id = app.cutout_job();
    moto.stop();
    app.run_job(&id);
    let doc = app.wait_final(&id);
    assert_uws_valid(&doc);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("ERROR"),
        "{doc}"
    );
    assert!(
        doc.contains("<uws:errorSummary type=\"transient\""),
        "{doc}"
    );
    assert!(attributes(&doc, "uws:result", "id").is_empty(), "{doc}");
    let error = app
        .get(&format!("/jobs/{id}/error"), &[])
        .text()
        .expect("error");
    assert!(error.contains("storing the result failed"), "{error}");
    // The same for a sync request whose source is in the vanished store: 503, not a result.
    let r = sync_cutout(&app, SKY_FIELD);
    assert_eq!(r.status(), 503);
    assert!(r.text().expect("body").starts_with("ServiceUnavailable:"));
}

#[test]
fn availability_and_readiness_say_an_unreachable_result_bucket_is_down() {
    let (mut moto, app) = s3_app(&[("BUCKET__REQUEST_TIMEOUT", "2")]);
    let readyz = format!("{}/readyz", app.root());
    let r = plain_get(&readyz);
    assert_eq!(r.status(), 200);
    let body = r.text().expect("body");
    assert!(
        body.contains("result bucket: s3://results/skycut takes objects"),
        "{body}"
    );
    let doc = app.get("/availability", &[]).text().expect("body");
    assert_eq!(
        element(&doc, "vosi:available").as_deref(),
        Some("true"),
        "{doc}"
    );
    // The probe object is deleted again.
    assert!(!moto.object_exists(RESULTS, "skycut/.health-probe"));

    moto.stop();
    let r = plain_get(&readyz);
    assert_eq!(r.status(), 503);
    let body = r.text().expect("body");
    assert!(
        body.starts_with("not ready\nresult bucket unavailable: "),
        "{body}"
    );
    let doc = app.get("/availability", &[]).text().expect("body");
    assert_valid(&doc, "VOSIAvailability-v1.0.xsd");
    assert_eq!(
        element(&doc, "vosi:available").as_deref(),
        Some("false"),
        "{doc}"
    );
    let note = element(&doc, "vosi:note").expect("note");
    assert!(note.starts_with("result bucket unavailable: "), "{note}");
    // A sync request fails with a message that blames the bucket, not the job store.
    let r = app.get(
        "/sync",
        &[("ID", IMAGE), ("CIRCLE", &circle(RA, DEC, 50.0))],
    );
    assert_eq!(r.status(), 503);
    let text = r.text().expect("body");
    assert!(text.starts_with("ServiceUnavailable: "), "{text}");
    assert!(text.contains("result store"), "{text}");
    assert!(!text.contains("job store"), "{text}");
}

#[test]
fn a_corrupt_bucket_source_is_a_fatal_error_naming_the_file() {
    let (moto, app) = s3_app(&[]);
    let mut image = std::fs::read(source_image(&app)).expect("image");
    image.truncate(2880 + 1000);
    moto.put_object(IMAGES, "survey/broken.fits", image);
    let id = app.create_job(&[
        ("ID", "butler://sky/broken"),
        ("CIRCLE", &circle(RA, DEC, 30.0)),
    ]);
    app.run_job(&id);
    let doc = app.wait_final(&id);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("ERROR"),
        "{doc}"
    );
    assert!(doc.contains("<uws:errorSummary type=\"fatal\""), "{doc}");
    let error = app
        .get(&format!("/jobs/{id}/error"), &[])
        .text()
        .expect("error");
    assert!(error.contains("s3://images/survey/broken.fits"), "{error}");
}

/// An ISO 8601 UTC instant `seconds` from now, for `DESTRUCTION`.
fn time_in(seconds: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + seconds;
    let days = now / 86_400;
    let rem = now % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
