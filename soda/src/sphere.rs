//! Spherical geometry on unit vectors, so that stencils can be sampled and tested without
//! caring about the RA wrap at 0/360 or the poles.

/// A unit vector: x towards (RA 0, Dec 0), y towards (RA 90, Dec 0), z towards Dec +90.
pub(crate) type Vec3 = [f64; 3];

pub(crate) fn unit_vector(ra_deg: f64, dec_deg: f64) -> Vec3 {
    let (ra, dec) = (ra_deg.to_radians(), dec_deg.to_radians());
    [dec.cos() * ra.cos(), dec.cos() * ra.sin(), dec.sin()]
}

/// RA in [0, 360) and Dec in [-90, 90], in degrees.
pub(crate) fn ra_dec(v: Vec3) -> (f64, f64) {
    let ra = v[1].atan2(v[0]).to_degrees().rem_euclid(360.0);
    let dec = v[2].atan2(v[0].hypot(v[1])).to_degrees();
    // rem_euclid can round a tiny negative angle up to exactly 360.
    (if ra >= 360.0 { 0.0 } else { ra }, dec)
}

pub(crate) fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(crate) fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}

/// Angle between two unit vectors in degrees; atan2 keeps it accurate for tiny angles.
pub(crate) fn separation_deg(a: Vec3, b: Vec3) -> f64 {
    norm(cross(a, b)).atan2(dot(a, b)).to_degrees()
}

/// The point at `distance_deg` from (`ra_deg`, `dec_deg`) along position angle `bearing_deg`
/// (east of north).
pub(crate) fn offset(ra_deg: f64, dec_deg: f64, distance_deg: f64, bearing_deg: f64) -> Vec3 {
    let (ra, dec) = (ra_deg.to_radians(), dec_deg.to_radians());
    let (d, b) = (distance_deg.to_radians(), bearing_deg.to_radians());
    let dec2 = (dec.sin() * d.cos() + dec.cos() * d.sin() * b.cos())
        .clamp(-1.0, 1.0)
        .asin();
    let ra2 = ra + (b.sin() * d.sin() * dec.cos()).atan2(d.cos() - dec.sin() * dec2.sin());
    unit_vector(ra2.to_degrees(), dec2.to_degrees())
}

/// `n + 1` points from `a` to `b` (both included) along the shorter great-circle arc.
pub(crate) fn great_circle(a: Vec3, b: Vec3, n: usize) -> impl Iterator<Item = Vec3> {
    let omega = separation_deg(a, b).to_radians();
    let sin_omega = omega.sin();
    (0..=n).map(move |i| {
        let t = i as f64 / n as f64;
        if sin_omega < 1e-15 {
            return a;
        }
        let (wa, wb) = (
            ((1.0 - t) * omega).sin() / sin_omega,
            (t * omega).sin() / sin_omega,
        );
        [
            wa * a[0] + wb * b[0],
            wa * a[1] + wb * b[1],
            wa * a[2] + wb * b[2],
        ]
    })
}

/// Whether `p` lies inside the closed polygon of great-circle edges through `vertices`.
///
/// Sums the turn of the bearing from `p` to a point running along the edges: a full turn means
/// the polygon winds around `p` or around its antipode, and the two are told apart by which
/// hemisphere the vertices lean towards. So "inside" is the smaller side of the polygon,
/// whatever the vertex order, for any polygon smaller than a hemisphere.
pub(crate) fn polygon_contains(vertices: &[Vec3], p: Vec3) -> bool {
    let tangent = |v: Vec3| {
        let k = dot(v, p);
        [v[0] - k * p[0], v[1] - k * p[1], v[2] - k * p[2]]
    };
    let mut total = 0.0;
    for (i, &v) in vertices.iter().enumerate() {
        let w = vertices[(i + 1) % vertices.len()];
        let (tv, tw) = (tangent(v), tangent(w));
        total += dot(cross(tv, tw), p).atan2(dot(tv, tw));
    }
    let mean = vertices
        .iter()
        .fold([0.0; 3], |m, v| [m[0] + v[0], m[1] + v[1], m[2] + v[2]]);
    total.abs() > std::f64::consts::PI && dot(mean, p) > 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lands_at_the_requested_distance() {
        for &(ra, dec) in &[(0.0, 0.0), (359.9, 45.0), (10.0, -89.0), (200.0, 89.5)] {
            for bearing in [0.0, 33.0, 90.0, 181.0, 300.0] {
                let p = offset(ra, dec, 0.25, bearing);
                let d = separation_deg(unit_vector(ra, dec), p);
                assert!((d - 0.25).abs() < 1e-10, "{ra} {dec} {bearing}: {d}");
            }
        }
    }

    #[test]
    fn ra_dec_round_trips_across_the_wrap() {
        for &(ra, dec) in &[(0.0, 0.0), (359.999, 10.0), (180.0, -45.0)] {
            let (r, d) = ra_dec(unit_vector(ra, dec));
            assert!((r - ra).abs() < 1e-9 && (d - dec).abs() < 1e-9, "{r} {d}");
        }
    }

    #[test]
    fn polygon_contains_points_inside_and_not_outside_across_ra_zero() {
        let square: Vec<Vec3> = [(359.0, -1.0), (1.0, -1.0), (1.0, 1.0), (359.0, 1.0)]
            .map(|(r, d)| unit_vector(r, d))
            .to_vec();
        assert!(polygon_contains(&square, unit_vector(0.0, 0.0)));
        assert!(polygon_contains(&square, unit_vector(359.5, 0.5)));
        assert!(!polygon_contains(&square, unit_vector(2.0, 0.0)));
        assert!(!polygon_contains(&square, unit_vector(180.0, 0.0)));
        let reversed: Vec<Vec3> = square.iter().rev().copied().collect();
        assert!(polygon_contains(&reversed, unit_vector(0.0, 0.0)));
    }
}
