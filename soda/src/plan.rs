//! Planning a cutout on its image's header alone: the image HDU, its celestial WCS, the pixel
//! rectangle of the stencil (or of a `SIZE` stamp) and the planes of the other axes that
//! `BAND`, `TIME`, `POL` and `SUB` keep. A plan reads no pixel, so it also answers how big a
//! cutout would be ([`cutout_size`]) and which bytes of the file it reads ([`cutout_reads`]).

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use fitsio::FitsFile;

use crate::SodaError;
use crate::celestial::CelestialWcs;
use crate::image::{SourceImage, image_observation_time, lock_source};
use crate::region::{PixelBox, pixel_box};
use crate::spectral::wavelength_axis;
use crate::stamp::Window;
use crate::stencil::Stencil;
use crate::{polarization, temporal};

/// How to cut, beyond where.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CutOptions {
    /// Blank the pixels of the rectangle whose centres lie outside the stencil: NaN for
    /// floating-point images, the BLANK value for integer images (the source's BLANK, or the
    /// type's smallest value, which is then declared as BLANK).
    pub mask: bool,
    /// SODA `BAND`: keep only the planes of the wavelength axis whose centres lie in this
    /// interval (metres, bounds possibly infinite). Other axes beyond the celestial two are
    /// always kept whole.
    pub band: Option<(f64, f64)>,
    /// SODA `TIME`: an MJD interval (bounds possibly infinite). On an image with a time axis,
    /// the planes whose centres lie in it are kept; on one without, the whole image is kept if
    /// its observation interval meets it, and none of it otherwise.
    pub time: Option<(f64, f64)>,
    /// SODA `POL`: the FITS Stokes codes to keep along the image's Stokes axis (empty: all);
    /// the planes from the first holding one to the last are kept (see `polarization`).
    pub pol: Vec<i32>,
    /// The `EXTNAME` of the image HDU to cut (the ID's `?ext=`); `None` takes the primary HDU
    /// or, when that is empty, the first image extension.
    pub extension: Option<String>,
    /// `SIZE` (a Skycut extension): the cutout is a stamp of exactly this many pixels a side,
    /// centred on the stencil's centre (a circle's; see [`crate::stamp::Window::centred`]),
    /// blanked where it hangs over the image edge, instead of the stencil's smallest rectangle.
    pub size: Option<usize>,
}

/// What a cutout will copy: the image HDU, its celestial WCS, the pixel rectangle of the stencil
/// and the planes of the other axes (all of them, or the `BAND`'s).
pub(crate) struct Plan {
    pub(crate) image: SourceImage,
    pub(crate) wcs: Arc<CelestialWcs>,
    /// The source pixels read: the window's part inside the image.
    pub(crate) region: PixelBox,
    /// The output's pixels in source coordinates: the region itself, or a `SIZE` stamp that
    /// may hang over the image edge.
    pub(crate) window: Window,
    pub(crate) planes: Vec<Range<usize>>,
}

impl Plan {
    /// `src` is the file at `source` (whose header is parsed once per version, see
    /// `parsed`); `source_name` names the image in errors.
    pub(crate) fn new(
        src: &mut FitsFile,
        source: &Path,
        source_name: &str,
        stencil: &Stencil,
        options: &CutOptions,
    ) -> Result<Plan, SodaError> {
        let section = match stencil {
            Stencil::Pixels(section) => Some(section),
            _ => None,
        };
        let extension = options
            .extension
            .as_deref()
            .or_else(|| section.and_then(|s| s.extension()));
        let (image, wcs) = crate::parsed::source_image(src, source, extension)?;
        let name = || source_name.to_owned();
        let (region, window) = match options.size {
            Some(size) => {
                let Stencil::Circle(circle) = stencil else {
                    return Err(SodaError::usage(
                        "SIZE centres a stamp on a CIRCLE (or POS=CIRCLE): give one",
                    ));
                };
                let (ra, dec) = circle.center();
                let window = wcs
                    .sky_to_pixel(ra, dec)
                    .and_then(|(x, y)| Window::centred(x, y, size));
                let Some((window, region)) =
                    window.and_then(|w| w.overlap(image.nx, image.ny).map(|r| (w, r)))
                else {
                    return Err(SodaError::NoOverlap { source: name() });
                };
                (region, window)
            }
            None => {
                let Some(region) = pixel_box(&wcs, image.nx, image.ny, stencil) else {
                    return Err(SodaError::NoOverlap { source: name() });
                };
                (region, Window::of(region))
            }
        };
        let mut planes: Vec<Range<usize>> = image.extra.iter().map(|&n| 0..n).collect();
        if let Some(section) = section {
            if section.axes() > 2 + planes.len() {
                return Err(SodaError::usage(format!(
                    "SUB {section} gives {} axes but {} has {}",
                    section.axes(),
                    name(),
                    2 + planes.len()
                )));
            }
            for (i, planes) in planes.iter_mut().enumerate() {
                *planes = section
                    .axis(i + 2, planes.len())
                    .ok_or_else(|| SodaError::NoOverlap { source: name() })?;
            }
        }
        if let Some(band) = options.band {
            let Some(axis) = wavelength_axis(&image.keywords, &image.extra)? else {
                return Err(SodaError::usage(format!(
                    "BAND was given but {} has no wavelength axis",
                    name()
                )));
            };
            let Some(range) = axis.planes(band) else {
                return Err(SodaError::NoOverlap { source: name() });
            };
            planes[axis.extra_index] = range;
        }
        if let Some(time) = options.time {
            if let Some(axis) = temporal::time_axis(&image.keywords, &image.extra)? {
                let Some(range) = axis.planes(time) else {
                    return Err(SodaError::NoOverlap { source: name() });
                };
                planes[axis.extra_index] = range;
            } else {
                let observed = image_observation_time(src, &image.hdu)
                    .map_err(SodaError::BadImage)?
                    .ok_or_else(|| {
                        SodaError::usage(format!(
                            "TIME was given but {} has neither a time axis nor an observation \
                             time (MJD-OBS, DATE-OBS, DATE-BEG)",
                            name()
                        ))
                    })?;
                if !temporal::overlaps(observed, time) {
                    return Err(SodaError::NoOverlap { source: name() });
                }
            }
        }
        if !options.pol.is_empty() {
            let Some(axis) = polarization::stokes_axis(&image.keywords, &image.extra)? else {
                return Err(SodaError::usage(format!(
                    "POL was given but {} has no polarization axis (CTYPEn = 'STOKES')",
                    name()
                )));
            };
            let Some(range) = polarization::planes(&axis, &options.pol) else {
                return Err(SodaError::NoOverlap { source: name() });
            };
            planes[axis.extra_index] = range;
        }
        Ok(Plan {
            image,
            wcs,
            region,
            window,
            planes,
        })
    }
}

