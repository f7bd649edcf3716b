//! `pixel_box` where the boundary samples are far apart or the projection runs out: long
//! polygon edges and wide RANGEs whose box is decided where the sampled boundary crosses the
//! image border (`clip`, `follows_sky`), stencils that straddle the edge of a projection's
//! domain, and images at 0.2″ and 1° per pixel, whose pixel scale (`pixel_scale_deg`) sets the
//! sampling step.

use super::*;
use crate::fixtures::{
    box_of_inside, every_pixel, holds, polygon_through, sky, sky_image, sky_image_at,
};

const FINE: f64 = 0.2 / 3600.0;

fn bounds(x: (f64, f64), y: (f64, f64)) -> Bounds {
    Bounds { x, y }
}

fn close(a: (f64, f64), b: (f64, f64)) -> bool {
    (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9
}

#[test]
fn clip_keeps_the_part_of_a_segment_inside_the_rectangle() {
    let r = bounds((-0.5, 9.5), (-0.5, 9.5));
    let cases = [
        // Across, horizontally and vertically, both ways.
        ((-10.5, 4.5), (19.5, 4.5), Some(((-0.5, 4.5), (9.5, 4.5)))),
        ((19.5, 4.5), (-10.5, 4.5), Some(((9.5, 4.5), (-0.5, 4.5)))),
        ((4.0, -20.0), (4.0, 30.0), Some(((4.0, -0.5), (4.0, 9.5)))),
        ((4.0, 30.0), (4.0, -20.0), Some(((4.0, 9.5), (4.0, -0.5)))),
        // From inside out through the top, and diagonally through a corner region.
        ((0.0, 5.0), (10.0, 15.0), Some(((0.0, 5.0), (4.5, 9.5)))),
        ((-5.5, -3.5), (4.5, 6.5), Some(((-0.5, 1.5), (4.5, 6.5)))),
        // Along a side, on it: unchanged.
        ((-0.5, 2.0), (-0.5, 5.0), Some(((-0.5, 2.0), (-0.5, 5.0)))),
        ((3.0, 9.5), (7.0, 9.5), Some(((3.0, 9.5), (7.0, 9.5)))),
        // Wholly inside: unchanged; a point: itself.
        ((1.0, 2.0), (3.0, 4.0), Some(((1.0, 2.0), (3.0, 4.0)))),
        ((1.0, 2.0), (1.0, 2.0), Some(((1.0, 2.0), (1.0, 2.0)))),
        // Misses: parallel to a side outside it, beyond a corner, a point outside.
        ((-5.0, 20.0), (15.0, 20.0), None),
        ((-5.0, -1.0), (15.0, -1.0), None),
        ((20.0, -5.0), (20.0, 15.0), None),
        ((-1.0, -5.0), (-1.0, 15.0), None),
        ((-5.0, 6.0), (6.0, 17.0), None),
        ((12.0, 12.0), (12.0, 12.0), None),
        ((10.0, 10.0), (30.0, 30.0), None),
    ];
    for (a, b, expected) in cases {
        let got = clip(&r, a, b);
        let same = match (got, expected) {
            (Some((c, d)), Some((e, f))) => close(c, e) && close(d, f),
            (None, None) => true,
            _ => false,
        };
        assert!(same, "{a:?}-{b:?}: {got:?}, expected {expected:?}");
    }
}

#[test]
fn a_chord_through_the_far_side_of_the_projection_does_not_follow_the_sky() {
    // ARC maps the whole sphere but the point opposite its centre: two points on either side of
    // it land at opposite ends of the image plane, and the chord between them runs through
    // the image centre.
    let wcs = sky_image("ARC", 100, 100, 0.0, 0.0, 1.0 / 3600.0);
    let scale = 1.0 / 3600.0;
    let at = |ra: f64, dec: f64| {
        let v = sphere::unit_vector(ra, dec);
        (v, wcs.sky_to_pixel(ra, dec).expect("ARC maps it"))
    };
    let (sa, a) = at(180.0, -0.001);
    let (sb, b) = at(180.0, 0.001);
    assert!(!follows_sky(&wcs, (sa, &a), (sb, &b), scale));
    // Neighbouring samples of an ordinary boundary do.
    let (sa, a) = at(0.0, 0.0);
    let (sb, b) = at(0.0, 0.002);
    assert!(follows_sky(&wcs, (sa, &a), (sb, &b), scale));
    // Far-apart samples of a great circle through the image too (TAN keeps it straight).
    let tan = sky_image("TAN", 100, 100, 0.0, 0.0, scale);
    let (sa, a) = (
        sphere::unit_vector(359.0, -1.0),
        tan.sky_to_pixel(359.0, -1.0).expect("a"),
    );
    let (sb, b) = (
        sphere::unit_vector(1.0, 1.0),
        tan.sky_to_pixel(1.0, 1.0).expect("b"),
    );
    assert!(follows_sky(&tan, (sa, &a), (sb, &b), scale));
}

#[test]
fn a_boundary_through_the_far_side_of_the_projection_does_not_swell_the_box() {
    // The RA = 180 side passes next to the point opposite the centre: its chord across it runs
    // through the image, but the RANGE is 170 degrees away from every pixel.
    for proj in ["ARC", "ZEA"] {
        let wcs = sky_image(proj, 100, 100, 0.0, 0.0, 1.0 / 3600.0);
        let range = Stencil::parse_pos("RANGE 170 180 -5 4").expect("range");
        assert_eq!(pixel_box(&wcs, 100, 100, &range), None, "{proj}");
    }
}

/// `pixel_box` holds every pixel of `pixels` whose centre is in the stencil, and reaches at
/// most `slack` pixels beyond them on each side.
fn check_box(
    wcs: &CelestialWcs,
    (nx, ny): (usize, usize),
    stencil: &Stencil,
    pixels: impl IntoIterator<Item = (usize, usize)>,
    slack: usize,
) {
    let expected = box_of_inside(wcs, stencil, pixels).expect("pixels inside");
    let found = pixel_box(wcs, nx, ny, stencil).expect("a box");
    assert!(
        holds(found, expected),
        "{stencil}: {found:?} misses pixels of {expected:?}"
    );
    let grown = PixelBox {
        x0: expected.x0.saturating_sub(slack),
        y0: expected.y0.saturating_sub(slack),
        x1: expected.x1 + slack,
        y1: expected.y1 + slack,
    };
    assert!(
        holds(grown, found),
        "{stencil}: {found:?} is larger than {expected:?}"
    );
}

/// The pixels of the image's outer ring and of a grid every `step` pixels.
fn ring_and_grid(n: usize, step: usize) -> impl Iterator<Item = (usize, usize)> {
    every_pixel(n, n).filter(move |&(x, y)| {
        x == 0 || y == 0 || x == n - 1 || y == n - 1 || (x % step == 0 && y % step == 0)
    })
}

#[test]
fn a_long_polygon_edge_is_followed_to_where_it_leaves_the_image() {
    // A triangle whose hypotenuse (56,000 pixels at 0.2"/px, so sampled every 14 pixels) cuts
    // the image's lower-left corner off along x + y = c: the box ends where the edge crosses
    // the left and the bottom border, between samples and between the border's own samples.
    const N: usize = 512;
    let wcs = sky_image("TAN", N, N, 150.0, 2.0, FINE);
    for (c, shift) in [
        (300.3, 0.0),
        (303.7, 3.3),
        (306.1, 7.7),
        (309.9, 1.9),
        (312.4, 5.1),
    ] {
        let a = (-20_000.0 - shift, c + 20_000.0 + shift);
        let b = (20_000.0 - shift, c - 20_000.0 + shift);
        let triangle = polygon_through(&wcs, &[a, b, (-20_000.0, -20_000.0)]);
        check_box(&wcs, (N, N), &triangle, ring_and_grid(N, 8), 1);
    }
}

#[test]
fn a_wide_range_is_followed_to_where_it_leaves_the_image() {
    // At 0.2"/px a RANGE over all RA has parallels sampled ~250 pixels apart, and meridians
    // from pole to pole ~160 pixels apart: each box edge is where a side crosses the border.
    const N: usize = 512;
    let wcs = sky_image("TAN", N, N, 10.0, 41.0, FINE);
    let (_, dec) = sky(&wcs, 255.5, 300.0);
    let north = Stencil::parse_pos(&format!("RANGE -inf +inf {dec} +inf")).expect("north");
    check_box(&wcs, (N, N), &north, ring_and_grid(N, 4), 1);
    let (ra_east, _) = sky(&wcs, 120.0, 255.5);
    let (ra_west, _) = sky(&wcs, 400.0, 255.5);
    let band = Stencil::parse_pos(&format!("RANGE {ra_west} {ra_east} -inf +inf")).expect("band");
    check_box(&wcs, (N, N), &band, ring_and_grid(N, 4), 1);
    let (ra, dec) = sky(&wcs, 30.0, 480.0);
    let corner = Stencil::parse_pos(&format!("RANGE {ra} +inf {dec} 90")).expect("corner");
    check_box(&wcs, (N, N), &corner, ring_and_grid(N, 4), 1);
}

#[test]
fn equal_ra_bounds_make_a_line_not_a_band_around_the_sky() {
    let line = Stencil::parse_pos("RANGE 10 10 -5 5").expect("range");
    assert!(line.contains(10.0, 0.0) && line.contains(10.0, -5.0));
    for (ra, dec) in [(10.001, 0.0), (9.999, 0.0), (190.0, 0.0), (10.0, 5.01)] {
        assert!(!line.contains(ra, dec), "{ra} {dec}");
    }
    let wcs = sky_image("TAN", 64, 64, 10.0, 0.0, 1.0 / 3600.0);
    let b = pixel_box(&wcs, 64, 64, &line).expect("box");
    assert!(b.width() <= 2 && b.height() == 64, "{b:?}");
    let wcs = sky_image("TAN", 64, 64, 12.0, 0.0, 1.0 / 3600.0);
    assert_eq!(pixel_box(&wcs, 64, 64, &line), None);
}

#[test]
fn boxes_at_a_fifth_of_an_arcsecond_per_pixel_hold_their_pixels_and_no_more() {
    const N: usize = 256;
    let wcs = sky_image("TAN", N, N, 210.0, -30.0, FINE);
    let (ra, dec) = sky(&wcs, 100.0, 140.0);
    let circle = Stencil::parse_circle(&format!("{ra} {dec} {}", 40.0 * FINE)).expect("circle");
    let polygon = polygon_through(
        &wcs,
        &[(10.0, 20.0), (200.0, 5.0), (240.0, 250.0), (60.0, 180.0)],
    );
    let (ra0, dec0) = sky(&wcs, 200.0, 30.0);
    let (ra1, dec1) = sky(&wcs, 50.0, 220.0);
    let range = Stencil::parse_pos(&format!("RANGE {ra0} {ra1} {dec0} {dec1}")).expect("range");
    for stencil in [circle, polygon, range] {
        check_box(&wcs, (N, N), &stencil, every_pixel(N, N), 1);
    }
}

#[test]
fn boxes_on_all_sky_images_hold_their_pixels_and_no_more() {
    let car = sky_image("CAR", 360, 180, 0.0, 0.0, 1.0);
    // A polygon's sharp tip may end on a pixel edge, one pixel past the last centre inside.
    let stencils = [
        ("CIRCLE 30 20 10", 1),
        ("CIRCLE 0 -89 12", 1),
        ("POLYGON 300 10 340 -20 20 -10 10 30", 2),
        ("RANGE 100 140 -60 -20", 1),
        ("RANGE 350 10 -5 5", 1),
    ];
    for (text, slack) in stencils {
        let stencil = Stencil::parse_pos(text).expect("stencil");
        check_box(&car, (360, 180), &stencil, every_pixel(360, 180), slack);
    }
    // Mollweide skies, away from the seam.
    let mol = sky_image("MOL", 360, 180, 0.0, 0.0, 1.0);
    for text in ["CIRCLE 60 40 25", "RANGE 290 330 -70 -50"] {
        let stencil = Stencil::parse_pos(text).expect("stencil");
        check_box(&mol, (360, 180), &stencil, every_pixel(360, 180), 1);
    }
}

/// Where the edge of the projection's domain (a SIN limb, the seam of a Mollweide sky) runs
/// through the image, the part of it inside the stencil is outline too, and only the pixels
/// along it show where it is.
#[test]
fn a_stencil_across_the_edge_of_the_projection_domain_keeps_its_pixels() {
    // SIN shows one hemisphere: a circle over its limb keeps a thin crescent along it.
    let sin = sky_image("SIN", 128, 128, 0.0, 0.0, 1.0);
    for text in [
        "CIRCLE 90 0 20",
        "CIRCLE 0 80 25",
        "POLYGON 80 -10 110 -10 110 10 80 10",
    ] {
        let stencil = Stencil::parse_pos(text).expect("stencil");
        check_box(&sin, (128, 128), &stencil, every_pixel(128, 128), 2);
    }
    // On a Mollweide sky a circle across the seam is two half discs against the ellipse, and
    // one around the pole reaches the seam too. Near the pole the seam's two sides are a few
    // pixels apart, so a boundary chord across it passes `follows_sky`'s two-pixel tolerance:
    // the box may reach two pixels too far there, never short.
    let mol = sky_image("MOL", 360, 180, 0.0, 0.0, 1.0);
    for (text, slack) in [("CIRCLE 180 0 30", 1), ("CIRCLE 60 80 25", 2)] {
        let stencil = Stencil::parse_pos(text).expect("stencil");
        check_box(&mol, (360, 180), &stencil, every_pixel(360, 180), slack);
    }
}

/// The edge pass looks only where the domain's edge is: every on-sky pixel next to an off-sky
/// one lies in a cell it tests, and every cell it tests holds such a pixel.
#[test]
fn the_domain_edge_pass_tests_the_cells_the_edge_crosses_and_no_others() {
    for (wcs, (nx, ny)) in [
        (sky_image("SIN", 128, 128, 0.0, 0.0, 1.0), (128, 128)),
        (sky_image("SIN", 150, 97, 20.0, 30.0, 0.9), (150, 97)),
        (sky_image("MOL", 360, 180, 0.0, 0.0, 1.0), (360, 180)),
    ] {
        let on = |x: usize, y: usize| wcs.pixel_to_sky(x as f64, y as f64).is_some();
        let edge = |x: usize, y: usize| {
            on(x, y)
                && [(1i64, 0i64), (-1, 0), (0, 1), (0, -1)]
                    .iter()
                    .any(|(dx, dy)| {
                        let (u, v) = (x as i64 + dx, y as i64 + dy);
                        (0..nx as i64).contains(&u)
                            && (0..ny as i64).contains(&v)
                            && !on(u as usize, v as usize)
                    })
        };
        let cells = domain_edge_cells(&wcs, nx, ny);
        assert!(!cells.is_empty());
        for (columns, rows) in &cells {
            let holds_edge = rows.clone().any(|y| columns.clone().any(|x| edge(x, y)));
            assert!(
                holds_edge,
                "{nx}x{ny}: cell {columns:?} x {rows:?} holds no edge"
            );
            // Cells are whole rectangles of the grid, within the image.
            assert!(
                *columns.end() < nx && *rows.end() < ny,
                "{columns:?} x {rows:?}"
            );
            assert!(
                columns.start() < columns.end() && rows.start() < rows.end(),
                "{nx}x{ny}: a cell of one line {columns:?} x {rows:?}"
            );
        }
        for (x, y) in every_pixel(nx, ny).filter(|&(x, y)| edge(x, y)) {
            assert!(
                cells.iter().any(|(c, r)| c.contains(&x) && r.contains(&y)),
                "{nx}x{ny}: edge pixel ({x}, {y}) is in no tested cell"
            );
        }
    }
}

/// A stencil just past the image's border, on sky that only lies beyond it, misses the image,
/// even where the image's border leaves the projection's domain.
#[test]
fn a_stencil_just_past_the_border_misses_the_image_where_the_domain_ends_beyond_it() {
    // A SIN sky whose limb, a circle 51 pixels around the centre (49.5, 49.5), passes 1 pixel
    // past the right border at the middle row and cuts the corners off.
    let scale = 180.0 / std::f64::consts::PI / 51.0;
    let sin = sky_image("SIN", 100, 100, 0.0, 0.0, scale);
    assert!(sin.pixel_to_sky(100.0, 50.0).is_some());
    assert!(sin.pixel_to_sky(101.0, 50.0).is_none());
    assert!(sin.pixel_to_sky(99.0, 99.0).is_none());
    let (ra, dec) = sky(&sin, 100.0, 50.0);
    let circle = Stencil::parse_circle(&format!("{ra} {dec} {}", 0.3 * scale)).expect("circle");
    assert_eq!(pixel_box(&sin, 100, 100, &circle), None);
}

#[test]
fn the_sampling_step_is_the_pixel_scale_at_the_image_centre() {
    let relative = |got: f64, want: f64| ((got - want) / want).abs();
    let fine = sky_image("TAN", 512, 512, 10.0, 41.0, FINE);
    assert!(relative(pixel_scale_deg(&fine, 512, 512), FINE) < 1e-6);
    let car = sky_image("CAR", 360, 180, 0.0, 0.0, 1.0);
    assert!(relative(pixel_scale_deg(&car, 360, 180), 1.0) < 1e-4);
    // A wide TAN field: pixels far from the centre are smaller on the sky, so only the centre
    // gives the nominal scale.
    let wide = sky_image("TAN", 1000, 1000, 10.0, 41.0, 0.05);
    assert!(relative(pixel_scale_deg(&wide, 1000, 1000), 0.05) < 1e-4);
    // The finer axis sets the step.
    let oblong = sky_image_at(
        "TAN",
        200,
        200,
        (10.0, 41.0),
        (100.5, 100.5),
        (FINE, 2.0 * FINE),
    );
    assert!(relative(pixel_scale_deg(&oblong, 200, 200), FINE) < 1e-4);
    let oblong = sky_image_at(
        "TAN",
        200,
        200,
        (10.0, 41.0),
        (100.5, 100.5),
        (2.0 * FINE, FINE),
    );
    assert!(relative(pixel_scale_deg(&oblong, 200, 200), FINE) < 1e-4);
    // An image whose centre is off the sky falls back to one arcsecond: a SIN sky at 1 deg/px
    // whose reference point is a corner, so the limb (57.3 px away) passes between the corner
    // and the centre (70 px away).
    let off = sky_image_at("SIN", 100, 100, (0.0, 0.0), (1.0, 1.0), (1.0, 1.0));
    assert_eq!(pixel_scale_deg(&off, 100, 100), 1.0 / 3600.0);
}

#[test]
fn the_border_is_sampled_evenly_along_each_side_corners_included() {
    let r = bounds((-0.5, 99.5), (-0.5, 49.5));
    let points: Vec<(f64, f64)> = border(&r, 4).collect();
    assert_eq!(points.len(), 4 * 5);
    let xs = [-0.5, 24.5, 49.5, 74.5, 99.5];
    let ys = [-0.5, 12.0, 24.5, 37.0, 49.5];
    for (&x, &y) in xs.iter().zip(&ys) {
        for p in [(x, -0.5), (x, 49.5), (-0.5, y), (99.5, y)] {
            assert!(
                points.iter().any(|&q| close(p, q)),
                "{p:?} not in {points:?}"
            );
        }
    }
}
