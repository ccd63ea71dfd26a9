//! Stage `layers`: one deterministic tarball per planned layer.
//!
//! Reads `closure.json` and `layers = N`; writes `layers/<file>.tar` in
//! `.nixpack/<image>/`. A layer file is named by the content key of its
//! store paths and their NAR hashes (see [`crate::layers`]), so only layers
//! whose content changed are written; when none did, no container starts.
//! The builder only streams NARs; nixpack writes every tarball itself
//! ([`crate::layer_tar`]), the conventions layer too. Files no longer in
//! the plan are removed.
//!
//! [`prepare`] plans; [`produce`] writes, marking each finished file in a
//! [`Ready`], so the image stage can load the image while later layers are
//! still arriving.

use std::collections::BTreeSet;
use std::path::Path;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use super::runner::Backend;
use super::{source_date_epoch, Ctx};
use crate::closure::{Closure, PathInfo, StorePath};
use crate::conventions::Conventions;
use crate::error::Error;
use crate::layer_tar::LayerTar;
use crate::layers::{self, Layer};
use crate::manifest::Image;

/// The planned layers and what is still to be written.
pub struct Layers {
    /// Closure layers, bottom first.
    pub plan: Vec<Layer>,
    /// The conventions layer (possibly empty; always on disk).
    pub conventions: Conventions,
    /// Files of the closure layers not on disk yet, in plan order.
    pub missing: Vec<String>,
    layers_dir: std::path::PathBuf,
}

