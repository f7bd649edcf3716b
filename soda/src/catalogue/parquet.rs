//! Parquet catalogues: a row group at a time, and within it each wanted column chunk read in
//! batches of [`BATCH`] values with the `parquet` crate's column readers (no Arrow), so memory
//! holds a few batches, never the file. Columns are found by name only (Parquet has no UCDs);
//! they must be flat (not nested or repeated) and numeric (`INT32`, `INT64`, `FLOAT`, `DOUBLE`,
//! signed or unsigned) for the positions and times, text (`BYTE_ARRAY`) or an integer for `id`.
//! A null is a null cell. Pages compressed with snappy (pyarrow's and pandas' default) or not
//! at all are read; another codec is a usage error that says which.

use std::fs::File;

use parquet::basic::{ConvertedType, LogicalType, Type as PhysicalType};
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{
    ByteArray, ByteArrayType, DataType, DoubleType, FloatType, Int32Type, Int64Type,
};
use parquet::errors::ParquetError;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnDescriptor;

use super::{CatalogueReader, CatalogueRow, Cell, Columns, RowCells, RowError, find_columns};
use crate::SodaError;

/// Values read from one column chunk at a time.
const BATCH: usize = 4096;

/// A Parquet catalogue being read.
pub struct ParquetCatalogue {
    file: SerializedFileReader<File>,
    /// A read failed: the readers are in no state to go on.
    broken: bool,
    /// Bytes of the file.
    length: u64,
    columns: Columns,
    /// The wanted columns, in the order of [`Role`]s: ra, dec, then id, t_min, t_max, size,
    /// radius if there.
    wanted: Vec<(usize, Role)>,
    /// The next row group to open.
    next_group: usize,
    /// Readers of the wanted columns in the current row group, and the rows it has left.
    cursors: Vec<Cursor>,
    rows_left: u64,
    next_row: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Ra,
    Dec,
    Id,
    TMin,
    TMax,
    Size,
    Radius,
}

/// Why a Parquet file cannot be read on, as a usage error.
fn unreadable(e: ParquetError) -> SodaError {
    let text = e.to_string();
    if let Some(codec) = text.split("Disabled feature at compile time: ").nth(1) {
        return SodaError::usage(format!(
            "the Parquet catalogue is compressed with {codec}, which this service does not read: \
             write it with snappy (pyarrow's default) or no compression"
        ));
    }
    SodaError::usage(format!(
        "the Parquet catalogue is cut short / unreadable: {text}"
    ))
}

/// Runs reads of the `parquet` crate, whose decoders assert on some malformed pages (a page
/// that says it is dictionary-encoded in a chunk without a dictionary page panics, found by
/// `catalogue::fuzz`): such a panic is a usage error of the upload, not a failed request. The
/// readers it leaves behind are not used again ([`ParquetCatalogue::broken`]).
fn guarded<T>(read: impl FnOnce() -> Result<T, SodaError>) -> Result<T, SodaError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(SodaError::usage(format!(
            "the Parquet catalogue is cut short / unreadable: {what}"
        )))
    })
}

