//! The one place that turns an image's celestial header into a mapping between pixels and
//! the sky, through wcslib (`wcslib`), the reference implementation of FITS WCS: the rest of
//! the crate works in ICRS degrees and in 0-based pixels whose centres are integers.
//!
//! wcslib applies SIP and TPV distortion itself, and works in the image's own frame; the
//! rotation between ICRS and galactic coordinates is done here.

use std::sync::{Arc, Mutex, OnceLock};

use crate::SodaError;
use crate::header::{Value, WcsKeywords};
use crate::wcslib::{self, Wcs};

/// A celestial (longitude, latitude) WCS for the first two axes of an image.
///
/// wcslib writes into its structure on every transformation, so a [`Wcs`] serves one thread at
/// a time: a `CelestialWcs` (and an `ImageGeometry` or a cached header holding it) may be shared
/// between threads, and a thread that finds the first structure busy takes a spare, set up
/// from the same cards, rather than wait (many cutouts of one popular image are planned at once).
pub(crate) struct CelestialWcs {
    wcs: Mutex<Wcs>,
    /// Structures set up for threads that found `wcs` busy, kept for the next ones.
    spares: Mutex<Vec<Wcs>>,
    /// The cards `wcs` was set up from.
    cards: Vec<String>,
    /// Whether the image's axes are galactic longitude and latitude.
    galactic: bool,
    /// The image's border as every stencil located on it sees it, worked out once.
    frame: OnceLock<Arc<ImageFrame>>,
}

/// What locating any stencil on an image needs of the image alone: the pixel scale at its
/// centre and its border sampled in pixels with each sample's sky position. Worked out once
/// per WCS (`CelestialWcs::frame`), since mapping the border to the sky was a third of locating
/// a small stencil, and the answer depends on the image only.
#[derive(Debug)]
pub(crate) struct ImageFrame {
    /// The image size this frame is of.
    pub(crate) nx: usize,
    pub(crate) ny: usize,
    /// The angular size of one pixel at the image centre, in degrees.
    pub(crate) scale_deg: f64,
    /// Points along the image's outer pixel edges, 0-based pixel coordinates.
    pub(crate) border: Vec<(f64, f64)>,
    /// The ICRS position of each point of `border`; `None` off the projection's domain.
    pub(crate) border_sky: Vec<Option<(f64, f64)>>,
}

