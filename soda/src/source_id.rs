//! The `ID` of a SODA request, parsed once so that nothing downstream can be handed a path
//! traversal or a name that does not map to exactly one file in one repository.

use std::fmt;

use crate::SodaError;

const SCHEME: &str = "butler://";

/// What comes between the image name and the extension name in an ID.
const EXTENSION_QUERY: &str = "?ext=";

/// Longest `ID` accepted, in bytes: IDs are echoed in errors, stored with the job and become
/// file and object names.
pub const MAX_ID_LEN: usize = 256;

/// `butler://<repository>/<image>`, optionally `?ext=<EXTNAME>` to choose the image extension
/// of a multi-extension file; all names match `[A-Za-z0-9][A-Za-z0-9._-]*`.
///
/// Because neither name may start with a dot or contain a slash, `image` is always a plain
/// file name inside the repository directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceId {
    repository: String,
    image: String,
    extension: Option<String>,
}

impl SourceId {
    /// Parses an `ID` parameter value.
    pub fn parse(s: &str) -> Result<SourceId, SodaError> {
        if s.len() > MAX_ID_LEN {
            return Err(SodaError::usage(format!(
                "ID is {} bytes long; at most {MAX_ID_LEN}",
                s.len()
            )));
        }
        let malformed = || {
            SodaError::usage(format!(
                "malformed ID {s:?}: expected butler://<repository>/<image>"
            ))
        };
        let rest = s.strip_prefix(SCHEME).ok_or_else(malformed)?;
        let (repository, rest) = rest.split_once('/').ok_or_else(malformed)?;
        let (image, extension) = match rest.split_once('?') {
            None => (rest, None),
            Some((image, query)) => {
                let name = query.strip_prefix(&EXTENSION_QUERY[1..]).ok_or_else(|| {
                    SodaError::usage(format!(
                        "malformed ID {s:?}: the only query an ID may have is ?ext=<EXTNAME>"
                    ))
                })?;
                if !is_name(name) {
                    return Err(SodaError::usage(format!(
                        "malformed ID {s:?}: {name:?} is not an extension name"
                    )));
                }
                (image, Some(name.to_owned()))
            }
        };
        if !is_name(repository) || !is_name(image) {
            return Err(malformed());
        }
        Ok(SourceId {
            repository: repository.to_owned(),
            image: image.to_owned(),
            extension,
        })
    }

    /// The repository name, which configuration maps to a directory or bucket prefix.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The image name inside the repository.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The `EXTNAME` of the HDU to cut, if the ID names one; otherwise the primary HDU or, when
    /// that is empty, the first image extension.
    pub fn extension(&self) -> Option<&str> {
        self.extension.as_deref()
    }

    /// The FITS file name of the image inside its repository.
    pub fn file_name(&self) -> String {
        format!("{}.fits", self.image)
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.repository, self.image)?;
        match &self.extension {
            Some(name) => write!(f, "{EXTENSION_QUERY}{name}"),
            None => Ok(()),
        }
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<(&str, &str), ()>) {
        match (SourceId::parse(input), expected) {
            (Ok(id), Ok((repository, image))) => {
                assert_eq!(
                    (id.repository(), id.image()),
                    (repository, image),
                    "{input}"
                );
                assert_eq!(id.to_string(), input);
                assert_eq!(id.file_name(), format!("{image}.fits"));
            }
            (Err(SodaError::Usage(message)), Err(())) => {
                assert!(message.starts_with("malformed ID"), "{message}");
                assert!(
                    message.contains("butler://<repository>/<image>"),
                    "{message}"
                );
            }
            (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn good_ids_split_into_repository_and_image() {
        check("butler://demo/m31", Ok(("demo", "m31")));
        check(
            "butler://dp1/3f2a9c1e-0b7d-4d4e-9a51-8c1f1b2d3e4f",
            Ok(("dp1", "3f2a9c1e-0b7d-4d4e-9a51-8c1f1b2d3e4f")),
        );
        check("butler://Demo_2/calexp.r.v1", Ok(("Demo_2", "calexp.r.v1")));
    }

    #[test]
    fn an_id_may_name_an_extension_and_nothing_else() {
        let id = SourceId::parse("butler://demo/mef?ext=SCI").expect("id");
        assert_eq!((id.image(), id.extension()), ("mef", Some("SCI")));
        assert_eq!(id.file_name(), "mef.fits");
        assert_eq!(id.to_string(), "butler://demo/mef?ext=SCI");
        assert_eq!(
            SourceId::parse("butler://demo/mef")
                .expect("id")
                .extension(),
            None
        );
        for bad in [
            "butler://demo/mef?ext=",
            "butler://demo/mef?ext=../x",
            "butler://demo/mef?hdu=1",
            "butler://demo/?ext=SCI",
            "butler://demo/mef?ext=SCI?ext=VAR",
        ] {
            assert!(
                matches!(SourceId::parse(bad), Err(SodaError::Usage(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn ids_longer_than_the_maximum_are_rejected_without_echoing_them() {
        let fits = format!("butler://demo/{}", "x".repeat(MAX_ID_LEN - 14));
        assert!(SourceId::parse(&fits).is_ok());
        let long = format!("{fits}y");
        let e = SourceId::parse(&long).expect_err("too long");
        assert_eq!(e.to_string(), "ID is 257 bytes long; at most 256");
    }

    #[test]
    fn path_traversal_is_rejected() {
        check("butler://demo/../x", Err(()));
        check("butler://demo/..", Err(()));
        check("butler://../demo/x", Err(()));
        check("butler://demo/.hidden", Err(()));
        check("butler://demo/a/b", Err(()));
        check("butler://demo/a\\b", Err(()));
    }

    #[test]
    fn empty_and_incomplete_ids_are_rejected() {
        check("", Err(()));
        check("butler://", Err(()));
        check("butler://demo", Err(()));
        check("butler://demo/", Err(()));
        check("butler:///x", Err(()));
        check("butler://demo/x ", Err(()));
    }

    #[test]
    fn other_schemes_are_rejected() {
        check("ivo://demo/x", Err(()));
        check("BUTLER://demo/x", Err(()));
        check("file:///etc/passwd", Err(()));
        check("demo/x", Err(()));
    }
}
