//! `pixel_box` of what is located without following a sampled boundary: a `SUB` section (its
//! ranges as they are), a MOC (cell by cell, each cell that may reach the image), and an image
//! of no pixels.

use super::*;
use crate::fixtures::{box_of_inside, every_pixel, holds, sky, sky_image};

const SCALE: f64 = 1.0 / 3600.0;

/// The HEALPix cell of depth `depth` (nested) holding (`ra`, `dec`).
fn cell_at(depth: u8, (ra, dec): (f64, f64)) -> u64 {
    cdshealpix::nested::hash(depth, ra.to_radians(), dec.to_radians())
}

#[test]
fn an_image_without_pixels_has_no_box() {
    let wcs = sky_image("TAN", 10, 10, 10.0, 41.0, SCALE);
    let circle = Stencil::parse_circle("10 41 0.01").unwrap();
    assert_eq!(pixel_box(&wcs, 0, 10, &circle), None);
    assert_eq!(pixel_box(&wcs, 10, 0, &circle), None);
}

#[test]
fn a_section_s_box_is_its_ranges_clipped_to_the_image() {
    let wcs = sky_image("TAN", 100, 80, 10.0, 41.0, SCALE);
    let boxed = |sub: &str| pixel_box(&wcs, 100, 80, &Stencil::parse_sub(sub).unwrap());
    let pixels = |x0, y0, x1, y1| Some(PixelBox { x0, y0, x1, y1 });
    assert_eq!(boxed("[11:20,5:80]"), pixels(10, 4, 19, 79));
    assert_eq!(boxed("[1:1,1:1]"), pixels(0, 0, 0, 0));
    assert_eq!(boxed("[90:200,*]"), pixels(89, 0, 99, 79));
    assert_eq!(boxed("[101:120,1:5]"), None);
}

/// A MOC's box holds every pixel whose centre is in one of its cells, reaches at most two
/// pixels past them, and is none when no cell meets the image; a cell over the image's corner,
/// whose centre lies outside the circle around the image, still counts.
#[test]
fn a_moc_s_box_holds_the_pixels_of_its_cells_that_meet_the_image() {
    let wcs = sky_image("TAN", 200, 200, 10.0, 41.0, SCALE);
    // Depth 12 cells are about 51 pixels across here.
    let depth = 12;
    let middle = cell_at(depth, sky(&wcs, 99.5, 99.5));
    let corner = cell_at(depth, sky(&wcs, -4.0, -4.0));
    let far = cell_at(depth, (200.0, -30.0));
    for cells in [vec![middle], vec![corner], vec![middle, far], vec![far]] {
        let list: Vec<String> = cells.iter().map(u64::to_string).collect();
        let moc = Stencil::parse_moc(&format!("{depth}/{}", list.join(" "))).unwrap();
        let got = pixel_box(&wcs, 200, 200, &moc);
        match box_of_inside(&wcs, &moc, every_pixel(200, 200)) {
            None => assert_eq!(got, None, "{moc}"),
            Some(inside) => {
                let got = got.unwrap_or_else(|| panic!("{moc}: no box, {inside:?} inside"));
                assert!(holds(got, inside), "{moc}: {got:?} misses {inside:?}");
                let loose = PixelBox {
                    x0: inside.x0.saturating_sub(2),
                    y0: inside.y0.saturating_sub(2),
                    x1: inside.x1 + 2,
                    y1: inside.y1 + 2,
                };
                assert!(holds(loose, got), "{moc}: {got:?} swells past {inside:?}");
            }
        }
    }
    // The corner cell really lies over the corner, its centre off the image.
    let corner_only = Stencil::parse_moc(&format!("{depth}/{corner}")).unwrap();
    let inside = box_of_inside(&wcs, &corner_only, every_pixel(200, 200)).unwrap();
    assert_eq!((inside.x0, inside.y0), (0, 0), "{inside:?}");
}

