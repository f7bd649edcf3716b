//! A cutout's header: the keywords that carry an image's celestial WCS (which ones we read from
//! a source image, and how they are written into a cutout with the reference pixel moved, so
//! that every copied pixel keeps its sky position), the provenance cards, and the text of a
//! header for `META=true`.

use fitsio::FitsFile;
use fitsio::hdu::FitsHdu;

use crate::SodaError;
use crate::unscaled::HeaderValues;

/// A header value we know how to copy: WCS keywords are either text or real numbers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Text(String),
    Real(f64),
}

/// The celestial WCS keywords of one image, in a fixed order, with its observation-time
/// keywords.
#[derive(Debug, Clone, Default)]
pub(crate) struct WcsKeywords {
    pub(crate) entries: Vec<(String, Value)>,
}

impl WcsKeywords {
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Value::Text(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn real(&self, name: &str) -> Option<f64> {
        match self.get(name) {
            Some(Value::Real(x)) => Some(*x),
            _ => None,
        }
    }

    /// Reads every WCS keyword present in `hdu`; absent ones are simply left out. The header
    /// is parsed once ([`HeaderValues`]), however many names are asked for.
    pub(crate) fn read(file: &mut FitsFile, hdu: &FitsHdu) -> Result<WcsKeywords, SodaError> {
        let header = HeaderValues::read(file, hdu)?;
        let mut entries = Vec::new();
        for name in text_names() {
            if let Some(value) = header.text(&name) {
                entries.push((name, Value::Text(value.trim().to_owned())));
            }
        }
        // RADECSYS is the pre-2002 spelling; keep one name in the cutout.
        if !entries.iter().any(|(n, _)| n == "RADESYS")
            && let Some(value) = header.text("RADECSYS")
        {
            entries.push(("RADESYS".to_owned(), Value::Text(value.trim().to_owned())));
        }
        for name in real_names() {
            if let Some(value) = header.real(&name) {
                entries.push((name, Value::Real(value)));
            }
        }
        // SIP coefficients: only those up to the order the header declares (at most 9, as in
        // wcslib).
        for prefix in SIP_PREFIXES {
            let order_name = format!("{prefix}_ORDER");
            let Some(Value::Real(order)) = entries
                .iter()
                .find(|(n, _)| *n == order_name)
                .map(|(_, v)| v)
            else {
                continue;
            };
            let order = if order.is_finite() {
                order.round().clamp(0.0, 9.0) as usize
            } else {
                0
            };
            for p in 0..=order {
                for q in 0..=(order - p) {
                    let name = format!("{prefix}_{p}_{q}");
                    if let Some(value) = header.real(&name) {
                        entries.push((name, Value::Real(value)));
                    }
                }
            }
        }
        Ok(WcsKeywords { entries })
    }

    /// Writes the keywords into `hdu` of a cutout whose first pixel is source pixel
    /// `offsets` (0-based, NAXIS1 first; negative for a stamp that starts off the image); only CRPIXi change, because SIP and every other term
    /// are relative to it.
    pub(crate) fn write_shifted(
        &self,
        file: &mut FitsFile,
        hdu: &FitsHdu,
        offsets: &[i64],
    ) -> Result<(), SodaError> {
        let crpix_names: Vec<String> = (1..=offsets.len()).map(|i| format!("CRPIX{i}")).collect();
        for (name, value) in &self.entries {
            match value {
                Value::Text(s) => hdu.write_key(file, name, s.as_str())?,
                Value::Real(x) => {
                    if !crpix_names.contains(name) {
                        hdu.write_key(file, name, *x)?;
                    }
                }
            }
        }
        // A missing CRPIXi means 0, so the shifted value must be written even then.
        for (name, &offset) in crpix_names.iter().zip(offsets) {
            let crpix = self.real(name).unwrap_or(0.0) - offset as f64;
            hdu.write_key(file, name, crpix)?;
        }
        Ok(())
    }
}

impl WcsKeywords {
    /// The keywords as FITS header cards (80 characters each, no `END`), for a header that a
    /// reader rebuilds the WCS from, e.g. `astropy.io.fits.Header.fromstring`.
    pub(crate) fn cards(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(name, value)| {
                let card = match value {
                    // A string starts in column 11; FITS doubles a quote inside it and pads it
                    // to at least 8 characters.
                    Value::Text(s) => format!("{name:<8}= '{:<8}'", s.replace('\'', "''")),
                    // Whole numbers as integers (what `A_ORDER` must be), the rest in Rust's
                    // shortest round-trip form with an exponent, a valid FITS real; both end
                    // in column 30.
                    Value::Real(x) if x.fract() == 0.0 && x.abs() < 1e15 => {
                        format!("{name:<8}= {:>20}", *x as i64)
                    }
                    Value::Real(x) => format!("{name:<8}= {:>20}", format!("{x:E}")),
                };
                format!("{:<80}", card.chars().take(80).collect::<String>())
            })
            .collect()
    }
}

