//! API boundary: the sky index, the list of images a deployment serves with where each lies on
//! the sky, in time and in wavelength, so that a client may start from a position instead of an
//! image ID (SIA 2.0 discovery, light curves).
//!
//! The index stores numbers and strings only: which HEALPix cells cover a footprint, and how a
//! query region becomes cells, is the caller's science (`soda::sky`); [`ImageIndex`] is
//! implemented over SQL in `wobbly`. Cells are HEALPix NESTED cells in the NUNIQ encoding
//! (`4 * 4^depth + index`), so one integer column holds cells of every depth.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::error::UwsError;

/// The file an index row was read from, as it was when read: a row is re-read only when its
/// file's size or modification time changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    /// Microseconds since the epoch (the file's mtime).
    pub mtime: i64,
}

/// One image (one image HDU of a file) as the index holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedImage {
    /// The image ID, `butler://COLLECTION/X` or `butler://COLLECTION/X?ext=NAME`.
    pub id: String,
    /// The repository name.
    pub collection: String,
    /// The file's path within its repository, which change detection keys on.
    pub file: String,
    pub stamp: FileStamp,
    /// What this image is, or why it could not be indexed (then queries skip it).
    pub content: ImageContent,
}

/// What the index knows about an image.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageContent {
    /// Read and located on the sky.
    Located(ImageLocation),
    /// Unreadable, or without a celestial WCS: listed with the reason, never matched.
    Unusable(String),
}

/// Where, when and in which band an image was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageLocation {
    /// Columns and rows.
    pub size: (u64, u64),
    /// Centre (RA, Dec) and enclosing radius, ICRS degrees.
    pub center: (f64, f64),
    pub radius_deg: f64,
    /// The outline, counter-clockwise, ICRS degrees.
    pub corners: Vec<(f64, f64)>,
    /// Observation interval in MJD, when the header tells.
    pub time: Option<(f64, f64)>,
    /// Wavelength interval in metres, when known.
    pub band: Option<(f64, f64)>,
    /// NUNIQ HEALPix cells that together cover the outline.
    pub cells: Vec<i64>,
}

/// Which images a query asks for: those with a cell among `cells` or in one of `ranges`, then
/// narrowed by the other fields. The candidates still need the exact footprint test.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CellQuery {
    /// NUNIQ cells matched exactly (a point's cell at every depth, a region's ancestors).
    pub cells: Vec<i64>,
    /// Half-open NUNIQ ranges `[start, end)` (a region's cells and their descendants).
    pub ranges: Vec<(i64, i64)>,
    /// Only images whose interval overlaps this MJD interval (images without time excluded).
    pub time: Option<(f64, f64)>,
    /// Only images whose wavelength interval (metres) overlaps this one.
    pub band: Option<(f64, f64)>,
    /// Only images of these repositories (empty: every repository).
    pub collections: Vec<String>,
    /// At most this many candidates.
    pub limit: usize,
}

/// How a scan changed the index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexCounts {
    /// Located images.
    pub located: u64,
    /// Images listed as unusable.
    pub unusable: u64,
}

/// The sky index of a deployment's images.
#[async_trait]
pub trait ImageIndex: Send + Sync {
    /// The stamp of every file indexed in `collection`, by its path in the repository.
    async fn stamps(&self, collection: &str) -> Result<HashMap<String, FileStamp>, UwsError>;

    /// Replaces every row of `file` in `collection` by `images` (all of one file's HDUs), in one
    /// transaction, so a query never sees half a file.
    async fn replace_file(
        &self,
        collection: &str,
        file: &str,
        images: Vec<IndexedImage>,
    ) -> Result<(), UwsError> {
        self.replace_files(collection, vec![(file.to_owned(), images)])
            .await
    }

    /// [`ImageIndex::replace_file`] for many files in one transaction: a scan writes files in
    /// batches, since one transaction per file bounds indexing at the store's commit rate.
    async fn replace_files(
        &self,
        collection: &str,
        files: Vec<(String, Vec<IndexedImage>)>,
    ) -> Result<(), UwsError>;

    /// Forgets `file` of `collection` (it was deleted).
    async fn remove_file(&self, collection: &str, file: &str) -> Result<(), UwsError>;

    /// Forgets every image of `collection` (a repository no longer served).
    async fn forget_collection(&self, collection: &str) -> Result<(), UwsError>;

    /// Lets the store catch up after many rows changed at once (a scan that read many files):
    /// a SQL store refreshes the statistics its query planner chooses plans by, without which
    /// a lookup in a freshly filled index may scan every cell instead of using the index.
    async fn settle(&self) -> Result<(), UwsError>;

    /// Located images that may match `query` in time order (earliest first, images without a
    /// time last, then by ID), without their cells.
    async fn candidates(&self, query: &CellQuery) -> Result<Vec<IndexedImage>, UwsError>;

    /// How many images the index lists, located and unusable.
    async fn counts(&self) -> Result<IndexCounts, UwsError>;

    /// The images listed as unusable, with their reasons (at most `limit`).
    async fn unusable(&self, limit: usize) -> Result<Vec<IndexedImage>, UwsError>;
}
