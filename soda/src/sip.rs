//! SIP distortion (Shupe et al. 2005, "The SIP convention for representing distortion in FITS
//! image headers"), done here rather than by the `wcs` crate, whose SIP polynomial evaluation is
//! wrong (mapproj 0.4's `SipCoeff::p` pairs coefficients with the wrong powers of u and v, and
//! squares the running power instead of multiplying it), which sent every stencil off the image.
//!
//! The distortion acts on pixel offsets from CRPIX before the linear transformation:
//! `u' = u + A(u, v)`, `v' = v + B(u, v)`. The forward direction (pixel to sky) is the
//! definition and is what astropy's `all_pix2world` computes. The inverse is solved by Newton's
//! method on the forward polynomials, started from the AP/BP polynomials when the header ships
//! them, so that a sky position maps back to the pixel that maps to it (AP/BP alone are only an
//! approximate fit).

use crate::header::WcsKeywords;

/// Polynomial terms `(p, q, coefficient)` of `sum c * u^p * v^q`.
#[derive(Debug, Clone, Default)]
struct Polynomial {
    terms: Vec<(i32, i32, f64)>,
}

impl Polynomial {
    /// The `PREFIX_p_q` coefficients of order `PREFIX_ORDER`, or `None` without an order.
    fn read(keywords: &WcsKeywords, prefix: &str) -> Option<Polynomial> {
        let order = keywords.real(&format!("{prefix}_ORDER"))?;
        let order = order.clamp(0.0, 9.0) as i32;
        let mut terms = Vec::new();
        for p in 0..=order {
            for q in 0..=(order - p) {
                if let Some(c) = keywords.real(&format!("{prefix}_{p}_{q}"))
                    && c != 0.0
                {
                    terms.push((p, q, c));
                }
            }
        }
        Some(Polynomial { terms })
    }

    fn at(&self, u: f64, v: f64) -> f64 {
        self.terms
            .iter()
            .map(|&(p, q, c)| c * u.powi(p) * v.powi(q))
            .sum()
    }

    /// Partial derivatives (d/du, d/dv) at (u, v).
    fn gradient(&self, u: f64, v: f64) -> (f64, f64) {
        self.terms.iter().fold((0.0, 0.0), |(du, dv), &(p, q, c)| {
            let ddu = if p > 0 {
                c * f64::from(p) * u.powi(p - 1) * v.powi(q)
            } else {
                0.0
            };
            let ddv = if q > 0 {
                c * f64::from(q) * u.powi(p) * v.powi(q - 1)
            } else {
                0.0
            };
            (du + ddu, dv + ddv)
        })
    }
}

/// The SIP distortion of one image.
#[derive(Debug, Clone)]
pub(crate) struct Sip {
    /// CRPIX1, CRPIX2 (1-based, as in the header).
    crpix: (f64, f64),
    a: Polynomial,
    b: Polynomial,
    /// AP and BP, the header's approximate inverse, used only as a starting guess.
    inverse: Option<(Polynomial, Polynomial)>,
}

/// Newton steps before giving up on inverting the distortion.
const MAX_STEPS: usize = 50;

/// Pixels: the inverse is converged when a step moves it less than this.
const TOLERANCE: f64 = 1e-10;

impl Sip {
    /// The distortion declared by `keywords`, or `None` if they declare no A and B polynomials.
    pub(crate) fn read(keywords: &WcsKeywords) -> Option<Sip> {
        let a = Polynomial::read(keywords, "A")?;
        let b = Polynomial::read(keywords, "B")?;
        let inverse = Polynomial::read(keywords, "AP").zip(Polynomial::read(keywords, "BP"));
        let crpix = (
            keywords.real("CRPIX1").unwrap_or(0.0),
            keywords.real("CRPIX2").unwrap_or(0.0),
        );
        Some(Sip {
            crpix,
            a,
            b,
            inverse,
        })
    }

    /// From a 1-based pixel position to the undistorted 1-based position that the linear part
    /// of the WCS takes.
    pub(crate) fn undistort(&self, x: f64, y: f64) -> (f64, f64) {
        let (u, v) = (x - self.crpix.0, y - self.crpix.1);
        (x + self.a.at(u, v), y + self.b.at(u, v))
    }

