//! Cutting a stencil out of a FITS image, the crate's pipeline in one file: open the image and
//! plan the cut on its header (`plan`, through `image` and `region`), then copy exactly those
//! pixels (no resampling, optionally masked by `mask`) into a new file whose header (`header`)
//! keeps every pixel's sky position and says where the cutout came from.

use std::ops::Range;
use std::path::Path;

use fitsio::FitsFile;
use fitsio::hdu::FitsHdu;
use fitsio::images::{ImageDescription, ReadImage, WriteImage};

use crate::SodaError;
use crate::header::{Provenance, extension_header_text, write_cutout_header};
use crate::image::{Bitpix, SourceImage, lock_source};
use crate::mask::Mask;
use crate::plan::{CutOptions, Plan};
use crate::region::{PixelBox, pixel_scale_deg};
use crate::stamp::Window;
use crate::stencil::Stencil;
use crate::unscaled;

/// What `cut_to_file` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutout {
    /// The source pixels that were copied.
    pub region: PixelBox,
    /// Size of the output file.
    pub bytes: u64,
    /// Bytes of source pixel data read: the region's pixels at the source's pixel size.
    pub source_bytes: u64,
}

/// Pixels copied per read/write call, so that a whole-image cutout never sits in memory.
const BLOCK_PIXELS: usize = 1 << 22;

/// Cuts `stencil` out of the FITS image at `source` and writes a new FITS file at `out`,
/// replacing any file there.
///
/// The output has an empty primary HDU and one IMAGE extension named `CUTOUT` with the source's
/// BITPIX, WCS (reference pixel shifted) and provenance keywords. Safe to call from many threads
/// at once, on the same or different sources, as long as each call has its own `out`.
pub fn cut_to_file(
    source: &Path,
    stencil: &Stencil,
    provenance: &Provenance,
    out: &Path,
) -> Result<Cutout, SodaError> {
    cut_to_file_with(source, stencil, provenance, out, CutOptions::default())
}

/// [`cut_to_file`] with options.
pub fn cut_to_file_with(
    source: &Path,
    stencil: &Stencil,
    provenance: &Provenance,
    out: &Path,
    options: CutOptions,
) -> Result<Cutout, SodaError> {
    let _guard = lock_source(source);
    let (mut src, plan) = open_and_plan(source, stencil, provenance, &options)?;
    if out.exists() {
        std::fs::remove_file(out)?;
    }
    let (region, source_bytes) = {
        let mut dst = FitsFile::create(out).open()?;
        write_cut(&mut src, plan, stencil, provenance, &options, &mut dst)?
        // Dropping `dst` closes the file and flushes cfitsio's buffers before we stat it.
    };
    let bytes = std::fs::metadata(out)?.len();
    Ok(Cutout {
        region,
        bytes,
        source_bytes,
    })
}

/// [`cut_to_file_with`] into memory: the same FITS file, byte for byte, returned instead of
/// written, for a result that is served from memory (a synchronous request's), so that no file
/// is created for it at all. `None`, and nothing cut, when the cutout's pixels would take more
/// than `max_bytes`.
pub fn cut_to_memory(
    source: &Path,
    stencil: &Stencil,
    provenance: &Provenance,
    options: CutOptions,
    max_bytes: u64,
) -> Result<Option<(Vec<u8>, Cutout)>, SodaError> {
    let _guard = lock_source(source);
    let (mut src, plan) = open_and_plan(source, stencil, provenance, &options)?;
    if plan.size().bytes > max_bytes {
        return Ok(None);
    }
    let mut dst = unscaled::MemoryFits::create()?;
    let (region, source_bytes) =
        write_cut(&mut src, plan, stencil, provenance, &options, dst.file())?;
    let file = dst.into_bytes()?;
    let cutout = Cutout {
        region,
        bytes: file.len() as u64,
        source_bytes,
    };
    Ok(Some((file, cutout)))
}

