//! Fills the sky index from the repositories: `skycut index`, and the background scan of
//! `skycut serve`.
//!
//! A scan lists each repository directory, compares every image file's size and modification
//! time with what the index recorded, reads only the files that are new or changed (through
//! `soda::sky::describe_file`, on blocking threads), and forgets files that are gone. A file
//! that cannot be read is listed with the reason and never stops the scan.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use soda::SourceId;
use soda::repository::is_bucket_location;
use tokio_util::sync::CancellationToken;
use uws::sky_index::{FileStamp, ImageContent, ImageIndex, ImageLocation, IndexedImage};

/// How often progress is logged while a scan reads files.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Files written to the index in one transaction, and the longest a read file waits to be
/// written: batches make indexing faster than the store's commit rate, and the time bound lets
/// queries see the first images of a slow scan soon.
const BATCH_FILES: usize = 200;

/// Files read or removed by one scan after which the store refreshes its query statistics.
const SETTLE_AFTER: u64 = 1000;
const BATCH_EVERY: Duration = Duration::from_millis(500);

/// What a scan did.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanReport {
    /// Files read (new or changed).
    pub files_read: u64,
    /// Files skipped because their size and modification time were unchanged.
    pub files_unchanged: u64,
    /// Files forgotten because they are gone.
    pub files_removed: u64,
    /// Image HDUs located on the sky, and listed as unusable, among the files read.
    pub images_located: u64,
    pub images_unusable: u64,
    pub elapsed: Duration,
}

impl ScanReport {
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
             {} files unchanged, {} removed",
            self.files_read,
            self.images_located,
            self.images_unusable,
            self.elapsed.as_secs_f64(),
            self.images_per_second(),
            self.files_unchanged,
            self.files_removed
        )
    }
}

/// An image file of a repository: its path in the repository, its image name (the ID's), and
/// its stamp.
struct RepoFile {
    file: String,
    image: String,
    path: PathBuf,
    stamp: FileStamp,
}

/// Scans every directory repository once. Bucket repositories are skipped with a warning: they
/// are not indexed yet.
pub async fn scan(
    index: &Arc<dyn ImageIndex>,
    repositories: &BTreeMap<String, PathBuf>,
    concurrency: usize,
) -> anyhow::Result<ScanReport> {
    let started = Instant::now();
    let mut report = ScanReport::default();
    for (name, dir) in repositories {
        if is_bucket_location(&dir.to_string_lossy()) {
            tracing::warn!(repository = %name, "bucket repositories are not indexed yet");
            continue;
        }
        scan_directory(index, name, dir, concurrency.max(1), &mut report).await?;
    }
    if report.files_read + report.files_removed >= SETTLE_AFTER {
        index.settle().await?;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn scan_directory(
    index: &Arc<dyn ImageIndex>,
    name: &str,
    dir: &Path,
    concurrency: usize,
    report: &mut ScanReport,
) -> anyhow::Result<()> {
    let files = {
        let (name, dir) = (name.to_owned(), dir.to_owned());
        tokio::task::spawn_blocking(move || list_images(&name, &dir)).await??
    };
    let mut known = index.stamps(name).await?;
    let mut changed = Vec::new();
    for file in files {
        match known.remove(&file.file) {
            Some(stamp) if stamp == file.stamp => report.files_unchanged += 1,
            _ => changed.push(file),
        }
    }
    // What is left in `known` is gone from the directory.
    for file in known.keys() {
        index.remove_file(name, file).await?;
        report.files_removed += 1;
    }
    let total = changed.len();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut reads = futures_util::stream::iter(changed.into_iter().map(|file| {
        let name = name.to_owned();
        async move {
            let path = file.path.clone();
            let described = tokio::task::spawn_blocking(move || soda::sky::describe_file(&path))
                .await
                .map_err(|e| anyhow::anyhow!("index task failed: {e}"))?;
            let images = rows(&name, &file, described);
            anyhow::Ok((file, images))
        }
    }))
    .buffer_unordered(concurrency);
    let mut done = 0usize;
    let mut batch = Vec::new();
    let mut last_write = Instant::now();
    while let Some(read) = reads.next().await {
        let (file, images) = read?;
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

/// The image files of a repository directory: `X.fits`, else `X.fits.fz`, for every `X` an ID
/// can name (the same choice the repository makes when it resolves an ID).
fn list_images(repository: &str, dir: &Path) -> anyhow::Result<Vec<RepoFile>> {
    let mut by_image: HashMap<String, RepoFile> = HashMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(repository, dir = %dir.display(), "repository directory does not exist");
            return Ok(Vec::new());
        }
        Err(e) => return Err(anyhow::anyhow!("cannot list {}: {e}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
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
        let metadata = entry.metadata()?;
        if !metadata.is_file() {
            continue;
        }
        let mtime = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let candidate = RepoFile {
            file,
            image: image.clone(),
            path: entry.path(),
            stamp: FileStamp {
                size: metadata.len(),
                mtime,
            },
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
    Ok(files)
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
    concurrency: usize,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            result = scan(&index, &repositories, concurrency) => match result {
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
