//! Image repositories: where the file that an `ID` names lives.
//!
//! A repository is a name and a directory; `butler://NAME/X` is the file `X.fits` in NAME's
//! directory, or, when there is none, the tile-compressed `X.fits.fz` (cfitsio reads sections
//! of it through the same calls, decompressing only the tiles a cutout touches). [`SourceId`]
//! already guarantees that X cannot climb out of the directory.
//!
//! A repository may also be a bucket prefix (`s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`) or an
//! image server (`https://HOST/PREFIX`, read with the job owner's delegated token): then the ID
//! names the object `PREFIX/X.fits`, or, when there is none, `PREFIX/X.fits.fz`
//! ([`compressed_name`]), which the worker fetches through its source cache. This crate only
//! tells them apart; it never opens a connection.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::SodaError;
use crate::source_id::SourceId;

/// What `fpack` appends to the name of the file it compresses.
const COMPRESSED_SUFFIX: &str = ".fz";

/// The name of the tile-compressed twin of the image file `name` (`X.fits` → `X.fits.fz`),
/// which serves an ID when `name` itself does not exist, in a directory or a bucket.
pub fn compressed_name(name: &str) -> String {
    format!("{name}{COMPRESSED_SUFFIX}")
}

/// The repositories a deployment serves, by name.
#[derive(Debug, Clone, Default)]
pub struct Repositories {
    dirs: BTreeMap<String, PathBuf>,
    /// Repositories in buckets: name → `s3://…`, `gs://…` or `http(s)://…` prefix.
    buckets: BTreeMap<String, String>,
    /// Serve a file whose symbolic links lead outside its repository directory.
    follow_symlinks_out: bool,
}

/// Where the file an ID names lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceLocation {
    /// A local file that exists.
    File(PathBuf),
    /// The object `name` under the bucket prefix `repository` (else its
    /// [`compressed_name`]); not checked here.
    Bucket { repository: String, name: String },
}

/// Whether a configured repository location is a bucket prefix rather than a directory.
pub fn is_bucket_location(location: &str) -> bool {
    ["s3://", "gs://", "http://", "https://"]
        .iter()
        .any(|scheme| location.starts_with(scheme))
}

impl Repositories {
    pub fn new(dirs: impl IntoIterator<Item = (String, PathBuf)>) -> Repositories {
        let mut repositories = Repositories::default();
        for (name, location) in dirs {
            match location.to_str() {
                Some(url) if is_bucket_location(url) => {
                    repositories.buckets.insert(name, url.to_owned());
                }
                _ => {
                    repositories.dirs.insert(name, location);
                }
            }
        }
        repositories
    }

    /// Lets an image be a symbolic link to a file outside its repository directory (refused
    /// by default, so that a link planted in a repository cannot expose any file the process
    /// may read).
    pub fn following_symlinks_out(mut self, follow: bool) -> Repositories {
        self.follow_symlinks_out = follow;
        self
    }

    /// Where the image an ID names lives: a local file (which must exist) or a bucket object
    /// (whose existence only the fetch can tell).
    pub fn locate(&self, id: &SourceId) -> Result<SourceLocation, SodaError> {
        if let Some(url) = self.buckets.get(id.repository()) {
            return Ok(SourceLocation::Bucket {
                repository: url.clone(),
                name: id.file_name(),
            });
        }
        self.resolve(id).map(SourceLocation::File)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &PathBuf)> {
        self.dirs.iter().map(|(n, d)| (n.as_str(), d))
    }

