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

use std::io::Write;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;

use soda::bulk_plan::{Extent, PlanItem, PlanReader, PlannedStamp};
use soda::stamp_file::Packaging;
use soda::stamp_table::{StampRow, StampTable, TableImage};
use soda::{SourceId, Stencil};
use uws::results::{ObjectMeta, ResultStore};
use uws::{ErrorCode, JobError, JobResult};

use crate::cutouts::{Scratch, Store, internal, job_error, unavailable};
use crate::runner::{StoredKeys, WorkerSettings};
use crate::shards::{self, BatchWriter, CutImage, Shard};
use crate::sources::JobSources;

/// The part being written: a file of its own, valid when closed.
enum OpenPart {
    /// Encoded table rows, and the images they refer to; the headers are written when the
    /// part is closed, when the row count is known.
    Table {
        rows: std::io::BufWriter<std::fs::File>,
        rows_path: PathBuf,
        count: u64,
        images: Vec<TableImage>,
    },
    Mef(std::io::BufWriter<std::fs::File>),
    Zip {
        zip: Box<zip::ZipWriter<std::io::BufWriter<std::fs::File>>>,
        index: String,
    },
}

/// The stamps of one job while its images are cut: written as they come, into numbered parts
/// of at most `part_bytes` each (a part holds at least one stamp).
struct StampsBuilder {
    packaging: Packaging,
    table: StampTable,
    part_bytes: u64,
    /// Closed parts, in order.
    parts: Vec<PathBuf>,
    open: Option<(PathBuf, OpenPart)>,
    open_bytes: u64,
    /// The `errors` result, header line first.
    errors: String,
    first_error: Option<JobError>,
    stamps: u64,
}

fn io_error(what: &str) -> impl Fn(std::io::Error) -> JobError + '_ {
    move |e| unavailable(format!("{what} failed: {e}"))
}

