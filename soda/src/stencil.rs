//! SODA spatial stencils (`CIRCLE`, `POLYGON`, `POS`), parsed and validated once, so that the
//! geometry code downstream never sees NaN, a negative radius or a latitude of 95.
//!
//! A stencil also knows its own shape on the sky: whether it contains a point, and points
//! sampled densely along its boundary, which `region` projects into pixel space.

use std::fmt;

use crate::SodaError;
pub use crate::coverage::Moc;
pub use crate::section::PixelSection;
use crate::sphere::{self, Vec3};

/// A SODA spatial stencil in ICRS degrees, valid by construction.
#[derive(Debug, Clone, PartialEq)]
pub enum Stencil {
    /// `CIRCLE ra dec radius`.
    Circle(Circle),
    /// `POLYGON ra1 dec1 ra2 dec2 ra3 dec3 ...`, edges along great circles.
    Polygon(Polygon),
    /// `RANGE ra1 ra2 dec1 dec2`; infinite bounds reach to the image edge, and `ra1 > ra2`
    /// wraps through RA 0 (`RANGE 350 10 ...` is 20 degrees wide).
    Range(Range),
    /// `SUB=[x1:x2,y1:y2]`: a rectangle of pixels rather than of sky, cut as it is (see
    /// [`PixelSection`]); it contains every sky position of its pixels.
    Pixels(PixelSection),
    /// `MOC=3/1-3 4/80` (SODA working draft): a union of HEALPix cells, located cell by cell;
    /// a position is inside when its cell is.
    Moc(Moc),
}

/// A cone: all points within `radius` degrees of the centre.
#[derive(Debug, Clone, PartialEq)]
pub struct Circle {
    ra: f64,
    dec: f64,
    radius: f64,
}

impl Circle {
    /// Centre (RA, Dec) in degrees.
    pub fn center(&self) -> (f64, f64) {
        (self.ra, self.dec)
    }

    /// Radius in degrees, in (0, 180].
    pub fn radius(&self) -> f64 {
        self.radius
    }
}

/// A spherical polygon with at least 3 vertices.
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    vertices: Vec<(f64, f64)>,
}

impl Polygon {
    /// A polygon made here rather than parsed (a MOC cell's outline): the vertices are trusted
    /// to be on the sky and as many as the outline needs.
    pub(crate) fn from_vertices(vertices: Vec<(f64, f64)>) -> Polygon {
        Polygon { vertices }
    }

    /// Vertices (RA, Dec) in degrees, in the order given.
    pub fn vertices(&self) -> &[(f64, f64)] {
        &self.vertices
    }
}

/// A box in RA and Dec; bounds may be infinite, and a low RA above the high one wraps
/// through RA 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    ra: (f64, f64),
    dec: (f64, f64),
}

impl Range {
    /// RA bounds (low, high) in degrees, possibly infinite; low > high wraps through RA 0.
    pub fn ra(&self) -> (f64, f64) {
        self.ra
    }

    /// Dec bounds (low, high) in degrees, possibly infinite.
    pub fn dec(&self) -> (f64, f64) {
        self.dec
    }

    /// The bounds with infinities replaced by the edge of the sky; a wrapping RA interval
    /// gets a high bound above 360, so that low..high is always increasing.
    fn finite(&self) -> ((f64, f64), (f64, f64)) {
        let (lo, hi) = (self.ra.0.max(0.0), self.ra.1.min(360.0));
        let hi = if lo > hi { hi + 360.0 } else { hi };
        ((lo, hi), (self.dec.0.max(-90.0), self.dec.1.min(90.0)))
    }
}

impl Stencil {
    /// Parses the value of a `CIRCLE` parameter: `ra dec radius`.
    pub fn parse_circle(value: &str) -> Result<Stencil, SodaError> {
        circle("CIRCLE", value)
    }

    /// The circle of `radius` degrees around (`ra`, `dec`), checked as a parsed `CIRCLE` is.
    pub fn circle(ra: f64, dec: f64, radius: f64) -> Result<Stencil, SodaError> {
        checked_circle("CIRCLE", &[ra, dec, radius])
    }

