//! From a stencil on the sky to the rectangle of source pixels to copy: the smallest pixel
//! rectangle containing the stencil, clipped to the image.
//!
//! The stencil's boundary is sampled densely on the sphere (about one sample per pixel) and
//! projected through the image WCS, rather than projecting a few corners, because straight
//! lines on the sky are curves in pixel space. Image points that fall inside the stencil are
//! added as well, which covers stencils that contain the whole image (whose boundary may not
//! even be projectable).

use std::sync::Arc;

use crate::celestial::{CelestialWcs, ImageFrame};
use crate::sphere::{self, Vec3};
use crate::stencil::{Moc, Polygon, Stencil};

/// A 0-based inclusive pixel rectangle in the source image (x along NAXIS1, y along NAXIS2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelBox {
    /// First column.
    pub x0: usize,
    /// First row.
    pub y0: usize,
    /// Last column (inclusive).
    pub x1: usize,
    /// Last row (inclusive).
    pub y1: usize,
}

impl PixelBox {
    /// Number of columns.
    pub fn width(&self) -> usize {
        self.x1 - self.x0 + 1
    }

    /// Number of rows.
    pub fn height(&self) -> usize {
        self.y1 - self.y0 + 1
    }
}

/// Continuous pixel bounds; pixel i covers [i - 0.5, i + 0.5].
#[derive(Debug, Clone, Copy)]
struct Bounds {
    x: (f64, f64),
    y: (f64, f64),
}

impl Bounds {
    fn empty() -> Bounds {
        Bounds {
            x: (f64::INFINITY, f64::NEG_INFINITY),
            y: (f64::INFINITY, f64::NEG_INFINITY),
        }
    }

    fn add(&mut self, (x, y): (f64, f64)) {
        self.x = (self.x.0.min(x), self.x.1.max(x));
        self.y = (self.y.0.min(y), self.y.1.max(y));
    }

    fn contains(&self, (x, y): (f64, f64)) -> bool {
        (self.x.0..=self.x.1).contains(&x) && (self.y.0..=self.y.1).contains(&y)
    }

    /// The pixels of an `nx` x `ny` image whose area these (non-empty) bounds reach.
    fn pixels(&self, nx: usize, ny: usize) -> PixelBox {
        let first = |lo: f64| (lo + 0.5).floor().max(0.0) as usize;
        let last = |hi: f64, n: usize| ((hi + 0.5).floor().max(0.0) as usize).min(n - 1);
        PixelBox {
            x0: first(self.x.0),
            y0: first(self.y.0),
            x1: last(self.x.1, nx),
            y1: last(self.y.1, ny),
        }
    }
}

