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
    /// The hash of the image's header (see `parsed`).
    pub(crate) header: u64,
    /// The source pixels read: the window's part inside the image.
    pub(crate) region: PixelBox,
    /// The output's pixels in source coordinates: the region itself, or a `SIZE` stamp that
    /// may hang over the image edge.
    pub(crate) window: Window,
    pub(crate) planes: Vec<Range<usize>>,
}

impl Plan {
    /// Plans the cut of `stencil` out of `src`, the file at `source` (whose header is parsed
    /// once, see `parsed`); `source_name` names the image in errors.
    pub(crate) fn new(
        src: &mut FitsFile,
        source: &Path,
        source_name: &str,
        stencil: &Stencil,
        options: &CutOptions,
    ) -> Result<Plan, SodaError> {
        Plan::make(src, source, source_name, stencil, options, false)
    }

    /// [`Plan::new`] for the cut itself: takes the location an earlier plan of the same
    /// cutout handed over ([`Plan::hand_over`]) rather than locating it again. Only a cut
    /// takes, so every request locates its cutout at least once.
    pub(crate) fn for_cut(
        src: &mut FitsFile,
        source: &Path,
        source_name: &str,
        stencil: &Stencil,
        options: &CutOptions,
    ) -> Result<Plan, SodaError> {
        Plan::make(src, source, source_name, stencil, options, true)
    }

    fn make(
        src: &mut FitsFile,
        source: &Path,
        source_name: &str,
        stencil: &Stencil,
        options: &CutOptions,
        take_handed: bool,
    ) -> Result<Plan, SodaError> {
        let section = match stencil {
            Stencil::Pixels(section) => Some(section),
            _ => None,
        };
        let extension = options
            .extension
            .as_deref()
            .or_else(|| section.and_then(|s| s.extension()));
        let (image, wcs, header) = crate::parsed::source_image(src, source, extension)?;
        let handed = match take_handed {
            true => handover::take(&handover::key(source, stencil, options), header),
            false => None,
        };
        if let Some(Located {
            region,
            window,
            planes,
        }) = handed
        {
            return Ok(Plan {
                image,
                wcs,
                header,
                region,
                window,
                planes,
            });
        }
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
            header,
            region,
            window,
            planes,
        })
    }

    /// Leaves where this plan located the cutout for the next plan of the same cutout of the
    /// same image in this process (see `handover`).
    pub(crate) fn hand_over(&self, source: &Path, stencil: &Stencil, options: &CutOptions) {
        handover::put(
            handover::key(source, stencil, options),
            self.header,
            Located {
                region: self.region,
                window: self.window,
                planes: self.planes.clone(),
            },
        );
    }
}

/// Where a plan located its cutout in the image.
#[derive(Debug, Clone, PartialEq)]
struct Located {
    region: PixelBox,
    window: Window,
    planes: Vec<Range<usize>>,
}

/// A synchronous request is planned twice in one process: by the frontend, to check and price
/// it ([`cutout_size`]), and by the worker, to cut it. Locating a stencil on an image (mapping
/// its outline and the image's border between sky and pixels) was a fifth of the service's
/// CPU, so the frontend's plan leaves what it located here and the worker's plan takes it.
///
/// An entry is taken once per plan that left it, by the next cuts of the same cutout (file
/// path, stencil and options, compared exactly) of the same header (its hash, so a file changed
/// in between is located afresh); entries nobody takes (the worker runs in another process, or
/// the request was refused) are dropped oldest first beyond a bound. Identical requests that
/// arrive together each locate their cutout once: each frontend's plan adds a turn to the one
/// entry of that cutout (a location depends on nothing else, so every plan left the same one),
/// and each cut takes a turn; only cuts take.
mod handover {
    use std::collections::{HashMap, VecDeque};
    use std::path::Path;
    use std::sync::{Mutex, OnceLock};

    use super::{CutOptions, Located};
    use crate::stencil::Stencil;

    /// Puts remembered at most (an entry goes when its latest put is the oldest remembered).
    pub(super) const MAX_ENTRIES: usize = 1024;

    /// One cutout's location, left by plans not yet followed by their cuts.
    struct Entry {
        /// The number of its latest `put`.
        put: u64,
        /// The hash of the header it was located on.
        header: u64,
        located: Located,
        /// Plans that left it and whose cuts have not taken it yet.
        turns: usize,
    }

    #[derive(Default)]
    struct Entries {
        located: HashMap<String, Entry>,
        /// Keys in the order they were put, with the number of that `put` (an entry taken, or
        /// put again since, is skipped when its turn to go comes).
        order: VecDeque<(u64, String)>,
        puts: u64,
    }