    /// Parses the value of a `POLYGON` parameter: `ra1 dec1 ra2 dec2 ra3 dec3 ...`.
    pub fn parse_polygon(value: &str) -> Result<Stencil, SodaError> {
        polygon("POLYGON", value)
    }

    /// Parses the value of a `POS` parameter: `CIRCLE ...`, `POLYGON ...` or `RANGE ...`,
    /// with the shape keyword in any case.
    pub fn parse_pos(value: &str) -> Result<Stencil, SodaError> {
        let trimmed = value.trim_start();
        let Some(shape) = trimmed.split_whitespace().next() else {
            return Err(SodaError::usage(
                "POS is empty: expected CIRCLE, POLYGON or RANGE",
            ));
        };
        let rest = &trimmed[shape.len()..];
        match shape.to_ascii_uppercase().as_str() {
            "CIRCLE" => circle("POS CIRCLE", rest),
            "POLYGON" => polygon("POS POLYGON", rest),
            "RANGE" => range("POS RANGE", rest),
            _ => Err(SodaError::usage(format!(
                "POS shape {shape:?} not supported: expected CIRCLE, POLYGON or RANGE"
            ))),
        }
    }

    /// Parses the value of a `MOC` parameter, an ASCII MOC.
    pub fn parse_moc(value: &str) -> Result<Stencil, SodaError> {
        Moc::parse(value).map(Stencil::Moc)
    }

    /// Parses the value of a `SUB` parameter, a cfitsio image section.
    pub fn parse_sub(value: &str) -> Result<Stencil, SodaError> {
        PixelSection::parse(value).map(Stencil::Pixels)
    }

    /// Whether this is a pixel section (`SUB`) rather than a region of the sky.
    pub fn is_pixels(&self) -> bool {
        matches!(self, Stencil::Pixels(_))
    }

    /// Whether the sky position is inside the stencil (boundary included).
    pub(crate) fn contains(&self, ra_deg: f64, dec_deg: f64) -> bool {
        self.test().contains(ra_deg, dec_deg)
    }

    /// The stencil prepared for many [`StencilTest::contains`] calls.
    pub(crate) fn test(&self) -> StencilTest {
        let (centre, vertices) = match self {
            Stencil::Circle(c) => (sphere::unit_vector(c.ra, c.dec), Vec::new()),
            Stencil::Polygon(p) => (
                [0.0; 3],
                p.vertices
                    .iter()
                    .map(|&(r, d)| sphere::unit_vector(r, d))
                    .collect(),
            ),
            Stencil::Range(_) | Stencil::Pixels(_) | Stencil::Moc(_) => ([0.0; 3], Vec::new()),
        };
        StencilTest {
            stencil: self.clone(),
            centre,
            vertices,
        }
    }