/// The bytes of pixel data a cutout of `stencil` out of `source` would hold, without cutting it
/// (for completion estimates): the header is read, no pixel is.
pub fn cutout_bytes(
    source: &Path,
    stencil: &Stencil,
    options: &CutOptions,
) -> Result<u64, SodaError> {
    cutout_size(source, stencil, options).map(|size| size.bytes)
}

/// How big a cutout would be, planned on the image header alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutoutSize {
    /// Pixels over every axis kept (a cube's planes included).
    pub pixels: u64,
    /// Bytes of pixel data.
    pub bytes: u64,
}

/// The size of the cutout of `stencil` out of `source`, without cutting it: the header is read,
/// no pixel is.
pub fn cutout_size(
    source: &Path,
    stencil: &Stencil,
    options: &CutOptions,
) -> Result<CutoutSize, SodaError> {
    let _guard = lock_source(source);
    let mut src = FitsFile::open(source)?;
    let plan = Plan::new(
        &mut src,
        source,
        &source.display().to_string(),
        stencil,
        options,
    )?;
    Ok(plan.size())
}

impl Plan {
    /// The cutout's pixels, over every axis kept, and their bytes.
    pub(crate) fn size(&self) -> CutoutSize {
        let planes: u64 = self.planes.iter().map(|r| r.len() as u64).product();
        let pixels = ((self.window.width * self.window.height) as u64).saturating_mul(planes);
        CutoutSize {
            pixels,
            bytes: pixels.saturating_mul(self.image.bitpix.bytes()),
        }
    }
}

/// Which pixels of its source a cutout reads, planned on the source's headers alone: the image
/// HDU, its axes, and the rectangle and planes the cutout copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    /// The image HDU's number, 0 for the primary HDU.
    pub hdu: usize,
    /// NAXIS1, NAXIS2, ...
    pub axes: Vec<usize>,
    /// Bytes of one stored pixel.
    pub pixel_bytes: u64,
    /// The celestial rectangle copied.
    pub region: PixelBox,
    /// The planes copied of each axis beyond the celestial two, NAXIS3 first.
    pub planes: Vec<Range<usize>>,
}

impl ReadPlan {
    /// The file offsets of the pixels the cutout reads, for an image whose data starts at
    /// `data_start`: one range per row of the rectangle in each plane, in file order.
    pub fn byte_ranges(&self, data_start: u64) -> Vec<Range<u64>> {
        let (nx, ny) = (self.axes[0] as u64, self.axes[1] as u64);
        let region = self.region;
        let row_bytes = region.width() as u64 * self.pixel_bytes;
        let plane_count: usize = self.planes.iter().map(|r| r.len()).product();
        let mut ranges = Vec::with_capacity(plane_count * region.height());
        for plane in 0..plane_count {
            // The plane's linear number in the file, NAXIS3 varying fastest.
            let (mut rest, mut linear, mut stride) = (plane, 0u64, 1u64);
            for (r, &n) in self.planes.iter().zip(&self.axes[2..]) {
                linear += (r.start + rest % r.len()) as u64 * stride;
                rest /= r.len();
                stride *= n as u64;
            }
            for y in region.y0..=region.y1 {
                let pixel = (linear * ny + y as u64) * nx + region.x0 as u64;
                let start = data_start + pixel * self.pixel_bytes;
                ranges.push(start..start + row_bytes);
            }
        }
        ranges
    }
}

/// Plans the cutout of `stencil` out of `source` without reading a pixel (see [`ReadPlan`]);
/// the same errors as [`crate::cut_to_file_with`] for a stencil off the image, a bad `BAND` or a
/// missing extension.
pub fn cutout_reads(
    source: &Path,
    stencil: &Stencil,
    options: &CutOptions,
    source_name: &str,
) -> Result<ReadPlan, SodaError> {
    let _guard = lock_source(source);
    let mut src = FitsFile::open(source)?;
    let plan = Plan::new(&mut src, source, source_name, stencil, options)?;
    let mut axes = vec![plan.image.nx, plan.image.ny];
    axes.extend(&plan.image.extra);
    Ok(ReadPlan {
        hdu: plan.image.hdu.number,
        axes,
        pixel_bytes: plan.image.bitpix.bytes(),
        region: plan.region,
        planes: plan.planes,
    })
}
