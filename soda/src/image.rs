//! Opening a source image: the image HDU a cutout reads and what its header tells (size,
//! BITPIX, BLANK, WCS keywords, observation time), the locks that make cfitsio's readers of one
//! file take turns, and [`ImageGeometry`], an image's size and WCS read once.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Range;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock};

use fitsio::FitsFile;
use fitsio::hdu::{FitsHdu, HduInfo};
use fitsio::images::ImageType;

use crate::SodaError;
use crate::celestial::CelestialWcs;
use crate::header::WcsKeywords;
use crate::region::{PixelBox, pixel_box};
use crate::stencil::Stencil;
use crate::temporal::{SECONDS_PER_DAY, iso_to_mjd};
use crate::unscaled;

/// cfitsio may share one internal file structure (and its buffers) between all handles that
/// open the same file in a process ([`unscaled::readers_share_files`]); then concurrent readers
/// of one file must take turns. Files are spread over a fixed set of locks by path, which bounds
/// memory and still lets different files be cut in parallel.
static SOURCE_LOCKS: [Mutex<()>; 64] = [const { Mutex::new(()) }; 64];

/// Whether this process's cfitsio shares a file's structure between its read-only handles, as
/// seen on the first source that could be opened twice.
static READERS_SHARE: OnceLock<bool> = OnceLock::new();

/// Takes the lock that serialises cfitsio access to the file at `source` (see
/// [`SOURCE_LOCKS`]), or none where cfitsio gives each reader a structure of its own: then
/// every request for one popular image would wait on one lock for nothing.
pub(crate) fn lock_source(source: &Path) -> Option<MutexGuard<'static, ()>> {
    let shared = match READERS_SHARE.get() {
        Some(&shared) => shared,
        // A file that cannot be opened says nothing about cfitsio: lock, and look again at
        // the next source.
        None => match unscaled::readers_share_files(source) {
            Ok(shared) => *READERS_SHARE.get_or_init(|| shared),
            Err(_) => true,
        },
    };
    shared.then(|| {
        SOURCE_LOCKS[lock_index(source)]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    })
}

/// Which of [`SOURCE_LOCKS`] guards the file at `source`: the same for every spelling of its
/// path.
pub(crate) fn lock_index(source: &Path) -> usize {
    let key = source
        .canonicalize()
        .unwrap_or_else(|_| source.to_path_buf());
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % SOURCE_LOCKS.len() as u64) as usize
}

/// An image's size and celestial WCS, read once from its header, so that many stencils can be
/// located on it without opening the file again.
pub struct ImageGeometry {
    nx: usize,
    ny: usize,
    wcs: CelestialWcs,
}

impl ImageGeometry {
    /// Reads the image HDU's header of the FITS file at `path`.
    pub fn read(path: &Path) -> Result<ImageGeometry, SodaError> {
        let _guard = lock_source(path);
        let mut file = FitsFile::open(path)?;
        let image = SourceImage::find(&mut file, None)?;
        let wcs = CelestialWcs::new(image.nx, image.ny, &image.keywords)?;
        Ok(ImageGeometry {
            nx: image.nx,
            ny: image.ny,
            wcs,
        })
    }

    /// The pixel rectangle that [`crate::cut_to_file`] copies for `stencil`, or `None` if the
    /// stencil misses the image.
    pub fn pixel_box(&self, stencil: &Stencil) -> Option<PixelBox> {
        pixel_box(&self.wcs, self.nx, self.ny, stencil)
    }
}

/// The image HDU of a source file and what we need to know about it.
pub(crate) struct SourceImage {
    pub(crate) hdu: FitsHdu,
    pub(crate) nx: usize,
    pub(crate) ny: usize,
    /// Lengths of the axes beyond the celestial two, NAXIS3 first.
    pub(crate) extra: Vec<usize>,
    /// How a pixel is stored: cutouts copy pixels as stored, with BSCALE/BZERO scaling off.
    pub(crate) bitpix: Bitpix,
    pub(crate) keywords: WcsKeywords,
    pub(crate) blank: Option<i64>,
    pub(crate) bunit: Option<String>,
}

