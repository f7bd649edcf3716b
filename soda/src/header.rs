//! The header keywords that carry an image's celestial WCS: which ones we read from a source
//! image, and how they are written into a cutout with the reference pixel moved, so that every
//! copied pixel keeps its sky position.

use fitsio::FitsFile;
use fitsio::hdu::FitsHdu;

use crate::SodaError;

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

    /// Reads every WCS keyword present in `hdu`; absent ones are simply left out.
    pub(crate) fn read(file: &mut FitsFile, hdu: &FitsHdu) -> WcsKeywords {
        let mut entries = Vec::new();
        for name in text_names() {
            if let Ok(value) = hdu.read_key::<String>(file, &name) {
                entries.push((name, Value::Text(value.trim().to_owned())));
            }
        }
        // RADECSYS is the pre-2002 spelling; keep one name in the cutout.
        if !entries.iter().any(|(n, _)| n == "RADESYS")
            && let Ok(value) = hdu.read_key::<String>(file, "RADECSYS")
        {
            entries.push(("RADESYS".to_owned(), Value::Text(value.trim().to_owned())));
        }
        for name in real_names() {
            if let Ok(value) = hdu.read_key::<f64>(file, &name) {
                entries.push((name, Value::Real(value)));
            }
        }
        // SIP coefficients: only those up to the order the header declares (at most 9, as in
        // wcslib), so that an image without SIP costs four lookups rather than hundreds.
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
                    if let Ok(value) = hdu.read_key::<f64>(file, &name) {
                        entries.push((name, Value::Real(value)));
                    }
                }
            }
        }
        WcsKeywords { entries }
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
