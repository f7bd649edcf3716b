//! The science of the sky index: what the index records about each image of a file (footprint,
//! HEALPix cells, observation time, wavelength interval), how a query position or region becomes
//! the cells to look up, and the exact footprint test that the looked-up candidates must pass.
//!
//! Cells are HEALPix NESTED cells from CDS's `cdshealpix`, written in the NUNIQ encoding
//! (`4 * 4^depth + index`) so that cells of every depth share one integer column. An image is
//! covered by the cells of a depth fitted to its size (a handful of cells whatever the pixel
//! scale); a point query asks for the point's cell at every depth up to [`MAX_DEPTH`], so it
//! finds images of any size with one indexed `IN` list. A region query asks for its own cells'
//! ancestors and the NUNIQ ranges of their descendants.

use std::path::Path;

use fitsio::FitsFile;
use fitsio::hdu::HduInfo;

use crate::SodaError;
use crate::footprint::{Footprint, footprint};
use crate::image::{SourceImage, lock_source, observation_time};
use crate::spectral::wavelength_axis;
use crate::sphere::{self, Vec3};
use crate::stencil::Stencil;
pub use crate::temporal::iso_to_mjd;

/// The deepest HEALPix depth an image's cells may have (cells of about 50 milliarcseconds):
/// a point query looks up one cell per depth up to this one.
pub const MAX_DEPTH: u8 = 22;

/// One image HDU of a file, as the index records it.
#[derive(Debug, Clone, PartialEq)]
pub struct DescribedImage {
    /// The `EXTNAME` an ID needs to name this HDU (`None`: the file's only, or first, image).
    pub extension: Option<String>,
    /// Where the image lies, or why it cannot be indexed.
    pub content: Result<ImageFacts, String>,
}

/// What the index needs to know about a located image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFacts {
    pub footprint: Footprint,
    /// Observation interval (MJD).
    pub time: Option<(f64, f64)>,
    /// Wavelength interval (metres) of a linear spectral axis.
    pub band: Option<(f64, f64)>,
    /// NUNIQ cells covering the footprint.
    pub cells: Vec<i64>,
}

/// Reads every image HDU of the file at `path`. A file with one image gives one entry without
/// an extension name; a multi-extension file gives one entry per named image extension. An
/// error is returned only when the file cannot be opened as FITS at all.
pub fn describe_file(path: &Path) -> Result<Vec<DescribedImage>, SodaError> {
    let hdus = {
        let _guard = lock_source(path);
        let mut file = FitsFile::open(path)?;
        image_hdus(&mut file)?
    };
    let single = hdus.len() == 1;
    let mut described = Vec::with_capacity(hdus.len());
    for (position, hdu) in hdus.into_iter().enumerate() {
        // The ID without `?ext=` names the first image, so that one needs no name.
        let extension = if single {
            None
        } else if let Some(name) = &hdu.extname {
            Some(name.clone())
        } else if position == 0 {
            None
        } else {
            described.push(DescribedImage {
                extension: Some(format!("#{}", hdu.index)),
                content: Err(format!(
                    "image HDU {} has no EXTNAME, so no ID can name it",
                    hdu.index
                )),
            });
            continue;
        };
        let content = match hdu.facts {
            Err(reason) => Err(reason),
            Ok((time, band)) => match footprint(path, extension.as_deref()) {
                Ok(footprint) => Ok(ImageFacts {
                    cells: footprint_cells(&footprint),
                    footprint,
                    time,
                    band,
                }),
                Err(e) => Err(e.to_string()),
            },
        };
        described.push(DescribedImage { extension, content });
    }
    if described.is_empty() {
        described.push(DescribedImage {
            extension: None,
            content: Err("no image HDU with 2 or more axes".to_owned()),
        });
    }
    Ok(described)
}

/// An interval (MJD or metres).
type Interval = (f64, f64);

/// An image HDU found in a file, with what its header alone tells: its observation time and
/// wavelength interval, or why they cannot be read.
struct FoundHdu {
    index: usize,
    extname: Option<String>,
    facts: Result<(Option<Interval>, Option<Interval>), String>,
}

