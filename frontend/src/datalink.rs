//! DataLink 1.1 `{links}` for an image: how an astronomer's client gets from an `ID` (found in
//! an ObsTAP row's `access_url`) to a cutout form.
//!
//! The document has one table with the DataLink columns and two rows: `#this`, the whole image,
//! and `#cutout`, whose `service_def` points at a SODA sync service descriptor (a `RESOURCE
//! type="meta" utype="adhoc:service"`). The descriptor's input parameters carry this image's
//! footprint as `VALUES MAX`, so a client (TOPCAT's DataLink window, pyvo's `SodaQuery`) can
//! build a form whose bounds are right for the image.
//!
//! There is no route that serves a source image unchanged, so `#this` is a sync cutout whose
//! circle encloses the whole footprint: the same pixels and WCS, in a file laid out as every
//! cutout is (empty primary HDU, one `CUTOUT` image extension).

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

/// `GET|POST /links?ID=...`: the DataLink document of one image.
#[utoipa::path(
    method(get, post),
    path = "/links",
    tag = "SODA",
    params(crate::openapi::LinksParams),
    responses(
        (status = 200, description = "DataLink 1.1 VOTable: #this, #cutout and the SODA service descriptor", content_type = "application/x-votable+xml;content=datalink", body = String),
        (status = 400, description = "UsageError or MultiValuedParamNotSupported: bad parameters", content_type = "text/plain", body = String),
        (status = 401, description = "AuthenticationError: no valid credentials (jwt and ingress modes)", content_type = "text/plain", body = String),
        (status = 404, description = "UsageError: the image is unknown", content_type = "text/plain", body = String)
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
    let ids: Vec<&str> = params.all("ID").collect();
    let id = match ids.as_slice() {
        [] => return Err(FrontendError::Usage("ID is required".to_owned())),
        [id] => *id,
        _ => {
            return Err(FrontendError::MultiValued(format!(
                "ID given {} times: {{links}} describes one image per request",
                ids.len()
            )));
        }
    };
    let source = SourceId::parse(id)?;
    let path = app.repositories.resolve(&source)?;
    // Reading the header is file I/O through cfitsio: keep it off the async threads.
    let extension = source.extension().map(str::to_owned);
    let footprint =
        tokio::task::spawn_blocking(move || soda::footprint(&path, extension.as_deref()))
            .await
            .map_err(|e| FrontendError::Internal(format!("footprint task failed: {e}")))??;
    let body = document(&base.0, &source.to_string(), &footprint);
    Ok(([(header::CONTENT_TYPE, DATALINK_CONTENT_TYPE)], body).into_response())
}

/// The `{links}` VOTable for image `id` served under `base`.
pub fn document(base: &str, id: &str, footprint: &Footprint) -> String {
    let sync = format!("{base}/sync");
    let whole = format!(
        "{sync}?ID={}&CIRCLE={}",
        query_escape(id),
        query_escape(&footprint.circle_value())
    );
    let (nx, ny) = footprint.size;
    let id_xml = escape(id);
    let circle = footprint.circle_value();
    let polygon = footprint.polygon_value();
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
          <TR><TD>{id_xml}</TD><TD>{whole}</TD><TD></TD><TD></TD><TD>#this</TD><TD>The whole {nx} x {ny} pixel image, as a FITS file with the image in extension CUTOUT</TD><TD>application/fits</TD><TD>-1</TD></TR>
          <TR><TD>{id_xml}</TD><TD></TD><TD>cutout</TD><TD></TD><TD>#cutout</TD><TD>SODA cutout of this image by CIRCLE, POLYGON or POS (ICRS degrees)</TD><TD>application/fits</TD><TD>-1</TD></TR>
        </TABLEDATA>
      </DATA>
    </TABLE>
  </RESOURCE>
  <RESOURCE type="meta" utype="adhoc:service" ID="cutout">
    <DESCRIPTION>Skycut SODA 1.0 synchronous cutout</DESCRIPTION>
    <PARAM name="standardID" datatype="char" arraysize="*" value="{SODA_SYNC}"/>
    <PARAM name="accessURL" datatype="char" arraysize="*" value="{sync_xml}"/>
    <GROUP name="inputParams">
      <PARAM name="ID" datatype="char" arraysize="*" ucd="meta.id;meta.dataset" ref="ID" value="{id_xml}"/>
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
    </GROUP>
  </RESOURCE>
</VOTABLE>
"##,
        sync_xml = escape(sync.as_str()),
        whole = escape(whole.as_str()),
    )
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters pass).
fn query_escape(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_escapes_the_id_and_links_the_whole_image() {
        let footprint = Footprint {
            size: (10, 20),
            center: (150.0, 2.0),
            radius_deg: 0.01,
            corners: [(150.1, 1.9), (149.9, 1.9), (149.9, 2.1), (150.1, 2.1)],
        };
        let doc = document("http://h/api/cutout", "butler://a/b&c", &footprint);
        assert!(doc.contains("<TD>butler://a/b&amp;c</TD>"), "{doc}");
        assert!(
            doc.contains(
                "http://h/api/cutout/sync?ID=butler%3A%2F%2Fa%2Fb%26c&amp;CIRCLE=150+2+0.01"
            ),
            "{doc}"
        );
        assert!(doc.contains(r#"<MAX value="150 2 0.01"/>"#), "{doc}");
    }
}
