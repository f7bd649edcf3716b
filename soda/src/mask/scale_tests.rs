//! Masks at 0.2″ and 1° per pixel, masks whose rectangle reaches off the sky (the
//! `border_on_sky` guard), and boundaries sampled too coarsely to be followed without `refine`.

use super::*;
use crate::fixtures::{polygon_through, sky, sky_image};
use crate::region::{pixel_box, pixel_scale_deg};

/// Compares the mask of `stencil` (boundary sampled every `step` degrees) with a test of every
/// pixel centre of its rectangle; returns the mask's plan (whether it follows the boundary).
fn check(wcs: &CelestialWcs, (nx, ny): (usize, usize), stencil: &Stencil, step: f64) -> bool {
    let region = pixel_box(wcs, nx, ny, stencil).expect("stencil on the image");
    let mask = Mask::new(wcs, stencil, region, step);
    let mut inside = vec![false; region.width()];
    let mut kept = 0;
    for y in region.y0..=region.y1 {
        mask.row(y, &mut inside);
        for (i, &got) in inside.iter().enumerate() {
            let x = region.x0 + i;
            let want = wcs
                .pixel_to_sky(x as f64, y as f64)
                .is_some_and(|(ra, dec)| stencil.contains(ra, dec));
            assert_eq!(got, want, "{stencil}: pixel ({x}, {y}) of {region:?}");
            kept += usize::from(got);
        }
    }
    assert!(kept > 0, "{stencil}: no pixel kept in {region:?}");
    mask.near.is_some()
}

#[test]
fn masks_at_a_fifth_of_an_arcsecond_per_pixel_are_exact() {
    const N: usize = 200;
    let scale = 0.2 / 3600.0;
    let wcs = sky_image("TAN", N, N, 83.8, -5.4, scale);
    let step = pixel_scale_deg(&wcs, N, N);
    let (ra, dec) = sky(&wcs, 90.0, 110.0);
    let circle = Stencil::parse_circle(&format!("{ra} {dec} {}", 60.0 * scale)).expect("circle");
    let polygon = polygon_through(&wcs, &[(10.0, 10.0), (190.0, 40.0), (120.0, 190.0)]);
    let (ra0, dec0) = sky(&wcs, 150.0, 20.0);
    let (ra1, dec1) = sky(&wcs, 30.0, 170.0);
    let range = Stencil::parse_pos(&format!("RANGE {ra0} {ra1} {dec0} {dec1}")).expect("range");
    for stencil in [circle, polygon, range] {
        assert!(
            check(&wcs, (N, N), &stencil, step),
            "{stencil}: boundary followed"
        );
    }
}

#[test]
fn masks_of_all_sky_images_are_exact() {
    let car = sky_image("CAR", 360, 180, 0.0, 0.0, 1.0);
    for text in [
        "CIRCLE 30 20 10",
        "POLYGON 300 10 340 -20 20 -10 10 30",
        "RANGE 100 140 -60 -20",
    ] {
        let stencil = Stencil::parse_pos(text).expect("stencil");
        assert!(
            check(&car, (360, 180), &stencil, 1.0),
            "{text}: boundary followed"
        );
    }
}

#[test]
fn a_rectangle_partly_off_the_sky_is_tested_pixel_by_pixel() {
    // On a Mollweide sky the seam at RA 180 is the edge of the ellipse, not a stencil boundary:
    // a circle across it has pixels on the sky next to pixels off it with no boundary between
    // them, so runs cannot be filled from their first pixel.
    let mol = sky_image("MOL", 360, 180, 0.0, 0.0, 1.0);
    for text in ["CIRCLE 180 0 30", "CIRCLE 180 60 20"] {
        let stencil = Stencil::parse_pos(text).expect("stencil");
        assert!(
            !check(&mol, (360, 180), &stencil, 1.0),
            "{text}: every pixel tested"
        );
    }
    // A rectangle inside the ellipse is followed along the boundary.
    let circle = Stencil::parse_pos("CIRCLE 0 0 30").expect("circle");
    assert!(check(&mol, (360, 180), &circle, 1.0));
}

#[test]
fn border_on_sky_checks_every_side_of_the_rectangle() {
    // The Mollweide ellipse of a 360 x 180 image at 1 deg/px spans about x 18..342, y 9..171.
    let mol = sky_image("MOL", 360, 180, 0.0, 0.0, 1.0);
    let circle = Stencil::parse_pos("CIRCLE 0 0 10").expect("circle");
    let on = |region: PixelBox| Mask::new(&mol, &circle, region, 1.0).border_on_sky();
    let inner = PixelBox {
        x0: 100,
        y0: 60,
        x1: 260,
        y1: 120,
    };
    assert!(on(inner));
    for region in [
        PixelBox { x0: 0, ..inner },
        PixelBox { x1: 359, ..inner },
        PixelBox { y0: 0, ..inner },
        PixelBox { y1: 179, ..inner },
        PixelBox {
            x0: 0,
            y0: 0,
            x1: 359,
            y1: 179,
        },
    ] {
        assert!(!on(region), "{region:?}");
    }
}

#[test]
fn a_coarsely_sampled_boundary_is_refined_before_it_is_followed() {
    // Sampled every 10 degrees on a 1 deg/px zenithal sky, a circle's boundary is a polygon of
    // 10-pixel chords that cut well inside the curve: refinement must find the curve.
    let arc = sky_image("ARC", 240, 240, 0.0, 90.0, 1.0);
    for text in [
        "CIRCLE 0 60 25",
        "POLYGON 0 40 120 40 240 40",
        "RANGE 20 160 30 60",
    ] {
        let stencil = Stencil::parse_pos(text).expect("stencil");
        assert!(
            check(&arc, (240, 240), &stencil, 10.0),
            "{text}: boundary followed"
        );
    }
}
