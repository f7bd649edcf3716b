//! One formatter and one parser for every instant the service writes or reads.
//!
//! UWS clients compare timestamps as strings and astropy rejects offsets, so every instant goes
//! out as UTC `YYYY-MM-DDThh:mm:ss.sssZ`; incoming values (DESTRUCTION, AFTER) are accepted in
//! every DALI 1.1 timestamp form: a date alone (midnight UTC), minutes, seconds, or seconds with
//! 1 to 9 fractional digits, with or without the `Z`.

use time::format_description::FormatItem;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::error::UwsError;

const OUT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
const IN: &[FormatItem<'static>] = format_description!(
    "[year]-[month]-[day]T[hour]:[minute][optional [:[second][optional [.[subsecond digits:1+]]]]]"
);
const DATE: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// Formats an instant as UWS wants it (UTC, millisecond precision, `Z`).
pub fn format(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(OUT)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000Z"))
}

/// Parses a DALI 1.1 timestamp (ISO 8601 in UTC) as clients send it: `YYYY-MM-DD` alone is
/// midnight UTC of that day; otherwise `YYYY-MM-DDThh:mm[:ss[.fff]]`; the `Z` is optional.
pub fn parse(s: &str) -> Result<OffsetDateTime, UwsError> {
    let trimmed = s.trim();
    let body = trimmed.strip_suffix('Z').unwrap_or(trimmed);
    let parsed = if body.contains('T') {
        PrimitiveDateTime::parse(body, IN)
    } else {
        Date::parse(body, DATE).map(Date::midnight)
    };
    parsed.map(PrimitiveDateTime::assume_utc).map_err(|_| {
        UwsError::Usage(format!(
            "{s:?} is not a DALI timestamp (expected YYYY-MM-DD[Thh:mm[:ss[.fff]]][Z] in UTC)"
        ))
    })
}

/// Microseconds since the Unix epoch: how stores keep instants, exact and sortable.
pub fn to_micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

pub fn from_micros(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The current time, truncated to the milliseconds that [`format`] shows, so that a client who
/// sends back an instant it read (`AFTER=<creationTime>`) compares exactly against what is stored.
pub fn now() -> OffsetDateTime {
    let us = to_micros(OffsetDateTime::now_utc());
    from_micros(us - us.rem_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        let parsed = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(format(parsed), expected, "input {input}");
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds_and_z() {
        check("2026-11-29T10:00:00Z", "2026-11-29T10:00:00.000Z");
        check("2026-11-29T10:00:00", "2026-11-29T10:00:00.000Z");
        check("2026-11-29T10:00:00.5Z", "2026-11-29T10:00:00.500Z");
        check("2026-11-29T10:00:00.123456789Z", "2026-11-29T10:00:00.123Z");
        check("2026-11-29T10:00:00.123456", "2026-11-29T10:00:00.123Z");
    }

    #[test]
    fn every_dali_timestamp_form_is_accepted() {
        check("2015-10-26", "2015-10-26T00:00:00.000Z");
        check("2015-10-26Z", "2015-10-26T00:00:00.000Z");
        check("2015-10-26T09:00", "2015-10-26T09:00:00.000Z");
        check("2015-10-26T09:07Z", "2015-10-26T09:07:00.000Z");
        check("2015-10-26T09:07:05", "2015-10-26T09:07:05.000Z");
        check(" 2015-10-26T09:07:05.25Z ", "2015-10-26T09:07:05.250Z");
    }

    #[test]
    fn malformed_timestamps_are_usage_errors() {
        for bad in [
            "",
            "tomorrow",
            "2026-11-29T",
            "2026-11-29T10",
            "2026-11-29T10:00:",
            "2026-11-29T10:00:00.",
            "2026-11-29T10:00:00+01:00",
            "2026-11-29 10:00:00",
            "2026-02-30",
            "Z",
            "2026-13-01T00:00:00",
        ] {
            assert!(matches!(parse(bad), Err(UwsError::Usage(_))), "{bad:?}");
        }
    }

    #[test]
    fn micros_round_trip() {
        let t = now();
        assert_eq!(from_micros(to_micros(t)), t);
    }
}
