//! The spectral axis of a cube and SODA's `BAND` on it: a wavelength interval in metres becomes
//! the range of planes whose centres lie in it.
//!
//! Only linear wavelength axes (`CTYPEn = 'WAVE'`, world = CRVAL + CDELT * (pixel - CRPIX)) are
//! understood; frequency or log-wavelength axes (`FREQ`, `WAVE-LOG`...) are refused rather than
//! cut wrongly.

use std::ops::Range;

use crate::SodaError;
use crate::header::WcsKeywords;

/// A linear wavelength axis of an image.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpectralAxis {
    /// Index among the axes beyond the celestial two: 0 for NAXIS3.
    pub(crate) extra_index: usize,
    /// Number of planes.
    len: usize,
    /// Wavelength (metres) of the centre of 1-based pixel `crpix`, and per pixel.
    crval: f64,
    cdelt: f64,
    crpix: f64,
}

impl SpectralAxis {
    /// The wavelength axis among the axes beyond the first two (`extra` holds their lengths,
    /// NAXIS3 first), `None` if there is none, an error if it is not a linear WAVE axis.
    pub(crate) fn find(
        keywords: &WcsKeywords,
        extra: &[usize],
    ) -> Result<Option<SpectralAxis>, SodaError> {
        for (extra_index, &len) in extra.iter().enumerate() {
            let n = extra_index + 3;
            let Some(ctype) = keywords.text(&format!("CTYPE{n}")) else {
                continue;
            };
            let ctype = ctype.trim();
            if ![
                "WAVE", "FREQ", "ENER", "WAVN", "VRAD", "VOPT", "ZOPT", "AWAV", "VELO",
            ]
            .iter()
            .any(|p| ctype.starts_with(p))
            {
                continue;
            }
            if ctype != "WAVE" {
                return Err(SodaError::BadImage(format!(
                    "spectral axis {n} is {ctype:?}: only linear wavelength (WAVE) is supported"
                )));
            }
            let metres = unit_in_metres(keywords.text(&format!("CUNIT{n}")).unwrap_or("m"))?;
            let cdelt = match keywords.real(&format!("CD{n}_{n}")) {
                Some(cd) => cd,
                None => {
                    keywords.real(&format!("CDELT{n}")).unwrap_or(1.0)
                        * keywords.real(&format!("PC{n}_{n}")).unwrap_or(1.0)
                }
            };
            if cdelt == 0.0 || !cdelt.is_finite() {
                return Err(SodaError::BadImage(format!(
                    "spectral axis {n} has no width per plane (CDELT{n} {cdelt})"
                )));
            }
            return Ok(Some(SpectralAxis {
                extra_index,
                len,
                crval: keywords.real(&format!("CRVAL{n}")).unwrap_or(0.0) * metres,
                cdelt: cdelt * metres,
                crpix: keywords.real(&format!("CRPIX{n}")).unwrap_or(0.0),
            }));
        }
        Ok(None)
    }

    /// The wavelengths (metres, low then high) of the outer edges of the first and last planes:
    /// the `BAND` values that can select something.
    pub(crate) fn range(&self) -> (f64, f64) {
        let edge = |pixel: f64| self.crval + self.cdelt * (pixel - self.crpix);
        let (a, b) = (edge(0.5), edge(self.len as f64 + 0.5));
        (a.min(b), a.max(b))
    }

    /// The 0-based planes whose centre wavelengths lie in `band` (metres, bounds included,
    /// possibly infinite), or `None` if none does.
    pub(crate) fn planes(&self, (lo, hi): (f64, f64)) -> Option<Range<usize>> {
        // Plane k (0-based) is pixel k + 1: its centre is at crval + cdelt * (k + 1 - crpix).
        let plane = |w: f64| (w - self.crval) / self.cdelt + self.crpix - 1.0;
        let (a, b) = (plane(lo), plane(hi));
        let (first, last) = if a <= b { (a, b) } else { (b, a) };
        // A centre exactly on a bound counts; the slack absorbs rounding of the division.
        let first = (first - 1e-9).ceil().max(0.0);
        let last = (last + 1e-9).floor().min(self.len as f64 - 1.0);
        (first <= last).then_some(first as usize..last as usize + 1)
    }
}

/// Metres per unit of a FITS wavelength unit.
fn unit_in_metres(unit: &str) -> Result<f64, SodaError> {
    Ok(match unit.trim() {
        "m" | "" => 1.0,
        "cm" => 1e-2,
        "mm" => 1e-3,
        "um" => 1e-6,
        "nm" => 1e-9,
        "Angstrom" | "angstrom" => 1e-10,
        "pm" => 1e-12,
        other => {
            return Err(SodaError::BadImage(format!(
                "wavelength unit {other:?} not understood"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Value;

    fn axis(unit: &str, crval: f64, cdelt: f64, crpix: f64) -> SpectralAxis {
        let text = |k: &str, v: &str| (k.to_owned(), Value::Text(v.to_owned()));
        let real = |k: &str, v: f64| (k.to_owned(), Value::Real(v));
        let keywords = WcsKeywords {
            entries: vec![
                text("CTYPE3", "WAVE"),
                text("CUNIT3", unit),
                real("CRVAL3", crval),
                real("CDELT3", cdelt),
                real("CRPIX3", crpix),
            ],
        };
        SpectralAxis::find(&keywords, &[10]).unwrap().unwrap()
    }

    #[test]
    fn band_selects_the_planes_whose_centres_it_holds() {
        // Planes 0..10 at 500, 510, ... 590 nm.
        let a = axis("nm", 500.0, 10.0, 1.0);
        assert_eq!(a.planes((505e-9, 530e-9)), Some(1..4));
        assert_eq!(a.planes((510e-9, 510e-9)), Some(1..2));
        assert_eq!(a.planes((f64::NEG_INFINITY, 515e-9)), Some(0..2));
        assert_eq!(a.planes((575e-9, f64::INFINITY)), Some(8..10));
        assert_eq!(a.planes((f64::NEG_INFINITY, f64::INFINITY)), Some(0..10));
        assert_eq!(a.planes((591e-9, 700e-9)), None);
        assert_eq!(a.planes((501e-9, 509e-9)), None);
        let (lo, hi) = a.range();
        assert!(
            (lo - 495e-9).abs() < 1e-15 && (hi - 595e-9).abs() < 1e-15,
            "{lo} {hi}"
        );
    }

    #[test]
    fn band_works_on_a_decreasing_axis_in_other_units() {
        // Planes 0..10 at 2.0, 1.9, ... 1.1 micrometres, reference pixel in the middle.
        let a = axis("um", 1.5, -0.1, 6.0);
        assert_eq!(a.planes((1.55e-6, 1.85e-6)), Some(2..5));
        let (lo, hi) = a.range();
        assert!(
            (lo - 1.05e-6).abs() < 1e-15 && (hi - 2.05e-6).abs() < 1e-15,
            "{lo} {hi}"
        );
    }

    #[test]
    fn non_linear_or_frequency_axes_are_refused() {
        for ctype in ["FREQ", "WAVE-LOG"] {
            let keywords = WcsKeywords {
                entries: vec![("CTYPE3".to_owned(), Value::Text(ctype.to_owned()))],
            };
            assert!(SpectralAxis::find(&keywords, &[4]).is_err(), "{ctype}");
        }
        let keywords = WcsKeywords {
            entries: vec![("CTYPE3".to_owned(), Value::Text("STOKES".to_owned()))],
        };
        assert_eq!(SpectralAxis::find(&keywords, &[4]), Ok(None));
    }
}