/// Spare wcslib structures kept per WCS: about the threads that plan cutouts at once.
const SPARE_STRUCTURES: usize = 8;

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
        let unsupported =
            |what: String| SodaError::UnsupportedWcs(format!("{ctype1}/{ctype2}: {what}"));
        let mut cards = Vec::with_capacity(keywords.entries.len() + 3);
        let size = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        cards.extend(wcslib::integer_card("NAXIS", 2));
        cards.extend(wcslib::integer_card("NAXIS1", size(naxis1)));
        cards.extend(wcslib::integer_card("NAXIS2", size(naxis2)));
        for (name, value) in &keywords.entries {
            if crate::header::is_extra_axis_keyword(name) || crate::header::is_time_keyword(name) {
                continue;
            }
            let card = match value {
                Value::Text(s) => wcslib::text_card(name, s),
                Value::Real(x) if name.ends_with("_ORDER") => {
                    wcslib::integer_card(name, x.round() as i64)
                }
                Value::Real(x) => wcslib::real_card(name, *x),
            };
            cards.push(card.ok_or_else(|| unsupported(format!("keyword {name} cannot be read")))?);
        }
        let wcs = Wcs::from_cards(&cards).map_err(|e| unsupported(e.0))?;
        let wcs = CelestialWcs {
            wcs: Mutex::new(wcs),
            spares: Mutex::new(Vec::new()),
            cards,
            galactic,
            frame: OnceLock::new(),
        };
        // A WCS that sets up but maps no pixel to the sky and back (wcslib finds a singular
        // matrix only when inverting it) would answer every request with "no overlap": say so.
        let (w, h) = (
            naxis1.saturating_sub(1) as f64,
            naxis2.saturating_sub(1) as f64,
        );
        let probes: Vec<(f64, f64)> = [0.0, 0.5, 1.0]
            .iter()
            .flat_map(|&fx| [0.0, 0.5, 1.0].map(|fy| (fx * w, fy * h)))
            .collect();
        let sky: Vec<(f64, f64)> = wcs.pixels_to_sky(&probes).into_iter().flatten().collect();
        if wcs.sky_to_pixels(&sky).iter().all(Option::is_none) {
            return Err(unsupported(
                "no pixel of the image maps to the sky (singular matrix or invalid parameters)"
                    .to_owned(),
            ));
        }
        Ok(wcs)
    }

    /// Runs `f` on a wcslib structure no other thread is using: the first one if it is free,
    /// else a spare (set up anew when there is none).
    fn with_wcs<R>(&self, f: impl FnOnce(&mut Wcs) -> R) -> R {
        // A panic while a lock was held cannot leave a set-up structure half-written (the
        // transformations only write scratch arrays), so a poisoned lock is still usable.
        match self.wcs.try_lock() {
            Ok(mut wcs) => return f(&mut wcs),
            Err(std::sync::TryLockError::Poisoned(e)) => return f(&mut e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        let spare = self.spares().pop();
        // The cards set up once already; should wcslib refuse them now, wait for the first.
        let Some(mut spare) = spare.or_else(|| Wcs::from_cards(&self.cards).ok()) else {
            return f(&mut self.wcs.lock().unwrap_or_else(|e| e.into_inner()));
        };
        let result = f(&mut spare);
        let mut spares = self.spares();
        if spares.len() < SPARE_STRUCTURES {
            spares.push(spare);
        }
        result
    }

    fn spares(&self) -> std::sync::MutexGuard<'_, Vec<Wcs>> {
        self.spares.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The 0-based pixel position of a sky position, `None` where the projection is undefined
    /// (for example the far hemisphere of a TAN projection).
    pub(crate) fn sky_to_pixel(&self, ra_deg: f64, dec_deg: f64) -> Option<(f64, f64)> {
        let [lon, lat] = self.to_image_frame(ra_deg, dec_deg);
        let [x, y] = self.with_wcs(|wcs| wcs.world_to_pixel_one([lon, lat]))?;
        Some((x - 1.0, y - 1.0))
    }

    /// (lon, lat) in the image's frame of an ICRS position.
    fn to_image_frame(&self, ra: f64, dec: f64) -> [f64; 2] {
        if self.galactic {
            let (l, b) = rotate(&ICRS_TO_GALACTIC, false, ra, dec);
            [l, b]
        } else {
            [ra, dec]
        }
    }

    /// ICRS (RA in [0, 360), Dec) of a position in the image's frame.
    fn to_icrs(&self, [lon, lat]: [f64; 2]) -> (f64, f64) {
        if self.galactic {
            rotate(&ICRS_TO_GALACTIC, true, lon, lat)
        } else {
            (lon.rem_euclid(360.0), lat)
        }
    }

    /// [`CelestialWcs::sky_to_pixel`] of many positions at once (one wcslib call).
    pub(crate) fn sky_to_pixels(&self, sky: &[(f64, f64)]) -> Vec<Option<(f64, f64)>> {
        let world: Vec<[f64; 2]> = sky
            .iter()
            .map(|&(ra, dec)| self.to_image_frame(ra, dec))
            .collect();
        self.with_wcs(|wcs| wcs.world_to_pixel(&world))
            .into_iter()
            .map(|p| p.map(|[x, y]| (x - 1.0, y - 1.0)))
            .collect()
    }

    /// The sky position (RA in [0, 360), Dec) in degrees of a 0-based pixel position.
    pub(crate) fn pixel_to_sky(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        let world = self.with_wcs(|wcs| wcs.pixel_to_world_one([x + 1.0, y + 1.0]))?;
        Some(self.to_icrs(world))
    }

    /// [`CelestialWcs::pixel_to_sky`] of many positions at once (one wcslib call).
    pub(crate) fn pixels_to_sky(&self, pixels: &[(f64, f64)]) -> Vec<Option<(f64, f64)>> {
        let pixels: Vec<[f64; 2]> = pixels.iter().map(|&(x, y)| [x + 1.0, y + 1.0]).collect();
        self.with_wcs(|wcs| wcs.pixel_to_world(&pixels))
            .into_iter()
            .map(|w| w.map(|w| self.to_icrs(w)))
            .collect()
    }

    /// The frame of an `nx` x `ny` image on this WCS: the one kept, or made by `make` (and
    /// kept, unless one of another size is kept already).
    pub(crate) fn frame(
        &self,
        nx: usize,
        ny: usize,
        make: impl FnOnce() -> ImageFrame,
    ) -> Arc<ImageFrame> {
        if let Some(frame) = self.frame.get()
            && frame.nx == nx
            && frame.ny == ny
        {
            return frame.clone();
        }
        let frame = Arc::new(make());
        // Refused when another thread kept one first (the same) or one of another size is
        // kept: this one then serves its caller alone.
        let _ = self.frame.set(frame.clone());
        frame
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
        // RADESYS and EQUINOX in a galactic header once made the rotation be skipped.
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
    fn observation_time_keywords_never_reach_wcslib() {
        // cfitsio reads a long string whole (CONTINUE cards): as one card for wcslib it would
        // not fit, and the image would be refused for a keyword the WCS does not use.
        let long_date = "2024-03-01T04:05:06.5 (start of the first of four exposures) ".repeat(2);
        let header = keywords(
            &[
                ("CTYPE1", "RA---TAN"),
                ("CTYPE2", "DEC--TAN"),
                ("DATE-OBS", &long_date),
                ("TIMESYS", "TAI"),
            ],
            &[
                ("CRPIX1", 50.5),
                ("CRPIX2", 50.5),
                ("CRVAL1", 10.0),
                ("CRVAL2", 41.0),
                ("CDELT1", -0.001),
                ("CDELT2", 0.001),
                ("EXPTIME", 30.0),
            ],
        );
        let wcs = CelestialWcs::new(100, 100, &header).expect("the WCS ignores DATE-OBS");
        assert_maps(&wcs, (49.5, 49.5), (10.0, 41.0));
    }

    fn keywords(text: &[(&str, &str)], real: &[(&str, f64)]) -> WcsKeywords {
        let mut entries: Vec<(String, Value)> = text
            .iter()
            .map(|(k, v)| (k.to_string(), Value::Text(v.to_string())))
            .collect();
        entries.extend(real.iter().map(|(k, v)| (k.to_string(), Value::Real(*v))));
        WcsKeywords { entries }
    }

    fn assert_maps(wcs: &CelestialWcs, (x, y): (f64, f64), (ra, dec): (f64, f64)) {
        let (got_ra, got_dec) = wcs.pixel_to_sky(x, y).unwrap();
        assert!(
            (got_ra - ra).abs() < 1e-9 && (got_dec - dec).abs() < 1e-9,
            "({x}, {y}): {got_ra} {got_dec}"
        );
        let (px, py) = wcs.sky_to_pixel(ra, dec).unwrap();
        assert!((px - x).abs() < 1e-6 && (py - y).abs() < 1e-6, "{px} {py}");
        let batch = wcs.sky_to_pixels(&[(ra, dec)]);
        assert_eq!(batch, [Some((px, py))]);
        assert_eq!(wcs.pixels_to_sky(&[(x, y)]), [Some((got_ra, got_dec))]);
    }

    #[test]
    fn an_oblique_cylindrical_header_maps_as_astropy_does() {
        // astropy/wcs/tests/data/maps/1904-66_CAR.hdr: the reference point at the south pole,
        // the image far from it (the `wcs` crate answered no pixel for every position).
        let wcs = CelestialWcs::new(
            192,
            192,
            &keywords(
                &[("CTYPE1", "RA---CAR"), ("CTYPE2", "DEC--CAR")],
                &[
                    ("CRPIX1", -248.2173814412),
                    ("CDELT1", -0.06666666666667),
                    ("CRVAL1", 0.0),
                    ("CRPIX2", 7.527038199745),
                    ("CDELT2", 0.06666666666667),
                    ("CRVAL2", -90.0),
                    ("LONPOLE", 180.0),
                    ("LATPOLE", 0.0),
                    ("EQUINOX", 2000.0),
                ],
            ),
        )
        .unwrap();
        // astropy: WCS(header).all_pix2world(x, y, 0)
        assert_maps(&wcs, (10.0, 20.0), (273.0210588258152, -72.69622604594258));
        assert_maps(
            &wcs,
            (150.0, 170.0),
            (293.2572737594486, -61.39205911497526),
        );
    }

    #[test]
    fn sip_without_inverse_coefficients_maps_both_ways() {
        // The HST ACS header of astropy's j94f05bgq_flt.fits (order 4, no AP/BP), cropped to
        // a corner of the chip 3700 and 1700 pixels from its first pixel.
        let sip: [(&str, f64); 28] = [
            ("A_0_2", 2.16615952976212E-06),
            ("B_0_2", -7.2168814507744E-06),
            ("A_1_1", -5.1974576466834E-06),
            ("B_1_1", 6.18443235774478E-06),
            ("A_2_0", 8.55127758255650E-06),
            ("B_2_0", -1.7464918770586E-06),
            ("A_0_3", 1.08193519820265E-11),
            ("B_0_3", -4.1754720492749E-10),
            ("A_1_2", -5.2348707436924E-10),
            ("B_1_2", -6.1692652686813E-11),
            ("A_2_1", -3.9771547747287E-11),
            ("B_2_1", -5.0857161673862E-10),
            ("A_3_0", -4.7304448292227E-10),
            ("B_3_0", 8.56763542781631E-11),
            ("A_0_4", 1.49356171166049E-14),
            ("B_0_4", -9.9570490655478E-15),
            ("A_1_3", -2.4569975537746E-14),
            ("B_1_3", 1.21743011568848E-14),
            ("A_2_2", 3.46791267104378E-14),
            ("B_2_2", -3.6614325928657E-14),
            ("A_3_1", 1.97102297166030E-15),
            ("B_3_1", -3.7795068054874E-15),
            ("A_4_0", 2.37430106240231E-14),
            ("B_4_0", -1.7687653826004E-14),
            ("A_ORDER", 4.0),
            ("B_ORDER", 4.0),
            ("CRPIX1", -1652.0),
            ("CRPIX2", -676.0),
        ];
        let mut real = vec![
            ("CRVAL1", 5.63056810618),
            ("CRVAL2", -72.05457184278998),
            ("CD1_1", 1.29056256197165E-05),
            ("CD1_2", 5.95309123310338E-06),
            ("CD2_1", 5.0220581265601E-06),
            ("CD2_2", -1.2644774105568E-05),
        ];
        real.extend(sip);
        let wcs = CelestialWcs::new(
            300,
            300,
            &keywords(
                &[("CTYPE1", "RA---TAN-SIP"), ("CTYPE2", "DEC--TAN-SIP")],
                &real,
            ),
        )
        .unwrap();
        assert_maps(&wcs, (10.0, 20.0), (5.7143319559311285, -72.05490708893547));
        assert_maps(
            &wcs,
            (250.0, 270.0),
            (5.729340814810321, -72.05681982867362),
        );
    }

    #[test]
    fn a_header_wcslib_cannot_set_up_is_unsupported_naming_it() {
        let error = CelestialWcs::new(
            10,
            10,
            &keywords(
                &[("CTYPE1", "RA---XYZ"), ("CTYPE2", "DEC--XYZ")],
                &[("CDELT1", 1.0), ("CDELT2", 1.0)],
            ),
        )
        .unwrap_err();
        let SodaError::UnsupportedWcs(message) = &error else {
            panic!("{error:?}");
        };
        assert!(message.contains("RA---XYZ"), "{message}");
        // A singular matrix is refused too, rather than mapping every pixel nowhere.
        let error = CelestialWcs::new(
            10,
            10,
            &keywords(
                &[("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN")],
                &[
                    ("CD1_1", 1.0),
                    ("CD1_2", 1.0),
                    ("CD2_1", 1.0),
                    ("CD2_2", 1.0),
                ],
            ),
        )
        .unwrap_err();
        assert!(
            matches!(&error, SodaError::UnsupportedWcs(m) if m.contains("singular")),
            "{error:?}"
        );
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

    /// Maps one pixel on a structure taken by `with_wcs`, and, while holding it, `depth` more
    /// times on structures of their own.
    fn nested(wcs: &CelestialWcs, depth: usize, found: &mut Vec<Option<[f64; 2]>>) {
        wcs.with_wcs(|w| {
            found.push(w.pixel_to_world_one([10.0, 20.0]));
            if depth > 0 {
                nested(wcs, depth - 1, found);
            }
        });
    }

    #[test]
    fn threads_that_find_the_wcs_busy_map_on_spares_and_a_few_are_kept() {
        let wcs = crate::fixtures::sky_image_at(
            "TAN",
            100,
            100,
            (10.0, 41.0),
            (50.0, 50.0),
            (1.0 / 3600.0, 1.0 / 3600.0),
        );
        let mut found = Vec::new();
        // Twelve at once: the first structure and eleven spares, of which eight are kept.
        nested(&wcs, SPARE_STRUCTURES + 3, &mut found);
        assert_eq!(found.len(), SPARE_STRUCTURES + 4);
        assert!(found[0].is_some());
        assert!(found.iter().all(|f| *f == found[0]), "{found:?}");
        assert_eq!(wcs.spares().len(), SPARE_STRUCTURES);
        // One at a time, the first structure serves: the spares stay as they were.
        found.clear();
        nested(&wcs, 0, &mut found);
        assert_eq!(wcs.spares().len(), SPARE_STRUCTURES);
    }
}
