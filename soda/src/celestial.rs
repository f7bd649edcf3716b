//! The one place that talks to the `wcs` crate, which wants radians and 1-based pixels: the
//! rest of the crate works in degrees and in 0-based pixels whose centres are integers.

use serde_json::{Map, Number, Value as Json};

use crate::SodaError;
use crate::header::{Value, WcsKeywords};
use crate::sip::{self, Sip};

/// A celestial (longitude, latitude) WCS for the first two axes of an image.
pub(crate) struct CelestialWcs {
    /// The projection without any SIP distortion, which `sip` applies around it.
    wcs: wcs::WCS,
    sip: Option<Sip>,
}

impl std::fmt::Debug for CelestialWcs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CelestialWcs")
    }
}

impl CelestialWcs {
    /// Builds the WCS of an `naxis1` x `naxis2` image from its header keywords.
    pub(crate) fn new(
        naxis1: usize,
        naxis2: usize,
        keywords: &WcsKeywords,
    ) -> Result<CelestialWcs, SodaError> {
        let ctype1 = keywords.text("CTYPE1").unwrap_or("");
        let ctype2 = keywords.text("CTYPE2").unwrap_or("");
        // The wcs crate slices CTYPE1 by byte position, so anything else than a well-formed
        // 8-character-or-longer ASCII celestial pair must be refused before it gets there.
        let celestial = |ctype: &str, prefixes: &[&str]| {
            ctype.is_ascii() && ctype.len() >= 8 && prefixes.iter().any(|p| ctype.starts_with(p))
        };
        let lon_lat = celestial(ctype1, &["RA--", "GLON", "ELON"])
            && celestial(ctype2, &["DEC-", "GLAT", "ELAT"]);
        if !lon_lat {
            return Err(SodaError::BadImage(format!(
                "no celestial WCS on axes 1 and 2 (CTYPE1 {ctype1:?}, CTYPE2 {ctype2:?})"
            )));
        }
        let sip = if ctype1.ends_with("-SIP") && ctype2.ends_with("-SIP") {
            Sip::read(keywords)
        } else {
            None
        };
        let mut params = Map::new();
        params.insert("NAXIS".into(), Json::from(2));
        params.insert("NAXIS1".into(), Json::from(naxis1 as i64));
        params.insert("NAXIS2".into(), Json::from(naxis2 as i64));
        for (name, value) in &keywords.entries {
            if sip::is_sip_keyword(name) {
                continue;
            }
            let json = match value {
                Value::Text(s) if name.starts_with("CTYPE") => {
                    Json::String(s.trim_end_matches("-SIP").to_owned())
                }
                Value::Text(s) => Json::String(s.clone()),
                Value::Real(x) if name.ends_with("_ORDER") => Json::from(*x as i64),
                Value::Real(x) => match Number::from_f64(*x) {
                    Some(n) => Json::Number(n),
                    None => continue,
                },
            };
            params.insert(name.clone(), json);
        }
        let params: wcs::WCSParams = serde_json::from_value(Json::Object(params))
            .map_err(|e| SodaError::BadImage(format!("WCS keywords not understood: {e}")))?;
        let wcs = wcs::WCS::new(&params)
            .map_err(|e| SodaError::BadImage(format!("WCS not supported: {e:?}")))?;
        Ok(CelestialWcs { wcs, sip })
    }

    /// The 0-based pixel position of a sky position, `None` where the projection is undefined
    /// (for example the far hemisphere of a TAN projection).
    pub(crate) fn sky_to_pixel(&self, ra_deg: f64, dec_deg: f64) -> Option<(f64, f64)> {
        let lonlat = wcs::LonLat::new(ra_deg.to_radians(), dec_deg.to_radians());
        let xy = self.wcs.proj(&lonlat)?;
        let (x, y) = match &self.sip {
            Some(sip) => sip.distort(xy.x(), xy.y())?,
            None => (xy.x(), xy.y()),
        };
        let (x, y) = (x - 1.0, y - 1.0);
        (x.is_finite() && y.is_finite()).then_some((x, y))
    }

    /// The sky position (RA in [0, 360), Dec) in degrees of a 0-based pixel position.
    pub(crate) fn pixel_to_sky(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        let (x, y) = match &self.sip {
            Some(sip) => sip.undistort(x + 1.0, y + 1.0),
            None => (x + 1.0, y + 1.0),
        };
        let lonlat = self.wcs.unproj(&wcs::ImgXY::new(x, y))?;
        let (ra, dec) = (lonlat.lon().to_degrees(), lonlat.lat().to_degrees());
        (ra.is_finite() && dec.is_finite()).then_some((ra.rem_euclid(360.0), dec))
    }
}
