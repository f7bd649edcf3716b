//! The SODA parameters of one cutout request, parsed once into typed values: the frontend parses
//! them to reject bad input before a job exists, the worker parses the stored job parameters
//! again to run it.

use crate::error::SodaError;
use crate::preview::{JPEG, PNG, PreviewFormat};
use crate::source_id::SourceId;
use crate::stamp_table::STAMP_TABLE;
use crate::stencil::Stencil;

/// The media type of the FITS cutouts, the default `RESPONSEFORMAT`.
pub const FITS: &str = "application/fits";

/// The spatial-stencil parameters, in the order SODA lists them, then the pixel section.
const STENCIL_PARAMETERS: [&str; 5] = ["POS", "CIRCLE", "POLYGON", "MOC", "SUB"];

/// Every parameter a cutout request is read from (upper case); a service keeps these and drops
/// the rest, which [`CutoutRequest::from_parameters`] ignores anyway.
pub const CUTOUT_PARAMETERS: &[&str] = &[
    "ID",
    "POS",
    "CIRCLE",
    "POLYGON",
    "MOC",
    "BAND",
    "TIME",
    "POL",
    "MASK",
    "RESPONSEFORMAT",
    "SUB",
    "META",
    "KIND",
    "SIZE",
];

/// Most (ID, stencil) pairs one request may ask for: each pair is a cutout and a result, and
/// a job's result list must stay a size a client can read.
pub const MAX_PAIRS: usize = 100;

/// A validated cutout request: which images, cut with which stencils.
///
/// SODA allows several IDs and several stencils: every image is cut with every stencil, one
/// cutout (one result) per pair, IDs in the outer loop.
#[derive(Debug, Clone, PartialEq)]
pub struct CutoutRequest {
    pub ids: Vec<SourceId>,
    pub stencils: Vec<Stencil>,
    /// `MASK=true` (a Skycut extension): pixels of each rectangle outside the stencil are
    /// blanked (NaN for floating-point images, BLANK for integer ones).
    pub mask: bool,
    /// SODA `BAND`: the wavelength interval in metres (bounds possibly infinite) of the planes
    /// to keep along an image's wavelength axis.
    pub band: Option<(f64, f64)>,
    /// SODA `TIME`: an MJD interval (bounds possibly infinite), cutting a time axis, or keeping
    /// or rejecting an image without one by its observation interval.
    pub time: Option<(f64, f64)>,
    /// SODA `POL`: the FITS Stokes codes of every `POL` value, which together form one filter.
    pub pol: Vec<i32>,
    /// `RESPONSEFORMAT=image/png` or `image/jpeg`: each cutout also gets a preview in that
    /// format, listed before the FITS results (SODA: the preview comes first, so a sync request
    /// answers with it).
    pub preview: Option<PreviewFormat>,
    /// `META=true` (CADC) or `KIND=HEADER` (DaCHS): each cutout is only its header, as it would
    /// be written, listed as text (see [`HEADER`]); no pixel is read.
    pub header_only: bool,
    /// `SIZE` (a Skycut extension): every cutout is a stamp of exactly this many pixels a
    /// side, centred on the circle's centre and blank where it hangs over the image edge, so
    /// that stamps stack (see [`crate::Window::centred`]).
    pub size: Option<usize>,
    /// `RESPONSEFORMAT=application/fits;content=stamp-table` (with `SIZE`): one FITS table
    /// of every stamp (see [`crate::stamp_table`]) instead of a file per cutout.
    pub stamp_table: bool,
}

/// The media type of a header-only result (`META=true`): the FITS header of the cutout's image
/// extension as text, one 80-character card per line ending with `END`, as CADC answers
/// `META=true` and as `astropy.io.fits.Header.fromstring(text, sep="\n")` reads it. A FITS file
/// with no data would be a different header (NAXISn would have to lie), so it is not one.
pub const HEADER: &str = "text/plain";

impl CutoutRequest {
    /// Parses DALI parameters (names case-insensitive, as `(name, value)` pairs). Parameters
    /// that SODA does not define are ignored, as DALI asks of services. At most [`MAX_PAIRS`]
    /// cutouts.
    pub fn from_parameters<'a>(
        parameters: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<CutoutRequest, SodaError> {
        CutoutRequest::from_parameters_up_to(parameters, MAX_PAIRS)
    }

