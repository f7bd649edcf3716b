//! The SODA parameters of one cutout request, parsed once into typed values: the frontend parses
//! them to reject bad input before a job exists, the worker parses the stored job parameters
//! again to run it.

use crate::error::SodaError;
use crate::source_id::SourceId;
use crate::stencil::Stencil;

/// The media type of the FITS cutouts, the one `RESPONSEFORMAT` this service produces today.
pub const FITS: &str = "application/fits";

/// The spatial-stencil parameters, in the order SODA lists them.
const STENCIL_PARAMETERS: [&str; 3] = ["POS", "CIRCLE", "POLYGON"];

/// A validated cutout request: which images, cut with which stencils.
///
/// The job model allows several IDs and several stencils (one cutout per pair); this version of
/// the service accepts one of each and says so with `MultiValuedParamNotSupported`.
#[derive(Debug, Clone, PartialEq)]
pub struct CutoutRequest {
    pub ids: Vec<SourceId>,
    pub stencils: Vec<Stencil>,
}

impl CutoutRequest {
    /// Parses DALI parameters (names case-insensitive, as `(name, value)` pairs). Parameters
    /// that SODA does not define are ignored, as DALI asks of services.
    pub fn from_parameters<'a>(
        parameters: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<CutoutRequest, SodaError> {
        let mut ids = Vec::new();
        let mut stencils = Vec::new();
        for (name, value) in parameters {
            let name = name.to_ascii_uppercase();
            match name.as_str() {
                "ID" => ids.push(SourceId::parse(value.trim())?),
                "POS" => stencils.push(Stencil::parse_pos(value)?),
                "CIRCLE" => stencils.push(Stencil::parse_circle(value)?),
                "POLYGON" => stencils.push(Stencil::parse_polygon(value)?),
                "RESPONSEFORMAT" => {
                    let format = value.trim();
                    if !format.eq_ignore_ascii_case(FITS) && !format.eq_ignore_ascii_case("fits") {
                        return Err(SodaError::Usage(format!(
                            "RESPONSEFORMAT {format:?} is not supported (only {FITS})"
                        )));
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
        if ids.len() > 1 {
            return Err(SodaError::MultiValued(format!(
                "ID given {} times; one image per request is supported",
                ids.len()
            )));
        }
        if stencils.is_empty() {
            return Err(SodaError::Usage(format!(
                "a spatial stencil is required: one of {}",
                STENCIL_PARAMETERS.join(", ")
            )));
        }
        if stencils.len() > 1 {
            return Err(SodaError::MultiValued(format!(
                "{} stencils given ({}); one per request is supported",
                stencils.len(),
                STENCIL_PARAMETERS.join(", ")
            )));
        }
        Ok(CutoutRequest { ids, stencils })
    }

    /// Every (image, stencil) pair, each of which gives one result.
    pub fn pairs(&self) -> impl Iterator<Item = (&SourceId, &Stencil)> {
        self.ids
            .iter()
            .flat_map(|id| self.stencils.iter().map(move |s| (id, s)))
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
    fn repeated_parameters_are_not_supported_yet() {
        let r = CutoutRequest::from_parameters([
            ("ID", "butler://demo/a"),
            ("ID", "butler://demo/b"),
            ("CIRCLE", "10 20 0.1"),
        ]);
        assert!(matches!(r, Err(SodaError::MultiValued(_))));
        let r = CutoutRequest::from_parameters([
            ("ID", "butler://demo/a"),
            ("CIRCLE", "10 20 0.1"),
            ("POS", "CIRCLE 10 20 0.1"),
        ]);
        assert!(matches!(r, Err(SodaError::MultiValued(_))));
    }

    #[test]
    fn only_fits_is_produced() {
        check(
            &[
                ("ID", "butler://demo/a"),
                ("CIRCLE", "1 2 0.1"),
                ("RESPONSEFORMAT", "application/fits"),
            ],
            Ok(1),
        );
        check(
            &[
                ("ID", "butler://demo/a"),
                ("CIRCLE", "1 2 0.1"),
                ("RESPONSEFORMAT", "image/png"),
            ],
            Err("RESPONSEFORMAT"),
        );
    }
}
