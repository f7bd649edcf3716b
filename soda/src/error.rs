//! The one error type of the crate, split by who is to blame, so that callers can pick a DALI
//! error label (UsageError, 204 No Content, Error) without inspecting messages:
//! [`SodaError::code`] is that choice, made once.
//!
//! `Display` and `Error` are written by hand rather than derived with thiserror, because
//! thiserror treats any field named `source` as the error's cause, and the agreed API has a
//! `NoOverlap { source: String }` variant.

use std::fmt;

use uws::ErrorCode;

/// Everything that can go wrong while parsing a request or cutting an image.
#[derive(Debug, Clone, PartialEq)]
pub enum SodaError {
    /// Bad user input; the message carries no "UsageError:" label, the caller adds it.
    Usage(String),
    /// A parameter given more often than this service supports (DALI
    /// `MultiValuedParamNotSupported`); the message carries no label.
    MultiValued(String),
    /// The `ID` names no image that a repository holds (HTTP 404).
    UnknownImage(String),
    /// The stencil does not overlap the image at all (SODA: sync answers 204, async an error).
    NoOverlap {
        /// The image that was asked for: its ID when the caller gave one, else its path.
        source: String,
    },
    /// The image's celestial WCS names a projection, distortion or keyword value that Skycut
    /// cannot map (the message names it): the request cannot be served on this image, which is
    /// said rather than answered with "no data" (DALI UsageError).
    UnsupportedWcs(String),
    /// The file is not a usable image (no image HDU, no celestial WCS, unsupported BITPIX...).
    BadImage(String),
    /// cfitsio or I/O failure: a server-side problem, not the user's.
    Fits(String),
}

impl SodaError {
    pub(crate) fn usage(message: impl Into<String>) -> SodaError {
        SodaError::Usage(message.into())
    }

    /// Who is to blame, in the DALI vocabulary of a failed job; the one mapping of a science
    /// error, used alike for a request the frontend refuses and for a job that fails, so that
    /// the sync and async answers agree.
    pub fn code(&self) -> ErrorCode {
        match self {
            SodaError::Usage(_) | SodaError::UnsupportedWcs(_) => ErrorCode::Usage,
            SodaError::MultiValued(_) => ErrorCode::MultiValued,
            SodaError::UnknownImage(_) => ErrorCode::NotFound,
            SodaError::NoOverlap { .. } => ErrorCode::NoData,
            SodaError::BadImage(_) | SodaError::Fits(_) => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for SodaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SodaError::Usage(message)
            | SodaError::MultiValued(message)
            | SodaError::UnknownImage(message) => f.write_str(message),
            SodaError::NoOverlap { source } => {
                write!(f, "stencil does not overlap image {source}")
            }
            SodaError::UnsupportedWcs(message) => {
                write!(f, "image WCS not supported: {message}")
            }
            SodaError::BadImage(message) => write!(f, "unusable image: {message}"),
            SodaError::Fits(message) => write!(f, "FITS I/O failed: {message}"),
        }
    }
}

impl std::error::Error for SodaError {}

impl From<fitsio::errors::Error> for SodaError {
    fn from(error: fitsio::errors::Error) -> SodaError {
        SodaError::Fits(error.to_string())
    }
}

impl From<std::io::Error> for SodaError {
    fn from(error: std::io::Error) -> SodaError {
        SodaError::Fits(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_the_code_of_whom_it_blames() {
        let cases = [
            (SodaError::Usage("bad CIRCLE".into()), ErrorCode::Usage),
            (
                SodaError::MultiValued("two BANDs".into()),
                ErrorCode::MultiValued,
            ),
            (
                SodaError::UnknownImage("no m32".into()),
                ErrorCode::NotFound,
            ),
            (
                SodaError::NoOverlap {
                    source: "butler://demo/m31".into(),
                },
                ErrorCode::NoData,
            ),
            (SodaError::UnsupportedWcs("AZP".into()), ErrorCode::Usage),
            (
                SodaError::BadImage("no image HDU".into()),
                ErrorCode::Internal,
            ),
            (SodaError::Fits("disk full".into()), ErrorCode::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error:?}");
        }
    }
}
