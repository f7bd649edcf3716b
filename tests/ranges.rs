//! Source images read by ranges from a real S3 protocol server (moto) and from an image server:
//! the cutouts are byte-identical to cutouts of a local copy (every BITPIX, scaled integers, a
//! named extension, a corner), a small cutout of a large image fetches a small part of it
//! (counted by the worker's metrics and by the server's own log) in three round trips however
//! far away the store is, the policy downloads a popular image whole, and an object that
//! changes or a server that answers short never yields a mixed or short cutout.

use std::path::Path;
use std::time::Duration;

use fitsio::FitsFile;
use fitsio::images::{ImageDescription, ImageType, WriteImage};

use crate::common::image_server::{ImageServer, ShortReads};
use crate::common::moto::Moto;
use crate::common::proxy::DelayingProxy;
use crate::common::*;

const TOKEN: &str = "gt-ranges-7c21";
/// The remote repository's name has as many characters as the test's local one (`test`, the
/// app's `images` directory), so the `SKYCSRC` card of a cutout has the same length from
/// either, and only its text and `DATE` differ.
const REMOTE: &str = "cold";
/// The same images on an image server (as long a name again).
const SERVED: &str = "serv";
const LOCAL: &str = "test";

/// How a test image stores its pixels.
#[derive(Clone, Copy)]
enum Pixels {
    U8,
    I16,
    I32,
    F32,
    F64,
    /// 16-bit integers with BSCALE, BZERO and BLANK.
    ScaledI16,
}

/// Writes a `nx` × `ny` image with a TAN WCS centred on (RA, DEC); in the extension `SCI` after a
/// `VAR` extension when `extension`, else in the primary HDU. `seed` changes every pixel.
fn write_image(path: &Path, pixels: Pixels, nx: usize, ny: usize, extension: bool, seed: i64) {
    let data_type = match pixels {
        Pixels::U8 => ImageType::UnsignedByte,
        Pixels::I16 | Pixels::ScaledI16 => ImageType::Short,
        Pixels::I32 => ImageType::Long,
        Pixels::F32 => ImageType::Float,
        Pixels::F64 => ImageType::Double,
    };
    let dimensions = [ny, nx];
    let description = ImageDescription {
        data_type,
        dimensions: &dimensions,
    };
    let mut f = if extension {
        FitsFile::create(path).open().expect("create")
    } else {
        FitsFile::create(path)
            .with_custom_primary(&description)
            .open()
            .expect("create")
    };
    let hdu = if extension {
        let var = f
            .create_image(
                "VAR",
                &ImageDescription {
                    data_type: ImageType::Float,
                    dimensions: &[30, 40],
                },
            )
            .expect("VAR");
        var.write_image(&mut f, &[1.5f32; 1200]).expect("VAR data");
        f.create_image("SCI", &description).expect("SCI")
    } else {
        f.primary_hdu().expect("primary")
    };
    for (k, v) in [("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN")] {
        hdu.write_key(&mut f, k, v).expect("key");
    }
    for (k, v) in [
        ("CRPIX1", nx as f64 / 2.0 + 0.5),
        ("CRPIX2", ny as f64 / 2.0 + 0.5),
        ("CRVAL1", RA),
        ("CRVAL2", DEC),
        ("CDELT1", -PIXEL_DEG),
        ("CDELT2", PIXEL_DEG),
    ] {
        hdu.write_key(&mut f, k, v).expect("key");
    }
    let value = |i: usize| (i as i64 * 7 + seed * 13) % 251 + 1;
    let n = nx * ny;
    match pixels {
        Pixels::U8 => write(&mut f, &hdu, (0..n).map(|i| value(i) as u8).collect()),
        Pixels::I16 => write(
            &mut f,
            &hdu,
            (0..n).map(|i| value(i) as i16 - 120).collect(),
        ),
        Pixels::I32 => write(
            &mut f,
            &hdu,
            (0..n).map(|i| value(i) as i32 * 70_001).collect(),
        ),
        Pixels::F32 => write(
            &mut f,
            &hdu,
            (0..n).map(|i| value(i) as f32 * 0.25).collect(),
        ),
        Pixels::F64 => write(
            &mut f,
            &hdu,
            (0..n).map(|i| value(i) as f64 / 3.0).collect(),
        ),
        Pixels::ScaledI16 => {
            let stored: Vec<i16> = (0..n)
                .map(|i| if i % 97 == 0 { -999 } else { value(i) as i16 })
                .collect();
            write(&mut f, &hdu, stored);
            // Written after the pixels, so the stored values are the ones above.
            hdu.write_key(&mut f, "BSCALE", 0.5).expect("BSCALE");
            hdu.write_key(&mut f, "BZERO", 100.0).expect("BZERO");
            hdu.write_key(&mut f, "BLANK", -999i64).expect("BLANK");
        }
    }
}

