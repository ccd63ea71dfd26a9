//! Finding `nixpack.toml`: like Cargo, walk up from the current directory
//! unless `--manifest-path` names the file.

use std::path::{Path, PathBuf};

use super::ManifestError;

/// The file name nixpack looks for.
pub const MANIFEST_NAME: &str = "nixpack.toml";

/// Returns the manifest path: `explicit` if given (it must be a file), else
/// the first `nixpack.toml` in `start` or one of its ancestors.
pub fn discover(explicit: Option<&Path>, start: &Path) -> Result<PathBuf, ManifestError> {
    if let Some(path) = explicit {
        if path.is_dir() {
            return Err(ManifestError::IsDirectory {
                path: path.to_owned(),
            });
        }
        if !path.exists() {
            return Err(ManifestError::Read {
                path: path.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        return Ok(path.to_owned());
    }
    start
        .ancestors()
        .map(|dir| dir.join(MANIFEST_NAME))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| ManifestError::NotFound {
            start: start.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_up_to_the_nearest_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(dir.path().join("a/nixpack.toml"), "").unwrap();
        assert_eq!(
            discover(None, &deep).unwrap(),
            dir.path().join("a/nixpack.toml")
        );
    }

    #[test]
    fn explicit_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            discover(Some(dir.path()), dir.path()),
            Err(ManifestError::IsDirectory { .. })
        ));
    }
}
