//! The SODA side of job creation: which request parameters make a cutout job, checked before
//! the job exists so that a bad request creates nothing.
//!
//! Only the parameters a cutout is read from are kept (others are dropped, as DALI lets a
//! service ignore what it does not define), and what is kept is bounded in size. The cutouts are
//! planned on the image headers (no pixel is read): a cutout over [`SizeLimits::max_cutout_pixels`]
//! or a job whose results would pass [`SizeLimits::max_job_bytes`] is refused as a `UsageError`
//! naming the limit, and the planned size is stored with the job (the quote prices it, the
//! `result_bytes` quota reserves it).
//!
//! A request with a circle and no `ID` is a light curve: it names every indexed image that
//! covers the circle's centre, in time order, and becomes an ordinary multi-image job whose
//! stored parameters list those IDs.

use soda::Stencil;
use soda::repository::SourceLocation;
use soda::request::{CUTOUT_PARAMETERS, CutoutRequest};
use uws::Parameters;
use uws::sky_index::{CellQuery, ImageContent};

use crate::error::FrontendError;
use crate::state::App;

/// The most bytes of parameter names and values kept with one job.
pub const MAX_JOB_PARAMETER_BYTES: usize = 256 * 1024;

/// What one FITS file adds to its pixels: a primary header and an extension header of a few
/// 2880-byte blocks each, and the padding of the data to a whole block.
const FITS_OVERHEAD: u64 = 4 * 2880;

/// Limits on what one request may make; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default)]
pub struct SizeLimits {
    /// Pixels of one cutout, over every axis kept.
    pub max_cutout_pixels: Option<u64>,
    /// Bytes of the results of one job (the combined multi-extension file included).
    pub max_job_bytes: Option<u64>,
    /// Pixels a side of a `SIZE` stamp.
    pub max_stamp_size: Option<u64>,
}

/// A validated cutout job: what to store, and how big its results are planned to be.
#[derive(Debug, Clone)]
pub struct CutoutJob {
    pub parameters: Parameters,
    /// `None` when an image is not a local file (a bucket object is not fetched to plan).
    pub planned_bytes: Option<u64>,
}

/// Validates the SODA parameters of a request, plans its cutouts and checks them against the
/// configured limits. Unknown images are refused here with 404.
pub async fn job_parameters(app: &App, request: &Parameters) -> Result<CutoutJob, FrontendError> {
    let parameters = request.only(CUTOUT_PARAMETERS);
    let size: usize = parameters.iter().map(|(n, v)| n.len() + v.len()).sum();
    if size > MAX_JOB_PARAMETER_BYTES {
        return Err(FrontendError::Usage(format!(
            "the cutout parameters take {size} bytes; at most {MAX_JOB_PARAMETER_BYTES} are kept with a job"
        )));
    }
    // A request may make as many cutouts as a light curve may have epochs.
    let max_pairs = soda::request::MAX_PAIRS.max(app.settings.max_epochs);
    let cutout = CutoutRequest::from_parameters_up_to(parameters.iter(), max_pairs)?;
    let limits = app.settings.size_limits;
    if let (Some(size), Some(limit)) = (cutout.size, limits.max_stamp_size)
        && size as u64 > limit
    {
        return Err(FrontendError::Usage(format!(
            "SIZE={size} is over the limit of {limit} pixels a side (max_stamp_size)"
        )));
    }
    for id in &cutout.ids {
        app.repositories.locate(id)?;
    }
    let repositories = app.repositories.clone();
    // Reading headers is file I/O through cfitsio: off the async threads.
    let planned_bytes = tokio::task::spawn_blocking(move || plan(&repositories, &cutout, limits))
        .await
        .map_err(|e| FrontendError::Internal(format!("planning task failed: {e}")))??;
    Ok(CutoutJob {
        parameters,
        planned_bytes,
    })
}

