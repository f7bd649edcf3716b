//! `POST /bulk`: bulk cutouts, a catalogue of positions in and one table of stamps out.
//!
//! The catalogue comes as a DALI `UPLOAD`: `UPLOAD=cat,param:cat` names a part `cat` of a
//! `multipart/form-data` body (or, for a small catalogue, a form parameter `cat`), and
//! `UPLOAD=cat,https://…` a URL under a prefix the operator allows, which [`crate::upload`]
//! fetches; in CSV, VOTable or Parquet ([`soda::catalogue::open`] tells which from its content).
//! Either way the catalogue is spooled to a temporary file as it arrives (bounded by
//! [`BulkLimits::max_upload_bytes`]), never held in memory whole, and read once, a batch of rows
//! at a time, before the job exists: a catalogue without its position columns, or with a row
//! that is not a sky position, is a `UsageError` that creates nothing, as is one over a limit or
//! a URL that cannot be fetched.
//!
//! Each row is placed on the images that cover it: the one its `id` column names, else every
//! image of the sky index whose outline holds the position (looked up once per HEALPix cell of
//! [`soda::sky::GROUPING_DEPTH`], so neighbouring rows share a lookup), narrowed by the
//! request's `TIME`, `BAND` and `COLLECTION` and the row's own `t_min`/`t_max`, and `EPOCHS`
//! picks among them. The stamps are grouped by image into the job's plan ([`soda::bulk_plan`]),
//! stored beside its results under [`soda::bulk_plan::plan_key`], which the worker reads: each image is opened
//! once and cut for all its rows. A row no image serves is listed in the plan as an error and
//! becomes a line of the job's `errors` result; a catalogue none of whose rows can be served
//! makes a job that is ERROR at once, saying why.
//!
//! The job itself is an ordinary UWS job in the one job list (same owner rules, quotas, events),
//! queued on the bulk lane; its parameters are the request's bulk parameters. It is created with
//! its size as its first progress: its stamps, images and the shards the worker will split its
//! plan into (counted by the worker's own rule, [`soda::bulk_plan::ShardRule`]), none done, which
//! its `jobInfo` shows while it waits and its quote ([`crate::completion`]) reads.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use soda::bulk_plan::{Extent, PlanWriter, PlannedStamp};
use soda::catalogue::CatalogueRow;
use soda::stamp_file::Packaging;
use uws::Parameters;
use uws::results::ObjectMeta;
use uws::sky_index::{CellQuery, ImageContent};

use crate::error::FrontendError;
use crate::extract::{Delegated, IdempotencyKey, MAX_BODY_BYTES, Owner, PublicBase};
use crate::quota::{self, Intent};
use crate::state::{App, AppState};
use crate::upload::Spool;

type Result<T, E = FrontendError> = std::result::Result<T, E>;

/// The parameters a bulk job keeps; the UWS control parameters are read as for any job.
pub const BULK_PARAMETERS: &[&str] = &[
    "UPLOAD",
    "SIZE",
    "RADIUS",
    "RESPONSEFORMAT",
    "EPOCHS",
    "TIME",
    "BAND",
    "COLLECTION",
    "RACOL",
    "DECCOL",
];

/// Rows read from the catalogue per blocking batch.
const BATCH_ROWS: usize = 10_000;

/// Grouping cells whose candidate images are remembered at once while planning.
const CACHED_CELLS: usize = 4096;

/// Most candidate images one grouping cell may have.
const MAX_CELL_CANDIDATES: usize = 100_000;

/// Limits on one bulk request, each refused before any work with a `UsageError` naming it.
#[derive(Debug, Clone, Copy)]
pub struct BulkLimits {
    /// Rows of one catalogue.
    pub max_rows: u64,
    /// Stamps of one job (a row covered by several images makes several).
    pub max_stamps: u64,
    /// Bytes of one request body, the catalogue included.
    pub max_upload_bytes: u64,
}