    /// The boundary as closed rings of points no further apart than about `step_deg` (first
    /// point repeated at the end), in order, so that consecutive points can be joined.
    pub(crate) fn boundary(&self, step_deg: f64) -> Vec<Vec3> {
        let steps = |extent_deg: f64, min: usize, max: usize| {
            ((extent_deg / step_deg).ceil() as usize).clamp(min, max)
        };
        match self {
            Stencil::Circle(c) => {
                let circumference = 360.0 * c.radius.to_radians().sin().max(c.radius / 360.0);
                let n = steps(circumference, 360, 20_000);
                (0..=n)
                    .map(|i| sphere::offset(c.ra, c.dec, c.radius, 360.0 * i as f64 / n as f64))
                    .collect()
            }
            Stencil::Polygon(p) => {
                let vertices: Vec<Vec3> = p
                    .vertices
                    .iter()
                    .map(|&(r, d)| sphere::unit_vector(r, d))
                    .collect();
                let mut points = Vec::new();
                for (i, &a) in vertices.iter().enumerate() {
                    let b = vertices[(i + 1) % vertices.len()];
                    let n = steps(sphere::separation_deg(a, b), 16, 4_000);
                    points.extend(sphere::great_circle(a, b, n));
                }
                points
            }
            Stencil::Range(r) => {
                let ((ra_lo, ra_hi), (dec_lo, dec_hi)) = r.finite();
                // Parallels are sampled by RA, whose degrees shrink by cos(dec) on the sky.
                let widest = dec_lo.abs().min(dec_hi.abs());
                let widest = if dec_lo <= 0.0 && dec_hi >= 0.0 {
                    0.0
                } else {
                    widest
                };
                let n_ra = steps((ra_hi - ra_lo) * widest.to_radians().cos(), 16, 20_000);
                let n_dec = steps(dec_hi - dec_lo, 16, 20_000);
                let lerp =
                    |lo: f64, hi: f64, i: usize, n: usize| lo + (hi - lo) * i as f64 / n as f64;
                let mut points = Vec::new();
                points.extend((0..n_ra).map(|i| (lerp(ra_lo, ra_hi, i, n_ra), dec_lo)));
                points.extend((0..n_dec).map(|i| (ra_hi, lerp(dec_lo, dec_hi, i, n_dec))));
                points.extend((0..n_ra).map(|i| (lerp(ra_hi, ra_lo, i, n_ra), dec_hi)));
                points.extend((0..=n_dec).map(|i| (ra_lo, lerp(dec_hi, dec_lo, i, n_dec))));
                points
                    .into_iter()
                    .map(|(ra, dec)| sphere::unit_vector(ra, dec))
                    .collect()
            }
            // A section is located in pixels, never through its sky boundary; a MOC cell by
            // cell (`region::pixel_box`), and masked pixel by pixel (`mask`).
            Stencil::Pixels(_) | Stencil::Moc(_) => Vec::new(),
        }
    }
}

/// A stencil with its unit vectors computed once, for testing many points.
#[derive(Debug, Clone)]
pub(crate) struct StencilTest {
    stencil: Stencil,
    centre: Vec3,
    vertices: Vec<Vec3>,
}

impl StencilTest {
    /// Whether the sky position is inside the stencil (boundary included).
    pub(crate) fn contains(&self, ra_deg: f64, dec_deg: f64) -> bool {
        match &self.stencil {
            Stencil::Circle(c) => {
                let d = sphere::separation_deg(self.centre, sphere::unit_vector(ra_deg, dec_deg));
                d <= c.radius
            }
            Stencil::Polygon(_) => {
                sphere::polygon_contains(&self.vertices, sphere::unit_vector(ra_deg, dec_deg))
            }
            Stencil::Range(r) => {
                let ((ra_lo, ra_hi), (dec_lo, dec_hi)) = r.finite();
                let ra = ra_deg.rem_euclid(360.0);
                let in_ra =
                    (ra_lo..=ra_hi).contains(&ra) || (ra_lo..=ra_hi).contains(&(ra + 360.0));
                in_ra && (dec_lo..=dec_hi).contains(&dec_deg)
            }
            Stencil::Pixels(_) => true,
            Stencil::Moc(moc) => moc.contains(ra_deg, dec_deg),
        }
    }
}

impl fmt::Display for Stencil {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stencil::Circle(c) => {
                write!(f, "CIRCLE {} {} {}", Num(c.ra), Num(c.dec), Num(c.radius))
            }
            Stencil::Polygon(p) => {
                f.write_str("POLYGON")?;
                for &(ra, dec) in &p.vertices {
                    write!(f, " {} {}", Num(ra), Num(dec))?;
                }
                Ok(())
            }
            Stencil::Range(r) => write!(
                f,
                "RANGE {} {} {} {}",
                Num(r.ra.0),
                Num(r.ra.1),
                Num(r.dec.0),
                Num(r.dec.1)
            ),
            Stencil::Pixels(section) => write!(f, "SUB {section}"),
            Stencil::Moc(moc) => write!(f, "MOC {moc}"),
        }
    }
}

/// Formats a number the way DALI writes it: shortest round-trip digits, `-Inf`/`+Inf`.
struct Num(f64);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = self.0;
        if x == f64::INFINITY {
            return f.write_str("+Inf");
        }
        if x == f64::NEG_INFINITY {
            return f.write_str("-Inf");
        }
        // Display never uses an exponent, which would make 1e-12 a dozen zeros.
        if x != 0.0 && x.abs() < 1e-5 {
            write!(f, "{x:e}")
        } else {
            write!(f, "{x}")
        }
    }
}

