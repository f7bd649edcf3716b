//! Pixel cutouts (`SUB`, as CADC takes them): a cfitsio image section, parsed and validated
//! once, for users who already know the pixels they want.
//!
//! The syntax is cfitsio's: `[x1:x2,y1:y2]`, optionally after an extension, `[SCI][x1:x2,y1:y2]`
//! (the `EXTNAME`, or the HDU number with 0 the primary); ranges are 1-based and inclusive, `*`
//! is the whole axis, and a third or fourth range cuts the axes beyond the celestial two (an
//! axis not given is kept whole). Only steps of 1 are cut: `x1:x2:1` is accepted, other steps
//! and reversed ranges (`x2:x1`, cfitsio's flip) are refused rather than served unflipped.

use std::fmt;

use crate::SodaError;

/// Most axes a section may name (FITS allows 999; images here have at most a handful).
const MAX_AXES: usize = 8;

/// A validated `SUB` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PixelSection {
    extension: Option<String>,
    /// Per axis, NAXIS1 first: the 1-based inclusive pixel range, `None` for the whole axis.
    ranges: Vec<Option<(usize, usize)>>,
}

impl PixelSection {
    /// Parses a `SUB` value: `[ext][x1:x2,y1:y2,...]` or `[x1:x2,y1:y2,...]`.
    pub fn parse(value: &str) -> Result<PixelSection, SodaError> {
        let bad = |why: &str| {
            SodaError::Usage(format!(
                "SUB {value:?} {why} (expected [x1:x2,y1:y2] or [EXTNAME][x1:x2,y1:y2], \
                 1-based inclusive pixel ranges)"
            ))
        };
        let mut groups = Vec::new();
        let mut rest = value.trim();
        while !rest.is_empty() {
            let Some(inner) = rest.strip_prefix('[') else {
                return Err(bad("is not made of [...] groups"));
            };
            let Some(end) = inner.find(']') else {
                return Err(bad("has an unclosed ["));
            };
            groups.push(inner[..end].trim());
            rest = inner[end + 1..].trim_start();
        }
        let (extension, axes) = match groups[..] {
            [axes] => (None, axes),
            [extension, axes] => (Some(extension), axes),
            _ => return Err(bad("needs one or two [...] groups")),
        };
        let extension = match extension {
            Some(e) if e.is_empty() || e.contains(',') => {
                return Err(bad("names an extension by EXTVER, which is not supported"));
            }
            Some(e) => Some(e.to_owned()),
            None => None,
        };
        let ranges = axes
            .split(',')
            .map(|axis| parse_range(axis.trim()).map_err(|why| bad(&why)))
            .collect::<Result<Vec<_>, _>>()?;
        if ranges.len() < 2 || ranges.len() > MAX_AXES {
            return Err(bad(&format!(
                "gives {} axes: 2 to {MAX_AXES} are needed",
                ranges.len()
            )));
        }
        Ok(PixelSection { extension, ranges })
    }

    /// The extension the section names, if any (an `EXTNAME`, or an HDU number).
    pub fn extension(&self) -> Option<&str> {
        self.extension.as_deref()
    }

    /// The 0-based pixel range of axis `axis` (0 for NAXIS1) of length `len`, clipped to the
    /// axis; `None` when the section lies wholly outside it.
    pub(crate) fn axis(&self, axis: usize, len: usize) -> Option<std::ops::Range<usize>> {
        match self.ranges.get(axis).copied().flatten() {
            None => (len > 0).then_some(0..len),
            Some((first, last)) => {
                let start = first - 1;
                let end = last.min(len);
                (start < end).then_some(start..end)
            }
        }
    }

    /// How many axes the section names.
    pub(crate) fn axes(&self) -> usize {
        self.ranges.len()
    }
}

/// One axis: `*`, `a:b` or `a:b:1`, with 1 <= a <= b.
fn parse_range(axis: &str) -> Result<Option<(usize, usize)>, String> {
    if axis == "*" {
        return Ok(None);
    }
    let parts: Vec<&str> = axis.split(':').map(str::trim).collect();
    let number = |s: &str| {
        s.parse::<usize>()
            .map_err(|_| format!("has {s:?}, not a pixel number"))
    };
    let (first, last) = match parts[..] {
        [a, b] => (number(a)?, number(b)?),
        [a, b, step] => {
            if number(step)? != 1 {
                return Err(format!("steps by {step}: only steps of 1 are cut"));
            }
            (number(a)?, number(b)?)
        }
        _ => return Err(format!("has the range {axis:?}")),
    };
    if first == 0 {
        return Err("starts at pixel 0: pixels count from 1".to_owned());
    }
    if first > last {
        return Err(format!(
            "has the reversed range {first}:{last}: flipping is not supported"
        ));
    }
    Ok(Some((first, last)))
}

impl fmt::Display for PixelSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(extension) = &self.extension {
            write!(f, "[{extension}]")?;
        }
        f.write_str("[")?;
        for (i, range) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match range {
                Some((first, last)) => write!(f, "{first}:{last}")?,
                None => f.write_str("*")?,
            }
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, &str>) {
        match (PixelSection::parse(input), expected) {
            (Ok(s), Ok(text)) => assert_eq!(s.to_string(), text, "{input}"),
            (Err(e), Err(part)) => assert!(e.to_string().contains(part), "{input}: {e}"),
            (got, expected) => panic!("{input}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn sections_take_ranges_whole_axes_and_an_extension() {
        check("[10:20,30:45]", Ok("[10:20,30:45]"));
        check(" [ 10:20 , * ] ", Ok("[10:20,*]"));
        check("[SCI][1:5,1:5,2:3]", Ok("[SCI][1:5,1:5,2:3]"));
        check("[1][1:5:1,7:7]", Ok("[1][1:5,7:7]"));
    }

    #[test]
    fn strides_flips_and_malformed_sections_are_usage_errors() {
        check("[1:10:2,1:10]", Err("only steps of 1"));
        check("[10:1,1:10]", Err("flipping is not supported"));
        check("[0:10,1:10]", Err("count from 1"));
        check("[1:10]", Err("2 to 8 are needed"));
        check("1:10,1:10", Err("[...] groups"));
        check("[1:10,1:10", Err("unclosed"));
        check("[SCI,2][1:10,1:10]", Err("EXTVER"));
        check("[a][b][1:2,1:2]", Err("one or two"));
        check("[1:x,1:2]", Err("not a pixel number"));
        check("[-1:2,1:2]", Err("not a pixel number"));
        check("", Err("one or two"));
    }

    #[test]
    fn axes_are_clipped_to_the_image() {
        let s = PixelSection::parse("[5:300,*,2:2]").unwrap();
        assert_eq!(s.axis(0, 100), Some(4..100));
        assert_eq!(s.axis(1, 50), Some(0..50));
        assert_eq!(s.axis(2, 6), Some(1..2));
        assert_eq!(s.axis(3, 4), Some(0..4));
        assert_eq!(s.axis(0, 3), None);
    }
}
