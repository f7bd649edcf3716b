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
    assert_eq!(param_attribute(&doc, "ID", "value").as_deref(), Some(IMAGE));
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

#[test]
fn links_for_an_unknown_image_is_404_naming_it() {
    let app = spawn_app();
    let r = app.get("/links", &[("ID", "butler://test/nothing")]);
    assert_eq!(r.status(), 404);
    assert_eq!(content_type(&r), "text/plain; charset=utf-8");
    let body = r.text().expect("body");
    assert!(body.starts_with("UsageError: "), "{body}");
    assert!(body.contains("butler://test/nothing"), "{body}");
}

#[test]
fn links_with_a_malformed_or_missing_id_is_400() {
    let app = spawn_app();
    for params in [vec![("ID", "not a uri")], vec![]] {
        let r = app.get("/links", &params);
        assert_eq!(r.status(), 400, "{params:?}");
        assert!(r.text().expect("body").starts_with("UsageError: "));
    }
    let r = app.get("/links", &[("ID", IMAGE), ("ID", IMAGE)]);
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .expect("body")
            .starts_with("MultiValuedParamNotSupported: ")
    );
}