impl StampsBuilder {
    fn new(packaging: Packaging, table: StampTable, part_bytes: u64) -> StampsBuilder {
        StampsBuilder {
            packaging,
            table,
            part_bytes: part_bytes.max(1),
            parts: Vec::new(),
            open: None,
            open_bytes: 0,
            errors: String::from("row,image,reason\n"),
            first_error: None,
            stamps: 0,
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

    /// Cuts the stamps of one image and adds them.
    async fn add_image(
        &mut self,
        sources: &JobSources<'_>,
        id: &SourceId,
        stamps: &[PlannedStamp],
        scratch: &mut Scratch,
    ) -> Result<(), JobError> {
        let cut = cut_image(sources, id, stamps, None).await;
        self.add_cut(
            &id.to_string(),
            stamps,
            cut.map(CutImage::from_soda),
            scratch,
        )
    }

    /// Adds the stamps of one image, cut by [`cut_image`]; an image that could not be opened or
    /// read makes every one of its stamps an error. Fails only when the stamps cannot be written.
    fn add_cut(
        &mut self,
        id: &str,
        stamps: &[PlannedStamp],
        cut: Result<CutImage, JobError>,
        scratch: &mut Scratch,
    ) -> Result<(), JobError> {
        let cut = match cut {
            Ok(cut) => cut,
            Err(error) => {
                for stamp in stamps {
                    self.note(stamp.row, id, error.clone());
                }
                return Ok(());
            }
        };
        // Writing is quick next to cutting: done here, in order, so parts are deterministic.
        for (planned, stamp) in stamps.iter().zip(&cut.stamps) {
            match stamp {
                Ok(stamp) => self.write(planned, stamp, id, &cut, scratch)?,
                Err(e) => self.note(planned.row, id, e.clone()),
            }
        }
        Ok(())
    }

    /// Writes one stamp into the open part, closing it first when the stamp would take it past
    /// `part_bytes`.
    fn write(
        &mut self,
        planned: &PlannedStamp,
        stamp: &soda::Stamp,
        id: &str,
        cut: &CutImage,
        scratch: &mut Scratch,
    ) -> Result<(), JobError> {
        let bytes = match self.packaging {
            Packaging::Table => self.table.encoded_bytes(stamp) as u64,
            Packaging::Mef | Packaging::Zip => {
                soda::stamp_file::stamp_bytes(stamp.pixels.len(), cut.wcs_cards.len(), id.len())
            }
        };
        if self.open.is_some() && self.open_bytes + bytes > self.part_bytes {
            self.close_part()?;
        }
        if self.open.is_none() {
            self.open_part(scratch)?;
        }
        let image = soda::stamp_file::StampImage {
            row: planned.row,
            ra: planned.ra,
            dec: planned.dec,
            image_id: id,
            wcs_cards: &cut.wcs_cards,
            source_crpix: cut.crpix,
            mjd: cut.mjd,
            stamp,
        };
        let Some((_, part)) = self.open.as_mut() else {
            return Err(internal("no part is open".to_owned()));
        };
        match part {
            OpenPart::Table {
                rows,
                count,
                images,
                ..
            } => {
                if images.last().is_none_or(|last| last.id != id) {
                    images.push(TableImage {
                        id: id.to_owned(),
                        wcs_cards: cut.wcs_cards.clone(),
                    });
                }
                let index = u32::try_from(images.len() - 1)
                    .map_err(|_| internal("too many images for one table".to_owned()))?;
                let entry = StampRow {
                    row: planned.row,
                    ra: planned.ra,
                    dec: planned.dec,
                    image: index,
                    mjd: cut.mjd.unwrap_or(f64::NAN),
                    source_crpix: cut.crpix,
                    stamp,
                };
                let mut encoded = Vec::with_capacity(bytes as usize);
                self.table.encode(&entry, &mut encoded).map_err(job_error)?;
                rows.write_all(&encoded)
                    .map_err(io_error("writing stamps"))?;
                *count += 1;
            }
            OpenPart::Mef(out) => {
                soda::stamp_file::write_stamp(out, &image, false).map_err(job_error)?;
            }
            OpenPart::Zip { zip, index } => {
                let mut file = Vec::with_capacity(bytes as usize);
                soda::stamp_file::write_stamp(&mut file, &image, true).map_err(job_error)?;
                // Rows may repeat (one per covering image): the entry names both.
                let name = format!("stamps/row{}-{:08x}.fits", planned.row, self.stamps);
                let options = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored)
                    .large_file(file.len() as u64 >= u32::MAX as u64);
                zip.start_file(name.as_str(), options)
                    .map_err(|e| unavailable(format!("writing the zip failed: {e}")))?;
                zip.write_all(&file).map_err(io_error("writing the zip"))?;
                let mjd = cut.mjd.map(|m| m.to_string()).unwrap_or_default();
                let quoted_id = format!("\"{}\"", id.replace('"', "\"\""));
                index.push_str(&format!(
                    "{name},{},{},{},{quoted_id},{},{},{mjd}\n",
                    planned.row, planned.ra, planned.dec, stamp.pixel.0, stamp.pixel.1
                ));
            }
        }
        self.open_bytes += bytes;
        self.stamps += 1;
        Ok(())
    }

    fn open_part(&mut self, scratch: &mut Scratch) -> Result<(), JobError> {
        let n = self.parts.len();
        let path = scratch.file(&format!("stamps-{n}.{}", self.packaging.extension()));
        let create = |path: &PathBuf| {
            std::fs::File::create(path)
                .map(|f| std::io::BufWriter::with_capacity(1 << 20, f))
                .map_err(io_error("creating a part"))
        };
        let part = match self.packaging {
            Packaging::Table => {
                let rows_path = scratch.file(&format!("rows-{n}"));
                OpenPart::Table {
                    rows: create(&rows_path)?,
                    rows_path,
                    count: 0,
                    images: Vec::new(),
                }
            }
            Packaging::Mef => {
                let mut out = create(&path)?;
                soda::stamp_file::write_empty_primary(&mut out).map_err(job_error)?;
                OpenPart::Mef(out)
            }
            Packaging::Zip => OpenPart::Zip {
                zip: Box::new(zip::ZipWriter::new(create(&path)?)),
                index: String::from("file,row,ra,dec,image,x,y,mjd\n"),
            },
        };
        self.open = Some((path, part));
        self.open_bytes = 0;
        Ok(())
    }

    /// Finishes the open part as a file of its own.
    fn close_part(&mut self) -> Result<(), JobError> {
        let Some((path, part)) = self.open.take() else {
            return Ok(());
        };
        match part {
            OpenPart::Table {
                rows,
                rows_path,
                images,
                ..
            } => {
                rows.into_inner()
                    .map_err(|e| unavailable(format!("writing stamps failed: {e}")))?;
                self.table
                    .assemble(&path, &[rows_path], &images)
                    .map_err(job_error)?;
            }
            OpenPart::Mef(out) => {
                out.into_inner()
                    .map_err(|e| unavailable(format!("writing stamps failed: {e}")))?;
            }
            OpenPart::Zip { mut zip, index } => {
                let options = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored);
                zip.start_file("index.csv", options)
                    .map_err(|e| unavailable(format!("writing the zip failed: {e}")))?;
                zip.write_all(index.as_bytes())
                    .map_err(io_error("writing the zip"))?;
                zip.finish()
                    .map_err(|e| unavailable(format!("writing the zip failed: {e}")))?
                    .into_inner()
                    .map_err(|e| unavailable(format!("writing the zip failed: {e}")))?;
            }
        }
        self.parts.push(path);
        Ok(())
    }

