//! VOTable catalogues (VOTable 1.1 to 1.5): the first `TABLE` that has `DATA`, serialized as
//! `TABLEDATA` (read a `TR` at a time with quick-xml) or as `BINARY`/`BINARY2` (a base64
//! `STREAM`, decoded a few kilobytes at a time and cut into rows by the `FIELD` datatypes and
//! arraysizes). Columns are found by name, then by UCD; a null (the BINARY2 null flag, the
//! `VALUES null` sentinel of an integer field, an empty cell) is a null cell.
//!
//! CDS's `votable` crate streams rows too, but its 0.7 reaches into serde's private API of one
//! serde release (it does not build against the workspace's serde), so this reader is written
//! on the XML and base64 crates the workspace already has.

use std::io::BufRead;

use base64::Engine;
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::{CatalogueReader, CatalogueRow, Cell, Columns, RowCells, RowError, find_columns};
use crate::SodaError;

/// Base64 text decoded per refill of a binary stream.
const STREAM_CHUNK: usize = 1 << 16;

/// Longest value of a wanted column kept from a binary row (an `id` is a short string).
const MAX_KEPT_BYTES: usize = 1 << 16;

/// A VOTable catalogue being read.
pub struct VoTableCatalogue<R: BufRead> {
    fields: Vec<Field>,
    columns: Columns,
    data: Rows<R>,
    next_row: u64,
}

/// Where the rows come from.
enum Rows<R: BufRead> {
    TableData {
        reader: Reader<R>,
        buf: Vec<u8>,
        cells: Vec<String>,
    },
    Binary {
        stream: Base64Stream<R>,
        binary2: bool,
        row: Vec<u8>,
    },
    Done,
}

/// How the table's data is written.
enum Serialization {
    /// An empty `<TABLEDATA/>`.
    Empty,
    TableData,
    Binary {
        binary2: bool,
    },
}

/// One `FIELD`.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    ucd: Option<String>,
    datatype: Datatype,
    /// Elements per value: fixed dimensions multiplied; `variable` when the last is `*`.
    count: usize,
    variable: bool,
    /// The `VALUES null` sentinel of an integer field.
    null: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Datatype {
    Boolean,
    Bit,
    UnsignedByte,
    Short,
    Int,
    Long,
    Char,
    UnicodeChar,
    Float,
    Double,
    FloatComplex,
    DoubleComplex,
}

impl Datatype {
    fn parse(text: &str) -> Option<Datatype> {
        Some(match text.trim() {
            "boolean" => Datatype::Boolean,
            "bit" => Datatype::Bit,
            "unsignedByte" => Datatype::UnsignedByte,
            "short" => Datatype::Short,
            "int" => Datatype::Int,
            "long" => Datatype::Long,
            "char" => Datatype::Char,
            "unicodeChar" => Datatype::UnicodeChar,
            "float" => Datatype::Float,
            "double" => Datatype::Double,
            "floatComplex" => Datatype::FloatComplex,
            "doubleComplex" => Datatype::DoubleComplex,
            _ => return None,
        })
    }

    /// Bytes of one element in the binary serializations (bits are counted apart).
    fn size(self) -> usize {
        match self {
            Datatype::Boolean | Datatype::Bit | Datatype::UnsignedByte | Datatype::Char => 1,
            Datatype::Short | Datatype::UnicodeChar => 2,
            Datatype::Int | Datatype::Float => 4,
            Datatype::Long | Datatype::Double | Datatype::FloatComplex => 8,
            Datatype::DoubleComplex => 16,
        }
    }

    fn is_text(self) -> bool {
        matches!(self, Datatype::Char | Datatype::UnicodeChar)
    }
}

