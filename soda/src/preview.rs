//! Preview images (`RESPONSEFORMAT=image/png` or `image/jpeg`): a cutout's pixels rendered as
//! 8-bit grey for eyes, not for science. It knows nothing of where the pixels came from beyond a
//! cutout file.
//!
//! The stretch is asinh between percentile limits, which shows faint structure and bright cores
//! at once without one hot pixel flattening the rest; both formats share it and show north up.
//! Blank pixels (NaN) are transparent in a PNG; JPEG has no alpha, so there they are black.

use std::path::Path;

use fitsio::FitsFile;
use fitsio::hdu::HduInfo;

use crate::error::SodaError;

/// The media type of PNG previews.
pub const PNG: &str = "image/png";

/// The media type of JPEG previews.
pub const JPEG: &str = "image/jpeg";

/// JPEG quality (1-100): high enough that the stretch's faint levels survive compression.
const JPEG_QUALITY: u8 = 90;

/// The image format of a preview.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviewFormat {
    /// 8-bit grey plus alpha: blank pixels are transparent.
    Png,
    /// 8-bit grey, no alpha: blank pixels are black.
    Jpeg,
}

impl PreviewFormat {
    /// The media type a preview of this format is served with.
    pub fn media_type(self) -> &'static str {
        match self {
            PreviewFormat::Png => PNG,
            PreviewFormat::Jpeg => JPEG,
        }
    }

    /// The file-name extension of a preview of this format, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            PreviewFormat::Png => "png",
            PreviewFormat::Jpeg => "jpg",
        }
    }

    /// Renders `pixels` (FITS order) as an image of this format; see [`render_png`] and
    /// [`render_jpeg`].
    pub fn render(self, pixels: &[f64], width: usize, height: usize) -> Result<Vec<u8>, SodaError> {
        match self {
            PreviewFormat::Png => render_png(pixels, width, height),
            PreviewFormat::Jpeg => render_jpeg(pixels, width, height),
        }
    }
}

/// Fractions of the finite pixels that fall below black and above white: clipping a few
/// extreme pixels keeps cosmic rays and saturated stars from deciding the scale.
const LOW_PERCENTILE: f64 = 0.005;
const HIGH_PERCENTILE: f64 = 0.995;

/// asinh softening: the fraction of the range over which the stretch is still nearly linear.
const SOFTENING: f64 = 0.1;

/// Renders `pixels` (FITS order: row 0 is the bottom row, `width` pixels per row) as a PNG of
/// `width` × `height` grey+alpha pixels, north up as FITS viewers show it.
pub fn render_png(pixels: &[f64], width: usize, height: usize) -> Result<Vec<u8>, SodaError> {
    let mut data = Vec::with_capacity(width * height * 2);
    for grey in grey_levels(pixels, width, height)? {
        match grey {
            Some(grey) => data.extend_from_slice(&[grey, u8::MAX]),
            None => data.extend_from_slice(&[0, 0]),
        }
    }
    let too_big = |_| SodaError::BadImage(format!("a {width}×{height} preview is too large"));
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(
            &mut bytes,
            u32::try_from(width).map_err(too_big)?,
            u32::try_from(height).map_err(too_big)?,
        );
        encoder.set_color(png::ColorType::GrayscaleAlpha);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .map_err(|e| SodaError::Fits(format!("PNG encoding failed: {e}")))?;
        writer
            .write_image_data(&data)
            .map_err(|e| SodaError::Fits(format!("PNG encoding failed: {e}")))?;
    }
    Ok(bytes)
}

/// Renders `pixels` (FITS order: row 0 is the bottom row, `width` pixels per row) as a baseline
/// JPEG of `width` × `height` grey pixels, north up, with the same stretch as [`render_png`].
/// JPEG has no alpha channel, so blank pixels are black.
pub fn render_jpeg(pixels: &[f64], width: usize, height: usize) -> Result<Vec<u8>, SodaError> {
    let data: Vec<u8> = grey_levels(pixels, width, height)?
        .into_iter()
        .map(|grey| grey.unwrap_or(0))
        .collect();
    // JPEG stores each dimension in 16 bits.
    let too_big = |_| {
        SodaError::Usage(format!(
            "a {width}×{height} cutout is too large for a JPEG preview (at most 65535 pixels \
             a side): ask for a smaller stencil or RESPONSEFORMAT=image/png"
        ))
    };
    let (w, h) = (
        u16::try_from(width).map_err(too_big)?,
        u16::try_from(height).map_err(too_big)?,
    );
    let mut bytes = Vec::new();
    jpeg_encoder::Encoder::new(&mut bytes, JPEG_QUALITY)
        .encode(&data, w, h, jpeg_encoder::ColorType::Luma)
        .map_err(|e| SodaError::Fits(format!("JPEG encoding failed: {e}")))?;
    Ok(bytes)
}