    /// Closes the last part and stores the parts (`stamps`, or `stamps-1`, `stamps-2`, …), and
    /// `errors` when some stamp could not be cut.
    async fn finish(
        mut self,
        job: &uws::Job,
        store: &Store<'_>,
        scratch: &mut Scratch,
    ) -> Result<Vec<JobResult>, JobError> {
        if self.stamps == 0 {
            return Err(self
                .first_error
                .take()
                .unwrap_or_else(|| JobError::new(ErrorCode::NoData, "no stamp could be cut")));
        }
        // The last part's headers (a table's) take a moment: off the async threads.
        let mut builder = tokio::task::spawn_blocking(move || {
            let closed = self.close_part();
            (self, closed)
        })
        .await
        .map_err(|e| internal(format!("stamp thread failed: {e}")))
        .and_then(|(builder, closed)| closed.map(|()| builder))?;
        let extension = builder.packaging.extension();
        let single = builder.parts.len() == 1;
        let mut stored = Vec::new();
        for (n, part) in builder.parts.iter().enumerate() {
            let result_id = if single {
                "stamps".to_owned()
            } else {
                format!("stamps-{}", n + 1)
            };
            let meta = ObjectMeta {
                content_type: builder.packaging.media_type().to_owned(),
                filename: format!("{}-{result_id}.{extension}", job.id),
            };
            stored.push(store.put(&result_id, extension, part, meta).await?);
        }
        if builder.first_error.is_some() {
            let path = scratch.file("errors.csv");
            tokio::fs::write(&path, &builder.errors)
                .await
                .map_err(|e| unavailable(format!("writing the errors failed: {e}")))?;
            let meta = ObjectMeta {
                content_type: "text/csv".to_owned(),
                filename: format!("{}-errors.csv", job.id),
            };
            stored.push(store.put("errors", "csv", &path, meta).await?);
        }
        builder.parts.clear();
        Ok(stored)
    }
}

/// How the stamps of a bulk plan are cut, beyond what the plan says.
#[derive(Debug, Clone, Copy, Default)]
struct CutRules {
    /// The extent of a version 1 plan's stamps (the job's `SIZE`).
    default_extent: Option<Extent>,
    /// Most pixels a side of a `RADIUS` stamp (`[jobs] max_stamp_size`).
    max_side: Option<usize>,
}

impl CutRules {
    fn of(job: &uws::Job, settings: &WorkerSettings) -> CutRules {
        CutRules {
            default_extent: version_1_extent(job),
            max_side: settings.max_stamp_side,
        }
    }
}

/// Opens one image and cuts the stamps of `stamps` from it, each of its own extent, on a
/// blocking thread; a `RADIUS` stamp over `max_side` pixels a side is an error of its own.
async fn cut_image(
    sources: &JobSources<'_>,
    id: &SourceId,
    stamps: &[PlannedStamp],
    max_side: Option<usize>,
) -> Result<soda::ImageStamps, JobError> {
    let positions: Vec<(f64, f64, Extent)> =
        stamps.iter().map(|s| (s.ra, s.dec, s.extent)).collect();
    // Pinned in the source cache until its stamps are cut.
    let source = sources.open(id, None, job_error).await?;
    let (path, name) = (source.path.clone(), id.to_string());
    let extension = id.extension().map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        soda::cut_stamps(&path, &name, extension.as_deref(), &positions, max_side)
    })
    .await
    .map_err(|e| internal(format!("stamp thread failed: {e}")))?
    .map_err(|e| source.explain(job_error(e)))
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
                    extent: Extent::Size(size),
                })
            }
            other => Err(JobError::new(
                ErrorCode::Usage,
                format!("a stamp is centred on a CIRCLE, not {other}"),
            )),
        })
        .collect::<Result<_, _>>()?;
    let mut builder = StampsBuilder::new(Packaging::Table, StampTable::Square { size }, u64::MAX);
    for id in &request.ids {
        builder.add_image(sources, id, &stamps, scratch).await?;
    }
    builder.finish(job, store, scratch).await
}

