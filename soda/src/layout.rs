//! Where things are in a FITS file, from its header bytes alone: each HDU's header cards, where
//! its data starts and where the next HDU begins. No file, no cfitsio: the worker walks a remote
//! object's headers with it before it knows which bytes to fetch.
//!
//! The walk mirrors the HDU choice of `cutout` (the `?ext=` name, else the primary HDU or the
//! first image extension with 2 or more axes) and answers [`Walk::Unsure`] wherever it could
//! differ from cfitsio's (tile-compressed images, random groups, odd headers), so that a caller
//! falls back to reading the whole file rather than guess.

use std::ops::Range;

/// The FITS block: headers and data are padded to multiples of it.
pub const BLOCK: u64 = 2880;
const CARD: usize = 80;

/// One HDU's header as the walk read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HduLayout {
    /// The HDU number, 0 for the primary HDU.
    pub index: usize,
    /// File offsets of the header blocks (the END card's block included).
    pub header: Range<u64>,
    /// File offset of the first data byte.
    pub data_start: u64,
    /// File offset of the next HDU's header (the data padded to a block).
    pub next: u64,
    /// NAXIS1, NAXIS2, ... as declared.
    pub axes: Vec<u64>,
    /// |BITPIX| / 8.
    pub pixel_bytes: u64,
    extname: Option<String>,
    /// `SIMPLE` or `XTENSION = 'IMAGE'`: data the cutout reads as an image array.
    plain_image: bool,
    /// Something cfitsio may treat as an image in ways this walk does not model (a
    /// tile-compressed image, random groups).
    unusual: bool,
}

impl HduLayout {
    /// A plain image of 2 or more axes, none of length 0: what the cutout accepts.
    fn is_cuttable_image(&self) -> bool {
        self.plain_image && self.axes.len() >= 2 && !self.axes.contains(&0)
    }
}

/// The outcome of walking a file's headers towards the HDU a cutout reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Walk {
    /// Every header up to and including the chosen HDU's, in file order; the last is the one
    /// the cutout reads.
    Found(Vec<HduLayout>),
    /// The walk needs the bytes from this offset on (a header not read yet, or not complete).
    Need(u64),
    /// The walk cannot be sure which HDU cfitsio would choose or how it is stored: read the
    /// whole file.
    Unsure(String),
}

/// Walks the headers of a file of `size` bytes, given the bytes read so far as `(offset, bytes)`
/// chunks, to the HDU that a cutout with `extension` (an `EXTNAME`, else the first image) reads.
pub fn walk(chunks: &[(u64, &[u8])], size: u64, extension: Option<&str>) -> Walk {
    let mut offset = 0u64;
    let mut seen = Vec::new();
    loop {
        if offset >= size {
            return Walk::Unsure(match extension {
                Some(name) => format!("no extension {name:?} found by the header walk"),
                None => "no image HDU found by the header walk".to_owned(),
            });
        }
        let hdu = match parse_hdu(chunks, offset, seen.len(), size) {
            Ok(Parsed::Hdu(hdu)) => hdu,
            Ok(Parsed::Need(block)) => return Walk::Need(block),
            Err(why) => return Walk::Unsure(why),
        };
        if hdu.next > size {
            return Walk::Unsure(format!(
                "HDU {} ends at byte {} of a {size}-byte file",
                hdu.index, hdu.next
            ));
        }
        let chosen = match extension {
            Some(name) => hdu
                .extname
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name)),
            None => hdu.unusual || hdu.is_cuttable_image(),
        };
        if hdu.unusual && chosen {
            return Walk::Unsure(format!("HDU {} is not a plain image", hdu.index));
        }
        offset = hdu.next;
        seen.push(hdu);
        if chosen {
            let last = seen.last().is_some_and(HduLayout::is_cuttable_image);
            return if last {
                Walk::Found(seen)
            } else {
                Walk::Unsure("the named extension is not a plain image".to_owned())
            };
        }
    }
}

/// Walks every header of a file of `size` bytes, for a caller that describes all of its
/// images (the sky index) rather than cutting one: [`Walk::Found`] holds every HDU in file
/// order once the last one's data ends the file. A tile-compressed image or random groups, or
/// bytes after the last HDU that are not one, are [`Walk::Unsure`], as in [`walk`].
pub fn walk_all(chunks: &[(u64, &[u8])], size: u64) -> Walk {
    let mut offset = 0u64;
    let mut seen: Vec<HduLayout> = Vec::new();
    while offset < size {
        let hdu = match parse_hdu(chunks, offset, seen.len(), size) {
            Ok(Parsed::Hdu(hdu)) => hdu,
            Ok(Parsed::Need(block)) => return Walk::Need(block),
            Err(why) => return Walk::Unsure(why),
        };
        if hdu.next > size {
            return Walk::Unsure(format!(
                "HDU {} ends at byte {} of a {size}-byte file",
                hdu.index, hdu.next
            ));
        }
        if hdu.unusual {
            return Walk::Unsure(format!("HDU {} is not a plain image", hdu.index));
        }
        offset = hdu.next;
        seen.push(hdu);
    }
    if seen.is_empty() {
        return Walk::Unsure("the file is empty".to_owned());
    }
    Walk::Found(seen)
}

