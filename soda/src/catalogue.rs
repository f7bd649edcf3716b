//! Catalogues of positions for bulk cutouts, read as a stream: a row at a time (Parquet: a
//! batch of one row group's column chunks at a time), so a catalogue of millions of rows never
//! sits in memory whole.
//!
//! [`open`] tells the format from the content: Parquet by its `PAR1` magic, VOTable by its
//! XML start (`<?xml`, `<VOTABLE`, a comment), anything else is CSV. Each format has its
//! submodule: [`csv`] (RFC 4180 with a header line), [`votable`] (TABLEDATA, BINARY and BINARY2
//! serializations of the first table with data), [`parquet`] (flat columns of any numeric
//! type).
//!
//! The same column rules hold for all: the position columns are those the caller names
//! (`RACOL`, `DECCOL`), else those named `ra` and `dec` in any case, else (VOTable, which has
//! UCDs) the fields whose UCD is `pos.eq.ra;meta.main` and `pos.eq.dec;meta.main`, else
//! `pos.eq.ra` and `pos.eq.dec`; `id`, `t_min`, `t_max`, `size` and `radius` are optional, by
//! name. A missing
//! column is a usage error naming the columns there are. A row whose position is not two
//! finite numbers in range (a null, a NaN, text) is a [`RowError`] for that row alone: the
//! caller decides whether it fails the whole catalogue or goes to the errors.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};

use crate::SodaError;

pub mod csv;
pub mod parquet;
pub mod votable;

pub use csv::CsvCatalogue;

/// One position of a catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogueRow {
    /// 0-based number of the data row, in file order.
    pub row: u64,
    pub ra: f64,
    pub dec: f64,
    /// The `id` column: the one image to cut this row from.
    pub id: Option<String>,
    /// `t_min`, `t_max` (MJD): only images observed within are cut.
    pub t_min: Option<f64>,
    pub t_max: Option<f64>,
    /// `size` (pixels a side): this row's stamp size, instead of the request's.
    pub size: Option<usize>,
    /// `radius` (degrees): this row's stamp radius, instead of the request's.
    pub radius: Option<f64>,
}

/// Why one row gives no position.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    pub row: u64,
    pub reason: String,
}

/// A catalogue being read, whatever its format.
pub trait CatalogueReader {
    /// The next row: `None` at the end, `Some(Err)` for a row without a usable position, or
    /// `Err` when the file itself cannot be read on (cut short, malformed, an I/O error).
    fn next_row(&mut self) -> Result<Option<Result<CatalogueRow, RowError>>, SodaError>;
}

/// Opens a catalogue of any format, telling which from its first bytes, and finds its
/// columns (`ra_column`/`dec_column` are `RACOL`/`DECCOL`).
pub fn open(
    mut file: File,
    ra_column: Option<&str>,
    dec_column: Option<&str>,
) -> Result<Box<dyn CatalogueReader + Send>, SodaError> {
    let mut head = Vec::with_capacity(512);
    (&mut file).take(512).read_to_end(&mut head)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(match Format::of(&head) {
        Format::Parquet => Box::new(parquet::ParquetCatalogue::open(
            file, ra_column, dec_column,
        )?),
        Format::VoTable => Box::new(votable::VoTableCatalogue::open(
            BufReader::with_capacity(1 << 16, file),
            ra_column,
            dec_column,
        )?),
        Format::Csv => Box::new(CsvCatalogue::open(
            BufReader::with_capacity(1 << 16, file),
            ra_column,
            dec_column,
        )?),
    })
}

/// The formats [`open`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    VoTable,
    Parquet,
}

impl Format {
    /// The format of a file that starts with `head`.
    fn of(head: &[u8]) -> Format {
        if head.starts_with(b"PAR1") {
            return Format::Parquet;
        }
        let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
        match text.iter().find(|b| !b.is_ascii_whitespace()) {
            // No CSV header starts with `<`: it is XML (`<?xml`, `<VOTABLE`, `<!--`).
            Some(b'<') => Format::VoTable,
            _ => Format::Csv,
        }
    }
}

impl<R: std::io::BufRead> CatalogueReader for CsvCatalogue<R> {
    fn next_row(&mut self) -> Result<Option<Result<CatalogueRow, RowError>>, SodaError> {
        CsvCatalogue::next_row(self)
    }
}