impl<R: BufRead> VoTableCatalogue<R> {
    /// Reads the document up to the data of its first table with data and finds the columns.
    pub fn open(
        reader: R,
        ra_column: Option<&str>,
        dec_column: Option<&str>,
    ) -> Result<VoTableCatalogue<R>, SodaError> {
        let mut reader = Reader::from_reader(reader);
        reader.config_mut().expand_empty_elements = false;
        let mut buf = Vec::new();
        let mut fields: Vec<Field> = Vec::new();
        let mut in_field = false;
        let mut seen_root = false;
        let mut in_data = false;
        let kind = loop {
            buf.clear();
            let event = reader.read_event_into(&mut buf).map_err(xml_error)?;
            let (start, empty) = match &event {
                Event::Start(e) => (e, false),
                Event::Empty(e) => (e, true),
                Event::End(e) => {
                    match e.local_name().as_ref() {
                        b"FIELD" => in_field = false,
                        b"DATA" => in_data = false,
                        _ => {}
                    }
                    continue;
                }
                Event::Eof => {
                    return Err(SodaError::usage(if seen_root {
                        "the VOTable has no table with data (TABLEDATA, BINARY or BINARY2), or \
                         is cut short before it"
                    } else {
                        "the catalogue starts as XML but has no VOTABLE element"
                    }));
                }
                _ => continue,
            };
            let name = start.local_name();
            if !seen_root {
                if name.as_ref() != b"VOTABLE" {
                    return Err(SodaError::usage(format!(
                        "the catalogue is an XML document whose root is <{}>, not a VOTable",
                        String::from_utf8_lossy(name.as_ref())
                    )));
                }
                seen_root = true;
                continue;
            }
            match name.as_ref() {
                // A table's fields; a table without data gives way to the next.
                b"TABLE" => fields.clear(),
                b"FIELD" => {
                    fields.push(field(start)?);
                    in_field = !empty;
                }
                b"VALUES" if in_field => {
                    if let Some(null) = attribute(start, "null")?
                        && let Some(field) = fields.last_mut()
                    {
                        field.null = null.trim().parse().ok();
                    }
                }
                b"DATA" => in_data = !empty,
                b"TABLEDATA" if in_data => {
                    break if empty {
                        Serialization::Empty
                    } else {
                        Serialization::TableData
                    };
                }
                b"BINARY" | b"BINARY2" if in_data => {
                    let binary2 = name.as_ref() == b"BINARY2";
                    stream_start(&mut reader, &mut buf)?;
                    break Serialization::Binary { binary2 };
                }
                b"FITS" if in_data => {
                    return Err(SodaError::usage(
                        "the VOTable's data is serialized as FITS, which this service does not \
                         read in a VOTable: write it as TABLEDATA or BINARY2 (or send the \
                         catalogue as CSV or Parquet)",
                    ));
                }
                _ => {}
            }
        };
        let names: Vec<String> = fields.iter().map(|f| f.name.clone()).collect();
        let ucds: Vec<Option<String>> = fields.iter().map(|f| f.ucd.clone()).collect();
        let columns = find_columns(&names, &ucds, ra_column, dec_column)?;
        for index in [columns.ra, columns.dec]
            .into_iter()
            .chain(columns.numbers())
        {
            let field = &fields[index];
            if !field.datatype.is_text() && (field.variable || field.count != 1) {
                return Err(SodaError::usage(format!(
                    "the VOTable field {:?} is an array (arraysize), not one number per row",
                    field.name
                )));
            }
        }
        let data = match kind {
            Serialization::Empty => Rows::Done,
            Serialization::TableData => Rows::TableData {
                reader,
                buf,
                cells: Vec::new(),
            },
            Serialization::Binary { binary2 } => Rows::Binary {
                stream: Base64Stream::new(reader.into_inner()),
                binary2,
                row: Vec::new(),
            },
        };
        Ok(VoTableCatalogue {
            fields,
            columns,
            data,
            next_row: 0,
        })
    }

    /// The cells of the wanted columns, by role, from one row's values.
    fn cells(&self, mut value: impl FnMut(usize) -> Cell) -> RowCells {
        RowCells {
            ra: value(self.columns.ra),
            dec: value(self.columns.dec),
            id: self.columns.id.map(&mut value),
            t_min: self.columns.t_min.map(&mut value),
            t_max: self.columns.t_max.map(&mut value),
            size: self.columns.size.map(&mut value),
            radius: self.columns.radius.map(&mut value),
        }
    }
}

