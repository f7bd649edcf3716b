//! [`SqlImageIndex`]: the sky index ([`uws::sky_index::ImageIndex`]) in the job-store database,
//! PostgreSQL or SQLite, beside the jobs (migration 6: `sky_image` and `sky_cell`).
//!
//! A lookup is one statement: the images with a row in `sky_cell` whose cell is one of the
//! query's cells or inside one of its NUNIQ ranges (each an index range scan of the primary key
//! `(cell, image_id)`), narrowed by time, band and collection. What the cells mean is the
//! caller's business; the rows are numbers and strings.
//!
//! On SQLite every write goes through the job store's writer (one connection), so indexing
//! never makes a job's write wait on a lock; each file's rows are replaced in one transaction.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe, Row};
use uws::UwsError;
use uws::sky_index::{
    CellQuery, FileStamp, ImageContent, ImageIndex, ImageLocation, IndexCounts, IndexedImage,
};

use crate::writer::{Bind, SqliteWriter, Write};

/// Cell rows per `INSERT` statement.
/// Rows per multi-row INSERT: 2 and 16 binds a row stay under SQLite's 32,766 binds and
/// PostgreSQL's 65,535.
const CELLS_PER_INSERT: usize = 2000;
const IMAGES_PER_INSERT: usize = 500;

const IMAGE_COLUMNS: &str = "id, collection, file, file_size, file_mtime, problem, nx, ny, \
     s_ra, s_dec, s_radius, s_region, t_min, t_max, em_min, em_max";

/// The sky index over the job store's pool (see [`crate::SqlJobStore::sky_index`]).
#[derive(Clone, Debug)]
pub struct SqlImageIndex {
    pub(crate) pool: AnyPool,
    pub(crate) writer: Option<SqliteWriter>,
}

impl SqlImageIndex {
    /// Applies `writes` in one transaction.
    async fn write_all(&self, writes: Vec<Write>) -> Result<(), UwsError> {
        match &self.writer {
            Some(writer) => writer.write_all(writes).await.map(|_| ()),
            None => {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                for write in &writes {
                    write.fetch_optional(&mut tx).await.map_err(store_error)?;
                }
                tx.commit().await.map_err(store_error)
            }
        }
    }
}

fn delete_file(collection: &str, file: &str) -> Vec<Write> {
    let binds = || {
        vec![
            Bind::Text(collection.to_owned()),
            Bind::Text(file.to_owned()),
        ]
    };
    vec![
        Write {
            sql: "DELETE FROM sky_cell WHERE image_id IN \
                  (SELECT id FROM sky_image WHERE collection = $1 AND file = $2)"
                .to_owned(),
            binds: binds(),
            durable: false,
            then: Vec::new(),
        },
        Write {
            sql: "DELETE FROM sky_image WHERE collection = $1 AND file = $2".to_owned(),
            binds: binds(),
            durable: false,
            then: Vec::new(),
        },
    ]
}