/// The bytes at `range` if the chunks hold all of them in one chunk.
fn bytes_at<'a>(chunks: &[(u64, &'a [u8])], range: Range<u64>) -> Option<&'a [u8]> {
    chunks.iter().find_map(|(start, bytes)| {
        let end = start + bytes.len() as u64;
        (*start <= range.start && range.end <= end).then(|| {
            let from = (range.start - start) as usize;
            &bytes[from..from + (range.end - range.start) as usize]
        })
    })
}

enum Parsed {
    Hdu(HduLayout),
    /// The header block at this offset has not been read yet.
    Need(u64),
}

/// Parses the header starting at `offset` of a file of `size` bytes.
fn parse_hdu(
    chunks: &[(u64, &[u8])],
    offset: u64,
    index: usize,
    size: u64,
) -> Result<Parsed, String> {
    let mut cards: Vec<(String, String)> = Vec::new();
    let mut block = offset;
    let header_end = loop {
        if block + BLOCK > size {
            return Err(format!(
                "HDU {index}: no END card before the end of the file"
            ));
        }
        let Some(bytes) = bytes_at(chunks, block..block + BLOCK) else {
            return Ok(Parsed::Need(block));
        };
        if !bytes.is_ascii() {
            return Err(format!("HDU {index}: a header card is not ASCII"));
        }
        let mut ended = false;
        for card in bytes.chunks(CARD) {
            let card = std::str::from_utf8(card)
                .map_err(|_| format!("HDU {index}: a header card is not ASCII"))?;
            let name = card[..8].trim_end();
            if name == "END" {
                ended = true;
                break;
            }
            if card.get(8..10) == Some("= ") {
                cards.push((name.to_owned(), card[10..].to_owned()));
            }
        }
        block += BLOCK;
        if ended {
            break block;
        }
        // No real header is this long; a file without END is not FITS.
        if block - offset > 10_000 * BLOCK {
            return Err(format!("HDU {index}: no END card"));
        }
    };
    let value = |key: &str| {
        cards
            .iter()
            .find(|(n, _)| n == key)
            .map(|(_, v)| v.as_str())
    };
    let integer = |key: &str| -> Result<Option<i64>, String> {
        value(key)
            .map(|v| {
                let v = v.split('/').next().unwrap_or_default().trim();
                v.parse::<i64>()
                    .map_err(|_| format!("HDU {index}: {key} = {v:?} is not an integer"))
            })
            .transpose()
    };
    let logical = |key: &str| {
        value(key).is_some_and(|v| v.split('/').next().unwrap_or_default().trim() == "T")
    };
    let plain_image = if index == 0 {
        if !logical("SIMPLE") {
            return Err("the file does not start with SIMPLE = T".to_owned());
        }
        true
    } else {
        let Some(xtension) = value("XTENSION").and_then(string_value) else {
            return Err(format!("HDU {index} has no XTENSION"));
        };
        xtension == "IMAGE"
    };
    let bitpix = integer("BITPIX")?.ok_or_else(|| format!("HDU {index} has no BITPIX"))?;
    if ![8, 16, 32, 64, -32, -64].contains(&bitpix) {
        return Err(format!("HDU {index}: BITPIX {bitpix}"));
    }
    let naxis = integer("NAXIS")?.ok_or_else(|| format!("HDU {index} has no NAXIS"))?;
    if !(0..=999).contains(&naxis) {
        return Err(format!("HDU {index}: NAXIS {naxis}"));
    }
    let mut axes = Vec::with_capacity(naxis as usize);
    for i in 1..=naxis {
        let n = integer(&format!("NAXIS{i}"))?
            .filter(|n| *n >= 0)
            .ok_or_else(|| format!("HDU {index}: NAXIS{i} missing or negative"))?;
        axes.push(n as u64);
    }
    let groups = logical("GROUPS");
    let pcount = integer("PCOUNT")?.unwrap_or(0);
    let gcount = integer("GCOUNT")?.unwrap_or(1);
    if pcount < 0 || gcount < 0 {
        return Err(format!("HDU {index}: negative PCOUNT or GCOUNT"));
    }
    let pixel_bytes = bitpix.unsigned_abs() / 8;
    // FITS 4.0 §4.4.1: |BITPIX|/8 × GCOUNT × (PCOUNT + NAXIS1 × … × NAXISm), with NAXIS1 left
    // out of the product for random groups.
    let counted = if groups {
        axes.get(1..).unwrap_or(&[])
    } else {
        &axes[..]
    };
    let elements = if naxis == 0 {
        Some(0)
    } else {
        counted
            .iter()
            .try_fold(1u64, |acc, &n| acc.checked_mul(n))
            .and_then(|n| n.checked_add(pcount as u64))
            .and_then(|n| n.checked_mul(gcount as u64))
    };
    let data_bytes = elements
        .and_then(|n| n.checked_mul(pixel_bytes))
        .ok_or_else(|| format!("HDU {index}: data size overflows"))?;
    let next = header_end
        .checked_add(data_bytes.div_ceil(BLOCK) * BLOCK)
        .ok_or_else(|| format!("HDU {index}: data size overflows"))?;
    Ok(Parsed::Hdu(HduLayout {
        index,
        header: offset..header_end,
        data_start: header_end,
        next,
        axes,
        pixel_bytes,
        extname: value("EXTNAME").and_then(string_value),
        plain_image,
        unusual: groups || logical("ZIMAGE") || (plain_image && (pcount != 0 || gcount != 1)),
    }))
}