/// The circle that rules cells out by distance holds every pixel of the image, and is not much
/// larger: a smaller one would drop cells that meet the image, a far larger one would rule out
/// nothing.
#[test]
fn the_circle_around_an_image_holds_its_pixels_and_little_more() {
    for (wcs, (nx, ny)) in [
        (sky_image("TAN", 200, 200, 10.0, 41.0, SCALE), (200, 200)),
        (
            sky_image("TAN", 300, 120, 200.0, -60.0, 0.5 * SCALE),
            (300, 120),
        ),
        (sky_image("SIN", 90, 150, 45.0, 10.0, 0.01), (90, 150)),
        // So few pixels that the pixel of slack is most of the radius.
        (sky_image("TAN", 4, 3, 120.0, 5.0, SCALE), (4, 3)),
    ] {
        let (centre, radius) = image_circle(&wcs, nx, ny).expect("the image is on the sky");
        let mut farthest: f64 = 0.0;
        for (x, y) in every_pixel(nx, ny) {
            let (ra, dec) = sky(&wcs, x as f64, y as f64);
            let apart = sphere::separation_deg(centre, sphere::unit_vector(ra, dec));
            assert!(
                apart <= radius,
                "{nx}x{ny}: ({x}, {y}) is {apart} deg out, radius {radius}"
            );
            farthest = farthest.max(apart);
        }
        let scale = pixel_scale_deg(&wcs, nx, ny);
        assert!(
            radius <= farthest * 1.06 + 3.0 * scale,
            "{nx}x{ny}: radius {radius} for pixels at most {farthest} away"
        );
        // The centre is the image's: its distances to opposite corners differ by much less
        // than a pixel.
        let corner = |x: f64, y: f64| {
            let (ra, dec) = sky(&wcs, x, y);
            sphere::separation_deg(centre, sphere::unit_vector(ra, dec))
        };
        let (right, top) = (nx as f64 - 0.5, ny as f64 - 0.5);
        for ((ax, ay), (bx, by)) in [((-0.5, -0.5), (right, top)), ((-0.5, top), (right, -0.5))] {
            let (a, b) = (corner(ax, ay), corner(bx, by));
            assert!(
                (a - b).abs() < 0.25 * scale,
                "{nx}x{ny}: corners {a} and {b} deg away"
            );
        }
    }
}

/// Cells next to the image but off it have no box, however near: one beside it (whose outline
/// would fit a box as wide again as the image) and ones too small to hold a pixel centre,
/// lying in the half pixel past the right and the top border.
#[test]
fn a_moc_cell_next_to_the_image_has_no_box() {
    let wcs = sky_image("TAN", 200, 200, 10.0, 41.0, SCALE);
    // Depth 12 cells are about 51 pixels across here, depth 22 cells a twentieth of a pixel.
    for (depth, (x, y)) in [
        (12, (290.0, 100.0)),
        (12, (100.0, 290.0)),
        (22, (199.75, 100.0)),
        (22, (100.0, 199.75)),
    ] {
        let cell = cell_at(depth, sky(&wcs, x, y));
        let outline = wcs.sky_to_pixels(&Moc::cell_outline(depth, cell));
        assert!(
            outline
                .iter()
                .all(|p| p.is_some_and(|(px, py)| px > 199.5 || py > 199.5)),
            "cell {depth}/{cell} reaches into the image: {outline:?}"
        );
        let moc = Stencil::parse_moc(&format!("{depth}/{cell}")).unwrap();
        assert_eq!(pixel_box(&wcs, 200, 200, &moc), None, "{moc}");
    }
}

/// A cell over the image's corner whose centre lies outside the circle around the image (so
/// only its own radius brings it near) is boxed, not ruled out by distance.
#[test]
fn a_large_cell_centred_beyond_the_image_circle_is_boxed_where_it_meets_the_image() {
    let wcs = sky_image("TAN", 200, 200, 10.0, 41.0, SCALE);
    let (centre, radius) = image_circle(&wcs, 200, 200).expect("on the sky");
    // Cells of depth 10 and 11 are about 200 and 100 pixels across here: large enough to
    // reach the corner from a centre beyond the circle (150 pixels from the image centre).
    let candidates = [10, 11]
        .into_iter()
        .flat_map(|depth| (1..100).map(move |s| (depth, s)));
    let beyond = candidates.into_iter().find_map(|(depth, step)| {
        let at = -(step as f64);
        let cell = cell_at(depth, sky(&wcs, at, at));
        let ((ra, dec), _) = Moc::cell_circle(depth, cell);
        let apart = sphere::separation_deg(centre, sphere::unit_vector(ra, dec));
        let moc = Stencil::parse_moc(&format!("{depth}/{cell}")).unwrap();
        let inside = box_of_inside(&wcs, &moc, every_pixel(200, 200))?;
        (apart > radius).then_some((moc, inside))
    });
    let (moc, inside) = beyond.expect("a cell over the corner centred beyond the circle");
    let got = pixel_box(&wcs, 200, 200, &moc).expect("a box");
    assert!(holds(got, inside), "{moc}: {got:?} misses {inside:?}");
}
