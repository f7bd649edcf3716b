//! Source images as local files, whether their repository is a directory or a bucket, and the
//! names results are offered under.
//!
//! A bucket image comes through the worker's [`SourceCache`] and stays pinned there while the
//! job cuts it; like a directory repository, a bucket serves `X.fits.fz` for an ID whose
//! `X.fits` object does not exist (cfitsio tells a tile-compressed file by its content, so the
//! cache's file name does not matter).
//!
//! For a cutout of an uncompressed image that is not cached, the [`bucket::RangePolicy`] may
//! instead have `ranged` read only the headers and rows the cutout needs into a sparse copy;
//! the policy sends popular images and large cutouts to the whole download.
//! Failures become job errors a client can act on: a missing object is `NotFound`,
//! a refused credential is fatal (an operator must fix it), an unreachable store is transient.

use std::path::PathBuf;

use bucket::{BucketError, BucketUrl, CachedSource, SourceCache};
use soda::repository::{Repositories, SourceLocation, compressed_name};
use soda::{CutOptions, SodaError, SourceId, Stencil};

use crate::ranged::{self, Ranged, RangedError, SparseCopy, Want};
use uws::queue::DelegatedToken;
use uws::{ErrorCode, JobError};

/// A source file ready to be read; a cached one is pinned until this is dropped.
pub struct SourceFile {
    pub path: PathBuf,
    /// What to call the file in messages: the bucket URL, not the cache's file name.
    pub label: Option<String>,
    /// Store requests made and bytes received to open it (0 for local files and plain cache
    /// hits).
    pub requests: u64,
    pub fetched_bytes: u64,
    _pin: Option<CachedSource>,
    _copy: Option<SparseCopy>,
}

impl SourceFile {
    /// Names the bucket object in an error about the file, since the cache path means nothing
    /// to the client.
    pub fn explain(&self, mut error: JobError) -> JobError {
        if let Some(label) = &self.label {
            error.message = format!("{} (source {label})", error.message);
        }
        error
    }
}

/// Where one job's source images come from, and as whom they are read.
pub struct JobSources<'a> {
    pub repositories: &'a Repositories,
    /// Where bucket images are kept; None when every repository is local.
    pub cache: Option<&'a SourceCache>,
    /// The job owner's delegated credential: image servers are read as its holder.
    pub token: Option<&'a DelegatedToken>,
}

