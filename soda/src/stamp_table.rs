//! The stamp table: many stamps in one FITS file, one binary-table row per stamp. Stamps of one
//! size (`SIZE`) are a fixed-size array column that machine-learning users stack into an
//! (N, SIZE, SIZE) array in one read; stamps of their own shapes (`RADIUS`, or a catalogue's
//! per-row sizes) are a variable-length array column (`1QE`, the pixels in the table's heap)
//! beside their `NX`, `NY`, which astropy reads as one array per row.
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

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use crate::SodaError;
use crate::stamp::Stamp;

/// The media type of a stamp table (`RESPONSEFORMAT`).
pub const STAMP_TABLE: &str = "application/fits;content=stamp-table";

pub(crate) const BLOCK: usize = 2880;
pub(crate) const CARD: usize = 80;

/// A table of stamps: all of one size, or each of its own shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StampTable {
    /// Every stamp `size`×`size` pixels: `STAMP` is a fixed-size array with `TDIM`.
    Square { size: usize },
    /// Stamps of any shape: `NX`, `NY` and `STAMP` a variable-length array.
    Varied,
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

/// Bytes of the columns before the stamp.
const COLUMN_BYTES: usize = {
    let mut bytes = 0;
    let mut n = 0;
    while n < COLUMNS.len() {
        bytes += COLUMNS[n].2;
        n += 1;
    }
    bytes
};

/// A varied table's `NX`, `NY` (J) and `STAMP` descriptor (Q: element count and heap offset).
const VARIED_BYTES: usize = 4 + 4 + 16;

impl StampTable {
    /// Bytes of one row of the table itself (in a varied table, without its heap pixels).
    pub fn row_bytes(&self) -> usize {
        match self {
            StampTable::Square { size } => COLUMN_BYTES + 4 * size * size,
            StampTable::Varied => COLUMN_BYTES + VARIED_BYTES,
        }
    }

    /// Bytes [`StampTable::encode`] writes for `stamp`: what a part is planned and split by.
    pub fn encoded_bytes(&self, stamp: &Stamp) -> usize {
        match self {
            StampTable::Square { .. } => self.row_bytes(),
            StampTable::Varied => self.row_bytes() + 4 * stamp.pixels.len(),
        }
    }