/// Plans the layers, writes the conventions layer, forgets layer files the
/// plan no longer uses (and any left half-written), and lists the closure
/// layers still to be written. The caller holds the image folder's lock.
pub fn prepare(image: &Image, dir: &Path, closure: &Closure) -> Result<Layers, Error> {
    let layers_dir = dir.join("layers");
    let epoch = source_date_epoch();
    // Tarballs made with another mtime are other bytes: start over.
    let epoch_file = layers_dir.join(".mtime");
    if std::fs::read_to_string(&epoch_file)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        != Some(epoch)
    {
        let _ = std::fs::remove_dir_all(&layers_dir);
    }
    std::fs::create_dir_all(&layers_dir)
        .map_err(|e| Error::internal("creating the layers folder", e))?;
    crate::outputs::write_atomic(&epoch_file, epoch.to_string().as_bytes())
        .map_err(|e| Error::internal("writing layers/.mtime", e))?;

    let plan = layers::plan(closure, image.layers);
    let conventions = Conventions::new(closure, image.conventions);
    if !conventions.is_empty() {
        let path = layers_dir.join(conventions.file_name());
        if !path.is_file() {
            let mut bytes = Vec::new();
            conventions
                .write_tar(&mut bytes, epoch)
                .map_err(|e| Error::internal("writing the conventions layer", e))?;
            crate::outputs::write_atomic(&path, &bytes)
                .map_err(|e| Error::internal("writing the conventions layer", e))?;
        }
    }
    // Keep the folder to what the plan uses.
    let keep: BTreeSet<String> = plan
        .iter()
        .map(Layer::file_name)
        .chain((!conventions.is_empty()).then(|| conventions.file_name()))
        .chain([".mtime".to_owned()])
        .collect();
    if let Ok(entries) = std::fs::read_dir(&layers_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // `<file>.tar` keeps its sidecars and compressed blobs
            // (`.diffid`, `.gz`, `.gz.json`, …).
            let base = match name.find(".tar.") {
                Some(i) => &name[..i + ".tar".len()],
                None => &name,
            };
            // Callers hold the image's lock: a `.tmp…` file is a layer
            // left half-written by an interrupted run.
            if !keep.contains(base) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let missing: Vec<String> = plan
        .iter()
        .map(Layer::file_name)
        .filter(|f| !layers_dir.join(f).is_file())
        .collect();
    // The picture shows the plan: draw it when the plan may have changed.
    let picture = dir.join("graph.svg");
    let stamp = dir.join("graph.svg.key");
    let plan_key = super::key(&plan.iter().map(|l| l.key().as_bytes()).collect::<Vec<_>>());
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(plan_key.as_str())
        || !picture.is_file()
    {
        crate::outputs::write_atomic(&picture, crate::picture::svg(closure, &plan).as_bytes())
            .map_err(|e| Error::internal("writing graph.svg", e))?;
        crate::outputs::write_atomic(&stamp, plan_key.as_bytes())
            .map_err(|e| Error::internal("writing graph.svg.key", e))?;
    }
    Ok(Layers {
        plan,
        conventions,
        missing,
        layers_dir,
    })
}

/// Which layer files are complete, for a reader that streams them while
/// they are still being written (the image stage).
#[derive(Default)]
pub struct Ready {
    state: std::sync::Mutex<ReadyState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct ReadyState {
    done: BTreeSet<String>,
    /// No more layers will come (the producer finished, failed or was
    /// dropped by Ctrl-C).
    closed: bool,
}

impl Ready {
    fn mark(&self, name: &str) {
        self.state
            .lock()
            .expect("ready lock")
            .done
            .insert(name.to_owned());
        self.changed.notify_all();
    }

    /// Wakes every waiter: what is not complete now never will be.
    pub fn close(&self) {
        self.state.lock().expect("ready lock").closed = true;
        self.changed.notify_all();
    }

    /// Whether `path` is complete now (it never blocks).
    pub fn is_done(&self, path: &Path) -> bool {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.state.lock().expect("ready lock").done.contains(&name) || path.is_file()
    }

    /// Blocks until `path` is complete (at once if it is on disk); an error
    /// once the producer has closed without writing it.
    pub fn wait(&self, path: &Path) -> std::io::Result<()> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut state = self.state.lock().expect("ready lock");
        loop {
            if state.done.contains(&name) || path.is_file() {
                return Ok(());
            }
            if state.closed {
                return Err(std::io::Error::other(format!(
                    "the layer {name} was not written"
                )));
            }
            state = self.changed.wait(state).expect("ready lock");
        }
    }
}

/// Closes a [`Ready`] however `produce` ends — also when its future is
/// dropped on Ctrl-C, so a waiting image stage never hangs.
struct CloseOnDrop<'a>(&'a Ready);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Writes the missing layer tarballs: one builder container streams the
/// NARs of their store paths (`nix-store --serve`), in plan order, and
/// nixpack turns them into tarballs, checking every NAR hash. Each layer is
/// marked in `ready` as it completes. Returns how many were written.
/// Whatever happens, `ready` is closed; layers completed before a failure
/// are verified and kept.
pub async fn produce(
    ctx: &Ctx<'_>,
    backend: &Backend,
    image: &Image,
    closure: &Closure,
    layers: &Layers,
    ready: &Arc<Ready>,
) -> Result<usize, Error> {
    let _close = CloseOnDrop(ready);
    if layers.missing.is_empty() {
        return Ok(0);
    }
    let name = image.name.to_string();
    let todo: Vec<(String, Vec<PathInfo>)> = layers
        .plan
        .iter()
        .filter(|l| layers.missing.contains(&l.file_name()))
        .map(|l| {
            let infos = l.paths.iter().map(|p| closure.paths[p].clone()).collect();
            (l.file_name(), infos)
        })
        .collect();
    let total: u64 = todo
        .iter()
        .flat_map(|(_, ps)| ps.iter().map(|p| p.nar_size))
        .sum();
    let stage = Arc::new(ctx.ui.stage(
        &name,
        &format!(
            "writing {} of {} layers ({})",
            todo.len(),
            layers.plan.len(),
            super::nix::human_bytes(total)
        ),
    ));
    let request: Vec<&StorePath> = todo
        .iter()
        .flat_map(|(_, ps)| ps.iter().map(|p| &p.path))
        .collect();
    let request = crate::nar::serve_dump_request(&request);
    let dir = layers
        .layers_dir
        .parent()
        .expect("the layers folder is in the image folder")
        .to_owned();

    // The container's stdout flows through a bounded channel into a
    // blocking thread that writes the tarballs: the engine's stream waits
    // when the disk is slower, and nothing is held in memory.
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    let writer = {
        let (dir, ready, stage) = (layers.layers_dir.clone(), ready.clone(), stage.clone());
        let epoch = source_date_epoch();
        tokio::task::spawn_blocking(move || {
            let progress = |done: u64| {
                stage.message(&format!(
                    "{} of {}",
                    super::nix::human_bytes(done),
                    super::nix::human_bytes(total)
                ))
            };
            write_layers(ChannelReader::new(rx), &dir, &todo, epoch, &ready, progress)
        })
    };
    let mut tail = Vec::new();
    let run = backend.dump(ctx, &name, &dir, request, tx, |l| {
        stage.message(l);
        tail.push(l.to_owned());
        if tail.len() > 15 {
            tail.remove(0);
        }
    });
    let (run, written) = tokio::join!(run, writer);
    let written = written.map_err(|e| Error::internal("writing layers", e))?;
    // What went wrong first explains the rest: a corrupted path (the
    // writer stopped reading), then a failed container (the stream ended
    // early), then the engine.
    let data_error = matches!(&written, Err(e) if !is_cut_short(e));
    match (run, written) {
        (_, Err(e)) if data_error => Err(layer_error(ctx, &name, backend, e)),
        (Ok(code), _) if code != 0 => Err(Error::msg(
            format!(
                "writing layers for `{name}` failed: the entrypoint exited with {code}:\n    {}",
                tail.join("\n    ")
            ),
            format!(
                "{} must still hold every store path of the closure, and Nix must have `nix-store --serve`{}",
                backend.store_name(),
                super::entrypoint_note(ctx)
            ),
        )),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(layer_error(ctx, &name, backend, e)),
        (Ok(_), Ok(done)) => {
            if let Ok(stage) = Arc::try_unwrap(stage) {
                stage.done("written");
            }
            Ok(done.len())
        }
    }
}