fn image_hdus(file: &mut FitsFile) -> Result<Vec<FoundHdu>, SodaError> {
    let primary = file.primary_hdu()?;
    let primary_time = observation_time(file, &primary).ok().flatten();
    let mut found = Vec::new();
    for index in 0..file.num_hdus()? {
        let hdu = file.hdu(index)?;
        let HduInfo::ImageInfo { shape, .. } = &hdu.info else {
            continue;
        };
        if shape.len() < 2 || shape.contains(&0) {
            continue;
        }
        let extname = hdu
            .read_key::<String>(file, "EXTNAME")
            .ok()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty());
        let facts = (|| -> Result<(Option<Interval>, Option<Interval>), String> {
            // An extension inherits the observation time of the primary header when it has none.
            let time = observation_time(file, &hdu)?.or(primary_time);
            let image = SourceImage::find(file, extname.as_deref()).map_err(|e| e.to_string())?;
            let band = wavelength_axis(&image.keywords, &image.extra)
                .map_err(|e| e.to_string())?
                .map(|axis| axis.range());
            Ok((time, band))
        })();
        found.push(FoundHdu {
            index,
            extname,
            facts,
        });
    }
    Ok(found)
}

/// The NUNIQ value of cell `hash` at `depth`.
fn nuniq(depth: u8, hash: u64) -> i64 {
    // At most 4 * 4^29 + 12 * 4^29 = 2^62: fits in an i64.
    ((4_u64 << (2 * u32::from(depth))) + hash) as i64
}

/// The depth whose cells are about the size of a circle of `radius_deg`, so that it meets at
/// most 9 of them; 0 for circles too big for any depth to do that.
fn depth_for_radius(radius_deg: f64) -> u8 {
    let radius = radius_deg.to_radians().max(1e-12);
    if cdshealpix::has_best_starting_depth(radius) {
        cdshealpix::best_starting_depth(radius).min(MAX_DEPTH)
    } else {
        0
    }
}

/// The cells at `depth` a cone meets (a superset: the approximate cone coverage never misses).
fn cone_cells(depth: u8, (ra, dec): (f64, f64), radius_deg: f64) -> Vec<u64> {
    let radius = radius_deg.to_radians().clamp(1e-12, std::f64::consts::PI);
    cdshealpix::nested::cone_coverage_approx(depth, ra.to_radians(), dec.to_radians(), radius)
        .flat_iter()
        .collect()
}

/// NUNIQ cells covering an image: those of its enclosing circle, one depth finer than the
/// circle's own, so that a footprint is a few tens of cells whatever its size.
pub fn footprint_cells(footprint: &Footprint) -> Vec<i64> {
    let depth = (depth_for_radius(footprint.radius_deg) + 1).min(MAX_DEPTH);
    let mut cells: Vec<i64> = cone_cells(depth, footprint.center, footprint.radius_deg)
        .into_iter()
        .map(|hash| nuniq(depth, hash))
        .collect();
    cells.sort_unstable();
    cells.dedup();
    cells
}

/// The cells to look up for images that contain the point: its cell at every depth.
pub fn point_cells(ra_deg: f64, dec_deg: f64) -> Vec<i64> {
    (0..=MAX_DEPTH)
        .map(|depth| {
            nuniq(
                depth,
                cdshealpix::nested::hash(depth, ra_deg.to_radians(), dec_deg.to_radians()),
            )
        })
        .collect()
}

/// The depth of the cells by which [`cell_of`] groups positions (about 13.7′ on a side): coarse
/// enough that one lookup serves every catalogue row near it, fine enough that it finds few
/// images beyond those that cover the row.
pub const GROUPING_DEPTH: u8 = 8;

/// The [`GROUPING_DEPTH`] cell (nested hash) that holds a position.
pub fn cell_of(ra_deg: f64, dec_deg: f64) -> u64 {
    cdshealpix::nested::hash(GROUPING_DEPTH, ra_deg.to_radians(), dec_deg.to_radians())
}

