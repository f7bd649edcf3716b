//! Image repositories: where the file that an `ID` names lives.
//!
//! A repository is a name and a directory; `butler://NAME/X` is the file `X.fits` in NAME's
//! directory. [`SourceId`] already guarantees that X cannot climb out of the directory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::SodaError;
use crate::source_id::SourceId;

/// The repositories a deployment serves, by name.
#[derive(Debug, Clone, Default)]
pub struct Repositories {
    dirs: BTreeMap<String, PathBuf>,
}

impl Repositories {
    pub fn new(dirs: impl IntoIterator<Item = (String, PathBuf)>) -> Repositories {
        Repositories {
            dirs: dirs.into_iter().collect(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &PathBuf)> {
        self.dirs.iter().map(|(n, d)| (n.as_str(), d))
    }

    /// The file an ID names, if the repository is known and the file exists.
    pub fn resolve(&self, id: &SourceId) -> Result<PathBuf, SodaError> {
        let dir = self.dirs.get(id.repository()).ok_or_else(|| {
            SodaError::UnknownImage(format!(
                "image {id} is unknown: no repository {:?}",
                id.repository()
            ))
        })?;
        let path = dir.join(id.file_name());
        if path.is_file() {
            Ok(path)
        } else {
            Err(SodaError::UnknownImage(format!("image {id} is unknown")))
        }
    }
}