impl Default for BulkLimits {
    fn default() -> Self {
        BulkLimits {
            max_rows: 10_000_000,
            max_stamps: 1_000_000,
            max_upload_bytes: 1 << 30,
        }
    }
}

/// A bulk request: its DALI parameters and the file parts it carried, each spooled to a
/// temporary file (removed when the request is done with).
pub struct BulkRequest {
    pub params: Parameters,
    pub parts: Vec<(String, tempfile::NamedTempFile)>,
}

impl FromRequest<AppState> for BulkRequest {
    type Rejection = FrontendError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.settings.bulk.max_upload_bytes;
        let multipart = req.method() == Method::POST
            && req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
        if !multipart {
            let crate::extract::DaliParams(params) =
                crate::extract::DaliParams::from_request(req, state).await?;
            return Ok(BulkRequest {
                params,
                parts: Vec::new(),
            });
        }
        let mut params = Parameters::new();
        if let Some(query) = req.uri().query() {
            for (n, v) in form_urlencoded::parse(query.as_bytes()) {
                params.push(&n, &v);
            }
        }
        let too_big = || {
            FrontendError::Usage(format!(
                "the request body is larger than {limit} bytes (the service's max_upload_bytes)"
            ))
        };
        let read_error = |e: axum::extract::multipart::MultipartError| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                too_big()
            } else {
                FrontendError::Usage(format!("cannot read the multipart body: {e}"))
            }
        };
        let mut body = Multipart::from_request(req, state)
            .await
            .map_err(|e| FrontendError::Usage(format!("cannot read the multipart body: {e}")))?;
        let mut parts = Vec::new();
        let mut text_bytes = 0usize;
        while let Some(mut field) = body.next_field().await.map_err(read_error)? {
            let name = field.name().unwrap_or_default().to_owned();
            if field.file_name().is_none() {
                // Read a chunk at a time, so a huge text part is refused before it is held.
                let too_many = || {
                    FrontendError::Usage(format!(
                        "the parameters other than files take more than {MAX_BODY_BYTES} bytes: \
                         send a catalogue as a file part"
                    ))
                };
                text_bytes += name.len();
                let mut value = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(read_error)? {
                    text_bytes += chunk.len();
                    if text_bytes > MAX_BODY_BYTES {
                        return Err(too_many());
                    }
                    value.extend_from_slice(&chunk);
                }
                let value = String::from_utf8(value).map_err(|_| {
                    FrontendError::Usage(format!("parameter {name:?} is not UTF-8 text"))
                })?;
                params.push(&name, &value);
                continue;
            }
            let mut spool = Spool::new(limit)?;
            while let Some(chunk) = field.chunk().await.map_err(read_error)? {
                spool.append(&chunk, too_big)?;
            }
            parts.push((name, spool.into_file()));
        }
        Ok(BulkRequest { params, parts })
    }
}

/// `POST /bulk`: creates a bulk job from a catalogue (303 to the job).
#[utoipa::path(
    post,
    operation_id = "create_bulk_job",
    path = "/bulk",
    tag = "Bulk",
    request_body(content_type = "multipart/form-data", description = "UPLOAD=cat,param:cat with a part cat holding a catalogue, or UPLOAD=cat,URL for a catalogue the service fetches itself from an http(s) URL under a prefix its operator allows (none by default), in CSV, VOTable (TABLEDATA, BINARY, BINARY2) or Parquet (columns ra, dec, or by UCD pos.eq.ra;meta.main and pos.eq.dec;meta.main in a VOTable; optional id, t_min, t_max, and a row's own size (pixels) or radius (degrees)); SIZE (pixels a side) or RADIUS (degrees: the smallest rectangle of pixels holding the circle, as a CIRCLE cutout), one of them unless every row has its own; RESPONSEFORMAT (application/fits;content=stamp-table); EPOCHS (all, first, last, nearest); TIME, BAND, COLLECTION; RACOL, DECCOL; the UWS PHASE=RUN, RUNID, DESTRUCTION, EXECUTIONDURATION"),
    responses(
        (status = 303, description = "See Other: Location is the job"),
        (status = 400, description = "UsageError: a bad parameter, a catalogue without its columns or with a row that is not a position, a request over a limit, or a catalogue URL not allowed or that could not be fetched (an error answer, no answer in time, or a body over the upload limit); no job was created", content_type = "text/plain", body = String),
        (status = 429, description = "UsageError: over a per-user quota", content_type = "text/plain", body = String),
        (status = 503, description = "ServiceUnavailable: no sky index, or a dependency is down; no job was created", content_type = "text/plain", body = String)
    )
)]
pub async fn create(
    State(app): State<AppState>,
    Owner(owner): Owner,
    Delegated(token): Delegated,
    key: IdempotencyKey,
    base: PublicBase,
    request: BulkRequest,
) -> Result<Response> {
    let id = create_job(&app, &owner, token, &key, request).await?;
    Ok(Redirect::to(&base.job(id.as_str())).into_response())
}

