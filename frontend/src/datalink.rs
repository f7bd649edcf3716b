//! DataLink 1.1 `{links}` for images: how an astronomer's client gets from an `ID` (found in
//! an ObsTAP row's `access_url`) to a cutout form.
//!
//! One request may name many IDs (pyvo sends up to 50 per call, by GET or POST). The document
//! has one table with the DataLink columns and, per ID in request order, three rows: `#this`,
//! the whole image; `#preview`, a PNG of it; and `#cutout`, whose `service_def` points at a SODA
//! sync service descriptor of that image (a `RESOURCE type="meta" utype="adhoc:service"`). An ID
//! that cannot be described (malformed, unknown, unreadable) gets one row with its
//! `error_message` instead, and the answer is still 200 (DataLink 1.1 §3.4).
//!
//! Each image has its own descriptor because its input parameters carry this image's ranges as
//! `VALUES`: the footprint as the `MAX` of `CIRCLE` and `POLYGON`, the wavelength range as the
//! `MIN`/`MAX` of `BAND`, and the allowed `RESPONSEFORMAT` and `MASK` values as `OPTION`s. So a
//! client (TOPCAT's DataLink window, pyvo's `SodaQuery`) builds a form whose bounds are right for
//! the image. The descriptor's `ID` parameter takes its value from the row (`ref="ID"`).
//!
//! There is no route that serves a source image unchanged, so `#this` is a sync cutout whose
//! circle encloses the whole footprint: the same pixels and WCS, in a file laid out as every
//! cutout is (empty primary HDU, one `CUTOUT` image extension), and `#preview` is the same
//! cutout with `RESPONSEFORMAT=image/png`. Their sizes are not known before they are cut, so
//! `content_length` is null.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use quick_xml::escape::escape;
use soda::{Footprint, SourceId};

use crate::error::FrontendError;
use crate::extract::{DaliParams, Owner, PublicBase};
use crate::state::AppState;

/// The media type DataLink 1.1 §3.3 gives a `{links}` response.
pub const DATALINK_CONTENT_TYPE: &str = "application/x-votable+xml;content=datalink";

/// The standardID of the SODA sync capability; pyvo matches its `#sync-1` prefix.
pub const SODA_SYNC: &str = "ivo://ivoa.net/std/SODA#sync-1.0";

/// Most IDs one `{links}` request may name: each costs a header read, and pyvo sends at most 50.
pub const MAX_LINK_IDS: usize = 100;

/// What the document says about one requested ID.
#[derive(Debug, Clone, PartialEq)]
pub enum Described {
    /// A readable image: its canonical ID and its footprint.
    Image { id: String, footprint: Footprint },
    /// An ID that cannot be described: as given, with the DataLink `error_message`.
    Fault { id: String, message: String },
}