/// The pixel rectangle of an `nx` x `ny` image covered by `stencil`, or `None` if the stencil
/// misses the image.
///
/// The bounding box of (stencil ∩ image) is that of its outline, which is made of the parts of
/// the stencil boundary inside the image, the parts of the image border inside the stencil,
/// and the parts of the edge of the projection's domain inside both. So it is enough to collect
/// boundary samples inside the image, the points where the sampled boundary crosses the image
/// border, border samples inside the stencil, and, when the border leaves the projection's
/// domain, the pixels along its edge inside the stencil ([`add_domain_edge`]). Points far outside
/// the image never count, which matters because a TAN projection sends points near 90 degrees
/// from its centre to huge pixel coordinates.
pub(crate) fn pixel_box(
    wcs: &CelestialWcs,
    nx: usize,
    ny: usize,
    stencil: &Stencil,
) -> Option<PixelBox> {
    if nx == 0 || ny == 0 {
        return None;
    }
    if let Stencil::Pixels(section) = stencil {
        let (x, y) = (section.axis(0, nx)?, section.axis(1, ny)?);
        return Some(PixelBox {
            x0: x.start,
            y0: y.start,
            x1: x.end - 1,
            y1: y.end - 1,
        });
    }
    if let Stencil::Moc(moc) = stencil {
        return moc_box(wcs, nx, ny, moc);
    }
    let image = Bounds {
        x: (-0.5, nx as f64 - 0.5),
        y: (-0.5, ny as f64 - 0.5),
    };
    let frame = image_frame(wcs, nx, ny);
    let scale = frame.scale_deg;
    let samples = stencil.boundary(scale);
    let sky: Vec<(f64, f64)> = samples.iter().map(|&v| sphere::ra_dec(v)).collect();
    let ring: Vec<(Vec3, Option<(f64, f64)>)> =
        samples.into_iter().zip(wcs.sky_to_pixels(&sky)).collect();

    let mut bounds = Bounds::empty();
    for &(_, p) in &ring {
        if let Some(p) = p.filter(|&p| image.contains(p)) {
            bounds.add(p);
        }
    }
    for pair in ring.windows(2) {
        let [(sky_a, Some(a)), (sky_b, Some(b))] = pair else {
            continue;
        };
        if image.contains(*a) && image.contains(*b) {
            continue;
        }
        let Some((c, d)) = clip(&image, *a, *b) else {
            continue;
        };
        if follows_sky(wcs, (*sky_a, a), (*sky_b, b), scale) {
            bounds.add(c);
            bounds.add(d);
        }
    }
    let mut leaves_domain = false;
    for (p, sky) in frame.border.iter().zip(&frame.border_sky) {
        leaves_domain |= sky.is_none();
        if sky.is_some_and(|(ra, dec)| stencil.contains(ra, dec)) {
            bounds.add(*p);
        }
    }
    if leaves_domain {
        add_domain_edge(wcs, nx, ny, stencil, &mut bounds);
    }
    if bounds.x.0 > bounds.x.1 || bounds.y.0 > bounds.y.1 {
        return None;
    }
    Some(bounds.pixels(nx, ny))
}

/// The rectangle covering the cells of `moc` on the image: each cell that may reach the image
/// is located as the polygon of its outline, and the boxes are joined.
fn moc_box(wcs: &CelestialWcs, nx: usize, ny: usize, moc: &Moc) -> Option<PixelBox> {
    let image = Bounds {
        x: (-0.5, nx as f64 - 0.5),
        y: (-0.5, ny as f64 - 0.5),
    };
    let reach = image_circle(wcs, nx, ny);
    let mut joined: Option<PixelBox> = None;
    for (depth, index) in moc.cells() {
        let (centre, radius) = Moc::cell_circle(depth, index);
        if let Some((image_centre, image_radius)) = reach {
            let apart =
                sphere::separation_deg(image_centre, sphere::unit_vector(centre.0, centre.1));
            if apart > image_radius + radius + 1e-6 {
                continue;
            }
        }
        let outline = Moc::cell_outline(depth, index);
        // A cell wholly inside the image (most of a fine MOC's) is the box of its outline;
        // one that meets the border is located as any polygon is.
        let projected: Option<Vec<(f64, f64)>> = wcs
            .sky_to_pixels(&outline)
            .into_iter()
            .map(|p| p.filter(|&p| image.contains(p)))
            .collect();
        let found = match projected {
            Some(points) => {
                let mut bounds = Bounds::empty();
                points.into_iter().for_each(|p| bounds.add(p));
                Some(bounds.pixels(nx, ny))
            }
            None => pixel_box(
                wcs,
                nx,
                ny,
                &Stencil::Polygon(Polygon::from_vertices(outline)),
            ),
        };
        if let Some(b) = found {
            joined = Some(match joined {
                None => b,
                Some(j) => PixelBox {
                    x0: j.x0.min(b.x0),
                    y0: j.y0.min(b.y0),
                    x1: j.x1.max(b.x1),
                    y1: j.y1.max(b.y1),
                },
            });
        }
    }
    joined
}