    /// The file an ID names, if its repository is a known directory and the file exists.
    pub fn resolve(&self, id: &SourceId) -> Result<PathBuf, SodaError> {
        let dir = self.dirs.get(id.repository()).ok_or_else(|| {
            SodaError::UnknownImage(format!(
                "image {id} is unknown: no repository {:?}",
                id.repository()
            ))
        })?;
        let plain = dir.join(id.file_name());
        let compressed = dir.join(compressed_name(&id.file_name()));
        let path = [plain, compressed]
            .into_iter()
            .find(|path| path.is_file())
            .ok_or_else(|| SodaError::UnknownImage(format!("image {id} is unknown")))?;
        if !self.follow_symlinks_out {
            // Where the links lead, compared with where the repository itself is; a file
            // outside is reported exactly as a missing one.
            let inside = match (path.canonicalize(), dir.canonicalize()) {
                (Ok(real), Ok(root)) => real.starts_with(root),
                _ => false,
            };
            if !inside {
                return Err(SodaError::UnknownImage(format!("image {id} is unknown")));
            }
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn symbolic_links_out_of_a_repository_are_refused_unless_allowed() {
        let base = std::env::temp_dir().join(format!("skycut-links-{}", std::process::id()));
        let repo = base.join("repo");
        let outside = base.join("outside");
        std::fs::create_dir_all(&repo).expect("repo");
        std::fs::create_dir_all(&outside).expect("outside");
        std::fs::write(outside.join("secret.fits"), b"x").expect("outside file");
        std::fs::write(repo.join("real.fits"), b"x").expect("inside file");
        std::os::unix::fs::symlink(outside.join("secret.fits"), repo.join("leak.fits"))
            .expect("link out");
        std::os::unix::fs::symlink(repo.join("real.fits"), repo.join("alias.fits"))
            .expect("link in");
        let repositories = Repositories::new([("r".to_owned(), repo.clone())]);
        let id = |name: &str| SourceId::parse(&format!("butler://r/{name}")).expect("id");
        assert!(repositories.resolve(&id("real")).is_ok());
        assert!(repositories.resolve(&id("alias")).is_ok(), "a link inside");
        assert!(matches!(
            repositories.resolve(&id("leak")),
            Err(SodaError::UnknownImage(_))
        ));
        let open = repositories.following_symlinks_out(true);
        assert!(open.resolve(&id("leak")).is_ok());
        std::fs::remove_dir_all(&base).ok();
    }

    #[test]
    fn bucket_repositories_locate_objects_without_touching_them() {
        let dir = std::env::temp_dir();
        let repositories = Repositories::new([
            ("wide".to_owned(), PathBuf::from("s3://survey/wide/v2")),
            ("local".to_owned(), dir.clone()),
        ]);
        let id = SourceId::parse("butler://wide/tile-42").expect("id");
        assert_eq!(
            repositories.locate(&id).expect("located"),
            SourceLocation::Bucket {
                repository: "s3://survey/wide/v2".into(),
                name: "tile-42.fits".into(),
            }
        );
        // A bucket repository is no directory: resolve refuses it, and the directory list omits it.
        assert!(repositories.resolve(&id).is_err());
        assert_eq!(
            repositories.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            ["local"]
        );
        let missing = SourceId::parse("butler://local/no-such-image-8c1f").expect("id");
        assert!(matches!(
            repositories.locate(&missing),
            Err(SodaError::UnknownImage(_))
        ));
    }

    #[test]
    fn an_id_names_the_fits_file_or_else_its_compressed_twin() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("both.fits"), b"").expect("write");
        std::fs::write(dir.path().join("both.fits.fz"), b"").expect("write");
        std::fs::write(dir.path().join("packed.fits.fz"), b"").expect("write");
        let repositories = Repositories::new([("r".to_owned(), dir.path().to_owned())]);
        let resolve = |image: &str| {
            let id = SourceId::parse(&format!("butler://r/{image}")).expect("id");
            repositories.resolve(&id)
        };
        assert_eq!(resolve("both"), Ok(dir.path().join("both.fits")));
        assert_eq!(resolve("packed"), Ok(dir.path().join("packed.fits.fz")));
        assert!(matches!(resolve("none"), Err(SodaError::UnknownImage(_))));
    }
}