#[async_trait]
impl ImageIndex for SqlImageIndex {
    async fn stamps(&self, collection: &str) -> Result<HashMap<String, FileStamp>, UwsError> {
        let rows = sqlx::query(
            "SELECT DISTINCT file, file_size, file_mtime FROM sky_image WHERE collection = $1",
        )
        .bind(collection)
        .fetch_all(&self.pool)
        .await
        .map_err(store_error)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<String, _>("file").map_err(store_error)?,
                    FileStamp {
                        size: u64::try_from(
                            row.try_get::<i64, _>("file_size").map_err(store_error)?,
                        )
                        .unwrap_or(0),
                        mtime: row.try_get("file_mtime").map_err(store_error)?,
                    },
                ))
            })
            .collect()
    }

    async fn replace_files(
        &self,
        collection: &str,
        files: Vec<(String, Vec<IndexedImage>)>,
    ) -> Result<(), UwsError> {
        let mut writes = Vec::new();
        for (file, _) in &files {
            writes.extend(delete_file(collection, file));
        }
        let images: Vec<(&str, &IndexedImage)> = files
            .iter()
            .flat_map(|(file, images)| images.iter().map(move |image| (file.as_str(), image)))
            .collect();
        for chunk in images.chunks(IMAGES_PER_INSERT) {
            writes.push(insert_images(collection, chunk));
        }
        let cells: Vec<(i64, &str)> = images
            .iter()
            .filter_map(|(_, image)| match &image.content {
                ImageContent::Located(location) => Some((location, image.id.as_str())),
                ImageContent::Unusable(_) => None,
            })
            .flat_map(|(location, id)| location.cells.iter().map(move |&cell| (cell, id)))
            .collect();
        for chunk in cells.chunks(CELLS_PER_INSERT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let mut binds = Vec::with_capacity(2 * chunk.len());
            for &(cell, id) in chunk {
                binds.push(Bind::Int(cell));
                binds.push(Bind::Text(id.to_owned()));
            }
            writes.push(Write {
                sql: format!(
                    "INSERT INTO sky_cell (cell, image_id) VALUES {} ON CONFLICT DO NOTHING",
                    values.join(", ")
                ),
                binds,
                durable: false,
                then: Vec::new(),
            });
        }
        self.write_all(writes).await
    }

    async fn remove_file(&self, collection: &str, file: &str) -> Result<(), UwsError> {
        self.write_all(delete_file(collection, file)).await
    }

    async fn settle(&self) -> Result<(), UwsError> {
        // `PRAGMA optimize` analyzes only the tables whose statistics are stale; it runs on the
        // writer connection, as it writes sqlite_stat1. PostgreSQL's ANALYZE samples the tables.
        let sql = match self.writer {
            Some(_) => "PRAGMA optimize",
            None => "ANALYZE sky_image, sky_cell",
        };
        self.write_all(vec![Write {
            sql: sql.to_owned(),
            binds: Vec::new(),
            durable: false,
            then: Vec::new(),
        }])
        .await
    }

    async fn forget_collection(&self, collection: &str) -> Result<(), UwsError> {
        let binds = || vec![Bind::Text(collection.to_owned())];
        self.write_all(vec![
            Write {
                sql: "DELETE FROM sky_cell WHERE image_id IN \
                      (SELECT id FROM sky_image WHERE collection = $1)"
                    .to_owned(),
                binds: binds(),
                durable: false,
                then: Vec::new(),
            },
            Write {
                sql: "DELETE FROM sky_image WHERE collection = $1".to_owned(),
                binds: binds(),
                durable: false,
                then: Vec::new(),
            },
        ])
        .await
    }

    async fn candidates(&self, query: &CellQuery) -> Result<Vec<IndexedImage>, UwsError> {
        let mut conditions = Vec::new();
        let mut next = 0;
        let mut placeholder = || {
            next += 1;
            format!("${next}")
        };
        let mut cell_terms = Vec::new();
        if !query.cells.is_empty() {
            let list: Vec<String> = query.cells.iter().map(|_| placeholder()).collect();
            cell_terms.push(format!("cell IN ({})", list.join(", ")));
        }
        for _ in &query.ranges {
            let (a, b) = (placeholder(), placeholder());
            cell_terms.push(format!("(cell >= {a} AND cell < {b})"));
        }
        if cell_terms.is_empty() {
            return Ok(Vec::new());
        }
        conditions.push(format!(
            "i.id IN (SELECT image_id FROM sky_cell WHERE {})",
            cell_terms.join(" OR ")
        ));
        conditions.push("i.problem IS NULL".to_owned());
        if query.time.is_some() {
            let (lo, hi) = (placeholder(), placeholder());
            conditions.push(format!("i.t_min <= {hi} AND i.t_max >= {lo}"));
        }
        if query.band.is_some() {
            let (lo, hi) = (placeholder(), placeholder());
            conditions.push(format!("i.em_min <= {hi} AND i.em_max >= {lo}"));
        }
        if !query.collections.is_empty() {
            let list: Vec<String> = query.collections.iter().map(|_| placeholder()).collect();
            conditions.push(format!("i.collection IN ({})", list.join(", ")));
        }
        let limit = placeholder();
        let columns = IMAGE_COLUMNS
            .split(", ")
            .map(|c| format!("i.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {columns} FROM sky_image i WHERE {} \
             ORDER BY (CASE WHEN i.t_min IS NULL THEN 1 ELSE 0 END), i.t_min, i.id LIMIT {limit}",
            conditions.join(" AND ")
        );
        let mut statement = sqlx::query(AssertSqlSafe(sql));
        for &cell in &query.cells {
            statement = statement.bind(cell);
        }
        for &(a, b) in &query.ranges {
            statement = statement.bind(a).bind(b);
        }
        for (lo, hi) in query.time.iter().chain(query.band.iter()) {
            statement = statement.bind(*lo).bind(*hi);
        }
        for collection in &query.collections {
            statement = statement.bind(collection.clone());
        }
        statement = statement.bind(i64::try_from(query.limit).unwrap_or(i64::MAX));
        let rows = statement.fetch_all(&self.pool).await.map_err(store_error)?;
        rows.iter().map(decode_image).collect()
    }

    async fn counts(&self) -> Result<IndexCounts, UwsError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN problem IS NULL THEN 1 ELSE 0 END), 0) AS located, \
             COALESCE(SUM(CASE WHEN problem IS NULL THEN 0 ELSE 1 END), 0) AS unusable \
             FROM sky_image",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        let count = |name: &str| -> Result<u64, UwsError> {
            let n: i64 = row.try_get(name).map_err(store_error)?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(IndexCounts {
            located: count("located")?,
            unusable: count("unusable")?,
        })
    }

    async fn unusable(&self, limit: usize) -> Result<Vec<IndexedImage>, UwsError> {
        let sql = format!(
            "SELECT {IMAGE_COLUMNS} FROM sky_image WHERE problem IS NOT NULL ORDER BY id LIMIT $1"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter().map(decode_image).collect()
    }
}