impl ParquetCatalogue {
    /// Reads the footer (the schema and the row groups' places) and finds the columns.
    pub fn open(
        file: File,
        ra_column: Option<&str>,
        dec_column: Option<&str>,
    ) -> Result<ParquetCatalogue, SodaError> {
        let length = file.metadata()?.len();
        if length < 12 {
            return Err(SodaError::usage(format!(
                "the Parquet catalogue is cut short / unreadable: {length} bytes, less than a \
                 header and footer"
            )));
        }
        let file = guarded(|| SerializedFileReader::new(file).map_err(unreadable))?;
        let schema = file.metadata().file_metadata().schema_descr_ptr();
        let leaves = schema.columns();
        let names: Vec<String> = leaves.iter().map(|c| c.path().string()).collect();
        let columns = find_columns(&names, &[], ra_column, dec_column)?;
        let mut wanted = vec![(columns.ra, Role::Ra), (columns.dec, Role::Dec)];
        for (index, role) in [
            (columns.id, Role::Id),
            (columns.t_min, Role::TMin),
            (columns.t_max, Role::TMax),
            (columns.size, Role::Size),
            (columns.radius, Role::Radius),
        ] {
            if let Some(index) = index {
                wanted.push((index, role));
            }
        }
        for &(index, role) in &wanted {
            let column = &leaves[index];
            let name = column.path().string();
            if column.max_rep_level() > 0 {
                return Err(SodaError::usage(format!(
                    "the Parquet column {name:?} is a list, not one value per row"
                )));
            }
            let numeric = matches!(
                column.physical_type(),
                PhysicalType::INT32
                    | PhysicalType::INT64
                    | PhysicalType::FLOAT
                    | PhysicalType::DOUBLE
            );
            let temporal = matches!(
                column.logical_type_ref(),
                Some(LogicalType::Date | LogicalType::Time(_) | LogicalType::Timestamp(_))
            ) || matches!(
                column.converted_type(),
                ConvertedType::DATE
                    | ConvertedType::TIME_MILLIS
                    | ConvertedType::TIME_MICROS
                    | ConvertedType::TIMESTAMP_MILLIS
                    | ConvertedType::TIMESTAMP_MICROS
            );
            if temporal {
                return Err(SodaError::usage(format!(
                    "the Parquet column {name:?} holds dates or times, not numbers: write \
                     positions in degrees and t_min, t_max as MJD numbers"
                )));
            }
            let fits =
                numeric || (role == Role::Id && column.physical_type() == PhysicalType::BYTE_ARRAY);
            if !fits {
                return Err(SodaError::usage(format!(
                    "the Parquet column {name:?} holds {}, not {}",
                    column.physical_type(),
                    if role == Role::Id {
                        "text or integers"
                    } else {
                        "numbers (INT32, INT64, FLOAT or DOUBLE)"
                    }
                )));
            }
        }
        Ok(ParquetCatalogue {
            file,
            broken: false,
            length,
            columns,
            wanted,
            next_group: 0,
            cursors: Vec::new(),
            rows_left: 0,
            next_row: 0,
        })
    }

    /// Opens the next row group with rows; false when there is none.
    fn next_group(&mut self) -> Result<bool, SodaError> {
        while self.rows_left == 0 {
            if self.next_group >= self.file.num_row_groups() {
                return Ok(false);
            }
            let group = self
                .file
                .get_row_group(self.next_group)
                .map_err(unreadable)?;
            // The crate asserts a column chunk's place is not negative (a panic): check it,
            // and that the chunk lies in the file, first.
            for &(index, _) in &self.wanted {
                let chunk = group.metadata().column(index);
                let start = chunk
                    .dictionary_page_offset()
                    .unwrap_or(chunk.data_page_offset());
                let length = chunk.compressed_size();
                let inside = u64::try_from(start)
                    .ok()
                    .zip(u64::try_from(length).ok())
                    .and_then(|(start, length)| start.checked_add(length))
                    .is_some_and(|end| end <= self.length);
                if !inside {
                    return Err(SodaError::usage(format!(
                        "the Parquet catalogue is cut short / unreadable: the column chunk of {:?} \
                         in row group {} says it lies at bytes {start}+{length}, outside the file \
                         of {} bytes",
                        chunk.column_path().string(),
                        self.next_group,
                        self.length
                    )));
                }
            }
            self.next_group += 1;
            self.rows_left = u64::try_from(group.metadata().num_rows()).unwrap_or(0);
            let schema = self.file.metadata().file_metadata().schema_descr_ptr();
            self.cursors = self
                .wanted
                .iter()
                .map(|&(index, _)| {
                    let reader = group.get_column_reader(index).map_err(unreadable)?;
                    Ok(Cursor::new(reader, &schema.columns()[index]))
                })
                .collect::<Result<_, SodaError>>()?;
        }
        Ok(true)
    }
}

impl CatalogueReader for ParquetCatalogue {
    fn next_row(&mut self) -> Result<Option<Result<CatalogueRow, RowError>>, SodaError> {
        if self.broken {
            return Err(SodaError::usage(
                "the Parquet catalogue is cut short / unreadable (an earlier row failed)",
            ));
        }
        let row = guarded(|| self.read_row());
        self.broken = row.is_err();
        row
    }
}

impl ParquetCatalogue {
    fn read_row(&mut self) -> Result<Option<Result<CatalogueRow, RowError>>, SodaError> {
        if !self.next_group()? {
            return Ok(None);
        }
        self.rows_left -= 1;
        let row = self.next_row;
        self.next_row += 1;
        let mut cells = RowCells {
            ra: Cell::Null,
            dec: Cell::Null,
            id: self.columns.id.map(|_| Cell::Null),
            t_min: self.columns.t_min.map(|_| Cell::Null),
            t_max: self.columns.t_max.map(|_| Cell::Null),
            size: self.columns.size.map(|_| Cell::Null),
            radius: self.columns.radius.map(|_| Cell::Null),
        };
        for (cursor, &(_, role)) in self.cursors.iter_mut().zip(&self.wanted) {
            let cell = cursor.next()?;
            match role {
                Role::Ra => cells.ra = cell,
                Role::Dec => cells.dec = cell,
                Role::Id => cells.id = Some(cell),
                Role::TMin => cells.t_min = Some(cell),
                Role::TMax => cells.t_max = Some(cell),
                Role::Size => cells.size = Some(cell),
                Role::Radius => cells.radius = Some(cell),
            }
        }
        Ok(Some(cells.into_row(row)))
    }
}