fn write<T: WriteImage>(f: &mut FitsFile, hdu: &fitsio::hdu::FitsHdu, data: Vec<T>) {
    hdu.write_image(f, &data).expect("pixels");
}

/// The sky position of pixel (`x`, `y`) of an image made by [`write_image`] (near its centre
/// the TAN projection is this close to linear; both paths cut the same stencil anyway).
fn sky_of(nx: usize, ny: usize, x: f64, y: f64) -> (f64, f64) {
    let dx = x - (nx as f64 - 1.0) / 2.0;
    let dy = y - (ny as f64 - 1.0) / 2.0;
    (
        RA - dx * PIXEL_DEG / DEC.to_radians().cos(),
        DEC + dy * PIXEL_DEG,
    )
}

/// The cutout's bytes from `/sync`, which must redirect to it.
fn cutout(app: &TestApp, caller: Option<&str>, params: &[(&str, &str)]) -> Vec<u8> {
    let r = sync(app, caller, params);
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    let file = app.get_url(&location(&r));
    assert_eq!(file.status(), 200);
    file.bytes().expect("body").to_vec()
}

/// `/sync` as the user `reader` (named by the ingress), with `token` as the delegated token.
fn sync(
    app: &TestApp,
    token: Option<&str>,
    params: &[(&str, &str)],
) -> reqwest::blocking::Response {
    let mut headers = vec![("x-auth-request-user", "reader")];
    if let Some(token) = token {
        headers.push(("x-auth-request-token", token));
    }
    app.as_caller(&headers).get("/sync", params)
}

/// A cutout file with the cards that name the source (`SKYCSRC`) and the time (`DATE`) blanked:
/// everything else, pixels included, must match byte for byte.
fn comparable(mut bytes: Vec<u8>) -> Vec<u8> {
    for card in bytes.chunks_mut(80) {
        if card.starts_with(b"DATE    =") || card.starts_with(b"SKYCSRC =") {
            card.fill(b' ');
        }
    }
    bytes
}