/// Files removed when this is dropped, unless taken over first ([`RemovedUnlessAdopted::adopt`]).
struct RemovedUnlessAdopted(Vec<PathBuf>);

impl RemovedUnlessAdopted {
    /// The files, now the caller's to remove.
    fn adopt(mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for RemovedUnlessAdopted {
    fn drop(&mut self) {
        for file in &self.0 {
            std::fs::remove_file(file).ok();
        }
    }
}

/// The results of a bulk job: the stamps its plan lists, image by image.
///
/// A plan of one shard is cut here, straight into the results. A plan of several is shared
/// (see [`crate::shards`]): each shard's plan is stored and queued for any worker, this worker
/// cuts the shards nobody has cut yet from the last one back, and then packages every shard's
/// batch in plan order.
pub(crate) async fn bulk(
    job: &uws::Job,
    settings: &WorkerSettings,
    sources: &JobSources<'_>,
    store: &Store<'_>,
    scratch: &mut Scratch,
) -> Result<Vec<JobResult>, JobError> {
    let rules = CutRules::of(job, settings);
    let format = job
        .parameters
        .iter()
        .find(|(name, _)| name == "RESPONSEFORMAT")
        .map(|(_, value)| value.as_str());
    let packaging = Packaging::from_response_format(format).map_err(job_error)?;
    let plan = scratch.file("plan.txt");
    store
        .results
        .get_file(&soda::bulk_plan::plan_key(job.id.as_str()), &plan)
        .await
        .map_err(|e| unavailable(format!("reading the bulk plan failed: {e}")))?;
    let file = std::fs::File::open(&plan)
        .map_err(|e| unavailable(format!("reading the bulk plan failed: {e}")))?;
    let reader = PlanReader::open(std::io::BufReader::with_capacity(1 << 16, file))
        .map_err(|e| internal(format!("the bulk plan is unreadable: {e}")))?
        .with_default_extent(rules.default_extent);
    let (total_stamps, total_images) = reader.totals();
    // The plan is read and split on a blocking thread: it is a file, perhaps a large one. An
    // abort drops this future but not the thread, before or after the thread sent the split:
    // the shard plans travel with a guard that removes them wherever the split is dropped
    // unadopted (by the thread, or in the channel with its receiver).
    let base = scratch.file("shard");
    let limits = settings.shards;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let split = shards::split(reader, limits, |n| {
            let mut path = base.clone().into_os_string();
            path.push(format!("-{n}"));
            PathBuf::from(path)
        });
        let split = split.map(|split| {
            let plans = RemovedUnlessAdopted(split.shards.iter().map(|s| s.plan.clone()).collect());
            (split, plans)
        });
        sender.send(split).ok();
    });
    let (split, plans) = receiver
        .await
        .map_err(|e| internal(format!("plan thread failed: {e}")))??;
    // Adopted at once (no await between): whenever this attempt ends, they go.
    for plan in plans.adopt() {
        scratch.adopt(plan);
    }

    // Stamps of one size stack into a table's fixed-size column; others need their own shapes.
    let table = match split.one_size {
        Some(size) => StampTable::Square { size },
        None => StampTable::Varied,
    };
    let mut builder = StampsBuilder::new(packaging, table, settings.part_bytes);
    for (row, reason) in split.errors {
        builder.note(row, "", JobError::new(ErrorCode::NoData, reason));
    }
    let mut progress = Progress::new(
        store.uws,
        &job.id,
        (total_stamps, total_images, split.shards.len().max(1) as u64),
    );
    if split.shards.len() <= 1 {
        if let Some(shard) = split.shards.first() {
            cut_plan(
                &shard.plan,
                sources,
                rules,
                Some(&mut progress),
                |id, stamps, cut| builder.add_cut(&id, &stamps, cut, scratch),
            )
            .await?;
        }
        progress.shard_finished();
        progress.report().await;
        return builder.finish(job, store, scratch).await;
    }

