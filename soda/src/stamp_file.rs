//! Stamps as FITS images: one image HDU per stamp, with its own WCS, for a multi-extension
//! file of stamps (`RESPONSEFORMAT=application/fits`) and for one FITS file per stamp (the
//! entries of a zip).
//!
//! Written by hand like the stamp table, from the stamp's physical float32 values (`BITPIX`
//! -32, NaN off the image) and its image's celestial WCS cards with the stamp's own `CRPIX1`,
//! `CRPIX2`, so each HDU opens in astropy as a 2-D image with a usable WCS. Where a stamp came
//! from is in `SKY*` keywords: `SKYROW` (the catalogue row), `SKYRA`, `SKYDEC` (the position),
//! `SKYIMAGE` (the source image's ID, a long string where it must be), `SKYX`, `SKYY` (the
//! position's 1-based pixel in the source), and `MJD-OBS` when the image has one.

use std::io::Write;

use crate::SodaError;
use crate::stamp::Stamp;
use crate::stamp_table::{
    BLOCK, STAMP_TABLE, StampTable, card, card_int, card_logical, card_text, pad, write_header,
};

/// How many stamps are packaged (`RESPONSEFORMAT` of a bulk job): the frontend validates and
/// plans by it, the worker writes by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packaging {
    /// One FITS binary table of stamps ([`crate::stamp_table`]), the default.
    Table,
    /// One multi-extension FITS file, an image HDU per stamp.
    Mef,
    /// A zip of one FITS file per stamp, plus `index.csv`.
    Zip,
}

/// The media types of [`Packaging::Mef`] and [`Packaging::Zip`].
pub const MEF: &str = "application/fits";
pub const ZIP: &str = "application/zip";

impl Packaging {
    /// The packaging a `RESPONSEFORMAT` names (none: the table); any other is a usage error
    /// naming those offered.
    pub fn from_response_format(format: Option<&str>) -> Result<Packaging, SodaError> {
        let Some(format) = format else {
            return Ok(Packaging::Table);
        };
        let compact: String = format.chars().filter(|c| !c.is_whitespace()).collect();
        [Packaging::Table, Packaging::Mef, Packaging::Zip]
            .into_iter()
            .find(|p| compact.eq_ignore_ascii_case(p.media_type()))
            .ok_or_else(|| {
                SodaError::usage(format!(
                    "RESPONSEFORMAT {format:?} is not offered for bulk cutouts: this service \
                     writes {STAMP_TABLE} (the default), {MEF} (an HDU per stamp) or {ZIP} (a \
                     FITS file per stamp)"
                ))
            })
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Packaging::Table => STAMP_TABLE,
            Packaging::Mef => MEF,
            Packaging::Zip => ZIP,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Packaging::Table | Packaging::Mef => "fits",
            Packaging::Zip => "zip",
        }
    }

    /// Bytes planned for one stamp of `size` pixels a side: a table row, or an HDU with a
    /// header of about 40 cards (two blocks with a long image ID) and, in a zip, its entry's
    /// local header and central-directory record.
    pub fn planned_stamp_bytes(self, size: usize) -> u64 {
        match self {
            Packaging::Table => StampTable::Square { size }.row_bytes() as u64,
            Packaging::Mef => stamp_bytes(size * size, 30, 256),
            Packaging::Zip => stamp_bytes(size * size, 30, 256) + 200,
        }
    }
}

/// One stamp and what it came from.
#[derive(Debug, Clone, Copy)]
pub struct StampImage<'a> {
    /// The catalogue row (0-based, data rows in file order).
    pub row: u64,
    /// The catalogue position, ICRS degrees.
    pub ra: f64,
    pub dec: f64,
    pub image_id: &'a str,
    /// The image's celestial WCS keywords as 80-character cards (its `CRPIX1`, `CRPIX2` are
    /// replaced by the stamp's).
    pub wcs_cards: &'a [String],
    /// The source image's `CRPIX1`, `CRPIX2`.
    pub source_crpix: (f64, f64),
    pub mjd: Option<f64>,
    pub stamp: &'a Stamp,
}

/// Writes the empty primary HDU that a multi-extension file of stamps starts with.
pub fn write_empty_primary(out: &mut impl Write) -> Result<u64, SodaError> {
    write_header(
        out,
        &[
            card_logical("SIMPLE", true),
            card_int("BITPIX", 8),
            card_int("NAXIS", 0),
            card_logical("EXTEND", true),
            card_text("CREATOR", "Skycut bulk cutouts"),
        ],
    )?;
    Ok(BLOCK as u64)
}

