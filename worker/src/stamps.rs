//! Stamp tables: the stamps of many images packed into one FITS table (`soda::stamp_table`),
//! for a stamp-table request (every position in every image it names) and for a bulk job (the
//! plan the frontend made from a catalogue, image by image).
//!
//! Each image is opened once and all its stamps are cut in one pass into a part of encoded rows
//! of its own; the parts are joined in image order when every image is done. A stamp that
//! cannot be cut (its window misses the image, the image is unreadable, no image covers the
//! row) is a line of the `errors` result (CSV: row, image, reason) instead of failing the job;
//! a job none of whose stamps could be cut fails with the first reason.
//!
//! A bulk job's plan is read a group at a time, so the worker's memory holds one image's
//! stamps, never the catalogue.

use std::path::PathBuf;

use soda::plan::{PlanItem, PlanReader, PlannedStamp};
use soda::stamp_table::{STAMP_TABLE, StampRow, StampTable, TableImage};
use soda::{SourceId, Stencil};
use uws::results::ObjectMeta;
use uws::{ErrorCode, JobError, JobResult};

use crate::cutouts::{Scratch, Store, internal, job_error, unavailable};
use crate::sources::JobSources;

/// The stamp table of one job while its images are cut.
struct TableBuilder {
    table: StampTable,
    parts: Vec<PathBuf>,
    images: Vec<TableImage>,
    /// The `errors` result, header line first.
    errors: String,
    first_error: Option<JobError>,
    rows: u64,
}

impl TableBuilder {
    fn new(size: usize) -> TableBuilder {
        TableBuilder {
            table: StampTable { size },
            parts: Vec::new(),
            images: Vec::new(),
            errors: String::from("row,image,reason\n"),
            first_error: None,
            rows: 0,
        }
    }

    /// Records that catalogue row `row` gave no stamp of `image` (empty: of any image).
    fn note(&mut self, row: u64, image: &str, error: JobError) {
        let quote = |text: &str| format!("\"{}\"", text.replace('"', "\"\""));
        // An image ID is quoted only when it must be (RFC 4180); the reason always is.
        let image = if image.contains([',', '"', '\n', '\r']) {
            quote(image)
        } else {
            image.to_owned()
        };
        self.errors
            .push_str(&format!("{row},{image},{}\n", quote(&error.labelled())));
        self.first_error.get_or_insert(error);
    }

    /// Cuts the stamps of one image into a part of its own; an image that cannot be opened or
    /// read makes every one of its stamps an error. Fails only when a part cannot be written.
    async fn add_image(
        &mut self,
        sources: &JobSources<'_>,
        id: &SourceId,
        stamps: &[PlannedStamp],
        scratch: &mut Scratch,
    ) -> Result<(), JobError> {
        let size = self.table.size;
        let positions: Vec<(f64, f64)> = stamps.iter().map(|s| (s.ra, s.dec)).collect();
        let cut = async {
            // Pinned in the source cache until its stamps are cut.
            let source = sources.open(id, None, job_error).await?;
            let (path, name) = (source.path.clone(), id.to_string());
            let extension = id.extension().map(str::to_owned);
            tokio::task::spawn_blocking(move || {
                soda::cut_stamps(&path, &name, extension.as_deref(), &positions, size)
            })
            .await
            .map_err(|e| internal(format!("stamp thread failed: {e}")))?
            .map_err(|e| source.explain(job_error(e)))
        };
        let cut = match cut.await {
            Ok(cut) => cut,
            Err(error) => {
                for stamp in stamps {
                    self.note(stamp.row, &id.to_string(), error.clone());
                }
                return Ok(());
            }
        };
        let image = u32::try_from(self.images.len())
            .map_err(|_| internal("too many images for one table".to_owned()))?;
        let mut bytes = Vec::with_capacity(self.table.row_bytes() * stamps.len());
        for (planned, stamp) in stamps.iter().zip(&cut.stamps) {
            match stamp {
                Ok(stamp) => {
                    let entry = StampRow {
                        row: planned.row,
                        ra: planned.ra,
                        dec: planned.dec,
                        image,
                        mjd: cut.mjd.unwrap_or(f64::NAN),
                        source_crpix: cut.crpix,
                        stamp,
                    };
                    self.table.encode(&entry, &mut bytes).map_err(job_error)?;
                    self.rows += 1;
                }
                Err(e) => self.note(planned.row, &id.to_string(), job_error(e.clone())),
            }
        }
        self.images.push(TableImage {
            id: id.to_string(),
            wcs_cards: cut.wcs_cards,
        });
        let part = scratch.file(&format!("part-{image}"));
        tokio::fs::write(&part, &bytes)
            .await
            .map_err(|e| unavailable(format!("writing stamps failed: {e}")))?;
        self.parts.push(part);
        Ok(())
    }