/// Splits on any run of whitespace and parses DALI numbers (`12`, `12.0`, `1e-05`, `+1.5`).
fn numbers(label: &str, value: &str) -> Result<Vec<f64>, SodaError> {
    value
        .split_whitespace()
        .map(|word| {
            word.parse::<f64>()
                .map_err(|_| SodaError::usage(format!("{label} value {word:?} is not a number")))
        })
        .collect()
}

fn require_finite(label: &str, values: &[f64]) -> Result<(), SodaError> {
    match values.iter().find(|v| !v.is_finite()) {
        Some(v) => Err(SodaError::usage(format!(
            "{label} values must be finite, got {v}"
        ))),
        None => Ok(()),
    }
}

fn check_ra(label: &str, ra: f64) -> Result<(), SodaError> {
    if (0.0..=360.0).contains(&ra) {
        Ok(())
    } else {
        Err(SodaError::usage(format!(
            "{label} longitude {} outside [0, 360]",
            Num(ra)
        )))
    }
}

fn check_dec(label: &str, dec: f64) -> Result<(), SodaError> {
    if (-90.0..=90.0).contains(&dec) {
        Ok(())
    } else {
        Err(SodaError::usage(format!(
            "{label} latitude {} outside [-90, 90]",
            Num(dec)
        )))
    }
}

fn circle(label: &str, value: &str) -> Result<Stencil, SodaError> {
    checked_circle(label, &numbers(label, value)?)
}

fn checked_circle(label: &str, v: &[f64]) -> Result<Stencil, SodaError> {
    let [ra, dec, radius] = v[..] else {
        return Err(SodaError::usage(format!(
            "{label} needs 3 numbers (ra dec radius), got {}",
            v.len()
        )));
    };
    require_finite(label, v)?;
    check_ra(label, ra)?;
    check_dec(label, dec)?;
    if radius <= 0.0 {
        return Err(SodaError::usage(format!("{label} radius must be positive")));
    }
    if radius > 180.0 {
        return Err(SodaError::usage(format!(
            "{label} radius {} exceeds 180 degrees",
            Num(radius)
        )));
    }
    Ok(Stencil::Circle(Circle { ra, dec, radius }))
}

/// Most vertices a polygon may have: every vertex costs work for each pixel-row edge test and
/// each masked pixel, and no survey footprint needs more.
pub const MAX_POLYGON_VERTICES: usize = 1000;

fn polygon(label: &str, value: &str) -> Result<Stencil, SodaError> {
    // Counted before parsing, so a huge list is refused without being parsed.
    let words = value.split_whitespace().count();
    if words > 2 * MAX_POLYGON_VERTICES {
        return Err(SodaError::usage(format!(
            "{label} has {} vertices; at most {MAX_POLYGON_VERTICES}",
            words.div_ceil(2)
        )));
    }
    let v = numbers(label, value)?;
    if v.len() % 2 != 0 {
        return Err(SodaError::usage(format!(
            "{label} needs ra dec pairs, got an odd count of {} numbers",
            v.len()
        )));
    }
    if v.len() < 6 {
        return Err(SodaError::usage(format!(
            "{label} needs at least 3 vertices (6 numbers), got {}",
            v.len() / 2
        )));
    }
    require_finite(label, &v)?;
    let vertices: Vec<(f64, f64)> = v.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    for &(ra, dec) in &vertices {
        check_ra(label, ra)?;
        check_dec(label, dec)?;
    }
    Ok(Stencil::Polygon(Polygon { vertices }))
}