/// The SIP polynomials: forward (A, B) and inverse (AP, BP).
const SIP_PREFIXES: [&str; 4] = ["A", "B", "AP", "BP"];

/// Axes whose keywords are kept: the celestial two, and two more (a spectral axis, Stokes).
const AXES: usize = 4;

/// Whether a keyword belongs to an axis beyond the celestial two (`CTYPE3`, `PC3_3`, `PC1_3`...),
/// which the celestial WCS must not see.
pub(crate) fn is_extra_axis_keyword(name: &str) -> bool {
    let digits =
        |rest: &str| -> Vec<usize> { rest.split('_').filter_map(|d| d.parse().ok()).collect() };
    for prefix in [
        "CTYPE", "CUNIT", "CRVAL", "CDELT", "CRPIX", "CROTA", "PC", "CD", "PV",
    ] {
        if let Some(rest) = name.strip_prefix(prefix) {
            let axes = digits(rest);
            if prefix == "PV" {
                // PVi_m: only i names an axis.
                return axes.first().is_some_and(|&i| i >= 3);
            }
            return axes.iter().any(|&i| i >= 3);
        }
    }
    false
}

fn text_names() -> Vec<String> {
    let mut names = Vec::new();
    for i in 1..=AXES {
        names.push(format!("CTYPE{i}"));
        names.push(format!("CUNIT{i}"));
    }
    names.push("RADESYS".to_owned());
    names.extend(TIME_TEXT.map(str::to_owned));
    names
}

/// The observation-time keywords a cutout keeps from its image (FITS 4.0 §9.2), so that each
/// epoch of a light curve says when it was taken. They are not the celestial WCS's business:
/// [`is_time_keyword`] keeps them from wcslib, which would check their syntax.
const TIME_TEXT: [&str; 4] = ["DATE-OBS", "DATE-BEG", "DATE-END", "TIMESYS"];
const TIME_REAL: [&str; 4] = ["MJD-BEG", "MJD-END", "EXPTIME", "XPOSURE"];

/// Whether a keyword is one of the observation-time keywords copied alongside the WCS.
pub(crate) fn is_time_keyword(name: &str) -> bool {
    TIME_TEXT.contains(&name) || TIME_REAL.contains(&name)
}

fn real_names() -> Vec<String> {
    let mut names = Vec::new();
    for i in 1..=AXES {
        for prefix in ["CRVAL", "CRPIX", "CDELT", "CROTA"] {
            names.push(format!("{prefix}{i}"));
        }
    }
    for i in 1..=AXES {
        for j in 1..=AXES {
            names.push(format!("CD{i}_{j}"));
            names.push(format!("PC{i}_{j}"));
        }
    }
    // MJDREF*: the zero point of a time axis (`temporal`), kept so the cutout's axis keeps it.
    for name in [
        "EQUINOX", "EPOCH", "LONPOLE", "LATPOLE", "MJD-OBS", "MJDREF", "MJDREFI", "MJDREFF",
    ] {
        names.push(name.to_owned());
    }
    names.extend(TIME_REAL.map(str::to_owned));
    // PVi_m up to 39: TPV uses all of PV1_0..PV1_39 and PV2_0..PV2_39, ZPN up to PV2_29.
    for i in 1..=2 {
        for m in 0..=39 {
            names.push(format!("PV{i}_{m}"));
        }
    }
    // SIP distortion: the orders here, the coefficients in `WcsKeywords::read` up to them.
    for prefix in SIP_PREFIXES {
        names.push(format!("{prefix}_ORDER"));
    }
    names
}

