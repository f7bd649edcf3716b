//! The SODA working draft's `MOC` stencil: a HEALPix Multi-Order Coverage map in the IVOA ASCII
//! MOC syntax (`3/1-3 5 4/80`), parsed by CDS's `moc` crate.
//!
//! A MOC is a union of HEALPix cells of several depths, so it is located on an image cell by
//! cell: each cell near the image becomes a polygon (its curved edges sampled finely enough to
//! stay within a small fraction of a cell of the true edge) that `region::pixel_box` locates
//! like a `POLYGON`, and the cutout is the rectangle covering all of them. Whether a position is
//! inside is exact: its cell at the MOC's deepest depth is looked up among the MOC's ranges.

use std::fmt;
use std::ops::Range;

use cdshealpix::compass_point::Cardinal;
use moc::deser::ascii::from_ascii_ivoa;
use moc::moc::{CellOrCellRangeMOCIntoIterator, CellOrCellRangeMOCIterator, HasMaxDepth};
use moc::qty::Hpx;

use crate::SodaError;

/// The depth of the ranges a MOC is kept as (the `moc` crate's deepest HEALPix depth for u64).
const DEPTH: u8 = 29;

/// Most cells a `MOC` value may have once normalised: each is located on the image as a polygon.
pub const MAX_MOC_CELLS: usize = 10_000;

/// A parsed, normalised MOC.
#[derive(Debug, Clone, PartialEq)]
pub struct Moc {
    /// The depth the value declared (the deepest of its cells, or more).
    depth_max: u8,
    /// Sorted, disjoint ranges of cell indices at [`DEPTH`].
    ranges: Vec<Range<u64>>,
}

impl Moc {
    /// Parses an ASCII MOC; an empty one, or one of more than [`MAX_MOC_CELLS`] cells, is a
    /// `UsageError`.
    pub fn parse(value: &str) -> Result<Moc, SodaError> {
        let bad = |why: String| {
            SodaError::Usage(format!(
                "MOC {:?} is not an ASCII MOC (e.g. 3/1-3 5 4/80): {why}",
                short(value)
            ))
        };
        check_numbers(value).map_err(bad)?;
        // The parser's arithmetic is checked above; should it still panic on some input, the
        // input is refused rather than the request thread lost.
        let parsed = std::panic::catch_unwind(|| from_ascii_ivoa::<u64, Hpx<u64>>(value.trim()))
            .map_err(|_| bad("the parser could not read it".to_owned()))?
            .map_err(|e| bad(e.to_string()))?;
        let ranges = parsed.into_cellcellrange_moc_iter().ranges();
        let depth_max = ranges.depth_max();
        let moc = Moc {
            depth_max,
            ranges: ranges.collect(),
        };
        let cells = moc.cells().count();
        if cells == 0 {
            return Err(SodaError::usage("MOC covers no cell"));
        }
        if cells > MAX_MOC_CELLS {
            return Err(SodaError::Usage(format!(
                "MOC has {cells} cells; at most {MAX_MOC_CELLS} (degrade it to a smaller depth)"
            )));
        }
        Ok(moc)
    }

    /// The largest cells the MOC is made of, as (depth, index).
    pub fn cells(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        self.ranges.iter().flat_map(|range| {
            let mut start = range.start;
            std::iter::from_fn(move || {
                if start >= range.end {
                    return None;
                }
                // The shallowest depth whose cell starts here and fits in what is left.
                let depth = (0..=DEPTH)
                    .find(|&d| {
                        let size = 1u64 << (2 * u32::from(DEPTH - d));
                        start % size == 0 && start + size <= range.end
                    })
                    .unwrap_or(DEPTH);
                let shift = 2 * u32::from(DEPTH - depth);
                let cell = (depth, start >> shift);
                start += 1u64 << shift;
                Some(cell)
            })
        })
    }

    /// Whether the sky position is in one of the MOC's cells.
    pub(crate) fn contains(&self, ra_deg: f64, dec_deg: f64) -> bool {
        let hash =
            cdshealpix::nested::hash(self.depth_max, ra_deg.to_radians(), dec_deg.to_radians())
                << (2 * u32::from(DEPTH - self.depth_max));
        let i = self.ranges.partition_point(|r| r.end <= hash);
        self.ranges.get(i).is_some_and(|r| r.start <= hash)
    }

    /// The outline of a cell as (RA, Dec) degrees, counter-clockwise from its south vertex, each
    /// curved edge split into pieces short enough to be taken as great-circle arcs.
    pub(crate) fn cell_outline(depth: u8, index: u64) -> Vec<(f64, f64)> {
        let pieces = (256u32 >> depth.min(8)).clamp(4, 64);
        cdshealpix::nested::path_along_cell_edge(depth, index, &Cardinal::S, false, pieces)
            .iter()
            .map(|&(lon, lat)| (lon.to_degrees().rem_euclid(360.0), lat.to_degrees()))
            .collect()
    }

    /// The centre of a cell (RA, Dec degrees) and the largest distance from it to the cell's
    /// edge (degrees).
    pub(crate) fn cell_circle(depth: u8, index: u64) -> ((f64, f64), f64) {
        let (lon, lat) = cdshealpix::nested::center(depth, index);
        let radius = cdshealpix::largest_center_to_vertex_distance(depth, lon, lat);
        (
            (lon.to_degrees().rem_euclid(360.0), lat.to_degrees()),
            radius.to_degrees(),
        )
    }
}

