//! Synthetic images with a real celestial WCS, for tests and for `skycut serve --demo`, so that
//! a first request works without any real archive.
//!
//! Pixel (x, y) holds the value `y * nx + x`, so every pixel differs from its neighbours and a
//! cutout can be checked against the formula; this is exact in f32 up to 2^24 pixels (4096 x
//! 4096).

use std::path::Path;

use fitsio::FitsFile;
use fitsio::images::{ImageDescription, ImageType};

use crate::SodaError;

/// Size, sky position and pixel scale of a synthetic image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticImage {
    /// Columns (NAXIS1).
    pub nx: usize,
    /// Rows (NAXIS2).
    pub ny: usize,
    /// RA of the image centre, degrees.
    pub ra_deg: f64,
    /// Dec of the image centre, degrees.
    pub dec_deg: f64,
    /// Pixel size, degrees.
    pub pixel_scale_deg: f64,
}

/// A demo image written by `write_demo_repository`.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoImage {
    /// Image name: the file is `NAME.fits` and the ID `butler://<repository>/NAME`.
    pub name: String,
    /// RA of the field centre, degrees.
    pub ra_deg: f64,
    /// Dec of the field centre, degrees.
    pub dec_deg: f64,
    /// Half-width of the field, degrees.
    pub radius_deg: f64,
}

/// Rows written per call: a few rows in memory however large the image.
const ROWS_PER_BLOCK: usize = 64;

/// Writes a float32 image in the primary HDU with a TAN WCS centred on (`ra_deg`, `dec_deg`),
/// north up and east left, replacing any file at `path`.
pub fn write_synthetic_image(path: &Path, image: &SyntheticImage) -> Result<(), SodaError> {
    let SyntheticImage {
        nx,
        ny,
        ra_deg,
        dec_deg,
        pixel_scale_deg,
    } = *image;
    if nx == 0 || ny == 0 || pixel_scale_deg.is_nan() || pixel_scale_deg <= 0.0 {
        return Err(SodaError::usage(format!(
            "synthetic image needs positive size and scale, got {nx}x{ny} at {pixel_scale_deg} deg"
        )));
    }
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let description = ImageDescription {
        data_type: ImageType::Float,
        dimensions: &[ny, nx],
    };
    let mut file = FitsFile::create(path)
        .with_custom_primary(&description)
        .open()?;
    let hdu = file.primary_hdu()?;
    hdu.write_key(&mut file, "CTYPE1", "RA---TAN")?;
    hdu.write_key(&mut file, "CTYPE2", "DEC--TAN")?;
    hdu.write_key(&mut file, "CUNIT1", "deg")?;
    hdu.write_key(&mut file, "CUNIT2", "deg")?;
    hdu.write_key(&mut file, "CRPIX1", (nx as f64 + 1.0) / 2.0)?;
    hdu.write_key(&mut file, "CRPIX2", (ny as f64 + 1.0) / 2.0)?;
    hdu.write_key(&mut file, "CRVAL1", ra_deg)?;
    hdu.write_key(&mut file, "CRVAL2", dec_deg)?;
    hdu.write_key(&mut file, "CD1_1", -pixel_scale_deg)?;
    hdu.write_key(&mut file, "CD1_2", 0.0)?;
    hdu.write_key(&mut file, "CD2_1", 0.0)?;
    hdu.write_key(&mut file, "CD2_2", pixel_scale_deg)?;
    hdu.write_key(&mut file, "RADESYS", "ICRS")?;
    hdu.write_key(&mut file, "EQUINOX", 2000.0)?;
    hdu.write_key(&mut file, "BUNIT", "adu")?;

    let mut row = 0;
    let mut block = Vec::with_capacity(nx * ROWS_PER_BLOCK);
    while row < ny {
        let rows = ROWS_PER_BLOCK.min(ny - row);
        block.clear();
        block.extend((row * nx..(row + rows) * nx).map(|index| index as f32));
        hdu.write_section(&mut file, row * nx, (row + rows) * nx, &block)?;
        row += rows;
    }
    Ok(())
}

/// One demo image done, for a caller that shows progress.
#[derive(Debug)]
pub struct DemoProgress<'a> {
    pub image: &'a DemoImage,
    pub path: &'a Path,
    /// Images done so far, this one included, out of `total`.
    pub done: usize,
    pub total: usize,
    /// False when the file was already there and left alone.
    pub written: bool,
}