/// Writes the cutout that `plan` describes into the new, empty file `dst`; returns the source
/// pixels copied and their size in bytes.
fn write_cut(
    src: &mut FitsFile,
    plan: Plan,
    stencil: &Stencil,
    provenance: &Provenance,
    options: &CutOptions,
    dst: &mut FitsFile,
) -> Result<(PixelBox, u64), SodaError> {
    let Plan {
        image,
        wcs,
        region,
        window,
        planes,
        ..
    } = plan;
    let cut = Cut {
        image: &image,
        region,
        window,
        planes: &planes,
        provenance,
        mask: options.mask.then(|| {
            let step = pixel_scale_deg(&wcs, image.nx, image.ny);
            Mask::new(&wcs, stencil, region, step)
        }),
        masked: options.mask || window != Window::of(region),
    };
    match image.bitpix {
        Bitpix::U8 => cut.copy::<u8>(src, dst),
        Bitpix::I16 => cut.copy::<i16>(src, dst),
        Bitpix::I32 => cut.copy::<i32>(src, dst),
        Bitpix::I64 => cut.copy::<i64>(src, dst),
        Bitpix::F32 => cut.copy::<f32>(src, dst),
        Bitpix::F64 => cut.copy::<f64>(src, dst),
    }?;
    let source_bytes = (region.width() * region.height()) as u64 * image.bitpix.bytes();
    Ok((region, source_bytes))
}

/// Writes at `out` the header that [`cut_to_file_with`] would give the cutout's `CUTOUT`
/// extension, as text (one 80-character card per line, the last `END`; see
/// [`crate::request::HEADER`]), without reading a pixel. Returns the size of the text.
///
/// The header is made by the same code as a cutout's, on a scratch file beside `out` whose
/// image is one pixel per axis (so nothing the size of the cutout is written), and the
/// `NAXISn` values are then set to the cutout's sizes.
pub fn header_to_file(
    source: &Path,
    stencil: &Stencil,
    provenance: &Provenance,
    out: &Path,
    options: CutOptions,
) -> Result<u64, SodaError> {
    let _guard = lock_source(source);
    let (
        mut src,
        Plan {
            image,
            region,
            window,
            planes,
            ..
        },
    ) = open_and_plan(source, stencil, provenance, &options)?;
    let mut scratch = out.as_os_str().to_owned();
    scratch.push(".scratch.fits");
    let scratch = std::path::PathBuf::from(scratch);
    if scratch.exists() {
        std::fs::remove_file(&scratch)?;
    }
    // NAXIS1 first, as the cards are numbered.
    let mut sizes = vec![window.width, window.height];
    sizes.extend(planes.iter().map(|r| r.len()));
    let written = (|| {
        {
            let mut dst = FitsFile::create(&scratch).open()?;
            let cut = Cut {
                image: &image,
                region,
                window,
                planes: &planes,
                provenance,
                mask: None,
                masked: options.mask || window != Window::of(region),
            };
            let ones = vec![1; sizes.len()];
            let description = ImageDescription {
                data_type: image.bitpix.image_type(),
                dimensions: &ones,
            };
            match image.bitpix {
                Bitpix::U8 => cut
                    .create_hdu::<u8>(&mut src, &mut dst, &description)
                    .map(drop),
                Bitpix::I16 => cut
                    .create_hdu::<i16>(&mut src, &mut dst, &description)
                    .map(drop),
                Bitpix::I32 => cut
                    .create_hdu::<i32>(&mut src, &mut dst, &description)
                    .map(drop),
                Bitpix::I64 => cut
                    .create_hdu::<i64>(&mut src, &mut dst, &description)
                    .map(drop),
                Bitpix::F32 => cut
                    .create_hdu::<f32>(&mut src, &mut dst, &description)
                    .map(drop),
                Bitpix::F64 => cut
                    .create_hdu::<f64>(&mut src, &mut dst, &description)
                    .map(drop),
            }?;
        }
        let bytes = std::fs::read(&scratch)?;
        let text = extension_header_text(&bytes, &sizes)?;
        std::fs::write(out, &text)?;
        Ok(text.len() as u64)
    })();
    std::fs::remove_file(&scratch).ok();
    written
}

