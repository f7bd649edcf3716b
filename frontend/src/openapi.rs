//! The document-level parts of the OpenAPI 3.1 description served at
//! `/api/cutout/openapi.json`: its info, server, tags and the parameter and form types the
//! handlers' `#[utoipa::path]` annotations share. The operations themselves are added by
//! [`crate::router`], which routes each handler and adds its annotation in the same line.
//!
//! The parameter structs here describe the wire, not how it is parsed: DALI parameters are read
//! by [`crate::extract::DaliParams`] with case-insensitive names (so `id` works as well as the
//! `ID` written here), and `uws`/`soda` validate them. Field names are the protocol's
//! upper-case parameter names, hence `non_snake_case`.
#![allow(non_snake_case)]

use std::sync::Arc;

use axum::Extension;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Object, Schema};
use utoipa::{IntoParams, IntoResponses, OpenApi, PartialSchema, ToSchema};

/// The document without its operations, which [`crate::router`] adds route by route; paths are
/// relative to the service path.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Skycut",
        description = "IVOA SODA 1.0 image cutouts (sync and UWS 1.1 async), DataLink 1.1 \
                       links with a SODA service descriptor, and VOSI 1.1. Parameter names are \
                       case-insensitive (DALI 1.1); errors are text/plain bodies starting with \
                       their DALI label.",
        license(name = "MIT OR Apache-2.0")
    ),
    servers((url = "/api/cutout", description = "this service")),
    tags(
        (name = "SODA", description = "Cutouts (SODA 1.0) and their DataLink descriptor"),
        (name = "SIA", description = "Image discovery by position, time and band (SIA 2.0)"),
        (name = "Bulk", description = "Bulk cutouts: a catalogue of positions in, a table of stamps out, as a UWS job"),
        (name = "UWS", description = "Asynchronous cutout jobs (UWS 1.1)"),
        (name = "VOSI", description = "Availability and capabilities (VOSI 1.1)"),
        (name = "service", description = "Result downloads and this description"),
        (name = "Web page", description = "The page for people: a cutout form and the caller's jobs (HTML)")
    )
)]
pub struct ApiDoc;

/// The finished document as served, made once when the router is built.
pub struct Described(Result<String, String>);

impl Described {
    /// Finishes the document the router assembled and serialises it.
    pub fn new(mut document: utoipa::openapi::OpenApi) -> Described {
        distinct_operation_ids(&mut document);
        catch_all_parameters(&mut document);
        Described(document.to_pretty_json().map_err(|e| e.to_string()))
    }
}

/// One handler serving GET and POST (DALI allows both for `/sync` and `/links`) gets one
/// operation ID from utoipa for both; OpenAPI wants them unique, so the POST one gets `_post`.
fn distinct_operation_ids(openapi: &mut utoipa::openapi::OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        let get_id = item.get.as_ref().and_then(|op| op.operation_id.clone());
        if let Some(post) = item.post.as_mut()
            && post.operation_id.is_some()
            && post.operation_id == get_id
        {
            post.operation_id = get_id.map(|id| format!("{id}_post"));
        }
    }
}

/// An axum catch-all segment (`{*key}`, the rest of the path) is an ordinary path parameter
/// (`{key}`) in OpenAPI.
fn catch_all_parameters(openapi: &mut utoipa::openapi::OpenApi) {
    let paths = std::mem::take(&mut openapi.paths.paths);
    openapi.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
}

/// `GET /openapi.json`: this description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    responses((status = 200, description = "The OpenAPI 3.1 description of this service",
               content_type = "application/json", body = Object))
)]
pub async fn openapi_json(Extension(described): Extension<Arc<Described>>) -> Response {
    match &described.0 {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        Err(e) => {
            crate::FrontendError::Internal(format!("cannot serialise OpenAPI: {e}")).into_response()
        }
    }
}