    let shards = split.shards;
    share(job, &shards, sources.token, store).await?;
    let batches =
        cut_unclaimed(job, &shards, sources, rules, store, scratch, &mut progress).await?;
    progress.report().await;
    for (shard, batch) in shards.iter().zip(batches) {
        let path = match batch {
            Some(path) => path,
            None => {
                let path = scratch.file(&format!("{}.batch", shard.name));
                store
                    .results
                    .get_file(&shards::batch_key(job.id.as_str(), &shard.name), &path)
                    .await
                    .map_err(|e| unavailable(format!("reading a shard's stamps failed: {e}")))?;
                path
            }
        };
        let mut reader = shards::open_batch(&path)
            .map_err(|e| internal(format!("a shard's stamps are unreadable: {e}")))?;
        while let Some((id, stamps, cut)) = reader
            .next_image()
            .map_err(|e| internal(format!("a shard's stamps are unreadable: {e}")))?
        {
            builder.add_cut(&id, &stamps, cut, scratch)?;
        }
    }
    let results = builder.finish(job, store, scratch).await?;
    // The shards served their purpose; a late copy of one (a worker that finished after this
    // one had cut it too) goes with the second pass, or with the job's prefix at the latest.
    let keys: Vec<String> = shards
        .iter()
        .flat_map(|s| {
            [
                shards::plan_key(job.id.as_str(), &s.name),
                shards::batch_key(job.id.as_str(), &s.name),
            ]
        })
        .collect();
    crate::runner::remove_later(store.uws.results().clone(), keys);
    Ok(results)
}

/// The extent of every stamp of a bulk plan stored before stamps had their own (version 1):
/// the job's `SIZE`.
fn version_1_extent(job: &uws::Job) -> Option<Extent> {
    job.parameters
        .iter()
        .find(|(name, _)| name == "SIZE")
        .and_then(|(_, value)| soda::request::parse_size(value).ok())
        .map(Extent::Size)
}

/// The metadata of a shard's objects, which no client ever sees.
fn shard_meta(name: &str, extension: &str) -> ObjectMeta {
    ObjectMeta {
        content_type: "application/octet-stream".to_owned(),
        filename: format!("{name}.{extension}"),
    }
}

/// Stores each shard's plan and queues it on the bulk lane for any worker. A shard that cannot
/// be queued is only not shared: this worker cuts it.
async fn share(
    job: &uws::Job,
    shards: &[Shard],
    token: Option<&uws::queue::DelegatedToken>,
    store: &Store<'_>,
) -> Result<(), JobError> {
    for shard in shards {
        // Recorded first: an attempt that does not complete removes every shard object.
        let plan_key = shards::plan_key(job.id.as_str(), &shard.name);
        store.stored_keys.record(&plan_key);
        store
            .stored_keys
            .record(&shards::batch_key(job.id.as_str(), &shard.name));
        store
            .results
            .put_file(&plan_key, &shard.plan, &shard_meta(&shard.name, "plan"))
            .await
            .map_err(|e| unavailable(format!("storing a shard plan failed: {e}")))?;
    }
    for shard in shards {
        let message = uws::queue::QueuedJob {
            id: job.id.clone(),
            priority: uws::queue::Priority::Bulk,
            token: token.cloned(),
            shard: Some(shard.name.clone()),
        };
        if let Err(e) = store.uws.queue().enqueue(message).await {
            tracing::warn!(shard = %shard.name, error = %e, "could not share a bulk shard; cutting it here");
        }
    }
    tracing::info!(shards = shards.len(), "bulk job shared as shards");
    Ok(())
}