/// `GET|POST /links?ID=...[&ID=...]`: the DataLink document of one or more images.
#[utoipa::path(
    method(get, post),
    path = "/links",
    tag = "SODA",
    params(crate::openapi::LinksParams),
    responses(
        (status = 200, description = "DataLink 1.1 VOTable: per ID #this, #preview and #cutout rows with a SODA service descriptor, or one row with an error_message (NotFoundFault, UsageFault...) for an ID that cannot be described", content_type = "application/x-votable+xml;content=datalink", body = String),
        (status = 400, description = "UsageError: no ID, or more than 100", content_type = "text/plain", body = String),
        (status = 401, description = "AuthenticationError: no valid credentials (jwt and ingress modes)", content_type = "text/plain", body = String)
    )
)]
pub async fn links(
    State(app): State<AppState>,
    // Authenticated like every other route: which images exist, and their footprints, are not
    // for anyone who asks.
    Owner(_owner): Owner,
    base: PublicBase,
    DaliParams(params): DaliParams,
) -> Result<Response, FrontendError> {
    let mut ids: Vec<String> = Vec::new();
    for id in params.all("ID") {
        let id = id.trim().to_owned();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(FrontendError::Usage("ID is required".to_owned()));
    }
    if ids.len() > MAX_LINK_IDS {
        return Err(FrontendError::Usage(format!(
            "{} IDs given: at most {MAX_LINK_IDS} per {{links}} request",
            ids.len()
        )));
    }
    // Reading headers is file I/O through cfitsio: keep it off the async threads.
    let repositories = app.repositories.clone();
    let described = tokio::task::spawn_blocking(move || {
        ids.into_iter()
            .map(|id| describe(&repositories, id))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| FrontendError::Internal(format!("footprint task failed: {e}")))?;
    let body = document(&base.0, &described);
    // Nothing in the document is signed, but it may not be kept longer than the signed URLs a
    // client reaches through it, and it describes images only this caller may be allowed to see.
    let cache = format!("private, max-age={}", app.settings.url_lifetime.as_secs());
    Ok((
        [
            (header::CONTENT_TYPE, DATALINK_CONTENT_TYPE.to_owned()),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response())
}

/// Reads what the document needs about `id`, or the fault that stops it.
fn describe(repositories: &soda::repository::Repositories, id: String) -> Described {
    let found = SourceId::parse(&id).and_then(|source| {
        let path = repositories.resolve(&source)?;
        let footprint = soda::footprint(&path, source.extension())?;
        Ok((source.to_string(), footprint))
    });
    match found {
        Ok((id, footprint)) => Described::Image { id, footprint },
        Err(e) => {
            let e = FrontendError::from(e);
            Described::Fault {
                id,
                message: format!("{}: {e}", e.datalink_fault()),
            }
        }
    }
}

/// The `{links}` VOTable for `described` images served under `base`.
pub fn document(base: &str, described: &[Described]) -> String {
    let sync = format!("{base}/sync");
    let mut rows = String::new();
    let mut descriptors = String::new();
    for (n, entry) in described.iter().enumerate() {
        match entry {
            Described::Image { id, footprint } => {
                let service = if n == 0 {
                    "cutout".to_owned()
                } else {
                    format!("cutout-{}", n + 1)
                };
                let whole = format!(
                    "{sync}?ID={}&CIRCLE={}",
                    query_escape(id),
                    query_escape(&footprint.circle_value())
                );
                let preview = format!("{whole}&RESPONSEFORMAT=image%2Fpng");
                let (nx, ny) = footprint.size;
                let id = escape(id.as_str());
                let _ = write!(
                    rows,
                    r##"          <TR><TD>{id}</TD><TD>{whole}</TD><TD></TD><TD></TD><TD>#this</TD><TD>The whole {nx} x {ny} pixel image, as a FITS file with the image in extension CUTOUT</TD><TD>application/fits</TD><TD>-1</TD></TR>
          <TR><TD>{id}</TD><TD>{preview}</TD><TD></TD><TD></TD><TD>#preview</TD><TD>A grey PNG preview of the whole image, north up</TD><TD>image/png</TD><TD>-1</TD></TR>
          <TR><TD>{id}</TD><TD></TD><TD>{service}</TD><TD></TD><TD>#cutout</TD><TD>SODA cutout of this image by CIRCLE, POLYGON or POS (ICRS degrees) or MOC{band}</TD><TD>application/fits</TD><TD>-1</TD></TR>
"##,
                    whole = escape(whole.as_str()),
                    preview = escape(preview.as_str()),
                    band = axis_parameters(footprint),
                );
                descriptors.push_str(&descriptor(&service, &sync, footprint));
            }
            Described::Fault { id, message } => {
                let _ = writeln!(
                    rows,
                    "          <TR><TD>{}</TD><TD></TD><TD></TD><TD>{}</TD><TD>#this</TD><TD></TD><TD></TD><TD>-1</TD></TR>",
                    escape(id.as_str()),
                    escape(message.as_str()),
                );
            }
        }
    }
    format!(
        r##"<?xml version="1.0" encoding="UTF-8"?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <RESOURCE type="results">
    <INFO name="standardID" value="ivo://ivoa.net/std/DataLink#links-1.1"/>
    <TABLE>
      <FIELD name="ID" ID="ID" datatype="char" arraysize="*" ucd="meta.id;meta.main"/>
      <FIELD name="access_url" datatype="char" arraysize="*" ucd="meta.ref.url"/>
      <FIELD name="service_def" datatype="char" arraysize="*" ucd="meta.ref"/>
      <FIELD name="error_message" datatype="char" arraysize="*" ucd="meta.code.error"/>
      <FIELD name="semantics" datatype="char" arraysize="*" ucd="meta.code"/>
      <FIELD name="description" datatype="char" arraysize="*" ucd="meta.note"/>
      <FIELD name="content_type" datatype="char" arraysize="*" ucd="meta.code.mime"/>
      <FIELD name="content_length" datatype="long" unit="byte" ucd="phys.size;meta.file"><VALUES null="-1"/></FIELD>
      <DATA>
        <TABLEDATA>
{rows}        </TABLEDATA>
      </DATA>
    </TABLE>
  </RESOURCE>
{descriptors}</VOTABLE>
"##
    )
}

/// The SODA sync service descriptor `service` of one image: every parameter the cutout service
/// takes, with this image's ranges.
fn descriptor(service: &str, sync: &str, footprint: &Footprint) -> String {
    let circle = footprint.circle_value();
    let polygon = footprint.polygon_value();
    let band = match footprint.band {
        Some((lo, hi)) => format!(
            r#"      <PARAM name="BAND" datatype="double" arraysize="2" xtype="interval" unit="m" ucd="em.wl;stat.interval" value="">
        <DESCRIPTION>Wavelength interval to keep: lo hi (metres, vacuum); planes whose centres lie in it are kept; MIN and MAX are the edges of the first and last planes</DESCRIPTION>
        <VALUES><MIN value="{lo}"/><MAX value="{hi}"/></VALUES>
      </PARAM>
"#
        ),
        None => String::new(),
    };
    let time = match footprint.time {
        Some((lo, hi)) => format!(
            r#"      <PARAM name="TIME" datatype="double" arraysize="2" xtype="interval" unit="d" ucd="time.interval;obs.exposure" value="">
        <DESCRIPTION>Time interval to keep: lo hi (MJD); the planes of a time axis whose centres lie in it, or the whole image if its observation meets it; MIN and MAX are the image's first and last instants</DESCRIPTION>
        <VALUES><MIN value="{lo}"/><MAX value="{hi}"/></VALUES>
      </PARAM>
"#
        ),
        None => String::new(),
    };
    let pol = if footprint.pol.is_empty() {
        String::new()
    } else {
        let options: String = footprint
            .pol
            .iter()
            .map(|name| format!(r#"<OPTION value="{name}"/>"#))
            .collect();
        format!(
            r#"      <PARAM name="POL" datatype="char" arraysize="*" ucd="meta.code;phys.polarization" value="">
        <DESCRIPTION>Polarization states to keep, one per POL value (several form one filter); the planes from the first selected to the last are kept, in axis order</DESCRIPTION>
        <VALUES>{options}</VALUES>
      </PARAM>
"#
        )
    };
    format!(
        r##"  <RESOURCE type="meta" utype="adhoc:service" ID="{service}">
    <DESCRIPTION>Skycut SODA 1.0 synchronous cutout</DESCRIPTION>
    <PARAM name="standardID" datatype="char" arraysize="*" value="{SODA_SYNC}"/>
    <PARAM name="accessURL" datatype="char" arraysize="*" value="{sync}"/>
    <GROUP name="inputParams">
      <PARAM name="ID" datatype="char" arraysize="*" ucd="meta.id;meta.dataset" ref="ID" value="">
        <DESCRIPTION>The image, taken from the row's ID</DESCRIPTION>
      </PARAM>
      <PARAM name="POS" datatype="char" arraysize="*" ucd="pos.outline;obs" value="">
        <DESCRIPTION>Region to cut out, with its shape: CIRCLE ra dec radius, POLYGON ra1 dec1 ra2 dec2 ..., or RANGE ra1 ra2 dec1 dec2 (ICRS degrees)</DESCRIPTION>
      </PARAM>
      <PARAM name="CIRCLE" datatype="double" arraysize="3" xtype="circle" unit="deg" ucd="phys.angArea;obs" value="">
        <DESCRIPTION>Circle to cut out: ra dec radius (ICRS degrees); MAX is the circle enclosing the image</DESCRIPTION>
        <VALUES><MAX value="{circle}"/></VALUES>
      </PARAM>
      <PARAM name="POLYGON" datatype="double" arraysize="*" xtype="polygon" unit="deg" ucd="pos.outline;obs" value="">
        <DESCRIPTION>Polygon to cut out: ra1 dec1 ra2 dec2 ra3 dec3 ... (ICRS degrees); MAX is the outline of the image</DESCRIPTION>
        <VALUES><MAX value="{polygon}"/></VALUES>
      </PARAM>
      <PARAM name="MOC" datatype="char" arraysize="*" ucd="pos.outline;obs" value="">
        <DESCRIPTION>HEALPix cells to cut out, as an ASCII MOC (e.g. 12/1024-1030 13/4200); the cutout is the rectangle covering them (SODA working draft)</DESCRIPTION>
      </PARAM>
{band}{time}{pol}      <PARAM name="RESPONSEFORMAT" datatype="char" arraysize="*" ucd="meta.code.mime" value="">
        <DESCRIPTION>The FITS cutout (the default), or a grey preview of it first</DESCRIPTION>
        <VALUES><OPTION value="application/fits"/><OPTION value="image/png"/><OPTION value="image/jpeg"/></VALUES>
      </PARAM>
      <PARAM name="MASK" datatype="char" arraysize="*" ucd="meta.code" value="">
        <DESCRIPTION>true blanks the pixels of the rectangle outside the stencil (NaN, or BLANK for integer images)</DESCRIPTION>
        <VALUES><OPTION value="false"/><OPTION value="true"/></VALUES>
      </PARAM>
    </GROUP>
  </RESOURCE>
"##,
        sync = escape(sync),
    )
}

/// The axis parameters a cutout of this image takes beyond the sky, for a row's description.
fn axis_parameters(footprint: &Footprint) -> String {
    let mut axes = Vec::new();
    if footprint.band.is_some() {
        axes.push("BAND (metres)");
    }
    if footprint.time.is_some() {
        axes.push("TIME (MJD)");
    }
    if !footprint.pol.is_empty() {
        axes.push("POL (Stokes)");
    }
    match axes.as_slice() {
        [] => String::new(),
        axes => format!(" and {}", axes.join(", ")),
    }
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters pass).
fn query_escape(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str) -> Described {
        Described::Image {
            id: id.to_owned(),
            footprint: Footprint {
                size: (10, 20),
                center: (150.0, 2.0),
                radius_deg: 0.01,
                corners: [(150.1, 1.9), (149.9, 1.9), (149.9, 2.1), (150.1, 2.1)],
                band: None,
                time: None,
                pol: Vec::new(),
            },
        }
    }

    #[test]
    fn document_escapes_the_id_and_links_the_whole_image() {
        let doc = document("http://h/api/cutout", &[image("butler://a/b&c")]);
        assert!(doc.contains("<TD>butler://a/b&amp;c</TD>"), "{doc}");
        assert!(
            doc.contains(
                "http://h/api/cutout/sync?ID=butler%3A%2F%2Fa%2Fb%26c&amp;CIRCLE=150+2+0.01"
            ),
            "{doc}"
        );
        assert!(doc.contains(r#"<MAX value="150 2 0.01"/>"#), "{doc}");
        assert!(!doc.contains(r#"name="BAND""#), "{doc}");
    }

    #[test]
    fn each_image_gets_its_own_descriptor_and_a_fault_gets_one_row() {
        let mut cube = image("butler://a/cube");
        if let Described::Image { footprint, .. } = &mut cube {
            footprint.band = Some((5e-7, 6e-7));
            footprint.time = Some((60000.0, 60000.5));
            footprint.pol = vec!["I", "Q", "U", "V"];
        }
        let fault = Described::Fault {
            id: "butler://a/<none>".to_owned(),
            message: "NotFoundFault: image butler://a/<none> is unknown".to_owned(),
        };
        let doc = document("http://h", &[image("butler://a/b"), fault, cube]);
        assert_eq!(doc.matches("<TR>").count(), 7, "{doc}");
        assert!(doc.contains(r#"ID="cutout">"#) && doc.contains(r#"ID="cutout-3">"#));
        assert!(doc.contains("<TD>NotFoundFault: image butler://a/&lt;none&gt; is unknown</TD>"));
        assert!(
            doc.contains(r#"<MIN value="0.0000005"/><MAX value="0.0000006"/>"#),
            "{doc}"
        );
        assert!(
            doc.contains(r#"<MIN value="60000"/><MAX value="60000.5"/>"#),
            "{doc}"
        );
        assert!(
            doc.contains(
                r#"<OPTION value="I"/><OPTION value="Q"/><OPTION value="U"/><OPTION value="V"/>"#
            ),
            "{doc}"
        );
        assert_eq!(doc.matches(r#"name="POL""#).count(), 1, "{doc}");
    }
}