    /// [`CutoutRequest::from_parameters`] with at most `max_pairs` cutouts: a service whose
    /// light curves may have more epochs than [`MAX_PAIRS`] admits that many, and a worker
    /// reads a job that its frontend has admitted whatever the limit was.
    pub fn from_parameters_up_to<'a>(
        parameters: impl IntoIterator<Item = (&'a str, &'a str)>,
        max_pairs: usize,
    ) -> Result<CutoutRequest, SodaError> {
        let mut ids = Vec::new();
        let mut stencils = Vec::new();
        let mut mask = false;
        let mut band = None;
        let mut time = None;
        let mut pol = Vec::new();
        let mut preview = None;
        let mut header_only = false;
        let mut size = None;
        let mut stamp_table = false;
        for (name, value) in parameters {
            let name = name.to_ascii_uppercase();
            match name.as_str() {
                "ID" => ids.push(SourceId::parse(value.trim())?),
                "POS" => stencils.push(Stencil::parse_pos(value)?),
                "CIRCLE" => stencils.push(Stencil::parse_circle(value)?),
                "POLYGON" => stencils.push(Stencil::parse_polygon(value)?),
                "SUB" => stencils.push(Stencil::parse_sub(value)?),
                "MOC" => stencils.push(Stencil::parse_moc(value)?),
                "RESPONSEFORMAT" => {
                    let format = value.trim();
                    let is = |media: &str, short: &[&str]| {
                        format.eq_ignore_ascii_case(media)
                            || short.iter().any(|s| format.eq_ignore_ascii_case(s))
                    };
                    // `application/fits; content=stamp-table`: media type parameters may be
                    // spaced.
                    let compact: String = format.split_whitespace().collect();
                    stamp_table = compact.eq_ignore_ascii_case(STAMP_TABLE);
                    preview = if stamp_table {
                        None
                    } else if is(PNG, &["png"]) {
                        Some(PreviewFormat::Png)
                    } else if is(JPEG, &["jpeg", "jpg"]) {
                        Some(PreviewFormat::Jpeg)
                    } else if is(FITS, &["fits"]) {
                        None
                    } else {
                        return Err(SodaError::Usage(format!(
                            "RESPONSEFORMAT {format:?} is not supported ({FITS}, {PNG}, {JPEG} \
                             or {STAMP_TABLE})"
                        )));
                    };
                }
                "MASK" => mask = parse_bool("MASK", value)?,
                "SIZE" => {
                    if size.is_some() {
                        return Err(SodaError::MultiValued(
                            "SIZE given more than once: one stamp size per request".into(),
                        ));
                    }
                    size = Some(parse_size(value)?);
                }
                "META" => header_only |= parse_bool("META", value)?,
                "KIND" => match value.trim().to_ascii_uppercase().as_str() {
                    "HEADER" => header_only = true,
                    "DATA" | "" => {}
                    other => {
                        return Err(SodaError::Usage(format!(
                            "KIND must be HEADER or DATA, not {other:?}"
                        )));
                    }
                },
                "BAND" => {
                    if band.is_some() {
                        return Err(SodaError::MultiValued(
                            "BAND given more than once: one wavelength interval per request".into(),
                        ));
                    }
                    band = Some(parse_interval("BAND", "in metres", value)?);
                }
                "TIME" => {
                    if time.is_some() {
                        return Err(SodaError::MultiValued(
                            "TIME given more than once: one MJD interval per request".into(),
                        ));
                    }
                    time = Some(parse_interval("TIME", "MJD", value)?);
                }
                "POL" => {
                    let code = crate::polarization::stokes_code(value)?;
                    if !pol.contains(&code) {
                        pol.push(code);
                    }
                }
                _ => {}
            }
        }
        if ids.is_empty() {
            return Err(SodaError::Usage(
                "ID is required: the image to cut, e.g. ID=butler://<repository>/<image>".into(),
            ));
        }
        if stencils.is_empty() {
            return Err(SodaError::Usage(format!(
                "a spatial stencil is required: one of {}",
                STENCIL_PARAMETERS.join(", ")
            )));
        }
        if stencils.iter().any(Stencil::is_pixels) {
            let conflict = if !stencils.iter().all(Stencil::is_pixels) {
                Some("a sky stencil (POS, CIRCLE, POLYGON, MOC)")
            } else if mask {
                Some("MASK (a section has no outside to blank)")
            } else if band.is_some() || time.is_some() || !pol.is_empty() {
                Some("BAND, TIME or POL (give the planes as the section's other ranges)")
            } else if ids.iter().any(|id| id.extension().is_some())
                && stencils
                    .iter()
                    .any(|s| matches!(s, Stencil::Pixels(p) if p.extension().is_some()))
            {
                Some("an ID with ?ext= when the section names an extension too")
            } else {
                None
            };
            if let Some(conflict) = conflict {
                return Err(SodaError::Usage(format!(
                    "SUB cannot be combined with {conflict}"
                )));
            }
        }
        if size.is_some() {
            if mask {
                return Err(SodaError::Usage(
                    "SIZE cannot be combined with MASK: a stamp keeps every pixel of its square"
                        .into(),
                ));
            }
            if !stencils.iter().all(|s| matches!(s, Stencil::Circle(_))) {
                return Err(SodaError::Usage(
                    "SIZE centres each stamp on a CIRCLE (or POS=CIRCLE): every stencil must be one"
                        .into(),
                ));
            }
        }
        if stamp_table && (size.is_none() || header_only) {
            return Err(SodaError::Usage(format!(
                "RESPONSEFORMAT={STAMP_TABLE} is a table of stamps of one SIZE: give SIZE, and \
                 not META or KIND=HEADER"
            )));
        }
        if header_only && preview.is_some() {
            return Err(SodaError::Usage(
                "META=true (or KIND=HEADER) asks for headers only: RESPONSEFORMAT must be FITS"
                    .into(),
            ));
        }
        if ids.len().saturating_mul(stencils.len()) > max_pairs {
            return Err(SodaError::Usage(format!(
                "{} IDs and {} stencils make {} cutouts; at most {max_pairs} per request",
                ids.len(),
                stencils.len(),
                ids.len() * stencils.len()
            )));
        }
        Ok(CutoutRequest {
            ids,
            stencils,
            mask,
            band,
            time,
            pol,
            preview,
            header_only,
            size,
            stamp_table,
        })
    }

    /// How to cut the image `id`: the options every pair of this request shares.
    pub fn options(&self, id: &SourceId) -> crate::CutOptions {
        crate::CutOptions {
            mask: self.mask,
            band: self.band,
            time: self.time,
            pol: self.pol.clone(),
            extension: id.extension().map(str::to_owned),
            size: self.size,
        }
    }

    /// Every (image, stencil) pair, each of which gives one result.
    pub fn pairs(&self) -> impl Iterator<Item = (&SourceId, &Stencil)> {
        self.ids
            .iter()
            .flat_map(|id| self.stencils.iter().map(move |s| (id, s)))
    }
}