/// SODA 1.0 cutout parameters. Exactly one stencil per request: `CIRCLE`, `POLYGON` or `POS`.
///
/// The one description of the SODA parameters: the sync query's parameters, and the SODA part
/// of [`JobCreation`] and [`ParametersForm`], which are made from it.
#[derive(ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SodaParams {
    /// The image: `butler://REPOSITORY/NAME`, optionally `?ext=EXTNAME` (an extension).
    #[schema(example = "butler://demo/m31")]
    #[param(example = "butler://demo/m31")]
    pub ID: String,
    /// `ra dec radius`, ICRS degrees.
    #[schema(example = "10.684708 41.26875 0.0178")]
    #[param(example = "10.684708 41.26875 0.0178")]
    pub CIRCLE: Option<String>,
    /// `ra1 dec1 ra2 dec2 ra3 dec3 ...`, ICRS degrees, at least three vertices.
    #[schema(example = "10.67 41.25 10.70 41.25 10.70 41.28 10.67 41.28")]
    #[param(example = "10.67 41.25 10.70 41.25 10.70 41.28 10.67 41.28")]
    pub POLYGON: Option<String>,
    /// `CIRCLE ra dec radius`, `POLYGON ra1 dec1 ...` or `RANGE ra1 ra2 dec1 dec2` (ICRS degrees).
    #[schema(example = "RANGE 10.67 10.70 41.25 41.28")]
    #[param(example = "RANGE 10.67 10.70 41.25 41.28")]
    pub POS: Option<String>,
    /// HEALPix cells as an ASCII MOC (SODA working draft): the rectangle covering them.
    #[schema(example = "14/1234567 15/4938300")]
    #[param(example = "14/1234567 15/4938300")]
    pub MOC: Option<String>,
    /// `lower upper` in MJD (`-Inf`/`+Inf` allowed): the planes of a time axis in it, or the
    /// whole image if its observation meets it (none: 204).
    #[schema(example = "60000 60001.5")]
    #[param(example = "60000 60001.5")]
    pub TIME: Option<String>,
    /// A polarization state to keep (`I`, `Q`, `U`, `V`, `RR`, `LL`, `RL`, `LR`, `XX`, `YY`,
    /// `XY`, `YX`); repeat it for several, which form one filter.
    #[schema(example = "I")]
    #[param(example = "I")]
    pub POL: Option<String>,
    /// `application/fits` (the default), `image/png` or `image/jpeg`: a grey preview of each
    /// cutout (asinh stretch between the 0.5 and 99.5 percentiles, north up; blank pixels
    /// transparent in a PNG, black in a JPEG), results `preview` (or `preview-N`) listed before
    /// the FITS results, so a sync request redirects to the preview. Anything else: 400.
    #[schema(example = "image/png")]
    #[param(example = "image/png")]
    pub RESPONSEFORMAT: Option<String>,
    /// `true` (also `KIND=HEADER`): only the header the cutout would have, as `text/plain`, one
    /// 80-character card per line; no pixel is read.
    #[schema(example = "true")]
    #[param(example = "true")]
    pub META: Option<String>,
}

/// The UWS control parameters of a new job, beside its SODA parameters.
#[derive(ToSchema)]
pub struct UwsControls {
    /// `RUN` queues the job at once; otherwise it is created PENDING.
    #[schema(example = "RUN")]
    pub PHASE: Option<String>,
    /// A client label for the job (`uws:runId`).
    pub RUNID: Option<String>,
    /// Seconds the job may run; 0 means the server's maximum.
    pub EXECUTIONDURATION: Option<String>,
    /// When the job and its results are deleted (ISO 8601 UTC).
    pub DESTRUCTION: Option<String>,
}

/// A new async job: the SODA parameters ([`SodaParams`]) plus the UWS control parameters
/// ([`UwsControls`]), as one form.
pub struct JobCreation;

impl PartialSchema for JobCreation {
    fn schema() -> RefOr<Schema> {
        let mut form = object_of::<SodaParams>();
        let controls = object_of::<UwsControls>();
        form.properties.extend(controls.properties);
        form.description =
            Some("A new async job: the SODA parameters plus the UWS control parameters.".into());
        RefOr::T(Schema::Object(form))
    }
}

impl ToSchema for JobCreation {}

/// `POST /jobs/{id}/parameters`: the SODA parameters ([`SodaParams`], none required) and the
/// run label.
pub struct ParametersForm;

/// The run label [`ParametersForm`] accepts beside the SODA parameters.
#[derive(ToSchema)]
pub struct RunIdForm {
    /// A client label for the job.
    pub RUNID: Option<String>,
}

impl PartialSchema for ParametersForm {
    fn schema() -> RefOr<Schema> {
        let mut form = object_of::<SodaParams>();
        form.required.clear();
        form.properties.extend(object_of::<RunIdForm>().properties);
        form.description = Some(
            "`POST /jobs/{id}/parameters`: SODA parameters to replace while PENDING, and the run \
             label."
                .into(),
        );
        RefOr::T(Schema::Object(form))
    }
}

impl ToSchema for ParametersForm {}

