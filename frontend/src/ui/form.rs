//! The web page's cutout form: what a person types (an image ID, a position in degrees or
//! sexagesimal, a radius in arcseconds, a format, MASK) turned into the SODA parameters that
//! `/sync` and `/jobs` take, so that the page runs exactly the request the API would.
//!
//! The form keeps the text as typed, so a refused request shows the form again as it was.

use uws::Parameters;

use crate::error::FrontendError;

/// Whether the form asks for the cutout now (and its preview) or as a UWS job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sync,
    Async,
}

/// The output the form asks for: FITS alone, or FITS with a PNG or JPEG preview.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Fits,
    Png,
    Jpeg,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Fits, Format::Png, Format::Jpeg];

    /// The form value (and label).
    pub fn name(self) -> &'static str {
        match self {
            Format::Fits => "FITS",
            Format::Png => "PNG",
            Format::Jpeg => "JPEG",
        }
    }
}

/// The form as submitted (or as first shown), values as typed.
#[derive(Debug, Clone)]
pub struct CutoutForm {
    /// `butler://REPOSITORY/NAME`; empty asks for every indexed image that covers the position.
    pub id: String,
    /// Degrees, or sexagesimal hours (`10:00:24.5`, `10h00m24.5s`).
    pub ra: String,
    /// Degrees, or sexagesimal degrees (`-02:12:30`, `-2d12m30s`).
    pub dec: String,
    /// Arcseconds.
    pub radius: String,
    pub format: Format,
    pub mask: bool,
    /// The job's UWS `RUNID` (async only).
    pub run_id: String,
    /// Whether a job starts at once (`PHASE=RUN`) or waits, PENDING, for its Run button.
    pub run: bool,
    pub mode: Mode,
}

impl CutoutForm {
    /// A form filled in with a position inside the image `id`, when one is known.
    pub fn initial(id: Option<&str>, center: Option<(f64, f64)>) -> CutoutForm {
        let (ra, dec) = center.map_or_else(Default::default, |(ra, dec)| {
            (format!("{ra:.5}"), format!("{dec:.5}"))
        });
        CutoutForm {
            id: id.unwrap_or_default().to_owned(),
            ra,
            dec,
            radius: "60".to_owned(),
            format: Format::Png,
            mask: false,
            run_id: String::new(),
            run: true,
            mode: Mode::Sync,
        }
    }

    /// The form's fields from a submitted request (names as the page writes them).
    pub fn from_parameters(params: &Parameters) -> CutoutForm {
        let text = |name: &str| params.first(name).unwrap_or_default().trim().to_owned();
        let format = match text("FORMAT").to_ascii_uppercase().as_str() {
            "PNG" => Format::Png,
            "JPEG" => Format::Jpeg,
            _ => Format::Fits,
        };
        CutoutForm {
            id: text("ID"),
            ra: text("RA"),
            dec: text("DEC"),
            radius: text("RADIUS"),
            format,
            mask: params.first("MASK").is_some_and(|v| v == "true"),
            run_id: text("RUNID"),
            run: params.first("RUN").is_some_and(|v| v == "true"),
            mode: match text("MODE").as_str() {
                "async" => Mode::Async,
                _ => Mode::Sync,
            },
        }
    }

    /// The SODA (and UWS) parameters of this form. A synchronous request always asks for a
    /// preview (JPEG if chosen, else PNG), which the page shows beside the FITS link; a job
    /// asks for the chosen format, and starts at once if the form says so.
    pub fn to_parameters(&self) -> Result<Parameters, FrontendError> {
        let ra = parse_ra(&self.ra).map_err(FrontendError::Usage)?;
        let dec = parse_dec(&self.dec).map_err(FrontendError::Usage)?;
        let radius = self
            .radius
            .parse::<f64>()
            .ok()
            .filter(|r| r.is_finite() && *r > 0.0)
            .ok_or_else(|| {
                FrontendError::Usage(format!(
                    "the radius must be a positive number of arcseconds, got {:?}",
                    self.radius
                ))
            })?;
        let mut params = Parameters::new();
        if !self.id.is_empty() {
            params.push("ID", &self.id);
        }
        params.push("CIRCLE", &format!("{ra} {dec} {}", radius / 3600.0));
        let preview = match (self.mode, self.format) {
            (_, Format::Jpeg) => Some(soda::preview::JPEG),
            (Mode::Sync, _) | (Mode::Async, Format::Png) => Some(soda::preview::PNG),
            (Mode::Async, Format::Fits) => None,
        };
        if let Some(preview) = preview {
            params.push("RESPONSEFORMAT", preview);
        }
        if self.mask {
            params.push("MASK", "true");
        }
        if self.mode == Mode::Async {
            if !self.run_id.is_empty() {
                params.push("RUNID", &self.run_id);
            }
            if self.run {
                params.push("PHASE", "RUN");
            }
        }
        Ok(params)
    }
}

