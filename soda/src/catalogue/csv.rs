//! CSV catalogues (RFC 4180: a header line of column names, quoted fields with doubled quotes,
//! `\r\n` or `\n`; lines starting with `#` are comments, as astropy's ECSV header is), read a
//! line at a time. CSV has no UCDs: the columns are found by name.

use std::io::BufRead;

use super::{CatalogueRow, Cell, Columns, RowCells, RowError, find_columns};
use crate::SodaError;

/// A CSV catalogue being read.
pub struct CsvCatalogue<R> {
    reader: R,
    columns: Columns,
    /// Fields of the header line.
    count: usize,
    next_row: u64,
    bytes: Vec<u8>,
}

/// Reads the next line into `bytes`; its text (lossy) and whether it was UTF-8, or `None` at the
/// end.
fn next_line<'a, R: BufRead>(
    reader: &mut R,
    bytes: &'a mut Vec<u8>,
) -> Result<Option<(std::borrow::Cow<'a, str>, bool)>, SodaError> {
    bytes.clear();
    if reader.read_until(b'\n', bytes)? == 0 {
        return Ok(None);
    }
    let utf8 = std::str::from_utf8(bytes).is_ok();
    Ok(Some((String::from_utf8_lossy(bytes), utf8)))
}

impl<R: BufRead> CsvCatalogue<R> {
    /// Reads the header line and finds the columns; `ra_column`/`dec_column` name them
    /// (`RACOL`/`DECCOL`), else `ra` and `dec` (any case). A missing column is a usage error
    /// naming the columns there are.
    pub fn open(
        mut reader: R,
        ra_column: Option<&str>,
        dec_column: Option<&str>,
    ) -> Result<CsvCatalogue<R>, SodaError> {
        let mut bytes = Vec::new();
        let header = loop {
            let Some((line, utf8)) = next_line(&mut reader, &mut bytes)? else {
                return Err(SodaError::usage(
                    "the catalogue is empty: a CSV header line naming the columns is needed",
                ));
            };
            let text = line.trim_end_matches(['\r', '\n']);
            if !text.starts_with('#') && !text.trim().is_empty() {
                if !utf8 {
                    return Err(SodaError::usage(
                        "the catalogue's header line is not UTF-8 text (nor a VOTable or Parquet \
                         file)",
                    ));
                }
                break split(text)?;
            }
        };
        let columns = find_columns(&header, &[], ra_column, dec_column)?;
        Ok(CsvCatalogue {
            reader,
            columns,
            count: header.len(),
            next_row: 0,
            bytes,
        })
    }

    /// The next row: `None` at the end, `Some(Err)` for a row without a usable position, or
    /// an I/O error (the stream broke) as `Err`.
    pub fn next_row(&mut self) -> Result<Option<Result<CatalogueRow, RowError>>, SodaError> {
        loop {
            let Some((line, utf8)) = next_line(&mut self.reader, &mut self.bytes)? else {
                return Ok(None);
            };
            let text = line.trim_end_matches(['\r', '\n']);
            if text.trim().is_empty() || text.starts_with('#') {
                continue;
            }
            if !utf8 {
                let row = self.next_row;
                self.next_row += 1;
                return Ok(Some(Err(RowError {
                    row,
                    reason: "the line is not UTF-8 text".to_owned(),
                })));
            }
            let row = self.next_row;
            self.next_row += 1;
            let fields = match split(text) {
                Ok(fields) => fields,
                Err(e) => {
                    return Ok(Some(Err(RowError {
                        row,
                        reason: e.to_string(),
                    })));
                }
            };
            return Ok(Some(parse_row(row, fields, &self.columns, self.count)));
        }
    }
}

fn parse_row(
    row: u64,
    mut fields: Vec<String>,
    columns: &Columns,
    count: usize,
) -> Result<CatalogueRow, RowError> {
    if fields.len() != count {
        return Err(RowError {
            row,
            reason: format!("{} fields where the header names {count}", fields.len()),
        });
    }
    let mut take = |index: usize| Cell::Text(std::mem::take(&mut fields[index]));
    RowCells {
        ra: take(columns.ra),
        dec: take(columns.dec),
        id: columns.id.map(&mut take),
        t_min: columns.t_min.map(&mut take),
        t_max: columns.t_max.map(&mut take),
        size: columns.size.map(&mut take),
        radius: columns.radius.map(&mut take),
    }
    .into_row(row)
}