/// What a bulk request asks for, validated.
#[derive(Debug, Clone)]
struct BulkOptions {
    /// `SIZE` or `RADIUS`: the extent of every stamp whose row has no `size` or `radius` of
    /// its own.
    extent: Option<Extent>,
    /// `[jobs] max_stamp_size`: most pixels a side of a stamp.
    max_side: Option<u64>,
    packaging: Packaging,
    epochs: Epochs,
    time: Option<(f64, f64)>,
    band: Option<(f64, f64)>,
    collections: Vec<String>,
    ra_column: Option<String>,
    dec_column: Option<String>,
}

/// Which of the images covering a row are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Epochs {
    All,
    First,
    Last,
    /// The one whose observation is nearest the row's time (`t_min`, `t_max` or their middle).
    Nearest,
}

/// Creates a bulk job, as `POST /bulk` does, and returns its ID.
pub async fn create_job(
    app: &AppState,
    owner: &str,
    token: Option<uws::queue::DelegatedToken>,
    key: &IdempotencyKey,
    request: BulkRequest,
) -> Result<uws::JobId> {
    let BulkRequest { params, mut parts } = request;
    let options = options(app, &params)?;
    let catalogue = catalogue_source(app, &params, &mut parts)?;
    let id = key.job_id(owner);
    let repeat = crate::jobs::repeats_a_create(app, key, owner, &id).await;
    let intent = match params.first("PHASE") {
        Some(p) if p.trim().eq_ignore_ascii_case("RUN") => Intent::CreateAndRun,
        _ => Intent::Create,
    };
    if !repeat {
        quota::check(app, owner, intent).await?;
    }
    // A URL is fetched once the request is known to be acceptable otherwise.
    let catalogue = match catalogue {
        Catalogue::Spooled(file) => file,
        Catalogue::Url(url) => {
            app.settings
                .upload_urls
                .fetch(&url, app.settings.bulk.max_upload_bytes)
                .await?
        }
    };
    let planned = plan(app, catalogue, &options).await?;
    let planned_bytes = planned
        .stamp_bytes
        .saturating_add(planned.images.saturating_mul(4 * 2880))
        .saturating_add(4 * 2880);
    if let Some(limit) = app
        .settings
        .size_limits
        .max_job_bytes
        .filter(|l| planned_bytes > *l)
    {
        return Err(FrontendError::Usage(format!(
            "the {} stamps of this catalogue would store about {planned_bytes} bytes, over the \
             limit of {limit} bytes per job (max_job_bytes): ask for fewer or smaller stamps",
            planned.stamps
        )));
    }
    let kept = params.only(BULK_PARAMETERS);
    if planned.stamps == 0 {
        // Nothing to cut: the job exists, as the client asked, and says why it has no result.
        let job = app
            .uws
            .create(
                id,
                owner,
                &params.without(&["PHASE"]),
                kept,
                uws::queue::Priority::Bulk,
                None,
                quota::admission(app, None),
            )
            .await?;
        let message = format!(
            "none of the {} catalogue rows could be cut; row {}",
            planned.rows, planned.first_error
        );
        let job = app
            .uws
            .finish(
                &job.id,
                uws::store::Transition::Fail(uws::JobError::new(uws::ErrorCode::NoData, message)),
            )
            .await?;
        return Ok(job.id);
    }
    // The plan is stored before the job exists: a worker never finds a job without its plan.
    // A repeated create stores the same plan again under the same key.
    let meta = ObjectMeta {
        content_type: "text/plain".to_owned(),
        filename: "plan.txt".to_owned(),
    };
    app.uws
        .results()
        .put_file(
            &soda::bulk_plan::plan_key(id.as_str()),
            planned.file.path(),
            &meta,
        )
        .await?;
    let job = app
        .uws
        .create_with_progress(
            id,
            owner,
            &params,
            kept,
            uws::queue::Priority::Bulk,
            token,
            quota::admission(app, Some(planned_bytes)),
            Some(size(&planned)),
        )
        .await?;
    tracing::Span::current().record("job_id", job.id.as_str());
    tracing::info!(
        phase = %job.phase,
        rows = planned.rows,
        stamps = planned.stamps,
        images = planned.images,
        shards = planned.shards,
        "bulk job created"
    );
    Ok(job.id)
}

