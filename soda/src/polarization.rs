//! The polarization axis of a cube (`CTYPEn = 'STOKES'`) and SODA's `POL` on it: Stokes and
//! correlation names become the FITS codes of WCS Paper I (Table 7), and a set of them the planes
//! to keep.
//!
//! A FITS axis is linear, so a cutout cannot hold planes 1 and 3 without plane 2: the planes
//! kept are the span from the first selected plane to the last, in axis order (`POL=I` and
//! `POL=V` on an `I Q U V` cube keeps all four; `POL=Q` and `POL=U` keeps `Q U`). The planes
//! between two selected ones are kept rather than the selection refused, as a cutout's
//! rectangle holds pixels outside its circle.

use std::ops::Range;

use crate::SodaError;
use crate::axis::{LinearAxis, typed_axes};
use crate::header::WcsKeywords;

/// The `POL` names SODA takes (ObsCore's `pol_states` vocabulary) with their FITS Stokes codes.
pub const STOKES: [(&str, i32); 12] = [
    ("I", 1),
    ("Q", 2),
    ("U", 3),
    ("V", 4),
    ("RR", -1),
    ("LL", -2),
    ("RL", -3),
    ("LR", -4),
    ("XX", -5),
    ("YY", -6),
    ("XY", -7),
    ("YX", -8),
];

/// The FITS code of a `POL` name (case-insensitive), or a `UsageError` naming the valid ones.
pub fn stokes_code(name: &str) -> Result<i32, SodaError> {
    let name = name.trim();
    STOKES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, code)| code)
        .ok_or_else(|| {
            let names: Vec<&str> = STOKES.iter().map(|(n, _)| *n).collect();
            SodaError::Usage(format!(
                "POL {name:?} is not a polarization state with a FITS Stokes code (one of {})",
                names.join(", ")
            ))
        })
}

/// The `POL` name of a FITS Stokes code.
fn stokes_name(code: i32) -> Option<&'static str> {
    STOKES.iter().find(|(_, c)| *c == code).map(|(n, _)| *n)
}

/// The Stokes axis among the axes beyond the first two (`extra` holds their lengths, NAXIS3
/// first), its values the FITS codes; `None` if there is none.
pub(crate) fn stokes_axis(
    keywords: &WcsKeywords,
    extra: &[usize],
) -> Result<Option<LinearAxis>, SodaError> {
    typed_axes(keywords, extra)
        .find(|(_, _, ctype)| ctype.eq_ignore_ascii_case("STOKES"))
        .map(|(extra_index, len, _)| LinearAxis::read(keywords, extra_index, len, 1.0, 0.0))
        .transpose()
}

/// The code each plane of a Stokes axis holds (codes are integers; a value off by rounding
/// is still its code).
fn codes(axis: &LinearAxis) -> impl Iterator<Item = i32> + '_ {
    (0..axis.len).map(|plane| axis.value(plane).round() as i32)
}

/// The planes to keep for the codes `wanted`: from the first plane holding one of them to the
/// last, or `None` if no plane holds any.
pub(crate) fn planes(axis: &LinearAxis, wanted: &[i32]) -> Option<Range<usize>> {
    let held: Vec<usize> = codes(axis)
        .enumerate()
        .filter(|(_, code)| wanted.contains(code))
        .map(|(plane, _)| plane)
        .collect();
    Some(*held.first()?..*held.last()? + 1)
}

/// The `POL` names of the planes of a Stokes axis, in axis order (codes with no name left out).
pub(crate) fn names(axis: &LinearAxis) -> Vec<&'static str> {
    codes(axis).filter_map(stokes_name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Value;

    fn axis(crval: f64, cdelt: f64, len: usize) -> LinearAxis {
        let keywords = WcsKeywords {
            entries: vec![
                ("CTYPE3".to_owned(), Value::Text("WAVE".to_owned())),
                ("CTYPE4".to_owned(), Value::Text("STOKES".to_owned())),
                ("CRVAL4".to_owned(), Value::Real(crval)),
                ("CDELT4".to_owned(), Value::Real(cdelt)),
                ("CRPIX4".to_owned(), Value::Real(1.0)),
            ],
        };
        stokes_axis(&keywords, &[3, len]).unwrap().unwrap()
    }

    #[test]
    fn names_are_the_fits_stokes_codes() {
        assert_eq!(stokes_code("i").unwrap(), 1);
        assert_eq!(stokes_code("V").unwrap(), 4);
        assert_eq!(stokes_code("RR").unwrap(), -1);
        assert_eq!(stokes_code("YX").unwrap(), -8);
        let e = stokes_code("POLI").unwrap_err().to_string();
        assert!(e.contains("POLI") && e.contains("I, Q, U, V, RR"), "{e}");
    }

    #[test]
    fn pol_keeps_the_span_of_the_selected_planes_in_axis_order() {
        let iquv = axis(1.0, 1.0, 4);
        assert_eq!(names(&iquv), ["I", "Q", "U", "V"]);
        assert_eq!(planes(&iquv, &[1]), Some(0..1));
        assert_eq!(planes(&iquv, &[3, 2]), Some(1..3));
        assert_eq!(planes(&iquv, &[4, 1]), Some(0..4));
        assert_eq!(planes(&iquv, &[-1]), None);
        // RR LL RL LR: codes -1 to -4, decreasing.
        let circular = axis(-1.0, -1.0, 4);
        assert_eq!(names(&circular), ["RR", "LL", "RL", "LR"]);
        assert_eq!(planes(&circular, &[-2, -3]), Some(1..3));
    }

    #[test]
    fn an_image_without_stokes_axis_has_none() {
        let keywords = WcsKeywords {
            entries: vec![("CTYPE3".to_owned(), Value::Text("WAVE".to_owned()))],
        };
        assert_eq!(stokes_axis(&keywords, &[3]), Ok(None));
    }
}