/// A circle on the sky holding the whole image (its centre and radius in degrees), or `None`
/// when part of its border is off the sky (then no cell can be ruled out by distance).
fn image_circle(wcs: &CelestialWcs, nx: usize, ny: usize) -> Option<(Vec3, f64)> {
    let (ra, dec) = wcs.pixel_to_sky(nx as f64 / 2.0 - 0.5, ny as f64 / 2.0 - 0.5)?;
    let centre = sphere::unit_vector(ra, dec);
    let frame = image_frame(wcs, nx, ny);
    let mut radius: f64 = 0.0;
    for &sky in &frame.border_sky {
        let (ra, dec) = sky?;
        radius = radius.max(sphere::separation_deg(centre, sphere::unit_vector(ra, dec)));
    }
    // Between border samples the edge may bow out: a sample spacing's worth of slack.
    Some((centre, radius * 1.05 + frame.scale_deg))
}

/// Side, in pixels, of the cells in which [`add_domain_edge`] looks for the edge of the
/// projection's domain.
const EDGE_CELL: usize = 16;

/// Where the edge of the projection's domain runs through the image (a SIN limb, the outline of
/// a Mollweide sky), the part of it inside the stencil is outline too, and no boundary sample
/// lies on it: the stencil's samples stop short of it on one side, and the segments that jump
/// across it are rightly refused. So the pixels along it are tested one by one: those of every
/// cell of a coarse grid whose corners are not all on the sky or all off it. An edge that
/// bulges into a cell and out again between its corners, which would take a domain a few
/// cells across, is not looked for.
fn add_domain_edge(
    wcs: &CelestialWcs,
    nx: usize,
    ny: usize,
    stencil: &Stencil,
    bounds: &mut Bounds,
) {
    for (columns, rows) in domain_edge_cells(wcs, nx, ny) {
        let cell: Vec<(f64, f64)> = rows
            .flat_map(|y| columns.clone().map(move |x| (x as f64, y as f64)))
            .collect();
        for (p, sky) in cell.iter().zip(wcs.pixels_to_sky(&cell)) {
            if sky.is_some_and(|(ra, dec)| stencil.contains(ra, dec)) {
                bounds.add(*p);
            }
        }
    }
}

/// The cells of [`add_domain_edge`]'s grid (columns, rows, inclusive) whose corners are not all
/// on the sky or all off it: where the edge of the projection's domain crosses the image.
fn domain_edge_cells(
    wcs: &CelestialWcs,
    nx: usize,
    ny: usize,
) -> Vec<(
    std::ops::RangeInclusive<usize>,
    std::ops::RangeInclusive<usize>,
)> {
    let ticks = |n: usize| -> Vec<usize> {
        let mut t: Vec<usize> = (0..n).step_by(EDGE_CELL).collect();
        if t.last() != Some(&(n - 1)) {
            t.push(n - 1);
        }
        t
    };
    let (xs, ys) = (ticks(nx), ticks(ny));
    let grid: Vec<(f64, f64)> = ys
        .iter()
        .flat_map(|&y| xs.iter().map(move |&x| (x as f64, y as f64)))
        .collect();
    let on: Vec<bool> = wcs
        .pixels_to_sky(&grid)
        .iter()
        .map(Option::is_some)
        .collect();
    let on_at = |i: usize, j: usize| on[j * xs.len() + i];
    let mut cells = Vec::new();
    for (j, rows) in ys.windows(2).enumerate() {
        for (i, columns) in xs.windows(2).enumerate() {
            let corners = [
                on_at(i, j),
                on_at(i + 1, j),
                on_at(i, j + 1),
                on_at(i + 1, j + 1),
            ];
            if corners.iter().all(|&c| c == corners[0]) {
                continue;
            }
            cells.push((columns[0]..=columns[1], rows[0]..=rows[1]));
        }
    }
    cells
}