impl SourceImage {
    /// The HDU named `extension` (its `EXTNAME`), which must hold an image of 2 or more axes;
    /// without a name, the primary HDU if it holds such an image, else the first extension
    /// that does.
    pub(crate) fn find(
        file: &mut FitsFile,
        extension: Option<&str>,
    ) -> Result<SourceImage, SodaError> {
        let indices = match extension {
            Some(name) => {
                let hdus = file.num_hdus()?;
                let index = (0..hdus)
                    .find(|&i| {
                        file.hdu(i).is_ok_and(|hdu| {
                            hdu.read_key::<String>(file, "EXTNAME")
                                .is_ok_and(|n| n.trim().eq_ignore_ascii_case(name))
                        })
                    })
                    // cfitsio's `[N]`: HDU number N, 0 the primary (an EXTNAME goes first).
                    .or_else(|| name.parse::<usize>().ok().filter(|&n| n < hdus))
                    .ok_or_else(|| {
                        SodaError::UnknownImage(format!("the image has no extension {name:?}"))
                    })?;
                index..index + 1
            }
            None => 0..file.num_hdus()?,
        };
        for index in indices {
            let hdu = file.hdu(index)?;
            let HduInfo::ImageInfo { shape, .. } = &hdu.info else {
                continue;
            };
            // fitsio lists axes in C order: the last is NAXIS1.
            if shape.len() < 2 || shape.contains(&0) {
                continue;
            }
            let (nx, ny) = (shape[shape.len() - 1], shape[shape.len() - 2]);
            let extra: Vec<usize> = shape[..shape.len() - 2].iter().rev().copied().collect();
            // A tile-compressed image is a binary table to the header: its image's BITPIX and
            // BLANK are ZBITPIX and ZBLANK (cfitsio decompresses the pixels transparently).
            let compressed = hdu.read_key::<i64>(file, "ZBITPIX").is_ok();
            let bitpix: i64 = hdu.read_key(file, if compressed { "ZBITPIX" } else { "BITPIX" })?;
            let bitpix = Bitpix::from_keyword(bitpix)?;
            let keywords = WcsKeywords::read(file, &hdu)?;
            let blank = if bitpix.is_integer() {
                hdu.read_key::<i64>(file, "BLANK")
                    .or_else(|e| {
                        if compressed {
                            hdu.read_key::<i64>(file, "ZBLANK")
                        } else {
                            Err(e)
                        }
                    })
                    .ok()
            } else {
                None
            };
            let bunit = hdu.read_key::<String>(file, "BUNIT").ok();
            return Ok(SourceImage {
                extra,
                hdu,
                nx,
                ny,
                bitpix,
                keywords,
                blank,
                bunit,
            });
        }
        Err(match extension {
            Some(name) => SodaError::usage(format!(
                "extension {name:?} is not an image of 2 or more axes"
            )),
            None => SodaError::BadImage("no image HDU with 2 or more axes".to_owned()),
        })
    }
}

impl SourceImage {
    /// The pixels of a rectangle of the image's first plane (every axis beyond the celestial
    /// two at its first pixel) as physical values, BSCALE and BZERO applied, with blank
    /// integer pixels (BLANK) as NaN; NAXIS1 varies fastest. The caller holds the lock.
    pub(crate) fn read_physical(
        &self,
        file: &mut FitsFile,
        columns: Range<usize>,
        rows: Range<usize>,
    ) -> Result<Vec<f32>, SodaError> {
        let scale = self.hdu.read_key::<f64>(file, "BSCALE").unwrap_or(1.0);
        let zero = self.hdu.read_key::<f64>(file, "BZERO").unwrap_or(0.0);
        // Stored values are read, so that BLANK is recognised before scaling.
        unscaled::disable_scaling(file, &self.hdu)?;
        let first_planes: Vec<Range<usize>> = self.extra.iter().map(|_| 0..1).collect();
        let mut ranges: Vec<&Range<usize>> = vec![&columns, &rows];
        ranges.extend(first_planes.iter());
        let blank = self.blank;
        macro_rules! physical {
            ($t:ty) => {{
                let stored: Vec<$t> = self.hdu.read_region(file, &ranges)?;
                stored
                    .into_iter()
                    .map(|v| {
                        // `blank` is only ever set for integer images.
                        if blank == Some(v as i64) {
                            f32::NAN
                        } else {
                            (v as f64 * scale + zero) as f32
                        }
                    })
                    .collect()
            }};
        }
        Ok(match self.bitpix {
            Bitpix::U8 => physical!(u8),
            Bitpix::I16 => physical!(i16),
            Bitpix::I32 => physical!(i32),
            Bitpix::I64 => physical!(i64),
            Bitpix::F32 => physical!(f32),
            Bitpix::F64 => physical!(f64),
        })
    }
}