    /// Appends the row's bytes (big-endian, as FITS stores them) to `out`; in a varied table,
    /// the row with a heap offset of 0, then its pixels ([`StampTable::assemble`] moves them to
    /// the heap). A stamp of another size than a square table's is a usage error, since every
    /// row of such a table has the same shape.
    pub fn encode(&self, row: &StampRow<'_>, out: &mut Vec<u8>) -> Result<(), SodaError> {
        let window = row.stamp.window;
        if row.stamp.pixels.len() != window.width * window.height {
            return Err(SodaError::usage(format!(
                "a stamp of {}x{} holds {} pixels",
                window.width,
                window.height,
                row.stamp.pixels.len()
            )));
        }
        if let StampTable::Square { size } = *self
            && (window.width, window.height) != (size, size)
        {
            return Err(SodaError::usage(format!(
                "a stamp of {}x{} pixels does not fit a table of {size}x{size} stamps",
                window.width, window.height
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
        if *self == StampTable::Varied {
            let side = |n: usize| {
                i32::try_from(n).map_err(|_| SodaError::usage(format!("a stamp {n} pixels wide")))
            };
            out.extend_from_slice(&side(window.width)?.to_be_bytes());
            out.extend_from_slice(&side(window.height)?.to_be_bytes());
            out.extend_from_slice(&(row.stamp.pixels.len() as i64).to_be_bytes());
            out.extend_from_slice(&0i64.to_be_bytes());
        }
        for value in &row.stamp.pixels {
            out.extend_from_slice(&value.to_be_bytes());
        }
        Ok(())
    }

    /// Writes the table at `out` from `parts` (files of encoded rows, joined in this order)
    /// and `images`, replacing any file there; returns its size. A part that does not end
    /// with a whole row is refused (it was cut short).
    pub fn assemble(
        &self,
        out: &Path,
        parts: &[PathBuf],
        images: &[TableImage],
    ) -> Result<u64, SodaError> {
        let row_bytes = self.row_bytes() as u64;
        let (mut rows, mut heap, mut longest) = (0u64, 0u64, 0u64);
        for part in parts {
            let len = std::fs::metadata(part)?.len();
            let cut_short = || {
                SodaError::Fits(format!(
                    "part {} holds {len} bytes, not a whole number of {row_bytes}-byte rows",
                    part.display()
                ))
            };
            match self {
                StampTable::Square { .. } => {
                    if len % row_bytes != 0 {
                        return Err(cut_short());
                    }
                    rows += len / row_bytes;
                }
                StampTable::Varied => {
                    let mut at = 0u64;
                    for_each_varied_row(part, |_, pixels| {
                        rows += 1;
                        heap += 4 * pixels;
                        longest = longest.max(pixels);
                        at += row_bytes + 4 * pixels;
                        Ok(())
                    })
                    .map_err(|_| cut_short())?;
                    if at != len {
                        return Err(cut_short());
                    }
                }
            }
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
        let stamp_column = match self {
            StampTable::Square { .. } => COLUMNS.len() + 1,
            StampTable::Varied => COLUMNS.len() + 3,
        };
        let mut cards = table_cards("STAMPS", row_bytes, rows, heap, stamp_column);
        for (n, (name, form, _, unit)) in COLUMNS.iter().enumerate() {
            cards.push(card_text(&format!("TTYPE{}", n + 1), name));
            cards.push(card_text(&format!("TFORM{}", n + 1), form));
            if !unit.is_empty() {
                cards.push(card_text(&format!("TUNIT{}", n + 1), unit));
            }
        }
        let n = stamp_column;
        match self {
            StampTable::Square { size } => {
                cards.push(card_text(&format!("TTYPE{n}"), "STAMP"));
                cards.push(card_text(
                    &format!("TFORM{n}"),
                    &format!("{}E", size * size),
                ));
                cards.push(card_text(&format!("TDIM{n}"), &format!("({size},{size})")));
                cards.push(card_int("STAMPSZ", *size as i64));
            }
            StampTable::Varied => {
                for (m, axis) in [(n - 2, "NX"), (n - 1, "NY")] {
                    cards.push(card_text(&format!("TTYPE{m}"), axis));
                    cards.push(card_text(&format!("TFORM{m}"), "J"));
                    cards.push(card_text(&format!("TUNIT{m}"), "pix"));
                }
                cards.push(card_text(&format!("TTYPE{n}"), "STAMP"));
                cards.push(card_text(&format!("TFORM{n}"), &format!("1QE({longest})")));
            }
        }
        write_header(&mut file, &cards)?;
        let mut written = 0u64;
        match self {
            StampTable::Square { .. } => {
                for part in parts {
                    let mut from = std::fs::File::open(part)?;
                    written += std::io::copy(&mut from, &mut file)?;
                }
            }
            StampTable::Varied => {
                // The rows, each pointing at its pixels in the heap, then the heap.
                let descriptor = row_bytes as usize - 8;
                let mut offset = 0u64;
                for part in parts {
                    for_each_varied_row(part, |row, pixels| {
                        row[descriptor..].copy_from_slice(&offset.to_be_bytes());
                        offset += 4 * pixels;
                        file.write_all(row)?;
                        Ok(())
                    })?;
                }
                for part in parts {
                    let mut from =
                        std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(part)?);
                    let mut row = vec![0u8; row_bytes as usize];
                    loop {
                        match from.read_exact(&mut row) {
                            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                            other => other?,
                        }
                        let pixels = varied_pixels(&row);
                        std::io::copy(&mut (&mut from).take(4 * pixels), &mut file)?;
                    }
                }
                written = rows * row_bytes + heap;
            }
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
            0,
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

/// The pixel count in an encoded varied row.
fn varied_pixels(row: &[u8]) -> u64 {
    let at = COLUMN_BYTES + 8;
    let mut count = [0u8; 8];
    count.copy_from_slice(&row[at..at + 8]);
    i64::from_be_bytes(count).max(0) as u64
}

/// Calls `each` with every encoded row of a varied table's part (its pixels skipped) and the
/// row's pixel count; fails on a row cut short.
fn for_each_varied_row(
    part: &Path,
    mut each: impl FnMut(&mut [u8], u64) -> Result<(), SodaError>,
) -> Result<(), SodaError> {
    let mut from = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(part)?);
    let mut row = vec![0u8; StampTable::Varied.row_bytes()];
    loop {
        // A row is read whole or not at all: zero bytes left is the end.
        if from.fill_buf()?.is_empty() {
            return Ok(());
        }
        from.read_exact(&mut row)?;
        let pixels = varied_pixels(&row);
        let skip = i64::try_from(4 * pixels)
            .map_err(|_| SodaError::Fits("a stamp of too many pixels".to_owned()))?;
        // Seeking past the end is allowed: the caller checks the part's length.
        from.seek_relative(skip)?;
        each(&mut row, pixels)?;
    }
}

/// FITS text holds printable ASCII only.
pub(crate) fn printable(b: u8) -> u8 {
    if (0x20..0x7f).contains(&b) { b } else { b'?' }
}

/// The mandatory cards of a binary table, in the order FITS requires (`TFIELDS` eighth), then
/// its name.
fn table_cards(extname: &str, row_bytes: u64, rows: u64, heap: u64, fields: usize) -> Vec<String> {
    vec![
        card_text("XTENSION", "BINTABLE"),
        card_int("BITPIX", 8),
        card_int("NAXIS", 2),
        card_int("NAXIS1", row_bytes as i64),
        card_int("NAXIS2", rows as i64),
        card_int("PCOUNT", heap as i64),
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
        let table = StampTable::Square { size: 3 };
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
        let table = StampTable::Square { size: 3 };
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

    fn shaped(width: usize, height: usize, start: f32) -> Stamp {
        Stamp {
            window: Window {
                x0: 4,
                y0: -1,
                width,
                height,
            },
            pixel: (6.0, 1.0),
            pixels: (0..width * height).map(|i| start + i as f32).collect(),
        }
    }

    /// The (header, data) of the `STAMPS` HDU of the file at `path`, split on the cards.
    fn stamps_hdu(raw: &[u8]) -> (String, &[u8]) {
        let ends: Vec<usize> = raw
            .chunks(CARD)
            .enumerate()
            .filter(|(_, c)| c.starts_with(b"END "))
            .map(|(i, _)| i * CARD)
            .collect();
        let start = (ends[0] / BLOCK + 1) * BLOCK;
        let data = (ends[1] / BLOCK + 1) * BLOCK;
        let header = String::from_utf8(raw[start..data].to_vec()).unwrap();
        (header, &raw[data..])
    }

    fn card_value(header: &str, name: &str) -> String {
        header
            .as_bytes()
            .chunks(CARD)
            .map(|c| std::str::from_utf8(c).unwrap())
            .find(|c| c.starts_with(&format!("{name:<8}=")))
            .map(|c| c[10..].trim().trim_matches('\'').trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in {header}"))
    }

    #[test]
    fn stamps_of_their_own_shapes_go_to_the_heap_in_row_order() {
        let dir = tempfile::tempdir().unwrap();
        let table = StampTable::Varied;
        let stamps = [shaped(3, 2, 0.0), shaped(4, 4, 100.0), shaped(1, 5, 200.0)];
        let mut parts = Vec::new();
        for (n, group) in [&stamps[..2], &stamps[2..]].into_iter().enumerate() {
            let mut bytes = Vec::new();
            for (m, stamp) in group.iter().enumerate() {
                let row = StampRow {
                    row: (10 * n + m) as u64,
                    ra: 1.0,
                    dec: 2.0,
                    image: 0,
                    mjd: f64::NAN,
                    source_crpix: (10.0, 10.0),
                    stamp,
                };
                let before = bytes.len();
                table.encode(&row, &mut bytes).unwrap();
                assert_eq!(bytes.len() - before, table.encoded_bytes(stamp));
            }
            let path = dir.path().join(format!("part{n}"));
            std::fs::write(&path, &bytes).unwrap();
            parts.push(path);
        }
        let out = dir.path().join("varied.fits");
        let size = table.assemble(&out, &parts, &[]).unwrap();
        let raw = std::fs::read(&out).unwrap();
        assert_eq!(size, raw.len() as u64);
        assert_eq!(size % BLOCK as u64, 0);
        let (header, data) = stamps_hdu(&raw);
        let row_bytes = table.row_bytes();
        assert_eq!(card_value(&header, "NAXIS1"), row_bytes.to_string());
        assert_eq!(card_value(&header, "NAXIS2"), "3");
        assert_eq!(
            card_value(&header, "PCOUNT"),
            (4 * (6 + 16 + 5)).to_string()
        );
        assert_eq!(card_value(&header, "TFIELDS"), "12");
        assert_eq!(card_value(&header, "TTYPE10"), "NX");
        assert_eq!(card_value(&header, "TTYPE11"), "NY");
        assert_eq!(card_value(&header, "TFORM12"), "1QE(16)");
        assert!(!header.contains("TDIM"), "{header}");
        let be_i32 = |b: &[u8]| i32::from_be_bytes(b.try_into().unwrap());
        let be_i64 = |b: &[u8]| i64::from_be_bytes(b.try_into().unwrap());
        let heap = &data[3 * row_bytes..];
        let mut expected_offset = 0i64;
        for (n, stamp) in stamps.iter().enumerate() {
            let row = &data[n * row_bytes..(n + 1) * row_bytes];
            let at = COLUMN_BYTES;
            assert_eq!(be_i32(&row[at..at + 4]) as usize, stamp.window.width);
            assert_eq!(be_i32(&row[at + 4..at + 8]) as usize, stamp.window.height);
            let count = be_i64(&row[at + 8..at + 16]);
            let offset = be_i64(&row[at + 16..at + 24]);
            assert_eq!(count as usize, stamp.pixels.len());
            assert_eq!(offset, expected_offset);
            let pixels: Vec<f32> = heap[offset as usize..(offset + 4 * count) as usize]
                .chunks(4)
                .map(|b| f32::from_be_bytes(b.try_into().unwrap()))
                .collect();
            assert_eq!(pixels, stamp.pixels);
            expected_offset += 4 * count;
        }
        // Cut short anywhere, a part is refused.
        let whole = std::fs::read(&parts[0]).unwrap();
        for cut in [1, 10, table.row_bytes(), whole.len() - 3] {
            std::fs::write(&parts[0], &whole[..whole.len() - cut]).unwrap();
            assert!(table.assemble(&out, &parts, &[]).is_err(), "cut {cut}");
        }
        // A square table takes only its own size.
        let row = StampRow {
            row: 0,
            ra: 0.0,
            dec: 0.0,
            image: 0,
            mjd: 0.0,
            source_crpix: (0.0, 0.0),
            stamp: &stamps[0],
        };
        assert!(
            StampTable::Square { size: 3 }
                .encode(&row, &mut Vec::new())
                .is_err()
        );
    }
}