/// Bytes [`write_stamp`] writes for a stamp of `pixels` pixels with `wcs_cards` cards and
/// an image ID of `id_len` bytes: what a part of stamps is planned and split by.
pub fn stamp_bytes(pixels: usize, wcs_cards: usize, id_len: usize) -> u64 {
    // Mandatory cards, EXTNAME, the SKY* cards (SKYIMAGE in as many cards as it takes), MJD-OBS,
    // CREATOR and END.
    let cards = 7 + 1 + 5 + id_len.div_ceil(60) + 1 + 1 + wcs_cards + 1;
    let blocks = |bytes: usize| bytes.div_ceil(BLOCK) * BLOCK;
    (blocks(cards * 80) + blocks(4 * pixels)) as u64
}

/// Writes one stamp as an image HDU: the primary HDU of a file of its own (`primary`), else an
/// `IMAGE` extension named `STAMP`. Returns the bytes written.
pub fn write_stamp(
    out: &mut impl Write,
    image: &StampImage<'_>,
    primary: bool,
) -> Result<u64, SodaError> {
    let stamp = image.stamp;
    let (width, height) = (stamp.window.width, stamp.window.height);
    if stamp.pixels.len() != width * height {
        return Err(SodaError::Fits(format!(
            "a stamp of {}x{} holds {} pixels",
            width,
            height,
            stamp.pixels.len()
        )));
    }
    let mut cards = if primary {
        vec![card_logical("SIMPLE", true)]
    } else {
        vec![card_text("XTENSION", "IMAGE")]
    };
    cards.extend([
        card_int("BITPIX", -32),
        card_int("NAXIS", 2),
        card_int("NAXIS1", width as i64),
        card_int("NAXIS2", height as i64),
    ]);
    if primary {
        cards.push(card_logical("EXTEND", true));
    } else {
        cards.extend([card_int("PCOUNT", 0), card_int("GCOUNT", 1)]);
        cards.push(card_text("EXTNAME", "STAMP"));
    }
    cards.push(card_int("SKYROW", image.row as i64));
    cards.push(card_real("SKYRA", image.ra));
    cards.push(card_real("SKYDEC", image.dec));
    cards.extend(long_text("SKYIMAGE", image.image_id));
    cards.push(card_real("SKYX", stamp.pixel.0));
    cards.push(card_real("SKYY", stamp.pixel.1));
    if let Some(mjd) = image.mjd.filter(|m| m.is_finite()) {
        cards.push(card_real("MJD-OBS", mjd));
    }
    let (crpix1, crpix2) = stamp.crpix(image.source_crpix);
    for wcs in image.wcs_cards {
        let key = wcs.get(..8).unwrap_or(wcs).trim_end();
        if key == "CRPIX1" || key == "CRPIX2" {
            continue;
        }
        cards.push(format!("{:<80}", wcs.get(..80).unwrap_or(wcs)));
    }
    cards.push(card_real("CRPIX1", crpix1));
    cards.push(card_real("CRPIX2", crpix2));
    cards.push(card_text("CREATOR", "Skycut bulk cutouts"));
    write_header(out, &cards)?;
    let header = (cards.len() + 1).div_ceil(36) * BLOCK;
    let mut data = Vec::with_capacity(4 * stamp.pixels.len());
    for value in &stamp.pixels {
        data.extend_from_slice(&value.to_be_bytes());
    }
    out.write_all(&data)?;
    pad(out, data.len() as u64, 0)?;
    Ok((header + data.len().div_ceil(BLOCK) * BLOCK) as u64)
}

/// A real value card, in the shortest form that reads back exactly (FITS's `E` exponent).
fn card_real(name: &str, value: f64) -> String {
    card(name, &format!("{value:?}").replace('e', "E"))
}