/// Right ascension in degrees: decimal degrees, or sexagesimal hours (`10:00:24.5`,
/// `10h00m24.5s`, `10 00 24.5`).
pub fn parse_ra(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let bad = |why: &str| format!("RA {text:?} {why}: give degrees (150.1) or hours (10:00:24)");
    let degrees =
        match sexagesimal(text, &['h', 'm', 's', ':']).map_err(|()| bad("is not a number"))? {
            Sexagesimal::Decimal(d) => d,
            Sexagesimal::Parts(negative, h, m, s) => {
                if negative || h >= 24.0 {
                    return Err(bad("is not between 0h and 24h"));
                }
                15.0 * (h + m / 60.0 + s / 3600.0)
            }
        };
    if !(0.0..360.0).contains(&degrees) {
        return Err(bad("is not between 0 and 360 degrees"));
    }
    Ok(degrees)
}

/// Declination in degrees: decimal degrees, or sexagesimal degrees (`-02:12:30`, `-2d12m30s`,
/// `-2 12 30`).
pub fn parse_dec(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let bad = |why: &str| {
        format!("Dec {text:?} {why}: give degrees (-2.2) or degrees, minutes, seconds (-02:12:30)")
    };
    let degrees = match sexagesimal(text, &['d', '°', 'm', '\'', 's', '"', ':'])
        .map_err(|()| bad("is not a number"))?
    {
        Sexagesimal::Decimal(d) => d,
        Sexagesimal::Parts(negative, d, m, s) => {
            let value = d + m / 60.0 + s / 3600.0;
            if negative { -value } else { value }
        }
    };
    if !(-90.0..=90.0).contains(&degrees) {
        return Err(bad("is not between -90 and 90 degrees"));
    }
    Ok(degrees)
}

enum Sexagesimal {
    Decimal(f64),
    /// Sign, then the whole units, minutes and seconds (each non-negative).
    Parts(bool, f64, f64, f64),
}