/// The grey level of each pixel, `None` for a blank, in image order: rows top to bottom (FITS
/// rows run bottom to top, so north, up in the sky, is the first row of the preview).
fn grey_levels(pixels: &[f64], width: usize, height: usize) -> Result<Vec<Option<u8>>, SodaError> {
    if width == 0 || height == 0 || pixels.len() != width * height {
        return Err(SodaError::BadImage(format!(
            "a {width}×{height} preview needs {} pixels, got {}",
            width * height,
            pixels.len()
        )));
    }
    let (lo, hi) = limits(pixels);
    Ok(pixels
        .chunks_exact(width)
        .rev()
        .flat_map(|row| row.iter().map(|&value| stretch(value, lo, hi)))
        .collect())
}

/// Writes a preview in `format` of the `CUTOUT` extension of `cutout` (a file written by
/// [`crate::cut_to_file`]) at `out`; a cube shows its first plane. Returns the file's size.
pub fn preview_to_file(cutout: &Path, out: &Path, format: PreviewFormat) -> Result<u64, SodaError> {
    let mut file = FitsFile::open(cutout)?;
    let hdu = file.hdu("CUTOUT")?;
    let HduInfo::ImageInfo { shape, .. } = &hdu.info else {
        return Err(SodaError::BadImage("the cutout holds no image".into()));
    };
    // fitsio lists axes in C order: the last is NAXIS1.
    let [.., height, width] = shape[..] else {
        return Err(SodaError::BadImage(
            "the cutout has fewer than 2 axes".into(),
        ));
    };
    // The first plane only, however many there are; cfitsio applies BSCALE/BZERO.
    let mut pixels: Vec<f64> = hdu.read_section(&mut file, 0, width * height)?;
    if let Ok(blank) = hdu.read_key::<i64>(&mut file, "BLANK") {
        // fitsio reads without a null value, so BLANK pixels come back scaled like the others:
        // find them by the same scaling.
        let scale = hdu.read_key::<f64>(&mut file, "BSCALE").unwrap_or(1.0);
        let zero = hdu.read_key::<f64>(&mut file, "BZERO").unwrap_or(0.0);
        let blank = blank as f64 * scale + zero;
        for p in &mut pixels {
            if *p == blank {
                *p = f64::NAN;
            }
        }
    }
    let image = format.render(&pixels, width, height)?;
    std::fs::write(out, &image)?;
    Ok(image.len() as u64)
}

/// The values mapped to black and white: percentiles of the finite pixels. A flat image gets
/// a range of one so that it renders mid-dark instead of dividing by zero.
fn limits(pixels: &[f64]) -> (f64, f64) {
    let mut finite: Vec<f64> = pixels.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return (0.0, 1.0);
    }
    finite.sort_unstable_by(f64::total_cmp);
    let at = |q: f64| finite[((finite.len() - 1) as f64 * q).round() as usize];
    let (lo, hi) = (at(LOW_PERCENTILE), at(HIGH_PERCENTILE));
    if hi > lo { (lo, hi) } else { (lo, lo + 1.0) }
}