/// One column chunk being read, a batch at a time.
struct Cursor {
    values: Values,
    /// Definition levels of the batch (a value is there where the level is the maximum).
    levels: Vec<i16>,
    max_level: i16,
    unsigned: bool,
    /// What integers are divided by (a decimal's 10^scale, else 1).
    divisor: f64,
    /// Records in the batch, the next record and the next value.
    records: usize,
    record: usize,
    value: usize,
}

/// A typed column reader and its batch of values.
enum Values {
    Int32(ColumnReaderImpl<Int32Type>, Vec<i32>),
    Int64(ColumnReaderImpl<Int64Type>, Vec<i64>),
    Float(ColumnReaderImpl<FloatType>, Vec<f32>),
    Double(ColumnReaderImpl<DoubleType>, Vec<f64>),
    Bytes(ColumnReaderImpl<ByteArrayType>, Vec<ByteArray>),
    /// A type [`ParquetCatalogue::open`] refused.
    Other,
}

impl Cursor {
    fn new(reader: ColumnReader, column: &ColumnDescriptor) -> Cursor {
        let values = match reader {
            ColumnReader::Int32ColumnReader(r) => Values::Int32(r, Vec::new()),
            ColumnReader::Int64ColumnReader(r) => Values::Int64(r, Vec::new()),
            ColumnReader::FloatColumnReader(r) => Values::Float(r, Vec::new()),
            ColumnReader::DoubleColumnReader(r) => Values::Double(r, Vec::new()),
            ColumnReader::ByteArrayColumnReader(r) => Values::Bytes(r, Vec::new()),
            _ => Values::Other,
        };
        let unsigned = matches!(column.logical_type_ref(), Some(LogicalType::Integer(t)) if !t.is_signed)
            || matches!(
                column.converted_type(),
                ConvertedType::UINT_8
                    | ConvertedType::UINT_16
                    | ConvertedType::UINT_32
                    | ConvertedType::UINT_64
            );
        // A decimal's integers are unscaled: the value is the integer / 10^scale.
        let decimal = matches!(column.logical_type_ref(), Some(LogicalType::Decimal(_)))
            || column.converted_type() == ConvertedType::DECIMAL;
        Cursor {
            values,
            levels: Vec::new(),
            max_level: column.max_def_level(),
            unsigned,
            divisor: if decimal {
                10f64.powi(column.type_scale())
            } else {
                1.0
            },
            records: 0,
            record: 0,
            value: 0,
        }
    }

    /// The next row's value.
    fn next(&mut self) -> Result<Cell, SodaError> {
        if self.record == self.records {
            self.refill()?;
        }
        let present = self.max_level == 0 || self.levels.get(self.record) == Some(&self.max_level);
        self.record += 1;
        if !present {
            return Ok(Cell::Null);
        }
        let n = self.value;
        self.value += 1;
        let missing = || {
            SodaError::usage(
                "the Parquet catalogue is cut short / unreadable: a column chunk has fewer values than its definition levels say",
            )
        };
        Ok(match &self.values {
            Values::Int32(_, v) => {
                let v = *v.get(n).ok_or_else(missing)?;
                let v = if self.unsigned {
                    f64::from(v as u32)
                } else {
                    f64::from(v)
                };
                Cell::Number(v / self.divisor)
            }
            Values::Int64(_, v) => {
                let v = *v.get(n).ok_or_else(missing)?;
                let v = if self.unsigned {
                    v as u64 as f64
                } else {
                    v as f64
                };
                Cell::Number(v / self.divisor)
            }
            Values::Float(_, v) => Cell::Number(f64::from(*v.get(n).ok_or_else(missing)?)),
            Values::Double(_, v) => Cell::Number(*v.get(n).ok_or_else(missing)?),
            Values::Bytes(_, v) => Cell::Text(
                String::from_utf8_lossy(v.get(n).ok_or_else(missing)?.data()).into_owned(),
            ),
            Values::Other => Cell::Null,
        })
    }

