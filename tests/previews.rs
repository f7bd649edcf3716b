//! `RESPONSEFORMAT=image/png` and `image/jpeg`: a preview of each cutout, listed before the
//! FITS results, and what a sync request redirects to.

use fitsio::FitsFile;
use fitsio::hdu::HduInfo;

use crate::common::*;

/// Decodes a PNG body: (width, height, colour type).
fn decode(bytes: &[u8]) -> (u32, u32, png::ColorType) {
    let reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .expect("a valid PNG");
    let info = reader.info();
    (info.width, info.height, info.color_type)
}

/// Decodes a JPEG body: (width, height, pixel format).
fn decode_jpeg(bytes: &[u8]) -> (u32, u32, jpeg_decoder::PixelFormat) {
    assert_eq!(&bytes[..2], [0xFF, 0xD8], "no JPEG SOI marker");
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.decode().expect("a valid JPEG");
    let info = decoder.info().expect("JPEG info");
    (
        u32::from(info.width),
        u32::from(info.height),
        info.pixel_format,
    )
}

/// (width, height) of the `CUTOUT` extension of a downloaded FITS result.
fn fits_size(app: &TestApp, url: &str) -> (u32, u32) {
    let r = app.get_url(url);
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), "application/fits");
    let path = app.dir.path().join("preview-source.fits");
    std::fs::write(&path, r.bytes().expect("body")).expect("write");
    let mut f = FitsFile::open(&path).expect("open");
    let hdu = f.hdu("CUTOUT").expect("CUTOUT");
    let HduInfo::ImageInfo { shape, .. } = &hdu.info else {
        panic!("not an image: {:?}", hdu.info);
    };
    (shape[1] as u32, shape[0] as u32)
}

/// Runs a one-pair job with `RESPONSEFORMAT=format`, checks that its results are the preview
/// then the FITS cutout, and returns the preview's bytes and the cutout's (width, height).
fn preview_job(app: &TestApp, format: &str) -> (Vec<u8>, (u32, u32)) {
    let id = app.create_job(&[
        ("ID", IMAGE),
        ("CIRCLE", &circle(RA, DEC, 20.0)),
        ("RESPONSEFORMAT", format),
        ("PHASE", "RUN"),
    ]);
    let doc = app.wait_final(&id);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    assert_eq!(attributes(&doc, "uws:result", "id"), ["preview", "result"]);
    assert_eq!(
        attributes(&doc, "uws:result", "mime-type"),
        [format, "application/fits"]
    );
    let hrefs = attributes(&doc, "uws:result", "xlink:href");
    let r = app.get_url(&hrefs[0]);
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), format);
    let preview = r.bytes().expect("body").to_vec();
    (preview, fits_size(app, &hrefs[1]))
}

#[test]
fn a_png_job_lists_the_preview_first_and_it_decodes_at_the_cutout_size() {
    let app = spawn_app();
    let (png, cutout_size) = preview_job(&app, "image/png");
    let (width, height, colour) = decode(&png);
    assert_eq!((width, height), cutout_size);
    assert_eq!(colour, png::ColorType::GrayscaleAlpha);
}

#[test]
fn a_jpeg_job_lists_the_preview_first_and_it_decodes_at_the_cutout_size() {
    let app = spawn_app();
    let (jpeg, cutout_size) = preview_job(&app, "image/jpeg");
    let (width, height, format) = decode_jpeg(&jpeg);
    assert_eq!((width, height), cutout_size);
    assert_eq!(format, jpeg_decoder::PixelFormat::L8);
}

#[test]
fn several_pairs_get_one_preview_each_before_the_fits_results() {
    let app = spawn_app();
    let id = app.create_job(&[
        ("ID", IMAGE),
        ("CIRCLE", &circle(RA, DEC, 10.0)),
        ("CIRCLE", &circle(RA, DEC, 5.0)),
        ("RESPONSEFORMAT", "image/png"),
        ("PHASE", "RUN"),
    ]);
    let doc = app.wait_final(&id);
    assert_eq!(
        attributes(&doc, "uws:result", "id"),
        ["preview-1", "preview-2", "cutout-1", "cutout-2", "cutouts"],
        "{doc}"
    );
}

#[test]
fn sync_png_redirects_to_the_preview() {
    let app = spawn_app();
    let r = app.get(
        "/sync",
        &[
            ("ID", IMAGE),
            ("CIRCLE", &circle(RA, DEC, 20.0)),
            ("RESPONSEFORMAT", "image/png"),
        ],
    );
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    let r = app.get_url(&location(&r));
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), "image/png");
    let body = r.bytes().expect("body");
    assert_eq!(&body[..8], b"\x89PNG\r\n\x1a\n");
    let (width, height, _) = decode(&body);
    assert!(width > 30 && height > 30, "{width}x{height}");
}

#[test]
fn sync_jpeg_redirects_to_the_jpeg_preview() {
    let app = spawn_app();
    let r = app.get(
        "/sync",
        &[
            ("ID", IMAGE),
            ("CIRCLE", &circle(RA, DEC, 20.0)),
            ("RESPONSEFORMAT", "image/jpeg"),
        ],
    );
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    let r = app.get_url(&location(&r));
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(&r), "image/jpeg");
    let (width, height, _) = decode_jpeg(&r.bytes().expect("body"));
    assert!(width > 30 && height > 30, "{width}x{height}");
}

#[test]
fn an_unknown_responseformat_is_a_usage_error() {
    let app = spawn_app();
    let r = app.get(
        "/sync",
        &[
            ("ID", IMAGE),
            ("CIRCLE", &circle(RA, DEC, 20.0)),
            ("RESPONSEFORMAT", "image/gif"),
        ],
    );
    assert_eq!(r.status(), 400);
    assert!(r.text().expect("body").contains("UsageError"));
}
