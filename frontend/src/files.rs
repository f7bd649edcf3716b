//! Serves result objects of the local bucket to holders of a valid signed URL. Cloud buckets
//! serve their own signed URLs; this route exists only for `skycut serve`.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use crate::error::FrontendError;
use crate::state::AppState;

/// `GET /files/{key}?expires=…&signature=…`: the object, or 403 for a tampered or expired URL.
#[utoipa::path(
    get,
    operation_id = "get_file",
    path = "/files/{key}",
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
    let path = bucket
        .object_path(&key)
        .ok_or_else(|| FrontendError::NotFound(format!("no result {key}")))?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| FrontendError::NotFound(format!("result {key} no longer exists")))?;
    let length = file.metadata().await.map(|m| m.len()).ok();
    let meta = bucket.object_meta(&key).await;
    let body = Body::from_stream(tokio_util_stream(file));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let content_type = meta
        .as_ref()
        .map_or("application/octet-stream", |m| m.content_type.as_str());
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Some(len) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let disposition = meta
        .as_ref()
        .map(|m| format!("attachment; filename=\"{}\"", m.filename));
    if let Some(v) = disposition.and_then(|d| HeaderValue::from_str(&d).ok()) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// Streams a file in chunks, so a large result never sits in memory whole.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_core::Stream<Item = std::io::Result<axum::body::Bytes>> {
    tokio_util::io::ReaderStream::new(file)
}