    fn entries() -> std::sync::MutexGuard<'static, Entries> {
        static ENTRIES: OnceLock<Mutex<Entries>> = OnceLock::new();
        ENTRIES
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The cutout, exactly: `Debug` writes every number in full.
    pub(super) fn key(source: &Path, stencil: &Stencil, options: &CutOptions) -> String {
        format!("{source:?}\n{stencil:?}\n{options:?}")
    }

    pub(super) fn put(key: String, header: u64, located: Located) {
        let mut entries = entries();
        entries.puts += 1;
        let put = entries.puts;
        entries.order.push_back((put, key.clone()));
        match entries.located.get_mut(&key) {
            Some(entry) if entry.header == header => {
                entry.put = put;
                entry.located = located;
                entry.turns += 1;
            }
            _ => {
                let entry = Entry {
                    put,
                    header,
                    located,
                    turns: 1,
                };
                entries.located.insert(key, entry);
            }
        }
        while entries.order.len() > MAX_ENTRIES {
            let Some((put, oldest)) = entries.order.pop_front() else {
                break;
            };
            if entries.located.get(&oldest).is_some_and(|e| e.put == put) {
                entries.located.remove(&oldest);
            }
        }
    }

    /// A turn of the entry for `key`, if it was made on a header of hash `header` (an entry of
    /// another header is removed: its file changed).
    pub(super) fn take(key: &str, header: u64) -> Option<Located> {
        let mut entries = entries();
        let entry = entries.located.get_mut(key)?;
        if entry.header != header {
            entries.located.remove(key);
            return None;
        }
        entry.turns -= 1;
        match entry.turns {
            0 => entries.located.remove(key).map(|e| e.located),
            _ => Some(entry.located.clone()),
        }
    }

    #[cfg(test)]
    pub(super) fn held(key: &str) -> bool {
        entries().located.contains_key(key)
    }

    /// The turns left of the entry for `key` (0: none held).
    #[cfg(test)]
    pub(super) fn turns(key: &str) -> usize {
        entries().located.get(key).map_or(0, |e| e.turns)
    }

    /// Entries in the order of puts, taken ones included.
    #[cfg(test)]
    pub(super) fn queued() -> usize {
        entries().order.len()
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
    // The cut that usually follows plans the same cutout again: it takes this one's location.
    plan.hand_over(source, stencil, options);
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
    let plan = Plan::for_cut(&mut src, source, source_name, stencil, options)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{SyntheticImage, write_synthetic_image};
    use crate::header::Provenance;

    const SCALE: f64 = 1.0 / 3600.0;

    fn image(path: &Path, ra_deg: f64) {
        let image = SyntheticImage {
            nx: 120,
            ny: 90,
            ra_deg,
            dec_deg: 41.0,
            pixel_scale_deg: SCALE,
        };
        write_synthetic_image(path, &image).unwrap();
    }

    fn provenance() -> Provenance {
        Provenance {
            source_id: "butler://test/src".to_owned(),
            stencil: String::new(),
            software: "test".to_owned(),
            time_utc: "2026-12-01T00:00:00Z".to_owned(),
        }
    }

    /// A temporary directory holding `src.fits`, the test image at RA 10°.
    fn image_in_temporary_directory() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src.fits");
        image(&source, 10.0);
        (dir, source)
    }

    fn cut(source: &Path, stencil: &Stencil, options: &CutOptions) -> (Vec<u8>, PixelBox) {
        let (bytes, cutout) =
            crate::cut_to_memory(source, stencil, &provenance(), options.clone(), u64::MAX)
                .unwrap()
                .unwrap();
        (bytes, cutout.region)
    }

    #[test]
    fn a_cut_takes_the_location_its_plan_left_once() {
        let (_dir, source) = image_in_temporary_directory();
        let stencil = Stencil::parse_circle(&format!("10.001 41.001 {}", 12.0 * SCALE)).unwrap();
        let options = CutOptions::default();
        let key = handover::key(&source, &stencil, &options);
        let alone = cut(&source, &stencil, &options);
        assert!(!handover::held(&key), "a cut leaves nothing");
        let size = cutout_size(&source, &stencil, &options).unwrap();
        assert!(handover::held(&key), "the plan left its location");
        // A plan of the same cutout (another request's frontend) locates it itself: an entry
        // planted with a wrong location, on the right header, is not what it prices.
        let mut file = FitsFile::open(&source).unwrap();
        let (_, _, header) = crate::parsed::source_image(&mut file, &source, None).unwrap();
        let one = PixelBox {
            x0: 0,
            y0: 0,
            x1: 0,
            y1: 0,
        };
        let planted = Located {
            region: one,
            window: Window::of(one),
            planes: Vec::new(),
        };
        handover::put(key.clone(), header, planted);
        assert_eq!(handover::turns(&key), 2);
        assert_eq!(cutout_size(&source, &stencil, &options).unwrap(), size);
        assert_eq!(
            handover::turns(&key),
            3,
            "the frontend's plan took no turn and left one"
        );
        let after_plan = cut(&source, &stencil, &options);
        assert_eq!(handover::turns(&key), 2, "the cut took one turn");
        assert!(after_plan == alone, "the same cutout, byte for byte");
        assert_eq!(
            size.pixels,
            (alone.1.width() * alone.1.height()) as u64,
            "what was priced is what was cut"
        );
    }