/// Where a cutout came from, written into its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The `ID` the user asked for, e.g. `butler://demo/m31`.
    pub source_id: String,
    /// The stencil in its canonical POS form.
    pub stencil: String,
    /// Name and version of the software that made the cutout.
    pub software: String,
    /// When the cutout was made, ISO 8601 UTC (`2024-05-01T12:00:00` or with a trailing `Z`).
    pub time_utc: String,
}

/// Writes a cutout's own cards into `hdu`: the source's WCS `keywords` shifted to the cutout's
/// first pixel `offsets` (0-based source pixel, NAXIS1 first), `BUNIT`, `BLANK`, and provenance.
pub(crate) fn write_cutout_header(
    dst: &mut FitsFile,
    hdu: &FitsHdu,
    keywords: &WcsKeywords,
    bunit: Option<&str>,
    offsets: &[i64],
    provenance: &Provenance,
    blank: Option<i64>,
) -> Result<(), SodaError> {
    keywords.write_shifted(dst, hdu, offsets)?;
    if let Some(bunit) = bunit {
        hdu.write_key(dst, "BUNIT", bunit)?;
    }
    if let Some(blank) = blank {
        hdu.write_key(dst, "BLANK", blank)?;
    }
    let date = provenance.time_utc.trim_end_matches('Z');
    hdu.write_key(dst, "DATE", (date, "UTC time the cutout was made"))?;
    hdu.write_key(
        dst,
        "CREATOR",
        (
            provenance.software.as_str(),
            "software that made the cutout",
        ),
    )?;
    write_text(
        dst,
        hdu,
        "SKYCSRC",
        &provenance.source_id,
        "ID of the source image",
    )?;
    write_text(
        dst,
        hdu,
        "SKYCSTCL",
        &provenance.stencil,
        "SODA stencil of the cutout",
    )?;
    hdu.write_key(
        dst,
        "SKYCX0",
        (offsets[0] + 1, "source column of pixel 1 (1-based)"),
    )?;
    hdu.write_key(
        dst,
        "SKYCY0",
        (offsets[1] + 1, "source row of pixel 1 (1-based)"),
    )?;
    Ok(())
}

/// Most characters of a string value that fit on one header card (80 minus key, `= ` and the
/// quotes); a quote counts twice because FITS doubles it.
const CARD_TEXT: usize = 68;

/// Most continuation keys written for one value.
const MAX_CONTINUATIONS: usize = 99;

/// Writes a string that may not fit on one card.
///
/// fitsio cannot write the CONTINUE long-string convention (cfitsio silently truncates at 68
/// characters), so a long value goes on in numbered keys: `SKYCSTCL` holds the first part, then
/// `SKYCST01`, `SKYCST02`, ... (the name's first 6 characters and a 2-digit counter), to be
/// concatenated in order. Characters outside printable ASCII, which FITS forbids, become `?`.
fn write_text(
    dst: &mut FitsFile,
    hdu: &FitsHdu,
    name: &str,
    value: &str,
    comment: &str,
) -> Result<(), SodaError> {
    let chunks = split_for_cards(value);
    let stem: String = name.chars().take(6).collect();
    let continued;
    let comment = if chunks.len() > 1 {
        continued = format!("{comment}, continued in {stem}01..");
        continued.as_str()
    } else {
        comment
    };
    for (i, chunk) in chunks.iter().take(MAX_CONTINUATIONS + 1).enumerate() {
        if i == 0 {
            hdu.write_key(dst, name, (chunk.as_str(), comment))?;
        } else {
            hdu.write_key(dst, &format!("{stem}{i:02}"), chunk.as_str())?;
        }
    }
    Ok(())
}

fn split_for_cards(value: &str) -> Vec<String> {
    let mut chunks = vec![String::new()];
    let mut used = 0;
    for c in value.chars() {
        let c = if c.is_ascii_graphic() || c == ' ' {
            c
        } else {
            '?'
        };
        let width = if c == '\'' { 2 } else { 1 };
        // Trailing blanks of a FITS string are not significant, so a space never ends a part.
        if used + width > CARD_TEXT || (c == ' ' && used + width == CARD_TEXT) {
            chunks.push(String::new());
            used = 0;
        }
        used += width;
        if let Some(last) = chunks.last_mut() {
            last.push(c);
        }
    }
    chunks
}

