//! Which pixels of a cutout rectangle have their centre inside the stencil, exactly per pixel
//! centre, without running the WCS for every pixel (which made masking cost several times the
//! cut itself).
//!
//! Along a row, "inside" can only change between two neighbouring pixel centres where the
//! stencil boundary crosses the segment joining them, so both lie within one pixel of the
//! boundary. The boundary is projected into pixel space as a polyline, refined until each chord
//! is short and stays within a known distance of the true curve; pixels near a chord are tested
//! one by one, and each run of pixels between them takes the answer of its first pixel.
//!
//! Leaving the projection's domain ("off the sky") also changes the answer, with no stencil
//! boundary to mark it. So the fast path is taken only when the rectangle's border is all on
//! the sky (the domain has no holes, so then the whole rectangle is) and the boundary projects
//! everywhere; otherwise every pixel is tested.

use std::ops::Range;

use crate::celestial::CelestialWcs;
use crate::region::PixelBox;
use crate::sphere::{self, Vec3};
use crate::stencil::{Stencil, StencilTest};

/// Chords are refined until they are at most this long, in pixels...
const MAX_CHORD: f64 = 2.0;
/// ...and their sky midpoint lies at most this far from the chord's midpoint, in pixels.
const MAX_SAG: f64 = 0.25;
/// Refinement stops here; the sky arc is then far below a pixel (only a seam of the projection,
/// where the arc's ends land on opposite edges, gets this deep).
const MAX_DEPTH: u32 = 24;

/// The inside/outside answer for each pixel centre of a rectangle.
pub(crate) struct Mask<'a> {
    wcs: &'a CelestialWcs,
    test: StencilTest,
    region: PixelBox,
    /// Per row of `region`, sorted disjoint column ranges (inclusive) whose pixels must be
    /// tested one by one; `None` when every pixel must be.
    near: Option<Vec<Vec<(usize, usize)>>>,
}

impl<'a> Mask<'a> {
    /// Plans the mask of `region` for `stencil`, whose boundary is sampled every `step_deg`.
    pub(crate) fn new(
        wcs: &'a CelestialWcs,
        stencil: &Stencil,
        region: PixelBox,
        step_deg: f64,
    ) -> Mask<'a> {
        let mut mask = Mask {
            wcs,
            test: stencil.test(),
            region,
            near: None,
        };
        // A MOC's outline is many cells' edges: its pixels are tested one by one.
        if mask.border_on_sky() && !matches!(stencil, Stencil::Moc(_)) {
            mask.near = near_boundary(wcs, stencil, region, step_deg);
        }
        mask
    }

    /// Whether pixel (`x`, `y`) has its centre inside the stencil (and on the sky).
    pub(crate) fn exact(&self, x: usize, y: usize) -> bool {
        self.wcs
            .pixel_to_sky(x as f64, y as f64)
            .is_some_and(|(ra, dec)| self.test.contains(ra, dec))
    }

    fn border_on_sky(&self) -> bool {
        let r = self.region;
        let mut border: Vec<(f64, f64)> = Vec::new();
        for x in r.x0..=r.x1 {
            border.extend([(x as f64, r.y0 as f64), (x as f64, r.y1 as f64)]);
        }
        for y in r.y0..=r.y1 {
            border.extend([(r.x0 as f64, y as f64), (r.x1 as f64, y as f64)]);
        }
        // One wcslib call for the whole border.
        self.wcs.pixels_to_sky(&border).iter().all(Option::is_some)
    }

    /// Fills `inside` (one entry per column of the region) for source row `y`.
    pub(crate) fn row(&self, y: usize, inside: &mut [bool]) {
        let x0 = self.region.x0;
        let Some(near) = &self.near else {
            let centres: Vec<(f64, f64)> = (0..inside.len())
                .map(|i| ((x0 + i) as f64, y as f64))
                .collect();
            for (slot, sky) in inside.iter_mut().zip(self.wcs.pixels_to_sky(&centres)) {
                *slot = sky.is_some_and(|(ra, dec)| self.test.contains(ra, dec));
            }
            return;
        };
        let mut x = x0;
        let fill_run = |from: usize, to: usize, inside: &mut [bool]| {
            if from < to {
                let value = self.exact(from, y);
                inside[from - x0..to - x0].fill(value);
            }
        };
        for &(a, b) in &near[y - self.region.y0] {
            fill_run(x, a, inside);
            for column in a..=b {
                inside[column - x0] = self.exact(column, y);
            }
            x = b + 1;
        }
        fill_run(x, self.region.x1 + 1, inside);
    }

    /// Sets to `blank` the pixels of a block of rows of the region (`pixels` holds rows `rows`
    /// of the source, each the region's width) whose centres lie outside the stencil.
    pub(crate) fn apply<T: Copy>(&self, pixels: &mut [T], blank: T, rows: Range<usize>) {
        let width = self.region.width();
        let mut inside = vec![false; width];
        for (j, y) in rows.enumerate() {
            self.row(y, &mut inside);
            for (pixel, &keep) in pixels[j * width..(j + 1) * width].iter_mut().zip(&inside) {
                if !keep {
                    *pixel = blank;
                }
            }
        }
    }
}

