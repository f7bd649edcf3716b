//! Time and SODA's `TIME`: a cube's time axis (FITS WCS Paper VII) cut like the spectral one, and
//! the observation interval of an image without one, which `TIME` keeps or rejects whole.
//!
//! Values are MJD (days). A time axis is a linear axis whose `CTYPEn` is a time scale (`TIME`,
//! `UTC`, `TAI`, `TT`, ...: values relative to `MJDREF`, in `CUNITn`, seconds by default) or
//! `MJD` / `JD` (the date itself, in days). The observation interval of an image is read as the
//! sky index reads it (`image::observation_time`: `MJD-BEG`/`DATE-BEG` to `MJD-END`/`DATE-END`,
//! else `MJD-OBS`/`DATE-OBS` plus `EXPTIME`).

use crate::SodaError;
use crate::axis::{LinearAxis, typed_axes};
use crate::header::WcsKeywords;

/// The `CTYPEn` of a time axis whose values are relative to `MJDREF` (Paper VII, Table 2).
const TIME_SCALES: [&str; 14] = [
    "TIME", "TAI", "TT", "TDT", "ET", "IAT", "UT1", "UTC", "GMT", "GPS", "TCG", "TCB", "TDB",
    "LOCAL",
];

/// Seconds per day, for EXPTIME.
pub(crate) const SECONDS_PER_DAY: f64 = 86_400.0;

/// Days from the JD zero point to the MJD one.
const JD_MINUS_MJD: f64 = 2_400_000.5;

/// The time axis (values in MJD) among the axes beyond the first two (`extra` holds their
/// lengths, NAXIS3 first), `None` if there is none, an error if its unit is not a time unit.
pub(crate) fn time_axis(
    keywords: &WcsKeywords,
    extra: &[usize],
) -> Result<Option<LinearAxis>, SodaError> {
    for (extra_index, len, ctype) in typed_axes(keywords, extra) {
        let n = extra_index + 3;
        let ctype = ctype.to_ascii_uppercase();
        let (default_unit, reference) = match ctype.as_str() {
            "MJD" => ("d", 0.0),
            "JD" => ("d", -JD_MINUS_MJD),
            scale if TIME_SCALES.contains(&scale) => ("s", reference_mjd(keywords)),
            _ => continue,
        };
        let unit = keywords
            .text(&format!("CUNIT{n}"))
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .unwrap_or(default_unit);
        let days = unit_in_days(unit).ok_or_else(|| {
            SodaError::BadImage(format!("time axis {n} has unit {unit:?}, not a time unit"))
        })?;
        return LinearAxis::read(keywords, extra_index, len, days, reference).map(Some);
    }
    Ok(None)
}

/// The MJD that the values of a time-scale axis count from: `MJDREF`, or `MJDREFI` +
/// `MJDREFF`, else 0 (Paper VII's default).
fn reference_mjd(keywords: &WcsKeywords) -> f64 {
    keywords.real("MJDREF").unwrap_or_else(|| {
        keywords.real("MJDREFI").unwrap_or(0.0) + keywords.real("MJDREFF").unwrap_or(0.0)
    })
}

/// Days per unit of a FITS time unit.
fn unit_in_days(unit: &str) -> Option<f64> {
    Some(match unit {
        "s" => 1.0 / 86_400.0,
        "min" => 1.0 / 1_440.0,
        "h" => 1.0 / 24.0,
        "d" => 1.0,
        // The Julian year, as Paper VII defines `a` and `yr`.
        "a" | "yr" => 365.25,
        _ => return None,
    })
}

/// Whether an observation interval (MJD) meets the `TIME` interval asked for (bounds included).
pub(crate) fn overlaps((begin, end): (f64, f64), (lo, hi): (f64, f64)) -> bool {
    begin <= hi && end >= lo
}