    /// The inverse of [`Sip::undistort`]: the 1-based pixel position whose undistorted position
    /// is (`x`, `y`), or `None` if Newton's method does not converge there.
    pub(crate) fn distort(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        let (target_u, target_v) = (x - self.crpix.0, y - self.crpix.1);
        let (mut u, mut v) = match &self.inverse {
            Some((ap, bp)) => (
                target_u + ap.at(target_u, target_v),
                target_v + bp.at(target_u, target_v),
            ),
            None => (target_u, target_v),
        };
        for _ in 0..MAX_STEPS {
            let fu = u + self.a.at(u, v) - target_u;
            let fv = v + self.b.at(u, v) - target_v;
            let (au, av) = self.a.gradient(u, v);
            let (bu, bv) = self.b.gradient(u, v);
            let (j11, j12, j21, j22) = (1.0 + au, av, bu, 1.0 + bv);
            let det = j11 * j22 - j12 * j21;
            if !det.is_finite() || det.abs() < 1e-12 {
                return None;
            }
            let du = (fu * j22 - fv * j12) / det;
            let dv = (fv * j11 - fu * j21) / det;
            u -= du;
            v -= dv;
            if !(u.is_finite() && v.is_finite()) {
                return None;
            }
            if du.abs().max(dv.abs()) < TOLERANCE * (1.0 + u.abs().max(v.abs()) * 1e-6) {
                return Some((u + self.crpix.0, v + self.crpix.1));
            }
        }
        None
    }
}

/// Whether a header keyword is a SIP term, which the `wcs` crate must not see.
pub(crate) fn is_sip_keyword(name: &str) -> bool {
    ["A_", "B_", "AP_", "BP_"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Value;

    fn keywords(entries: &[(&str, f64)]) -> WcsKeywords {
        WcsKeywords {
            entries: entries
                .iter()
                .map(|&(k, v)| (k.to_owned(), Value::Real(v)))
                .collect(),
        }
    }

    fn third_order() -> Sip {
        Sip::read(&keywords(&[
            ("CRPIX1", 100.5),
            ("CRPIX2", 80.0),
            ("A_ORDER", 3.0),
            ("B_ORDER", 3.0),
            ("A_2_0", 2e-5),
            ("A_0_2", -1e-5),
            ("A_3_0", 3e-8),
            ("A_1_2", 1e-8),
            ("B_1_1", 1.5e-5),
            ("B_0_3", -2e-8),
        ]))
        .unwrap()
    }

    #[test]
    fn undistort_adds_the_polynomials_of_the_offset_from_crpix() {
        let sip = third_order();
        let (u, v) = (50.0, -30.0);
        let (x, y) = sip.undistort(100.5 + u, 80.0 + v);
        let a = 2e-5 * u * u - 1e-5 * v * v + 3e-8 * u * u * u + 1e-8 * u * v * v;
        let b = 1.5e-5 * u * v - 2e-8 * v * v * v;
        assert!((x - (100.5 + u + a)).abs() < 1e-12, "{x}");
        assert!((y - (80.0 + v + b)).abs() < 1e-12, "{y}");
        assert_eq!(sip.undistort(100.5, 80.0), (100.5, 80.0));
    }

    #[test]
    fn distort_inverts_undistort_without_ap_bp() {
        let sip = third_order();
        for &(x, y) in &[(1.0, 1.0), (200.0, 160.0), (37.3, 150.9), (-20.0, 300.0)] {
            let (ux, uy) = sip.undistort(x, y);
            let (bx, by) = sip.distort(ux, uy).unwrap();
            assert!((bx - x).abs() < 1e-8 && (by - y).abs() < 1e-8, "{x} {y}");
        }
    }

    #[test]
    fn header_without_a_and_b_has_no_distortion() {
        assert!(Sip::read(&keywords(&[("CRPIX1", 1.0), ("A_ORDER", 2.0)])).is_none());
    }

    #[test]
    fn sip_keywords_are_recognised_and_others_are_not() {
        for name in ["A_ORDER", "B_1_1", "AP_0_2", "BP_ORDER"] {
            assert!(is_sip_keyword(name), "{name}");
        }
        for name in ["CRPIX1", "CD1_1", "PV2_1", "ALPHA"] {
            assert!(!is_sip_keyword(name), "{name}");
        }
    }
}