/// Opens `source` and plans the cut of `stencil`; errors name the image by the provenance's ID
/// (else by its path). The caller holds the source's lock.
fn open_and_plan(
    source: &Path,
    stencil: &Stencil,
    provenance: &Provenance,
    options: &CutOptions,
) -> Result<(FitsFile, Plan), SodaError> {
    let mut src = FitsFile::open(source)?;
    let name = if provenance.source_id.is_empty() {
        source.display().to_string()
    } else {
        provenance.source_id.clone()
    };
    let plan = Plan::for_cut(&mut src, source, &name, stencil, options)?;
    Ok((src, plan))
}

/// Writes one multi-extension FITS file at `out` holding the `CUTOUT` extension of each file
/// of `cutouts` (files written by [`cut_to_file`]), in order, numbered by `EXTVER` 1, 2, ...
/// Returns the size of the file.
pub fn combine_to_file(cutouts: &[&Path], out: &Path) -> Result<u64, SodaError> {
    if out.exists() {
        std::fs::remove_file(out)?;
    }
    {
        let mut dst = FitsFile::create(out).open()?;
        for (n, part) in cutouts.iter().enumerate() {
            let mut src = FitsFile::open(part)?;
            let hdu = src.hdu("CUTOUT")?;
            hdu.copy_to(&mut src, &mut dst)?;
            let copied = dst.hdu(n + 1)?;
            copied.write_key(
                &mut dst,
                "EXTVER",
                (n as i64 + 1, "cutout number in this file"),
            )?;
        }
    }
    Ok(std::fs::metadata(out)?.len())
}

/// The keywords that turn stored pixel values into physical ones; a cutout copies their cards
/// verbatim, since it copies the stored values.
const SCALING_KEYWORDS: [&str; 2] = ["BSCALE", "BZERO"];

/// A pixel as stored, and its blank value.
trait Pixel: WriteImage + Copy {
    /// The stored value that stands for "no data": NaN for floats; for integers the source's
    /// BLANK, else the type's smallest value (0 for BITPIX 8). Returns the BLANK to declare.
    fn blank(source_blank: Option<i64>) -> (Self, Option<i64>);
}

macro_rules! integer_pixel {
    ($($t:ty),*) => {$(
        impl Pixel for $t {
            fn blank(source_blank: Option<i64>) -> ($t, Option<i64>) {
                let value = source_blank
                    .and_then(|b| <$t>::try_from(b).ok())
                    .unwrap_or(<$t>::MIN);
                (value, Some(i64::from(value)))
            }
        }
    )*};
}

integer_pixel!(u8, i16, i32, i64);

impl Pixel for f32 {
    fn blank(_: Option<i64>) -> (f32, Option<i64>) {
        (f32::NAN, None)
    }
}

impl Pixel for f64 {
    fn blank(_: Option<i64>) -> (f64, Option<i64>) {
        (f64::NAN, None)
    }
}

/// One cutout being written: what to copy and whether to mask it.
struct Cut<'a> {
    image: &'a SourceImage,
    /// The source pixels copied.
    region: PixelBox,
    /// Where the output lies in source pixels: `region`, or a stamp around it whose pixels
    /// off the image are blank.
    window: Window,
    /// The planes kept of each axis beyond the celestial two, NAXIS3 first.
    planes: &'a [Range<usize>],
    provenance: &'a Provenance,
    /// Which pixels are kept, when masking.
    mask: Option<Mask<'a>>,
    /// Whether some pixels are blanked: outside the stencil (`mask` is `None` for a header),
    /// or off the image for a stamp; an integer cutout then declares its BLANK.
    masked: bool,
}

