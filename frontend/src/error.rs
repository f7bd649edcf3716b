//! The one place where an error becomes an HTTP response.
//!
//! Every error a handler returns is a [`FrontendError`]; each variant names its DALI/SODA label
//! and status, and the body is `text/plain; charset=utf-8` starting with the label, as SODA 1.0
//! §5.2 asks and as pyvo shows it. Conversions from the library errors are exhaustive matches,
//! so a new library error forces a choice of label here. A science error takes the route a
//! failed job's does: [`SodaError::code`] picks its [`ErrorCode`], and
//! [`FrontendError::from_code`] is the one table from a code to a status and label.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use soda::SodaError;
use uws::{ErrorCode, JobError, UwsError};

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// 400 `UsageError`.
    #[error("{0}")]
    Usage(String),
    /// 400 `MultiValuedParamNotSupported`.
    #[error("{0}")]
    MultiValued(String),
    /// 404 `UsageError`: an unknown job, job resource or image.
    #[error("{0}")]
    NotFound(String),
    /// 401 `AuthenticationError`: no credentials, or credentials that do not check out.
    /// `challenge` is the `WWW-Authenticate` value.
    #[error("{message}")]
    Unauthenticated { message: String, challenge: String },
    /// 403 `AuthorizationError`: a valid token without the scope this service requires.
    #[error("the token lacks the scope {scope}")]
    MissingScope { scope: String },
    /// 429 `UsageError`: over a per-user quota; the client may retry after `retry_after` seconds.
    #[error("{message}")]
    OverQuota { message: String, retry_after: u64 },
    /// 422 `UsageError`: an `Idempotency-Key` reused for a different request (the IETF draft's
    /// answer to a key whose payload changed).
    #[error("{0}")]
    Conflict(String),
    /// 403 `AuthorizationError`: a refused signature, a change not allowed in this phase.
    #[error("{0}")]
    Forbidden(String),
    /// 503 `ServiceUnavailable`: a dependency is down or the request could not be served in time.
    #[error("{0}")]
    Unavailable(String),
    /// 503 `ServiceUnavailable`: too busy to serve this request now (the sync queue is full); the
    /// client may retry after `retry_after` seconds or use the async endpoint.
    #[error("{message}")]
    Overloaded { message: String, retry_after: u64 },
    /// 500 `Error`: a bug or an unexpected failure.
    #[error("{0}")]
    Internal(String),
}

impl FrontendError {
    pub fn status(&self) -> StatusCode {
        match self {
            FrontendError::Usage(_) | FrontendError::MultiValued(_) => StatusCode::BAD_REQUEST,
            FrontendError::NotFound(_) => StatusCode::NOT_FOUND,
            FrontendError::Conflict(_) => StatusCode::UNPROCESSABLE_ENTITY,
            FrontendError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            FrontendError::Forbidden(_) | FrontendError::MissingScope { .. } => {
                StatusCode::FORBIDDEN
            }
            FrontendError::OverQuota { .. } => StatusCode::TOO_MANY_REQUESTS,
            FrontendError::Unavailable(_) | FrontendError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            FrontendError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            FrontendError::Usage(_)
            | FrontendError::NotFound(_)
            | FrontendError::Conflict(_)
            | FrontendError::OverQuota { .. } => "UsageError",
            FrontendError::MultiValued(_) => "MultiValuedParamNotSupported",
            FrontendError::Unauthenticated { .. } => "AuthenticationError",
            FrontendError::Forbidden(_) | FrontendError::MissingScope { .. } => {
                "AuthorizationError"
            }
            FrontendError::Unavailable(_) | FrontendError::Overloaded { .. } => {
                "ServiceUnavailable"
            }
            FrontendError::Internal(_) => "Error",
        }
    }

    /// The DataLink 1.1 fault (§3.4) that starts the `error_message` of a `{links}` row for an
    /// ID this error stopped: the same choice of blame as [`FrontendError::label`].
    pub fn datalink_fault(&self) -> &'static str {
        match self {
            FrontendError::Usage(_)
            | FrontendError::MultiValued(_)
            | FrontendError::Conflict(_) => "UsageFault",
            FrontendError::NotFound(_) => "NotFoundFault",
            FrontendError::Unavailable(_)
            | FrontendError::Overloaded { .. }
            | FrontendError::OverQuota { .. } => "TransientFault",
            FrontendError::Unauthenticated { .. }
            | FrontendError::MissingScope { .. }
            | FrontendError::Forbidden(_) => "DefaultFault",
            FrontendError::Internal(_) => "FatalFault",
        }
    }

    /// The one table from a job's [`ErrorCode`] to an answer: a failed job told to a
    /// synchronous client, and a science error on the request path (through
    /// [`SodaError::code`]), so both carry the label the job's own error document carries
    /// ([`ErrorCode::label`]). `NoData` is a 400 here: a synchronous cutout that selects no data
    /// is answered 204 before it gets this far (see `sync`).
    pub fn from_code(code: ErrorCode, message: String) -> FrontendError {
        match code {
            ErrorCode::Usage | ErrorCode::NoData => FrontendError::Usage(message),
            ErrorCode::MultiValued => FrontendError::MultiValued(message),
            ErrorCode::NotFound => FrontendError::NotFound(message),
            ErrorCode::Unavailable => FrontendError::Unavailable(message),
            ErrorCode::Internal => FrontendError::Internal(message),
        }
    }

    /// How a failed job's error is told to a synchronous client.
    pub fn from_job_error(error: &JobError) -> FrontendError {
        FrontendError::from_code(error.code, error.message.clone())
    }
}

