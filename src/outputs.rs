//! `.nixpack/<image>/` beside the manifest: where a build keeps what it
//! made (rendered files, closure.json, graph, layer tarballs, build.log,
//! SBOMs, report). Paths are decided here and nowhere else.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::closure::Closure;
use crate::layers;
use crate::manifest::{Image, Manifest};
use crate::render::LayerEntry;

/// The output folder of the project.
pub fn project_dir(manifest: &Manifest) -> PathBuf {
    manifest.root.join(".nixpack")
}

/// The output folder of one image.
pub fn image_dir(manifest: &Manifest, image: &Image) -> PathBuf {
    project_dir(manifest).join(image.slug())
}

/// Writes `bytes` to `path` through a temporary file in the same folder
/// and a rename, so a reader never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_via(path.parent().unwrap_or(Path::new(".")), path, bytes)
}

/// [`write_atomic`], with the temporary file in `scratch` (same
/// filesystem): for files in the project folder, whose walk must never
/// see a half-written file come and go.
pub fn write_atomic_via(scratch: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(scratch)?;
    let mut tmp = tempfile::NamedTempFile::new_in(scratch)?;
    tmp.write_all(bytes)?;
    // Temporary files are private (0600); outputs are ordinary files.
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Writes `sbom.cdx.json` and `sbom.spdx.json` of `closure` into `dir`,
/// each only when its bytes changed (a pure function of the closure and
/// `epoch`, so an unchanged closure rewrites nothing). Returns how many
/// files were written.
pub fn write_sboms(dir: &Path, closure: &Closure, epoch: u64) -> std::io::Result<usize> {
    let mut written = 0;
    for (file, text) in [
        (
            crate::sbom::CYCLONEDX_FILE,
            crate::sbom::cyclonedx(closure, epoch),
        ),
        (crate::sbom::SPDX_FILE, crate::sbom::spdx(closure, epoch)),
    ] {
        let path = dir.join(file);
        if std::fs::read(&path).ok().as_deref() != Some(text.as_bytes()) {
            write_atomic(&path, text.as_bytes())?;
            written += 1;
        }
    }
    Ok(written)
}

/// Reads `closure.json` from an image folder.
pub fn read_closure(dir: &Path) -> Option<Result<Closure, String>> {
    let text = std::fs::read_to_string(dir.join("closure.json")).ok()?;
    Some(Closure::from_json(&text))
}

/// The layers the scratch Dockerfile would ADD, when a closure is known.
pub fn planned_layers(dir: &Path, image: &Image) -> Option<Vec<LayerEntry>> {
    let closure = read_closure(dir)?.ok()?;
    let plan = layers::plan(&closure, image.layers);
    let conventions = crate::conventions::Conventions::new(&closure, image.conventions);
    Some(layer_entries(&plan, &conventions))
}

/// Dockerfile view of a layer plan plus the conventions layer on top.
pub fn layer_entries(
    plan: &[layers::Layer],
    conventions: &crate::conventions::Conventions,
) -> Vec<LayerEntry> {
    let mut entries: Vec<LayerEntry> = plan
        .iter()
        .map(|l| LayerEntry {
            file: format!("layers/{}", l.file_name()),
            paths: l.paths.len(),
            bytes: l.nar_size,
        })
        .collect();
    if !conventions.is_empty() {
        entries.push(LayerEntry {
            file: format!("layers/{}", conventions.file_name()),
            paths: 0,
            bytes: 0,
        });
    }
    entries
}

/// An exclusive lock on `path` (created if missing), held until the file
/// is dropped: two nixpack processes building the same image, or writing
/// the same nixpack.lock, take turns. `waiting` is called once if another
/// process holds it.
pub async fn lock_file(path: &Path, waiting: impl FnOnce()) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            waiting();
            tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                .await
                .map_err(std::io::Error::other)?
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sboms_are_rewritten_only_when_the_closure_changed() {
        let dir = tempfile::tempdir().unwrap();
        let text = include_str!("../tests/golden/python-closure.json");
        let closure = Closure::from_json(text).unwrap();
        assert_eq!(write_sboms(dir.path(), &closure, 1).unwrap(), 2);
        assert_eq!(
            write_sboms(dir.path(), &closure, 1).unwrap(),
            0,
            "same closure"
        );
        let other =
            Closure::from_json(&text.replace("\"nar_size\": 121304", "\"nar_size\": 121305"))
                .unwrap();
        assert_eq!(write_sboms(dir.path(), &other, 1).unwrap(), 2);
        let cdx = std::fs::read_to_string(dir.path().join(crate::sbom::CYCLONEDX_FILE)).unwrap();
        assert!(cdx.contains("\"value\": \"121305\""));
    }
}