/// A DALI interval `lo hi` of `name` (`unit` says in what, for errors); `-Inf`/`+Inf` leave a
/// side open.
fn parse_interval(name: &str, unit: &str, value: &str) -> Result<(f64, f64), SodaError> {
    let numbers: Vec<f64> = value
        .split_whitespace()
        .map(|word| {
            word.parse::<f64>()
                .map_err(|_| SodaError::Usage(format!("{name} value {word:?} is not a number")))
        })
        .collect::<Result<_, _>>()?;
    let [lo, hi] = numbers[..] else {
        return Err(SodaError::Usage(format!(
            "{name} needs 2 numbers (lo hi, {unit}), got {}",
            numbers.len()
        )));
    };
    if lo.is_nan() || hi.is_nan() || lo > hi || lo == f64::INFINITY || hi == f64::NEG_INFINITY {
        return Err(SodaError::Usage(format!(
            "{name} {value:?} is not an interval lo <= hi"
        )));
    }
    Ok((lo, hi))
}

/// `SIZE`: a whole number of pixels, at least 1 (the service bounds it from above).
pub fn parse_size(value: &str) -> Result<usize, SodaError> {
    match value.trim().parse::<usize>() {
        Ok(size) if size > 0 => Ok(size),
        _ => Err(SodaError::Usage(format!(
            "SIZE must be a whole number of pixels, at least 1, not {:?}",
            value.trim()
        ))),
    }
}