impl<R: BufRead> CatalogueReader for VoTableCatalogue<R> {
    fn next_row(&mut self) -> Result<Option<Result<CatalogueRow, RowError>>, SodaError> {
        let row = self.next_row;
        let cells = match &mut self.data {
            Rows::Done => return Ok(None),
            Rows::TableData { reader, buf, cells } => {
                if !next_tr(reader, buf, cells)? {
                    self.data = Rows::Done;
                    return Ok(None);
                }
                if cells.len() != self.fields.len() {
                    self.next_row += 1;
                    return Ok(Some(Err(RowError {
                        row,
                        reason: format!(
                            "{} cells where the table has {} fields",
                            cells.len(),
                            self.fields.len()
                        ),
                    })));
                }
                let cells = std::mem::take(cells);
                let fields = &self.fields;
                let row_cells = self.cells(|n| text_cell(&fields[n], &cells[n]));
                if let Rows::TableData { cells: slot, .. } = &mut self.data {
                    *slot = cells;
                }
                row_cells
            }
            Rows::Binary {
                stream,
                binary2,
                row: bytes,
            } => {
                let Some(offsets) =
                    binary_row(stream, *binary2, &self.fields, &self.columns, bytes)?
                else {
                    self.data = Rows::Done;
                    return Ok(None);
                };
                let bytes = std::mem::take(bytes);
                let fields = &self.fields;
                let row_cells = self.cells(|n| match &offsets[n] {
                    Some(range) => binary_cell(&fields[n], &bytes[range.clone()]),
                    None => Cell::Null,
                });
                if let Rows::Binary { row: slot, .. } = &mut self.data {
                    *slot = bytes;
                }
                row_cells
            }
        };
        self.next_row += 1;
        Ok(Some(cells.into_row(row)))
    }
}

fn xml_error(e: quick_xml::Error) -> SodaError {
    SodaError::usage(format!("the VOTable is not well-formed XML: {e}"))
}

/// An attribute's unescaped value.
fn attribute(start: &BytesStart<'_>, name: &str) -> Result<Option<String>, SodaError> {
    match start.try_get_attribute(name) {
        Ok(Some(a)) => a
            .unescape_value()
            .map(|v| Some(v.into_owned()))
            .map_err(xml_error),
        Ok(None) => Ok(None),
        Err(e) => Err(xml_error(e.into())),
    }
}

/// A `FIELD` element's description.
fn field(start: &BytesStart<'_>) -> Result<Field, SodaError> {
    let name = match attribute(start, "name")? {
        Some(name) => name,
        None => attribute(start, "ID")?.unwrap_or_default(),
    };
    let datatype_text = attribute(start, "datatype")?.unwrap_or_default();
    let datatype = Datatype::parse(&datatype_text).ok_or_else(|| {
        SodaError::usage(format!(
            "the VOTable field {name:?} has datatype {datatype_text:?}, which is not a VOTable \
             datatype"
        ))
    })?;
    let arraysize = attribute(start, "arraysize")?;
    let (mut count, mut variable) = (1usize, false);
    if let Some(size) = arraysize
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let dims: Vec<&str> = size.split('x').collect();
        for (n, dim) in dims.iter().enumerate() {
            let dim = dim.trim();
            if n + 1 == dims.len() && dim.ends_with('*') {
                variable = true;
                continue;
            }
            let length: usize = dim.parse().map_err(|_| {
                SodaError::usage(format!(
                    "the VOTable field {name:?} has arraysize {size:?}, which is not N, N*, * or \
                     NxM…"
                ))
            })?;
            count = count.checked_mul(length).ok_or_else(|| {
                SodaError::usage(format!(
                    "the VOTable field {name:?} has arraysize {size:?}, too large"
                ))
            })?;
        }
    }
    Ok(Field {
        name,
        ucd: attribute(start, "ucd")?,
        datatype,
        count,
        variable,
        null: None,
    })
}

