//! The stamp table: many stamps of one size in one FITS file, one binary-table row per stamp,
//! the format machine-learning users stack into an (N, SIZE, SIZE) array in one read.
//!
//! Rows are encoded on their own ([`StampTable::encode`]) so that stamps cut in separate
//! parts (one per image, possibly by different workers) are kept as plain files of rows and
//! joined at the end by [`StampTable::assemble`], which writes the headers (only then is the
//! row count known) and copies the parts in the order given: the same parts always give the
//! same file, so a part written twice (a retried shard) still appears once.
//!
//! The file has an empty primary HDU, then `STAMPS` (one row per stamp), then `IMAGES` (one
//! row per source image: its ID and its celestial WCS as header cards). A stamp's WCS is its
//! image's with the row's `CRPIX1`/`CRPIX2`, e.g. in astropy
//! `WCS(fits.Header.fromstring(images[row["IMAGE"]]["WCS"]))` with those two values set.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::SodaError;
use crate::stamp::Stamp;

/// The media type of a stamp table (`RESPONSEFORMAT`).
pub const STAMP_TABLE: &str = "application/fits;content=stamp-table";

pub(crate) const BLOCK: usize = 2880;
pub(crate) const CARD: usize = 80;

/// A table of stamps `size` pixels a side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StampTable {
    pub size: usize,
}

/// One stamp and what it came from.
#[derive(Debug, Clone, Copy)]
pub struct StampRow<'a> {
    /// The catalogue row (0-based, data rows in file order).
    pub row: u64,
    /// The catalogue position, ICRS degrees.
    pub ra: f64,
    pub dec: f64,
    /// The image's row number in the `IMAGES` extension (0-based).
    pub image: u32,
    /// The image's observation time (MJD), NaN if unknown.
    pub mjd: f64,
    /// The source image's `CRPIX1`, `CRPIX2`.
    pub source_crpix: (f64, f64),
    pub stamp: &'a Stamp,
}

/// One source image of a table: its ID and its celestial WCS as 80-character header cards.
#[derive(Debug, Clone, PartialEq)]
pub struct TableImage {
    pub id: String,
    pub wcs_cards: Vec<String>,
}

/// The `STAMPS` columns before the stamp: name, TFORM, bytes, unit, comment.
const COLUMNS: [(&str, &str, usize, &str); 9] = [
    ("ROW", "K", 8, ""),
    ("RA", "D", 8, "deg"),
    ("DEC", "D", 8, "deg"),
    ("IMAGE", "J", 4, ""),
    ("X", "D", 8, "pix"),
    ("Y", "D", 8, "pix"),
    ("MJD", "D", 8, "d"),
    ("CRPIX1", "D", 8, "pix"),
    ("CRPIX2", "D", 8, "pix"),
];

impl StampTable {
    /// Bytes of one encoded row.
    pub fn row_bytes(&self) -> usize {
        COLUMNS.iter().map(|c| c.2).sum::<usize>() + 4 * self.size * self.size
    }

    /// Appends the row's bytes (big-endian, as FITS stores them) to `out`. A stamp of another
    /// size is a usage error, since every row of a table has the same shape.
    pub fn encode(&self, row: &StampRow<'_>, out: &mut Vec<u8>) -> Result<(), SodaError> {
        if row.stamp.pixels.len() != self.size * self.size {
            return Err(SodaError::usage(format!(
                "a stamp of {} pixels does not fit a table of {}x{} stamps",
                row.stamp.pixels.len(),
                self.size,
                self.size
            )));
        }
        let (crpix1, crpix2) = row.stamp.crpix(row.source_crpix);
        out.extend_from_slice(&row.row.to_be_bytes());
        for value in [row.ra, row.dec] {
            out.extend_from_slice(&value.to_be_bytes());
        }
        out.extend_from_slice(&row.image.to_be_bytes());
        for value in [
            row.stamp.pixel.0,
            row.stamp.pixel.1,
            row.mjd,
            crpix1,
            crpix2,
        ] {
            out.extend_from_slice(&value.to_be_bytes());
        }
        for value in &row.stamp.pixels {
            out.extend_from_slice(&value.to_be_bytes());
        }
        Ok(())
    }