/// One multi-row INSERT of image rows.
fn insert_images(collection: &str, images: &[(&str, &IndexedImage)]) -> Write {
    const COLUMNS: usize = 16;
    let values: Vec<String> = (0..images.len())
        .map(|row| {
            let marks: Vec<String> = (1..=COLUMNS)
                .map(|c| format!("${}", row * COLUMNS + c))
                .collect();
            format!("({})", marks.join(", "))
        })
        .collect();
    let mut binds = Vec::with_capacity(images.len() * COLUMNS);
    for &(file, image) in images {
        let (problem, location) = match &image.content {
            ImageContent::Located(location) => (None, Some(location)),
            ImageContent::Unusable(reason) => (Some(reason.clone()), None),
        };
        let real = |f: fn(&ImageLocation) -> Option<f64>| Bind::OptReal(location.and_then(f));
        binds.extend([
            Bind::Text(image.id.clone()),
            Bind::Text(collection.to_owned()),
            Bind::Text(file.to_owned()),
            Bind::Int(i64::try_from(image.stamp.size).unwrap_or(i64::MAX)),
            Bind::Int(image.stamp.mtime),
            Bind::OptText(problem),
            Bind::OptInt(location.map(|l| l.size.0 as i64)),
            Bind::OptInt(location.map(|l| l.size.1 as i64)),
            real(|l| Some(l.center.0)),
            real(|l| Some(l.center.1)),
            real(|l| Some(l.radius_deg)),
            Bind::OptText(location.map(|l| polygon_text(&l.corners))),
            real(|l| l.time.map(|t| t.0)),
            real(|l| l.time.map(|t| t.1)),
            real(|l| l.band.map(|b| b.0)),
            real(|l| l.band.map(|b| b.1)),
        ]);
    }
    Write {
        sql: format!(
            "INSERT INTO sky_image ({IMAGE_COLUMNS}) VALUES {}",
            values.join(", ")
        ),
        binds,
        durable: false,
        then: Vec::new(),
    }
}

/// Corners as the text of a DALI polygon, `ra1 dec1 ra2 dec2 ...`, exact in both directions.
fn polygon_text(corners: &[(f64, f64)]) -> String {
    corners
        .iter()
        .map(|(ra, dec)| format!("{ra} {dec}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_polygon(text: &str) -> Result<Vec<(f64, f64)>, UwsError> {
    let numbers: Vec<f64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| UwsError::Store(format!("bad s_region {text:?} in the sky index: {e}")))?;
    Ok(numbers.chunks_exact(2).map(|p| (p[0], p[1])).collect())
}

fn decode_image(row: &AnyRow) -> Result<IndexedImage, UwsError> {
    let get_real = |name: &str| -> Result<Option<f64>, UwsError> {
        row.try_get::<Option<f64>, _>(name).map_err(store_error)
    };
    let pair = |a: &str, b: &str| -> Result<Option<(f64, f64)>, UwsError> {
        Ok(get_real(a)?.zip(get_real(b)?))
    };
    let problem: Option<String> = row.try_get("problem").map_err(store_error)?;
    let content = match problem {
        Some(reason) => ImageContent::Unusable(reason),
        None => {
            let missing = || UwsError::Store("a located sky_image row lacks its footprint".into());
            let nx: Option<i64> = row.try_get("nx").map_err(store_error)?;
            let ny: Option<i64> = row.try_get("ny").map_err(store_error)?;
            let region: Option<String> = row.try_get("s_region").map_err(store_error)?;
            ImageContent::Located(ImageLocation {
                size: (
                    nx.ok_or_else(missing)?.max(0) as u64,
                    ny.ok_or_else(missing)?.max(0) as u64,
                ),
                center: pair("s_ra", "s_dec")?.ok_or_else(missing)?,
                radius_deg: get_real("s_radius")?.ok_or_else(missing)?,
                corners: parse_polygon(&region.ok_or_else(missing)?)?,
                time: pair("t_min", "t_max")?,
                band: pair("em_min", "em_max")?,
                cells: Vec::new(),
            })
        }
    };
    Ok(IndexedImage {
        id: row.try_get("id").map_err(store_error)?,
        collection: row.try_get("collection").map_err(store_error)?,
        file: row.try_get("file").map_err(store_error)?,
        stamp: FileStamp {
            size: u64::try_from(row.try_get::<i64, _>("file_size").map_err(store_error)?)
                .unwrap_or(0),
            mtime: row.try_get("file_mtime").map_err(store_error)?,
        },
        content,
    })
}

fn store_error(e: sqlx::Error) -> UwsError {
    UwsError::Store(format!("sky index: {e}"))
}