/// A decimal number, or one to three fields separated by whitespace or `separators`, the sign
/// on the first; minutes and seconds must be below 60.
fn sexagesimal(text: &str, separators: &[char]) -> Result<Sexagesimal, ()> {
    let number = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or(());
    let fields: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || separators.contains(&c))
        .filter(|f| !f.is_empty())
        .collect();
    if fields.len() == 1 && !text.contains(|c: char| separators.contains(&c)) {
        return number(fields[0]).map(Sexagesimal::Decimal);
    }
    if fields.is_empty() || fields.len() > 3 {
        return Err(());
    }
    let negative = fields[0].starts_with('-');
    let whole = number(fields[0].trim_start_matches(['-', '+']))?;
    let minutes = fields.get(1).map_or(Ok(0.0), |f| number(f))?;
    let seconds = fields.get(2).map_or(Ok(0.0), |f| number(f))?;
    let below_60 = |v: f64| (0.0..60.0).contains(&v);
    if whole < 0.0 || !below_60(minutes) || !below_60(seconds) {
        return Err(());
    }
    Ok(Sexagesimal::Parts(negative, whole, minutes, seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn right_ascension_reads_degrees_and_sexagesimal_hours() {
        for (text, degrees) in [
            ("150.1", 150.1),
            ("10:00:00", 150.0),
            ("10h00m24s", 150.1),
            ("10 00 24", 150.1),
            ("0:30", 7.5),
            ("  23h59m59.9s ", 359.999_583_333_333_3),
        ] {
            let got = parse_ra(text).expect(text);
            assert!(close(got, degrees), "{text}: {got} != {degrees}");
        }
        for bad in [
            "",
            "abc",
            "360",
            "-1",
            "24:00:00",
            "10:60:00",
            "-10:00:00",
            "1:2:3:4",
        ] {
            assert!(parse_ra(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn declination_keeps_the_sign_of_a_zero_degree_field() {
        for (text, degrees) in [
            ("-2.5", -2.5),
            ("+02:30:00", 2.5),
            ("-00:30:00", -0.5),
            ("-0d30m", -0.5),
            ("-2 12 36", -2.21),
            ("45°30'00\"", 45.5),
            ("90", 90.0),
        ] {
            let got = parse_dec(text).expect(text);
            assert!(close(got, degrees), "{text}: {got} != {degrees}");
        }
        for bad in ["", "north", "91", "-90:00:01", "10:75", "1e999"] {
            assert!(parse_dec(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn form(pairs: &[(&str, &str)]) -> CutoutForm {
        CutoutForm::from_parameters(&pairs.iter().copied().collect())
    }

    fn pairs(params: &Parameters) -> Vec<(String, String)> {
        params
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn a_sync_cutout_always_asks_for_a_preview() {
        let f = form(&[
            ("ID", "butler://demo/a"),
            ("RA", "10:00:00"),
            ("DEC", "-00:30:00"),
            ("RADIUS", "36"),
            ("FORMAT", "FITS"),
            ("MASK", "true"),
            ("MODE", "sync"),
        ]);
        let got = pairs(&f.to_parameters().expect("valid"));
        let expected = [
            ("ID", "butler://demo/a"),
            ("CIRCLE", "150 -0.5 0.01"),
            ("RESPONSEFORMAT", "image/png"),
            ("MASK", "true"),
        ];
        assert_eq!(
            got,
            expected.map(|(n, v)| (n.to_owned(), v.to_owned())).to_vec()
        );
    }

    #[test]
    fn an_async_job_runs_at_once_in_the_chosen_format() {
        let f = form(&[
            ("RA", "150"),
            ("DEC", "2"),
            ("RADIUS", "18"),
            ("FORMAT", "FITS"),
            ("RUNID", "my-run"),
            ("RUN", "true"),
            ("MODE", "async"),
        ]);
        let got = pairs(&f.to_parameters().expect("valid"));
        let expected = [
            ("CIRCLE", "150 2 0.005"),
            ("RUNID", "my-run"),
            ("PHASE", "RUN"),
        ];
        assert_eq!(
            got,
            expected.map(|(n, v)| (n.to_owned(), v.to_owned())).to_vec()
        );
        let pending = form(&[
            ("RA", "1"),
            ("DEC", "2"),
            ("RADIUS", "1"),
            ("MODE", "async"),
        ]);
        assert!(!pending.to_parameters().expect("valid").contains("PHASE"));
        let jpeg = form(&[
            ("RA", "1"),
            ("DEC", "2"),
            ("RADIUS", "1"),
            ("FORMAT", "JPEG"),
        ]);
        assert!(
            pairs(&jpeg.to_parameters().expect("valid"))
                .contains(&("RESPONSEFORMAT".into(), "image/jpeg".into()))
        );
    }

    #[test]
    fn a_bad_field_is_a_usage_error_naming_it() {
        for (field, value, named) in [
            ("RA", "x", "RA"),
            ("DEC", "100", "Dec"),
            ("RADIUS", "-1", "radius"),
            ("RADIUS", "NaN", "radius"),
        ] {
            let mut f = form(&[("RA", "1"), ("DEC", "2"), ("RADIUS", "3")]);
            match field {
                "RA" => f.ra = value.into(),
                "DEC" => f.dec = value.into(),
                _ => f.radius = value.into(),
            }
            match f.to_parameters() {
                Err(FrontendError::Usage(m)) => assert!(m.contains(named), "{m}"),
                other => panic!("{field}={value}: {other:?}"),
            }
        }
    }
}