/// A bulk job's size as the progress it starts with: its stamps, images and shards, none done
/// (the counts its worker reports against, `worker::stamps`), shown in `jobInfo` while it
/// waits, and read by its quote ([`crate::completion`]).
fn size(planned: &Planned) -> uws::Progress {
    let count = |name: &str, total: u64| uws::ProgressCount {
        name: name.to_owned(),
        done: 0,
        total,
    };
    uws::Progress(vec![
        count(crate::completion::STAMPS, planned.stamps),
        count("images", planned.images),
        count(crate::completion::SHARDS, planned.shards.max(1)),
    ])
}

/// Reads and checks the bulk parameters.
fn options(app: &App, params: &Parameters) -> Result<BulkOptions> {
    let single = |name: &'static str| crate::sia::single_value(params, name);
    let max_side = app.settings.size_limits.max_stamp_size;
    let extent = match (single("SIZE")?, single("RADIUS")?) {
        (Some(_), Some(_)) => {
            return Err(FrontendError::Usage(
                "give SIZE (pixels a side) or RADIUS (degrees), not both".to_owned(),
            ));
        }
        (Some(size), None) => {
            let size = soda::request::parse_size(size)?;
            check_side(size, max_side, "SIZE")?;
            Some(Extent::Size(size))
        }
        (None, Some(radius)) => Some(Extent::Radius(parse_radius(radius)?)),
        (None, None) => None,
    };
    let packaging = Packaging::from_response_format(single("RESPONSEFORMAT")?)?;
    let epochs = match single("EPOCHS")?.map(|v| v.trim().to_ascii_lowercase()) {
        None => Epochs::All,
        Some(v) => match v.as_str() {
            "all" => Epochs::All,
            "first" => Epochs::First,
            "last" => Epochs::Last,
            "nearest" => Epochs::Nearest,
            _ => {
                return Err(FrontendError::Usage(format!(
                    "EPOCHS must be all, first, last or nearest, not {v:?}"
                )));
            }
        },
    };
    let time = single("TIME")?
        .map(|v| crate::sia::interval("TIME", v, "an MJD interval: lower upper (days)"))
        .transpose()?;
    let band = single("BAND")?
        .map(|v| crate::sia::interval("BAND", v, "a wavelength interval: lower upper (metres)"))
        .transpose()?;
    Ok(BulkOptions {
        extent,
        max_side,
        packaging,
        epochs,
        time,
        band,
        collections: params.all("COLLECTION").map(str::to_owned).collect(),
        ra_column: single("RACOL")?.map(str::to_owned),
        dec_column: single("DECCOL")?.map(str::to_owned),
    })
}

