//! The spectral axis of a cube and SODA's `BAND` on it: a wavelength interval in metres becomes
//! the range of planes whose centres lie in it.
//!
//! Only linear wavelength axes (`CTYPEn = 'WAVE'`, world = CRVAL + CDELT * (pixel - CRPIX)) are
//! understood; frequency or log-wavelength axes (`FREQ`, `WAVE-LOG`...) are refused rather than
//! cut wrongly.

use crate::SodaError;
use crate::axis::{LinearAxis, typed_axes};
use crate::header::WcsKeywords;

/// The linear wavelength axis (values in metres) among the axes beyond the first two (`extra`
/// holds their lengths, NAXIS3 first), `None` if there is none, an error if the image's
/// spectral axis is not a linear WAVE axis.
pub(crate) fn wavelength_axis(
    keywords: &WcsKeywords,
    extra: &[usize],
) -> Result<Option<LinearAxis>, SodaError> {
    for (extra_index, len, ctype) in typed_axes(keywords, extra) {
        let n = extra_index + 3;
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
        return LinearAxis::read(keywords, extra_index, len, metres, 0.0).map(Some);
    }
    Ok(None)
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

    fn axis(unit: &str, crval: f64, cdelt: f64, crpix: f64) -> LinearAxis {
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
        wavelength_axis(&keywords, &[10]).unwrap().unwrap()
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
            assert!(wavelength_axis(&keywords, &[4]).is_err(), "{ctype}");
        }
        let keywords = WcsKeywords {
            entries: vec![("CTYPE3".to_owned(), Value::Text("STOKES".to_owned()))],
        };
        assert_eq!(wavelength_axis(&keywords, &[4]), Ok(None));
    }
}