/// `YYYY-MM-DD[Thh:mm:ss[.s…]]` (UTC or TAI, not told apart at this resolution) as MJD.
pub fn iso_to_mjd(text: &str) -> Option<f64> {
    let (date, time) = text.split_once('T').unwrap_or((text, ""));
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut seconds = 0.0;
    if !time.is_empty() {
        let time = time.trim_end_matches('Z');
        let mut fields = time.splitn(3, ':');
        let h: f64 = fields.next()?.parse().ok()?;
        let m: f64 = fields.next().unwrap_or("0").parse().ok()?;
        let s: f64 = fields.next().unwrap_or("0").parse().ok()?;
        if !(0.0..24.0).contains(&h) || !(0.0..60.0).contains(&m) || !(0.0..61.0).contains(&s) {
            return None;
        }
        seconds = h * 3600.0 + m * 60.0 + s;
    }
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil); MJD 40587 is 1970-01-01.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 + 40_587.0 + seconds / SECONDS_PER_DAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Value;

    fn keywords(entries: &[(&str, Value)]) -> WcsKeywords {
        WcsKeywords {
            entries: entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        }
    }

    fn text(v: &str) -> Value {
        Value::Text(v.to_owned())
    }

    #[test]
    fn a_time_axis_in_seconds_from_mjdref_selects_planes_by_mjd() {
        // Planes 0..5, one hour apart, the first at MJD 60000.
        let k = keywords(&[
            ("CTYPE3", text("STOKES")),
            ("CTYPE4", text("TIME")),
            ("CRVAL4", Value::Real(0.0)),
            ("CDELT4", Value::Real(3600.0)),
            ("CRPIX4", Value::Real(1.0)),
            ("MJDREF", Value::Real(60000.0)),
        ]);
        let axis = time_axis(&k, &[4, 5]).unwrap().unwrap();
        assert_eq!(axis.extra_index, 1);
        let hour = 1.0 / 24.0;
        assert_eq!(
            axis.planes((60000.0 + hour, 60000.0 + 2.5 * hour)),
            Some(1..3)
        );
        assert_eq!(axis.planes((f64::NEG_INFINITY, 60000.0)), Some(0..1));
        assert_eq!(axis.planes((60001.0, f64::INFINITY)), None);
        let (lo, hi) = axis.range();
        assert!((lo - (60000.0 - hour / 2.0)).abs() < 1e-9, "{lo}");
        assert!((hi - (60000.0 + 4.5 * hour)).abs() < 1e-9, "{hi}");
    }

    #[test]
    fn mjd_and_jd_axes_are_dates_in_days() {
        let mjd = keywords(&[
            ("CTYPE3", text("MJD")),
            ("CRVAL3", Value::Real(59000.0)),
            ("CDELT3", Value::Real(1.0)),
            ("CRPIX3", Value::Real(1.0)),
        ]);
        let axis = time_axis(&mjd, &[3]).unwrap().unwrap();
        assert_eq!(axis.planes((59001.0, 59001.0)), Some(1..2));
        let jd = keywords(&[
            ("CTYPE3", text("JD")),
            ("CRVAL3", Value::Real(2459000.5)),
            ("CDELT3", Value::Real(1.0)),
            ("CRPIX3", Value::Real(1.0)),
        ]);
        let axis = time_axis(&jd, &[3]).unwrap().unwrap();
        assert_eq!(axis.planes((59002.0, 59010.0)), Some(2..3));
    }

    #[test]
    fn no_time_axis_or_a_bad_unit() {
        let wave = keywords(&[("CTYPE3", text("WAVE"))]);
        assert_eq!(time_axis(&wave, &[3]), Ok(None));
        let furlong = keywords(&[("CTYPE3", text("UTC")), ("CUNIT3", text("furlong"))]);
        assert!(time_axis(&furlong, &[3]).is_err());
    }

    #[test]
    fn intervals_overlap_when_they_share_an_instant() {
        assert!(overlaps((1.0, 2.0), (2.0, 3.0)));
        assert!(overlaps((1.0, 2.0), (f64::NEG_INFINITY, f64::INFINITY)));
        assert!(!overlaps((1.0, 2.0), (2.5, 3.0)));
        assert!(!overlaps((1.0, 2.0), (0.0, 0.5)));
    }
}