/// Where the columns are, by index into the file's columns.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Columns {
    pub ra: usize,
    pub dec: usize,
    pub id: Option<usize>,
    pub t_min: Option<usize>,
    pub t_max: Option<usize>,
    pub size: Option<usize>,
    pub radius: Option<usize>,
}

impl Columns {
    /// The optional numeric columns there are: their values are numbers, one per row.
    pub(crate) fn numbers(&self) -> impl Iterator<Item = usize> {
        [self.t_min, self.t_max, self.size, self.radius]
            .into_iter()
            .flatten()
    }
}

/// Finds the columns among `names` (and `ucds`, one per name, for formats that have them; an
/// empty slice for those that do not) by the rules of this module.
pub(crate) fn find_columns(
    names: &[String],
    ucds: &[Option<String>],
    ra_column: Option<&str>,
    dec_column: Option<&str>,
) -> Result<Columns, SodaError> {
    let find = |name: &str| {
        names
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let by_ucd = |word: &str| {
        let main = format!("{word};meta.main");
        let ucd = |n: usize| -> String {
            ucds.get(n)
                .and_then(|u| u.as_deref())
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_lowercase()
        };
        (0..names.len())
            .find(|&n| ucd(n) == main)
            .or_else(|| (0..names.len()).find(|&n| ucd(n) == word))
    };
    let required = |given: Option<&str>, default: &str, parameter: &str, ucd: &str| {
        if let Some(name) = given {
            return find(name).ok_or_else(|| {
                SodaError::usage(format!(
                    "the catalogue has no column {name:?} (named by {parameter}) (its columns: {})",
                    names.join(", ")
                ))
            });
        }
        find(default).or_else(|| by_ucd(ucd)).ok_or_else(|| {
            SodaError::usage(format!(
                "the catalogue has no column {default:?}{}; name the column with {parameter} \
                     (its columns: {})",
                if ucds.is_empty() {
                    String::new()
                } else {
                    format!(" nor one whose UCD is {ucd};meta.main or {ucd}")
                },
                names.join(", ")
            ))
        })
    };
    Ok(Columns {
        ra: required(ra_column, "ra", "RACOL", "pos.eq.ra")?,
        dec: required(dec_column, "dec", "DECCOL", "pos.eq.dec")?,
        id: find("id"),
        t_min: find("t_min"),
        t_max: find("t_max"),
        size: find("size"),
        radius: find("radius"),
    })
}

/// One value of a row, as a format gives it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    /// No value (a null flag, a null sentinel, an empty VOTable cell).
    Null,
    Number(f64),
    /// Text, parsed where a number is needed (CSV fields, VOTable TABLEDATA cells of a text
    /// type).
    Text(String),
}

/// The values of one row's columns, by role.
pub(crate) struct RowCells {
    pub ra: Cell,
    pub dec: Cell,
    pub id: Option<Cell>,
    pub t_min: Option<Cell>,
    pub t_max: Option<Cell>,
    pub size: Option<Cell>,
    pub radius: Option<Cell>,
}