/// A chord of the projected boundary and how far the true boundary may stray from it (pixels).
struct Chord {
    a: (f64, f64),
    b: (f64, f64),
    sag: f64,
}

/// The per-row column ranges of `region` within reach of the stencil boundary, or `None` if
/// part of the boundary does not project (then the boundary cannot be followed in pixels).
fn near_boundary(
    wcs: &CelestialWcs,
    stencil: &Stencil,
    region: PixelBox,
    step_deg: f64,
) -> Option<Vec<Vec<(usize, usize)>>> {
    let project = |v: Vec3| {
        let (ra, dec) = sphere::ra_dec(v);
        wcs.sky_to_pixel(ra, dec)
    };
    let ring: Vec<(Vec3, (f64, f64))> = stencil
        .boundary(step_deg)
        .into_iter()
        .map(|v| project(v).map(|p| (v, p)))
        .collect::<Option<_>>()?;
    let mut chords = Vec::new();
    for pair in ring.windows(2) {
        refine(&project, pair[0], pair[1], 0, &mut chords)?;
    }

    let mut near: Vec<Vec<(usize, usize)>> = vec![Vec::new(); region.height()];
    let span = |lo: f64, hi: f64, first: usize, last: usize| {
        let lo = lo.ceil().max(first as f64);
        let hi = hi.floor().min(last as f64);
        (lo <= hi).then_some((lo as usize, hi as usize))
    };
    for chord in &chords {
        // A row segment whose ends differ crosses the boundary within a pixel of both ends, so
        // each end lies within 1 + sag of the chord. The sag is measured at the chord's middle,
        // and doubled in case the arc strays further elsewhere; the rest is for rounding.
        let reach = 1.05 + 2.0 * chord.sag;
        let xs = span(
            chord.a.0.min(chord.b.0) - reach,
            chord.a.0.max(chord.b.0) + reach,
            region.x0,
            region.x1,
        );
        let ys = span(
            chord.a.1.min(chord.b.1) - reach,
            chord.a.1.max(chord.b.1) + reach,
            region.y0,
            region.y1,
        );
        if let (Some((xa, xb)), Some((ya, yb))) = (xs, ys) {
            for row in &mut near[ya - region.y0..=yb - region.y0] {
                row.push((xa, xb));
            }
        }
    }
    for row in &mut near {
        row.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(row.len());
        for &(a, b) in row.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        *row = merged;
    }
    Some(near)
}