/// The sum of the samples of `metric` whose labels contain `label`, from `/metrics`.
fn metric(app: &TestApp, metric: &str, label: &str) -> f64 {
    let text = reqwest::blocking::get(format!("{}/metrics", app.root()))
        .expect("metrics")
        .text()
        .expect("text");
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The cutout of the local copy `butler://test/{image}` for `stencil` (a CIRCLE), which
/// `remote` must match byte for byte but for the cards naming source and time.
fn assert_same_as_local(app: &TestApp, remote: Vec<u8>, image: &str, stencil: &str) {
    let local = cutout(
        app,
        None,
        &[
            ("ID", &format!("butler://{LOCAL}/{image}")),
            ("CIRCLE", stencil),
        ],
    );
    assert!(
        comparable(remote) == comparable(local),
        "{image} {stencil}: the cutout read by ranges differs from the local one"
    );
}

/// An embedded app whose repository `cold` is the prefix `survey` of the bucket `images` of
/// the S3 server at `endpoint`. It does not index its repositories: the tests count the
/// requests that cutouts make to the store.
fn s3_app(endpoint: &str) -> AppBuilder {
    app()
        .topology(Topology::Embedded)
        .config("INDEX__ENABLED", "false")
        .config("BUCKET__S3_ENDPOINT", endpoint)
        .config("BUCKET__S3_REGION", "us-east-1")
        .config("BUCKET__S3_ACCESS_KEY_ID", "testing")
        .config("BUCKET__S3_SECRET_ACCESS_KEY", "testing")
        .config("BUCKET__MAX_RETRIES", "0")
        .config(&format!("REPOSITORIES__{REMOTE}"), "s3://images/survey")
}

#[test]
fn cutouts_read_by_ranges_are_byte_identical_to_local_ones() {
    let moto = Moto::start();
    moto.create_bucket("images");
    let served = tempfile::tempdir().expect("tempdir");
    let server = ImageServer::start(served.path().to_path_buf(), &[TOKEN]);
    let app = s3_app(&moto.endpoint)
        .config("AUTH__MODE", "ingress")
        .config(&format!("REPOSITORIES__{SERVED}"), &server.url)
        .start();
    let (nx, ny) = (300, 200);
    let images = [
        ("b8", Pixels::U8, false),
        ("b16", Pixels::I16, false),
        ("b32", Pixels::I32, false),
        ("bm32", Pixels::F32, false),
        ("bm64", Pixels::F64, false),
        ("scaled", Pixels::ScaledI16, false),
        ("mef", Pixels::F32, true),
    ];
    for (name, pixels, extension) in images {
        let path = app.dir.path().join(format!("images/{name}.fits"));
        write_image(&path, pixels, nx, ny, extension, 3);
        let bytes = std::fs::read(&path).expect("image");
        std::fs::write(served.path().join(format!("{name}.fits")), &bytes).expect("serve");
        moto.put_object("images", &format!("survey/{name}.fits"), bytes);
    }
    let (ra, dec) = sky_of(nx, ny, 120.0, 80.0);
    let inside = circle(ra, dec, 12.0);
    let (ra, dec) = sky_of(nx, ny, 0.0, 0.0);
    let corner = circle(ra, dec, 15.0);
    let mut cases: Vec<(String, &str)> = images
        .iter()
        .filter(|(_, _, extension)| !extension)
        .map(|(name, ..)| ((*name).to_owned(), inside.as_str()))
        .collect();
    cases.push(("mef?ext=SCI".to_owned(), inside.as_str()));
    cases.push(("bm32".to_owned(), corner.as_str()));
    cases.push(("scaled".to_owned(), corner.as_str()));
    for remote in [REMOTE, SERVED] {
        for (id, stencil) in &cases {
            let got = cutout(
                &app,
                Some(TOKEN),
                &[
                    ("ID", &format!("butler://{remote}/{id}")),
                    ("CIRCLE", stencil),
                ],
            );
            assert_same_as_local(&app, got, id, stencil);
        }
    }
    // Every one came by ranges: nothing was downloaded whole, and the image server was only
    // ever asked for ranges.
    assert!(metric(&app, "skycut_source_fetched_bytes_total", "path=\"range\"") > 0.0);
    assert_eq!(
        metric(&app, "skycut_source_fetched_bytes_total", "path=\"whole\""),
        0.0
    );
    let log = server.log();
    assert!(
        !log.is_empty() && log.iter().all(|s| s.status == 206),
        "{log:?}"
    );
    // An extension the walk does not find goes to the whole-file path, which names it.
    let r = sync(
        &app,
        None,
        &[
            ("ID", &format!("butler://{REMOTE}/mef?ext=NOPE")),
            ("CIRCLE", &inside),
        ],
    );
    assert!(r.status().is_client_error(), "{}", r.status());
}

#[test]
fn a_cold_range_read_from_a_distant_store_takes_three_round_trips() {
    // The proxy answers in rounds, 20 ms after a round's first request and once no request has
    // come for 200 ms (far longer than the worker takes to send what it sends together, on a
    // loaded machine too), and once moto has answered them all: so what is counted is the
    // worker's round trips, not moto's speed. (`skycut bench --s3-latency-ms` measures the
    // time.)
    let moto = Moto::start();
    moto.create_bucket("images");
    let proxy = DelayingProxy::start(
        &moto.endpoint,
        Duration::from_millis(20),
        Duration::from_millis(200),
    );
    let app = s3_app(&proxy.url).start();
    // Rows as long as the 4096 x 4096 float32 image (16 KiB apart, so the 100 rows of
    // a 100 x 100 cutout are 100 ranges), a quarter as many of them.
    let (nx, ny) = (4096, 1024);
    let path = app.dir.path().join("images/wide.fits");
    write_image(&path, Pixels::F32, nx, ny, false, 5);
    moto.put_object(
        "images",
        "survey/wide.fits",
        std::fs::read(&path).expect("image"),
    );
    let (ra, dec) = sky_of(nx, ny, 1500.0, 600.0);
    let small = circle(ra, dec, 50.0);
    let remote = cutout(
        &app,
        None,
        &[("ID", "butler://cold/wide"), ("CIRCLE", &small)],
    );
    let log = proxy.log();
    // One header read, then about 100 rows, each its own range, at most 64 in flight: 1 + 2
    // round trips.
    assert!(
        (100..=103).contains(&log.len()),
        "{} requests: {log:?}",
        log.len()
    );
    assert!(log.iter().all(|e| e.request.starts_with("GET ")), "{log:?}");
    assert_eq!(proxy.round_trips(), 3, "{log:?}");
    assert_eq!(
        metric(&app, "skycut_source_requests_total", "path=\"range\""),
        log.len() as f64
    );
    assert_same_as_local(&app, remote, "wide", &small);

    // The header is kept: a second cutout of the image is its rows alone, one round trip.
    proxy.clear_log();
    let (ra, dec) = sky_of(nx, ny, 3000.0, 200.0);
    cutout(
        &app,
        None,
        &[
            ("ID", "butler://cold/wide"),
            ("CIRCLE", &circle(ra, dec, 10.0)),
        ],
    );
    let log = proxy.log();
    assert!(
        (19..=23).contains(&log.len()),
        "{} requests: {log:?}",
        log.len()
    );
    assert_eq!(proxy.round_trips(), 1, "{log:?}");
}

/// An image server holding a 4096 × 4096 float32 image (64 MiB) for one token, and an app that
/// reads it as `butler://cold/big` (and the same file as `butler://test/big`). Embedded in either
/// topology: the bytes fetched are read from the worker's metrics, which `serve` serves at its
/// own `/metrics`.
fn big_image_server() -> (ImageServer, TestApp, tempfile::TempDir) {
    let served = tempfile::tempdir().expect("tempdir");
    let server = ImageServer::start(served.path().to_path_buf(), &[TOKEN]);
    let app = app()
        .topology(Topology::Embedded)
        .config("AUTH__MODE", "ingress")
        .config("BUCKET__MAX_RETRIES", "0")
        .config(&format!("REPOSITORIES__{REMOTE}"), &server.url)
        .start();
    let local = app.dir.path().join("images/big.fits");
    write_image(&local, Pixels::F32, 4096, 4096, false, 1);
    std::fs::copy(&local, served.path().join("big.fits")).expect("serve image");
    (server, app, served)
}

fn fetched(app: &TestApp, path: &str) -> f64 {
    metric(
        app,
        "skycut_source_fetched_bytes_total",
        &format!("path=\"{path}\""),
    )
}

#[test]
fn a_small_cutout_of_a_large_image_fetches_a_small_part_of_it() {
    let (server, app, _served) = big_image_server();
    let (ra, dec) = sky_of(4096, 4096, 1000.0, 3000.0);
    let small = circle(ra, dec, 50.0);
    let remote = cutout(
        &app,
        Some(TOKEN),
        &[("ID", "butler://cold/big"), ("CIRCLE", &small)],
    );
    let log = server.log();
    let served: u64 = log.iter().map(|s| s.bytes).sum();
    assert!(
        served < 1 << 20,
        "{served} bytes served for a 100 x 100 cutout: {log:?}"
    );
    assert!(
        log.iter().all(|s| s.range.is_some() && s.status == 206),
        "{log:?}"
    );
    // The worker counts exactly what the server sent.
    assert_eq!(fetched(&app, "range"), served as f64);
    assert_eq!(fetched(&app, "whole"), 0.0);
    assert_same_as_local(&app, remote, "big", &small);

    // A cutout as wide as the image: its rows are contiguous, one range of about its own size
    // (the header is known by now).
    server.clear_log();
    let (west, _) = sky_of(4096, 4096, 4150.0, 0.0);
    let (east, _) = sky_of(4096, 4096, -50.0, 0.0);
    let (_, south) = sky_of(4096, 4096, 0.0, 2000.0);
    let (_, north) = sky_of(4096, 4096, 0.0, 2040.0);
    let band = format!("RANGE {west} {east} {south} {north}");
    let wide = cutout(
        &app,
        Some(TOKEN),
        &[("ID", "butler://cold/big"), ("POS", &band)],
    );
    let served: u64 = server.log().iter().map(|s| s.bytes).sum();
    let size = wide.len() as u64;
    assert!(
        served >= 4096 * 4 * 40 && served <= size && size - served < 5 * 2880,
        "{served} bytes served for a cutout file of {size} bytes"
    );
    assert_eq!(server.log().len(), 1, "{:?}", server.log());

    // A third cutout of the same image within the window downloads it whole, and the next one
    // reads the cached copy (one HEAD: the server says whether this reader may, and the
    // version).
    server.clear_log();
    let third = cutout(
        &app,
        Some(TOKEN),
        &[("ID", "butler://cold/big"), ("CIRCLE", &small)],
    );
    assert!(
        comparable(third.clone())
            == comparable(cutout(
                &app,
                None,
                &[("ID", "butler://test/big"), ("CIRCLE", &small)]
            ))
    );
    let whole = std::fs::metadata(app.dir.path().join("images/big.fits")).expect("size");
    assert_eq!(fetched(&app, "whole"), whole.len() as f64);
    server.clear_log();
    cutout(
        &app,
        Some(TOKEN),
        &[("ID", "butler://cold/big"), ("CIRCLE", &small)],
    );
    let log = server.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].method, "HEAD");
}

