//! The one place that talks to the `wcs` crate, which wants radians and 1-based pixels: the
//! rest of the crate works in ICRS degrees and in 0-based pixels whose centres are integers.
//!
//! Two things are done here rather than by the crate: SIP distortion (`sip`), and the
//! rotation between ICRS and galactic coordinates, because the crate silently skips it when a
//! galactic header also carries RADESYS and EQUINOX. The crate is always handed an RA/Dec
//! header and works in the image's own frame.

use serde_json::{Map, Number, Value as Json};

use crate::SodaError;
use crate::header::{Value, WcsKeywords};
use crate::sip::{self, Sip};

/// A celestial (longitude, latitude) WCS for the first two axes of an image.
pub(crate) struct CelestialWcs {
    /// The projection without any SIP distortion, which `sip` applies around it.
    wcs: wcs::WCS,
    sip: Option<Sip>,
    /// Whether the image's axes are galactic longitude and latitude.
    galactic: bool,
}

/// ICRS to galactic rotation (rows: galactic x, y, z in ICRS), as astropy computes it (through
/// FK5 and FK4 B1950, the frame the galactic system is defined in), so that cutouts agree with
/// astropy to far below a pixel; the Hipparcos matrix differs from it by 20 milliarcseconds.
const ICRS_TO_GALACTIC: [[f64; 3]; 3] = [
    [
        -0.054875657712591_79,
        -0.873437051955616,
        -0.483835073616715_5,
    ],
    [
        0.494109437192727_5,
        -0.444829721223295_56,
        0.746982183986667_6,
    ],
    [
        -0.867666137559658_7,
        -0.198076337273000_75,
        0.455983813687301_6,
    ],
];

/// Rotates (lon, lat) in degrees by `m`, or by its transpose (the inverse) if `inverse`.
fn rotate(m: &[[f64; 3]; 3], inverse: bool, lon: f64, lat: f64) -> (f64, f64) {
    let v = crate::sphere::unit_vector(lon, lat);
    let mut r = [0.0; 3];
    for (i, slot) in r.iter_mut().enumerate() {
        *slot = (0..3)
            .map(|j| if inverse { m[j][i] } else { m[i][j] } * v[j])
            .sum();
    }
    crate::sphere::ra_dec(r)
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
        let equatorial = celestial(ctype1, &["RA--"]) && celestial(ctype2, &["DEC-"]);
        let galactic = celestial(ctype1, &["GLON"]) && celestial(ctype2, &["GLAT"]);
        if !equatorial && !galactic {
            return Err(SodaError::BadImage(format!(
                "no equatorial or galactic WCS on axes 1 and 2 \
                 (CTYPE1 {ctype1:?}, CTYPE2 {ctype2:?})"
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
            if sip::is_sip_keyword(name) || crate::header::is_extra_axis_keyword(name) {
                continue;
            }
            let json = match value {
                Value::Text(s) if name.starts_with("CTYPE") => {
                    // The crate gets the projection of an RA/Dec header (all 4-character axis
                    // names here are ASCII, checked above).
                    let axis = if name == "CTYPE1" { "RA--" } else { "DEC-" };
                    Json::String(
                        format!("{axis}{}", &s[4..])
                            .trim_end_matches("-SIP")
                            .to_owned(),
                    )
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
        Ok(CelestialWcs { wcs, sip, galactic })
    }

    /// The 0-based pixel position of a sky position, `None` where the projection is undefined
    /// (for example the far hemisphere of a TAN projection).
    pub(crate) fn sky_to_pixel(&self, ra_deg: f64, dec_deg: f64) -> Option<(f64, f64)> {
        let (ra_deg, dec_deg) = if self.galactic {
            rotate(&ICRS_TO_GALACTIC, false, ra_deg, dec_deg)
        } else {
            (ra_deg, dec_deg)
        };
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
        let (lon, lat) = (lonlat.lon().to_degrees(), lonlat.lat().to_degrees());
        if !(lon.is_finite() && lat.is_finite()) {
            return None;
        }
        if self.galactic {
            Some(rotate(&ICRS_TO_GALACTIC, true, lon, lat))
        } else {
            Some((lon.rem_euclid(360.0), lat))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn galactic_car(radesys: Option<&str>) -> CelestialWcs {
        let text = |k: &str, v: &str| (k.to_owned(), Value::Text(v.to_owned()));
        let real = |k: &str, v: f64| (k.to_owned(), Value::Real(v));
        let mut entries = vec![
            text("CTYPE1", "GLON-CAR"),
            text("CTYPE2", "GLAT-CAR"),
            real("CRPIX1", 180.5),
            real("CRPIX2", 90.5),
            real("CRVAL1", 0.0),
            real("CRVAL2", 0.0),
            real("CDELT1", -1.0),
            real("CDELT2", 1.0),
        ];
        if let Some(radesys) = radesys {
            entries.push(text("RADESYS", radesys));
            entries.push(real("EQUINOX", 2000.0));
        }
        CelestialWcs::new(360, 180, &WcsKeywords { entries }).unwrap()
    }

    #[test]
    fn galactic_images_take_and_give_icrs_positions() {
        // astropy: SkyCoord(l, b, frame="galactic").icrs
        let cases = [
            ((0.0, 0.0), (266.4049882865447, -28.936177761791473)),
            ((30.0, 60.0), (225.4059618366843, 21.847186916891722)),
        ];
        // RADESYS and EQUINOX in a galactic header made the wcs crate skip the rotation.
        for wcs in [galactic_car(None), galactic_car(Some("FK5"))] {
            for ((l, b), (ra, dec)) in cases {
                // CDELT1 is negative: longitude grows to the left.
                let (x, y) = (179.5 - l, 89.5 + b);
                let (got_ra, got_dec) = wcs.pixel_to_sky(x, y).unwrap();
                assert!(
                    (got_ra - ra).abs() < 1e-9 && (got_dec - dec).abs() < 1e-9,
                    "({l}, {b}): {got_ra} {got_dec}"
                );
                let (px, py) = wcs.sky_to_pixel(ra, dec).unwrap();
                assert!((px - x).abs() < 1e-7 && (py - y).abs() < 1e-7, "{px} {py}");
            }
        }
    }

    #[test]
    fn ecliptic_images_are_refused() {
        let keywords = WcsKeywords {
            entries: vec![
                ("CTYPE1".to_owned(), Value::Text("ELON-CAR".to_owned())),
                ("CTYPE2".to_owned(), Value::Text("ELAT-CAR".to_owned())),
            ],
        };
        assert!(matches!(
            CelestialWcs::new(10, 10, &keywords),
            Err(SodaError::BadImage(_))
        ));
    }
}
