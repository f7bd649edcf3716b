//! SIA 2.0 discovery: which images cover a region, a time and a band, answered from the sky
//! index as an ObsCore-shaped VOTable whose `access_url` is each image's DataLink `{links}`,
//! so that a client goes from a position to a cutout without knowing any image ID.
//!
//! The index narrows the search by HEALPix cells; every candidate then passes the exact test of
//! its outline against the query region (`soda::sky::outline_overlaps`), so the answer is the
//! images whose footprint polygon (the one `s_region` shows) overlaps the region.

use std::collections::HashSet;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use quick_xml::escape::escape;
use soda::Stencil;
use uws::Parameters;
use uws::sky_index::{CellQuery, ImageContent, ImageIndex, ImageLocation, IndexedImage};

use crate::error::FrontendError;
use crate::extract::{DaliParams, Owner, PublicBase};
use crate::state::AppState;

/// The standardID of the SIA 2.0 query capability (what pyvo's `SIA2Service` looks for).
pub const SIA_QUERY: &str = "ivo://ivoa.net/std/SIA#query-2.0";

/// Rows answered when the client gives no `MAXREC`, and the most it may ask for.
pub const DEFAULT_MAXREC: usize = 1000;
pub const MAX_MAXREC: usize = 100_000;

/// The media type of a DataLink document, which `access_format` announces.
const DATALINK_FORMAT: &str = "application/x-votable+xml;content=datalink";

/// A parsed SIA query.
#[derive(Debug, Clone, PartialEq)]
pub struct SiaQuery {
    /// Regions (any of them may match); empty: the whole sky.
    pub regions: Vec<Stencil>,
    /// MJD interval.
    pub time: Option<(f64, f64)>,
    /// Wavelength interval in metres.
    pub band: Option<(f64, f64)>,
    pub collections: Vec<String>,
    pub maxrec: usize,
}

impl SiaQuery {
    /// Parses the SIA 2.0 parameters this service supports; other parameters are ignored, as
    /// DALI asks.
    pub fn parse(params: &Parameters) -> Result<SiaQuery, FrontendError> {
        let regions = params
            .all("POS")
            .map(|value| Stencil::parse_pos(value).map_err(FrontendError::from))
            .collect::<Result<Vec<_>, _>>()?;
        let single = |name: &'static str| single_value(params, name);
        let time = single("TIME")?
            .map(|v| interval("TIME", v, "an MJD interval: lower upper (days)"))
            .transpose()?;
        let band = single("BAND")?
            .map(|v| interval("BAND", v, "a wavelength interval: lower upper (metres)"))
            .transpose()?;
        let maxrec = match single("MAXREC")? {
            None => DEFAULT_MAXREC,
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| {
                    FrontendError::Usage(format!("MAXREC {v:?} is not a non-negative integer"))
                })?
                .min(MAX_MAXREC),
        };
        if let Some(format) = single("RESPONSEFORMAT")?
            && !matches!(
                format.trim(),
                "votable" | "application/x-votable+xml" | "text/xml"
            )
        {
            return Err(FrontendError::Usage(format!(
                "RESPONSEFORMAT {format:?} is not supported: only application/x-votable+xml"
            )));
        }
        Ok(SiaQuery {
            regions,
            time,
            band,
            collections: params.all("COLLECTION").map(str::to_owned).collect(),
            maxrec,
        })
    }
}

/// The one value of parameter `name`, if given; given more than once is
/// `MultiValuedParamNotSupported`.
pub(crate) fn single_value<'a>(
    params: &'a Parameters,
    name: &'a str,
) -> Result<Option<&'a str>, FrontendError> {
    let values: Vec<&str> = params.all(name).collect();
    match values.as_slice() {
        [] => Ok(None),
        [value] => Ok(Some(*value)),
        _ => Err(FrontendError::MultiValued(format!(
            "{name} given {} times: this service takes one {name} interval",
            values.len()
        ))),
    }
}