/// Reads to the `STREAM` start of a `BINARY`/`BINARY2` element, which must be base64 inline.
fn stream_start<R: BufRead>(reader: &mut Reader<R>, buf: &mut Vec<u8>) -> Result<(), SodaError> {
    loop {
        buf.clear();
        match reader.read_event_into(buf).map_err(xml_error)? {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == b"STREAM" => {
                let encoding = attribute(&e, "encoding")?.unwrap_or_default();
                if attribute(&e, "href")?.is_some() || encoding.trim() != "base64" {
                    return Err(SodaError::usage(format!(
                        "the VOTable's STREAM is {}: this service reads only a base64 stream \
                         inside the document",
                        if encoding.is_empty() {
                            "a reference to another file".to_owned()
                        } else {
                            format!("encoded as {encoding:?}")
                        }
                    )));
                }
                return Ok(());
            }
            Event::Text(t) if t.iter().all(u8::is_ascii_whitespace) => {}
            Event::Comment(_) => {}
            Event::Eof => {
                return Err(SodaError::usage(
                    "the VOTable is cut short before its STREAM",
                ));
            }
            _ => {
                return Err(SodaError::usage(
                    "the VOTable's BINARY or BINARY2 element holds no STREAM",
                ));
            }
        }
    }
}

/// Reads the next `TR` into `cells` (one string per `TD`); false at `</TABLEDATA>`.
fn next_tr<R: BufRead>(
    reader: &mut Reader<R>,
    buf: &mut Vec<u8>,
    cells: &mut Vec<String>,
) -> Result<bool, SodaError> {
    cells.clear();
    let mut in_tr = false;
    let mut in_td = false;
    loop {
        buf.clear();
        match reader.read_event_into(buf).map_err(xml_error)? {
            Event::Start(e) => match e.local_name().as_ref() {
                b"TR" => in_tr = true,
                b"TD" if in_tr => {
                    cells.push(String::new());
                    in_td = true;
                }
                other => {
                    return Err(SodaError::usage(format!(
                        "the VOTable's TABLEDATA holds a <{}> where a TR or TD belongs",
                        String::from_utf8_lossy(other)
                    )));
                }
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                b"TD" if in_tr => cells.push(String::new()),
                b"TR" => return Ok(true),
                _ => {}
            },
            Event::Text(t) if in_td => {
                let text = t.decode().map_err(|e| xml_error(e.into()))?;
                if let Some(cell) = cells.last_mut() {
                    cell.push_str(&text);
                }
            }
            Event::CData(t) if in_td => {
                if let Some(cell) = cells.last_mut() {
                    cell.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::GeneralRef(r) if in_td => {
                let resolved = match r.resolve_char_ref().map_err(xml_error)? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| xml_error(e.into()))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| {
                                SodaError::usage(format!(
                                    "the VOTable uses an unknown entity &{name};"
                                ))
                            })?
                            .to_owned()
                    }
                };
                if let Some(cell) = cells.last_mut() {
                    cell.push_str(&resolved);
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"TD" => in_td = false,
                b"TR" => return Ok(true),
                b"TABLEDATA" => return Ok(false),
                _ => {}
            },
            Event::Eof => {
                return Err(SodaError::usage(
                    "the VOTable is cut short inside its TABLEDATA",
                ));
            }
            _ => {}
        }
    }
}

/// A TABLEDATA cell as a value of its field.
fn text_cell(field: &Field, text: &str) -> Cell {
    let text = text.trim();
    if text.is_empty() {
        return Cell::Null;
    }
    if field.datatype.is_text() {
        return Cell::Text(text.to_owned());
    }
    if let Some(null) = field.null
        && text.parse::<i64>().ok() == Some(null)
    {
        return Cell::Null;
    }
    match text.parse::<f64>() {
        Ok(v) => Cell::Number(v),
        // VOTable writes infinities as +Inf and -Inf.
        Err(_) => match text {
            "+Inf" | "Inf" => Cell::Number(f64::INFINITY),
            "-Inf" => Cell::Number(f64::NEG_INFINITY),
            _ => Cell::Text(text.to_owned()),
        },
    }
}