/// A stamp side within `[jobs] max_stamp_size`; `what` names where it came from.
fn check_side(size: usize, limit: Option<u64>, what: &str) -> Result<()> {
    match limit {
        Some(limit) if size as u64 > limit => Err(FrontendError::Usage(format!(
            "{what}={size} is over the limit of {limit} pixels a side (max_stamp_size)"
        ))),
        _ => Ok(()),
    }
}

/// `RADIUS`: degrees, more than 0 and at most 180.
fn parse_radius(value: &str) -> Result<f64> {
    match value.trim().parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 180.0 => Ok(r),
        _ => Err(FrontendError::Usage(format!(
            "RADIUS must be a number of degrees, more than 0 and at most 180, not {value:?}"
        ))),
    }
}

/// The extent of the stamps of one catalogue row: its own `size` or `radius`, else the
/// request's `SIZE` or `RADIUS`.
fn row_extent(row: &CatalogueRow, options: &BulkOptions) -> Result<Extent> {
    let refuse = |why: String| {
        FrontendError::Usage(format!(
            "catalogue row {} (counting data rows from 0): {why}; no job was created",
            row.row
        ))
    };
    match (row.size, row.radius, options.extent) {
        (Some(_), Some(_), _) => Err(refuse("it has both a size and a radius".to_owned())),
        (Some(size), None, _) => match options.max_side {
            Some(limit) if size as u64 > limit => Err(refuse(format!(
                "size {size} is over the limit of {limit} pixels a side (max_stamp_size)"
            ))),
            _ => Ok(Extent::Size(size)),
        },
        (None, Some(radius), _) => Ok(Extent::Radius(radius)),
        (None, None, Some(extent)) => Ok(extent),
        (None, None, None) => Err(FrontendError::Usage(format!(
            "a bulk request needs SIZE (the side of every stamp in pixels) or RADIUS (degrees), \
             unless each catalogue row has its own size or radius column; row {} has neither",
            row.row
        ))),
    }
}

/// Where the catalogue that `UPLOAD` names is.
enum Catalogue {
    /// Already in a local file: a part of the request.
    Spooled(tempfile::NamedTempFile),
    /// At a URL this service may fetch.
    Url(reqwest::Url),
}

/// The catalogue that `UPLOAD` names.
fn catalogue_source(
    app: &App,
    params: &Parameters,
    parts: &mut Vec<(String, tempfile::NamedTempFile)>,
) -> Result<Catalogue> {
    let uploads: Vec<&str> = params.all("UPLOAD").collect();
    let upload = match uploads.as_slice() {
        [one] => *one,
        [] => {
            return Err(FrontendError::Usage(
                "a bulk request needs its catalogue: UPLOAD=cat,param:cat with a part named cat \
                 (or UPLOAD=cat,URL where the service allows it)"
                    .to_owned(),
            ));
        }
        _ => {
            return Err(FrontendError::MultiValued(
                "UPLOAD given more than once: a bulk request takes one catalogue".to_owned(),
            ));
        }
    };
    let (_table, source) = upload.split_once(',').ok_or_else(|| {
        FrontendError::Usage(format!(
            "UPLOAD {upload:?} is not NAME,param:PART or NAME,URL (DALI): say where the \
             catalogue is"
        ))
    })?;
    let Some(part) = source.trim().strip_prefix("param:") else {
        return Ok(Catalogue::Url(app.settings.upload_urls.check(source)?));
    };
    if let Some(n) = parts.iter().position(|(name, _)| name == part) {
        return Ok(Catalogue::Spooled(parts.swap_remove(n).1));
    }
    // A small catalogue sent as a form parameter.
    if let Some(text) = params.first(part) {
        let mut file = tempfile::NamedTempFile::new()
            .map_err(|e| FrontendError::Internal(format!("cannot spool the catalogue: {e}")))?;
        file.write_all(text.as_bytes())
            .map_err(|e| FrontendError::Unavailable(format!("cannot spool the catalogue: {e}")))?;
        return Ok(Catalogue::Spooled(file));
    }
    Err(FrontendError::Usage(format!(
        "UPLOAD names param:{part}, but the request has no part {part:?}"
    )))
}