/// The cells (exact matches) and NUNIQ ranges (half-open) to look up for every image that may
/// contain a point of the [`GROUPING_DEPTH`] cell `hash`: an image covering such a point has a
/// cell holding it, which is either an ancestor of `hash` (or `hash` itself) or lies inside it.
pub fn cell_lookup(hash: u64) -> (Vec<i64>, Vec<(i64, i64)>) {
    let exact = (0..=GROUPING_DEPTH)
        .map(|depth| nuniq(depth, hash >> (2 * u32::from(GROUPING_DEPTH - depth))))
        .collect();
    let ranges = (GROUPING_DEPTH + 1..=MAX_DEPTH)
        .map(|depth| {
            let shift = 2 * u32::from(depth - GROUPING_DEPTH);
            (
                nuniq(depth, hash << shift),
                nuniq(depth, (hash + 1) << shift),
            )
        })
        .collect();
    (exact, ranges)
}

/// The NUNIQ range that holds every cell of every depth up to [`MAX_DEPTH`]: the whole sky.
pub fn all_sky_range() -> (i64, i64) {
    (nuniq(0, 0), nuniq(MAX_DEPTH + 1, 0))
}

/// The cells (exact matches) and NUNIQ ranges (half-open) to look up for images that may
/// overlap `stencil`: every image whose cells meet the stencil's cells has a cell that is an
/// ancestor of one of them, or lies inside one of them.
pub fn region_cells(stencil: &Stencil) -> (Vec<i64>, Vec<(i64, i64)>) {
    let (center, radius) = enclosing_circle(stencil);
    // A region this big meets most of the sky: look at every cell (the approximate cone
    // coverage is not meant for radii near a hemisphere and more).
    if radius >= 90.0 {
        return (Vec::new(), vec![all_sky_range()]);
    }
    let depth = depth_for_radius(radius);
    let mut hashes = cone_cells(depth, center, radius);
    hashes.sort_unstable();
    hashes.dedup();
    let mut exact: Vec<i64> = Vec::new();
    for &hash in &hashes {
        for ancestor in 0..depth {
            exact.push(nuniq(ancestor, hash >> (2 * u32::from(depth - ancestor))));
        }
    }
    exact.sort_unstable();
    exact.dedup();
    // Runs of consecutive cells become one range per deeper depth.
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &hash in &hashes {
        match runs.last_mut() {
            Some((_, end)) if *end == hash => *end = hash + 1,
            _ => runs.push((hash, hash + 1)),
        }
    }
    let mut ranges = Vec::new();
    for d in depth..=MAX_DEPTH {
        let shift = 2 * u32::from(d - depth);
        for &(start, end) in &runs {
            ranges.push((nuniq(d, start << shift), nuniq(d, end << shift)));
        }
    }
    (exact, ranges)
}

/// A circle that encloses the stencil: (centre, radius in degrees).
fn enclosing_circle(stencil: &Stencil) -> ((f64, f64), f64) {
    let points: Vec<Vec3> = match stencil {
        Stencil::Circle(c) => return (c.center(), c.radius()),
        Stencil::Polygon(p) => p
            .vertices()
            .iter()
            .map(|&(r, d)| sphere::unit_vector(r, d))
            .collect(),
        Stencil::Range(_) => stencil.boundary(0.5),
        Stencil::Moc(moc) => moc
            .cells()
            .flat_map(|(depth, index)| crate::stencil::Moc::cell_outline(depth, index))
            .map(|(r, d)| sphere::unit_vector(r, d))
            .collect(),
        // A pixel section (`SUB`) has no place on the sky: only the whole sky encloses it.
        Stencil::Pixels(_) => return ((0.0, 0.0), 180.0),
    };
    let sum = points
        .iter()
        .fold([0.0; 3], |m, v| [m[0] + v[0], m[1] + v[1], m[2] + v[2]]);
    let norm = sphere::dot(sum, sum).sqrt();
    if norm < 1e-9 {
        // The points balance around the sphere's centre: only the whole sky encloses them.
        return ((0.0, 0.0), 180.0);
    }
    let centre = [sum[0] / norm, sum[1] / norm, sum[2] / norm];
    let radius = points
        .iter()
        .map(|&p| sphere::separation_deg(centre, p))
        .fold(0.0, f64::max);
    // Edges of a polygon may bow out beyond its vertices' circle only by rounding, but a
    // range's parallels bow away from great circles: pad by a sampling step.
    let pad = if matches!(stencil, Stencil::Range(_)) {
        0.5
    } else {
        1e-9
    };
    (sphere::ra_dec(centre), (radius + pad).min(180.0))
}

