//! Fills the sky index from the repositories: `skycut index`, and the background scan of
//! `skycut serve`.
//!
//! A scan lists each repository, a directory or a bucket prefix (`s3://…`, `gs://…`), compares
//! every image file's size and modification time with what the index recorded, reads only the
//! files that are new or changed, and forgets files that are gone. A directory's files are
//! described by `soda::sky::describe_file` on blocking threads; a bucket's objects by the same
//! function on their headers alone, fetched by ranged reads (`objects`). A file that cannot be
//! read is listed with the reason and never stops the scan; a repository that cannot be listed,
//! or an object the store fails to hand over, is counted as failed, left as the index has it,
//! and read again by the next scan.
//!
//! Image servers (`http(s)://` repositories) are not scanned: they cannot be listed, and they
//! decide per reader who may read which image, which an index shared by every user cannot
//! respect.

mod objects;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bucket::{BucketUrl, ListedObject, SourceCache};
use futures_util::StreamExt;
use soda::SourceId;
use soda::repository::is_bucket_location;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uws::sky_index::{FileStamp, ImageContent, ImageIndex, ImageLocation, IndexedImage};

/// How often progress is logged while a scan reads files.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Files written to the index in one transaction, and the longest a read file waits to be
/// written: batches make indexing faster than the store's commit rate, and the time bound lets
/// queries see the first images of a slow scan soon.
const BATCH_FILES: usize = 200;

const BATCH_EVERY: Duration = Duration::from_millis(500);

/// Files read or removed by one scan after which the store refreshes its query statistics.
const SETTLE_AFTER: u64 = 1000;

/// Objects of a bucket read at once per file described at once: reading an object's headers
/// is a wait on the store, describing them a moment of CPU.
const READS_PER_DESCRIPTION: usize = 8;

/// What a scan did.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanReport {
    /// Files read (new or changed).
    pub files_read: u64,
    /// Files skipped because their size and modification time were unchanged.
    pub files_unchanged: u64,
    /// Files forgotten because they are gone.
    pub files_removed: u64,
    /// Objects the store failed to hand over (or that changed since they were listed): left as
    /// the index has them, for the next scan.
    pub files_failed: u64,
    /// Repositories that could not be listed (their index entries are kept as they are), and
    /// image servers, which are not scanned.
    pub repositories_failed: u64,
    pub repositories_skipped: u64,
    /// Requests made to buckets for the objects read, bytes received, and objects that had
    /// to be read whole.
    pub object_requests: u64,
    pub object_bytes: u64,
    pub objects_read_whole: u64,
    /// Image HDUs located on the sky, and listed as unusable, among the files read.
    pub images_located: u64,
    pub images_unusable: u64,
    pub elapsed: Duration,
}

impl ScanReport {
    /// Whether part of the repositories could not be read this time (and will be next time).
    pub fn incomplete(&self) -> bool {
        self.files_failed > 0 || self.repositories_failed > 0
    }

    /// Images (located or not) read per second.
    pub fn images_per_second(&self) -> f64 {
        (self.images_located + self.images_unusable) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for ScanReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} files read ({} images located, {} unusable) in {:.1} s, {:.0} images/s; \
             {} files unchanged, {} removed, {} failed; \
             {} requests to buckets for {} bytes ({} objects read whole); \
             {} repositories failed to list, {} skipped",
            self.files_read,
            self.images_located,
            self.images_unusable,
            self.elapsed.as_secs_f64(),
            self.images_per_second(),
            self.files_unchanged,
            self.files_removed,
            self.files_failed,
            self.object_requests,
            self.object_bytes,
            self.objects_read_whole,
            self.repositories_failed,
            self.repositories_skipped,
        )
    }
}

/// An image file of a repository: its name in the repository, its image name (the ID's), its
/// stamp, and where to read it.
struct RepoFile {
    file: String,
    image: String,
    stamp: FileStamp,
    source: Source,
}

enum Source {
    Path(PathBuf),
    /// An object of the bucket at this URL, in the version listed.
    Object(Arc<str>, ListedObject),
}