    #[test]
    fn identical_plans_each_hand_their_location_to_one_cut() {
        let (_dir, source) = image_in_temporary_directory();
        let stencil = Stencil::parse_circle(&format!("10.002 41.002 {}", 9.0 * SCALE)).unwrap();
        let options = CutOptions::default();
        let key = handover::key(&source, &stencil, &options);
        let alone = cut(&source, &stencil, &options);
        // Three identical requests priced together, then cut: each cut takes one turn.
        for _ in 0..3 {
            cutout_size(&source, &stencil, &options).unwrap();
        }
        assert_eq!(handover::turns(&key), 3);
        for left in [2, 1, 0] {
            assert!(cut(&source, &stencil, &options) == alone);
            assert_eq!(handover::turns(&key), left);
        }
        assert!(!handover::held(&key), "the last cut took the entry");
        // A fourth cut finds none, and locates the cutout itself.
        assert!(cut(&source, &stencil, &options) == alone);
        assert!(!handover::held(&key));
    }

    #[test]
    fn a_location_is_taken_only_by_the_same_cutout_of_the_same_header() {
        let (_dir, source) = image_in_temporary_directory();
        let stencil = Stencil::parse_circle(&format!("10.0 41.0 {}", 12.0 * SCALE)).unwrap();
        let options = CutOptions::default();
        let masked = CutOptions {
            mask: true,
            ..CutOptions::default()
        };
        cutout_size(&source, &stencil, &options).unwrap();
        // Other options are another cutout: the entry stays for its own cut.
        assert_ne!(
            handover::key(&source, &stencil, &masked),
            handover::key(&source, &stencil, &options)
        );
        cut(&source, &stencil, &masked);
        assert!(handover::held(&handover::key(&source, &stencil, &options)));
        // The file rewritten in between, its image 20 arcseconds further east: the cut locates
        // the stencil on the new header, not where the plan found it on the old one.
        let before = cut(&source, &stencil, &options).1;
        cutout_size(&source, &stencil, &options).unwrap();
        image(&source, 10.0 + 20.0 * SCALE / 41f64.to_radians().cos());
        let moved = cut(&source, &stencil, &options).1;
        assert!(!handover::held(&handover::key(&source, &stencil, &options)));
        let shift = moved.x0 as i64 - before.x0 as i64;
        assert!((19..=21).contains(&shift), "{moved:?} after {before:?}");
        // A plan on the old header, then one on the new: the new replaces it, with one turn,
        // which the cut on the new header takes.
        let key = handover::key(&source, &stencil, &options);
        image(&source, 10.0);
        cutout_size(&source, &stencil, &options).unwrap();
        image(&source, 10.0 + 20.0 * SCALE / 41f64.to_radians().cos());
        cutout_size(&source, &stencil, &options).unwrap();
        assert_eq!(handover::turns(&key), 1, "the old header's turn is gone");
        assert_eq!(cut(&source, &stencil, &options).1, moved);
        assert!(!handover::held(&key));
    }

    #[test]
    fn locations_nobody_takes_are_dropped_oldest_first() {
        let (_dir, source) = image_in_temporary_directory();
        let stencil = |n: usize| {
            let ra = 10.0 + n as f64 * 1e-7;
            Stencil::parse_circle(&format!("{ra} 41.0 {}", 5.0 * SCALE)).unwrap()
        };
        let options = CutOptions::default();
        let plan = |n| cutout_size(&source, &stencil(n), &options).unwrap();
        let held = |n| handover::held(&handover::key(&source, &stencil(n), &options));
        plan(0);
        for n in 1..handover::MAX_ENTRIES {
            plan(n);
        }
        // Planned again: its first entry's turn to go comes now, and it stays.
        plan(0);
        plan(handover::MAX_ENTRIES);
        // (Other tests may put entries meanwhile: only ever more of them.)
        assert!(held(0), "put again, it waits for its new turn");
        assert!(!held(1), "the oldest went");
        assert!(held(handover::MAX_ENTRIES), "the newest stays");
        assert_eq!(handover::queued(), handover::MAX_ENTRIES);
    }
}
