//! SIA 2.0 discovery from the sky index that `skycut serve` builds in the background, and
//! `skycut index` re-reading only what changed.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// Cells of the TABLEDATA rows of a VOTable, row by row.
fn rows(doc: &str) -> Vec<Vec<String>> {
    doc.split("<TR>")
        .skip(1)
        .map(|row| {
            let row = row.split("</TR>").next().unwrap_or_default();
            row.split("<TD>")
                .skip(1)
                .map(|c| c.split("</TD>").next().unwrap_or_default().to_owned())
                .collect()
        })
        .collect()
}

/// The position of column `name` among the FIELDs.
fn column(doc: &str, name: &str) -> usize {
    attributes(doc, "FIELD", "name")
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

/// Queries until the background index has located the test image (it answers as soon as the
/// first rows exist; an empty answer before that is not an error).
fn wait_for_index(app: &TestApp) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = app.get("/sia/query", &[("POS", "CIRCLE 150 2 0.01")]);
        assert_eq!(r.status(), 200);
        let doc = r.text().expect("body");
        if !rows(&doc).is_empty() || Instant::now() > deadline {
            return doc;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn votlint(doc: &str) {
    let file = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(file.path(), doc).expect("write");
    let out = Command::new("stilts")
        .args(["votlint", "validate=true", "version=1.4"])
        .arg(format!("votable={}", file.path().display()))
        .output()
        .expect("run stilts votlint");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && report.trim().is_empty(),
        "votlint: {report}\n{doc}"
    );
}

#[test]
fn sia_query_finds_the_image_covering_a_position_and_nothing_elsewhere() {
    let app = app().topology(Topology::Embedded).start();
    let doc = wait_for_index(&app);
    assert_valid(&doc, "VOTable-v1.4.xsd");
    votlint(&doc);
    let found = rows(&doc);
    assert_eq!(found.len(), 1, "{doc}");
    let row = &found[0];
    assert_eq!(row[column(&doc, "obs_publisher_did")], IMAGE);
    assert_eq!(row[column(&doc, "s_xel1")], "512");
    assert_eq!(
        row[column(&doc, "access_url")].replace("&amp;", "&"),
        app.url("/links?ID=butler%3A%2F%2Ftest%2Ffield")
    );
    let ra: f64 = row[column(&doc, "s_ra")].parse().expect("s_ra");
    assert!((ra - RA).abs() < 1e-6, "{ra}");
    // The DataLink document it points to is the image's.
    let links = app.get("/links", &[("ID", IMAGE)]);
    assert_eq!(links.status(), 200);

    // Just outside the image's edge (256 pixels of 1" from the centre), and far away.
    let edge = 256.0 * PIXEL_DEG;
    for pos in [
        format!("CIRCLE {} {} {}", RA + 1.5 * edge, DEC, 0.4 * edge),
        "CIRCLE 10 -40 1".to_owned(),
        format!(
            "POLYGON {} {} {} {} {} {}",
            RA,
            DEC + 1.2 * edge,
            RA + 0.01,
            DEC + 1.5 * edge,
            RA - 0.01,
            DEC + 1.5 * edge
        ),
    ] {
        let doc = app
            .get("/sia/query", &[("POS", pos.as_str())])
            .text()
            .expect("body");
        assert!(rows(&doc).is_empty(), "{pos}: {doc}");
    }
    // A circle that reaches over the edge, a RANGE, and no POS at all find it.
    for params in [
        vec![(
            "POS",
            format!("CIRCLE {} {} {}", RA + 1.5 * edge, DEC, 0.6 * edge),
        )],
        vec![("POS", "RANGE 149 151 1 3".to_owned())],
        vec![
            ("COLLECTION", "test".to_owned()),
            ("MAXREC", "5".to_owned()),
        ],
    ] {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let doc = app.get("/sia/query", &params).text().expect("body");
        assert_eq!(rows(&doc).len(), 1, "{params:?}: {doc}");
    }
    // The test image has no observation time: a TIME constraint excludes it; MAXREC=0 gives
    // the columns and an overflow flag.
    let doc = app
        .get(
            "/sia/query",
            &[("POS", "CIRCLE 150 2 0.01"), ("TIME", "50000 70000")],
        )
        .text()
        .expect("body");
    assert!(rows(&doc).is_empty(), "{doc}");
    let doc = app
        .get("/sia/query", &[("MAXREC", "0")])
        .text()
        .expect("body");
    assert!(
        doc.contains(r#"<INFO name="QUERY_STATUS" value="OVERFLOW"/>"#),
        "{doc}"
    );
    assert_valid(&doc, "VOTable-v1.4.xsd");
}

#[test]
fn sia_refuses_bad_parameters_with_usage_errors() {
    let app = app().topology(Topology::Embedded).start();
    for (name, value) in [
        ("TIME", "2024-01-01"),
        ("TIME", "60001 60000"),
        ("BAND", "red"),
        ("POS", "CIRCLE 10 95 1"),
        ("MAXREC", "many"),
    ] {
        let r = app.get("/sia/query", &[(name, value)]);
        assert_eq!(r.status(), 400, "{name}={value}");
        let body = r.text().expect("body");
        assert!(body.starts_with("UsageError"), "{name}={value}: {body}");
    }
}

#[test]
fn skycut_index_rereads_only_changed_files_and_lists_unusable_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).expect("dir");
    for (i, ra) in [10.0, 20.0, 30.0].iter().enumerate() {
        soda::write_synthetic_image(
            &images.join(format!("img{i}.fits")),
            &soda::SyntheticImage {
                nx: 64,
                ny: 64,
                ra_deg: *ra,
                dec_deg: 5.0,
                pixel_scale_deg: PIXEL_DEG,
            },
        )
        .expect("image");
    }
    std::fs::write(images.join("broken.fits"), b"SIMPLE  = nonsense").expect("write");
    let database = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("index.sqlite").display()
    );
    let index = || {
        let out = Command::new(env!("CARGO_BIN_EXE_skycut"))
            .args(["index", "--database-url", &database, "--repository"])
            .arg(format!("sky={}", images.display()))
            .env("RUST_LOG", "error")
            .output()
            .expect("skycut index");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = index();
    assert!(
        first.contains("4 files read (3 images located, 1 unusable)"),
        "{first}"
    );
    let second = index();
    assert!(
        second.contains("0 files read") && second.contains("4 files unchanged, 0 removed"),
        "{second}"
    );
    // A changed file is read again, a deleted one forgotten.
    soda::write_synthetic_image(
        &images.join("img0.fits"),
        &soda::SyntheticImage {
            nx: 65,
            ny: 64,
            ra_deg: 11.0,
            dec_deg: 5.0,
            pixel_scale_deg: PIXEL_DEG,
        },
    )
    .expect("image");
    std::fs::remove_file(images.join("img2.fits")).expect("remove");
    let third = index();
    assert!(
        third.contains("1 files read (1 images located, 0 unusable)")
            && third.contains("2 files unchanged, 1 removed"),
        "{third}"
    );
}