/// Scans every repository once, reading bucket repositories through `buckets` (`skycut serve`
/// shares its worker's source cache; `skycut index` opens its own).
pub async fn scan(
    index: &Arc<dyn ImageIndex>,
    repositories: &BTreeMap<String, PathBuf>,
    buckets: Option<&SourceCache>,
    concurrency: usize,
) -> anyhow::Result<ScanReport> {
    let started = Instant::now();
    let mut report = ScanReport::default();
    let concurrency = concurrency.max(1);
    for (name, location) in repositories {
        let listed = list_repository(name, location, buckets).await;
        let (files, reads_at_once) = match listed {
            Listed::Files(files) => (files, concurrency),
            Listed::Objects(files) => (files, concurrency * READS_PER_DESCRIPTION),
            Listed::Skipped(why) => {
                tracing::warn!(repository = %name, "repository not indexed: {why}");
                report.repositories_skipped += 1;
                continue;
            }
            Listed::Failed(why) => {
                tracing::warn!(repository = %name, error = %why,
                    "repository not listed: its index entries are kept until a scan lists it");
                report.repositories_failed += 1;
                continue;
            }
        };
        scan_files(
            index,
            name,
            files,
            buckets,
            (reads_at_once, concurrency),
            &mut report,
        )
        .await?;
    }
    if report.files_read + report.files_removed >= SETTLE_AFTER {
        index.settle().await?;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

enum Listed {
    Files(Vec<RepoFile>),
    Objects(Vec<RepoFile>),
    Skipped(String),
    Failed(String),
}

async fn list_repository(name: &str, location: &Path, buckets: Option<&SourceCache>) -> Listed {
    let text = location.to_string_lossy();
    if !is_bucket_location(&text) {
        let (name, dir) = (name.to_owned(), location.to_owned());
        return match tokio::task::spawn_blocking(move || list_directory(&name, &dir)).await {
            Ok(Ok(files)) => Listed::Files(files),
            Ok(Err(e)) => Listed::Failed(e.to_string()),
            Err(e) => Listed::Failed(format!("listing task failed: {e}")),
        };
    }
    match BucketUrl::parse(&text) {
        Ok(url) if url.scheme.checks_each_reader() => {
            return Listed::Skipped(format!(
                "{text} is an image server, which cannot be listed and decides per reader who \
                 may read which image"
            ));
        }
        Ok(_) => {}
        Err(e) => return Listed::Failed(e.to_string()),
    }
    let Some(cache) = buckets else {
        return Listed::Failed("no source cache to read buckets with".to_owned());
    };
    let url: Arc<str> = Arc::from(text.as_ref());
    match cache.list(&url).await {
        Ok(objects) => Listed::Objects(choose_images(
            name,
            objects.into_iter().map(|object| {
                let stamp = FileStamp {
                    size: object.version.size,
                    mtime: object.last_modified,
                };
                (
                    object.name.clone(),
                    stamp,
                    Source::Object(url.clone(), object),
                )
            }),
        )),
        Err(e) => Listed::Failed(e.to_string()),
    }
}

/// Compares `files` with what the index holds for repository `name`, forgets what is gone and
/// reads what is new or changed, `at_once.0` reads and `at_once.1` descriptions at a time.
async fn scan_files(
    index: &Arc<dyn ImageIndex>,
    name: &str,
    files: Vec<RepoFile>,
    buckets: Option<&SourceCache>,
    at_once: (usize, usize),
    report: &mut ScanReport,
) -> anyhow::Result<()> {
    let mut known = index.stamps(name).await?;
    let mut changed = Vec::new();
    for file in files {
        match known.remove(&file.file) {
            Some(stamp) if stamp == file.stamp => report.files_unchanged += 1,
            _ => changed.push(file),
        }
    }
    // What is left in `known` is gone from the repository.
    for file in known.keys() {
        index.remove_file(name, file).await?;
        report.files_removed += 1;
    }
    let total = changed.len();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let describing = Semaphore::new(at_once.1);
    let describing = &describing;
    let mut reads = futures_util::stream::iter(changed.into_iter().map(|file| async move {
        let read = read_file(&file, buckets, describing).await;
        (file, read)
    }))
    .buffer_unordered(at_once.0);
    let mut done = 0usize;
    let mut batch = Vec::new();
    let mut last_write = Instant::now();
    while let Some((file, read)) = reads.next().await {
        let described = match read {
            Ok(read) => {
                report.object_requests += read.requests;
                report.object_bytes += read.bytes;
                if let Some(why) = &read.whole {
                    report.objects_read_whole += 1;
                    tracing::debug!(file = %file.file, "read whole: {why}");
                }
                read.described
            }
            Err(why) => {
                report.files_failed += 1;
                tracing::warn!(repository = %name, file = %file.file, error = %why,
                    "file not read: the next scan tries again");
                continue;
            }
        };
        let images = rows(name, &file, described);
        for image in &images {
            match &image.content {
                ImageContent::Located(_) => report.images_located += 1,
                ImageContent::Unusable(reason) => {
                    report.images_unusable += 1;
                    tracing::warn!(image = %image.id, reason = %reason, "image not indexed");
                }
            }
        }
        batch.push((file.file, images));
        report.files_read += 1;
        done += 1;
        if batch.len() >= BATCH_FILES || last_write.elapsed() >= BATCH_EVERY {
            index
                .replace_files(name, std::mem::take(&mut batch))
                .await?;
            last_write = Instant::now();
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            tracing::info!(
                repository = %name,
                progress = %format!("{done}/{total}"),
                files_per_second = format!("{:.0}", done as f64 / started.elapsed().as_secs_f64()),
                "indexing"
            );
        }
    }
    if !batch.is_empty() {
        index.replace_files(name, batch).await?;
    }
    Ok(())
}

/// One file described: a local file on a blocking thread, an object through `objects`. An
/// error is a failure to get at the file, not a file that is no FITS.
async fn read_file(
    file: &RepoFile,
    buckets: Option<&SourceCache>,
    describing: &Semaphore,
) -> Result<objects::ObjectRead, String> {
    match &file.source {
        Source::Path(path) => {
            let path = path.clone();
            let _permit = describing.acquire().await.map_err(|e| e.to_string())?;
            let described = tokio::task::spawn_blocking(move || soda::sky::describe_file(&path))
                .await
                .map_err(|e| format!("index task failed: {e}"))?;
            Ok(objects::ObjectRead {
                described,
                whole: None,
                requests: 0,
                bytes: 0,
            })
        }
        Source::Object(url, object) => {
            let cache = buckets.ok_or_else(|| "no source cache to read buckets with".to_owned())?;
            objects::describe(cache, url, object, describing).await
        }
    }
}

/// The image files of a repository directory.
fn list_directory(repository: &str, dir: &Path) -> anyhow::Result<Vec<RepoFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(repository, dir = %dir.display(), "repository directory does not exist");
            return Ok(Vec::new());
        }
        Err(e) => return Err(anyhow::anyhow!("cannot list {}: {e}", dir.display())),
    };
    let mut candidates = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !file.ends_with(".fits") && !file.ends_with(".fits.fz") {
            continue;
        }
        let metadata = entry.metadata()?;
        if !metadata.is_file() {
            continue;
        }
        let mtime = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let stamp = FileStamp {
            size: metadata.len(),
            mtime,
        };
        candidates.push((file, stamp, Source::Path(entry.path())));
    }
    Ok(choose_images(repository, candidates.into_iter()))
}