/// Cuts, from the last shard back, every shard whose batch no other worker has stored yet, and
/// stores each batch (so that a later attempt finds it). Returns the local batch of each shard
/// cut here.
async fn cut_unclaimed(
    job: &uws::Job,
    shards: &[Shard],
    sources: &JobSources<'_>,
    rules: CutRules,
    store: &Store<'_>,
    scratch: &mut Scratch,
    progress: &mut Progress<'_>,
) -> Result<Vec<Option<PathBuf>>, JobError> {
    let mut batches = vec![None; shards.len()];
    for (shard, batch) in shards.iter().zip(batches.iter_mut()).rev() {
        let key = shards::batch_key(job.id.as_str(), &shard.name);
        match store.results.exists(&key).await {
            Ok(true) => {
                progress.cut_elsewhere(shard.stamps, shard.images);
                progress.now_and_then().await;
                continue;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(shard = %shard.name, error = %e, "cannot tell whether a shard is cut; cutting it")
            }
        }
        let path = scratch.file(&format!("{}.batch", shard.name));
        cut_to_batch(&shard.plan, &path, sources, rules, Some(progress)).await?;
        progress.shard_finished();
        store
            .results
            .put_file(&key, &path, &shard_meta(&shard.name, "batch2"))
            .await
            .map_err(|e| unavailable(format!("storing a shard's stamps failed: {e}")))?;
        *batch = Some(path);
    }
    Ok(batches)
}

/// Cuts one shard of a bulk job that another worker runs: its stamps, as a batch stored where
/// that worker looks for it. `Ok(false)` when the shard was already cut.
pub(crate) async fn cut_shard(
    job: &uws::Job,
    shard: &str,
    settings: &WorkerSettings,
    sources: &JobSources<'_>,
    results: &dyn ResultStore,
    stored: &StoredKeys,
) -> Result<bool, JobError> {
    if !shards::is_shard_name(shard) {
        return Err(internal(format!("{shard:?} is not a shard name")));
    }
    let key = shards::batch_key(job.id.as_str(), shard);
    if results
        .exists(&key)
        .await
        .map_err(|e| unavailable(format!("reading the result store failed: {e}")))?
    {
        return Ok(false);
    }
    tracing::info!("cutting a bulk shard");
    let mut scratch = Scratch::new(&settings.scratch_dir, &job.id);
    let plan = scratch.file(&format!("{shard}.plan"));
    results
        .get_file(&shards::plan_key(job.id.as_str(), shard), &plan)
        .await
        .map_err(|e| unavailable(format!("reading a shard plan failed: {e}")))?;
    let batch = scratch.file(&format!("{shard}.batch"));
    cut_to_batch(&plan, &batch, sources, CutRules::of(job, settings), None).await?;
    stored.record(&key);
    results
        .put_file(&key, &batch, &shard_meta(shard, "batch2"))
        .await
        .map_err(|e| unavailable(format!("storing a shard's stamps failed: {e}")))?;
    Ok(true)
}

/// Cuts the images of the plan at `plan` into a batch at `out`.
async fn cut_to_batch(
    plan: &Path,
    out: &Path,
    sources: &JobSources<'_>,
    rules: CutRules,
    progress: Option<&mut Progress<'_>>,
) -> Result<(), JobError> {
    let file = std::fs::File::create(out).map_err(io_error("writing a shard's stamps"))?;
    let mut writer = BatchWriter::new(std::io::BufWriter::with_capacity(1 << 20, file))
        .map_err(io_error("writing a shard's stamps"))?;
    cut_plan(plan, sources, rules, progress, |id, stamps, cut| {
        writer
            .image(&id, &stamps, &cut)
            .map_err(io_error("writing a shard's stamps"))
    })
    .await?;
    writer
        .finish()
        .map_err(io_error("writing a shard's stamps"))?
        .into_inner()
        .map_err(|e| unavailable(format!("writing a shard's stamps failed: {e}")))?;
    Ok(())
}