/// How an image stores a pixel (its BITPIX), each with the Rust type that holds it as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bitpix {
    U8,
    I16,
    I32,
    I64,
    F32,
    F64,
}

impl Bitpix {
    pub(crate) fn from_keyword(bitpix: i64) -> Result<Bitpix, SodaError> {
        Ok(match bitpix {
            8 => Bitpix::U8,
            16 => Bitpix::I16,
            32 => Bitpix::I32,
            64 => Bitpix::I64,
            -32 => Bitpix::F32,
            -64 => Bitpix::F64,
            other => {
                return Err(SodaError::BadImage(format!(
                    "BITPIX {other} is not a FITS BITPIX"
                )));
            }
        })
    }

    pub(crate) fn is_integer(self) -> bool {
        !matches!(self, Bitpix::F32 | Bitpix::F64)
    }

    pub(crate) fn bytes(self) -> u64 {
        match self {
            Bitpix::U8 => 1,
            Bitpix::I16 => 2,
            Bitpix::I32 | Bitpix::F32 => 4,
            Bitpix::I64 | Bitpix::F64 => 8,
        }
    }

    /// The image type that makes cfitsio write this BITPIX and no BZERO of its own.
    pub(crate) fn image_type(self) -> ImageType {
        match self {
            Bitpix::U8 => ImageType::UnsignedByte,
            Bitpix::I16 => ImageType::Short,
            Bitpix::I32 => ImageType::Long,
            Bitpix::I64 => ImageType::LongLong,
            Bitpix::F32 => ImageType::Float,
            Bitpix::F64 => ImageType::Double,
        }
    }
}

/// The observation interval (MJD) of the image in `hdu`, or, when its header states none, of
/// the file's primary header (as the index reads it), for `TIME` on an image without a time axis.
pub(crate) fn image_observation_time(
    file: &mut FitsFile,
    hdu: &FitsHdu,
) -> Result<Option<(f64, f64)>, String> {
    if let Some(time) = observation_time(file, hdu)? {
        return Ok(Some(time));
    }
    let primary = file.primary_hdu().map_err(|e| e.to_string())?;
    Ok(observation_time(file, &primary).ok().flatten())
}

/// The observation interval (MJD) a header states: `MJD-BEG`/`MJD-END` or `DATE-BEG`/`DATE-END`
/// when present, else a start (`MJD-OBS` or `DATE-OBS`) plus `EXPTIME` (or `XPOSURE`) seconds.
/// `Ok(None)` when the header gives no time; an error when it gives one that cannot be read.
pub(crate) fn observation_time(
    file: &mut FitsFile,
    hdu: &FitsHdu,
) -> Result<Option<(f64, f64)>, String> {
    let mjd = |file: &mut FitsFile, mjd_key: &str, date_key: &str| -> Result<Option<f64>, String> {
        if let Ok(value) = hdu.read_key::<f64>(file, mjd_key) {
            return Ok(Some(value));
        }
        match hdu.read_key::<String>(file, date_key) {
            Ok(text) if !text.trim().is_empty() => iso_to_mjd(text.trim())
                .map(Some)
                .ok_or_else(|| format!("{date_key} {text:?} is not an ISO 8601 date")),
            _ => Ok(None),
        }
    };
    let begin = mjd(file, "MJD-BEG", "DATE-BEG")?;
    let end = mjd(file, "MJD-END", "DATE-END")?;
    let obs = mjd(file, "MJD-OBS", "DATE-OBS")?;
    let Some(start) = begin.or(obs) else {
        return Ok(None);
    };
    let exposure = hdu
        .read_key::<f64>(file, "EXPTIME")
        .or_else(|_| hdu.read_key::<f64>(file, "XPOSURE"))
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0);
    let stop = end.unwrap_or(start + exposure.unwrap_or(0.0) / SECONDS_PER_DAY);
    Ok(Some((start.min(stop), start.max(stop))))
}