/// The image files among a repository's files: `X.fits`, else `X.fits.fz`, for every `X` an
/// ID can name (the same choice the repository makes when it resolves an ID), sorted by name.
fn choose_images(
    repository: &str,
    candidates: impl Iterator<Item = (String, FileStamp, Source)>,
) -> Vec<RepoFile> {
    let mut by_image: HashMap<String, RepoFile> = HashMap::new();
    for (file, stamp, source) in candidates {
        let (image, compressed) = if let Some(image) = file.strip_suffix(".fits.fz") {
            (image.to_owned(), true)
        } else if let Some(image) = file.strip_suffix(".fits") {
            (image.to_owned(), false)
        } else {
            continue;
        };
        if SourceId::parse(&format!("butler://{repository}/{image}")).is_err() {
            continue;
        }
        let candidate = RepoFile {
            file,
            image: image.clone(),
            stamp,
            source,
        };
        match by_image.get(&image) {
            // `X.fits` serves the ID when both exist.
            Some(existing) if compressed || existing.file.ends_with(".fits") => {
                if !compressed {
                    by_image.insert(image, candidate);
                }
            }
            _ => {
                by_image.insert(image, candidate);
            }
        }
    }
    let mut files: Vec<RepoFile> = by_image.into_values().collect();
    files.sort_by(|a, b| a.file.cmp(&b.file));
    files
}

/// The index rows of one file.
fn rows(
    repository: &str,
    file: &RepoFile,
    described: Result<Vec<soda::sky::DescribedImage>, soda::SodaError>,
) -> Vec<IndexedImage> {
    let id = format!("butler://{repository}/{}", file.image);
    let row = |id: String, content| IndexedImage {
        id,
        collection: repository.to_owned(),
        file: file.file.clone(),
        stamp: file.stamp,
        content,
    };
    match described {
        Err(e) => vec![row(id, ImageContent::Unusable(e.to_string()))],
        Ok(images) => images
            .into_iter()
            .map(|image| {
                let id = match &image.extension {
                    // An HDU no ID can name is listed under a name that is not an ID.
                    Some(name) if name.starts_with('#') => format!("{id}{name}"),
                    Some(name) => format!("{id}?ext={name}"),
                    None => id.clone(),
                };
                let content = match image.content {
                    Ok(facts) => ImageContent::Located(ImageLocation {
                        size: (facts.footprint.size.0 as u64, facts.footprint.size.1 as u64),
                        center: facts.footprint.center,
                        radius_deg: facts.footprint.radius_deg,
                        corners: facts.footprint.corners.to_vec(),
                        time: facts.time,
                        band: facts.band,
                        cells: facts.cells,
                    }),
                    Err(reason) => ImageContent::Unusable(reason),
                };
                row(id, content)
            })
            .collect(),
    }
}

/// `skycut serve`'s indexer: scans at start, then every `every` (never again if zero), until
/// `shutdown`. Queries answer from whatever is indexed so far.
pub async fn run_in_background(
    index: Arc<dyn ImageIndex>,
    repositories: BTreeMap<String, PathBuf>,
    buckets: Option<Arc<SourceCache>>,
    concurrency: usize,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            result = scan(
                &index,
                &repositories,
                buckets.as_deref(),
                concurrency,
            ) => match result {
                Ok(report) => tracing::info!("sky index scan: {report}"),
                Err(e) => tracing::warn!(error = %e, "sky index scan failed"),
            },
        }
        if every.is_zero() {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