/// The fields of one CSV line (RFC 4180 quoting).
fn split(line: &str) -> Result<Vec<String>, SodaError> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.trim().is_empty() && !was_quoted => {
                field.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(SodaError::usage(
            "a quoted field does not end on its line (fields spanning lines are not read)",
        ));
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(
        text: &str,
        ra: Option<&str>,
        dec: Option<&str>,
    ) -> Vec<Result<CatalogueRow, RowError>> {
        let mut cat = CsvCatalogue::open(text.as_bytes(), ra, dec).unwrap();
        let mut rows = Vec::new();
        while let Some(row) = cat.next_row().unwrap() {
            rows.push(row);
        }
        rows
    }

    #[test]
    fn ra_and_dec_are_found_in_any_case_with_optional_columns() {
        let rows = read(
            "# written by astropy\nid,RA,Dec,t_min,t_max\r\n\"butler://a/b, c\",10.5,-3,,\r\n,370,4,60000,60001\n",
            None,
            None,
        );
        assert_eq!(rows.len(), 2);
        let first = rows[0].as_ref().unwrap();
        assert_eq!((first.row, first.ra, first.dec), (0, 10.5, -3.0));
        assert_eq!(first.id.as_deref(), Some("butler://a/b, c"));
        assert_eq!((first.t_min, first.t_max), (None, None));
        let second = rows[1].as_ref().unwrap();
        assert_eq!((second.ra, second.id.as_deref()), (10.0, None));
        assert_eq!((second.t_min, second.t_max), (Some(60000.0), Some(60001.0)));
    }

    #[test]
    fn racol_and_deccol_name_the_columns() {
        let rows = read(",alpha,delta\n0,1,2\n", Some("ALPHA"), Some("delta"));
        assert_eq!(rows[0].as_ref().unwrap().ra, 1.0);
        let missing = CsvCatalogue::open("x,y\n1,2\n".as_bytes(), None, None);
        let Err(SodaError::Usage(message)) = missing else {
            panic!("a catalogue without ra must be refused");
        };
        assert!(
            message.contains("no column \"ra\"") && message.contains("RACOL"),
            "{message}"
        );
        assert!(message.contains("x, y"), "{message}");
        let named = CsvCatalogue::open("x,y\n".as_bytes(), Some("x"), Some("z"));
        assert!(matches!(named, Err(SodaError::Usage(m)) if m.contains("(named by DECCOL)")));
        assert!(CsvCatalogue::open("".as_bytes(), None, None).is_err());
    }

    #[test]
    fn rows_without_a_usable_position_are_errors_of_their_own() {
        let rows = read("ra,dec\n1,nan\n1,95\nx,1\n1,2,3\n\"1,2\n4,5\n", None, None);
        let reasons: Vec<String> = rows
            .iter()
            .map(|r| match r {
                Ok(row) => format!("ok {}", row.row),
                Err(e) => format!("{} {}", e.row, e.reason),
            })
            .collect();
        assert!(
            reasons[0].starts_with("0 (1, NaN) is not a sky position"),
            "{reasons:?}"
        );
        assert!(reasons[1].starts_with("1 (1, 95)"), "{reasons:?}");
        assert!(
            reasons[2].starts_with("2 ra \"x\" is not a number"),
            "{reasons:?}"
        );
        assert!(reasons[3].starts_with("3 3 fields"), "{reasons:?}");
        assert!(reasons[4].starts_with("4 a quoted field"), "{reasons:?}");
        assert_eq!(reasons[5], "ok 5");
    }

    #[test]
    fn a_line_that_is_not_utf8_is_an_error_of_its_row_and_a_comment_may_be_anything() {
        let text: &[u8] = b"ra,dec\n# written by M\xfcller\n1,\xe9\n1,2\n";
        let mut cat = CsvCatalogue::open(text, None, None).unwrap();
        let bad = cat.next_row().unwrap().unwrap().unwrap_err();
        assert_eq!(
            (bad.row, bad.reason.as_str()),
            (0, "the line is not UTF-8 text")
        );
        assert_eq!(cat.next_row().unwrap().unwrap().unwrap().row, 1);
        let header = CsvCatalogue::open(&b"r\xe9,dec\n1,2\n"[..], None, None);
        assert!(matches!(header, Err(SodaError::Usage(m)) if m.contains("not UTF-8")));
    }
}
