//! Stamps: cutouts of exactly SIZE×SIZE pixels centred on a sky position, blank where they hang
//! over the image edge, so that the stamps of many positions (a light curve's epochs, a
//! catalogue's rows) stack into one array; or, for a bulk job's `RADIUS`, the smallest
//! rectangle of pixels that holds a circle, as a `CIRCLE` cutout is.
//!
//! [`Window`] is where a stamp lies in source pixels, on astropy's `Cutout2D` convention, so
//! a stamp here and astropy's cutout of the same position hold the same pixels.
//! `SIZE` on an ordinary cutout (`CutOptions::size`) writes one stamp as a FITS file with the
//! source's pixel type; [`cut_stamps`] cuts many stamps out of one image opened once, as
//! physical values, for packaging many stamps together.

use std::path::Path;

use fitsio::FitsFile;

use crate::SodaError;
use crate::celestial::CelestialWcs;
use crate::image::{SourceImage, lock_source};
use crate::region::{PixelBox, pixel_box};
use crate::stencil::Stencil;

/// How much of an image a stamp takes around its position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Extent {
    /// `SIZE`: exactly this many pixels a side, centred on the position and blank where it
    /// hangs over the image's edge ([`Window::centred`]).
    Size(usize),
    /// `RADIUS` (degrees): the smallest rectangle of the image's pixels that holds the circle,
    /// as a SODA `CIRCLE` cutout cuts it (so it never hangs over the edge, and its shape
    /// depends on the image).
    Radius(f64),
}

/// A rectangle of pixels in source coordinates (0-based, x along NAXIS1) that may extend past
/// the image on any side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First column; negative when the window starts left of the image.
    pub x0: i64,
    /// First row; negative when the window starts below the image.
    pub y0: i64,
    pub width: usize,
    pub height: usize,
}

/// Farther than this from the image (in pixels) a position is treated as unprojectable, which
/// keeps the integer arithmetic of windows far from overflow.
const FARTHEST_PIXEL: f64 = 1e12;

impl Window {
    /// The `size`×`size` window around the 0-based pixel position (`x`, `y`), starting at
    /// `ceil(x - size/2)` as astropy's `Cutout2D` does: the position lies in the central pixel
    /// (odd sizes) or in one of the two central ones (even sizes). `None` for a size of 0 or
    /// a position that is not a finite number of pixels away.
    pub fn centred(x: f64, y: f64, size: usize) -> Option<Window> {
        let near = |v: f64| v.is_finite() && v.abs() < FARTHEST_PIXEL;
        if size == 0 || !near(x) || !near(y) {
            return None;
        }
        let half = size as f64 / 2.0;
        Some(Window {
            x0: (x - half).ceil() as i64,
            y0: (y - half).ceil() as i64,
            width: size,
            height: size,
        })
    }

    /// The window that is exactly `region`.
    pub fn of(region: PixelBox) -> Window {
        Window {
            x0: region.x0 as i64,
            y0: region.y0 as i64,
            width: region.width(),
            height: region.height(),
        }
    }

    /// The part of the window inside an image of `nx`×`ny` pixels, `None` if it misses it.
    pub fn overlap(&self, nx: usize, ny: usize) -> Option<PixelBox> {
        let clip = |start: i64, len: usize, n: usize| -> Option<(usize, usize)> {
            let first = start.max(0);
            let last = (start + len as i64 - 1).min(n as i64 - 1);
            (len > 0 && n > 0 && first <= last).then_some((first as usize, last as usize))
        };
        let (x0, x1) = clip(self.x0, self.width, nx)?;
        let (y0, y1) = clip(self.y0, self.height, ny)?;
        Some(PixelBox { x0, y0, x1, y1 })
    }
}

/// One stamp cut by [`cut_stamps`].
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    /// Where the stamp lies in the source's pixels.
    pub window: Window,
    /// The position's pixel coordinates in the source, 1-based as in FITS (the centre of the
    /// first pixel is (1, 1)).
    pub pixel: (f64, f64),
    /// The window's physical values (BSCALE and BZERO applied), NAXIS1 varying fastest as in
    /// FITS; NaN for a blank source pixel and off the image.
    pub pixels: Vec<f32>,
}