/// A catalogue placed on the images.
struct Planned {
    /// The plan, written to a temporary file.
    file: tempfile::NamedTempFile,
    rows: u64,
    stamps: u64,
    images: u64,
    /// The bytes the stamps will take, as packaged (estimated for `RADIUS` stamps).
    stamp_bytes: u64,
    /// The shards the worker will split the plan into.
    shards: u64,
    /// The first row that gives no stamp, and why ("N: reason").
    first_error: String,
}

/// A located image that may serve rows: its ID, outline, observation interval and scale.
struct Candidate {
    id: String,
    corners: Vec<(f64, f64)>,
    time: Option<(f64, f64)>,
    scale: ImageScale,
}

/// What the sky index tells of an image's pixels: about how many degrees one spans, and the
/// image's longer side, which a `RADIUS` stamp never exceeds.
#[derive(Debug, Clone, Copy)]
struct ImageScale {
    degrees_per_pixel: f64,
    longest_side: u64,
}

/// The side a stamp of `extent` is planned at: a `RADIUS` stamp by the image's scale where the
/// index knows it, else at the most a stamp may have (`max_stamp_size`, or 1024 pixels).
fn planned_side(extent: Extent, scale: Option<ImageScale>, max_side: Option<u64>) -> usize {
    let most = max_side.unwrap_or(1024) as f64;
    match (extent, scale) {
        (Extent::Size(size), _) => size,
        (Extent::Radius(radius), Some(scale)) if scale.degrees_per_pixel > 0.0 => {
            let side = (2.0 * radius / scale.degrees_per_pixel).ceil() + 1.0;
            side.min(scale.longest_side as f64).min(most).max(1.0) as usize
        }
        (Extent::Radius(_), _) => most as usize,
    }
}