/// The object schema derived for `T` (a struct of named fields, so always an object).
fn object_of<T: PartialSchema>() -> Object {
    match T::schema() {
        RefOr::T(Schema::Object(object)) => object,
        RefOr::T(_) | RefOr::Ref(_) => Object::default(),
    }
}

/// DataLink `{links}` input.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinksParams {
    /// The image: `butler://REPOSITORY/NAME`, optionally `?ext=EXTNAME` (an extension); repeat
    /// it for several images (at most 100).
    #[param(example = "butler://demo/m31")]
    pub ID: String,
}

/// SIA 2.0 query input.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SiaParams {
    /// Region the images must overlap (repeatable, any may match): `CIRCLE ra dec radius`,
    /// `RANGE ra1 ra2 dec1 dec2` or `POLYGON ra1 dec1 ...` (ICRS degrees).
    #[param(example = "CIRCLE 10.68 41.27 0.1")]
    pub POS: Option<String>,
    /// Observation time interval, `lower upper` in MJD (`-Inf`/`+Inf` allowed).
    pub TIME: Option<String>,
    /// Wavelength interval, `lower upper` in metres.
    pub BAND: Option<String>,
    /// Only images of this repository (repeatable).
    pub COLLECTION: Option<String>,
    /// At most this many rows (default 1000).
    pub MAXREC: Option<u32>,
}

/// UWS job-list filters.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListParams {
    /// Only jobs in this phase (repeatable), e.g. `EXECUTING`.
    pub PHASE: Option<String>,
    /// Only jobs created after this instant: a DALI timestamp in UTC (`2015-10-26` is midnight, `2015-10-26T09:00`, `2015-10-26T09:00:00.5Z`).
    pub AFTER: Option<String>,
    /// Only the newest N jobs, newest first.
    pub LAST: Option<u32>,
}

/// UWS blocking read of a job.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobWaitParams {
    /// Seconds to wait for a phase change (-1: the server's maximum).
    pub WAIT: Option<i64>,
    /// Wait only while the job is in this phase.
    pub PHASE: Option<String>,
}

/// `POST /jobs/{id}`.
#[derive(ToSchema)]
pub struct ActionForm {
    /// `DELETE` deletes the job.
    #[schema(example = "DELETE")]
    pub ACTION: String,
}

/// `POST /jobs/{id}/phase`.
#[derive(ToSchema)]
pub struct PhaseForm {
    /// `RUN` or `ABORT`.
    #[schema(example = "RUN")]
    pub PHASE: String,
}

/// `POST /jobs/{id}/executionduration`.
#[derive(ToSchema)]
pub struct ExecutionDurationForm {
    /// Seconds; 0 means the server's maximum.
    #[schema(example = "600")]
    pub EXECUTIONDURATION: String,
}

/// `POST /jobs/{id}/destruction`.
#[derive(ToSchema)]
pub struct DestructionForm {
    /// ISO 8601 UTC instant, e.g. `2030-01-01T00:00:00Z`.
    #[schema(example = "2030-01-01T00:00:00Z")]
    pub DESTRUCTION: String,
}

/// The signature of a local result URL, as issued in a job's results.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SignedUrlParams {
    /// Unix time after which the URL is refused.
    pub expires: Option<i64>,
    /// HMAC-SHA256 of key and expiry, hex.
    pub signature: Option<String>,
}

/// The failures every read of a job resource can answer, described once for all of them.
#[derive(IntoResponses)]
pub enum JobReadFailures {
    /// UsageError: no such job (another owner's job looks the same) or resource
    #[response(status = 404, content_type = "text/plain")]
    NotFound(String),
    /// ServiceUnavailable: the job store or queue is down
    #[response(status = 503, content_type = "text/plain")]
    Unavailable(String),
}

/// The failures every change of a job can answer (besides its `303 See Other`).
#[derive(IntoResponses)]
pub enum JobChangeFailures {
    /// UsageError or MultiValuedParamNotSupported: bad parameters
    #[response(status = 400, content_type = "text/plain")]
    BadParameters(String),
    /// AuthorizationError: not allowed in the job's current phase
    #[response(status = 403, content_type = "text/plain")]
    WrongPhase(String),
    /// UsageError: no such job (another owner's job looks the same) or resource
    #[response(status = 404, content_type = "text/plain")]
    NotFound(String),
    /// ServiceUnavailable: the job store or queue is down
    #[response(status = 503, content_type = "text/plain")]
    Unavailable(String),
}
