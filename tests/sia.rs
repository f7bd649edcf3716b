//! SIA 2.0 discovery from the sky index that `skycut serve` builds in the background, and
//! `skycut index` re-reading only what changed, from directories and from bucket prefixes (moto).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fitsio::FitsFile;
use fitsio::images::{ImageDescription, ImageType};

use crate::common::moto::Moto;
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

/// The configuration keys (as `SKYCUT_` variables) that reach the S3 server at `endpoint`.
fn s3_settings(endpoint: &str) -> Vec<(String, String)> {
    [
        ("BUCKET__S3_ENDPOINT", endpoint),
        ("BUCKET__S3_REGION", "us-east-1"),
        ("BUCKET__S3_ACCESS_KEY_ID", "testing"),
        ("BUCKET__S3_SECRET_ACCESS_KEY", "testing"),
        ("BUCKET__MAX_RETRIES", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (format!("SKYCUT_{k}"), v.to_owned()))
    .collect()
}

/// Writes a file of an empty primary HDU and two 200 × 200 float32 extensions, `BLUE` and `RED`,
/// each with a TAN WCS of its own: `RED`'s header lies past `BLUE`'s data.
fn write_two_extensions(path: &Path) {
    let mut f = FitsFile::create(path).open().expect("create");
    for (name, ra) in [("BLUE", 40.0), ("RED", 40.1)] {
        let hdu = f
            .create_image(
                name,
                &ImageDescription {
                    data_type: ImageType::Float,
                    dimensions: &[200, 200],
                },
            )
            .expect("extension");
        hdu.write_image(&mut f, &vec![1.0f32; 200 * 200])
            .expect("pixels");
        for (k, v) in [("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN")] {
            hdu.write_key(&mut f, k, v).expect("key");
        }
        for (k, v) in [
            ("CRPIX1", 100.5),
            ("CRPIX2", 100.5),
            ("CRVAL1", ra),
            ("CRVAL2", -20.0),
            ("CDELT1", -PIXEL_DEG),
            ("CDELT2", PIXEL_DEG),
        ] {
            hdu.write_key(&mut f, k, v).expect("key");
        }
    }
}

/// Writes the demo images, a multi-extension file (`mef`: extensions `BLUE` and `RED`) and a
/// tile-compressed copy of the M31 demo image (`packed.fits.fz`) into `dir`, and the same files
/// under `survey/` of the bucket `images`, with a corrupt `survey/broken.fits` beside them in the
/// bucket only.
fn images_here_and_in_the_bucket(moto: &Moto, dir: &Path) {
    moto.create_bucket("images");
    let demo = soda::write_demo_repository(dir).expect("demo images");
    write_two_extensions(&dir.join("mef.fits"));
    crate::buckets::tile_compressed(&dir.join("m31.fits"), &dir.join("packed.fits.fz"));
    for entry in std::fs::read_dir(dir).expect("list") {
        let entry = entry.expect("entry");
        let file = entry.file_name().into_string().expect("name");
        let bytes = std::fs::read(entry.path()).expect("image");
        moto.put_object("images", &format!("survey/{file}"), bytes);
    }
    moto.put_object(
        "images",
        "survey/broken.fits",
        b"SIMPLE  = nonsense".to_vec(),
    );
    assert_eq!(demo.len(), 3, "the counts below assume three demo images");
}

/// What [`images_here_and_in_the_bucket`] writes into the directory: three demo images, `mef`
/// (one file, two images) and `packed` (one image).
const FILES_HERE: usize = 5;
const IMAGES_HERE: usize = 6;

/// The rows of an SIA answer by image ID, each a map from column name to value.
fn rows_by_id(doc: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let names = attributes(doc, "FIELD", "name");
    rows(doc)
        .into_iter()
        .map(|row| {
            let cells: BTreeMap<String, String> = names.iter().cloned().zip(row).collect();
            (cells["obs_publisher_did"].clone(), cells)
        })
        .collect()
}

#[test]
fn images_in_a_bucket_prefix_are_found_with_the_footprints_of_the_same_images_in_a_directory() {
    let moto = Moto::start();
    let local = tempfile::tempdir().expect("tempdir");
    images_here_and_in_the_bucket(&moto, local.path());
    let mut builder = app()
        .topology(Topology::Embedded)
        .config("REPOSITORIES__COLD", "s3://images/survey")
        .config("REPOSITORIES__HERE", &local.path().display().to_string());
    for (key, value) in s3_settings(&moto.endpoint) {
        builder = builder.config(&key["SKYCUT_".len()..], &value);
    }
    let app = builder.start();
    let expected = IMAGES_HERE;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (cold, here) = loop {
        let query = |collection: &str| {
            let r = app.get("/sia/query", &[("COLLECTION", collection)]);
            assert_eq!(r.status(), 200);
            rows_by_id(&r.text().expect("body"))
        };
        let (cold, here) = (query("cold"), query("here"));
        if cold.len() >= expected && here.len() >= expected {
            break (cold, here);
        }
        assert!(
            Instant::now() < deadline,
            "not indexed: {:?} and {:?}",
            cold.keys(),
            here.keys()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(cold.len(), expected, "{:?}", cold.keys());
    for (id, row) in &here {
        let twin = id.replace("butler://here/", "butler://cold/");
        let remote = cold
            .get(&twin)
            .unwrap_or_else(|| panic!("{twin} not indexed"));
        for column in ["s_region", "s_ra", "s_dec", "s_fov", "s_xel1", "s_xel2"] {
            assert_eq!(remote[column], row[column], "{twin}: {column}");
        }
        // Four corners, as numbers (the column's xtype says polygon).
        assert_eq!(row["s_region"].split_whitespace().count(), 8, "{id}");
    }
    assert!(
        cold.contains_key("butler://cold/mef?ext=RED"),
        "{:?}",
        cold.keys()
    );
    // A position finds the image and its compressed copy in both places, and a cutout of the
    // remote one can be made.
    let doc = app
        .get("/sia/query", &[("POS", "CIRCLE 10.684708 41.26875 0.01")])
        .text()
        .expect("body");
    let found: Vec<String> = rows_by_id(&doc).into_keys().collect();
    assert_eq!(
        found,
        [
            "butler://cold/m31",
            "butler://cold/packed",
            "butler://here/m31",
            "butler://here/packed"
        ],
        "{doc}"
    );
    let r = app.get(
        "/sync",
        &[
            ("ID", "butler://cold/m31"),
            ("CIRCLE", "10.684708 41.26875 0.01"),
        ],
    );
    assert_eq!(r.status(), 303, "{:?}", r.text());
}

/// Runs `skycut index` on `repositories` (`NAME=LOCATION`) into the SQLite file in `dir`, with
/// `env` set; its status and its report.
fn skycut_index(dir: &Path, repositories: &[String], env: &[(String, String)]) -> (bool, String) {
    let database = format!("sqlite://{}?mode=rwc", dir.join("index.sqlite").display());
    let mut command = Command::new(env!("CARGO_BIN_EXE_skycut"));
    command
        .args(["index", "--database-url", &database])
        .env("SKYCUT_DATA_DIR", dir.join("data"))
        .env("RUST_LOG", "warn");
    for repository in repositories {
        command.args(["--repository", repository]);
    }
    let out = command
        .envs(env.iter().cloned())
        .output()
        .expect("skycut index");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.success(),
        format!("{report}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn skycut_index_reads_a_bucket_prefix_by_headers_once_and_lists_corrupt_objects() {
    let moto = Moto::start();
    let local = tempfile::tempdir().expect("tempdir");
    images_here_and_in_the_bucket(&moto, local.path());
    let dir = tempfile::tempdir().expect("tempdir");
    let env = s3_settings(&moto.endpoint);
    let cold = vec!["cold=s3://images/survey".to_owned()];
    let (ok, first) = skycut_index(dir.path(), &cold, &env);
    assert!(ok, "{first}");
    // Every image located, the corrupt object listed as unusable. One request per demo image
    // (its header is in the first read), two for `mef` (its second extension's header is past
    // the first one's data), one each for `packed` and the corrupt object (too short to hold a
    // header), which are read whole.
    assert!(
        first.contains(&format!(
            "{} files read ({IMAGES_HERE} images located, 1 unusable)",
            FILES_HERE + 1
        )),
        "{first}"
    );
    assert!(
        first.contains("7 requests to buckets") && first.contains("(2 objects read whole)"),
        "{first}"
    );
    // Unchanged: no object is read again.
    let (ok, second) = skycut_index(dir.path(), &cold, &env);
    assert!(ok, "{second}");
    assert!(
        second.contains("0 files read")
            && second.contains(&format!(
                "{} files unchanged, 0 removed, 0 failed",
                FILES_HERE + 1
            ))
            && second.contains("0 requests to buckets"),
        "{second}"
    );
    // A replaced object is read again, a deleted one forgotten. (The replacement has another
    // size: S3 gives modification times to the second, and the stamp is size and time.)
    let mef = std::fs::read(local.path().join("mef.fits")).expect("mef");
    moto.put_object("images", "survey/m31.fits", mef);
    moto.delete_object("images", "survey/equator.fits");
    let (ok, third) = skycut_index(dir.path(), &cold, &env);
    assert!(ok, "{third}");
    assert!(
        third.contains("1 files read (2 images located, 0 unusable)")
            && third.contains(&format!("{} files unchanged, 1 removed", FILES_HERE - 1)),
        "{third}"
    );
}

#[test]
fn a_bucket_that_cannot_be_listed_fails_the_run_and_keeps_its_index_entries() {
    let moto = Moto::start();
    let local = tempfile::tempdir().expect("tempdir");
    images_here_and_in_the_bucket(&moto, local.path());
    let dir = tempfile::tempdir().expect("tempdir");
    let env = s3_settings(&moto.endpoint);
    let (ok, first) = skycut_index(dir.path(), &["cold=s3://images/survey".to_owned()], &env);
    assert!(ok, "{first}");
    // The same repository name on a bucket that does not exist, beside a directory: the
    // directory is indexed, the run fails, and nothing of `cold` is forgotten.
    let (ok, broken) = skycut_index(
        dir.path(),
        &[
            "cold=s3://no-such-bucket/survey".to_owned(),
            format!("here={}", local.path().display()),
        ],
        &env,
    );
    assert!(!ok, "{broken}");
    assert!(
        broken.contains(&format!("{FILES_HERE} files read"))
            && broken.contains("0 removed")
            && broken.contains("1 repositories failed to list"),
        "{broken}"
    );
    let (ok, again) = skycut_index(dir.path(), &["cold=s3://images/survey".to_owned()], &env);
    assert!(ok, "{again}");
    assert!(
        again.contains("0 files read")
            && again.contains(&format!("{} files unchanged, 0 removed", FILES_HERE + 1)),
        "{again}"
    );
}