/// The header of the second HDU of the FITS file `bytes` (whose primary HDU has no data) as
/// lines of text, with `NAXISn` set to `sizes[n - 1]`.
pub(crate) fn extension_header_text(bytes: &[u8], sizes: &[usize]) -> Result<String, SodaError> {
    const CARD: usize = 80;
    const BLOCK: usize = 2880;
    let bad = || SodaError::Fits("the scratch header is not a FITS file".to_owned());
    let cards = |from: usize| bytes.get(from..).unwrap_or_default().chunks_exact(CARD);
    // The primary header ends at its END card, padded to a whole block.
    let primary_cards = cards(0)
        .position(|c| c.starts_with(b"END     "))
        .ok_or_else(bad)?
        + 1;
    let start = (primary_cards * CARD).div_ceil(BLOCK) * BLOCK;
    let mut text = String::new();
    for card in cards(start) {
        let card = std::str::from_utf8(card).map_err(|_| bad())?;
        let key = card[..8].trim_end();
        let naxis = key
            .strip_prefix("NAXIS")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| sizes.get(n.wrapping_sub(1)));
        match naxis {
            // A fixed-format integer: right-justified in columns 11-30, the comment kept.
            Some(size) => {
                text.push_str(&format!("{}{size:>20}{}", &card[..10], &card[30..]));
            }
            None => text.push_str(card),
        }
        text.push('\n');
        if key == "END" {
            return Ok(text);
        }
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_are_integer_cards_and_the_rest_reals_that_read_back_exactly() {
        let keywords = WcsKeywords {
            entries: vec![
                ("A_ORDER".into(), Value::Real(3.0)),
                ("CRPIX1".into(), Value::Real(-4.0)),
                ("CRVAL1".into(), Value::Real(2.5)),
                ("CDELT1".into(), Value::Real(-2.777_777_777_777_778e-4)),
                // At 1e15 and beyond an f64 is no longer sure to be a whole number of its
                // text's digits: a real, as is 1e16.
                ("BIG1".into(), Value::Real(1e15)),
                ("BIG2".into(), Value::Real(1e16)),
                ("NEARBIG".into(), Value::Real(999_999_999_999_999.0)),
                ("CTYPE1".into(), Value::Text("RA---TAN".into())),
            ],
        };
        let cards = keywords.cards();
        let value = |n: usize| cards[n][10..].trim().to_owned();
        assert_eq!(value(0), "3");
        assert_eq!(value(1), "-4");
        assert_eq!(value(2), "2.5E0");
        assert_eq!(value(3).parse::<f64>().unwrap(), -2.777_777_777_777_778e-4);
        assert!(value(3).contains('E'), "{}", value(3));
        assert_eq!(value(4), "1E15");
        assert_eq!(value(5), "1E16");
        assert_eq!(value(6), "999999999999999");
        assert_eq!(cards[7], format!("{:<80}", "CTYPE1  = 'RA---TAN'"));
        assert!(cards.iter().all(|c| c.len() == 80));
    }

    #[test]
    fn long_values_split_without_trailing_blanks() {
        let value = format!("{} {}", "x".repeat(67), "y'z".repeat(40));
        let parts = split_for_cards(&value);
        assert_eq!(parts.concat(), value);
        for part in &parts {
            assert!(!part.ends_with(' ') && part.len() + part.matches('\'').count() <= 68);
        }
    }

    /// The WCS keywords of a primary HDU holding `text` cards.
    fn read_text(text: &[(&str, &str)]) -> WcsKeywords {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.fits");
        let mut file = FitsFile::create(&path).open().unwrap();
        let hdu = file.primary_hdu().unwrap();
        for (name, value) in text {
            hdu.write_key(&mut file, name, *value).unwrap();
        }
        WcsKeywords::read(&mut file, &hdu).unwrap()
    }

    #[test]
    fn the_old_radecsys_is_read_as_radesys_unless_radesys_is_there() {
        let old = read_text(&[("RADECSYS", "FK5")]);
        assert_eq!(old.text("RADESYS"), Some("FK5"));
        let both = read_text(&[("RADECSYS", "FK5"), ("RADESYS", "ICRS")]);
        assert_eq!(both.text("RADESYS"), Some("ICRS"));
        let named = |k: &WcsKeywords| k.entries.iter().filter(|(n, _)| n == "RADESYS").count();
        assert_eq!((named(&old), named(&both)), (1, 1));
        assert_eq!(read_text(&[]).text("RADESYS"), None);
    }
}