/// Whether the image outline `corners` (great-circle edges) contains the point.
pub fn outline_contains(corners: &[(f64, f64)], ra_deg: f64, dec_deg: f64) -> bool {
    let vertices: Vec<Vec3> = corners
        .iter()
        .map(|&(r, d)| sphere::unit_vector(r, d))
        .collect();
    sphere::polygon_contains(&vertices, sphere::unit_vector(ra_deg, dec_deg))
}

/// Whether the image outline `corners` (great-circle edges) and the stencil share a point.
/// Exact for circles and polygons; for a RANGE, whose sides along parallels are not great
/// circles, both boundaries are sampled every 0.01 of the smaller size, which misses only
/// overlaps thinner than that.
pub fn outline_overlaps(corners: &[(f64, f64)], stencil: &Stencil) -> bool {
    let outline: Vec<Vec3> = corners
        .iter()
        .map(|&(r, d)| sphere::unit_vector(r, d))
        .collect();
    if outline.len() < 3 {
        return false;
    }
    let edges = || (0..outline.len()).map(|i| (outline[i], outline[(i + 1) % outline.len()]));
    match stencil {
        // A pixel section (`SUB`) names pixels, not sky: it overlaps whatever image it is cut from.
        Stencil::Pixels(_) => true,
        Stencil::Circle(c) => {
            let (ra, dec) = c.center();
            let p = sphere::unit_vector(ra, dec);
            sphere::polygon_contains(&outline, p)
                || edges().any(|(a, b)| arc_distance_deg(p, a, b) <= c.radius())
        }
        Stencil::Polygon(polygon) => {
            let other: Vec<Vec3> = polygon
                .vertices()
                .iter()
                .map(|&(r, d)| sphere::unit_vector(r, d))
                .collect();
            corners.iter().any(|&(r, d)| stencil.contains(r, d))
                || other.iter().any(|&v| sphere::polygon_contains(&outline, v))
                || edges().any(|(a, b)| {
                    (0..other.len())
                        .any(|j| arcs_cross(a, b, other[j], other[(j + 1) % other.len()]))
                })
        }
        Stencil::Moc(moc) => moc.cells().any(|(depth, index)| {
            let cell = crate::stencil::Moc::cell_outline(depth, index);
            outline_overlaps(
                corners,
                &Stencil::Polygon(crate::stencil::Polygon::from_vertices(cell)),
            )
        }),
        Stencil::Range(_) => {
            let size = edges()
                .map(|(a, b)| sphere::separation_deg(a, b))
                .fold(f64::INFINITY, f64::min);
            let step = (size / 100.0).max(1e-6);
            let inside = |v: Vec3| {
                let (r, d) = sphere::ra_dec(v);
                stencil.contains(r, d)
            };
            edges().any(|(a, b)| {
                let n = (sphere::separation_deg(a, b) / step).ceil().max(1.0) as usize;
                sphere::great_circle(a, b, n).any(inside)
            }) || stencil
                .boundary(step)
                .into_iter()
                .any(|v| sphere::polygon_contains(&outline, v))
        }
    }
}

/// Angular distance (degrees) from `p` to the shorter great-circle arc from `a` to `b`.
fn arc_distance_deg(p: Vec3, a: Vec3, b: Vec3) -> f64 {
    let n = sphere::cross(a, b);
    let len = sphere::dot(n, n).sqrt();
    let ends = sphere::separation_deg(p, a).min(sphere::separation_deg(p, b));
    if len < 1e-15 {
        return ends;
    }
    let n = [n[0] / len, n[1] / len, n[2] / len];
    // The point of the great circle nearest to p, and whether it lies on the arc.
    let k = sphere::dot(p, n);
    let q = [p[0] - k * n[0], p[1] - k * n[1], p[2] - k * n[2]];
    let q_len = sphere::dot(q, q).sqrt();
    if q_len < 1e-15 {
        return 90.0f64.min(ends);
    }
    let q = [q[0] / q_len, q[1] / q_len, q[2] / q_len];
    if on_arc(q, a, b, n) {
        k.abs().clamp(0.0, 1.0).asin().to_degrees()
    } else {
        ends
    }
}