fn range(label: &str, value: &str) -> Result<Stencil, SodaError> {
    let v = numbers(label, value)?;
    let [ra_lo, ra_hi, dec_lo, dec_hi] = v[..] else {
        return Err(SodaError::usage(format!(
            "{label} needs 4 numbers (ra1 ra2 dec1 dec2), got {}",
            v.len()
        )));
    };
    if v.iter().any(|x| x.is_nan()) {
        return Err(SodaError::usage(format!(
            "{label} values must be numbers, got NaN"
        )));
    }
    for (what, lo, hi, check) in [
        (
            "longitude",
            ra_lo,
            ra_hi,
            check_ra as fn(&str, f64) -> Result<(), SodaError>,
        ),
        ("latitude", dec_lo, dec_hi, check_dec),
    ] {
        for x in [lo, hi].into_iter().filter(|x| x.is_finite()) {
            check(label, x)?;
        }
        // Finite RA bounds in decreasing order wrap through RA 0; reversed latitudes and
        // reversed infinities have no such meaning.
        let wraps = what == "longitude" && lo.is_finite() && hi.is_finite();
        if lo > hi && !wraps {
            return Err(SodaError::usage(format!(
                "{label} {what} bounds {} {} are reversed: need low <= high",
                Num(lo),
                Num(hi)
            )));
        }
        if lo == f64::INFINITY || hi == f64::NEG_INFINITY {
            return Err(SodaError::usage(format!(
                "{label} {what} interval {} {} is empty",
                Num(lo),
                Num(hi)
            )));
        }
    }
    Ok(Stencil::Range(Range {
        ra: (ra_lo, ra_hi),
        dec: (dec_lo, dec_hi),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses with `parse` and compares either the canonical form or the error message.
    fn check(parse: fn(&str) -> Result<Stencil, SodaError>, input: &str, expected: &str) {
        let got = match parse(input) {
            Ok(stencil) => stencil.to_string(),
            Err(SodaError::Usage(message)) => format!("error: {message}"),
            Err(other) => panic!("{input:?}: unexpected {other:?}"),
        };
        assert_eq!(got, expected, "input {input:?}");
    }

    #[test]
    fn circle_accepts_dali_numbers() {
        let c = Stencil::parse_circle;
        check(c, "10.5 -20 0.1", "CIRCLE 10.5 -20 0.1");
        check(c, "12 +45.0 1e-05", "CIRCLE 12 45 0.00001");
        check(c, "  1\t2 \n 0.5  ", "CIRCLE 1 2 0.5");
        check(c, "0 -90 180", "CIRCLE 0 -90 180");
        check(c, "360 90 1E-12", "CIRCLE 360 90 1e-12");
    }

    #[test]
    fn circle_needs_exactly_three_numbers() {
        let c = Stencil::parse_circle;
        check(
            c,
            "1 2",
            "error: CIRCLE needs 3 numbers (ra dec radius), got 2",
        );
        check(
            c,
            "",
            "error: CIRCLE needs 3 numbers (ra dec radius), got 0",
        );
        check(
            c,
            "1 2 3 4",
            "error: CIRCLE needs 3 numbers (ra dec radius), got 4",
        );
        check(c, "1 2 abc", "error: CIRCLE value \"abc\" is not a number");
        check(c, "1,2,3", "error: CIRCLE value \"1,2,3\" is not a number");
    }

    #[test]
    fn circle_rejects_nan_and_infinity() {
        let c = Stencil::parse_circle;
        check(c, "NaN 2 1", "error: CIRCLE values must be finite, got NaN");
        check(c, "1 2 inf", "error: CIRCLE values must be finite, got inf");
    }

    #[test]
    fn a_circle_from_numbers_is_the_parsed_circle_and_checked_alike() {
        assert_eq!(
            Stencil::circle(10.5, -3.25, 0.01).unwrap(),
            Stencil::parse_circle("10.5 -3.25 0.01").unwrap()
        );
        for (ra, dec, radius) in [
            (f64::NAN, 0.0, 1.0),
            (10.0, 91.0, 1.0),
            (10.0, 0.0, 0.0),
            (10.0, 0.0, 181.0),
        ] {
            assert!(Stencil::circle(ra, dec, radius).is_err());
        }
    }

    #[test]
    fn circle_radius_must_be_positive() {
        let c = Stencil::parse_circle;
        check(c, "1 2 0", "error: CIRCLE radius must be positive");
        check(c, "1 2 -0.1", "error: CIRCLE radius must be positive");
        check(
            c,
            "1 2 180.5",
            "error: CIRCLE radius 180.5 exceeds 180 degrees",
        );
    }

    #[test]
    fn circle_center_must_be_on_the_sky() {
        let c = Stencil::parse_circle;
        check(c, "361 0 1", "error: CIRCLE longitude 361 outside [0, 360]");
        check(c, "-1 0 1", "error: CIRCLE longitude -1 outside [0, 360]");
        check(c, "10 95 1", "error: CIRCLE latitude 95 outside [-90, 90]");
        check(
            c,
            "10 -90.5 1",
            "error: CIRCLE latitude -90.5 outside [-90, 90]",
        );
    }

    #[test]
    fn polygon_accepts_three_or_more_vertices() {
        let p = Stencil::parse_polygon;
        check(p, "10 10 11 10 11 11", "POLYGON 10 10 11 10 11 11");
        check(p, "359 -1 1 -1 1 1 359 1", "POLYGON 359 -1 1 -1 1 1 359 1");
    }

    #[test]
    fn polygon_rejects_more_than_the_maximum_vertex_count() {
        let ring = |n: usize| {
            (0..n)
                .map(|i| {
                    let a = i as f64 / n as f64 * std::f64::consts::TAU;
                    format!("{} {}", 150.0 + 0.1 * a.cos(), 2.0 + 0.1 * a.sin())
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(Stencil::parse_polygon(&ring(MAX_POLYGON_VERTICES)).is_ok());
        let e = Stencil::parse_polygon(&ring(MAX_POLYGON_VERTICES + 1)).expect_err("too many");
        assert_eq!(
            e.to_string(),
            format!("POLYGON has 1001 vertices; at most {MAX_POLYGON_VERTICES}")
        );
    }

    #[test]
    fn polygon_rejects_bad_vertex_lists() {
        let p = Stencil::parse_polygon;
        check(
            p,
            "10 10 11 10",
            "error: POLYGON needs at least 3 vertices (6 numbers), got 2",
        );
        check(
            p,
            "",
            "error: POLYGON needs at least 3 vertices (6 numbers), got 0",
        );
        check(
            p,
            "10 10 11 10 11",
            "error: POLYGON needs ra dec pairs, got an odd count of 5 numbers",
        );
        check(
            p,
            "10 10 11 10 11 95",
            "error: POLYGON latitude 95 outside [-90, 90]",
        );
        check(
            p,
            "10 10 400 10 11 11",
            "error: POLYGON longitude 400 outside [0, 360]",
        );
        check(
            p,
            "10 10 11 10 11 nan",
            "error: POLYGON values must be finite, got NaN",
        );
    }

    #[test]
    fn pos_accepts_all_three_shapes_in_any_case() {
        let pos = Stencil::parse_pos;
        check(pos, "CIRCLE 10 20 0.5", "CIRCLE 10 20 0.5");
        check(pos, "circle 10 20 0.5", "CIRCLE 10 20 0.5");
        check(
            pos,
            "  Polygon 10 10 11 10 11 11",
            "POLYGON 10 10 11 10 11 11",
        );
        check(pos, "RANGE 10 11 20 21", "RANGE 10 11 20 21");
        check(pos, "range 0 360 -90 90", "RANGE 0 360 -90 90");
    }

    #[test]
    fn pos_range_accepts_infinite_bounds() {
        let pos = Stencil::parse_pos;
        check(
            pos,
            "RANGE -inf +inf -Inf Infinity",
            "RANGE -Inf +Inf -Inf +Inf",
        );
        check(pos, "RANGE 10 inf -INF 5", "RANGE 10 +Inf -Inf 5");
    }

    #[test]
    fn range_with_decreasing_ra_wraps_through_zero() {
        let range = Stencil::parse_pos("RANGE 350 10 -5 5").unwrap();
        assert_eq!(range.to_string(), "RANGE 350 10 -5 5");
        for ra in [350.0, 355.0, 0.0, 359.999, 5.0, 10.0] {
            assert!(range.contains(ra, 0.0), "{ra}");
        }
        for ra in [349.9, 10.1, 180.0] {
            assert!(!range.contains(ra, 0.0), "{ra}");
        }
        assert!(!range.contains(0.0, 6.0));
        // The boundary runs east from 350 through 0 to 10, not west across the whole sky.
        let ras: Vec<f64> = range
            .boundary(0.1)
            .into_iter()
            .map(|v| sphere::ra_dec(v).0)
            .collect();
        assert!(ras.iter().all(|&ra| ra >= 349.99 || ra <= 10.01), "{ras:?}");
    }

    #[test]
    fn pos_rejects_bad_shapes_and_values() {
        let pos = Stencil::parse_pos;
        check(
            pos,
            "",
            "error: POS is empty: expected CIRCLE, POLYGON or RANGE",
        );
        check(
            pos,
            "BOX 1 2 3 4",
            "error: POS shape \"BOX\" not supported: expected CIRCLE, POLYGON or RANGE",
        );
        check(
            pos,
            "CIRCLE 1 2",
            "error: POS CIRCLE needs 3 numbers (ra dec radius), got 2",
        );
        check(
            pos,
            "CIRCLE 1 2 -1",
            "error: POS CIRCLE radius must be positive",
        );
        check(
            pos,
            "POLYGON 1 2 3 4",
            "error: POS POLYGON needs at least 3 vertices (6 numbers), got 2",
        );
        check(
            pos,
            "RANGE 1 2 3",
            "error: POS RANGE needs 4 numbers (ra1 ra2 dec1 dec2), got 3",
        );
        check(
            pos,
            "RANGE +inf 10 0 1",
            "error: POS RANGE longitude bounds +Inf 10 are reversed: need low <= high",
        );
        check(
            pos,
            "RANGE 10 20 1 0",
            "error: POS RANGE latitude bounds 1 0 are reversed: need low <= high",
        );
        check(
            pos,
            "RANGE 10 20 -95 0",
            "error: POS RANGE latitude -95 outside [-90, 90]",
        );
        check(
            pos,
            "RANGE +inf +inf 0 1",
            "error: POS RANGE longitude interval +Inf +Inf is empty",
        );
        check(
            pos,
            "RANGE nan 1 0 1",
            "error: POS RANGE values must be numbers, got NaN",
        );
    }

    #[test]
    fn canonical_form_parses_back_to_the_same_stencil() {
        for s in [
            "CIRCLE 10.5 -20 0.1",
            "POLYGON 10 10 11 10 11 11",
            "RANGE -Inf 5 0 +Inf",
        ] {
            let stencil = Stencil::parse_pos(s).unwrap();
            assert_eq!(Stencil::parse_pos(&stencil.to_string()).unwrap(), stencil);
        }
    }

    #[test]
    fn containment_follows_the_shape() {
        let circle = Stencil::parse_circle("359.9 0 0.5").unwrap();
        assert!(circle.contains(0.3, 0.1));
        assert!(!circle.contains(0.5, 0.0));
        let range = Stencil::parse_pos("RANGE 10 20 -inf +inf").unwrap();
        assert!(range.contains(15.0, 89.0));
        assert!(!range.contains(25.0, 0.0));
        let polygon = Stencil::parse_polygon("10 10 11 10 11 11 10 11").unwrap();
        assert!(polygon.contains(10.5, 10.5));
        assert!(!polygon.contains(9.5, 10.5));
    }

    #[test]
    fn a_parsed_stencil_gives_back_its_numbers() {
        let Stencil::Circle(circle) = Stencil::parse_circle("10.5 -20.25 0.5").unwrap() else {
            panic!("not a circle");
        };
        assert_eq!((circle.center(), circle.radius()), ((10.5, -20.25), 0.5));
        let Stencil::Polygon(polygon) = Stencil::parse_polygon("1 2 3 4.5 5 -6").unwrap() else {
            panic!("not a polygon");
        };
        assert_eq!(polygon.vertices(), [(1.0, 2.0), (3.0, 4.5), (5.0, -6.0)]);
        let Stencil::Range(range) = Stencil::parse_pos("RANGE 350 10.5 -inf 45").unwrap() else {
            panic!("not a range");
        };
        assert_eq!(range.ra(), (350.0, 10.5));
        assert_eq!(range.dec(), (f64::NEG_INFINITY, 45.0));
        assert!(Stencil::parse_sub("[1:2,3:4]").unwrap().is_pixels());
        assert!(!Stencil::Range(range).is_pixels());
    }
}

#[cfg(test)]
mod sampling_tests;