/// The bytes the results of `request` will take, planned on the image headers; refuses a cutout
/// or a job over `limits`. `None` (unknown) when an image is not a local file.
fn plan(
    repositories: &soda::repository::Repositories,
    request: &CutoutRequest,
    limits: SizeLimits,
) -> Result<Option<u64>, FrontendError> {
    let pairs: Vec<_> = request.pairs().collect();
    let mut fits_bytes = 0u64;
    let mut preview_bytes = 0u64;
    for (n, (id, stencil)) in pairs.iter().enumerate() {
        let SourceLocation::File(path) = repositories.locate(id)? else {
            return Ok(None);
        };
        let options = request.options(id);
        let size = match soda::cutout_size(&path, stencil, &options) {
            Ok(size) => size,
            // The pair becomes a short error result; the worker says why.
            Err(soda::SodaError::NoOverlap { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        if let Some(limit) = limits.max_cutout_pixels.filter(|l| size.pixels > *l) {
            return Err(FrontendError::Usage(format!(
                "cutout {} of this request ({id}) would hold {} pixels, over the limit of \
                 {limit} pixels per cutout (max_cutout_pixels): ask for a smaller region",
                n + 1,
                size.pixels
            )));
        }
        fits_bytes = fits_bytes.saturating_add(size.bytes.saturating_add(FITS_OVERHEAD));
        if request.preview.is_some() {
            // Four bytes a pixel is an RGBA PNG before compression: an upper bound.
            preview_bytes = preview_bytes.saturating_add(size.pixels.saturating_mul(4));
        }
    }
    // A job of several pairs also stores every cutout again in one multi-extension file
    // (a stamp table is the one file).
    let copies = if pairs.len() > 1 && !request.stamp_table {
        2
    } else {
        1
    };
    let planned = fits_bytes
        .saturating_mul(copies)
        .saturating_add(preview_bytes);
    if let Some(limit) = limits.max_job_bytes.filter(|l| planned > *l) {
        return Err(FrontendError::Usage(format!(
            "the {} cutouts of this request would store about {planned} bytes, over the limit \
             of {limit} bytes per job (max_job_bytes): ask for fewer or smaller cutouts",
            pairs.len()
        )));
    }
    Ok(Some(planned))
}

/// What a request without `ID` asks for.
#[derive(Debug)]
pub enum LightCurve {
    /// The request names images (or no stencil): not a light curve.
    NotOne,
    /// The request with one `ID` per covering image added, in time order.
    Epochs {
        parameters: Parameters,
        epochs: usize,
    },
    /// No indexed image covers the position (the message says which).
    NoImage(String),
}

/// Expands a light-curve request (a `CIRCLE`, or `POS=CIRCLE`, and no `ID`; optionally `TIME`,
/// `BAND` and `COLLECTION` to narrow the images) into the IDs of every indexed image whose
/// footprint holds the circle's centre. More images than `max_epochs` is a `UsageError`
/// naming the limit, before any work.
pub async fn light_curve(app: &App, request: &Parameters) -> Result<LightCurve, FrontendError> {
    if request.contains("ID") {
        return Ok(LightCurve::NotOne);
    }
    let mut stencils = Vec::new();
    for (name, value) in request.iter() {
        match name.to_ascii_uppercase().as_str() {
            "POS" => stencils.push(Stencil::parse_pos(value)?),
            "CIRCLE" => stencils.push(Stencil::parse_circle(value)?),
            "POLYGON" => stencils.push(Stencil::parse_polygon(value)?),
            _ => {}
        }
    }
    let stencil = match stencils.as_slice() {
        [] => return Ok(LightCurve::NotOne),
        [stencil] => stencil,
        _ => {
            return Err(FrontendError::Usage(
                "a light curve (a request without ID) takes one CIRCLE".to_owned(),
            ));
        }
    };
    let Stencil::Circle(circle) = stencil else {
        return Err(FrontendError::Usage(
            "a light curve (a request without ID) is centred on a CIRCLE (or POS=CIRCLE)"
                .to_owned(),
        ));
    };
    let (ra, dec) = circle.center();
    let index = app.sky_index.as_ref().ok_or_else(|| {
        FrontendError::Unavailable(
            "this deployment has no sky index: name the images with ID".to_owned(),
        )
    })?;
    let single = |name: &'static str| crate::sia::single_value(request, name);
    let time = single("TIME")?
        .map(|v| crate::sia::interval("TIME", v, "an MJD interval: lower upper (days)"))
        .transpose()?;
    let band = single("BAND")?
        .map(|v| crate::sia::interval("BAND", v, "a wavelength interval: lower upper (metres)"))
        .transpose()?;
    let max = app.settings.max_epochs;
    let candidates = index
        .candidates(&CellQuery {
            cells: soda::sky::point_cells(ra, dec),
            ranges: Vec::new(),
            time,
            band,
            collections: request.all("COLLECTION").map(str::to_owned).collect(),
            // Candidates whose outline misses the point are dropped below; this bounds the read.
            limit: max.saturating_mul(4).saturating_add(1000),
        })
        .await?;
    let ids: Vec<String> = candidates
        .into_iter()
        .filter(|image| match &image.content {
            ImageContent::Located(location) => {
                soda::sky::outline_contains(&location.corners, ra, dec)
            }
            ImageContent::Unusable(_) => false,
        })
        .map(|image| image.id)
        .filter(|id| soda::SourceId::parse(id).is_ok())
        .collect();
    if ids.len() > max {
        return Err(FrontendError::Usage(format!(
            "{} indexed images cover ({ra}, {dec}), more than the {max} epochs a light curve \
             may have (the service's max_epochs); narrow it with TIME or COLLECTION",
            ids.len()
        )));
    }
    if ids.is_empty() {
        return Ok(LightCurve::NoImage(format!(
            "no indexed image covers ({ra}, {dec}){}",
            if time.is_some() || band.is_some() || request.contains("COLLECTION") {
                " within the TIME, BAND and COLLECTION asked for"
            } else {
                ""
            }
        )));
    }
    let mut parameters = request.clone();
    for id in &ids {
        parameters.push("ID", id);
    }
    Ok(LightCurve::Epochs {
        parameters,
        epochs: ids.len(),
    })
}