/// Whether `q`, on the great circle with pole `n` through `a` and `b`, lies between them.
fn on_arc(q: Vec3, a: Vec3, b: Vec3, n: Vec3) -> bool {
    sphere::dot(sphere::cross(a, q), n) >= -1e-15 && sphere::dot(sphere::cross(q, b), n) >= -1e-15
}

/// Whether the shorter great-circle arcs a1→a2 and b1→b2 cross.
fn arcs_cross(a1: Vec3, a2: Vec3, b1: Vec3, b2: Vec3) -> bool {
    let na = sphere::cross(a1, a2);
    let nb = sphere::cross(b1, b2);
    let t = sphere::cross(na, nb);
    let len = sphere::dot(t, t).sqrt();
    if len < 1e-15 {
        return false;
    }
    let t = [t[0] / len, t[1] / len, t[2] / len];
    [t, [-t[0], -t[1], -t[2]]]
        .into_iter()
        .any(|x| on_arc(x, a1, a2, na) && on_arc(x, b1, b2, nb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SyntheticImage, write_synthetic_image};

    fn square(ra: f64, dec: f64, half: f64) -> Vec<(f64, f64)> {
        vec![
            (ra - half, dec - half),
            (ra + half, dec - half),
            (ra + half, dec + half),
            (ra - half, dec + half),
        ]
    }

    #[test]
    fn iso_dates_become_mjd() {
        assert_eq!(iso_to_mjd("1858-11-17"), Some(0.0));
        assert_eq!(iso_to_mjd("2000-01-01T12:00:00"), Some(51_544.5));
        assert_eq!(iso_to_mjd("2023-06-15T06:00:00.0Z"), Some(60_110.25));
        assert_eq!(iso_to_mjd("2023-13-01"), None);
        assert_eq!(iso_to_mjd("yesterday"), None);
    }

    #[test]
    fn a_point_finds_the_cells_of_every_image_that_contains_it() {
        // Images of very different sizes around one point, one across RA 0 and one at a pole.
        for (center, radius, point) in [
            ((150.0, 2.0), 0.05, (150.01, 2.01)),
            ((0.1, -3.0), 2.0, (359.5, -3.2)),
            ((10.0, 89.9), 0.3, (200.0, 89.95)),
            ((42.0, 10.0), 1e-4, (42.0, 10.0)),
        ] {
            let fp = Footprint {
                size: (10, 10),
                center,
                radius_deg: radius,
                corners: [(0.0, 0.0); 4],
                band: None,
                time: None,
                pol: Vec::new(),
            };
            let image = footprint_cells(&fp);
            let point = point_cells(point.0, point.1);
            assert!(
                image.iter().any(|c| point.contains(c)),
                "{center:?} {radius}: {image:?} vs {point:?}"
            );
            // And a far point shares no cell with it.
            let far = point_cells(center.0 + 90.0, -center.1);
            assert!(!image.iter().any(|c| far.contains(c)), "{center:?}");
        }
    }

    #[test]
    fn a_grouping_cell_lookup_finds_every_image_that_covers_a_point_in_it() {
        // Images far bigger and far smaller than a grouping cell, each covering the point.
        for (center, radius, point) in [
            ((150.0, 2.0), 5.0, (150.01, 2.01)),
            ((150.0, 2.0), 0.001, (150.0002, 2.0001)),
            ((0.02, -3.0), 0.05, (359.99, -3.01)),
            ((10.0, 89.9), 0.3, (200.0, 89.95)),
        ] {
            let fp = Footprint {
                size: (10, 10),
                center,
                radius_deg: radius,
                corners: [(0.0, 0.0); 4],
                band: None,
                time: None,
                pol: Vec::new(),
            };
            let image = footprint_cells(&fp);
            let (exact, ranges) = cell_lookup(cell_of(point.0, point.1));
            let found = |cells: &[i64]| {
                cells
                    .iter()
                    .any(|c| exact.contains(c) || ranges.iter().any(|&(a, b)| (a..b).contains(c)))
            };
            assert!(found(&image), "{center:?} {radius}: {image:?}");
            // An image far from the cell is not a candidate.
            let far = Footprint {
                center: (center.0 + 90.0, -center.1),
                ..fp
            };
            assert!(!found(&footprint_cells(&far)), "{center:?} {radius}");
        }
    }

    #[test]
    fn a_region_finds_the_cells_of_images_it_touches() {
        let image = Footprint {
            size: (10, 10),
            center: (359.9, 0.0),
            radius_deg: 0.1,
            corners: [(0.0, 0.0); 4],
            band: None,
            time: None,
            pol: Vec::new(),
        };
        let cells = footprint_cells(&image);
        let matches = |stencil: &Stencil| {
            let (exact, ranges) = region_cells(stencil);
            cells
                .iter()
                .any(|c| exact.contains(c) || ranges.iter().any(|&(a, b)| a <= *c && *c < b))
        };
        // A big circle and a tiny one, both reaching the image across RA 0.
        assert!(matches(&Stencil::parse_circle("1 0 1.5").expect("circle")));
        assert!(matches(
            &Stencil::parse_circle("0.02 0 0.03").expect("circle")
        ));
        assert!(matches(
            &Stencil::parse_pos("RANGE 359 1 -1 1").expect("range")
        ));
        assert!(!matches(&Stencil::parse_circle("90 45 1").expect("circle")));
    }

    #[test]
    fn outline_overlap_is_exact_for_circles_and_polygons() {
        let outline = square(10.0, 0.0, 1.0);
        let circle = |v: &str| Stencil::parse_circle(v).expect("circle");
        assert!(outline_overlaps(&outline, &circle("10 0 0.1")));
        // The circle reaches over the edge at RA 11 without containing a corner.
        assert!(outline_overlaps(&outline, &circle("11.5 0 0.6")));
        assert!(!outline_overlaps(&outline, &circle("11.5 0 0.4")));
        let polygon = |v: &str| Stencil::parse_polygon(v).expect("polygon");
        // A thin cross: no vertex of either inside the other, only edges crossing.
        assert!(outline_overlaps(
            &outline,
            &polygon("8 -0.1 12 -0.1 12 0.1 8 0.1")
        ));
        assert!(!outline_overlaps(
            &outline,
            &polygon("12 -0.1 13 -0.1 13 0.1 12 0.1")
        ));
        let range = |v: &str| Stencil::parse_pos(v).expect("range");
        assert!(outline_overlaps(&outline, &range("RANGE 10.5 20 -5 5")));
        assert!(!outline_overlaps(&outline, &range("RANGE 11.5 20 -5 5")));
        assert!(outline_contains(&outline, 10.5, 0.5));
        assert!(!outline_contains(&outline, 11.5, 0.5));
    }

    #[test]
    fn a_file_is_described_with_its_time_and_cells() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.fits");
        write_synthetic_image(
            &path,
            &SyntheticImage {
                nx: 100,
                ny: 80,
                ra_deg: 30.0,
                dec_deg: -20.0,
                pixel_scale_deg: 1.0 / 3600.0,
            },
        )
        .expect("image");
        {
            let mut file = FitsFile::edit(&path).expect("open");
            let hdu = file.primary_hdu().expect("hdu");
            hdu.write_key(&mut file, "DATE-OBS", "2024-03-01T00:00:00")
                .expect("key");
            hdu.write_key(&mut file, "EXPTIME", 864.0).expect("key");
        }
        let described = describe_file(&path).expect("described");
        assert_eq!(described.len(), 1);
        assert_eq!(described[0].extension, None);
        let facts = described[0].content.as_ref().expect("located");
        let start = iso_to_mjd("2024-03-01").expect("mjd");
        assert_eq!(facts.time, Some((start, start + 0.01)));
        assert_eq!(facts.band, None);
        assert!(!facts.cells.is_empty());
        let point = point_cells(30.0, -20.0);
        assert!(facts.cells.iter().any(|c| point.contains(c)));

        let junk = dir.path().join("junk.fits");
        std::fs::write(&junk, b"not a FITS file").expect("write");
        assert!(describe_file(&junk).is_err());
    }
}