/// Reads the whole catalogue, places each row on its images and writes the plan.
async fn plan(
    app: &App,
    catalogue: tempfile::NamedTempFile,
    options: &BulkOptions,
) -> Result<Planned> {
    let limits = app.settings.bulk;
    let (ra_column, dec_column) = (options.ra_column.clone(), options.dec_column.clone());
    let reader = tokio::task::spawn_blocking(move || {
        let file = catalogue.reopen()?;
        let reader = soda::catalogue::open(file, ra_column.as_deref(), dec_column.as_deref())?;
        // The temporary file stays until the catalogue is read.
        Ok::<_, soda::SodaError>((reader, catalogue))
    })
    .await
    .map_err(|e| FrontendError::Internal(format!("catalogue task failed: {e}")))??;
    let (mut reader, catalogue) = reader;

    // Stamps by image, images in the order rows first reach them.
    let mut groups: Vec<(String, Vec<PlannedStamp>)> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    let mut errors: Vec<(u64, String)> = Vec::new();
    let mut cells: HashMap<u64, Arc<Vec<Candidate>>> = HashMap::new();
    let (mut rows, mut stamps, mut stamp_bytes) = (0u64, 0u64, 0u64);
    loop {
        let (back, batch) = tokio::task::spawn_blocking(move || {
            let mut batch = Vec::with_capacity(BATCH_ROWS);
            while batch.len() < BATCH_ROWS {
                match reader.next_row()? {
                    Some(row) => batch.push(row),
                    None => break,
                }
            }
            Ok::<_, soda::SodaError>((reader, batch))
        })
        .await
        .map_err(|e| FrontendError::Internal(format!("catalogue task failed: {e}")))??;
        reader = back;
        if batch.is_empty() {
            break;
        }
        for row in batch {
            let row = row.map_err(|e| {
                FrontendError::Usage(format!(
                    "catalogue row {} (counting data rows from 0): {}; no job was created",
                    e.row, e.reason
                ))
            })?;
            rows += 1;
            let extent = row_extent(&row, options)?;
            if rows > limits.max_rows {
                return Err(FrontendError::Usage(format!(
                    "the catalogue has more than {} rows, the limit of one bulk request \
                     (max_rows): split it",
                    limits.max_rows
                )));
            }
            let images = match images_for(app, options, &row, &mut cells).await? {
                Ok(images) => images,
                Err(reason) => {
                    errors.push((row.row, reason));
                    continue;
                }
            };
            for (id, scale) in images {
                stamps += 1;
                let side = planned_side(extent, scale, options.max_side);
                stamp_bytes =
                    stamp_bytes.saturating_add(options.packaging.planned_stamp_bytes(side));
                if stamps > limits.max_stamps {
                    return Err(FrontendError::Usage(format!(
                        "the catalogue asks for more than {} stamps, the limit of one bulk \
                         request (max_stamps): split it, or narrow it with TIME, COLLECTION or \
                         EPOCHS",
                        limits.max_stamps
                    )));
                }
                let n = *group_of.entry(id.clone()).or_insert_with(|| {
                    groups.push((id, Vec::new()));
                    groups.len() - 1
                });
                groups[n].1.push(PlannedStamp {
                    row: row.row,
                    ra: row.ra,
                    dec: row.dec,
                    extent,
                });
            }
        }
    }
    drop(catalogue);
    if rows == 0 {
        return Err(FrontendError::Usage(
            "the catalogue has no rows: no job was created".to_owned(),
        ));
    }
    let first_error = errors
        .first()
        .map(|(row, reason)| format!("{row}: {reason}"))
        .unwrap_or_default();
    let images = groups.len() as u64;
    // By the rule the worker splits the plan with, so the count is the worker's.
    let shards = soda::bulk_plan::count_shards(
        groups.iter().map(|(_, stamps)| stamps.len() as u64),
        app.settings.shards,
    );
    let file = tokio::task::spawn_blocking(move || {
        let file = tempfile::NamedTempFile::new()?;
        let mut writer = PlanWriter::new(std::io::BufWriter::new(file.reopen()?), stamps, images)?;
        for (row, reason) in &errors {
            writer.error(*row, reason)?;
        }
        for (id, stamps) in &groups {
            writer.image(id, stamps)?;
        }
        writer
            .finish()?
            .into_inner()
            .map_err(|e| soda::SodaError::from(e.into_error()))?
            .sync_all()?;
        Ok::<_, soda::SodaError>(file)
    })
    .await
    .map_err(|e| FrontendError::Internal(format!("plan task failed: {e}")))?
    .map_err(|e| FrontendError::Unavailable(format!("cannot write the bulk plan: {e}")))?;
    Ok(Planned {
        file,
        rows,
        stamps,
        images,
        stamp_bytes,
        shards,
        first_error,
    })
}