impl Stamp {
    /// The stamp's reference pixel: the source's `CRPIXi` moved by the stamp's offset, so that
    /// the source's WCS with these two values maps the stamp's pixels.
    pub fn crpix(&self, source_crpix: (f64, f64)) -> (f64, f64) {
        (
            source_crpix.0 - self.window.x0 as f64,
            source_crpix.1 - self.window.y0 as f64,
        )
    }
}

/// The stamps of one image: the image's own WCS header cards (to which each stamp's
/// [`Stamp::crpix`] applies) and one stamp, or the reason there is none, per position.
#[derive(Debug)]
pub struct ImageStamps {
    /// `CRPIX1`, `CRPIX2` of the source (0 where absent, as FITS defines).
    pub crpix: (f64, f64),
    /// The source's `MJD-OBS`, if it has one.
    pub mjd: Option<f64>,
    /// The source's celestial WCS keywords as FITS header cards, in the order they are read.
    pub wcs_cards: Vec<String>,
    pub stamps: Vec<Result<Stamp, SodaError>>,
}

/// The most source pixels read at once to serve many stamps in one pass; a bigger spread of
/// stamps is read stamp by stamp.
const ONE_PASS_PIXELS: usize = 1 << 24;

/// Cuts a stamp of its [`Extent`] around each of `stamps` (ICRS RA, Dec in degrees, and
/// extent) out of the image at `source` (its `extension`, else the first image HDU; axes beyond
/// the celestial two at their first plane), opening the file once. The pixels the stamps cover
/// are read in one pass when they lie within [`ONE_PASS_PIXELS`] of each other, else stamp by
/// stamp. A stamp that misses the image is a [`SodaError::NoOverlap`] in its place, as is one
/// whose centre cannot be projected, and a radius stamp wider or taller than `max_side` pixels
/// is a usage error in its place (before any pixel is read); an unreadable image or WCS fails
/// the whole call.
pub fn cut_stamps(
    source: &Path,
    source_name: &str,
    extension: Option<&str>,
    stamps: &[(f64, f64, Extent)],
    max_side: Option<usize>,
) -> Result<ImageStamps, SodaError> {
    if stamps.iter().any(|s| s.2 == Extent::Size(0)) {
        return Err(SodaError::usage("SIZE must be at least 1 pixel"));
    }
    let _guard = lock_source(source);
    let mut file = FitsFile::open(source)?;
    let image = SourceImage::find(&mut file, extension)?;
    let wcs = CelestialWcs::new(image.nx, image.ny, &image.keywords)?;
    let positions: Vec<(f64, f64)> = stamps.iter().map(|&(ra, dec, _)| (ra, dec)).collect();
    // Each position's 1-based pixel, window and the part of the window on the image, or why
    // it has none.
    type Placed = ((f64, f64), Window, PixelBox);
    let no_overlap = || SodaError::NoOverlap {
        source: source_name.to_owned(),
    };
    let placed: Vec<Result<Placed, SodaError>> = wcs
        .sky_to_pixels(&positions)
        .into_iter()
        .zip(stamps)
        .map(|(pixel, &(ra, dec, extent))| {
            let (x, y) = pixel.ok_or_else(no_overlap)?;
            let (window, region) = match extent {
                Extent::Size(size) => {
                    let window = Window::centred(x, y, size).ok_or_else(no_overlap)?;
                    (
                        window,
                        window.overlap(image.nx, image.ny).ok_or_else(no_overlap)?,
                    )
                }
                Extent::Radius(radius) => {
                    let circle = Stencil::circle(ra, dec, radius)?;
                    let region =
                        pixel_box(&wcs, image.nx, image.ny, &circle).ok_or_else(no_overlap)?;
                    if let Some(max) = max_side
                        && region.width().max(region.height()) > max
                    {
                        return Err(SodaError::usage(format!(
                            "a radius of {radius} degrees takes {}x{} pixels of this image, \
                             over the limit of {max} pixels a side (max_stamp_size)",
                            region.width(),
                            region.height()
                        )));
                    }
                    (Window::of(region), region)
                }
            };
            Ok(((x + 1.0, y + 1.0), window, region))
        })
        .collect();
    let union = placed
        .iter()
        .flatten()
        .map(|(_, _, r)| *r)
        .reduce(|a, b| PixelBox {
            x0: a.x0.min(b.x0),
            y0: a.y0.min(b.y0),
            x1: a.x1.max(b.x1),
            y1: a.y1.max(b.y1),
        });
    let block = match union {
        Some(u) if u.width() * u.height() <= ONE_PASS_PIXELS => {
            let pixels = image.read_physical(&mut file, u.x0..u.x1 + 1, u.y0..u.y1 + 1)?;
            Some((u, pixels))
        }
        _ => None,
    };
    let mut cut = Vec::with_capacity(positions.len());
    for place in placed {
        let (pixel, window, region) = match place {
            Ok(placed) => placed,
            Err(e) => {
                cut.push(Err(e));
                continue;
            }
        };
        let stride = window.width;
        let mut pixels = vec![f32::NAN; stride * window.height];
        let dx = (region.x0 as i64 - window.x0) as usize;
        let dy = (region.y0 as i64 - window.y0) as usize;
        let width = region.width();
        match &block {
            Some((u, block)) => {
                for row in 0..region.height() {
                    let from = (region.y0 + row - u.y0) * u.width() + region.x0 - u.x0;
                    let to = (dy + row) * stride + dx;
                    pixels[to..to + width].copy_from_slice(&block[from..from + width]);
                }
            }
            None => {
                let read = image.read_physical(
                    &mut file,
                    region.x0..region.x1 + 1,
                    region.y0..region.y1 + 1,
                )?;
                for (row, line) in read.chunks(width).enumerate() {
                    let to = (dy + row) * stride + dx;
                    pixels[to..to + width].copy_from_slice(line);
                }
            }
        }
        cut.push(Ok(Stamp {
            window,
            pixel,
            pixels,
        }));
    }
    let keywords = &image.keywords;
    Ok(ImageStamps {
        crpix: (
            keywords.real("CRPIX1").unwrap_or(0.0),
            keywords.real("CRPIX2").unwrap_or(0.0),
        ),
        mjd: keywords.real("MJD-OBS"),
        wcs_cards: keywords.cards(),
        stamps: cut,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts_where_astropy_cutout2d_starts() {
        // astropy: ceil(pos - size / 2) along each axis.
        let w = Window::centred(100.3, 50.6, 32).unwrap();
        assert_eq!((w.x0, w.y0, w.width, w.height), (85, 35, 32, 32));
        let w = Window::centred(100.3, 100.6, 51).unwrap();
        assert_eq!((w.x0, w.y0), (75, 76));
        // The position is in the central pixel of an odd stamp.
        assert_eq!(100 - w.x0, 25);
        assert_eq!(101 - w.y0, 25);
    }

    #[test]
    fn window_over_the_edge_overlaps_only_the_image_part() {
        let w = Window::centred(1.0, 8.2, 8).unwrap();
        assert_eq!((w.x0, w.y0), (-3, 5));
        let r = w.overlap(10, 10).unwrap();
        assert_eq!((r.x0, r.x1, r.y0, r.y1), (0, 4, 5, 9));
        assert!(
            Window::centred(-20.0, 5.0, 8)
                .unwrap()
                .overlap(10, 10)
                .is_none()
        );
        assert!(
            Window::centred(5.0, 5.0, 8)
                .unwrap()
                .overlap(0, 10)
                .is_none()
        );
    }

    #[test]
    fn unusable_positions_and_sizes_have_no_window() {
        assert!(Window::centred(f64::NAN, 1.0, 8).is_none());
        assert!(Window::centred(1.0, f64::INFINITY, 8).is_none());
        assert!(Window::centred(1e300, 1.0, 8).is_none());
        assert!(Window::centred(1.0, 1.0, 0).is_none());
    }

    #[test]
    fn crpix_moves_by_the_window_offset() {
        let stamp = Stamp {
            window: Window {
                x0: -3,
                y0: 40,
                width: 8,
                height: 8,
            },
            pixel: (2.0, 45.0),
            pixels: Vec::new(),
        };
        assert_eq!(stamp.crpix((100.5, 50.0)), (103.5, 10.0));
    }
}