impl RowCells {
    /// The row, or why it gives no position.
    pub fn into_row(self, row: u64) -> Result<CatalogueRow, RowError> {
        let error = |reason: String| RowError { row, reason };
        let number = |cell: Cell, name: &str| -> Result<f64, RowError> {
            match cell {
                Cell::Number(v) => Ok(v),
                Cell::Null => Err(error(format!("{name} has no value (null)"))),
                Cell::Text(text) => text
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| error(format!("{name} {:?} is not a number", text.trim()))),
            }
        };
        let ra = number(self.ra, "ra")?;
        let dec = number(self.dec, "dec")?;
        if !ra.is_finite() || !dec.is_finite() || !(-90.0..=90.0).contains(&dec) {
            return Err(error(format!(
                "({ra}, {dec}) is not a sky position (finite degrees, dec within ±90)"
            )));
        }
        // An optional number: absent, null, empty or NaN is no value.
        let optional =
            |cell: Option<Cell>, name: &str, what: &str| -> Result<Option<f64>, RowError> {
                match cell {
                    None | Some(Cell::Null) => Ok(None),
                    Some(Cell::Number(v)) => Ok(Some(v).filter(|t| !t.is_nan())),
                    Some(Cell::Text(text)) if text.trim().is_empty() => Ok(None),
                    Some(Cell::Text(text)) => text
                        .trim()
                        .parse::<f64>()
                        .map(|t| Some(t).filter(|t| !t.is_nan()))
                        .map_err(|_| error(format!("{name} {:?} is not {what}", text.trim()))),
                }
            };
        let time = |cell, name| optional(cell, name, "an MJD");
        let size = match optional(self.size, "size", "a number of pixels")? {
            None => None,
            Some(s) if s >= 1.0 && s.fract() == 0.0 && s <= u32::MAX as f64 => Some(s as usize),
            Some(s) => {
                return Err(error(format!(
                    "size {s} is not a stamp size (a whole number of pixels, at least 1)"
                )));
            }
        };
        let radius = match optional(self.radius, "radius", "a number of degrees")? {
            Some(r) if !(r > 0.0 && r <= 180.0) => {
                return Err(error(format!(
                    "radius {r} is not a stamp radius (degrees, more than 0 and at most 180)"
                )));
            }
            radius => radius,
        };
        let id = match self.id {
            None | Some(Cell::Null) => None,
            Some(Cell::Text(text)) => Some(text.trim().to_owned()).filter(|t| !t.is_empty()),
            Some(Cell::Number(v)) => Some(v.to_string()),
        };
        Ok(CatalogueRow {
            row,
            ra: ra.rem_euclid(360.0),
            dec,
            id,
            t_min: time(self.t_min, "t_min")?,
            t_max: time(self.t_max, "t_max")?,
            size,
            radius,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_format_is_told_from_the_first_bytes() {
        assert_eq!(Format::of(b"PAR1\x15\x04"), Format::Parquet);
        assert_eq!(Format::of(b"<?xml version=\"1.0\"?>"), Format::VoTable);
        assert_eq!(Format::of(b"\xEF\xBB\xBF\n  <VOTABLE>"), Format::VoTable);
        assert_eq!(Format::of(b"ra,dec\n1,2\n"), Format::Csv);
        assert_eq!(Format::of(b"# %ECSV 1.0\nra,dec\n"), Format::Csv);
        assert_eq!(Format::of(b""), Format::Csv);
    }

    #[test]
    fn names_come_before_ucds_and_main_ucds_before_plain_ones() {
        let ucd = |list: &[&str]| -> Vec<Option<String>> {
            list.iter()
                .map(|u| Some(u.to_string()).filter(|u| !u.is_empty()))
                .collect()
        };
        let header = names(&["alpha", "delta", "RAJ2000", "DEJ2000"]);
        let ucds = ucd(&[
            "pos.eq.ra",
            "pos.eq.dec",
            "POS.EQ.RA; meta.main",
            "pos.eq.dec;meta.main",
        ]);
        let columns = find_columns(&header, &ucds, None, None).unwrap();
        assert_eq!((columns.ra, columns.dec), (2, 3));
        let plain = ucd(&["pos.eq.ra", "pos.eq.dec", "", ""]);
        let columns = find_columns(&header, &plain, None, None).unwrap();
        assert_eq!((columns.ra, columns.dec), (0, 1));
        let named = names(&["x", "RA", "Dec", "id"]);
        let columns = find_columns(&named, &ucds, None, None).unwrap();
        assert_eq!((columns.ra, columns.dec, columns.id), (1, 2, Some(3)));
        let columns = find_columns(&header, &ucds, Some("alpha"), Some("DELTA")).unwrap();
        assert_eq!((columns.ra, columns.dec), (0, 1));
    }

    #[test]
    fn a_missing_column_names_the_ucds_looked_for_where_the_format_has_them() {
        let header = names(&["x", "y"]);
        let Err(SodaError::Usage(message)) = find_columns(&header, &[None, None], None, None)
        else {
            panic!("no position columns must be refused");
        };
        assert!(message.contains("pos.eq.ra;meta.main"), "{message}");
        assert!(
            message.contains("x, y") && message.contains("RACOL"),
            "{message}"
        );
        let Err(SodaError::Usage(message)) = find_columns(&header, &[], None, None) else {
            panic!("no position columns must be refused");
        };
        assert!(!message.contains("UCD"), "{message}");
    }

    #[test]
    fn a_null_or_nan_position_is_an_error_of_its_row() {
        let cells = |ra: Cell, dec: Cell| RowCells {
            ra,
            dec,
            id: None,
            t_min: None,
            t_max: None,
            size: None,
            radius: None,
        };
        let reason = |r: Result<CatalogueRow, RowError>| r.unwrap_err().reason;
        assert!(
            reason(cells(Cell::Null, Cell::Number(1.0)).into_row(3)).contains("ra has no value")
        );
        assert!(
            reason(cells(Cell::Number(1.0), Cell::Number(f64::NAN)).into_row(3))
                .contains("is not a sky position")
        );
        let row = RowCells {
            ra: Cell::Number(-10.0),
            dec: Cell::Number(2.0),
            id: Some(Cell::Text(" butler://a/b ".into())),
            t_min: Some(Cell::Number(f64::NAN)),
            t_max: Some(Cell::Number(60000.5)),
            size: None,
            radius: None,
        }
        .into_row(7)
        .unwrap();
        assert_eq!((row.row, row.ra, row.dec), (7, 350.0, 2.0));
        assert_eq!(row.id.as_deref(), Some("butler://a/b"));
        assert_eq!((row.t_min, row.t_max), (None, Some(60000.5)));
    }

    #[test]
    fn a_row_s_own_size_and_radius_are_read_and_checked() {
        let row = |size: Option<Cell>, radius: Option<Cell>| {
            RowCells {
                ra: Cell::Number(1.0),
                dec: Cell::Number(2.0),
                id: None,
                t_min: None,
                t_max: None,
                size,
                radius,
            }
            .into_row(4)
        };
        let text = |s: &str| Some(Cell::Text(s.to_owned()));
        let read = row(text(" 24 "), Some(Cell::Number(0.005))).unwrap();
        assert_eq!((read.size, read.radius), (Some(24), Some(0.005)));
        // No value is no value: the request's SIZE or RADIUS applies.
        for (size, radius) in [
            (text(""), Some(Cell::Null)),
            (Some(Cell::Number(f64::NAN)), text("  ")),
            (None, None),
        ] {
            let read = row(size, radius).unwrap();
            assert_eq!((read.size, read.radius), (None, None));
        }
        for (size, radius, says) in [
            (text("0"), None, "size 0"),
            (Some(Cell::Number(2.5)), None, "size 2.5"),
            (Some(Cell::Number(-3.0)), None, "size -3"),
            (Some(Cell::Number(f64::INFINITY)), None, "size inf"),
            (text("big"), None, "size \"big\" is not a number of pixels"),
            (None, Some(Cell::Number(0.0)), "radius 0"),
            (None, Some(Cell::Number(181.0)), "radius 181"),
            (None, Some(Cell::Number(f64::NEG_INFINITY)), "radius -inf"),
            (
                None,
                text("wide"),
                "radius \"wide\" is not a number of degrees",
            ),
        ] {
            let error = row(size, radius).unwrap_err();
            assert_eq!(error.row, 4);
            assert!(error.reason.contains(says), "{} for {says}", error.reason);
        }
    }
}

#[cfg(test)]
mod fuzz {
    //! Property-based fuzzing of the readers: real catalogues of every format, cut short, with
    //! bytes flipped or inserted, and arbitrary bytes, give rows, row errors or a usage error,
    //! never a panic, a server-side error or an endless read.

    use std::io::Write;
    use std::sync::{Arc, OnceLock};

    use base64::Engine;
    use proptest::prelude::*;

    use super::*;

    /// Rows read at most from one input.
    const MAX_ROWS: usize = 10_000;

    fn votable(data: &str) -> Vec<u8> {
        format!(
            "<?xml version=\"1.0\"?><VOTABLE><RESOURCE><TABLE>\
             <FIELD name=\"name\" datatype=\"char\" arraysize=\"*\"/>\
             <FIELD name=\"a\" datatype=\"double\" ucd=\"pos.eq.ra;meta.main\"/>\
             <FIELD name=\"d\" datatype=\"float\" ucd=\"pos.eq.dec;meta.main\"/>\
             <FIELD name=\"t_min\" datatype=\"int\"><VALUES null=\"0\"/></FIELD>\
             <FIELD name=\"flags\" datatype=\"short\" arraysize=\"2x*\"/>\
             <DATA>{data}</DATA></TABLE></RESOURCE></VOTABLE>"
        )
        .into_bytes()
    }

    fn parquet() -> Vec<u8> {
        use ::parquet::data_type::{DoubleType, FloatType};
        use ::parquet::file::writer::SerializedFileWriter;
        let schema = ::parquet::schema::parser::parse_message_type(
            "message m { required double ra; optional float dec; }",
        )
        .unwrap();
        let mut bytes = Vec::new();
        let mut writer =
            SerializedFileWriter::new(&mut bytes, Arc::new(schema), Default::default()).unwrap();
        for _ in 0..2 {
            let mut group = writer.next_row_group().unwrap();
            let mut column = group.next_column().unwrap().unwrap();
            column
                .typed::<DoubleType>()
                .write_batch(&[1.0, 2.0, 3.0], None, None)
                .unwrap();
            column.close().unwrap();
            let mut column = group.next_column().unwrap().unwrap();
            column
                .typed::<FloatType>()
                .write_batch(&[4.0, 5.0], Some(&[1, 0, 1]), None)
                .unwrap();
            column.close().unwrap();
            group.close().unwrap();
        }
        writer.close().unwrap();
        bytes
    }

    fn seeds() -> &'static [Vec<u8>] {
        static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
        SEEDS.get_or_init(|| {
            let mut binary2 = Vec::new();
            for (name, ra, dec) in [("x", 1.0f64, 2.0f32), ("", 3.0, f32::NAN)] {
                binary2.push(0u8);
                binary2.extend((name.len() as u32).to_be_bytes());
                binary2.extend(name.as_bytes());
                binary2.extend(ra.to_be_bytes());
                binary2.extend(dec.to_be_bytes());
                binary2.extend(7i32.to_be_bytes());
                binary2.extend(1u32.to_be_bytes());
                binary2.extend([0, 1, 0, 2]);
            }
            let binary2 = base64::engine::general_purpose::STANDARD.encode(&binary2);
            vec![
                b"id,ra,dec,t_min\n\"a,b\",1,2,60000\n,3,4,\n".to_vec(),
                votable(
                    "<TABLEDATA><TR><TD>x</TD><TD>1</TD><TD>2</TD><TD>60000</TD><TD>1 2</TD></TR>\
                     <TR><TD/><TD>3</TD><TD/><TD>0</TD><TD/></TR></TABLEDATA>",
                ),
                votable(&format!(
                    "<BINARY2><STREAM encoding=\"base64\">{binary2}</STREAM></BINARY2>"
                )),
                parquet(),
            ]
        })
    }

    #[derive(Debug, Clone)]
    enum Change {
        Cut(usize),
        Flip(usize, u8),
        Insert(usize, u8),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            any::<usize>().prop_map(Change::Cut),
            (any::<usize>(), 1..=255u8).prop_map(|(at, bits)| Change::Flip(at, bits)),
            (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Change::Insert(at, byte)),
        ]
    }