/// The grey level of `value` between black at `lo` and white at `hi`, or `None` for a blank.
fn stretch(value: f64, lo: f64, hi: f64) -> Option<u8> {
    if !value.is_finite() {
        return None;
    }
    let t = ((value - lo) / (hi - lo)).clamp(0.0, 1.0);
    let y = (t / SOFTENING).asinh() / (1.0 / SOFTENING).asinh();
    Some((y * f64::from(u8::MAX)).round() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    #[test]
    fn stretch_is_monotonic_from_black_to_white() {
        let levels: Vec<u8> = (0..=1000)
            .map(|i| stretch(f64::from(i) / 1000.0, 0.0, 1.0).unwrap())
            .collect();
        assert!(levels.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(levels[0], 0);
        assert_eq!(levels[1000], 255);
        assert_eq!(stretch(-5.0, 0.0, 1.0), Some(0));
        assert_eq!(stretch(5.0, 0.0, 1.0), Some(255));
    }

    #[test]
    fn percentile_limits_ignore_a_hot_pixel() {
        let mut pixels: Vec<f64> = (0..1000).map(f64::from).collect();
        pixels[500] = 1e9;
        let (lo, hi) = limits(&pixels);
        assert!(lo <= 10.0 && hi < 1000.0, "{lo} {hi}");
    }

    #[test]
    fn blank_pixels_are_transparent_and_others_opaque() {
        let pixels = [1.0, f64::NAN, 3.0, f64::INFINITY, 5.0, 6.0];
        let (_, data) = decode(&render_png(&pixels, 3, 2).unwrap());
        // PNG row 0 is the FITS top row (4..6), then the bottom row (1, NaN, 3).
        let alpha: Vec<u8> = data.chunks(2).map(|p| p[1]).collect();
        assert_eq!(alpha, [0, 255, 255, 255, 0, 255]);
    }

    #[test]
    fn png_has_the_signature_size_and_north_up_rows() {
        let pixels: Vec<f64> = (0..20).map(f64::from).collect();
        let bytes = render_png(&pixels, 5, 4).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let (info, data) = decode(&bytes);
        assert_eq!((info.width, info.height), (5, 4));
        assert_eq!(info.color_type, png::ColorType::GrayscaleAlpha);
        // The brightest FITS row (the top, y = 3) is the first PNG row.
        assert_eq!(data[2 * 4], 255);
        assert_eq!(data[data.len() - 10], 0);
    }

    /// Decodes a JPEG: (width, height, grey pixels top row first).
    fn decode_jpeg(bytes: &[u8]) -> (u16, u16, Vec<u8>) {
        let mut decoder = jpeg_decoder::Decoder::new(bytes);
        let pixels = decoder.decode().unwrap();
        let info = decoder.info().unwrap();
        assert_eq!(info.pixel_format, jpeg_decoder::PixelFormat::L8);
        (info.width, info.height, pixels)
    }

    #[test]
    fn jpeg_has_the_markers_size_and_north_up_rows() {
        // 16 × 24: the FITS top rows (y >= 12) bright, the bottom rows dark.
        let pixels: Vec<f64> = (0..24)
            .flat_map(|y| (0..16).map(move |_| if y >= 12 { 100.0 } else { 0.0 }))
            .collect();
        let bytes = render_jpeg(&pixels, 16, 24).unwrap();
        assert_eq!(&bytes[..2], [0xFF, 0xD8], "SOI");
        assert_eq!(&bytes[bytes.len() - 2..], [0xFF, 0xD9], "EOI");
        let (width, height, grey) = decode_jpeg(&bytes);
        assert_eq!((width, height), (16, 24));
        // JPEG is lossy: compare levels with a margin. Row 0 of the JPEG is the FITS top row.
        assert!(grey[..16 * 8].iter().all(|&g| g > 245), "{grey:?}");
        assert!(grey[16 * 16..].iter().all(|&g| g < 10), "{grey:?}");
    }

    #[test]
    fn blank_pixels_are_black_in_a_jpeg() {
        // 16 × 8: the left 8 columns blank, the right 8 bright (two dark pixels set the scale).
        let mut pixels: Vec<f64> = (0..8)
            .flat_map(|_| (0..16).map(|x| if x < 8 { f64::NAN } else { 10.0 }))
            .collect();
        pixels[15] = 0.0;
        pixels[14] = 0.0;
        let (_, _, grey) = decode_jpeg(&render_jpeg(&pixels, 16, 8).unwrap());
        for row in grey.chunks(16) {
            assert!(row[..8].iter().all(|&g| g < 10), "{row:?}");
            assert!(row[9..13].iter().all(|&g| g > 200), "{row:?}");
        }
    }

    #[test]
    fn a_jpeg_wider_than_65535_pixels_is_a_usage_error() {
        let pixels = vec![1.0; 70_000];
        assert!(matches!(
            render_jpeg(&pixels, 70_000, 1),
            Err(SodaError::Usage(_))
        ));
    }

    #[test]
    fn pixel_count_must_match_the_size() {
        assert!(matches!(
            render_png(&[1.0; 5], 2, 3),
            Err(SodaError::BadImage(_))
        ));
    }
}