impl From<UwsError> for FrontendError {
    fn from(e: UwsError) -> Self {
        match e {
            UwsError::Usage(m) => FrontendError::Usage(m),
            UwsError::JobNotFound(_) | UwsError::ResourceNotFound(_) => {
                FrontendError::NotFound(e.to_string())
            }
            UwsError::WrongPhase { .. } => FrontendError::Forbidden(e.to_string()),
            // A client asked for a change the state machine refuses.
            UwsError::IllegalTransition { .. } => FrontendError::Usage(e.to_string()),
            UwsError::Conflict(m) => FrontendError::Conflict(format!(
                "{m}: the Idempotency-Key was used for another request; use a new key"
            )),
            // The store's atomic admission refused a job that the quota check let through (a
            // concurrent create of the same owner came first).
            UwsError::OverQuota(_) => FrontendError::OverQuota {
                message: e.to_string(),
                retry_after: 10,
            },
            UwsError::Store(_) | UwsError::Queue(_) | UwsError::ResultStore(_) => {
                FrontendError::Unavailable(e.to_string())
            }
        }
    }
}

impl From<SodaError> for FrontendError {
    fn from(e: SodaError) -> Self {
        FrontendError::from_code(e.code(), e.to_string())
    }
}

impl IntoResponse for FrontendError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Shedding load is the service working as configured, not a failure to investigate.
        if let FrontendError::Overloaded { .. } = self {
            tracing::warn!(status = status.as_u16(), error = %self, "request refused");
        } else if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %self, "request failed");
        }
        let mut response = (status, format!("{}: {}\n", self.label(), self)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match &self {
            FrontendError::Unauthenticated { challenge, .. } => {
                if let Ok(v) = HeaderValue::from_str(challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            // RFC 6750 §3.1: a token without the needed scope is told which scope it lacks.
            FrontendError::MissingScope { scope } => {
                let challenge = format!(
                    "Bearer realm=\"skycut\", error=\"insufficient_scope\", scope=\"{scope}\""
                );
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            FrontendError::OverQuota { retry_after, .. }
            | FrontendError::Overloaded { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code; the match stops compiling when a code is added, until it is listed here.
    fn every_code() -> [ErrorCode; 6] {
        let all = [
            ErrorCode::Usage,
            ErrorCode::MultiValued,
            ErrorCode::NotFound,
            ErrorCode::NoData,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ];
        for code in all {
            match code {
                ErrorCode::Usage
                | ErrorCode::MultiValued
                | ErrorCode::NotFound
                | ErrorCode::NoData
                | ErrorCode::Unavailable
                | ErrorCode::Internal => {}
            }
        }
        all
    }

    #[test]
    fn each_job_error_code_has_its_status_and_the_label_of_the_jobs_error_document() {
        let table = [
            (ErrorCode::Usage, StatusCode::BAD_REQUEST),
            (ErrorCode::MultiValued, StatusCode::BAD_REQUEST),
            (ErrorCode::NotFound, StatusCode::NOT_FOUND),
            (ErrorCode::NoData, StatusCode::BAD_REQUEST),
            (ErrorCode::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (ErrorCode::Internal, StatusCode::INTERNAL_SERVER_ERROR),
        ];
        assert_eq!(table.map(|(code, _)| code), every_code());
        for (code, status) in table {
            let error = FrontendError::from_code(code, "it broke".into());
            assert_eq!(error.status(), status, "{code:?}");
            // A synchronous client reads what the job's error document says.
            assert_eq!(error.label(), code.label(), "{code:?}");
            let job_error = JobError::new(code, "it broke");
            let told = FrontendError::from_job_error(&job_error);
            assert_eq!(
                format!("{}: {told}", told.label()),
                job_error.labelled(),
                "{code:?}"
            );
        }
    }

    #[test]
    fn a_science_error_is_answered_with_the_code_a_failed_job_records() {
        let errors = [
            SodaError::Usage("bad CIRCLE".into()),
            SodaError::MultiValued("BAND given twice".into()),
            SodaError::UnknownImage("no such image".into()),
            SodaError::NoOverlap {
                source: "butler://demo/m31".into(),
            },
            SodaError::UnsupportedWcs("AZP".into()),
            SodaError::BadImage("no image HDU".into()),
            SodaError::Fits("disk full".into()),
        ];
        let statuses = [400, 400, 404, 400, 400, 500, 500];
        let labels = [
            "UsageError",
            "MultiValuedParamNotSupported",
            "UsageError",
            "UsageError",
            "UsageError",
            "Error",
            "Error",
        ];
        for ((e, status), label) in errors.into_iter().zip(statuses).zip(labels) {
            let code = e.code();
            let answer = FrontendError::from(e.clone());
            assert_eq!(answer.status().as_u16(), status, "{e:?}");
            assert_eq!(answer.label(), label, "{e:?}");
            assert_eq!(code.label(), label, "{e:?}");
        }
    }
}