/// The text of a FITS string value (`'IMAGE   '` → `IMAGE`), quotes doubled inside undone.
fn string_value(raw: &str) -> Option<String> {
    let raw = raw.trim_start().strip_prefix('\'')?;
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            if chars.peek() == Some(&'\'') {
                chars.next();
                out.push('\'');
            } else {
                return Some(out.trim_end().to_owned());
            }
        } else {
            out.push(c);
        }
    }
    None
}

/// Merges sorted byte ranges whose gap is at most `gap` bytes, so that nearby rows cost one
/// request, not one each.
pub fn coalesce(ranges: &[Range<u64>], gap: u64) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| !r.is_empty()).cloned().collect();
    sorted.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(gap) => {
                last.end = last.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header of `cards` padded with blanks to whole blocks, END included.
    fn header(cards: &[&str]) -> Vec<u8> {
        let mut text = String::new();
        for c in cards.iter().chain(&["END"]) {
            text.push_str(&format!("{c:<80}"));
        }
        let mut bytes = text.into_bytes();
        bytes.resize(bytes.len().div_ceil(2880) * 2880, b' ');
        bytes
    }

    fn image(cards: &[&str], axes: &[u64], bitpix: i64) -> Vec<u8> {
        let mut all: Vec<String> = cards.iter().map(|c| (*c).to_owned()).collect();
        all.push(format!("{:<8}= {:>20}", "BITPIX", bitpix));
        all.push(format!("{:<8}= {:>20}", "NAXIS", axes.len()));
        for (i, n) in axes.iter().enumerate() {
            all.push(format!("{:<8}= {:>20}", format!("NAXIS{}", i + 1), n));
        }
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut bytes = header(&refs);
        let data = axes.iter().product::<u64>() * bitpix.unsigned_abs() / 8;
        let padded = data.div_ceil(2880) * 2880;
        bytes.resize(
            bytes.len() + if axes.is_empty() { 0 } else { padded as usize },
            7,
        );
        bytes
    }

    fn mef() -> Vec<u8> {
        let mut file = image(&["SIMPLE  =                    T"], &[], 8);
        file.extend(image(
            &["XTENSION= 'IMAGE   '", "EXTNAME = 'SCI'"],
            &[100, 50],
            -32,
        ));
        file.extend(image(
            &["XTENSION= 'IMAGE   '", "EXTNAME = 'O''HARA  '"],
            &[10, 10, 3],
            16,
        ));
        file
    }

    #[test]
    fn the_walk_finds_the_first_image_or_the_named_extension() {
        let file = mef();
        let size = file.len() as u64;
        let chunks = [(0, &file[..])];
        let Walk::Found(hdus) = walk(&chunks, size, None) else {
            panic!("no image found");
        };
        assert_eq!(hdus.len(), 2);
        assert_eq!(hdus[1].header, 2880..5760);
        assert_eq!(hdus[1].data_start, 5760);
        assert_eq!(hdus[1].axes, vec![100, 50]);
        assert_eq!(hdus[1].pixel_bytes, 4);
        assert_eq!(hdus[1].next, 5760 + 20_000u64.div_ceil(2880) * 2880);
        let Walk::Found(hdus) = walk(&chunks, size, Some("o'hara")) else {
            panic!("extension not found");
        };
        assert_eq!(hdus.len(), 3);
        assert_eq!(hdus[2].axes, vec![10, 10, 3]);
        assert!(matches!(walk(&chunks, size, Some("NONE")), Walk::Unsure(_)));
        assert!(matches!(
            walk(&chunks, size, Some("PRIMARY")),
            Walk::Unsure(_)
        ));
    }

    #[test]
    fn the_walk_asks_for_the_bytes_it_lacks() {
        let file = mef();
        let size = file.len() as u64;
        assert_eq!(walk(&[], size, None), Walk::Need(0));
        assert_eq!(walk(&[(0, &file[..2880])], size, None), Walk::Need(2880));
        // Half a header block is not a header.
        assert_eq!(
            walk(&[(0, &file[..2880]), (2880, &file[2880..4000])], size, None),
            Walk::Need(2880)
        );
        let hdus = walk(&[(0, &file[..2880]), (2880, &file[2880..5760])], size, None);
        assert!(matches!(hdus, Walk::Found(ref h) if h.len() == 2));
    }

    #[test]
    fn compressed_images_and_strange_files_are_left_to_the_whole_file_path() {
        let mut file = image(&["SIMPLE  =                    T"], &[], 8);
        file.extend(header(&[
            "XTENSION= 'BINTABLE'",
            "BITPIX  =                    8",
            "NAXIS   =                    2",
            "NAXIS1  =                    8",
            "NAXIS2  =                    1",
            "ZIMAGE  =                    T",
        ]));
        file.resize(file.len() + 2880, 0);
        let size = file.len() as u64;
        assert!(matches!(
            walk(&[(0, &file[..])], size, None),
            Walk::Unsure(_)
        ));
        let not_fits = vec![b' '; 2880];
        assert!(matches!(
            walk(&[(0, &not_fits[..])], 2880, None),
            Walk::Unsure(_)
        ));
        // A header that promises more data than the object holds.
        let short = image(&["SIMPLE  =                    T"], &[100, 100], -32);
        assert!(matches!(
            walk(&[(0, &short[..2880])], 2880, None),
            Walk::Unsure(_)
        ));
    }

    #[test]
    fn the_whole_walk_reads_every_header_to_the_end_of_the_file() {
        let file = mef();
        let size = file.len() as u64;
        let Walk::Found(hdus) = walk_all(&[(0, &file[..])], size) else {
            panic!("not every header found");
        };
        assert_eq!(hdus.len(), 3);
        assert_eq!(hdus[2].axes, vec![10, 10, 3]);
        assert_eq!(hdus[2].next, size);
        // Each header is asked for where it starts, past the data before it.
        assert_eq!(walk_all(&[], size), Walk::Need(0));
        assert_eq!(walk_all(&[(0, &file[..2880])], size), Walk::Need(2880));
        let data_end = hdus[1].next as usize;
        assert_eq!(
            walk_all(&[(0, &file[..5760])], size),
            Walk::Need(data_end as u64)
        );
        let pieces = [
            (0, &file[..5760]),
            (data_end as u64, &file[data_end..data_end + 2880]),
        ];
        assert!(matches!(walk_all(&pieces, size), Walk::Found(ref h) if h.len() == 3));
        // Bytes after the last HDU that are no HDU, and an empty object, are left to cfitsio.
        let mut trailing = file.clone();
        trailing.extend([0u8; 100]);
        assert!(matches!(
            walk_all(&[(0, &trailing[..])], trailing.len() as u64),
            Walk::Unsure(_)
        ));
        assert!(matches!(walk_all(&[], 0), Walk::Unsure(_)));
    }

    #[test]
    fn the_whole_walk_leaves_compressed_images_to_the_whole_file_path() {
        let mut file = image(&["SIMPLE  =                    T"], &[], 8);
        file.extend(header(&[
            "XTENSION= 'BINTABLE'",
            "BITPIX  =                    8",
            "NAXIS   =                    2",
            "NAXIS1  =                    8",
            "NAXIS2  =                    1",
            "ZIMAGE  =                    T",
        ]));
        file.resize(file.len() + 2880, 0);
        assert!(matches!(
            walk_all(&[(0, &file[..])], file.len() as u64),
            Walk::Unsure(_)
        ));
    }

    #[test]
    fn nearby_ranges_coalesce() {
        assert_eq!(
            coalesce(&[20..30, 0..10, 12..15, 100..110, 5..8], 2),
            vec![0..15, 20..30, 100..110]
        );
        assert_eq!(coalesce(&[0..10, 10..20], 0), vec![0..20]);
        assert!(coalesce(&[3..3, 7..7], 10).is_empty());
    }
}