/// Writes the demo images into `dir` (created if needed) as `NAME.fits`, leaving existing files
/// alone, and describes them; the first one suits a ready-to-paste example request.
pub fn write_demo_repository(dir: &Path) -> Result<Vec<DemoImage>, SodaError> {
    write_demo_repository_reporting(dir, &mut |_| {})
}

/// [`write_demo_repository`], calling `progress` after each image.
pub fn write_demo_repository_reporting(
    dir: &Path,
    progress: &mut dyn FnMut(DemoProgress<'_>),
) -> Result<Vec<DemoImage>, SodaError> {
    const SIZE: usize = 512;
    const SCALE_DEG: f64 = 1.0 / 3600.0;
    let fields = [
        ("m31", 10.684708, 41.268750),
        ("orion", 83.822083, -5.391111),
        // Straddles RA 0 / 360, where naive RA arithmetic goes wrong.
        ("equator", 0.0, 0.0),
    ];
    std::fs::create_dir_all(dir)?;
    let mut images = Vec::new();
    for (name, ra_deg, dec_deg) in fields {
        let path = dir.join(format!("{name}.fits"));
        let written = !path.exists();
        if written {
            // Write under a temporary name so that a crash never leaves a truncated image that
            // a later run would take for a finished one.
            let partial = dir.join(format!(".{name}.fits.partial"));
            let image = SyntheticImage {
                nx: SIZE,
                ny: SIZE,
                ra_deg,
                dec_deg,
                pixel_scale_deg: SCALE_DEG,
            };
            write_synthetic_image(&partial, &image)?;
            std::fs::rename(&partial, &path)?;
        }
        images.push(DemoImage {
            name: name.to_owned(),
            ra_deg,
            dec_deg,
            radius_deg: SIZE as f64 / 2.0 * SCALE_DEG,
        });
        if let Some(image) = images.last() {
            progress(DemoProgress {
                image,
                path: &path,
                done: images.len(),
                total: fields.len(),
                written,
            });
        }
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Provenance, Stencil, cut_to_file};

    #[test]
    fn demo_repository_is_written_once_and_cuttable() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("demo");
        let images = write_demo_repository(&repo).unwrap();
        assert_eq!(images.len(), 3);
        let modified = |name: &str| {
            std::fs::metadata(repo.join(format!("{name}.fits")))
                .unwrap()
                .modified()
                .unwrap()
        };
        let before: Vec<_> = images.iter().map(|i| modified(&i.name)).collect();
        assert_eq!(write_demo_repository(&repo).unwrap(), images);
        let after: Vec<_> = images.iter().map(|i| modified(&i.name)).collect();
        assert_eq!(before, after);
        assert_eq!(std::fs::read_dir(&repo).unwrap().count(), 3);

        for image in &images {
            let stencil = Stencil::parse_circle(&format!(
                "{} {} {}",
                image.ra_deg,
                image.dec_deg,
                image.radius_deg / 4.0
            ))
            .unwrap();
            let provenance = Provenance {
                source_id: format!("butler://demo/{}", image.name),
                stencil: stencil.to_string(),
                software: "test".to_owned(),
                time_utc: "2025-01-01T00:00:00Z".to_owned(),
            };
            let source = repo.join(format!("{}.fits", image.name));
            let out = dir.path().join(format!("{}-cut.fits", image.name));
            let cutout = cut_to_file(&source, &stencil, &provenance, &out).unwrap();
            // 128 pixels across, give or take one where the edge falls on a pixel boundary.
            let r = cutout.region;
            assert!(
                (128..=129).contains(&r.width()) && (128..=129).contains(&r.height()),
                "{r:?}"
            );
        }
    }

    #[test]
    fn large_synthetic_image_is_written_in_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.fits");
        let image = SyntheticImage {
            nx: 4096,
            ny: 4096,
            ra_deg: 150.0,
            dec_deg: 2.2,
            pixel_scale_deg: 0.2 / 3600.0,
        };
        write_synthetic_image(&path, &image).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() >= 4096 * 4096 * 4);
        let mut f = FitsFile::open(&path).unwrap();
        let hdu = f.primary_hdu().unwrap();
        let corner: Vec<f32> = hdu
            .read_region(&mut f, &[&(4095..4096), &(4095..4096)])
            .unwrap();
        assert_eq!(corner, vec![(4096 * 4096 - 1) as f32]);
    }

    #[test]
    fn synthetic_image_rejects_empty_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let image = SyntheticImage {
            nx: 0,
            ny: 10,
            ra_deg: 0.0,
            dec_deg: 0.0,
            pixel_scale_deg: 1e-4,
        };
        assert!(write_synthetic_image(&dir.path().join("x.fits"), &image).is_err());
    }
}
