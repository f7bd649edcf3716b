//! A linear axis beyond the celestial two (world = CRVAL + CDELT * (pixel - CRPIX)), the shape
//! that `BAND`, `TIME` and `POL` cut: which planes hold which world values, and the world range
//! the axis covers. `spectral`, `temporal` and `polarization` say which axis is which and turn
//! its values into metres, MJD or Stokes codes; this module knows no units.

use std::ops::Range;

use crate::SodaError;
use crate::header::WcsKeywords;

/// The axes beyond the celestial two that have a `CTYPEn`: each one's index among them (0 for
/// NAXIS3), its length (from `extra`, NAXIS3 first) and its `CTYPEn`, trimmed.
pub(crate) fn typed_axes<'a>(
    keywords: &'a WcsKeywords,
    extra: &'a [usize],
) -> impl Iterator<Item = (usize, usize, &'a str)> + 'a {
    extra.iter().enumerate().filter_map(|(extra_index, &len)| {
        let ctype = keywords.text(&format!("CTYPE{}", extra_index + 3))?;
        Some((extra_index, len, ctype.trim()))
    })
}

/// A linear axis of an image, its values already in the unit its caller works in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LinearAxis {
    /// Index among the axes beyond the celestial two: 0 for NAXIS3.
    pub(crate) extra_index: usize,
    /// Number of planes.
    pub(crate) len: usize,
    /// World value of the centre of 1-based pixel `crpix`, and per pixel.
    crval: f64,
    cdelt: f64,
    crpix: f64,
}

impl LinearAxis {
    /// Reads the CRVAL, CDELT (or CD, or CDELT times PC) and CRPIX of extra axis `extra_index`
    /// (of `len` planes), its values becoming `offset + scale * value`. A width of 0 per plane
    /// is a bad image: no plane could be told from another.
    pub(crate) fn read(
        keywords: &WcsKeywords,
        extra_index: usize,
        len: usize,
        scale: f64,
        offset: f64,
    ) -> Result<LinearAxis, SodaError> {
        let n = extra_index + 3;
        let cdelt = match keywords.real(&format!("CD{n}_{n}")) {
            Some(cd) => cd,
            None => {
                keywords.real(&format!("CDELT{n}")).unwrap_or(1.0)
                    * keywords.real(&format!("PC{n}_{n}")).unwrap_or(1.0)
            }
        };
        if cdelt == 0.0 || !cdelt.is_finite() {
            return Err(SodaError::BadImage(format!(
                "axis {n} has no width per plane (CDELT{n} {cdelt})"
            )));
        }
        Ok(LinearAxis {
            extra_index,
            len,
            crval: offset + keywords.real(&format!("CRVAL{n}")).unwrap_or(0.0) * scale,
            cdelt: cdelt * scale,
            crpix: keywords.real(&format!("CRPIX{n}")).unwrap_or(0.0),
        })
    }

    /// The world value of the centre of 0-based plane `plane`.
    pub(crate) fn value(&self, plane: usize) -> f64 {
        self.crval + self.cdelt * (plane as f64 + 1.0 - self.crpix)
    }

    /// The world values (low then high) of the outer edges of the first and last planes: the
    /// interval values that can select something.
    pub(crate) fn range(&self) -> (f64, f64) {
        let edge = |pixel: f64| self.crval + self.cdelt * (pixel - self.crpix);
        let (a, b) = (edge(0.5), edge(self.len as f64 + 0.5));
        (a.min(b), a.max(b))
    }

    /// The 0-based planes whose centre values lie in `(lo, hi)` (bounds included, possibly
    /// infinite), or `None` if none does.
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