    /// Writes the table at `out` from `parts` (files of encoded rows, joined in this order)
    /// and `images`, replacing any file there; returns its size. A part whose size is not a
    /// whole number of rows is refused (it was cut short).
    pub fn assemble(
        &self,
        out: &Path,
        parts: &[PathBuf],
        images: &[TableImage],
    ) -> Result<u64, SodaError> {
        let row_bytes = self.row_bytes() as u64;
        let mut rows = 0u64;
        for part in parts {
            let len = std::fs::metadata(part)?.len();
            if len % row_bytes != 0 {
                return Err(SodaError::Fits(format!(
                    "part {} holds {len} bytes, not a whole number of {row_bytes}-byte rows",
                    part.display()
                )));
            }
            rows += len / row_bytes;
        }
        let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
        write_header(
            &mut file,
            &[
                card_logical("SIMPLE", true),
                card_int("BITPIX", 8),
                card_int("NAXIS", 0),
                card_logical("EXTEND", true),
                card_text("CREATOR", "Skycut stamp table"),
            ],
        )?;
        let mut cards = table_cards("STAMPS", row_bytes, rows, COLUMNS.len() + 1);
        for (n, (name, form, _, unit)) in COLUMNS.iter().enumerate() {
            cards.push(card_text(&format!("TTYPE{}", n + 1), name));
            cards.push(card_text(&format!("TFORM{}", n + 1), form));
            if !unit.is_empty() {
                cards.push(card_text(&format!("TUNIT{}", n + 1), unit));
            }
        }
        let n = COLUMNS.len() + 1;
        cards.push(card_text(&format!("TTYPE{n}"), "STAMP"));
        cards.push(card_text(
            &format!("TFORM{n}"),
            &format!("{}E", self.size * self.size),
        ));
        cards.push(card_text(
            &format!("TDIM{n}"),
            &format!("({},{})", self.size, self.size),
        ));
        cards.push(card_int("STAMPSZ", self.size as i64));
        write_header(&mut file, &cards)?;
        let mut written = 0u64;
        for part in parts {
            let mut from = std::fs::File::open(part)?;
            written += std::io::copy(&mut from, &mut file)?;
        }
        pad(&mut file, written, 0)?;

        let id_width = images.iter().map(|i| i.id.len()).max().unwrap_or(0).max(1);
        let wcs_width = images
            .iter()
            .map(|i| i.wcs_cards.len() * CARD)
            .max()
            .unwrap_or(0)
            .max(CARD);
        let mut cards = table_cards(
            "IMAGES",
            (id_width + wcs_width) as u64,
            images.len() as u64,
            2,
        );
        cards.extend([
            card_text("TTYPE1", "ID"),
            card_text("TFORM1", &format!("{id_width}A")),
            card_text("TTYPE2", "WCS"),
            card_text("TFORM2", &format!("{wcs_width}A")),
        ]);
        write_header(&mut file, &cards)?;
        for image in images {
            let mut row = Vec::with_capacity(id_width + wcs_width);
            row.extend(image.id.bytes().map(printable));
            row.resize(id_width, b' ');
            for card in &image.wcs_cards {
                row.extend(card.bytes().map(printable));
            }
            row.resize(id_width + wcs_width, b' ');
            file.write_all(&row)?;
        }
        pad(&mut file, ((id_width + wcs_width) * images.len()) as u64, 0)?;
        file.flush()?;
        drop(file);
        Ok(std::fs::metadata(out)?.len())
    }
}

/// FITS text holds printable ASCII only.
pub(crate) fn printable(b: u8) -> u8 {
    if (0x20..0x7f).contains(&b) { b } else { b'?' }
}

/// The mandatory cards of a binary table, in the order FITS requires (`TFIELDS` eighth), then
/// its name.
fn table_cards(extname: &str, row_bytes: u64, rows: u64, fields: usize) -> Vec<String> {
    vec![
        card_text("XTENSION", "BINTABLE"),
        card_int("BITPIX", 8),
        card_int("NAXIS", 2),
        card_int("NAXIS1", row_bytes as i64),
        card_int("NAXIS2", rows as i64),
        card_int("PCOUNT", 0),
        card_int("GCOUNT", 1),
        card_int("TFIELDS", fields as i64),
        card_text("EXTNAME", extname),
    ]
}

pub(crate) fn card(name: &str, value: &str) -> String {
    let card = format!("{name:<8}= {value:>20}");
    format!("{card:<80}")
}

pub(crate) fn card_int(name: &str, value: i64) -> String {
    card(name, &value.to_string())
}

pub(crate) fn card_logical(name: &str, value: bool) -> String {
    card(name, if value { "T" } else { "F" })
}

pub(crate) fn card_text(name: &str, value: &str) -> String {
    let quoted = format!("'{:<8}'", value.replace('\'', "''"));
    format!("{:<80}", format!("{name:<8}= {quoted}"))
}

/// Writes the cards, `END` and the blank padding to a whole block.
pub(crate) fn write_header(out: &mut impl Write, cards: &[String]) -> Result<(), SodaError> {
    let mut text = String::with_capacity((cards.len() + 1) * CARD);
    for card in cards {
        text.push_str(card);
    }
    text.push_str(&format!("{:<80}", "END"));
    let len = text.len();
    out.write_all(text.as_bytes())?;
    pad(out, len as u64, b' ')
}