/// The stream ended or broke: a symptom, never the cause.
fn is_cut_short(e: &crate::nar::NarError) -> bool {
    matches!(e, crate::nar::NarError::Io(io) if matches!(io.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::BrokenPipe))
}

fn layer_error(ctx: &Ctx<'_>, name: &str, backend: &Backend, e: crate::nar::NarError) -> Error {
    match e {
        crate::nar::NarError::HashMismatch { .. } | crate::nar::NarError::SizeMismatch { .. } => {
            let fix = match backend {
                Backend::Docker { store, .. } => format!(
                    "remove the volume (`docker volume rm {}`) to rebuild the store, or repair the path with `nix-store --repair-path` in the builder",
                    store.name
                ),
                Backend::Host { .. } => "repair the path with `nix-store --repair-path PATH`".to_owned(),
            };
            Error::msg(
                format!("writing layers for `{name}`: {e}"),
                format!(
                    "{} holds a store path whose bytes are not what Nix recorded; {fix}; nothing was tagged",
                    backend.store_name()
                ),
            )
        }
        e => Error::internal(
            &format!("writing layers for `{name}`"),
            format!("{e}{}", super::entrypoint_note(ctx)),
        ),
    }
}

/// Reads `nix-store --serve`'s answer — its greeting, then the NARs of
/// every path of `todo`, back to back, in order — and writes each layer of
/// `todo` as `<dir>/<file>` (under a temporary name until complete, with
/// its DiffID in `<file>.diffid`), marking it in `ready`.
pub fn write_layers(
    stream: impl Read,
    dir: &Path,
    todo: &[(String, Vec<PathInfo>)],
    epoch: u64,
    ready: &Ready,
    progress: impl Fn(u64),
) -> Result<Vec<String>, crate::nar::NarError> {
    let mut stream = std::io::BufReader::with_capacity(1 << 20, stream);
    crate::nar::read_serve_hello(&mut stream)?;
    let mut done = Vec::new();
    let mut bytes = 0;
    for (file, paths) in todo {
        let tmp = crate::outputs::temp_file(dir)?;
        let mut tar = LayerTar::new(std::io::BufWriter::with_capacity(1 << 20, tmp), epoch)?;
        for info in paths {
            tar.add_path(info, &mut stream)?;
            bytes += info.nar_size;
            progress(bytes);
        }
        let (out, diff_id, _size) = tar.finish()?;
        let tmp = out.into_inner().map_err(|e| e.into_error())?;
        let target = dir.join(file);
        crate::outputs::write_atomic(&dir.join(format!("{file}.diffid")), diff_id.0.as_bytes())?;
        tmp.persist(&target).map_err(|e| e.error)?;
        // persist keeps the temporary file's private mode; layers are ordinary files.
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644))?;
        ready.mark(file);
        done.push(file.clone());
    }
    if stream.read(&mut [0u8; 1])? != 0 {
        return Err(crate::nar::NarError::Io(std::io::Error::other(
            "the builder sent more than the NARs nixpack asked for",
        )));
    }
    Ok(done)
}

/// A blocking `Read` over the chunks of a container's stdout.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    chunk: bytes::Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Self {
        ChannelReader {
            rx,
            chunk: bytes::Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(c) => self.chunk = c,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_removes_half_written_layers() {
        let dir = tempfile::tempdir().unwrap();
        let layers = dir.path().join("layers");
        std::fs::create_dir_all(&layers).unwrap();
        // As a killed run leaves them: the builder's, and the receiver's.
        std::fs::write(layers.join(".tmp-x.tar"), b"stale").unwrap();
        std::fs::write(layers.join(".tmpAbC"), b"stale").unwrap();
        let closure = Closure::from_json(
            r#"{"result":"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-r","result_dirs":[],"paths":[{"path":"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-r","nar_hash":"sha256:0000000000000000000000000000000000000000000000000000000000000000","nar_size":10,"references":[]}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("default.nix"), "").unwrap();
        let manifest = crate::manifest::Manifest::from_str(
            "[project]\nname = \"t\"\n[[image]]\nname = \"t\"\nexpression = \"default.nix\"\n",
            &dir.path().join("nixpack.toml"),
        )
        .unwrap();
        let l = prepare(&manifest.images[0], dir.path(), &closure).unwrap();
        assert_eq!(l.missing.len(), 1);
        assert!(!layers.join(".tmp-x.tar").exists());
        assert!(!layers.join(".tmpAbC").exists());
    }
}
