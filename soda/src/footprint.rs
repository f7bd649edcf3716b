//! Where an image lies on the sky, read from its WCS, so that a DataLink service descriptor can
//! tell a client which `CIRCLE`, `POLYGON`, `POS` and `BAND` values make sense for this image.

use std::path::Path;

use fitsio::FitsFile;

use crate::SodaError;
use crate::celestial::CelestialWcs;
use crate::image::{SourceImage, image_observation_time, lock_source};
use crate::spectral::wavelength_axis;
use crate::sphere::{self, Vec3};
use crate::{polarization, temporal};

/// Samples per image edge when looking for the point furthest from the centre: edges of a
/// non-linear projection bulge, so the corners alone can understate the enclosing circle.
const EDGE_SAMPLES: usize = 32;

/// The sky footprint of an image, in ICRS degrees.
#[derive(Debug, Clone, PartialEq)]
pub struct Footprint {
    /// Columns and rows of the image (NAXIS1, NAXIS2).
    pub size: (usize, usize),
    /// RA and Dec of the centre of the pixel grid.
    pub center: (f64, f64),
    /// Radius of the circle around `center` that contains the whole image.
    pub radius_deg: f64,
    /// The outer corners of the corner pixels, counter-clockwise as DALI draws polygons (RA
    /// increasing to the right, Dec up), so that the list is a valid `POLYGON` value.
    pub corners: [(f64, f64); 4],
    /// The wavelengths (metres, low and high) that the image's linear wavelength axis covers,
    /// the outer edges of its first and last planes; `None` for an image without one.
    pub band: Option<(f64, f64)>,
    /// The MJD interval `TIME` can select: the edges of the first and last planes of the
    /// image's time axis, else the image's observation interval; `None` when it states neither.
    pub time: Option<(f64, f64)>,
    /// The `POL` names of the planes of the image's Stokes axis, in axis order (empty: none).
    pub pol: Vec<&'static str>,
}

impl Footprint {
    /// The enclosing circle as a DALI `circle` value: `ra dec radius`.
    pub fn circle_value(&self) -> String {
        format!("{} {} {}", self.center.0, self.center.1, self.radius_deg)
    }