/// Cuts the stamps of every image of the plan at `plan` and hands each image's to `take`, in
/// plan order. Images are cut several at once (each on a blocking thread) and handed over in
/// plan order as they finish, so a bulk job uses the worker's cores while what it writes stays
/// deterministic; memory holds the stamps of at most `ahead` images.
async fn cut_plan(
    plan: &Path,
    sources: &JobSources<'_>,
    rules: CutRules,
    mut progress: Option<&mut Progress<'_>>,
    mut take: impl FnMut(String, Vec<PlannedStamp>, Result<CutImage, JobError>) -> Result<(), JobError>,
) -> Result<(), JobError> {
    let unreadable = |e: String| internal(format!("the bulk plan is unreadable: {e}"));
    let file = std::fs::File::open(plan).map_err(|e| unreadable(e.to_string()))?;
    let mut reader = PlanReader::open(std::io::BufReader::with_capacity(1 << 16, file))
        .map_err(|e| unreadable(e.to_string()))?
        .with_default_extent(rules.default_extent);
    let ahead = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    let mut cutting = FuturesOrdered::new();
    let mut read_all = false;
    loop {
        while !read_all && cutting.len() < ahead {
            // The plan is read on a blocking thread: it is a file.
            let (back, item) = tokio::task::spawn_blocking(move || {
                let item = reader.next_item();
                (reader, item)
            })
            .await
            .map_err(|e| internal(format!("plan thread failed: {e}")))?;
            reader = back;
            match item.map_err(|e| unreadable(e.to_string()))? {
                None => read_all = true,
                Some(PlanItem::Error { row, .. }) => {
                    return Err(unreadable(format!("row {row} is an error inside a shard")));
                }
                Some(PlanItem::Image { id, stamps }) => cutting.push_back(async move {
                    let cut = match SourceId::parse(&id) {
                        Ok(source) => cut_image(sources, &source, &stamps, rules.max_side)
                            .await
                            .map(CutImage::from_soda),
                        Err(e) => Err(job_error(e)),
                    };
                    (id, stamps, cut)
                }),
            }
        }
        let Some((id, stamps, cut)) = cutting.next().await else {
            break;
        };
        let count = stamps.len() as u64;
        take(id, stamps, cut)?;
        if let Some(progress) = progress.as_deref_mut() {
            progress.image_done(count);
            progress.now_and_then().await;
        }
    }
    Ok(())
}

/// How often a bulk job's progress is reported at most.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// A bulk job's progress: stamps, images and shards done of the plan's totals, reported to the
/// job store now and then. What other workers cut counts when the job's worker finds it.
struct Progress<'a> {
    uws: &'a uws::service::Uws,
    job: &'a uws::JobId,
    stamps: (u64, u64),
    images: (u64, u64),
    shards: (u64, u64),
    reported: Option<std::time::Instant>,
}

impl<'a> Progress<'a> {
    /// Progress towards `(stamps, images, shards)`.
    fn new(uws: &'a uws::service::Uws, job: &'a uws::JobId, totals: (u64, u64, u64)) -> Self {
        Progress {
            uws,
            job,
            stamps: (0, totals.0),
            images: (0, totals.1),
            shards: (0, totals.2),
            reported: None,
        }
    }

    fn image_done(&mut self, stamps: u64) {
        self.stamps.0 += stamps;
        self.images.0 += 1;
    }

    fn shard_finished(&mut self) {
        self.shards.0 += 1;
    }

    /// A shard another worker cut.
    fn cut_elsewhere(&mut self, stamps: u64, images: u64) {
        self.stamps.0 += stamps;
        self.images.0 += images;
        self.shard_finished();
    }

    /// Reports when the last report is [`PROGRESS_EVERY`] old (or there was none).
    async fn now_and_then(&mut self) {
        if self
            .reported
            .is_none_or(|at| at.elapsed() >= PROGRESS_EVERY)
        {
            self.report().await;
        }
    }

    /// Reports to the job store; a failed report is only a stale count, never the job's end.
    async fn report(&mut self) {
        self.reported = Some(std::time::Instant::now());
        let count = |name: &str, (done, total): (u64, u64)| uws::ProgressCount {
            name: name.to_owned(),
            done,
            total,
        };
        let progress = uws::Progress(vec![
            count("stamps", self.stamps),
            count("images", self.images),
            count("shards", self.shards),
        ]);
        if let Err(e) = self.uws.report_progress(self.job, progress).await {
            tracing::debug!(error = %e, "progress report refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_plans_dropped_unadopted_are_removed_and_adopted_ones_kept() {
        let dir = tempfile::tempdir().expect("directory");
        let files: Vec<PathBuf> = (0..3).map(|n| dir.path().join(format!("s-{n}"))).collect();
        for file in &files {
            std::fs::write(file, "plan").expect("write");
        }
        let adopted = RemovedUnlessAdopted(files.clone()).adopt();
        assert_eq!(adopted, files);
        assert!(files.iter().all(|f| f.exists()), "adopted: kept");
        // As when an abort drops the split in the channel before the coordinator took it.
        let (sender, receiver) = tokio::sync::oneshot::channel();
        sender.send(RemovedUnlessAdopted(files.clone())).ok();
        drop(receiver);
        assert!(
            files.iter().all(|f| !f.exists()),
            "dropped unadopted: removed"
        );
    }
}
