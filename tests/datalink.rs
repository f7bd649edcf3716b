//! DataLink `{links}`: the document a client reads to find the SODA service for an image.

use crate::common::*;

/// The value of `attr` on the first `<PARAM name="NAME" …>` element.
fn param_attribute(doc: &str, name: &str, attr: &str) -> Option<String> {
    let open = format!("<PARAM name=\"{name}\"");
    let start = doc.find(&open)?;
    let tag_end = doc[start..].find('>')? + start;
    attributes(&doc[start..=tag_end], "PARAM", attr)
        .into_iter()
        .next()
}

/// The `MAX` value inside the `<PARAM name="NAME">` element.
fn param_max(doc: &str, name: &str) -> Option<String> {
    let start = doc.find(&format!("<PARAM name=\"{name}\""))?;
    let end = doc[start..].find("</PARAM>")? + start;
    attributes(&doc[start..end], "MAX", "value")
        .into_iter()
        .next()
}

fn numbers(s: &str) -> Vec<f64> {
    s.split_whitespace()
        .map(|w| w.parse().expect("number"))
        .collect()
}

#[test]
fn links_describe_a_soda_service_with_the_image_footprint() {
    let app = spawn_app();
    let r = app.get("/links", &[("ID", IMAGE)]);
    assert_eq!(r.status(), 200);
    assert_eq!(
        content_type(&r),
        "application/x-votable+xml;content=datalink"
    );
    let doc = r.text().expect("body");
    assert_valid(&doc, "VOTable-v1.4.xsd");
    assert!(doc.contains(r#"<RESOURCE type="meta" utype="adhoc:service" ID="cutout">"#));
    assert_eq!(
        param_attribute(&doc, "standardID", "value").as_deref(),
        Some("ivo://ivoa.net/std/SODA#sync-1.0")
    );
    assert_eq!(
        param_attribute(&doc, "accessURL", "value"),
        Some(app.url("/sync"))
    );
    // The ID comes from the row (W-SAVV-1: no value or VALUES beside the ref).
    assert_eq!(param_attribute(&doc, "ID", "ref").as_deref(), Some("ID"));
    assert_eq!(param_attribute(&doc, "ID", "value").as_deref(), Some(""));
    let id_param = &doc[doc.find(r#"<PARAM name="ID""#).expect("ID")..];
    assert!(!id_param[..id_param.find("</PARAM>").expect("end")].contains("VALUES"));
    // Every other parameter says what it accepts.
    let options = |name: &str| {
        let start = doc.find(&format!("<PARAM name=\"{name}\"")).expect(name);
        let end = doc[start..].find("</PARAM>").expect("end") + start;
        attributes(&doc[start..end], "OPTION", "value")
    };
    assert_eq!(
        options("RESPONSEFORMAT"),
        ["application/fits", "image/png", "image/jpeg"]
    );
    assert_eq!(options("MASK"), ["false", "true"]);
    // A 2-D image has no wavelength axis to offer BAND on.
    assert!(!doc.contains(r#"<PARAM name="BAND""#));
    // The enclosing circle of a 512 x 512 image of 1" pixels: its centre and half-diagonal.
    let circle = numbers(&param_max(&doc, "CIRCLE").expect("CIRCLE MAX"));
    assert_eq!(circle.len(), 3);
    assert!(
        (circle[0] - RA).abs() < 1e-6 && (circle[1] - DEC).abs() < 1e-6,
        "{circle:?}"
    );
    let half_diagonal = 256.0 * 2f64.sqrt() * PIXEL_DEG;
    assert!((circle[2] - half_diagonal).abs() < 1e-6, "{circle:?}");
    let polygon = numbers(&param_max(&doc, "POLYGON").expect("POLYGON MAX"));
    assert_eq!(polygon.len(), 8);
    for corner in polygon.chunks(2) {
        assert!((corner[0] - RA).abs() < 300.0 * PIXEL_DEG, "{polygon:?}");
        assert!((corner[1] - DEC).abs() < 300.0 * PIXEL_DEG, "{polygon:?}");
    }
}

#[test]
fn links_this_row_fetches_the_whole_image() {
    let app = spawn_app();
    let doc = app.get("/links", &[("ID", IMAGE)]).text().expect("body");
    // The first row is #this; its access_url is the second cell.
    let row = &doc[doc.find("<TR>").expect("a row")..];
    let cells: Vec<&str> = row
        .split("<TD>")
        .skip(1)
        .map(|c| c.split("</TD>").next().unwrap_or_default())
        .collect();
    assert_eq!(cells[4], "#this");
    let url = cells[1].replace("&amp;", "&");
    let r = app.get_url(&url);
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    let fits = app.get_url(&location(&r));
    assert_eq!(fits.status(), 200);
    let bytes = fits.bytes().expect("FITS");
    let file = app.dir.path().join("whole.fits");
    std::fs::write(&file, &bytes).expect("write");
    let mut f = fitsio::FitsFile::open(&file).expect("open FITS");
    let hdu = f.hdu("CUTOUT").expect("CUTOUT");
    let naxis1: i64 = hdu.read_key(&mut f, "NAXIS1").expect("NAXIS1");
    let naxis2: i64 = hdu.read_key(&mut f, "NAXIS2").expect("NAXIS2");
    assert_eq!((naxis1, naxis2), (512, 512));
}

/// The cells of each `<TR>` of a `{links}` document, XML entities of `&` undone.
fn rows(doc: &str) -> Vec<Vec<String>> {
    doc.split("<TR>")
        .skip(1)
        .map(|row| {
            let row = row.split("</TR>").next().unwrap_or_default();
            row.split("<TD>")
                .skip(1)
                .map(|c| {
                    c.split("</TD>")
                        .next()
                        .unwrap_or_default()
                        .replace("&lt;", "<")
                        .replace("&gt;", ">")
                        .replace("&amp;", "&")
                })
                .collect()
        })
        .collect()
}

#[test]
fn links_for_several_ids_answer_rows_per_image_and_an_error_row_per_bad_id() {
    let app = spawn_app();
    let params = [
        ("ID", IMAGE),
        ("ID", "butler://test/nothing"),
        ("ID", "not a uri"),
        ("ID", IMAGE),
    ];
    for r in [app.get("/links", &params), app.post("/links", &params)] {
        assert_eq!(r.status(), 200);
        assert_eq!(
            content_type(&r),
            "application/x-votable+xml;content=datalink"
        );
        // The document may not outlive the signed URLs its links lead to (15 minutes here).
        assert_eq!(
            r.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("private, max-age=900")
        );
        let doc = r.text().expect("body");
        assert_valid(&doc, "VOTable-v1.4.xsd");
        let rows = rows(&doc);
        // A repeated ID is described once; rows come in request order.
        let summary: Vec<(&str, &str)> = rows
            .iter()
            .map(|c| (c[0].as_str(), c[4].as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (IMAGE, "#this"),
                (IMAGE, "#preview"),
                (IMAGE, "#cutout"),
                ("butler://test/nothing", "#this"),
                ("not a uri", "#this"),
            ]
        );
        let unknown = &rows[3];
        assert!(
            unknown[1].is_empty() && unknown[2].is_empty(),
            "{unknown:?}"
        );
        assert!(
            unknown[3].starts_with("NotFoundFault: ")
                && unknown[3].contains("butler://test/nothing"),
            "{unknown:?}"
        );
        assert!(rows[4][3].starts_with("UsageFault: "), "{:?}", rows[4]);
        assert!(rows[..3].iter().all(|c| c[3].is_empty()));
    }
}

#[test]
fn links_preview_row_is_a_png_of_the_whole_image() {
    let app = spawn_app();
    let doc = app.get("/links", &[("ID", IMAGE)]).text().expect("body");
    let rows = rows(&doc);
    let preview = rows.iter().find(|c| c[4] == "#preview").expect("#preview");
    assert_eq!(preview[6], "image/png");
    let r = app.get_url(&preview[1]);
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    let png = app.get_url(&location(&r));
    assert_eq!(png.status(), 200);
    assert_eq!(content_type(&png), "image/png");
    let bytes = png.bytes().expect("PNG");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width and height, big-endian, at bytes 16..24.
    let width = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"));
    let height = u32::from_be_bytes(bytes[20..24].try_into().expect("4 bytes"));
    assert_eq!((width, height), (512, 512));
}

#[test]
fn links_without_an_id_or_with_too_many_is_400() {
    let app = spawn_app();
    let r = app.get("/links", &[]);
    assert_eq!(r.status(), 400);
    assert!(r.text().expect("body").starts_with("UsageError: "));
    let names: Vec<String> = (0..101).map(|i| format!("butler://test/i{i}")).collect();
    let params: Vec<(&str, &str)> = names.iter().map(|n| ("ID", n.as_str())).collect();
    let r = app.post("/links", &params);
    assert_eq!(r.status(), 400);
    let body = r.text().expect("body");
    assert!(
        body.starts_with("UsageError: ") && body.contains("101"),
        "{body}"
    );
}