#[test]
fn an_object_that_changes_during_a_read_is_read_again_never_mixed() {
    let (server, app, served) = big_image_server();
    let (nx, ny) = (300, 200);
    let dir = app.dir.path().join("images");
    write_image(&dir.join("v1.fits"), Pixels::F32, nx, ny, false, 1);
    write_image(&dir.join("v2.fits"), Pixels::F32, nx, ny, false, 2);
    let v1 = std::fs::read(dir.join("v1.fits")).expect("v1");
    let v2 = std::fs::read(dir.join("v2.fits")).expect("v2");
    std::fs::write(served.path().join("img.fits"), &v1).expect("serve");
    let (ra, dec) = sky_of(nx, ny, 150.0, 100.0);
    let stencil = circle(ra, dec, 10.0);
    let run = |id: &str, token: Option<&str>| {
        let id = format!("butler://{id}");
        sync(&app, token, &[("ID", &id), ("CIRCLE", &stencil)])
    };
    // The header is read from v1, then the object becomes v2: the rows' If-Match fails and the
    // read starts again, all on v2.
    server.replace_after_requests("img.fits", vec![v2.clone()]);
    let r = run("cold/img", Some(TOKEN));
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    let got = comparable(app.get_url(&location(&r)).bytes().expect("body").to_vec());
    let r = run("test/v2", None);
    assert_eq!(r.status(), 303);
    let want = comparable(app.get_url(&location(&r)).bytes().expect("body").to_vec());
    assert!(got == want, "the cutout is not the new version's");
    assert!(
        server.log().iter().any(|s| s.status == 412),
        "{:?}",
        server.log()
    );

    // An object that changes after every request fails as transient after one more try (the
    // kept header is stale at once, then the fresh one too).
    server.replace("img.fits", v1.clone());
    server.replace_after_requests(
        "img.fits",
        vec![v2.clone(), v1.clone(), v2.clone(), v2.clone()],
    );
    let r = run("cold/img", Some(TOKEN));
    assert_eq!(r.status(), 503);
    let text = r.text().expect("body");
    assert!(text.contains("changed while it was being read"), "{text}");

    // A server that ignores If-Match answers the rows from the new version, under its new
    // ETag: that is seen, and the read starts again on the new version.
    std::fs::write(served.path().join("other.fits"), &v1).expect("serve");
    server.ignore_if_match(true);
    server.clear_log();
    server.replace_after_requests("other.fits", vec![v2]);
    let r = run("cold/other", Some(TOKEN));
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    let got = comparable(app.get_url(&location(&r)).bytes().expect("body").to_vec());
    assert!(got == want, "the cutout is not the new version's");
    let log = server.log();
    assert!(log.iter().all(|s| s.status == 206), "{log:?}");
    // Header, rows (refused on their ETag), header again, rows.
    assert!(log.len() >= 4, "{log:?}");
}