impl JobSources<'_> {
    /// The local file for `id`, fetched into the cache first when its repository is a bucket
    /// or an image server; with the `cut` it is opened for, possibly a sparse copy holding
    /// only what that cutout reads.
    pub async fn open(
        &self,
        id: &SourceId,
        cut: Option<(&Stencil, &CutOptions)>,
        science_error: impl Fn(SodaError) -> JobError,
    ) -> Result<SourceFile, JobError> {
        match self.repositories.locate(id).map_err(&science_error)? {
            SourceLocation::File(path) => Ok(SourceFile {
                path,
                label: None,
                requests: 0,
                fetched_bytes: 0,
                _pin: None,
                _copy: None,
            }),
            SourceLocation::Bucket { repository, name } => {
                let cache = self.cache.ok_or_else(|| {
                    JobError::new(
                        ErrorCode::Internal,
                        format!("image {id} is in a bucket but this worker has no source cache"),
                    )
                })?;
                let per_reader = BucketUrl::parse(&repository)
                    .map(|b| b.scheme.checks_each_reader())
                    .unwrap_or(false);
                let token = self.token.map(DelegatedToken::secret);
                let failed = |e| fetch_error(id, e, per_reader);
                let label = format!("{}/{name}", repository.trim_end_matches('/'));
                let policy = cache.range_policy();
                if let Some((stencil, options)) = cut
                    && policy.enabled
                    && !name.ends_with(".fz")
                {
                    if let Some(pin) = cache
                        .cached_as(&repository, &name, token)
                        .await
                        .map_err(failed)?
                    {
                        record_requests("cached", pin.requests());
                        return Ok(SourceFile {
                            path: pin.path().to_path_buf(),
                            label: Some(label),
                            requests: pin.requests(),
                            fetched_bytes: 0,
                            _pin: Some(pin),
                            _copy: None,
                        });
                    }
                    let want = Want {
                        stencil,
                        options,
                        source_id: &id.to_string(),
                    };
                    match ranged::read(cache, &repository, &name, token, &want).await {
                        Ok(Ranged::Read(copy)) => {
                            record_requests("range", copy.requests);
                            tracing::debug!(
                                image = %label,
                                requests = copy.requests,
                                bytes = copy.bytes,
                                "source read by ranges"
                            );
                            return Ok(SourceFile {
                                path: copy.path.clone(),
                                label: Some(label),
                                requests: copy.requests,
                                fetched_bytes: copy.bytes,
                                _pin: None,
                                _copy: Some(copy),
                            });
                        }
                        Ok(Ranged::Whole(reason)) => {
                            tracing::debug!(image = %label, %reason, "source downloaded whole");
                        }
                        // The whole-file path looks for the `.fz` twin and names both.
                        Err(RangedError::Bucket(BucketError::NotFound(_))) => {}
                        Err(RangedError::Bucket(e)) => return Err(failed(e)),
                        Err(RangedError::Science(e)) => {
                            return Err(science_error(e));
                        }
                    }
                }
                let (pin, name) = match cache.fetch_as(&repository, &name, token).await {
                    Ok(pin) => (pin, name),
                    Err(BucketError::NotFound(url)) => {
                        let compressed = compressed_name(&name);
                        match cache.fetch_as(&repository, &compressed, token).await {
                            Ok(pin) => (pin, compressed),
                            // Name the object the ID is documented to mean, and its twin.
                            Err(BucketError::NotFound(_)) => {
                                return Err(failed(BucketError::NotFound(format!(
                                    "{url} (nor {})",
                                    compressed_name(&url)
                                ))));
                            }
                            Err(e) => return Err(failed(e)),
                        }
                    }
                    Err(e) => return Err(failed(e)),
                };
                record_requests("whole", pin.requests());
                Ok(SourceFile {
                    path: pin.path().to_path_buf(),
                    label: Some(format!("{}/{name}", repository.trim_end_matches('/'))),
                    requests: pin.requests(),
                    fetched_bytes: pin.fetched_bytes(),
                    _pin: Some(pin),
                    _copy: None,
                })
            }
        }
    }
}

/// Store requests one cutout's source took, by how it was read: `range`, `whole` (a download,
/// or a hit of the whole-file path), `cached` (a hit found before any ranged read).
fn record_requests(path: &'static str, requests: u64) {
    metrics::histogram!("skycut_source_requests_per_cutout", "path" => path)
        .record(requests as f64);
}

fn fetch_error(id: &SourceId, e: BucketError, per_reader: bool) -> JobError {
    match e {
        BucketError::NotFound(url) => JobError::new(
            ErrorCode::NotFound,
            format!("image {id} is unknown: no {url}"),
        ),
        // An image server refusing this user is the user's answer, not an operator's problem;
        // it reads like a missing image so that protected images cannot be probed.
        BucketError::PermissionDenied { .. } if per_reader => JobError::new(
            ErrorCode::NotFound,
            format!("image {id} is unknown or your credentials may not read it"),
        ),
        BucketError::PermissionDenied { .. } | BucketError::Config(_) => {
            JobError::new(ErrorCode::Internal, format!("cannot read image {id}: {e}"))
        }
        BucketError::Unavailable { .. } | BucketError::Changed(_) | BucketError::Io { .. } => {
            JobError::new(
                ErrorCode::Unavailable,
                format!("cannot read image {id} now: {e}"),
            )
        }
    }
}

/// `{image}_{stencil}.fits`, with the stencil made safe for a file name, so a downloaded file
/// says what it holds: `m31_circle-10.684708-41.26875-0.0178.fits`.
pub fn result_filename(id: &SourceId, stencil: &str) -> String {
    let mut slug = String::new();
    for c in stencil.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    format!("{}_{slug}.fits", id.image())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_filenames_name_image_and_stencil() {
        let id = SourceId::parse("butler://demo/m31").expect("id");
        assert_eq!(
            result_filename(&id, "CIRCLE 10.684708 41.26875 0.0178"),
            "m31_circle-10.684708-41.26875-0.0178.fits"
        );
        assert_eq!(
            result_filename(&id, "POLYGON 1 2, 3 -4, 5 6"),
            "m31_polygon-1-2-3-4-5-6.fits"
        );
    }
}
