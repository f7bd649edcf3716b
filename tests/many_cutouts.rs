//! Several IDs and stencils in one job (SODA: one result per (ID, stencil) pair), per-pair error
//! results for pairs that cannot be cut, the combined multi-extension result, and `MASK`.

use fitsio::FitsFile;
use fitsio::hdu::HduInfo;

use crate::common::*;

/// A circle that misses the test image entirely.
const ELSEWHERE: &str = "10 -40 0.01";

fn run_to_end(app: &TestApp, params: &[(&str, &str)]) -> String {
    let mut with_run = params.to_vec();
    with_run.push(("PHASE", "RUN"));
    let id = app.create_job(&with_run);
    let doc = app.wait_final(&id);
    assert_uws_valid(&doc);
    doc
}

fn fetch(app: &TestApp, url: &str) -> (String, Vec<u8>) {
    let r = app.get_url(url);
    assert_eq!(r.status(), 200);
    let kind = content_type(&r);
    (kind, r.bytes().expect("body").to_vec())
}

/// The pixels and (width, height) of every image extension of a FITS file.
fn images(app: &TestApp, bytes: &[u8]) -> Vec<(Vec<f32>, usize, usize)> {
    let path = app.dir.path().join(format!("dl-{}.fits", bytes.len()));
    std::fs::write(&path, bytes).expect("write");
    let mut f = FitsFile::open(&path).expect("open");
    let mut out = Vec::new();
    for i in 1..f.num_hdus().expect("hdus") {
        let hdu = f.hdu(i).expect("hdu");
        let HduInfo::ImageInfo { shape, .. } = &hdu.info else {
            panic!("not an image")
        };
        let (h, w) = (shape[0], shape[1]);
        out.push((hdu.read_image(&mut f).expect("pixels"), w, h));
    }
    std::fs::remove_file(&path).ok();
    out
}

#[test]
fn every_id_and_stencil_pair_is_a_result_and_a_missing_pair_is_an_error_result() {
    let app = spawn_app();
    let doc = run_to_end(
        &app,
        &[
            ("ID", IMAGE),
            ("CIRCLE", &circle(RA, DEC, 10.0)),
            ("POS", &format!("CIRCLE {ELSEWHERE}")),
            ("POLYGON", "149.999 1.999 150.001 1.999 150.001 2.001"),
        ],
    );
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("COMPLETED"),
        "{doc}"
    );
    assert_eq!(
        attributes(&doc, "uws:result", "id"),
        ["cutout-1", "cutout-2", "cutout-3", "cutouts"]
    );
    assert_eq!(
        attributes(&doc, "uws:result", "mime-type"),
        [
            "application/fits",
            "text/plain",
            "application/fits",
            "application/fits"
        ]
    );
    let hrefs = attributes(&doc, "uws:result", "xlink:href");
    let (kind, body) = fetch(&app, &hrefs[1]);
    assert!(kind.starts_with("text/plain"), "{kind}");
    let text = String::from_utf8(body).expect("utf-8");
    assert!(
        text.starts_with("UsageError: ") && text.contains("does not overlap"),
        "{text}"
    );
    let first = images(&app, &fetch(&app, &hrefs[0]).1);
    let third = images(&app, &fetch(&app, &hrefs[2]).1);
    let all = images(&app, &fetch(&app, &hrefs[3]).1);
    assert_eq!((first.len(), third.len(), all.len()), (1, 1, 2));
    assert_eq!(all[0], first[0]);
    assert_eq!(all[1], third[0]);
    assert!((21..=22).contains(&first[0].1) && (21..=22).contains(&first[0].2));
}

#[test]
fn a_job_none_of_whose_pairs_overlap_ends_in_error_and_sync_answers_204() {
    let app = spawn_app();
    let params = [
        ("ID", IMAGE),
        ("CIRCLE", ELSEWHERE),
        ("POS", "CIRCLE 200 30 0.01"),
    ];
    let doc = run_to_end(&app, &params);
    assert_eq!(
        element(&doc, "uws:phase").as_deref(),
        Some("ERROR"),
        "{doc}"
    );
    assert!(attributes(&doc, "uws:result", "id").is_empty());
    assert_eq!(app.get("/sync", &params).status(), 204);
}

#[test]
fn sync_with_several_pairs_redirects_to_the_first_cutout() {
    let app = spawn_app();
    let r = app.get(
        "/sync",
        &[
            ("ID", IMAGE),
            ("ID", IMAGE),
            ("CIRCLE", &circle(RA, DEC, 5.0)),
        ],
    );
    assert_eq!(r.status(), 303);
    let (kind, body) = fetch(&app, &location(&r));
    assert_eq!(kind, "application/fits");
    let cut = images(&app, &body);
    assert!((11..=12).contains(&cut[0].1) && (11..=12).contains(&cut[0].2));
}

#[test]
fn mask_blanks_the_pixels_outside_the_stencil() {
    let app = spawn_app();
    let stencil = circle(RA, DEC, 20.0);
    let plain = run_to_end(&app, &[("ID", IMAGE), ("CIRCLE", &stencil)]);
    let masked = run_to_end(
        &app,
        &[("ID", IMAGE), ("CIRCLE", &stencil), ("MASK", "true")],
    );
    let get = |doc: &str| {
        let href = &attributes(doc, "uws:result", "xlink:href")[0];
        images(&app, &fetch(&app, href).1).remove(0)
    };
    let ((plain, w, h), (masked, mw, mh)) = (get(&plain), get(&masked));
    assert_eq!((w, h), (mw, mh));
    let centre = (h / 2) * w + w / 2;
    assert_eq!(masked[centre], plain[centre]);
    assert!(masked[0].is_nan() && !plain[0].is_nan());
    let blanked = masked.iter().filter(|v| v.is_nan()).count();
    // Outside a disc in its bounding square: 1 - pi/4 of it, about 21 %.
    let share = blanked as f64 / masked.len() as f64;
    assert!((0.15..0.32).contains(&share), "{share}");
    for (m, p) in masked.iter().zip(&plain) {
        assert!(m.is_nan() || m == p);
    }
}