#[test]
fn a_server_that_answers_short_fails_the_cutout_as_transient() {
    let (server, app, _served) = big_image_server();
    let (ra, dec) = sky_of(4096, 4096, 100.0, 100.0);
    let small = circle(ra, dec, 5.0);
    // Fewer bytes than its own Content-Range says, then a consistent answer to a shorter range
    // than asked: each is a transient failure, never a cutout.
    for (how, says) in [
        (ShortReads::Body, "short read"),
        (ShortReads::Range, "Requested 0..28800, got 0..28799"),
    ] {
        server.send_short_reads(how);
        server.clear_log();
        let r = sync(
            &app,
            Some(TOKEN),
            &[("ID", "butler://cold/big"), ("CIRCLE", &small)],
        );
        assert_eq!(r.status(), 503, "{how:?}");
        let text = r.text().expect("body");
        assert!(text.starts_with("ServiceUnavailable"), "{how:?}: {text}");
        assert!(text.contains(says), "{how:?}: {text}");
        assert!(!server.log().is_empty());
    }
    // Whole answers again: the same cutout is made.
    server.send_short_reads(ShortReads::Off);
    cutout(
        &app,
        Some(TOKEN),
        &[("ID", "butler://cold/big"), ("CIRCLE", &small)],
    );
}
