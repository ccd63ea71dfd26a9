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
    let mut tmp = temp_file(scratch)?;
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
///
/// The wait polls `try_lock` instead of blocking a thread in `flock`: a
/// blocked thread cannot be cancelled, and the runtime waits for it on
/// exit, so Ctrl-C would hang until the other process let go.
pub async fn lock_file(path: &Path, waiting: impl FnOnce()) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let mut waiting = Some(waiting);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                if let Some(w) = waiting.take() {
                    w();
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Set once the command is interrupted: no new temporary file is made
/// after it, so the sweep that follows ([`sweep_temporaries`]) is final.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks the command as interrupted (see [`INTERRUPTED`]).
pub fn interrupt() {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn refuse_if_interrupted() -> std::io::Result<()> {
    if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "interrupted",
        ));
    }
    Ok(())
}

/// The name prefix of this process's temporary files and folders: the
/// process id makes them this process's own to sweep, never another
/// nixpack's still being written.
fn temp_prefix() -> String {
    format!(".tmp-nixpack-{}-", std::process::id())
}

/// A temporary file in `dir`, named as this process's (see [`sweep_temporaries`]).
pub fn temp_file(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    refuse_if_interrupted()?;
    tempfile::Builder::new()
        .prefix(&temp_prefix())
        .tempfile_in(dir)
}

/// A temporary folder in `dir`, named as this process's.
pub fn temp_dir(dir: &Path) -> std::io::Result<tempfile::TempDir> {
    refuse_if_interrupted()?;
    tempfile::Builder::new()
        .prefix(&temp_prefix())
        .tempdir_in(dir)
}

/// The name under which a file being unpacked to `target` is written
/// until complete; unique per process and call.
pub fn partial_path(target: &Path) -> std::io::Result<PathBuf> {
    refuse_if_interrupted()?;
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut partial = target.to_owned().into_os_string();
    partial.push(format!(".partial-{}-{seq}", std::process::id()));
    Ok(PathBuf::from(partial))
}

/// Removes, under `dir` (recursively), every temporary file and folder
/// this process made and did not finish: after an interrupt, when the
/// tasks that would have removed them were cut off.
pub fn sweep_temporaries(dir: &Path) {
    let prefix = temp_prefix();
    let partial = format!(".partial-{}-", std::process::id());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if name.starts_with(&prefix) || name.contains(&partial) {
            let _ = if is_dir {
                std::fs::remove_dir_all(e.path())
            } else {
                std::fs::remove_file(e.path())
            };
        } else if is_dir {
            sweep_temporaries(&e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_only_this_process_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("img/layers");
        std::fs::create_dir_all(&sub).unwrap();
        let mine = temp_file(&sub).unwrap().into_temp_path().keep().unwrap();
        let my_dir = temp_dir(dir.path()).unwrap().keep();
        let partial = partial_path(&sub.join("a.tar")).unwrap();
        std::fs::write(&partial, b"half").unwrap();
        let other = sub.join(".tmp-nixpack-1-abc");
        std::fs::write(&other, b"another nixpack's").unwrap();
        let kept = sub.join("a.tar");
        std::fs::write(&kept, b"done").unwrap();
        sweep_temporaries(dir.path());
        assert!(!mine.exists() && !my_dir.exists() && !partial.exists());
        assert!(other.exists() && kept.exists());
    }

    #[tokio::test]
    async fn ctrl_c_while_another_process_holds_the_lock_hangs_regression() {
        // The wait must be cancellable: dropping it (as Ctrl-C does) may
        // leave no thread blocked in flock behind.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock");
        let held = std::fs::File::create(&path).unwrap();
        held.lock().unwrap();
        let waiting = lock_file(&path, || {});
        let r = tokio::time::timeout(std::time::Duration::from_millis(300), waiting).await;
        assert!(r.is_err(), "got the lock another holder has");
        drop(held);
        let got =
            tokio::time::timeout(std::time::Duration::from_secs(2), lock_file(&path, || {})).await;
        assert!(matches!(got, Ok(Ok(_))));
    }

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