/// A string value in as many cards as it takes: the FITS long-string convention (a value
/// ending in `&` continued by `CONTINUE` cards), which astropy and cfitsio read whole.
fn long_text(name: &str, value: &str) -> Vec<String> {
    let value: String = value
        .bytes()
        .map(|b| crate::stamp_table::printable(b) as char)
        .collect();
    let escaped = value.replace('\'', "''");
    if escaped.len() <= 68 {
        return vec![card_text(name, &value)];
    }
    // Pieces of at most 60 characters, never splitting a doubled quote.
    let mut pieces = Vec::new();
    let mut piece = String::new();
    for c in value.chars() {
        let add = if c == '\'' { 2 } else { 1 };
        if piece.len() + add > 60 {
            pieces.push(std::mem::take(&mut piece));
        }
        piece.push_str(if c == '\'' { "''" } else { "" });
        if c != '\'' {
            piece.push(c);
        }
    }
    pieces.push(piece);
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(n, piece)| {
            let amp = if n < last { "&" } else { "" };
            let text = if n == 0 {
                format!("{name:<8}= '{piece}{amp}'")
            } else {
                format!("CONTINUE  '{piece}{amp}'")
            };
            format!("{text:<80}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::Window;
    use fitsio::FitsFile;

    fn stamp() -> Stamp {
        Stamp {
            window: Window {
                x0: -2,
                y0: 10,
                width: 3,
                height: 2,
            },
            pixel: (0.5, 11.25),
            pixels: vec![f32::NAN, 1.0, 2.0, 3.0, 4.5, 5.0],
        }
    }

    fn cards() -> Vec<String> {
        [
            ("CTYPE1", "'RA---TAN'"),
            ("CTYPE2", "'DEC--TAN'"),
            ("CRPIX1", "100.0"),
            ("CRPIX2", "50.0"),
            ("CRVAL1", "150.0"),
            ("CRVAL2", "2.0"),
            ("CDELT1", "-0.0002777777777777778"),
            ("CDELT2", "0.0002777777777777778"),
        ]
        .iter()
        .map(|(k, v)| format!("{:<80}", format!("{k:<8}= {v:>20}")))
        .collect()
    }

    #[test]
    fn stamps_written_as_a_multi_extension_file_read_back_with_their_wcs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stamps.fits");
        let (stamp, cards) = (stamp(), cards());
        let long_id = format!("butler://demo/{}?ext=SCI", "x'y".repeat(40));
        let mut bytes = Vec::new();
        write_empty_primary(&mut bytes).unwrap();
        for (row, id) in [(7u64, "butler://demo/a"), (9, long_id.as_str())] {
            let image = StampImage {
                row,
                ra: 150.25,
                dec: -2.5,
                image_id: id,
                wcs_cards: &cards,
                source_crpix: (100.0, 50.0),
                mjd: Some(60000.5),
                stamp: &stamp,
            };
            let written = write_stamp(&mut bytes, &image, false).unwrap();
            assert_eq!(written, stamp_bytes(6, cards.len(), id.len()));
        }
        assert_eq!(bytes.len() % BLOCK, 0);
        std::fs::write(&path, &bytes).unwrap();
        let mut f = FitsFile::open(&path).unwrap();
        for (hdu, row, id) in [(1, 7i64, "butler://demo/a"), (2, 9, long_id.as_str())] {
            let hdu = f.hdu(hdu).unwrap();
            let pixels: Vec<f32> = hdu.read_image(&mut f).unwrap();
            assert!(pixels[0].is_nan());
            assert_eq!(&pixels[1..], &stamp.pixels[1..]);
            assert_eq!(hdu.read_key::<i64>(&mut f, "SKYROW").unwrap(), row);
            // cfitsio's plain string read stops at the first card of a long string.
            let first = hdu.read_key::<String>(&mut f, "SKYIMAGE").unwrap();
            assert!(id.starts_with(first.trim_end_matches('&')), "{first}");
            assert_eq!(hdu.read_key::<f64>(&mut f, "CRPIX1").unwrap(), 102.0);
            assert_eq!(hdu.read_key::<f64>(&mut f, "CRPIX2").unwrap(), 40.0);
            assert_eq!(hdu.read_key::<f64>(&mut f, "MJD-OBS").unwrap(), 60000.5);
            assert_eq!(hdu.read_key::<f64>(&mut f, "SKYX").unwrap(), 0.5);
            // The image's other WCS cards are kept, and its CRPIX only as the stamp's.
            assert_eq!(
                hdu.read_key::<String>(&mut f, "CTYPE2").unwrap(),
                "DEC--TAN"
            );
            assert_eq!(
                hdu.read_key::<f64>(&mut f, "CDELT2").unwrap(),
                0.0002777777777777778
            );
        }
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(text.matches("CRPIX1  =").count(), 2, "one CRPIX1 per stamp");
    }

    #[test]
    fn the_planned_bytes_of_a_stamp_are_the_bytes_it_takes() {
        // A stamp bigger than a block, and headers of one and of two blocks.
        let stamp = Stamp {
            window: Window {
                x0: 0,
                y0: 0,
                width: 32,
                height: 32,
            },
            pixel: (16.0, 16.0),
            pixels: vec![1.0; 32 * 32],
        };
        let mut many = cards();
        many.extend((0..30).map(|n| format!("{:<80}", format!("PV2_{n:<3} = {:>20}", n))));
        for (wcs, id) in [
            (cards(), "butler://demo/a".to_owned()),
            (many, format!("butler://demo/{}", "z".repeat(200))),
        ] {
            let image = StampImage {
                row: 1,
                ra: 1.0,
                dec: 2.0,
                image_id: &id,
                wcs_cards: &wcs,
                source_crpix: (100.0, 50.0),
                mjd: Some(60000.0),
                stamp: &stamp,
            };
            let mut bytes = Vec::new();
            let written = write_stamp(&mut bytes, &image, false).unwrap();
            assert_eq!(written, bytes.len() as u64);
            assert_eq!(written, stamp_bytes(32 * 32, wcs.len(), id.len()));
        }
    }

    /// The value a long string's cards hold, read as the convention says.
    fn read_long(cards: &[String], name: &str) -> String {
        let start = cards
            .iter()
            .position(|c| c.starts_with(&format!("{name:<8}= '")))
            .unwrap();
        let mut value = String::new();
        for card in &cards[start..] {
            let quoted = &card[card.find('\'').unwrap() + 1..card.rfind('\'').unwrap()];
            let piece = quoted.replace("''", "'");
            match piece.strip_suffix('&') {
                Some(more) => value.push_str(more),
                None => {
                    value.push_str(&piece);
                    break;
                }
            }
        }
        value
    }

    #[test]
    fn a_long_image_id_is_split_into_continue_cards_that_read_back_whole() {
        for id in [
            "butler://demo/a".to_owned(),
            format!("butler://demo/{}?ext=SCI", "x'y".repeat(40)),
            "a".repeat(61),
            "b".repeat(256),
            // A doubled quote that would take a piece from 59 to 61 characters.
            format!("{}'{}", "c".repeat(59), "d".repeat(100)),
        ] {
            let cards = long_text("SKYIMAGE", &id);
            assert!(cards.iter().all(|c| c.len() == 80), "{cards:?}");
            assert!(cards[1..].iter().all(|c| c.starts_with("CONTINUE  '")));
            assert_eq!(read_long(&cards, "SKYIMAGE"), id);
        }
    }

    #[test]
    fn a_response_format_names_one_packaging_whatever_its_case_and_spaces() {
        use Packaging::*;
        assert_eq!(Packaging::from_response_format(None).unwrap(), Table);
        for (format, packaging) in [
            ("application/fits; content=stamp-table", Table),
            ("Application/FITS", Mef),
            ("application/zip", Zip),
        ] {
            assert_eq!(
                Packaging::from_response_format(Some(format)).unwrap(),
                packaging
            );
        }
        let refused = Packaging::from_response_format(Some("image/png")).unwrap_err();
        assert!(refused.to_string().contains("application/zip"), "{refused}");
        assert_eq!(Zip.extension(), "zip");
        assert_eq!(Mef.extension(), "fits");
        assert!(Zip.planned_stamp_bytes(8) > Mef.planned_stamp_bytes(8));
        assert_eq!(Table.planned_stamp_bytes(8), 68 + 4 * 64);
    }

    #[test]
    fn a_stamp_of_its_own_is_a_primary_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stamp.fits");
        let (stamp, cards) = (stamp(), cards());
        let image = StampImage {
            row: 0,
            ra: 1.0,
            dec: 2.0,
            image_id: "butler://demo/a",
            wcs_cards: &cards,
            source_crpix: (100.0, 50.0),
            mjd: None,
            stamp: &stamp,
        };
        let mut bytes = Vec::new();
        write_stamp(&mut bytes, &image, true).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let mut f = FitsFile::open(&path).unwrap();
        let hdu = f.primary_hdu().unwrap();
        let pixels: Vec<f32> = hdu.read_image(&mut f).unwrap();
        assert_eq!(pixels.len(), 6);
        assert!(hdu.read_key::<f64>(&mut f, "MJD-OBS").is_err());
    }
}