/// The images one row is cut from (with their scale where the sky index tells it), or why
/// there is none.
async fn images_for(
    app: &App,
    options: &BulkOptions,
    row: &CatalogueRow,
    cells: &mut HashMap<u64, Arc<Vec<Candidate>>>,
) -> Result<std::result::Result<Vec<(String, Option<ImageScale>)>, String>> {
    if let Some(id) = &row.id {
        let known = soda::SourceId::parse(id)
            .map_err(FrontendError::from)
            .and_then(|source| {
                app.repositories
                    .locate(&source)
                    .map_err(FrontendError::from)
            });
        return Ok(match known {
            Ok(_) => Ok(vec![(id.clone(), None)]),
            Err(e) => Err(e.to_string()),
        });
    }
    let index = app.sky_index.as_ref().ok_or_else(|| {
        FrontendError::Unavailable(
            "this deployment has no sky index: give every catalogue row an id column naming its \
             image"
                .to_owned(),
        )
    })?;
    let cell = soda::sky::cell_of(row.ra, row.dec);
    let candidates = match cells.get(&cell) {
        Some(candidates) => candidates.clone(),
        None => {
            let (exact, ranges) = soda::sky::cell_lookup(cell);
            let found = index
                .candidates(&CellQuery {
                    cells: exact,
                    ranges,
                    time: options.time,
                    band: options.band,
                    collections: options.collections.clone(),
                    limit: MAX_CELL_CANDIDATES,
                })
                .await?;
            if found.len() >= MAX_CELL_CANDIDATES {
                return Err(FrontendError::Usage(format!(
                    "more than {MAX_CELL_CANDIDATES} indexed images lie near ({}, {}): narrow \
                     the request with TIME or COLLECTION",
                    row.ra, row.dec
                )));
            }
            let candidates: Arc<Vec<Candidate>> = Arc::new(
                found
                    .into_iter()
                    .filter(|image| soda::SourceId::parse(&image.id).is_ok())
                    .filter_map(|image| match image.content {
                        ImageContent::Located(location) => Some(Candidate {
                            id: image.id,
                            scale: ImageScale {
                                degrees_per_pixel: 2.0 * location.radius_deg
                                    / (location.size.0 as f64).hypot(location.size.1 as f64),
                                longest_side: location.size.0.max(location.size.1),
                            },
                            corners: location.corners,
                            time: location.time,
                        }),
                        ImageContent::Unusable(_) => None,
                    })
                    .collect(),
            );
            if cells.len() >= CACHED_CELLS {
                cells.clear();
            }
            cells.insert(cell, candidates.clone());
            candidates
        }
    };
    let row_time = match (row.t_min, row.t_max) {
        (Some(lo), Some(hi)) => Some((lo, hi)),
        (Some(t), None) | (None, Some(t)) => Some((t, t)),
        (None, None) => None,
    };
    let mut covering: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| soda::sky::outline_contains(&c.corners, row.ra, row.dec))
        .filter(|c| {
            // A row's own interval narrows the images, except for EPOCHS=nearest, where it is
            // the time to be near.
            options.epochs == Epochs::Nearest
                || match (row_time, c.time) {
                    (None, _) => true,
                    (Some((lo, hi)), Some((start, end))) => start <= hi && end >= lo,
                    (Some(_), None) => false,
                }
        })
        .collect();
    if covering.is_empty() {
        return Ok(Err(format!(
            "no indexed image covers ({}, {}){}",
            row.ra,
            row.dec,
            if row_time.is_some() || options.time.is_some() || !options.collections.is_empty() {
                " within the times and collections asked for"
            } else {
                ""
            }
        )));
    }
    // Images without a time come after every dated one, in ID order.
    let start = |c: &Candidate| c.time.map_or(f64::INFINITY, |t| t.0);
    covering.sort_by(|a, b| start(a).total_cmp(&start(b)).then_with(|| a.id.cmp(&b.id)));
    let chosen: Vec<&Candidate> = match options.epochs {
        Epochs::All => covering,
        Epochs::First => covering.into_iter().take(1).collect(),
        Epochs::Last => {
            let end = |c: &Candidate| c.time.map_or(f64::NEG_INFINITY, |t| t.1);
            covering
                .into_iter()
                .max_by(|a, b| end(a).total_cmp(&end(b)).then_with(|| b.id.cmp(&a.id)))
                .into_iter()
                .collect()
        }
        Epochs::Nearest => {
            let Some((lo, hi)) = row_time else {
                return Err(FrontendError::Usage(format!(
                    "EPOCHS=nearest needs each row's time (a t_min or t_max column, MJD); \
                     catalogue row {} has none",
                    row.row
                )));
            };
            let target = (lo + hi) / 2.0;
            let distance = |c: &Candidate| {
                c.time
                    .map_or(f64::INFINITY, |(s, e)| ((s + e) / 2.0 - target).abs())
            };
            covering
                .into_iter()
                .min_by(|a, b| distance(a).total_cmp(&distance(b)))
                .into_iter()
                .collect()
        }
    };
    Ok(Ok(chosen
        .into_iter()
        .map(|c| (c.id.clone(), Some(c.scale)))
        .collect()))
}
