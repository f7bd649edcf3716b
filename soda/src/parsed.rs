//! Source image headers parsed once, for the many cutouts of one image.
//!
//! Planning a cutout finds the image HDU, reads its WCS keywords and sets up wcslib from them.
//! Profiled under load, that was a sixth of the service's CPU, and it was done twice for every
//! synchronous request (the frontend plans the cutout to price it, the worker plans it again to
//! cut it) on the same few popular images. What the header says is kept here per file path and
//! extension, with a hash of the header's cards as written: each use reads the cards again
//! (without parsing them, a few microseconds) and compares, so a file that was replaced or
//! rewritten, however quickly and whatever its size and time stamps, is parsed afresh. Only
//! headers that parsed are kept; an error is found again by the next request. The WCS is
//! shared (see [`CelestialWcs`] for how threads share it).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use fitsio::FitsFile;

use crate::SodaError;
use crate::celestial::CelestialWcs;
use crate::header::WcsKeywords;
use crate::image::{Bitpix, SourceImage};
use crate::unscaled::header_hash;

/// Headers kept at once; the oldest goes first.
const MAX_IMAGES: usize = 256;

/// One image HDU of one file: its path and the extension asked for.
type Key = (PathBuf, Option<String>);

/// What [`SourceImage::find`] and [`CelestialWcs::new`] made of one header.
struct Parsed {
    /// [`header_hash`] of the HDU's header.
    header: u64,
    hdu: usize,
    nx: usize,
    ny: usize,
    extra: Vec<usize>,
    bitpix: Bitpix,
    keywords: WcsKeywords,
    blank: Option<i64>,
    bunit: Option<String>,
    wcs: Arc<CelestialWcs>,
}

#[derive(Default)]
struct Cache {
    parsed: HashMap<Key, Arc<Parsed>>,
    /// Keys in the order they were added.
    order: VecDeque<Key>,
}

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    // A panic while the lock was held leaves at worst an entry missing from `order`.
    CACHE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// An image HDU as [`source_image`] gives it: the image, its celestial WCS and the
/// [`header_hash`] of its header.
pub(crate) type Image = (SourceImage, Arc<CelestialWcs>, u64);

/// The image HDU named `extension` (see [`SourceImage::find`]) of the file at `path`, which
/// `file` has open, and its celestial WCS: parsed from the header the first time, and taken
/// from the cache after for as long as the header's cards stay the same.
pub(crate) fn source_image(
    file: &mut FitsFile,
    path: &Path,
    extension: Option<&str>,
) -> Result<Image, SodaError> {
    let key: Key = (path.to_path_buf(), extension.map(str::to_owned));
    let cached = cache().parsed.get(&key).cloned();
    if let Some(parsed) = cached
        && let Ok(hdu) = file.hdu(parsed.hdu)
        && header_hash(file, &hdu)? == parsed.header
    {
        let image = SourceImage {
            hdu,
            nx: parsed.nx,
            ny: parsed.ny,
            extra: parsed.extra.clone(),
            bitpix: parsed.bitpix,
            keywords: parsed.keywords.clone(),
            blank: parsed.blank,
            bunit: parsed.bunit.clone(),
        };
        return Ok((image, parsed.wcs.clone(), parsed.header));
    }
    let image = SourceImage::find(file, extension)?;
    let wcs = Arc::new(CelestialWcs::new(image.nx, image.ny, &image.keywords)?);
    let header = header_hash(file, &image.hdu)?;
    let parsed = Arc::new(Parsed {
        header,
        hdu: image.hdu.number,
        nx: image.nx,
        ny: image.ny,
        extra: image.extra.clone(),
        bitpix: image.bitpix,
        keywords: image.keywords.clone(),
        blank: image.blank,
        bunit: image.bunit.clone(),
        wcs: wcs.clone(),
    });
    let mut cache = cache();
    if cache.parsed.insert(key.clone(), parsed).is_none() {
        cache.order.push_back(key);
    }
    while cache.order.len() > MAX_IMAGES {
        if let Some(oldest) = cache.order.pop_front() {
            cache.parsed.remove(&oldest);
        }
    }
    Ok((image, wcs, header))
}

/// Headers held now.
#[cfg(test)]
pub(crate) fn cached_images() -> usize {
    cache().parsed.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{SyntheticImage, write_synthetic_image};

    fn image(path: &Path, ra_deg: f64) {
        let image = SyntheticImage {
            nx: 64,
            ny: 48,
            ra_deg,
            dec_deg: 41.0,
            pixel_scale_deg: 1.0 / 3600.0,
        };
        write_synthetic_image(path, &image).unwrap();
    }

    fn centre(path: &Path) -> (f64, f64) {
        let mut file = FitsFile::open(path).unwrap();
        let (image, wcs, _) = source_image(&mut file, path, None).unwrap();
        wcs.pixel_to_sky(image.nx as f64 / 2.0, image.ny as f64 / 2.0)
            .unwrap()
    }

    fn cached(path: &Path) -> Option<Arc<Parsed>> {
        cache().parsed.get(&(path.to_path_buf(), None)).cloned()
    }

    #[test]
    fn a_header_is_parsed_once_while_it_stays_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.fits");
        image(&path, 10.0);
        let first = centre(&path);
        let parsed = cached(&path).unwrap();
        assert_eq!(centre(&path), first);
        assert!(
            Arc::ptr_eq(&parsed, &cached(&path).unwrap()),
            "the second read was the first's"
        );
        // Rewritten in place at once, the same size and (to the file system's clock, most
        // likely) the same time, pointing elsewhere: read afresh.
        image(&path, 20.0);
        let moved = centre(&path);
        assert!(
            (moved.0 - first.0 - 10.0).abs() < 1e-6,
            "{moved:?} after {first:?}"
        );
        assert!(!Arc::ptr_eq(&parsed, &cached(&path).unwrap()));
        // Replaced by another file.
        let other = dir.path().join("other.fits");
        image(&other, 30.0);
        std::fs::rename(&other, &path).unwrap();
        let moved = centre(&path);
        assert!(
            (moved.0 - first.0 - 20.0).abs() < 1e-6,
            "{moved:?} after {first:?}"
        );
    }

    #[test]
    fn a_cached_image_is_the_one_its_extension_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.fits");
        image(&path, 10.0);
        let mut file = FitsFile::open(&path).unwrap();
        let (primary, _, _) = source_image(&mut file, &path, None).unwrap();
        let missing = source_image(&mut file, &path, Some("NOPE"));
        assert!(missing.is_err(), "another extension is another key");
        let (again, _, _) = source_image(&mut file, &path, None).unwrap();
        assert_eq!(again.hdu.number, primary.hdu.number);
        assert_eq!((again.nx, again.ny), (64, 48));
    }

    #[test]
    fn the_cache_holds_at_most_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.fits");
        image(&path, 10.0);
        for n in 0..MAX_IMAGES + 10 {
            let link = dir.path().join(format!("{n}.fits"));
            std::fs::hard_link(&path, &link).unwrap();
            centre(&link);
        }
        // Other tests' images may come and go meanwhile: the bound holds exactly.
        assert_eq!(cached_images(), MAX_IMAGES);
    }
}