/// A DALI boolean: `true`/`false` (any case), also `1`/`0` and `yes`/`no` for hand-typed URLs.
fn parse_bool(name: &str, value: &str) -> Result<bool, SodaError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        other => Err(SodaError::Usage(format!(
            "{name} must be true or false, not {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(params: &[(&str, &str)], expected: Result<usize, &str>) {
        let got = CutoutRequest::from_parameters(params.iter().copied());
        match (got, expected) {
            (Ok(r), Ok(n)) => assert_eq!(r.pairs().count(), n, "{params:?}"),
            (Err(e), Err(text)) => assert!(e.to_string().contains(text), "{params:?}: {e}"),
            (got, expected) => panic!("{params:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn one_id_and_one_stencil_make_one_cutout() {
        check(&[("id", "butler://demo/a"), ("circle", "10 20 0.1")], Ok(1));
        check(
            &[("ID", "butler://demo/a"), ("Pos", "RANGE 1 2 3 4")],
            Ok(1),
        );
        check(
            &[
                ("ID", "butler://demo/a"),
                ("POLYGON", "1 1 2 1 2 2"),
                ("MAXREC", "9"),
            ],
            Ok(1),
        );
    }

    #[test]
    fn missing_parameters_are_usage_errors() {
        check(&[("CIRCLE", "10 20 0.1")], Err("ID is required"));
        check(&[("ID", "butler://demo/a")], Err("stencil is required"));
        check(&[("ID", "nope"), ("CIRCLE", "10 20 0.1")], Err("ID"));
    }

    #[test]
    fn every_id_is_cut_with_every_stencil() {
        let r = CutoutRequest::from_parameters([
            ("ID", "butler://demo/a"),
            ("ID", "butler://demo/b"),
            ("CIRCLE", "10 20 0.1"),
            ("POS", "CIRCLE 10 20 0.2"),
            ("POLYGON", "1 1 2 1 2 2"),
        ])
        .unwrap();
        let pairs: Vec<String> = r
            .pairs()
            .map(|(id, s)| format!("{} {s}", id.image()))
            .collect();
        assert_eq!(pairs.len(), 6);
        assert!(pairs[0].starts_with("a CIRCLE 10 20 0.1"), "{pairs:?}");
        assert!(pairs[3].starts_with("b CIRCLE 10 20 0.1"), "{pairs:?}");
        assert!(!r.mask);
    }

    #[test]
    fn too_many_pairs_are_refused() {
        let mut params = vec![("CIRCLE", "10 20 0.1"); 11];
        params.extend(vec![("ID", "butler://demo/a"); 10]);
        check(&params, Err("at most 100"));
    }

    #[test]
    fn size_is_a_positive_whole_number_of_pixels_around_circles() {
        let r = |params: &[(&str, &str)]| {
            let mut all = vec![("ID", "butler://demo/a")];
            all.extend_from_slice(params);
            CutoutRequest::from_parameters(all)
        };
        let ok = r(&[("CIRCLE", "10 20 0.1"), ("size", " 51 ")]).unwrap();
        assert_eq!(ok.size, Some(51));
        assert_eq!(r(&[("POS", "CIRCLE 10 20 0.1")]).unwrap().size, None);
        for bad in ["0", "-3", "2.5", "many", ""] {
            let e = r(&[("CIRCLE", "10 20 0.1"), ("SIZE", bad)]).unwrap_err();
            assert!(
                matches!(&e, SodaError::Usage(m) if m.contains("SIZE must be")),
                "{bad}: {e}"
            );
        }
        let twice = r(&[("CIRCLE", "10 20 0.1"), ("SIZE", "5"), ("SIZE", "7")]);
        assert!(matches!(twice, Err(SodaError::MultiValued(_))));
        check(
            &[
                ("ID", "butler://demo/a"),
                ("POLYGON", "1 1 2 1 2 2"),
                ("SIZE", "5"),
            ],
            Err("SIZE centres each stamp on a CIRCLE"),
        );
        check(
            &[
                ("ID", "butler://demo/a"),
                ("SUB", "[1:5,1:5]"),
                ("SIZE", "5"),
            ],
            Err("CIRCLE"),
        );
        check(
            &[
                ("ID", "butler://demo/a"),
                ("CIRCLE", "10 20 0.1"),
                ("MASK", "true"),
                ("SIZE", "5"),
            ],
            Err("SIZE cannot be combined with MASK"),
        );
    }

    #[test]
    fn a_stamp_table_is_a_response_format_that_needs_size() {
        let r = |format: &str, size: Option<&str>| {
            let mut all = vec![
                ("ID", "butler://demo/a"),
                ("CIRCLE", "10 20 0.1"),
                ("RESPONSEFORMAT", format),
            ];
            all.extend(size.map(|s| ("SIZE", s)));
            CutoutRequest::from_parameters(all)
        };
        let ok = r("application/fits; content=stamp-table", Some("16")).unwrap();
        assert!(ok.stamp_table && ok.preview.is_none());
        assert!(!r("application/fits", Some("16")).unwrap().stamp_table);
        let e = r("application/fits;content=stamp-table", None).unwrap_err();
        assert!(e.to_string().contains("give SIZE"), "{e}");
        let e = r("application/fits;content=zarr", Some("16")).unwrap_err();
        assert!(e.to_string().contains("stamp-table"), "{e}");
    }

    #[test]
    fn mask_is_a_boolean() {
        let r = |v| {
            CutoutRequest::from_parameters([
                ("ID", "butler://demo/a"),
                ("CIRCLE", "10 20 0.1"),
                ("mask", v),
            ])
        };
        assert!(r("TRUE").unwrap().mask);
        assert!(!r("false").unwrap().mask);
        assert!(matches!(r("maybe"), Err(SodaError::Usage(_))));
    }

    #[test]
    fn sub_is_a_pixel_stencil_that_combines_with_no_sky_stencil() {
        check(&[("ID", "butler://demo/a"), ("SUB", "[1:10,1:10]")], Ok(1));
        check(
            &[
                ("ID", "butler://demo/a"),
                ("SUB", "[1:10,1:10]"),
                ("sub", "[SCI][5:6,*]"),
            ],
            Ok(2),
        );
        let base = [("ID", "butler://demo/a"), ("SUB", "[1:10,1:10]")];
        for (extra, why) in [
            (("CIRCLE", "10 20 0.1"), "sky stencil"),
            (("MASK", "true"), "MASK"),
            (("BAND", "1e-7 2e-7"), "BAND"),
        ] {
            let mut params = base.to_vec();
            params.push(extra);
            check(&params, Err(why));
        }
        check(
            &[
                ("ID", "butler://demo/a?ext=SCI"),
                ("SUB", "[SCI][1:10,1:10]"),
            ],
            Err("?ext="),
        );
        check(
            &[("ID", "butler://demo/a?ext=SCI"), ("SUB", "[1:10,1:10]")],
            Ok(1),
        );
        check(
            &[("ID", "butler://demo/a"), ("SUB", "[1:10:2,1:10]")],
            Err("steps of 1"),
        );
    }

    #[test]
    fn meta_true_or_kind_header_asks_for_headers_only() {
        let r = |extra: &[(&'static str, &'static str)]| {
            let mut params = vec![("ID", "butler://demo/a"), ("CIRCLE", "10 20 0.1")];
            params.extend_from_slice(extra);
            CutoutRequest::from_parameters(params).map(|r| r.header_only)
        };
        assert_eq!(r(&[]), Ok(false));
        assert_eq!(r(&[("meta", "TRUE")]), Ok(true));
        assert_eq!(r(&[("META", "false")]), Ok(false));
        assert_eq!(r(&[("kind", "header")]), Ok(true));
        assert_eq!(r(&[("KIND", "DATA")]), Ok(false));
        for bad in [[("META", "perhaps")], [("KIND", "PIXELS")]] {
            assert!(matches!(r(&bad), Err(SodaError::Usage(_))), "{bad:?}");
        }
        assert!(matches!(
            r(&[("META", "true"), ("RESPONSEFORMAT", "image/png")]),
            Err(SodaError::Usage(_))
        ));
    }

    #[test]
    fn band_is_one_interval_in_metres() {
        let r = |v: &[&'static str]| {
            let mut params = vec![("ID", "butler://demo/a"), ("CIRCLE", "10 20 0.1")];
            params.extend(v.iter().map(|v| ("band", *v)));
            CutoutRequest::from_parameters(params)
        };
        assert_eq!(r(&[]).unwrap().band, None);
        assert_eq!(r(&["5e-7 6e-7"]).unwrap().band, Some((5e-7, 6e-7)));
        assert_eq!(
            r(&["-Inf 6e-7"]).unwrap().band,
            Some((f64::NEG_INFINITY, 6e-7))
        );
        for bad in ["6e-7 5e-7", "1", "a b", "NaN 1", "+Inf +Inf"] {
            assert!(matches!(r(&[bad]), Err(SodaError::Usage(_))), "{bad}");
        }
        assert!(matches!(r(&["1 2", "3 4"]), Err(SodaError::MultiValued(_))));
    }

    #[test]
    fn time_is_one_mjd_interval_and_a_malformed_one_is_a_usage_error() {
        let r = |v: &[&'static str]| {
            let mut params = vec![("ID", "butler://demo/a"), ("CIRCLE", "10 20 0.1")];
            params.extend(v.iter().map(|v| ("time", *v)));
            CutoutRequest::from_parameters(params)
        };
        assert_eq!(r(&[]).unwrap().time, None);
        assert_eq!(
            r(&["60000 60001.5"]).unwrap().time,
            Some((60000.0, 60001.5))
        );
        assert_eq!(
            r(&["-Inf +Inf"]).unwrap().time,
            Some((f64::NEG_INFINITY, f64::INFINITY))
        );
        for bad in [
            "60001 60000",
            "60000",
            "2023-01-01 2023-01-02",
            "NaN 1",
            "-Inf -Inf",
        ] {
            let e = r(&[bad]).unwrap_err();
            assert!(
                matches!(&e, SodaError::Usage(m) if m.starts_with("TIME")),
                "{bad}: {e:?}"
            );
        }
        assert!(matches!(r(&["1 2", "3 4"]), Err(SodaError::MultiValued(_))));
        let with_id = r(&["1 2"]).unwrap();
        let id = &with_id.ids[0];
        assert_eq!(with_id.options(id).time, Some((1.0, 2.0)));
    }

    #[test]
    fn several_pol_values_form_one_filter_of_stokes_codes() {
        let r = |v: &[&'static str]| {
            let mut params = vec![("ID", "butler://demo/a"), ("CIRCLE", "10 20 0.1")];
            params.extend(v.iter().map(|v| ("POL", *v)));
            CutoutRequest::from_parameters(params)
        };
        assert_eq!(r(&[]).unwrap().pol, Vec::<i32>::new());
        assert_eq!(r(&["V", "i", "V"]).unwrap().pol, vec![4, 1]);
        assert_eq!(r(&["XX", "YY"]).unwrap().pol, vec![-5, -6]);
        for bad in ["POLI", "Z", ""] {
            assert!(matches!(r(&[bad]), Err(SodaError::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn a_moc_parameter_is_a_stencil() {
        let r = CutoutRequest::from_parameters([("ID", "butler://demo/a"), ("MOC", "3/1-3 4/80")])
            .unwrap();
        assert!(
            matches!(r.stencils[..], [Stencil::Moc(_)]),
            "{:?}",
            r.stencils
        );
    }

    #[test]
    fn meta_true_after_kind_header_still_asks_for_headers_only() {
        for params in [
            [("KIND", "HEADER"), ("META", "true")],
            [("META", "true"), ("KIND", "HEADER")],
            [("META", "false"), ("KIND", "HEADER")],
        ] {
            let mut all = vec![("ID", "butler://demo/a"), ("CIRCLE", "1 2 0.1")];
            all.extend(params);
            let r = CutoutRequest::from_parameters(all).unwrap();
            assert!(r.header_only, "{params:?}");
        }
    }

    #[test]
    fn a_section_refuses_band_time_and_pol_each_alone() {
        for other in [("BAND", "1e-7 2e-7"), ("TIME", "60000 60001"), ("POL", "I")] {
            check(
                &[("ID", "butler://demo/a"), ("SUB", "[1:10,1:10]"), other],
                Err("BAND, TIME or POL"),
            );
        }
    }

    #[test]
    fn as_many_cutouts_as_the_limit_are_accepted_and_one_more_refused() {
        let ids: Vec<String> = (0..5).map(|n| format!("butler://demo/i{n}")).collect();
        let mut params: Vec<(&str, &str)> = ids.iter().map(|id| ("ID", id.as_str())).collect();
        params.extend([("CIRCLE", "1 2 0.1"), ("CIRCLE", "3 4 0.1")]);
        let at = |max| CutoutRequest::from_parameters_up_to(params.iter().copied(), max);
        assert_eq!(at(10).map(|r| r.pairs().count()), Ok(10));
        assert!(matches!(at(9), Err(SodaError::Usage(m)) if m.contains("at most 9")));
    }

    #[test]
    fn an_interval_of_one_value_is_an_interval() {
        assert_eq!(
            parse_interval("TIME", "MJD", "60000.5 60000.5"),
            Ok((60000.5, 60000.5))
        );
        assert!(parse_interval("TIME", "MJD", "60001 60000").is_err());
    }

    #[test]
    fn responseformat_is_fits_by_default_png_or_jpeg_asks_a_preview_and_others_are_refused() {
        let format = |f: Option<&str>| {
            let mut params = vec![("ID", "butler://demo/a"), ("CIRCLE", "1 2 0.1")];
            params.extend(f.map(|f| ("RESPONSEFORMAT", f)));
            CutoutRequest::from_parameters(params).map(|r| r.preview)
        };
        assert_eq!(format(None), Ok(None));
        assert_eq!(format(Some("application/fits")), Ok(None));
        assert_eq!(format(Some("image/png")), Ok(Some(PreviewFormat::Png)));
        assert_eq!(format(Some("IMAGE/PNG")), Ok(Some(PreviewFormat::Png)));
        assert_eq!(format(Some("image/jpeg")), Ok(Some(PreviewFormat::Jpeg)));
        assert_eq!(format(Some(" Image/JPEG ")), Ok(Some(PreviewFormat::Jpeg)));
        for other in ["image/gif", "image/jpg2000", "text/xml", ""] {
            assert!(
                matches!(format(Some(other)), Err(SodaError::Usage(_))),
                "{other}"
            );
        }
    }
}

#[cfg(test)]
mod fuzz {
    //! Property-based fuzzing of parameter parsing: arbitrary names and values, and values
    //! built from the characters numbers and shapes are made of, give a request or a
    //! UsageError, never a panic, and an accepted request holds only finite coordinates.

    use proptest::prelude::*;

    use super::*;

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::collection::vec(any::<char>(), 0..30).prop_map(String::from_iter),
            "(CIRCLE |POLYGON |RANGE )?([-+0-9.eEinfNa]{1,8} ){0,12}",
            "(\\[[A-Z0-9]{0,3}\\])?\\[([0-9*]{1,3}(:[0-9]{1,3}){0,2},?){0,4}\\]",
            // ASCII MOCs, with depths and indices of any size.
            "(([0-9]{1,2}/)?([0-9]{1,21}([-+][0-9]{1,21})?[ ,]?){0,4}){1,3}",
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("ID".to_owned()),
            Just("POS".to_owned()),
            Just("circle".to_owned()),
            Just("POLYGON".to_owned()),
            Just("MASK".to_owned()),
            Just("RESPONSEFORMAT".to_owned()),
            Just("META".to_owned()),
            Just("KIND".to_owned()),
            Just("SUB".to_owned()),
            Just("MOC".to_owned()),
            Just("TIME".to_owned()),
            Just("POL".to_owned()),
            "[A-Za-z]{0,6}",
        ]
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_accepts_only_finite_stencils(
            params in proptest::collection::vec((name(), value()), 0..8)
        ) {
            let pairs = params.iter().map(|(n, v)| (n.as_str(), v.as_str()));
            if let Ok(request) = CutoutRequest::from_parameters(pairs) {
                prop_assert!(!request.ids.is_empty() && !request.stencils.is_empty());
                for stencil in &request.stencils {
                    let text = format!("{stencil:?}");
                    prop_assert!(!text.contains("NaN"), "{text}");
                }
            }
        }
    }
}