    /// The corners as a DALI `polygon` value: `ra1 dec1 ra2 dec2 ...`.
    pub fn polygon_value(&self) -> String {
        self.corners
            .iter()
            .map(|(ra, dec)| format!("{ra} {dec}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Reads the image HDU of the FITS file at `path` (the one named `extension`, else the first
/// image) and computes its footprint from the WCS.
pub fn footprint(path: &Path, extension: Option<&str>) -> Result<Footprint, SodaError> {
    let (nx, ny, wcs, band, time, pol) = {
        let _guard = lock_source(path);
        let mut file = FitsFile::open(path)?;
        let image = SourceImage::find(&mut file, extension)?;
        let wcs = CelestialWcs::new(image.nx, image.ny, &image.keywords)?;
        // A spectral axis that BAND cannot cut (FREQ, WAVE-LOG) has no BAND range to advertise;
        // a cutout that names BAND on it says why.
        let band = wavelength_axis(&image.keywords, &image.extra)
            .ok()
            .flatten()
            .map(|axis| axis.range());
        // Likewise a time axis in a unit TIME cannot read, or a date that is no date.
        let time = match temporal::time_axis(&image.keywords, &image.extra) {
            Ok(Some(axis)) => Some(axis.range()),
            Ok(None) => image_observation_time(&mut file, &image.hdu).ok().flatten(),
            Err(_) => None,
        };
        let pol = polarization::stokes_axis(&image.keywords, &image.extra)
            .ok()
            .flatten()
            .map(|axis| polarization::names(&axis))
            .unwrap_or_default();
        (image.nx, image.ny, wcs, band, time, pol)
    };
    let sky = |x: f64, y: f64| {
        wcs.pixel_to_sky(x, y)
            .ok_or_else(|| SodaError::BadImage(format!("pixel ({x}, {y}) has no sky position")))
    };
    // Pixel i covers [i - 0.5, i + 0.5]: the footprint is the outer edge of the edge pixels.
    let (x0, y0, x1, y1) = (-0.5, -0.5, nx as f64 - 0.5, ny as f64 - 0.5);
    let center = sky((x0 + x1) / 2.0, (y0 + y1) / 2.0)?;
    let mut corners = [sky(x0, y0)?, sky(x1, y0)?, sky(x1, y1)?, sky(x0, y1)?];
    let centre_vec = sphere::unit_vector(center.0, center.1);
    let v: Vec<Vec3> = corners
        .iter()
        .map(|&(r, d)| sphere::unit_vector(r, d))
        .collect();
    // Seen from outside the sphere at the centre, RA grows to the right: counter-clockwise
    // means the turn a → b → c points out of the sphere, towards the centre's direction.
    let ab = [v[1][0] - v[0][0], v[1][1] - v[0][1], v[1][2] - v[0][2]];
    let ac = [v[2][0] - v[0][0], v[2][1] - v[0][1], v[2][2] - v[0][2]];
    if sphere::dot(sphere::cross(ab, ac), centre_vec) < 0.0 {
        corners.reverse();
    }
    let mut radius_deg: f64 = 0.0;
    for i in 0..=EDGE_SAMPLES {
        let t = i as f64 / EDGE_SAMPLES as f64;
        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        for (px, py) in [(x, y0), (x, y1), (x0, y), (x1, y)] {
            let (ra, dec) = sky(px, py)?;
            radius_deg = radius_deg.max(sphere::separation_deg(
                centre_vec,
                sphere::unit_vector(ra, dec),
            ));
        }
    }
    Ok(Footprint {
        size: (nx, ny),
        center,
        radius_deg,
        corners,
        band,
        time,
        pol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Stencil, SyntheticImage, write_synthetic_image};

    fn image(ra_deg: f64, dec_deg: f64) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.fits");
        write_synthetic_image(
            &path,
            &SyntheticImage {
                nx: 200,
                ny: 100,
                ra_deg,
                dec_deg,
                pixel_scale_deg: 1.0 / 3600.0,
            },
        )
        .expect("image");
        (dir, path)
    }

    #[test]
    fn footprint_of_a_tan_image_has_its_centre_and_half_diagonal() {
        let (_dir, path) = image(150.0, 2.0);
        let f = footprint(&path, None).expect("footprint");
        assert_eq!(f.size, (200, 100));
        assert!((f.center.0 - 150.0).abs() < 1e-6, "{:?}", f.center);
        assert!((f.center.1 - 2.0).abs() < 1e-6, "{:?}", f.center);
        // Half the diagonal of 200 x 100 one-arcsecond pixels.
        let half_diagonal = (100.0f64.hypot(50.0)) / 3600.0;
        assert!(
            (f.radius_deg - half_diagonal).abs() < 1e-6,
            "{} vs {half_diagonal}",
            f.radius_deg
        );
    }

    #[test]
    fn footprint_corners_run_counter_clockwise_and_parse_as_a_polygon() {
        let (_dir, path) = image(0.0, 0.0);
        let f = footprint(&path, None).expect("footprint");
        // Signed area in (RA, Dec) with RA unwrapped around 0: positive is counter-clockwise.
        let unwrap = |ra: f64| if ra > 180.0 { ra - 360.0 } else { ra };
        let c: Vec<(f64, f64)> = f.corners.iter().map(|&(r, d)| (unwrap(r), d)).collect();
        let area: f64 = (0..4)
            .map(|i| {
                let (a, b) = (c[i], c[(i + 1) % 4]);
                a.0 * b.1 - b.0 * a.1
            })
            .sum();
        assert!(area > 0.0, "{:?}", f.corners);
        Stencil::parse_polygon(&f.polygon_value()).expect("a valid POLYGON");
        Stencil::parse_circle(&f.circle_value()).expect("a valid CIRCLE");
    }

    #[test]
    fn footprint_of_a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(footprint(&dir.path().join("none.fits"), None).is_err());
    }
}
