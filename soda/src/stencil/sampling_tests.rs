//! How densely `Stencil::boundary` samples each shape: consecutive samples no further apart
//! than the step asked for (unless a shape's cap is reached) and not needlessly closer.

use super::*;

/// The largest and the total angle between consecutive samples of the boundary, and their count.
fn spacing(stencil: &Stencil, step: f64) -> (f64, f64, usize) {
    let ring = stencil.boundary(step);
    let gaps: Vec<f64> = ring
        .windows(2)
        .map(|w| sphere::separation_deg(w[0], w[1]))
        .collect();
    let largest = gaps.iter().copied().fold(0.0, f64::max);
    (largest, gaps.iter().sum(), ring.len())
}

#[test]
fn range_sides_are_sampled_at_the_step_on_the_sky() {
    let step = 1e-4;
    for text in [
        "RANGE 10 10.02 40 40.01",
        "RANGE 10 10.02 -60 -59.99",
        "RANGE 10 10.02 -0.005 0.005",
        "RANGE 359.99 0.01 70 70.01",
    ] {
        let range = Stencil::parse_pos(text).expect("range");
        let (largest, perimeter, samples) = spacing(&range, step);
        assert!(
            largest <= step * 1.001,
            "{text}: samples {largest} deg apart"
        );
        // Not more than the perimeter needs, plus one sample per side for rounding.
        let needed = (perimeter / step).ceil() as usize + 4 + 1;
        assert!(
            samples <= needed,
            "{text}: {samples} samples, {needed} needed"
        );
    }
}

#[test]
fn a_range_is_sampled_at_least_sixteen_times_a_side() {
    let range = Stencil::parse_pos("RANGE 10 10.001 20 20.001").expect("range");
    assert_eq!(range.boundary(1.0).len(), 4 * 16 + 1);
    let line = Stencil::parse_pos("RANGE 10 10 -5 5").expect("line");
    let ras: Vec<f64> = line
        .boundary(0.01)
        .into_iter()
        .map(|v| sphere::ra_dec(v).0)
        .collect();
    assert!(ras.iter().all(|&ra| (ra - 10.0).abs() < 1e-9), "{ras:?}");
}

#[test]
fn circles_and_polygons_are_sampled_at_the_step() {
    let step = 1e-3;
    let circle = Stencil::parse_circle("10 41 0.5").expect("circle");
    let (largest, perimeter, samples) = spacing(&circle, step);
    assert!(
        largest <= step * 1.001,
        "circle samples {largest} deg apart"
    );
    assert!(
        samples <= (perimeter / step).ceil() as usize + 2,
        "{samples} samples"
    );
    let polygon = Stencil::parse_polygon("10 40 10.3 40 10.3 40.2").expect("polygon");
    let (largest, perimeter, samples) = spacing(&polygon, step);
    assert!(
        largest <= step * 1.001,
        "polygon samples {largest} deg apart"
    );
    assert!(
        samples <= (perimeter / step).ceil() as usize + 3 + 1,
        "{samples} samples"
    );
    // A tiny circle still gets its 360 samples.
    let tiny = Stencil::parse_circle("10 41 0.00001").expect("circle");
    assert_eq!(tiny.boundary(1.0).len(), 361);
}
