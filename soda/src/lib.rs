//! The science of Skycut: SODA stencils in, FITS cutouts out.
//!
//! This crate owns parsing of the SODA `ID`, `CIRCLE`, `POLYGON` and `POS` parameters, the
//! geometry from a stencil on the sky to a rectangle of pixels, and the cutout itself. It knows
//! nothing of HTTP, queues, databases or the environment: callers pass paths and values in.
//!
//! # Layout
//!
//! The pipeline is parse → locate → cut:
//!
//! - [`SourceId::parse`] and [`Stencil::parse_pos`] (and friends) turn request strings into
//!   valid values, or a [`SodaError::Usage`].
//! - [`cut_to_file`] (in `cutout`, the pipeline in one short file) opens the image (`image`:
//!   the image HDU, its BITPIX and WCS keywords, the per-file cfitsio locks) and plans the cut
//!   on its header (`plan`): `region` projects the stencil through the image WCS (`celestial`,
//!   the only user of `wcslib`, the safe wrapper around the C library of that name) into a
//!   [`PixelBox`], using the sphere maths in `sphere`. It then reads just that box, optionally
//!   blanking the pixels outside the stencil (`mask`), and writes a new FITS file whose header
//!   (`header`: the WCS keywords shifted, provenance) keeps every pixel's sky position. Pixels
//!   are copied as stored, with BSCALE/BZERO scaling off (`unscaled`, which with `wcslib` is
//!   the workspace's only `unsafe` code).
//! - [`header_to_file`] writes only the header a cutout would have, as text (`META=true`).
//! - [`cutout_reads`] plans a cutout on an image's headers alone, and `layout` walks the
//!   headers of a remote file to the image HDU, so a worker can fetch only the bytes a cutout
//!   reads.
//! - [`ImageGeometry`] reads an image's size and WCS once, to locate many stencils on it.
//! - `stamp` places exactly-sized stamps on an image ([`Window`], astropy's `Cutout2D`
//!   convention), for `SIZE` cutouts and for [`cut_stamps`], many stamps of one image at once.
//! - [`catalogue`] reads catalogues of positions (CSV) as a stream, for bulk cutouts.
//! - [`stamp_table`] packs many stamps into one FITS binary table, from parts cut apart.
//! - `spectral`, `temporal` and `polarization` find a cube's wavelength, time and Stokes axes
//!   (each a `axis::LinearAxis`) for `BAND`, `TIME` and `POL`; `TIME` on an image without a time
//!   axis keeps or rejects it whole by its observation interval.
//! - [`footprint()`] reads where an image lies on the sky, for DataLink service descriptors.
//! - [`sky`] describes images for the sky index (HEALPix cells, time, band) and tests a
//!   query region against an image outline exactly.
//! - [`preview::preview_to_file`] renders a cutout as a PNG or JPEG for `RESPONSEFORMAT=image/png`
//!   or `image/jpeg`.
//! - `demo` writes synthetic images with a real WCS for tests and `skycut serve --demo`.
//!
//! Read `cutout` first: it is short and calls everything else.

mod axis;
pub mod bulk_plan;
pub mod catalogue;
mod celestial;
mod coverage;
mod cutout;
mod demo;
mod error;
#[cfg(test)]
mod fixtures;
mod footprint;
mod header;
mod image;
pub mod layout;
mod mask;
mod parsed;
mod plan;
mod polarization;
pub mod preview;
mod region;
pub mod repository;
pub mod request;
mod section;
pub mod sky;
mod source_id;
mod spectral;
mod sphere;
mod stamp;
pub mod stamp_file;
pub mod stamp_table;
mod stencil;
mod temporal;
mod unscaled;
mod wcslib;

pub use coverage::MAX_MOC_CELLS;
pub use cutout::{
    Cutout, combine_to_file, cut_to_file, cut_to_file_with, cut_to_memory, header_to_file,
};
pub use demo::{
    DemoImage, DemoProgress, SyntheticImage, write_demo_repository,
    write_demo_repository_reporting, write_synthetic_image,
};
pub use error::SodaError;
pub use footprint::{Footprint, footprint};
pub use header::Provenance;
pub use image::ImageGeometry;
pub use plan::{CutOptions, CutoutSize, ReadPlan, cutout_bytes, cutout_reads, cutout_size};
pub use region::PixelBox;
pub use source_id::SourceId;
pub use stamp::{Extent, ImageStamps, Stamp, Window, cut_stamps};
pub use stencil::{Circle, MAX_POLYGON_VERTICES, Moc, PixelSection, Polygon, Range, Stencil};