/// A binary value of a field (its bytes, the element count prefix removed) as a cell.
fn binary_cell(field: &Field, bytes: &[u8]) -> Cell {
    if field.datatype.is_text() {
        let text = if field.datatype == Datatype::UnicodeChar {
            let units = bytes
                .chunks_exact(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]));
            char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect::<String>()
        } else {
            String::from_utf8_lossy(bytes).into_owned()
        };
        let text = text.trim_end_matches(['\0', ' ']).to_owned();
        return if text.is_empty() {
            Cell::Null
        } else {
            Cell::Text(text)
        };
    }
    let size = field.datatype.size();
    let Some(first) = bytes.get(..size) else {
        return Cell::Null;
    };
    let integer = |v: i64| match field.null {
        Some(null) if null == v => Cell::Null,
        _ => Cell::Number(v as f64),
    };
    let mut b = [0u8; 8];
    let n = size.min(8);
    b[..n].copy_from_slice(&first[..n]);
    match field.datatype {
        Datatype::UnsignedByte => integer(i64::from(first[0])),
        Datatype::Short => integer(i64::from(i16::from_be_bytes([b[0], b[1]]))),
        Datatype::Int => integer(i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        Datatype::Long => integer(i64::from_be_bytes(b)),
        Datatype::Float => Cell::Number(f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
        Datatype::Double => Cell::Number(f64::from_be_bytes(b)),
        // A position is not a boolean, a bit or a complex number: the row says so.
        Datatype::Boolean
        | Datatype::Bit
        | Datatype::FloatComplex
        | Datatype::DoubleComplex
        | Datatype::Char
        | Datatype::UnicodeChar => Cell::Text(format!("a {:?} value", field.datatype)),
    }
}

/// Reads one binary row into `bytes`, keeping the values of the wanted columns; returns their
/// byte ranges (by field; `None` for a null or unwanted field), or `None` at the end of the
/// stream.
fn binary_row<R: BufRead>(
    stream: &mut Base64Stream<R>,
    binary2: bool,
    fields: &[Field],
    columns: &Columns,
    bytes: &mut Vec<u8>,
) -> Result<Option<Vec<Option<std::ops::Range<usize>>>>, SodaError> {
    bytes.clear();
    if stream.at_end()? {
        return Ok(None);
    }
    let wanted = |n: usize| {
        n == columns.ra
            || n == columns.dec
            || columns.id == Some(n)
            || columns.numbers().any(|c| c == n)
    };
    let mut nulls = vec![0u8; if binary2 { fields.len().div_ceil(8) } else { 0 }];
    stream.read_exact(&mut nulls)?;
    let mut ranges = Vec::with_capacity(fields.len());
    for (n, field) in fields.iter().enumerate() {
        let mut count = field.count as u64;
        if field.variable {
            let mut prefix = [0u8; 4];
            stream.read_exact(&mut prefix)?;
            count = count.saturating_mul(u64::from(u32::from_be_bytes(prefix)));
        }
        let length = if field.datatype == Datatype::Bit {
            count.div_ceil(8)
        } else {
            count.saturating_mul(field.datatype.size() as u64)
        };
        let null = binary2 && nulls[n / 8] & (0x80 >> (n % 8)) != 0;
        if wanted(n) && !null && length <= MAX_KEPT_BYTES as u64 {
            let start = bytes.len();
            bytes.resize(start + length as usize, 0);
            stream.read_exact(&mut bytes[start..])?;
            ranges.push(Some(start..bytes.len()));
        } else {
            stream.skip(length)?;
            ranges.push(None);
        }
    }
    Ok(Some(ranges))
}

/// The decoded bytes of a base64 `STREAM`, read from the document a chunk at a time up to the
/// `<` of `</STREAM>`.
struct Base64Stream<R: BufRead> {
    reader: R,
    /// Base64 characters not yet decoded (fewer than four after a refill).
    text: Vec<u8>,
    decoded: Vec<u8>,
    position: usize,
    ended: bool,
}

impl<R: BufRead> Base64Stream<R> {
    fn new(reader: R) -> Base64Stream<R> {
        Base64Stream {
            reader,
            text: Vec::new(),
            decoded: Vec::new(),
            position: 0,
            ended: false,
        }
    }

    /// Decodes more of the stream; false when it has ended and all is consumed.
    fn refill(&mut self) -> Result<bool, SodaError> {
        while self.position == self.decoded.len() {
            if self.ended {
                return Ok(false);
            }
            while self.text.len() < STREAM_CHUNK && !self.ended {
                let available = self.reader.fill_buf()?;
                if available.is_empty() {
                    return Err(SodaError::usage(
                        "the VOTable is cut short inside its binary STREAM",
                    ));
                }
                let end = available.iter().position(|&b| b == b'<');
                let taken = &available[..end.unwrap_or(available.len())];
                self.text
                    .extend(taken.iter().filter(|b| !b.is_ascii_whitespace()));
                let used = taken.len();
                self.reader.consume(used);
                self.ended = end.is_some();
            }
            let whole = if self.ended {
                self.text.len()
            } else {
                self.text.len() / 4 * 4
            };
            self.decoded.clear();
            self.position = 0;
            base64::engine::general_purpose::STANDARD
                .decode_vec(&self.text[..whole], &mut self.decoded)
                .map_err(|e| {
                    SodaError::usage(format!("the VOTable's binary STREAM is not base64: {e}"))
                })?;
            self.text.drain(..whole);
        }
        Ok(true)
    }

    fn at_end(&mut self) -> Result<bool, SodaError> {
        Ok(!self.refill()?)
    }

    fn read_exact(&mut self, out: &mut [u8]) -> Result<(), SodaError> {
        let mut filled = 0;
        while filled < out.len() {
            if !self.refill()? {
                return Err(row_cut_short());
            }
            let n = (out.len() - filled).min(self.decoded.len() - self.position);
            out[filled..filled + n]
                .copy_from_slice(&self.decoded[self.position..self.position + n]);
            self.position += n;
            filled += n;
        }
        Ok(())
    }

    fn skip(&mut self, mut length: u64) -> Result<(), SodaError> {
        while length > 0 {
            if !self.refill()? {
                return Err(row_cut_short());
            }
            let n = length.min((self.decoded.len() - self.position) as u64);
            self.position += n as usize;
            length -= n;
        }
        Ok(())
    }
}

fn row_cut_short() -> SodaError {
    SodaError::usage(
        "the VOTable's binary STREAM ends inside a row (cut short, or the FIELDs do not \
         describe the data)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> Vec<Result<CatalogueRow, RowError>> {
        let mut cat = VoTableCatalogue::open(text.as_bytes(), None, None).unwrap();
        let mut rows = Vec::new();
        while let Some(row) = cat.next_row().unwrap() {
            rows.push(row);
        }
        rows
    }

    fn document(fields: &str, data: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
             <VOTABLE version=\"1.4\" xmlns=\"http://www.ivoa.net/xml/VOTable/v1.3\">\n\
             <RESOURCE type=\"results\"><INFO name=\"QUERY_STATUS\" value=\"OK\"/>\n\
             <TABLE name=\"cat\">\n{fields}\n<DATA>{data}</DATA></TABLE></RESOURCE></VOTABLE>\n"
        )
    }

    const UCD_FIELDS: &str = r#"<FIELD name="source" datatype="char" arraysize="*"/>
        <FIELD name="RAJ2000" datatype="double" ucd="pos.eq.ra;meta.main" unit="deg"/>
        <FIELD name="DEJ2000" datatype="float" ucd="pos.eq.dec;meta.main" unit="deg">
          <DESCRIPTION>Declination</DESCRIPTION></FIELD>
        <FIELD name="id" datatype="char" arraysize="*"/>
        <FIELD name="t_min" datatype="int"><VALUES null="-1"/></FIELD>"#;

    /// The rows of UCD_FIELDS, serialized as BINARY (`binary2` false) or BINARY2.
    fn binary_rows(binary2: bool) -> String {
        // (source, ra, dec, id, t_min); None is null.
        type Values<'a> = (&'a str, f64, f32, Option<&'a str>, Option<i32>);
        let rows: [Values; 3] = [
            ("a", 10.5, -3.25, Some("butler://x/y &amp; z"), Some(60000)),
            ("bb", 370.0, 4.0, None, None),
            ("", 1.0, f32::NAN, None, Some(1)),
        ];
        let mut bytes = Vec::new();
        for (source, ra, dec, id, t_min) in rows {
            if binary2 {
                let mut flags = 0u8;
                if id.is_none() {
                    flags |= 0x80 >> 3;
                }
                if t_min.is_none() {
                    flags |= 0x80 >> 4;
                }
                bytes.push(flags);
            }
            bytes.extend((source.len() as u32).to_be_bytes());
            bytes.extend(source.as_bytes());
            bytes.extend(ra.to_be_bytes());
            bytes.extend(dec.to_be_bytes());
            let id = id.unwrap_or("");
            bytes.extend((id.len() as u32).to_be_bytes());
            bytes.extend(id.as_bytes());
            bytes.extend(t_min.unwrap_or(-1).to_be_bytes());
        }
        let text = base64::engine::general_purpose::STANDARD.encode(&bytes);
        // Line breaks anywhere, as writers wrap the base64 text.
        let wrapped: Vec<String> = text
            .as_bytes()
            .chunks(7)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let tag = if binary2 { "BINARY2" } else { "BINARY" };
        document(
            UCD_FIELDS,
            &format!(
                "<{tag}><STREAM encoding='base64'>\n{}\n</STREAM></{tag}>",
                wrapped.join("\n")
            ),
        )
    }

    fn check_ucd_rows(rows: &[Result<CatalogueRow, RowError>]) {
        assert_eq!(rows.len(), 3, "{rows:?}");
        let first = rows[0].as_ref().unwrap();
        assert_eq!((first.row, first.ra, first.dec), (0, 10.5, -3.25));
        assert_eq!((first.t_min, first.t_max), (Some(60000.0), None));
        let second = rows[1].as_ref().unwrap();
        assert_eq!((second.ra, second.dec, second.t_min), (10.0, 4.0, None));
        assert_eq!(second.id, None);
        let third = rows[2].as_ref().unwrap_err();
        assert_eq!(third.row, 2);
        assert!(third.reason.contains("not a sky position"), "{third:?}");
    }

    #[test]
    fn tabledata_rows_are_read_with_columns_found_by_ucd() {
        let data = "<TABLEDATA>\n\
            <TR><TD>a</TD><TD>10.5</TD><TD>-3.25</TD><TD>butler://x/y &amp; z</TD><TD>60000</TD></TR>\n\
            <!-- a comment --><TR><TD>bb</TD><TD> 370 </TD><TD>4</TD><TD/><TD>-1</TD></TR>\n\
            <TR><TD></TD><TD>1</TD><TD>NaN</TD><TD></TD><TD>1</TD></TR>\n\
            </TABLEDATA>";
        let rows = rows(&document(UCD_FIELDS, data));
        check_ucd_rows(&rows);
        assert_eq!(
            rows[0].as_ref().unwrap().id.as_deref(),
            Some("butler://x/y & z")
        );
    }

    #[test]
    fn binary2_rows_are_read_with_their_null_flags() {
        let rows = rows(&binary_rows(true));
        check_ucd_rows(&rows);
        assert_eq!(
            rows[0].as_ref().unwrap().id.as_deref(),
            Some("butler://x/y &amp; z"),
            "binary strings are not XML-escaped"
        );
    }

    #[test]
    fn binary_rows_are_read_with_their_null_sentinels() {
        check_ucd_rows(&rows(&binary_rows(false)));
    }

    #[test]
    fn names_and_racol_win_over_ucds_and_integers_are_positions_too() {
        let fields = r#"<FIELD name="ra" datatype="short"/><FIELD name="x" datatype="long" ucd="pos.eq.ra;meta.main"/>
            <FIELD name="Dec" datatype="unsignedByte"/>"#;
        let data = "<TABLEDATA><TR><TD>7</TD><TD>8</TD><TD>9</TD></TR></TABLEDATA>";
        let text = document(fields, data);
        let row = rows(&text).remove(0).unwrap();
        assert_eq!((row.ra, row.dec), (7.0, 9.0));
        let mut cat = VoTableCatalogue::open(text.as_bytes(), Some("X"), None).unwrap();
        assert_eq!(cat.next_row().unwrap().unwrap().unwrap().ra, 8.0);
    }

    #[test]
    fn an_array_is_no_position() {
        let fields = r#"<FIELD name="ra" datatype="double" arraysize="2"/><FIELD name="dec" datatype="double"/>"#;
        let text = document(fields, "<TABLEDATA></TABLEDATA>");
        let opened = VoTableCatalogue::open(text.as_bytes(), None, None);
        assert!(matches!(opened, Err(SodaError::Usage(m)) if m.contains("\"ra\" is an array")));
    }

    #[test]
    fn a_table_without_position_columns_is_refused_naming_its_fields() {
        let fields = r#"<FIELD name="x" datatype="double"/><FIELD name="y" datatype="double"/>"#;
        let text = document(fields, "<TABLEDATA></TABLEDATA>");
        let Err(SodaError::Usage(message)) = VoTableCatalogue::open(text.as_bytes(), None, None)
        else {
            panic!("a table without positions must be refused");
        };
        assert!(message.contains("x, y"), "{message}");
        assert!(message.contains("pos.eq.ra;meta.main"), "{message}");
    }

    #[test]
    fn a_cut_short_or_foreign_document_is_a_usage_error() {
        let whole = binary_rows(true);
        let cut = &whole[..whole.find("</STREAM>").unwrap() - 20];
        let mut cat = VoTableCatalogue::open(cut.as_bytes(), None, None).unwrap();
        let outcome = (0..4).try_for_each(|_| cat.next_row().map(|_| ()));
        assert!(
            matches!(outcome, Err(SodaError::Usage(ref m)) if m.contains("cut short")),
            "{outcome:?}"
        );
        let whole = document(
            UCD_FIELDS,
            "<TABLEDATA><TR><TD>a</TD><TD>1</TD><TD>2</TD><TD/><TD/></TR></TABLEDATA>",
        );
        let tabledata = &whole[..whole.find("<TD>1").unwrap()];
        let mut cat = VoTableCatalogue::open(tabledata.as_bytes(), None, None).unwrap();
        assert!(matches!(cat.next_row(), Err(SodaError::Usage(m)) if m.contains("cut short")));
        for (text, says) in [
            ("<html><body/></html>", "not a VOTable"),
            ("<VOTABLE><RESOURCE>", "no table with data"),
            (
                &document(UCD_FIELDS, "<FITS><STREAM href='x.fits'/></FITS>") as &str,
                "FITS",
            ),
            (
                &document(UCD_FIELDS, "<BINARY2><STREAM href='http://x/y'/></BINARY2>"),
                "base64",
            ),
        ] {
            let opened = VoTableCatalogue::open(text.as_bytes(), None, None);
            assert!(
                matches!(&opened, Err(SodaError::Usage(m)) if m.contains(says)),
                "{text}: {:?}",
                opened.err()
            );
        }
    }

    #[test]
    fn a_huge_variable_length_prefix_is_an_error_not_an_allocation() {
        let fields = r#"<FIELD name="name" datatype="char" arraysize="*"/>
            <FIELD name="ra" datatype="double"/><FIELD name="dec" datatype="double"/>"#;
        let mut bytes = vec![0u8];
        bytes.extend(u32::MAX.to_be_bytes());
        bytes.extend([0u8; 16]);
        let text = document(
            fields,
            &format!(
                "<BINARY2><STREAM encoding=\"base64\">{}</STREAM></BINARY2>",
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            ),
        );
        let mut cat = VoTableCatalogue::open(text.as_bytes(), None, None).unwrap();
        assert!(
            matches!(cat.next_row(), Err(SodaError::Usage(m)) if m.contains("ends inside a row"))
        );
    }
}