/// A DALI interval: two numbers (either may be `-Inf`/`+Inf`), or one for a single value.
pub(crate) fn interval(name: &str, value: &str, what: &str) -> Result<(f64, f64), FrontendError> {
    let bad = || FrontendError::Usage(format!("{name} {value:?} is not {what}"));
    let numbers: Vec<f64> = value
        .split_whitespace()
        .map(|n| match n {
            "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
            "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
            n => n.parse::<f64>().map_err(|_| bad()),
        })
        .collect::<Result<_, _>>()?;
    let (lo, hi) = match numbers.as_slice() {
        [v] => (*v, *v),
        [lo, hi] => (*lo, *hi),
        _ => return Err(bad()),
    };
    if lo.is_nan() || hi.is_nan() || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// `GET|POST /sia/query`: the images matching POS, TIME, BAND and COLLECTION, at most MAXREC.
#[utoipa::path(
    method(get, post),
    path = "/sia/query",
    tag = "SIA",
    params(crate::openapi::SiaParams),
    responses(
        (status = 200, description = "ObsCore-shaped VOTable, one row per image; access_url is the image's DataLink {links}", content_type = "application/x-votable+xml", body = String),
        (status = 400, description = "UsageError or MultiValuedParamNotSupported: bad parameters", content_type = "text/plain", body = String),
        (status = 503, description = "ServiceUnavailable: this deployment has no sky index", content_type = "text/plain", body = String)
    )
)]
pub async fn query(
    State(app): State<AppState>,
    Owner(_owner): Owner,
    base: PublicBase,
    DaliParams(params): DaliParams,
) -> Result<Response, FrontendError> {
    let query = SiaQuery::parse(&params)?;
    let index = app.sky_index.as_ref().ok_or_else(|| {
        FrontendError::Unavailable("this deployment has no sky index to search".to_owned())
    })?;
    let (images, overflow) = search(index.as_ref(), &query).await?;
    let body = document(&base.0, &images, overflow);
    Ok(([(header::CONTENT_TYPE, "application/x-votable+xml")], body).into_response())
}

/// The images matching `query` in time order, and whether more than `maxrec` matched.
pub async fn search(
    index: &dyn ImageIndex,
    query: &SiaQuery,
) -> Result<(Vec<IndexedImage>, bool), FrontendError> {
    // Candidates beyond this many are not looked at: the answer is then flagged as overflowing.
    let cap = query.maxrec.saturating_mul(4).saturating_add(1000);
    let regions: Vec<Option<&Stencil>> = if query.regions.is_empty() {
        vec![None]
    } else {
        query.regions.iter().map(Some).collect()
    };
    let mut seen = HashSet::new();
    let mut found: Vec<(IndexedImage, ImageLocation)> = Vec::new();
    let mut truncated = false;
    for region in regions {
        let (cells, ranges) = match region {
            Some(stencil) => soda::sky::region_cells(stencil),
            None => (Vec::new(), vec![soda::sky::all_sky_range()]),
        };
        let candidates = index
            .candidates(&CellQuery {
                cells,
                ranges,
                time: query.time,
                band: query.band,
                collections: query.collections.clone(),
                limit: cap,
            })
            .await?;
        truncated |= candidates.len() >= cap;
        for image in candidates {
            let ImageContent::Located(location) = &image.content else {
                continue;
            };
            let matches = region.is_none_or(|s| soda::sky::outline_overlaps(&location.corners, s));
            if matches && seen.insert(image.id.clone()) {
                let location = location.clone();
                found.push((image, location));
            }
        }
    }
    found.sort_by(|(a, la), (b, lb)| {
        let t = |l: &ImageLocation| l.time.map_or(f64::INFINITY, |t| t.0);
        t(la).total_cmp(&t(lb)).then_with(|| a.id.cmp(&b.id))
    });
    let overflow = truncated || found.len() > query.maxrec;
    found.truncate(query.maxrec);
    Ok((
        found.into_iter().map(|(image, _)| image).collect(),
        overflow,
    ))
}