    /// Joins the parts and stores `stamps`, and `errors` when some stamp could not be cut.
    async fn finish(
        self,
        job: &uws::Job,
        store: &Store<'_>,
        scratch: &mut Scratch,
    ) -> Result<Vec<JobResult>, JobError> {
        if self.rows == 0 {
            return Err(self
                .first_error
                .unwrap_or_else(|| JobError::new(ErrorCode::NoData, "no stamp could be cut")));
        }
        let out = scratch.file("stamps.fits");
        let (path, table, parts, images) = (out.clone(), self.table, self.parts, self.images);
        tokio::task::spawn_blocking(move || table.assemble(&path, &parts, &images))
            .await
            .map_err(|e| internal(format!("stamp table thread failed: {e}")))?
            .map_err(job_error)?;
        let meta = ObjectMeta {
            content_type: STAMP_TABLE.to_owned(),
            filename: format!("{}-stamps.fits", job.id),
        };
        let mut stored = vec![store.put("stamps", "fits", &out, meta).await?];
        if self.first_error.is_some() {
            let path = scratch.file("errors.csv");
            tokio::fs::write(&path, &self.errors)
                .await
                .map_err(|e| unavailable(format!("writing the errors failed: {e}")))?;
            let meta = ObjectMeta {
                content_type: "text/csv".to_owned(),
                filename: format!("{}-errors.csv", job.id),
            };
            stored.push(store.put("errors", "csv", &path, meta).await?);
        }
        Ok(stored)
    }
}

/// The results of a stamp-table request: a stamp of every position in every image. A row's
/// `ROW` is its circle's place among the request's stencils (0-based), so the rows of one
/// position in several images (a light curve) share it.
pub(crate) async fn stamp_table(
    job: &uws::Job,
    request: &soda::request::CutoutRequest,
    sources: &JobSources<'_>,
    store: &Store<'_>,
    scratch: &mut Scratch,
) -> Result<Vec<JobResult>, JobError> {
    let size = request
        .size
        .ok_or_else(|| JobError::new(ErrorCode::Usage, "a stamp table needs SIZE"))?;
    let stamps: Vec<PlannedStamp> = request
        .stencils
        .iter()
        .enumerate()
        .map(|(row, stencil)| match stencil {
            Stencil::Circle(circle) => {
                let (ra, dec) = circle.center();
                Ok(PlannedStamp {
                    row: row as u64,
                    ra,
                    dec,
                })
            }
            other => Err(JobError::new(
                ErrorCode::Usage,
                format!("a stamp is centred on a CIRCLE, not {other}"),
            )),
        })
        .collect::<Result<_, _>>()?;
    let mut builder = TableBuilder::new(size);
    for id in &request.ids {
        builder.add_image(sources, id, &stamps, scratch).await?;
    }
    builder.finish(job, store, scratch).await
}

/// The results of a bulk job: the stamps its plan lists, image by image.
pub(crate) async fn bulk(
    job: &uws::Job,
    sources: &JobSources<'_>,
    store: &Store<'_>,
    scratch: &mut Scratch,
) -> Result<Vec<JobResult>, JobError> {
    let size = job
        .parameters
        .iter()
        .find(|(name, _)| name == "SIZE")
        .ok_or_else(|| JobError::new(ErrorCode::Usage, "a bulk job needs SIZE"))
        .and_then(|(_, value)| soda::request::parse_size(value).map_err(job_error))?;
    let plan = scratch.file("plan.txt");
    store
        .results
        .get_file(&soda::plan::plan_key(job.id.as_str()), &plan)
        .await
        .map_err(|e| unavailable(format!("reading the bulk plan failed: {e}")))?;
    let file = std::fs::File::open(&plan)
        .map_err(|e| unavailable(format!("reading the bulk plan failed: {e}")))?;
    let mut reader = PlanReader::open(std::io::BufReader::with_capacity(1 << 16, file))
        .map_err(|e| internal(format!("the bulk plan is unreadable: {e}")))?;
    let mut builder = TableBuilder::new(size);
    loop {
        // A group is read on a blocking thread: the plan is a file.
        let (back, item) = tokio::task::spawn_blocking(move || {
            let item = reader.next_item();
            (reader, item)
        })
        .await
        .map_err(|e| internal(format!("plan thread failed: {e}")))?;
        reader = back;
        match item.map_err(|e| internal(format!("the bulk plan is unreadable: {e}")))? {
            None => break,
            Some(PlanItem::Error { row, reason }) => {
                builder.note(row, "", JobError::new(ErrorCode::NoData, reason));
            }
            Some(PlanItem::Image { id, stamps }) => match SourceId::parse(&id) {
                Ok(source) => {
                    builder
                        .add_image(sources, &source, &stamps, scratch)
                        .await?
                }
                Err(e) => {
                    let error = job_error(e);
                    for stamp in &stamps {
                        builder.note(stamp.row, &id, error.clone());
                    }
                }
            },
        }
    }
    builder.finish(job, store, scratch).await
}