#[test]
fn a_circle_without_id_cuts_every_indexed_image_that_covers_its_centre() {
    let app = app()
        .topology(Topology::Embedded)
        .config("INDEX__MAX_EPOCHS", "1")
        .config("INDEX__RESCAN_INTERVAL", "1")
        .start();
    wait_for_index(&app);
    // Sync: the one covering image, cut.
    let r = app.get("/sync", &[("CIRCLE", "150 2 0.01")]);
    assert_eq!(r.status(), 303, "{:?}", r.text());
    let fits = app.get_url(&location(&r));
    assert_eq!(fits.status(), 200);
    assert!(fits.bytes().expect("body").starts_with(b"SIMPLE"));
    // No covering image: 204 sync, an ERROR job that says so async.
    let r = app.get("/sync", &[("CIRCLE", "10 -40 0.01")]);
    assert_eq!(r.status(), 204);
    let r = app.post("/jobs", &[("CIRCLE", "10 -40 0.01"), ("PHASE", "RUN")]);
    assert_eq!(r.status(), 303);
    let job = app.get_url(&location(&r)).text().expect("job");
    assert!(job.contains("<uws:phase>ERROR</uws:phase>"), "{job}");
    assert!(job.contains("no indexed image covers"), "{job}");
    // Over the epoch limit (the test image plus a twin at the same place, limit 1): refused
    // before any work, naming the limit; nothing is created.
    let twin = app.dir.path().join("images").join("twin.fits");
    soda::write_synthetic_image(
        &twin,
        &soda::SyntheticImage {
            nx: 64,
            ny: 64,
            ra_deg: RA,
            dec_deg: DEC,
            pixel_scale_deg: PIXEL_DEG,
        },
    )
    .expect("twin");
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows(
        &app.get("/sia/query", &[("POS", "CIRCLE 150 2 0.001")])
            .text()
            .expect("body"),
    )
    .len()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the re-scan did not index the twin"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let jobs_before = app.get("/jobs", &[]).text().expect("jobs");
    let r = app.get("/sync", &[("CIRCLE", "150 2 0.0001")]);
    assert_eq!(r.status(), 400);
    let body = r.text().expect("body");
    assert!(
        body.starts_with("UsageError") && body.contains("max_epochs"),
        "{body}"
    );
    assert_eq!(app.get("/jobs", &[]).text().expect("jobs"), jobs_before);
}

#[test]
fn a_light_curve_with_size_gives_stamps_of_exactly_that_size() {
    let app = app().topology(Topology::Embedded).start();
    wait_for_index(&app);
    let r = app.get("/sync", &[("CIRCLE", "150 2 0.001"), ("SIZE", "51")]);
    assert_eq!(r.status(), 303, "{:?}", r.text());
    let fits = app.get_url(&location(&r)).bytes().expect("body");
    let path = app.dir.path().join("light-curve.fits");
    std::fs::write(&path, &fits).expect("write");
    let mut f = fitsio::FitsFile::open(&path).expect("open");
    let stamps = f.num_hdus().expect("hdus") - 1;
    assert!(stamps >= 1);
    for n in 1..=stamps {
        let hdu = f.hdu(n).expect("hdu");
        let fitsio::hdu::HduInfo::ImageInfo { shape, .. } = &hdu.info else {
            panic!("HDU {n} is not an image")
        };
        assert_eq!(shape.as_slice(), &[51, 51], "HDU {n}");
    }
}
