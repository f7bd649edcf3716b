//! Serves result objects of the local bucket to holders of a valid signed URL. Cloud buckets
//! serve their own signed URLs; this route exists only for `skycut serve`.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bucket::LocalBucket;
use time::OffsetDateTime;
use uws::results::ObjectMeta;

use crate::error::FrontendError;
use crate::state::AppState;

/// `GET /files/{key}?expires=…&signature=…`: the object, or 403 for a tampered or expired URL.
#[utoipa::path(
    get,
    operation_id = "get_file",
    path = "/files/{*key}",
    tag = "service",
    params(("key" = String, Path, description = "Object key, e.g. JOB/result.fits"), crate::openapi::SignedUrlParams),
    responses(
        (status = 200, description = "The result file", content_type = "application/fits", body = Vec<u8>),
        (status = 403, description = "AuthorizationError: the URL is not signed, tampered with or expired", content_type = "text/plain", body = String),
        (status = 404, description = "UsageError: the result no longer exists", content_type = "text/plain", body = String)
    )
)]
pub async fn get(
    State(app): State<AppState>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, FrontendError> {
    let bucket = app
        .local_bucket
        .as_ref()
        .ok_or_else(|| FrontendError::NotFound("results are not served from here".into()))?;
    let mut expires = None;
    let mut signature = None;
    for (n, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match n.as_ref() {
            "expires" => expires = v.parse::<i64>().ok(),
            "signature" => signature = Some(v.into_owned()),
            _ => {}
        }
    }
    let (Some(expires), Some(signature)) = (expires, signature) else {
        return Err(FrontendError::Forbidden("the URL is not signed".into()));
    };
    bucket
        .signer()
        .verify(
            &key,
            expires,
            &signature,
            OffsetDateTime::now_utc().unix_timestamp(),
        )
        .map_err(|e| FrontendError::Forbidden(e.to_string()))?;
    // A synchronous request's result may be held in memory: served without touching the disk.
    if let Some((bytes, meta)) = bucket.memory_object(&key) {
        let length = bytes.len() as u64;
        return Ok(respond(Body::from(bytes), length, Some(meta)));
    }
    let bucket = bucket.clone();
    let object = key.clone();
    // One blocking task opens the object and reads its metadata (and a small object whole),
    // rather than one per file-system call and per 4 KiB chunk.
    let opened = tokio::task::spawn_blocking(move || open_object(&bucket, &object))
        .await
        .map_err(|e| FrontendError::Internal(format!("file thread failed: {e}")))?
        .map_err(|_| FrontendError::NotFound(format!("result {key} no longer exists")))?;
    let body = match opened.content {
        Content::Whole(bytes) => Body::from(bytes),
        Content::File(file) => Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            tokio::fs::File::from_std(file),
            STREAM_CHUNK,
        )),
    };
    Ok(respond(body, opened.length, opened.meta))
}

/// The object's response, with its type and file name when it has them.
fn respond(body: Body, length: u64, meta: Option<ObjectMeta>) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let content_type = meta
        .as_ref()
        .map_or("application/octet-stream", |m| m.content_type.as_str());
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let disposition = meta
        .as_ref()
        .map(|m| format!("attachment; filename=\"{}\"", m.filename));
    if let Some(v) = disposition.and_then(|d| HeaderValue::from_str(&d).ok()) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

/// Objects up to this size are read whole and sent as one body; larger ones are streamed, so a
/// large result never sits in memory whole.
const WHOLE_MAX: u64 = 1 << 20;

/// The chunk of a streamed object.
const STREAM_CHUNK: usize = 64 * 1024;

enum Content {
    Whole(Vec<u8>),
    File(std::fs::File),
}

struct Opened {
    content: Content,
    length: u64,
    meta: Option<ObjectMeta>,
}

fn open_object(bucket: &LocalBucket, key: &str) -> std::io::Result<Opened> {
    let (mut file, meta) = bucket.open_object(key)?;
    let length = file.metadata()?.len();
    let content = if length <= WHOLE_MAX {
        let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        std::io::Read::read_to_end(&mut file, &mut bytes)?;
        Content::Whole(bytes)
    } else {
        Content::File(file)
    };
    Ok(Opened {
        content,
        length,
        meta,
    })
}