/// Splits the boundary arc between two projected samples until each piece is a short chord
/// that the arc follows closely; `None` if some point of the arc does not project.
fn refine(
    project: &impl Fn(Vec3) -> Option<(f64, f64)>,
    (sky_a, a): (Vec3, (f64, f64)),
    (sky_b, b): (Vec3, (f64, f64)),
    depth: u32,
    chords: &mut Vec<Chord>,
) -> Option<()> {
    let sum = [
        sky_a[0] + sky_b[0],
        sky_a[1] + sky_b[1],
        sky_a[2] + sky_b[2],
    ];
    let norm = sphere::dot(sum, sum).sqrt();
    if norm < 1e-12 {
        return None;
    }
    let sky_m = [sum[0] / norm, sum[1] / norm, sum[2] / norm];
    let m = project(sky_m)?;
    let length = (b.0 - a.0).hypot(b.1 - a.1);
    let sag = (m.0 - (a.0 + b.0) / 2.0).hypot(m.1 - (a.1 + b.1) / 2.0);
    if length <= MAX_CHORD && sag <= MAX_SAG {
        chords.push(Chord { a, b, sag });
    } else if depth >= MAX_DEPTH {
        // The arc is far shorter than a pixel on the sky but its ends are apart in pixels: it
        // crosses a seam, and each half hugs its own end.
        chords.push(Chord { a, b: a, sag: 0.0 });
        chords.push(Chord { a: b, b, sag: 0.0 });
    } else {
        refine(project, (sky_a, a), (sky_m, m), depth + 1, chords)?;
        refine(project, (sky_m, m), (sky_b, b), depth + 1, chords)?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sky_image;
    use crate::region::{pixel_box, pixel_scale_deg};

    /// An `n` x `n` image in projection `proj`, `scale` degrees per pixel, centred on (ra, dec).
    fn wcs(proj: &str, n: usize, ra: f64, dec: f64, scale: f64) -> CelestialWcs {
        sky_image(proj, n, n, ra, dec, scale)
    }

    /// Compares the mask of `stencil` with a test of every pixel centre of its rectangle.
    fn check(wcs: &CelestialWcs, n: usize, stencil: &Stencil) -> Result<(), String> {
        let Some(region) = pixel_box(wcs, n, n, stencil) else {
            return Ok(());
        };
        let mask = Mask::new(wcs, stencil, region, pixel_scale_deg(wcs, n, n));
        let mut inside = vec![false; region.width()];
        for y in region.y0..=region.y1 {
            mask.row(y, &mut inside);
            for (i, &got) in inside.iter().enumerate() {
                if got != mask.exact(region.x0 + i, y) {
                    return Err(format!("pixel ({}, {y}) of {region:?}", region.x0 + i));
                }
            }
        }
        Ok(())
    }

    fn near_pixels(mask: &Mask) -> usize {
        mask.near
            .as_ref()
            .map(|rows| rows.iter().flatten().map(|(a, b)| b - a + 1).sum())
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn a_large_circle_is_decided_mostly_by_runs() {
        let wcs = wcs("TAN", 512, 10.0, 41.0, 1.0 / 3600.0);
        let circle = Stencil::parse_circle("10 41 0.03").unwrap();
        check(&wcs, 512, &circle).unwrap();
        let region = pixel_box(&wcs, 512, 512, &circle).unwrap();
        let mask = Mask::new(&wcs, &circle, region, 1.0 / 3600.0);
        let tested = near_pixels(&mask);
        assert!(
            tested * 4 < region.width() * region.height(),
            "{tested} of {region:?}"
        );
    }

    /// The near ranges of each row are what `row` relies on and no more: sorted, apart (merged
    /// when they touch), holding both pixels of every neighbouring pair that the boundary
    /// separates, and never farther from the boundary than a chord's reach allows.
    #[test]
    fn near_ranges_hold_every_boundary_crossing_and_stay_within_reach_of_it() {
        let scale = 1.0 / 3600.0;
        let wcs = wcs("TAN", 200, 10.0, 41.0, scale);
        // A triangle: great circles are straight lines in a gnomonic (TAN) projection, so its
        // boundary is three straight edges in pixels, along which chords are the longest.
        let corners = [(30.3, 40.1), (170.2, 60.6), (90.7, 170.4)];
        let text: Vec<String> = corners
            .iter()
            .map(|&(x, y)| {
                let (ra, dec) = wcs.pixel_to_sky(x, y).unwrap();
                format!("{ra} {dec}")
            })
            .collect();
        let triangle = Stencil::parse_polygon(&text.join(" ")).unwrap();
        let to_edges = |x: f64, y: f64| {
            (0..3)
                .map(|n| {
                    let (a, b) = (corners[n], corners[(n + 1) % 3]);
                    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
                    let t =
                        (((x - a.0) * dx + (y - a.1) * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0);
                    (x - a.0 - t * dx).hypot(y - a.1 - t * dy)
                })
                .fold(f64::INFINITY, f64::min)
        };
        check_near_ranges(&wcs, &triangle, scale, to_edges);
        // Sampled ten pixels apart, the edges are still cut into chords of at most two pixels.
        check_near_ranges(&wcs, &triangle, 10.0 * scale, to_edges);
        // Small circles have the most curved boundaries, so the chords that sag the most.
        let mut circles: Vec<(f64, f64, f64)> = (0..120)
            .map(|n| {
                let f = n as f64;
                (
                    40.0 + (f * 7.31) % 120.0,
                    40.0 + (f * 3.77) % 120.0,
                    1.5 + (f * 0.173) % 3.0,
                )
            })
            .collect();
        circles.push((100.2, 99.7, 60.3));
        for (cx, cy, r) in circles {
            let (ra, dec) = wcs.pixel_to_sky(cx, cy).unwrap();
            let circle = Stencil::parse_circle(&format!("{ra} {dec} {}", r * scale)).unwrap();
            // The boundary is a circle of r pixels on this nearly flat image.
            check_near_ranges(&wcs, &circle, scale, |x, y| {
                ((x - cx).hypot(y - cy) - r).abs()
            });
        }
    }

    /// Checks the near ranges of `stencil` on a 200-pixel image, its boundary sampled every
    /// `step` degrees and `to_boundary(x, y)` pixels from (x, y).
    fn check_near_ranges(
        wcs: &CelestialWcs,
        stencil: &Stencil,
        step: f64,
        to_boundary: impl Fn(f64, f64) -> f64,
    ) {
        let region = pixel_box(wcs, 200, 200, stencil).unwrap();
        let mask = Mask::new(wcs, stencil, region, step);
        let near = mask
            .near
            .as_ref()
            .expect("a TAN image projects the whole boundary");
        let in_near = |x: usize, y: usize| {
            near[y - region.y0]
                .iter()
                .any(|&(a, b)| (a..=b).contains(&x))
        };
        for (j, row) in near.iter().enumerate() {
            for pair in row.windows(2) {
                assert!(pair[0].1 + 1 < pair[1].0, "row {j}: {row:?} not merged");
            }
            for &(a, b) in row {
                assert!(a <= b && a >= region.x0 && b <= region.x1, "{row:?}");
                for x in a..=b {
                    let y = region.y0 + j;
                    let d = to_boundary(x as f64, y as f64);
                    assert!(d < 4.0, "{stencil}: ({x}, {y}) is {d} px from the boundary");
                }
            }
        }
        for y in region.y0..=region.y1 {
            for x in region.x0..region.x1 {
                if mask.exact(x, y) != mask.exact(x + 1, y) {
                    assert!(
                        in_near(x, y) && in_near(x + 1, y),
                        "{stencil}: ({x}, {y}) | ({}, {y}) not near",
                        x + 1
                    );
                }
            }
        }
    }

    #[test]
    fn a_rectangle_reaching_off_the_sky_tests_every_pixel() {
        // The whole sky in a 360 x 360 Mollweide image: the corners are off the sky.
        let wcs = wcs("MOL", 360, 0.0, 0.0, 1.0);
        let circle = Stencil::parse_circle("0 0 120").unwrap();
        let region = pixel_box(&wcs, 360, 360, &circle).unwrap();
        let mask = Mask::new(&wcs, &circle, region, 1.0);
        assert!(mask.near.is_none());
        check(&wcs, 360, &circle).unwrap();
    }

    #[test]
    fn a_circle_across_the_seam_of_an_all_sky_image_is_exact() {
        let wcs = wcs("CAR", 360, 0.0, 0.0, 1.0);
        check(&wcs, 360, &Stencil::parse_circle("180 10 20").unwrap()).unwrap();
        check(&wcs, 360, &Stencil::parse_circle("0 85 10").unwrap()).unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(32))]

        #[test]
        fn mask_matches_a_test_of_every_pixel_centre(
            proj in proptest::sample::select(vec!["TAN", "SIN", "ZEA", "ARC", "STG"]),
            ra in 0.0..360.0_f64,
            dec in -89.9..89.9_f64,
            shape in 0..3_usize,
            cx in -20.0..148.0_f64,
            cy in -20.0..148.0_f64,
            r in 0.3..60.0_f64,
            corners in proptest::collection::vec((-20.0..148.0_f64, -20.0..148.0_f64), 3..6),
        ) {
            let scale = 1.0 / 3600.0;
            let wcs = wcs(proj, 128, ra, dec, scale);
            let sky = |x: f64, y: f64| wcs.pixel_to_sky(x, y).unwrap();
            let stencil = match shape {
                0 => {
                    let (a, d) = sky(cx, cy);
                    Stencil::parse_circle(&format!("{a} {d} {}", r * scale)).unwrap()
                }
                1 => {
                    let text: Vec<String> = corners
                        .iter()
                        .map(|&(x, y)| {
                            let (a, d) = sky(x, y);
                            format!("{a} {d}")
                        })
                        .collect();
                    match Stencil::parse_polygon(&text.join(" ")) {
                        Ok(p) => p,
                        Err(_) => return Ok(()),
                    }
                }
                _ => {
                    let ((a1, d1), (a2, d2)) = (sky(cx, cy), sky(cx + r, cy + r));
                    let text = format!(
                        "RANGE {} {} {} {}",
                        a1.min(a2), a1.max(a2), d1.min(d2), d1.max(d2)
                    );
                    Stencil::parse_pos(&text).unwrap()
                }
            };
            if let Err(e) = check(&wcs, 128, &stencil) {
                proptest::prop_assert!(false, "{stencil}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod scale_tests;