    fn read(bytes: &[u8]) -> Result<(), TestCaseError> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let outcome = open(file, None, None).and_then(|mut cat| {
            for _ in 0..MAX_ROWS {
                if cat.next_row()?.is_none() {
                    return Ok(());
                }
            }
            Ok(())
        });
        match outcome {
            Ok(()) | Err(SodaError::Usage(_)) => Ok(()),
            Err(e) => Err(TestCaseError::fail(format!("{e:?} is not a usage error"))),
        }
    }

    proptest! {
        #[test]
        fn changed_catalogues_read_or_are_usage_errors(
            seed in 0..4usize,
            changes in proptest::collection::vec(change(), 1..6),
        ) {
            let mut bytes = seeds()[seed].clone();
            for change in changes {
                let len = bytes.len().max(1);
                match change {
                    Change::Cut(at) => bytes.truncate(at % len),
                    Change::Flip(at, bits) => {
                        if let Some(b) = bytes.get_mut(at % len) {
                            *b ^= bits;
                        }
                    }
                    Change::Insert(at, byte) => bytes.insert((at % len).min(bytes.len()), byte),
                }
            }
            read(&bytes)?;
        }

        #[test]
        fn arbitrary_bytes_read_or_are_usage_errors(
            head in prop_oneof![Just(&b"PAR1"[..]), Just(&b"<VOTABLE>"[..]), Just(&b"ra,dec\n"[..])],
            tail in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            read(&[head, &tail[..]].concat())?;
        }
    }

    #[test]
    fn the_seeds_read_whole() {
        for seed in seeds() {
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(seed).unwrap();
            file.seek(SeekFrom::Start(0)).unwrap();
            let mut cat = open(file, None, None).unwrap();
            let mut rows = 0;
            while let Some(row) = cat.next_row().unwrap() {
                rows += 1;
                if rows == 1 {
                    assert!(row.is_ok(), "{row:?}");
                }
            }
            assert!(rows >= 2);
        }
    }
}