/// The ObsCore columns this service fills, in order: name, datatype attributes, UCD, unit.
const FIELDS: &[(&str, &str, &str, &str)] = &[
    (
        "dataproduct_type",
        r#"datatype="char" arraysize="*""#,
        "meta.code.class",
        "",
    ),
    (
        "obs_collection",
        r#"datatype="char" arraysize="*""#,
        "meta.id",
        "",
    ),
    ("obs_id", r#"datatype="char" arraysize="*""#, "meta.id", ""),
    (
        "obs_publisher_did",
        r#"datatype="char" arraysize="*""#,
        "meta.ref.ivoid",
        "",
    ),
    (
        "access_url",
        r#"datatype="char" arraysize="*""#,
        "meta.ref.url",
        "",
    ),
    (
        "access_format",
        r#"datatype="char" arraysize="*""#,
        "meta.code.mime",
        "",
    ),
    ("s_ra", r#"datatype="double""#, "pos.eq.ra", "deg"),
    ("s_dec", r#"datatype="double""#, "pos.eq.dec", "deg"),
    (
        "s_fov",
        r#"datatype="double""#,
        "phys.angSize;instr.fov",
        "deg",
    ),
    (
        "s_region",
        r#"datatype="double" arraysize="*" xtype="polygon""#,
        "pos.outline;obs.field",
        "deg",
    ),
    ("s_xel1", r#"datatype="long""#, "meta.number", ""),
    ("s_xel2", r#"datatype="long""#, "meta.number", ""),
    (
        "t_min",
        r#"datatype="double""#,
        "time.start;obs.exposure",
        "d",
    ),
    (
        "t_max",
        r#"datatype="double""#,
        "time.end;obs.exposure",
        "d",
    ),
    (
        "t_exptime",
        r#"datatype="double""#,
        "time.duration;obs.exposure",
        "s",
    ),
    ("em_min", r#"datatype="double""#, "em.wl;stat.min", "m"),
    ("em_max", r#"datatype="double""#, "em.wl;stat.max", "m"),
];

/// The VOTable answer for `images` served under `base`.
pub fn document(base: &str, images: &[IndexedImage], overflow: bool) -> String {
    let mut out = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <RESOURCE type="results">
    <INFO name="QUERY_STATUS" value="OK"/>
    <INFO name="standardID" value="ivo://ivoa.net/std/SIA#query-2.0"/>
    <TABLE>
"#,
    );
    for (name, datatype, ucd, unit) in FIELDS {
        let unit = if unit.is_empty() {
            String::new()
        } else {
            format!(r#" unit="{unit}""#)
        };
        out.push_str(&format!(
            "      <FIELD name=\"{name}\" {datatype} ucd=\"{ucd}\"{unit}/>\n"
        ));
    }
    out.push_str("      <DATA>\n        <TABLEDATA>\n");
    for image in images {
        let ImageContent::Located(location) = &image.content else {
            continue;
        };
        let links = format!(
            "{base}/links?ID={}",
            form_urlencoded::byte_serialize(image.id.as_bytes()).collect::<String>()
        );
        let number = |v: Option<f64>| {
            v.filter(|v| v.is_finite())
                .map_or(String::new(), |v| v.to_string())
        };
        let region = location
            .corners
            .iter()
            .map(|(ra, dec)| format!("{ra} {dec}"))
            .collect::<Vec<_>>()
            .join(" ");
        let cells = [
            if location.band.is_some() {
                "cube"
            } else {
                "image"
            }
            .to_owned(),
            image.collection.clone(),
            image.id.clone(),
            image.id.clone(),
            links,
            DATALINK_FORMAT.to_owned(),
            number(Some(location.center.0)),
            number(Some(location.center.1)),
            number(Some(2.0 * location.radius_deg)),
            region,
            location.size.0.to_string(),
            location.size.1.to_string(),
            number(location.time.map(|t| t.0)),
            number(location.time.map(|t| t.1)),
            number(location.time.map(|t| (t.1 - t.0) * 86_400.0)),
            number(location.band.map(|b| b.0)),
            number(location.band.map(|b| b.1)),
        ];
        out.push_str("          <TR>");
        for cell in cells {
            out.push_str("<TD>");
            out.push_str(&escape(cell.as_str()));
            out.push_str("</TD>");
        }
        out.push_str("</TR>\n");
    }
    out.push_str("        </TABLEDATA>\n      </DATA>\n    </TABLE>\n");
    if overflow {
        out.push_str("    <INFO name=\"QUERY_STATUS\" value=\"OVERFLOW\"/>\n");
    }
    out.push_str("  </RESOURCE>\n</VOTABLE>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<SiaQuery, FrontendError> {
        let mut params = Parameters::new();
        for (name, value) in pairs {
            params.push(name, value);
        }
        SiaQuery::parse(&params)
    }

    #[test]
    fn parameters_parse_or_are_refused_as_usage_errors() {
        let q = parse(&[
            ("POS", "CIRCLE 10 20 0.5"),
            ("POS", "RANGE 350 10 -5 5"),
            ("TIME", "60000 60001.5"),
            ("BAND", "-Inf 5e-7"),
            ("COLLECTION", "survey"),
            ("MAXREC", "7"),
        ])
        .expect("query");
        assert_eq!(q.regions.len(), 2);
        assert_eq!(q.time, Some((60_000.0, 60_001.5)));
        assert_eq!(q.band, Some((f64::NEG_INFINITY, 5e-7)));
        assert_eq!(q.collections, ["survey"]);
        assert_eq!(q.maxrec, 7);
        assert_eq!(parse(&[]).expect("empty").maxrec, DEFAULT_MAXREC);
        for bad in [
            ("TIME", "2024-01-01"),
            ("TIME", "60001 60000"),
            ("TIME", "1 2 3"),
            ("BAND", "red"),
            ("MAXREC", "-1"),
            ("POS", "CIRCLE 10 95 1"),
            ("POS", "BOX 1 2 3 4"),
            ("RESPONSEFORMAT", "text/csv"),
        ] {
            assert!(
                matches!(parse(&[bad]), Err(FrontendError::Usage(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse(&[("TIME", "1 2"), ("TIME", "3 4")]),
            Err(FrontendError::MultiValued(_))
        ));
    }
}