    /// Reads the next batch of the column chunk.
    fn refill(&mut self) -> Result<(), SodaError> {
        fn read<T: DataType>(
            reader: &mut ColumnReaderImpl<T>,
            values: &mut Vec<T::T>,
            levels: Option<&mut Vec<i16>>,
        ) -> Result<usize, SodaError> {
            values.clear();
            let (records, _, _) = reader
                .read_records(BATCH, levels, None, values)
                .map_err(unreadable)?;
            Ok(records)
        }
        self.levels.clear();
        let levels = (self.max_level > 0).then_some(&mut self.levels);
        let records = match &mut self.values {
            Values::Int32(r, v) => read(r, v, levels)?,
            Values::Int64(r, v) => read(r, v, levels)?,
            Values::Float(r, v) => read(r, v, levels)?,
            Values::Double(r, v) => read(r, v, levels)?,
            Values::Bytes(r, v) => read(r, v, levels)?,
            Values::Other => BATCH,
        };
        if records == 0 {
            return Err(SodaError::usage(
                "the Parquet catalogue is cut short / unreadable: a column chunk ends before its \
                 row group's rows do",
            ));
        }
        self.records = records;
        self.record = 0;
        self.value = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use parquet::basic::Compression;
    use parquet::data_type::{ByteArrayType, DoubleType, FloatType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    use super::*;

    /// Writes a catalogue of `rows` rows in row groups of `group` rows: ra (double), dec
    /// (float, null in row 2), id (text), t_min (int64), a column `other`.
    fn write(rows: usize, group: usize, compression: Compression) -> tempfile::NamedTempFile {
        let schema = Arc::new(
            parse_message_type(
                "message cat {
                    required double RA;
                    optional float dec;
                    optional binary id (UTF8);
                    required int64 t_min;
                    required double other;
                }",
            )
            .unwrap(),
        );
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(compression)
                .build(),
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut writer = SerializedFileWriter::new(file.reopen().unwrap(), schema, props).unwrap();
        for start in (0..rows).step_by(group) {
            let range = start..(start + group).min(rows);
            let mut group_writer = writer.next_row_group().unwrap();
            let mut column = 0;
            while let Some(mut col) = group_writer.next_column().unwrap() {
                let defs: Vec<i16> = range.clone().map(|r| i16::from(r != 2)).collect();
                match column {
                    0 => {
                        let v: Vec<f64> = range.clone().map(|r| (r % 359) as f64 + 0.5).collect();
                        col.typed::<DoubleType>()
                            .write_batch(&v, None, None)
                            .unwrap();
                    }
                    1 => {
                        let v: Vec<f32> = range
                            .clone()
                            .filter(|&r| r != 2)
                            .map(|r| -((r % 90) as f32))
                            .collect();
                        col.typed::<FloatType>()
                            .write_batch(&v, Some(&defs), None)
                            .unwrap();
                    }
                    2 => {
                        let v: Vec<ByteArray> = range
                            .clone()
                            .filter(|&r| r != 2)
                            .map(|r| ByteArray::from(format!("img{r}").as_str()))
                            .collect();
                        col.typed::<ByteArrayType>()
                            .write_batch(&v, Some(&defs), None)
                            .unwrap();
                    }
                    3 => {
                        let v: Vec<i64> = range.clone().map(|r| 60000 + r as i64).collect();
                        col.typed::<Int64Type>()
                            .write_batch(&v, None, None)
                            .unwrap();
                    }
                    _ => {
                        let v: Vec<f64> = range.clone().map(|_| 1.0).collect();
                        col.typed::<DoubleType>()
                            .write_batch(&v, None, None)
                            .unwrap();
                    }
                }
                col.close().unwrap();
                column += 1;
            }
            group_writer.close().unwrap();
        }
        writer.close().unwrap();
        file
    }

    fn read_all(
        file: &tempfile::NamedTempFile,
    ) -> Result<Vec<Result<CatalogueRow, RowError>>, SodaError> {
        let mut cat = ParquetCatalogue::open(file.reopen().unwrap(), None, None)?;
        let mut rows = Vec::new();
        while let Some(row) = cat.next_row()? {
            rows.push(row);
        }
        Ok(rows)
    }

    #[test]
    fn rows_are_read_across_row_groups_and_batches_with_nulls() {
        let file = write(10_000, 3_000, Compression::SNAPPY);
        let rows = read_all(&file).unwrap();
        assert_eq!(rows.len(), 10_000);
        let first = rows[0].as_ref().unwrap();
        assert_eq!(
            (first.ra, first.dec, first.id.as_deref()),
            (0.5, 0.0, Some("img0"))
        );
        assert_eq!((first.t_min, first.t_max), (Some(60000.0), None));
        let null = rows[2].as_ref().unwrap_err();
        assert!(null.reason.contains("dec has no value"), "{null:?}");
        let last = rows[9_999].as_ref().unwrap();
        assert_eq!((last.row, last.ra, last.dec), (9_999, 306.5, -9.0));
        assert_eq!(last.id.as_deref(), Some("img9999"));
        assert_eq!(last.t_min, Some(69_999.0));
        // Every row's position comes from its own row, across row groups and batches.
        for (n, row) in rows.iter().enumerate().filter(|(n, _)| *n != 2) {
            assert_eq!(row.as_ref().unwrap().ra, (n % 359) as f64 + 0.5);
        }
    }

    #[test]
    fn columns_are_found_by_name_only() {
        let file = write(3, 3, Compression::UNCOMPRESSED);
        let mut cat = ParquetCatalogue::open(file.reopen().unwrap(), Some("other"), None).unwrap();
        assert_eq!(cat.next_row().unwrap().unwrap().unwrap().ra, 1.0);
        let opened = ParquetCatalogue::open(file.reopen().unwrap(), Some("alpha"), None);
        assert!(
            matches!(&opened, Err(SodaError::Usage(m)) if m.contains("\"alpha\"") && m.contains("RA, dec, id, t_min, other")),
            "{:?}",
            opened.err()
        );
    }

    /// A one-row file of the given schema, every column INT64 holding `value`.
    fn write_int64(schema: &str, value: i64) -> tempfile::NamedTempFile {
        let schema = Arc::new(parse_message_type(schema).unwrap());
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut writer =
            SerializedFileWriter::new(file.reopen().unwrap(), schema, Default::default()).unwrap();
        let mut group = writer.next_row_group().unwrap();
        while let Some(mut col) = group.next_column().unwrap() {
            col.typed::<Int64Type>()
                .write_batch(&[value], None, None)
                .unwrap();
            col.close().unwrap();
        }
        group.close().unwrap();
        writer.close().unwrap();
        file
    }

    #[test]
    fn decimals_are_scaled_unsigned_integers_read_unsigned_and_timestamps_refused() {
        let decimal = write_int64(
            "message m { required int64 ra (DECIMAL(18, 6)); required int64 dec (DECIMAL(18, 6)); }",
            10_684_708,
        );
        let row = read_all(&decimal).unwrap().remove(0).unwrap();
        assert!((row.ra - 10.684708).abs() < 1e-12, "{row:?}");
        let unsigned = write_int64(
            "message m { required int64 ra (INTEGER(64, false)); required int64 dec; }",
            -1,
        );
        let row = read_all(&unsigned).unwrap().remove(0).unwrap();
        // Read signed, the bits of u64::MAX would be -1, that is 359 degrees.
        assert_eq!(row.ra, (u64::MAX as f64).rem_euclid(360.0));
        let timestamps = write_int64(
            "message m { required int64 ra; required int64 dec; required int64 t_min (TIMESTAMP(MILLIS, true)); }",
            1,
        );
        let opened = read_all(&timestamps);
        assert!(matches!(opened, Err(SodaError::Usage(m)) if m.contains("dates or times")));
    }

    #[test]
    fn a_truncated_file_is_a_usage_error() {
        let file = write(1_000, 500, Compression::SNAPPY);
        let bytes = std::fs::read(file.path()).unwrap();
        for keep in [0, 4, 11, bytes.len() / 2, bytes.len() - 1] {
            let mut cut = tempfile::NamedTempFile::new().unwrap();
            cut.write_all(&bytes[..keep]).unwrap();
            let outcome = read_all(&cut);
            assert!(
                matches!(&outcome, Err(SodaError::Usage(m)) if m.contains("cut short / unreadable")),
                "{keep} bytes: {:?}",
                outcome.map(|r| r.len())
            );
        }
    }

    #[test]
    fn a_codec_not_built_in_is_named() {
        let file = write(3, 3, Compression::SNAPPY);
        let mut bytes = std::fs::read(file.path()).unwrap();
        // Corrupting the data of the first page must be an error, not a panic.
        bytes[8] ^= 0xff;
        bytes[9] ^= 0xff;
        let mut bad = tempfile::NamedTempFile::new().unwrap();
        bad.write_all(&bytes).unwrap();
        assert!(matches!(read_all(&bad), Err(SodaError::Usage(_))));
        let e = unreadable(ParquetError::General(
            "Disabled feature at compile time: zstd".into(),
        ));
        assert!(matches!(e, SodaError::Usage(m) if m.contains("compressed with zstd")));
    }
}