/// Whether the straight pixel-space segment between two consecutive boundary samples stays
/// near the sky arc between them. It does not when the samples straddle the edge of the
/// projection's domain, where the segment joins two far-apart pixel positions through the image.
fn follows_sky(
    wcs: &CelestialWcs,
    (sky_a, a): (Vec3, &(f64, f64)),
    (sky_b, b): (Vec3, &(f64, f64)),
    scale: f64,
) -> bool {
    let mid = ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0);
    let Some((ra, dec)) = wcs.pixel_to_sky(mid.0, mid.1) else {
        return false;
    };
    let sky_mid = [
        sky_a[0] + sky_b[0],
        sky_a[1] + sky_b[1],
        sky_a[2] + sky_b[2],
    ];
    let (mid_ra, mid_dec) = sphere::ra_dec(sky_mid);
    let off = sphere::separation_deg(
        sphere::unit_vector(ra, dec),
        sphere::unit_vector(mid_ra, mid_dec),
    );
    off <= sphere::separation_deg(sky_a, sky_b) + 2.0 * scale
}

/// The part of segment `a`-`b` inside `r` (Liang-Barsky), if any.
fn clip(r: &Bounds, a: (f64, f64), b: (f64, f64)) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0_f64, 1.0_f64);
    for (p, q) in [
        (-dx, a.0 - r.x.0),
        (dx, r.x.1 - a.0),
        (-dy, a.1 - r.y.0),
        (dy, r.y.1 - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
        }
    }
    let at = |t: f64| (a.0 + t * dx, a.1 + t * dy);
    (t0 <= t1).then(|| (at(t0), at(t1)))
}

/// `n` points along each side of `b`, corners included.
fn border(b: &Bounds, n: usize) -> impl Iterator<Item = (f64, f64)> + '_ {
    let at = move |(lo, hi): (f64, f64), i: usize| lo + (hi - lo) * i as f64 / n as f64;
    (0..=n).flat_map(move |i| {
        let (x, y) = (at(b.x, i), at(b.y, i));
        [(x, b.y.0), (x, b.y.1), (b.x.0, y), (b.x.1, y)]
    })
}

/// The image's frame (its pixel scale, and its border in pixels and on the sky), kept with its
/// WCS after the first stencil located on it.
fn image_frame(wcs: &CelestialWcs, nx: usize, ny: usize) -> Arc<ImageFrame> {
    wcs.frame(nx, ny, || {
        let image = Bounds {
            x: (-0.5, nx as f64 - 0.5),
            y: (-0.5, ny as f64 - 0.5),
        };
        let border: Vec<(f64, f64)> = border(&image, 64).collect();
        ImageFrame {
            nx,
            ny,
            scale_deg: pixel_scale_deg(wcs, nx, ny),
            border_sky: wcs.pixels_to_sky(&border),
            border,
        }
    })
}