/// Pads `written` bytes to a whole FITS block with `fill`.
pub(crate) fn pad(out: &mut impl Write, written: u64, fill: u8) -> Result<(), SodaError> {
    let rest = (BLOCK - (written % BLOCK as u64) as usize) % BLOCK;
    out.write_all(&vec![fill; rest])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::Window;
    use fitsio::FitsFile;

    fn stamp(size: usize, start: f32) -> Stamp {
        Stamp {
            window: Window {
                x0: -2,
                y0: 10,
                width: size,
                height: size,
            },
            pixel: (1.5, 12.25),
            pixels: (0..size * size).map(|i| start + i as f32).collect(),
        }
    }

    #[test]
    fn parts_assemble_into_a_table_cfitsio_reads_row_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let table = StampTable { size: 3 };
        let (a, b) = (stamp(3, 0.0), stamp(3, 100.0));
        let mut parts = Vec::new();
        for (n, rows) in [vec![(7u64, &a, 0u32), (9, &b, 0)], vec![(8, &a, 1)]]
            .into_iter()
            .enumerate()
        {
            let mut bytes = Vec::new();
            for (row, stamp, image) in rows {
                let row = StampRow {
                    row,
                    ra: 150.0 + row as f64,
                    dec: -2.0,
                    image,
                    mjd: f64::NAN,
                    source_crpix: (50.5, 20.0),
                    stamp,
                };
                table.encode(&row, &mut bytes).unwrap();
            }
            let path = dir.path().join(format!("part{n}"));
            std::fs::write(&path, &bytes).unwrap();
            parts.push(path);
        }
        let images = vec![
            TableImage {
                id: "butler://demo/a".to_owned(),
                wcs_cards: vec![format!("{:<80}", "CTYPE1  = 'RA---TAN'")],
            },
            TableImage {
                id: "butler://demo/bb".to_owned(),
                wcs_cards: vec![],
            },
        ];
        let out = dir.path().join("table.fits");
        let bytes = table.assemble(&out, &parts, &images).unwrap();
        assert_eq!(bytes % BLOCK as u64, 0);
        // The same parts give the same file.
        let again = dir.path().join("again.fits");
        table.assemble(&again, &parts, &images).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());

        let mut f = FitsFile::open(&out).unwrap();
        let hdu = f.hdu("STAMPS").unwrap();
        assert_eq!(hdu.read_col::<i64>(&mut f, "ROW").unwrap(), vec![7, 9, 8]);
        assert_eq!(
            hdu.read_col::<f64>(&mut f, "RA").unwrap(),
            vec![157.0, 159.0, 158.0]
        );
        assert_eq!(hdu.read_col::<i32>(&mut f, "IMAGE").unwrap(), vec![0, 0, 1]);
        assert_eq!(
            hdu.read_col::<f64>(&mut f, "CRPIX1").unwrap(),
            vec![52.5; 3]
        );
        assert_eq!(
            hdu.read_col::<f64>(&mut f, "CRPIX2").unwrap(),
            vec![10.0; 3]
        );
        assert_eq!(hdu.read_col::<f64>(&mut f, "Y").unwrap(), vec![12.25; 3]);
        assert!(hdu.read_col::<f64>(&mut f, "MJD").unwrap()[0].is_nan());
        assert_eq!(hdu.read_key::<i64>(&mut f, "STAMPSZ").unwrap(), 3);
        let images_hdu = f.hdu("IMAGES").unwrap();
        assert_eq!(
            images_hdu.read_col::<String>(&mut f, "ID").unwrap(),
            vec!["butler://demo/a", "butler://demo/bb"]
        );
        // The second row's stamp, straight from the file: rows follow the header blocks.
        let raw = std::fs::read(&out).unwrap();
        // The STAMPS data start at the block after the second END card.
        let ends: Vec<usize> = raw
            .chunks(CARD)
            .enumerate()
            .filter(|(_, c)| c.starts_with(b"END "))
            .map(|(i, _)| i * CARD)
            .collect();
        let header_end = (ends[1] / BLOCK + 1) * BLOCK;
        let row = header_end + table.row_bytes();
        let first_pixel = row + table.row_bytes() - 4 * 9;
        let value = f32::from_be_bytes(raw[first_pixel..first_pixel + 4].try_into().unwrap());
        assert_eq!(value, 100.0);
    }

    #[test]
    fn a_part_cut_short_or_a_stamp_of_another_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let table = StampTable { size: 3 };
        let part = dir.path().join("short");
        std::fs::write(&part, vec![0u8; table.row_bytes() + 5]).unwrap();
        let out = dir.path().join("t.fits");
        assert!(table.assemble(&out, &[part], &[]).is_err());
        let big = stamp(4, 0.0);
        let row = StampRow {
            row: 0,
            ra: 0.0,
            dec: 0.0,
            image: 0,
            mjd: 0.0,
            source_crpix: (0.0, 0.0),
            stamp: &big,
        };
        assert!(table.encode(&row, &mut Vec::new()).is_err());
    }
}