impl Cut<'_> {
    /// Creates the `CUTOUT` extension of `dst` with its whole header (the source's scaling
    /// cards, the shifted WCS, BLANK, provenance) and returns it with the stored value that
    /// blanks a masked pixel.
    fn create_hdu<T: Pixel>(
        &self,
        src: &mut FitsFile,
        dst: &mut FitsFile,
        description: &ImageDescription<'_>,
    ) -> Result<(FitsHdu, T), SodaError> {
        let image = self.image;
        let hdu = dst.create_image("CUTOUT", description)?;
        let (blank, declared_blank) = T::blank(image.blank);
        let declared_blank = if self.masked {
            declared_blank
        } else {
            image.blank
        };
        let mut offsets = vec![self.window.x0, self.window.y0];
        offsets.extend(self.planes.iter().map(|r| r.start as i64));
        unscaled::copy_cards(src, &image.hdu, dst, &hdu, &SCALING_KEYWORDS)?;
        write_cutout_header(
            dst,
            &hdu,
            &image.keywords,
            image.bunit.as_deref(),
            &offsets,
            self.provenance,
            declared_blank,
        )?;
        Ok((hdu, blank))
    }

    /// Copies `region` of the source (in each kept plane) into a new `CUTOUT` extension of
    /// `dst`, a block of rows at a time, with `T` the type of a stored pixel: scaling is off on
    /// both sides, so the stored values are copied and BSCALE/BZERO copied with them.
    fn copy<T: Pixel>(&self, src: &mut FitsFile, dst: &mut FitsFile) -> Result<(), SodaError>
    where
        Vec<T>: ReadImage,
    {
        let (image, region, window) = (self.image, self.region, self.window);
        let (width, height) = (window.width, window.height);
        // fitsio wants the dimensions in C order: NAXISn first, NAXIS1 last.
        let mut dimensions: Vec<usize> = self.planes.iter().rev().map(|r| r.len()).collect();
        dimensions.extend([height, width]);
        let description = ImageDescription {
            data_type: image.bitpix.image_type(),
            dimensions: &dimensions,
        };
        let (hdu, blank) = self.create_hdu::<T>(src, dst, &description)?;
        unscaled::disable_scaling(src, &image.hdu)?;
        unscaled::disable_scaling(dst, &hdu)?;

        let rows_per_block = (BLOCK_PIXELS / region.width()).max(1);
        let columns = region.x0..region.x1 + 1;
        // Where the region starts in the output (non-zero only for a stamp over the edge).
        let dx = (region.x0 as i64 - window.x0) as usize;
        let dy = (region.y0 as i64 - window.y0) as usize;
        let padded = window != Window::of(region);
        let plane_count: usize = self.planes.iter().map(|r| r.len()).product();
        for plane in 0..plane_count {
            // The plane's index along each extra axis, NAXIS3 varying fastest as in the file.
            let mut rest = plane;
            let mut source_planes = Vec::with_capacity(self.planes.len());
            let mut output_planes = Vec::with_capacity(self.planes.len());
            for r in self.planes {
                let i = rest % r.len();
                rest /= r.len();
                source_planes.push(r.start + i..r.start + i + 1);
                output_planes.push(i..i + 1);
            }
            if padded {
                // A stamp is bounded by the configured SIZE, so one plane of blanks is small.
                let all_columns = 0..width;
                let all_rows = 0..height;
                let mut ranges: Vec<&Range<usize>> = vec![&all_columns, &all_rows];
                ranges.extend(output_planes.iter());
                hdu.write_region(dst, &ranges, &vec![blank; width * height])?;
            }
            let mut row = 0;
            while row < region.height() {
                let rows = rows_per_block.min(region.height() - row);
                let source_rows = region.y0 + row..region.y0 + row + rows;
                let mut ranges: Vec<&Range<usize>> = vec![&columns, &source_rows];
                ranges.extend(source_planes.iter());
                let mut pixels: Vec<T> = image.hdu.read_region(src, &ranges)?;
                if let Some(mask) = &self.mask {
                    mask.apply(&mut pixels, blank, source_rows.clone());
                }
                let output_rows = dy + row..dy + row + rows;
                let columns_out = dx..dx + region.width();
                let mut ranges: Vec<&Range<usize>> = vec![&columns_out, &output_rows];
                ranges.extend(output_planes.iter());
                hdu.write_region(dst, &ranges, &pixels)?;
                row += rows;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