/// The angular size of one pixel at the image centre, which sets the boundary sampling step.
pub(crate) fn pixel_scale_deg(wcs: &CelestialWcs, nx: usize, ny: usize) -> f64 {
    let (cx, cy) = (nx as f64 / 2.0, ny as f64 / 2.0);
    let sky = |x, y| {
        wcs.pixel_to_sky(x, y)
            .map(|(ra, dec)| sphere::unit_vector(ra, dec))
    };
    match (sky(cx, cy), sky(cx + 1.0, cy), sky(cx, cy + 1.0)) {
        (Some(c), Some(a), Some(b)) => {
            let scale = sphere::separation_deg(c, a).min(sphere::separation_deg(c, b));
            if scale > 0.0 { scale } else { 1.0 / 3600.0 }
        }
        _ => 1.0 / 3600.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{sky, sky_image};

    const SCALE: f64 = 1.0 / 3600.0;
    const N: usize = 512;

    /// A north-up TAN WCS with its reference point at the centre of an N x N image.
    fn tan_wcs(ra: f64, dec: f64) -> CelestialWcs {
        sky_image("TAN", N, N, ra, dec, SCALE)
    }

    fn full() -> PixelBox {
        PixelBox {
            x0: 0,
            y0: 0,
            x1: N - 1,
            y1: N - 1,
        }
    }

    #[test]
    fn wcs_round_trips_and_puts_crval_at_the_image_centre() {
        let wcs = tan_wcs(10.0, 41.0);
        let (ra, dec) = sky(&wcs, 255.5, 255.5);
        assert!(
            (ra - 10.0).abs() < 1e-12 && (dec - 41.0).abs() < 1e-12,
            "{ra} {dec}"
        );
        let (x, y) = wcs.sky_to_pixel(ra, dec + 10.0 * SCALE).unwrap();
        assert!(
            (x - 255.5).abs() < 1e-6 && (y - 265.5).abs() < 1e-6,
            "{x} {y}"
        );
        // East is to the left: RA grows as x shrinks.
        assert!(sky(&wcs, 100.0, 255.5).0 > 10.0);
    }

    #[test]
    fn an_image_frame_is_worked_out_once_per_wcs_and_image_size() {
        let wcs = tan_wcs(10.0, 41.0);
        let kept = image_frame(&wcs, N, N);
        assert!(Arc::ptr_eq(&kept, &image_frame(&wcs, N, N)));
        // Another size gets a frame of its own, which is not kept in place of the first.
        let other = image_frame(&wcs, N / 2, N);
        assert_eq!((other.nx, other.ny), (N / 2, N));
        assert_eq!(other.border.len(), 4 * 65);
        // Along the outer edges of the outer pixels, corners included.
        let extreme = |pick: fn(&(f64, f64)) -> f64, max: bool| {
            let values = other.border.iter().map(pick);
            match max {
                true => values.fold(f64::MIN, f64::max),
                false => values.fold(f64::MAX, f64::min),
            }
        };
        assert_eq!(extreme(|p| p.0, false), -0.5);
        assert_eq!(extreme(|p| p.0, true), N as f64 / 2.0 - 0.5);
        assert_eq!(extreme(|p| p.1, false), -0.5);
        assert_eq!(extreme(|p| p.1, true), N as f64 - 0.5);
        assert!(Arc::ptr_eq(&kept, &image_frame(&wcs, N, N)));
        // What is kept is what a WCS that kept nothing works out.
        let fresh = image_frame(&tan_wcs(10.0, 41.0), N / 2, N);
        assert_eq!(other.border, fresh.border);
        assert_eq!(other.border_sky, fresh.border_sky);
        assert_eq!(other.scale_deg, fresh.scale_deg);
        assert!((kept.scale_deg - SCALE).abs() < 1e-3 * SCALE);
    }

    #[test]
    fn a_stencil_located_on_a_kept_frame_is_where_a_fresh_wcs_puts_it() {
        let wcs = tan_wcs(10.0, 41.0);
        let (ra, dec) = sky(&wcs, 0.0, 300.0);
        let edge = Stencil::parse_circle(&format!("{ra} {dec} {}", 20.0 * SCALE)).unwrap();
        let whole = Stencil::parse_circle("10 41 1").unwrap();
        pixel_box(&wcs, N, N, &edge);
        for stencil in [&edge, &whole] {
            assert_eq!(
                pixel_box(&wcs, N, N, stencil),
                pixel_box(&tan_wcs(10.0, 41.0), N, N, stencil)
            );
        }
        assert_eq!(pixel_box(&wcs, N, N, &whole), Some(full()));
    }

    #[test]
    fn circle_at_the_centre_covers_its_diameter() {
        let wcs = tan_wcs(10.0, 41.0);
        let (ra, dec) = sky(&wcs, 256.0, 256.0);
        let circle = Stencil::parse_circle(&format!("{ra} {dec} {}", 50.0 * SCALE)).unwrap();
        let b = pixel_box(&wcs, N, N, &circle).unwrap();
        assert_eq!((b.width(), b.height()), (101, 101), "{b:?}");
        assert_eq!((b.x0, b.y0), (206, 206));
    }

    #[test]
    fn circle_over_the_edge_is_clipped() {
        let wcs = tan_wcs(10.0, 41.0);
        let (ra, dec) = sky(&wcs, 0.0, 300.0);
        let circle = Stencil::parse_circle(&format!("{ra} {dec} {}", 20.0 * SCALE)).unwrap();
        let b = pixel_box(&wcs, N, N, &circle).unwrap();
        assert_eq!((b.x0, b.x1, b.y0, b.y1), (0, 20, 280, 320), "{b:?}");
    }

    #[test]
    fn circle_off_the_image_misses() {
        let wcs = tan_wcs(10.0, 41.0);
        let circle = Stencil::parse_circle("20 41 0.01").unwrap();
        assert_eq!(pixel_box(&wcs, N, N, &circle), None);
        let behind = Stencil::parse_circle("190 -41 1").unwrap();
        assert_eq!(pixel_box(&wcs, N, N, &behind), None);
    }

    #[test]
    fn circle_whose_bounding_box_only_grazes_a_corner_misses() {
        let wcs = tan_wcs(10.0, 41.0);
        // Centre 15 px diagonally beyond the corner, radius 18 px: the bounding box overlaps
        // the corner pixel region but the circle does not reach (21 px away).
        let (ra, dec) = sky(&wcs, -15.5, -15.5);
        let circle = Stencil::parse_circle(&format!("{ra} {dec} {}", 18.0 * SCALE)).unwrap();
        assert_eq!(pixel_box(&wcs, N, N, &circle), None);
    }

    #[test]
    fn circle_containing_the_whole_image_gives_the_whole_image() {
        let wcs = tan_wcs(10.0, 41.0);
        for radius in ["1", "120", "180"] {
            let circle = Stencil::parse_circle(&format!("10 41 {radius}")).unwrap();
            assert_eq!(
                pixel_box(&wcs, N, N, &circle),
                Some(full()),
                "radius {radius}"
            );
        }
    }

    #[test]
    fn polygon_gives_the_box_of_its_vertices() {
        let wcs = tan_wcs(83.8, -5.4);
        let corners = [(100.0, 50.0), (200.0, 60.0), (180.0, 150.0), (90.0, 140.0)];
        let value: Vec<String> = corners
            .iter()
            .map(|&(x, y)| {
                let (ra, dec) = sky(&wcs, x, y);
                format!("{ra} {dec}")
            })
            .collect();
        let polygon = Stencil::parse_polygon(&value.join(" ")).unwrap();
        let b = pixel_box(&wcs, N, N, &polygon).unwrap();
        assert_eq!((b.x0, b.x1, b.y0, b.y1), (90, 200, 50, 150), "{b:?}");
    }

    #[test]
    fn polygon_across_ra_zero_is_found() {
        let wcs = tan_wcs(0.0, 0.0);
        let polygon =
            Stencil::parse_polygon("359.99 -0.01 0.01 -0.01 0.01 0.01 359.99 0.01").unwrap();
        let b = pixel_box(&wcs, N, N, &polygon).unwrap();
        // 72 pixels wide, centred on a pixel corner, plus TAN's slight stretch off centre.
        assert!(
            (72..=74).contains(&b.width()) && b.width() == b.height(),
            "{b:?}"
        );
    }

    #[test]
    fn range_with_infinite_bounds_reaches_the_image_edge() {
        let wcs = tan_wcs(10.0, 41.0);
        let everything = Stencil::parse_pos("RANGE -inf +inf -inf +inf").unwrap();
        assert_eq!(pixel_box(&wcs, N, N, &everything), Some(full()));

        let (_, dec) = sky(&wcs, 255.5, 300.0);
        let north = Stencil::parse_pos(&format!("RANGE -inf +inf {dec} +inf")).unwrap();
        let b = pixel_box(&wcs, N, N, &north).unwrap();
        assert_eq!((b.x0, b.x1, b.y1), (0, N - 1, N - 1), "{b:?}");
        // The parallel curves away from the pole on a TAN projection, so the box reaches down
        // to the row of the parallel at the image centre, and slightly lower at its edges.
        assert!((295..=300).contains(&b.y0), "{b:?}");

        let (ra, _) = sky(&wcs, 100.0, 255.5);
        let east = Stencil::parse_pos(&format!("RANGE {ra} +inf -inf +inf")).unwrap();
        let b = pixel_box(&wcs, N, N, &east).unwrap();
        assert_eq!((b.x0, b.y0, b.y1), (0, 0, N - 1), "{b:?}");
        assert!((100..=102).contains(&b.x1), "{b:?}");
    }

    #[test]
    fn range_off_the_image_misses() {
        let wcs = tan_wcs(10.0, 41.0);
        let range = Stencil::parse_pos("RANGE 20 30 -inf +inf").unwrap();
        assert_eq!(pixel_box(&wcs, N, N, &range), None);
    }

    /// Whether any point of the pixel-space strip x in `xs`, y in `ys` lies in the stencil:
    /// one of its `vertices` (pixel positions; a sharp tip is thinner than any sampling), or a
    /// point of a 0.1-pixel grid.
    fn touches(
        wcs: &CelestialWcs,
        stencil: &Stencil,
        vertices: &[(f64, f64)],
        xs: (f64, f64),
        ys: (f64, f64),
    ) -> bool {
        let within = |(x, y): (f64, f64)| (xs.0..=xs.1).contains(&x) && (ys.0..=ys.1).contains(&y);
        if vertices.iter().any(|&v| within(v)) {
            return true;
        }
        let steps = |(a, b): (f64, f64)| ((b - a) / 0.1).ceil() as usize;
        (0..=steps(xs)).any(|i| {
            (0..=steps(ys)).any(|j| {
                let (x, y) = (xs.0 + i as f64 * 0.1, ys.0 + j as f64 * 0.1);
                wcs.pixel_to_sky(x, y)
                    .is_some_and(|(ra, dec)| stencil.contains(ra, dec))
            })
        })
    }

    /// Checks the promise of `pixel_box` by brute force over the pixels near the stencil
    /// (`window`): the rectangle holds every pixel whose centre lies in the stencil; and it
    /// reaches at most one pixel beyond the stencil: where it goes more than one pixel beyond
    /// the pixels whose centres are inside (a stencil can touch pixels without covering their
    /// centres), the stencil must reach into its outermost two pixels on that side.
    fn check_box(
        wcs: &CelestialWcs,
        stencil: &Stencil,
        vertices: &[(f64, f64)],
        window: (f64, f64, f64, f64),
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let clamp = |v: f64| (v.max(0.0) as usize).min(N - 1);
        let (xa, xb, ya, yb) = window;
        let mut inside: Option<(usize, usize, usize, usize)> = None;
        for y in clamp(ya)..=clamp(yb) {
            for x in clamp(xa)..=clamp(xb) {
                let (ra, dec) = sky(wcs, x as f64, y as f64);
                if stencil.contains(ra, dec) {
                    inside = Some(match inside {
                        None => (x, x, y, y),
                        Some((x0, x1, y0, y1)) => (x0.min(x), x1.max(x), y0.min(y), y1.max(y)),
                    });
                }
            }
        }
        let found = pixel_box(wcs, N, N, stencil);
        let Some((x0, x1, y0, y1)) = inside else {
            return Ok(());
        };
        let Some(b) = found else {
            proptest::prop_assert!(false, "no box, but pixels inside {:?}", inside);
            return Ok(());
        };
        proptest::prop_assert!(
            b.x0 <= x0 && b.x1 >= x1 && b.y0 <= y0 && b.y1 >= y1,
            "{b:?} misses pixels of {:?}",
            inside
        );
        let (bx, by) = (
            (b.x0 as f64 - 0.5, b.x1 as f64 + 0.5),
            (b.y0 as f64 - 0.5, b.y1 as f64 + 0.5),
        );
        if b.x0 + 1 < x0 {
            proptest::prop_assert!(
                touches(wcs, stencil, vertices, (bx.0, bx.0 + 2.0), by),
                "{b:?} left"
            );
        }
        if b.x1 > x1 + 1 {
            proptest::prop_assert!(
                touches(wcs, stencil, vertices, (bx.1 - 2.0, bx.1), by),
                "{b:?} right"
            );
        }
        if b.y0 + 1 < y0 {
            proptest::prop_assert!(
                touches(wcs, stencil, vertices, bx, (by.0, by.0 + 2.0)),
                "{b:?} bottom"
            );
        }
        if b.y1 > y1 + 1 {
            proptest::prop_assert!(
                touches(wcs, stencil, vertices, bx, (by.1 - 2.0, by.1)),
                "{b:?} top"
            );
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(48))]

        #[test]
        fn circle_box_holds_its_pixels_and_little_more(
            ra in 0.0..360.0_f64,
            dec in -89.9..89.9_f64,
            cx in -40.0..552.0_f64,
            cy in -40.0..552.0_f64,
            r in 0.3..60.0_f64,
        ) {
            let wcs = tan_wcs(ra, dec);
            let (cra, cdec) = sky(&wcs, cx, cy);
            let circle = Stencil::parse_circle(&format!("{cra} {cdec} {}", r * SCALE)).unwrap();
            check_box(&wcs, &circle, &[], (cx - r - 3.0, cx + r + 3.0, cy - r - 3.0, cy + r + 3.0))?;
        }

        #[test]
        fn polygon_box_holds_its_pixels_and_little_more(
            ra in 0.0..360.0_f64,
            dec in -89.9..89.9_f64,
            corners in proptest::collection::vec((-40.0..552.0_f64, -40.0..552.0_f64), 3..4),
        ) {
            // Slivers (near-collinear vertices) are left out: for them `Stencil::contains`
            // and the sampled boundary disagree, a known bug (see the issue 6 report).
            let [(ax, ay), (bx, by), (cx, cy)] = [corners[0], corners[1], corners[2]];
            let area = ((bx - ax) * (cy - ay) - (cx - ax) * (by - ay)).abs() / 2.0;
            let longest = [(ax - bx, ay - by), (bx - cx, by - cy), (cx - ax, cy - ay)]
                .iter()
                .map(|(dx, dy)| dx.hypot(*dy))
                .fold(0.0, f64::max);
            proptest::prop_assume!(area > 2.0 * longest);
            let wcs = tan_wcs(ra, dec);
            let mut text = String::new();
            for &(x, y) in &corners {
                let (a, d) = sky(&wcs, x, y);
                text.push_str(&format!("{a} {d} "));
            }
            // Random vertices may make a self-intersecting or degenerate polygon, which
            // the parser rightly refuses.
            let Ok(polygon) = Stencil::parse_polygon(&text) else {
                return Ok(());
            };
            let xs = corners.iter().map(|c| c.0);
            let ys = corners.iter().map(|c| c.1);
            let window = (
                xs.clone().fold(f64::INFINITY, f64::min) - 3.0,
                xs.fold(f64::NEG_INFINITY, f64::max) + 3.0,
                ys.clone().fold(f64::INFINITY, f64::min) - 3.0,
                ys.fold(f64::NEG_INFINITY, f64::max) + 3.0,
            );
            check_box(&wcs, &polygon, &corners, window)?;
        }
    }
}

#[cfg(test)]
mod box_tests;
#[cfg(test)]
mod crossing_tests;