impl fmt::Display for Moc {
    /// The ASCII MOC of the normalised cells, depth by depth, ending with the declared depth
    /// when no cell has it (`3/1 2 4/80 6/`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cells: Vec<(u8, u64)> = self.cells().collect();
        cells.sort_unstable();
        let mut depth = None;
        for (d, index) in &cells {
            if depth != Some(*d) {
                if depth.is_some() {
                    f.write_str(" ")?;
                }
                write!(f, "{d}/{index}")?;
                depth = Some(*d);
            } else {
                write!(f, " {index}")?;
            }
        }
        if depth != Some(self.depth_max) {
            write!(f, " {}/", self.depth_max)?;
        }
        Ok(())
    }
}

/// Checks every number of an ASCII MOC before the `moc` parser sees it (which shifts cell
/// indices without checking them): a depth (a number before `/`) at most [`DEPTH`], and every
/// index below the 12 * 4^depth cells of its depth, every range `a-b` with `a <= b`.
fn check_numbers(value: &str) -> Result<(), String> {
    let mut depth: u32 = 0;
    let mut range_start = None;
    let mut chars = value.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if !c.is_ascii_digit() {
            continue;
        }
        let mut end = start + 1;
        while let Some(&(i, d)) = chars.peek() {
            if !d.is_ascii_digit() {
                break;
            }
            end = i + 1;
            chars.next();
        }
        let digits = &value[start..end];
        let number = digits.parse::<u64>().unwrap_or(u64::MAX);
        if chars.peek().is_some_and(|&(_, c)| c == '/') {
            if number > u64::from(DEPTH) {
                return Err(format!("depth {digits} is deeper than {DEPTH}"));
            }
            depth = number as u32;
            range_start = None;
            continue;
        }
        if number >= 12u64 << (2 * depth) {
            return Err(format!("cell {digits} does not exist at depth {depth}"));
        }
        // The parser would keep a backward range `b-a` as an empty range that no text writes.
        if let Some(first) = range_start.take()
            && number < first
        {
            return Err(format!("range {first}-{digits} runs backwards"));
        }
        if chars.peek().is_some_and(|&(_, c)| c == '-') {
            range_start = Some(number);
        }
    }
    Ok(())
}

/// The start of a long value, for an error message.
fn short(value: &str) -> String {
    value.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ascii_moc_parses_into_its_largest_cells() {
        let moc = Moc::parse("3/1-3 5 4/80 81 82 83").unwrap();
        // 4/80-83 are the four children of 3/20.
        let cells: Vec<(u8, u64)> = moc.cells().collect();
        assert_eq!(cells, [(3, 1), (3, 2), (3, 3), (3, 5), (3, 20)]);
        assert_eq!(moc.to_string(), "3/1 2 3 5 20 4/");
        assert_eq!(Moc::parse(&moc.to_string()).unwrap(), moc);
    }

    #[test]
    fn a_backward_range_is_a_usage_error() {
        // Found by the soda_request fuzz target: the parser kept it as a range that printed as
        // nothing, so the stencil did not read back as itself.
        let error = Moc::parse("13/1234367 15/4938300-4934302").unwrap_err();
        assert!(
            matches!(&error, SodaError::Usage(m) if m.contains("runs backwards")),
            "{error:?}"
        );
        assert!(Moc::parse("15/4934302-4938300").is_ok());
        assert!(Moc::parse("15/7-7").is_ok());
    }

    #[test]
    fn a_position_is_inside_when_its_cell_is() {
        let moc = Moc::parse("6/1000 8/20000").unwrap();
        for (depth, index) in [(6, 1000), (8, 20000)] {
            let ((ra, dec), _) = Moc::cell_circle(depth, index);
            assert!(moc.contains(ra, dec), "{depth}/{index}");
        }
        let ((ra, dec), _) = Moc::cell_circle(6, 1001);
        assert!(!moc.contains(ra, dec));
    }

    #[test]
    fn bad_or_empty_mocs_are_usage_errors() {
        for bad in [
            "",
            "3/",
            "hello",
            "3/1-",
            "40/1",
            "30/1",
            "0/12",
            "0/3-99999999999999999999999",
            "1/3+4611686018427387904",
            "29/",
        ] {
            assert!(
                matches!(Moc::parse(bad), Err(SodaError::Usage(_))),
                "{bad:?}: {:?}",
                Moc::parse(bad)
            );
        }
        let many: Vec<String> = (0..=MAX_MOC_CELLS as u64)
            .map(|i| (2 * i).to_string())
            .collect();
        let e = Moc::parse(&format!("12/{}", many.join(" "))).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
    }

    #[test]
    fn a_cell_outline_runs_round_its_vertices() {
        let outline = Moc::cell_outline(5, 4000);
        assert!(outline.len() >= 16);
        let ((ra, dec), radius) = Moc::cell_circle(5, 4000);
        let centre = crate::sphere::unit_vector(ra, dec);
        for &(r, d) in &outline {
            let distance = crate::sphere::separation_deg(centre, crate::sphere::unit_vector(r, d));
            assert!(distance <= radius + 1e-9, "{distance} > {radius}");
        }
    }
}
