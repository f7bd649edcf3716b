//! Test fixtures shared by the geometry tests: a WCS of any projection and pixel scale, built
//! from header keywords as a FITS file would give them, and brute-force answers to compare the
//! fast paths with.

use crate::celestial::CelestialWcs;
use crate::header::{Value, WcsKeywords};
use crate::region::PixelBox;
use crate::stencil::Stencil;

/// An `nx` x `ny` image in projection `proj` (`TAN`, `SIN`, `CAR`, `MOL`…), `scale` degrees per
/// pixel, north up and east left, with (`ra`, `dec`) at the image centre.
pub(crate) fn sky_image(
    proj: &str,
    nx: usize,
    ny: usize,
    ra: f64,
    dec: f64,
    scale: f64,
) -> CelestialWcs {
    sky_image_at(
        proj,
        nx,
        ny,
        (ra, dec),
        ((nx as f64 + 1.0) / 2.0, (ny as f64 + 1.0) / 2.0),
        (scale, scale),
    )
}

/// As [`wcs`], with the reference point `crval` at 1-based pixel `crpix` and per-axis scales.
pub(crate) fn sky_image_at(
    proj: &str,
    nx: usize,
    ny: usize,
    crval: (f64, f64),
    crpix: (f64, f64),
    scale: (f64, f64),
) -> CelestialWcs {
    let text = |k: &str, v: String| (k.to_owned(), Value::Text(v));
    let real = |k: &str, v: f64| (k.to_owned(), Value::Real(v));
    let keywords = WcsKeywords {
        entries: vec![
            text("CTYPE1", format!("RA---{proj}")),
            text("CTYPE2", format!("DEC--{proj}")),
            real("CRPIX1", crpix.0),
            real("CRPIX2", crpix.1),
            real("CRVAL1", crval.0),
            real("CRVAL2", crval.1),
            real("CD1_1", -scale.0),
            real("CD2_2", scale.1),
        ],
    };
    CelestialWcs::new(nx, ny, &keywords).expect("fixture WCS")
}

/// The sky position of a pixel position, which the fixture must have.
pub(crate) fn sky(wcs: &CelestialWcs, x: f64, y: f64) -> (f64, f64) {
    wcs.pixel_to_sky(x, y).expect("pixel on the sky")
}

/// A polygon through the sky positions of pixel positions.
pub(crate) fn polygon_through(wcs: &CelestialWcs, corners: &[(f64, f64)]) -> Stencil {
    let text: Vec<String> = corners
        .iter()
        .map(|&(x, y)| {
            let (ra, dec) = sky(wcs, x, y);
            format!("{ra} {dec}")
        })
        .collect();
    Stencil::parse_polygon(&text.join(" ")).expect("fixture polygon")
}

/// The smallest rectangle holding every pixel of `pixels` whose centre is in `stencil`.
pub(crate) fn box_of_inside(
    wcs: &CelestialWcs,
    stencil: &Stencil,
    pixels: impl IntoIterator<Item = (usize, usize)>,
) -> Option<PixelBox> {
    let test = stencil.test();
    pixels
        .into_iter()
        .filter(|&(x, y)| {
            wcs.pixel_to_sky(x as f64, y as f64)
                .is_some_and(|(ra, dec)| test.contains(ra, dec))
        })
        .fold(None, |b: Option<PixelBox>, (x, y)| {
            Some(match b {
                None => PixelBox {
                    x0: x,
                    y0: y,
                    x1: x,
                    y1: y,
                },
                Some(b) => PixelBox {
                    x0: b.x0.min(x),
                    y0: b.y0.min(y),
                    x1: b.x1.max(x),
                    y1: b.y1.max(y),
                },
            })
        })
}

/// Every pixel of an `nx` x `ny` image.
pub(crate) fn every_pixel(nx: usize, ny: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..ny).flat_map(move |y| (0..nx).map(move |x| (x, y)))
}

/// Whether `outer` holds `inner`.
pub(crate) fn holds(outer: PixelBox, inner: PixelBox) -> bool {
    outer.x0 <= inner.x0 && outer.y0 <= inner.y0 && outer.x1 >= inner.x1 && outer.y1 >= inner.y1
}
