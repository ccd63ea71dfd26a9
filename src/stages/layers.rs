//! Stage `layers`: one deterministic tarball per planned layer.
//!
//! Reads `closure.json` and `layers = N`; writes `layers/<file>.tar` in
//! `.nixpack/<image>/`. A layer file is named by the content key of its
//! store paths (see [`crate::layers`]), so only layers whose paths changed
//! are written; when none did, no container starts. The conventions layer
//! is written here in Rust. Files no longer in the plan are removed.
//!
//! [`prepare`] plans; [`produce`] writes, marking each finished file in a
//! [`Ready`], so the image stage can load the image while later layers are
//! still arriving.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use super::builder::{append_bytes, BuilderImage};
use super::{source_date_epoch, Ctx};
use crate::closure::Closure;
use crate::conventions::Conventions;
use crate::engine::RunSpec;
use crate::error::Error;
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
            let base = name.strip_suffix(".diffid").unwrap_or(&name);
            // Callers hold the image's lock: a `.tmp…` file is a layer
            // left half-written by an interrupted run.
            if !keep.contains(base) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let missing = plan
        .iter()
        .map(Layer::file_name)
        .filter(|f| !layers_dir.join(f).is_file())
        .collect();
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

/// Writes the missing layer tarballs: one builder container streams them
/// out, in plan order, and each is marked in `ready` as it completes.
/// Returns how many were written. Whatever happens, `ready` is closed.
pub async fn produce(
    ctx: &Ctx<'_>,
    builder: &BuilderImage,
    volume: &str,
    image: &Image,
    layers: &Layers,
    ready: &Ready,
) -> Result<usize, Error> {
    let _close = CloseOnDrop(ready);
    produce_inner(ctx, builder, volume, image, layers, ready).await
}

async fn produce_inner(
    ctx: &Ctx<'_>,
    builder: &BuilderImage,
    volume: &str,
    image: &Image,
    layers: &Layers,
    ready: &Ready,
) -> Result<usize, Error> {
    if layers.missing.is_empty() {
        return Ok(0);
    }
    let name = image.name.to_string();
    let stage = ctx.ui.stage(
        &name,
        &format!(
            "writing {} of {} layers",
            layers.missing.len(),
            layers.plan.len()
        ),
    );
    let mut tsv = String::new();
    for l in layers
        .plan
        .iter()
        .filter(|l| layers.missing.contains(&l.file_name()))
    {
        for p in &l.paths {
            tsv.push_str(&format!("{}\t{}\n", l.file_name(), p));
        }
    }
    let mut upload = tar::Builder::new(Vec::new());
    append_bytes(
        &mut upload,
        "nixpack/plan/layers.tsv",
        tsv.as_bytes(),
        0o444,
    )
    .map_err(|e| Error::internal("packing the layer plan", e))?;
    let upload = upload
        .into_inner()
        .map_err(|e| Error::internal("packing the layer plan", e))?;
    let spec = RunSpec {
        image: &builder.id,
        cmd: vec!["layers".into()],
        entrypoint: None,
        env: vec![
            "NIXPACK_LAYERS=/nixpack/plan/layers.tsv".into(),
            format!("SOURCE_DATE_EPOCH={}", source_date_epoch()),
        ],
        volumes: vec![(volume.to_owned(), "/nix".into())],
        uploads: vec![upload],
        labels: HashMap::from([
            ("dev.nixpack.stage".to_owned(), "layers".to_owned()),
            ("dev.nixpack.image".to_owned(), name.clone()),
        ]),
        binds: vec![],
        raw_stdout: true,
    };
    // A local engine may write the layers straight into our folder: offer
    // a bind mount, and a marker file the builder must see to use it.
    let mut spec = spec;
    let marker = format!(
        ".nixpack-bind-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let marker_path = layers.layers_dir.join(&marker);
    if ctx.engine.is_local() && std::fs::write(&marker_path, b"").is_ok() {
        if let Some(dir) = std::path::absolute(&layers.layers_dir)
            .ok()
            .and_then(|d| d.to_str().map(str::to_owned))
        {
            spec.binds.push((dir, "/nixpack/layers".into()));
            spec.env.push("NIXPACK_LAYERS_DIR=/nixpack/layers".into());
            spec.env.push(format!("NIXPACK_LAYERS_MARKER={marker}"));
            spec.env.push(format!("NIXPACK_OWNER={}", owner()));
        }
    }
    let mut tail = Vec::new();
    let mut receiver = Receiver::new(&layers.layers_dir, layers.missing.iter().cloned().collect());
    // A failed run may have finished some files: do not trust them.
    let discard = |done: &[String]| {
        let _ = std::fs::remove_file(&marker_path);
        for f in &layers.missing {
            let _ = std::fs::remove_file(layers.layers_dir.join(format!(".tmp-{f}")));
        }
        for f in done {
            let _ = std::fs::remove_file(layers.layers_dir.join(f));
        }
    };
    // An engine that cannot mount our folder (a socket forwarded from
    // another machine) fails to create the container: then the portable way.
    let offered_bind = !spec.binds.is_empty();
    let attempts = if offered_bind {
        vec![
            spec.clone(),
            RunSpec {
                binds: vec![],
                ..spec
            },
        ]
    } else {
        vec![spec]
    };
    let mut result = None;
    for attempt in &attempts {
        let r = ctx
            .engine
            .run_attached(
                attempt,
                |chunk| {
                    let before = receiver.done.len();
                    receiver.feed(&chunk)?;
                    for f in &receiver.done[before..] {
                        ready.mark(f);
                    }
                    Ok(())
                },
                |l| {
                    stage.message(l);
                    tail.push(l.to_owned());
                },
            )
            .await;
        let retry = matches!(&r, Err(crate::engine::EngineError::Api { action, .. }) if action.starts_with("creating a container"));
        result = Some(r);
        if !retry {
            break;
        }
    }
    let result = result.expect("at least one attempt");
    let code = result.map_err(|e| {
        discard(&receiver.done);
        Error::user(e)
    })?;
    if code != 0 {
        discard(&receiver.done);
        return Err(Error::msg(
            format!(
                "writing layers for `{name}` failed (exit {code}):\n    {}",
                tail.join("\n    ")
            ),
            format!(
                "the builder needs GNU tar and every store path of the closure{}",
                super::entrypoint_note(ctx)
            ),
        ));
    }
    let _ = std::fs::remove_file(&marker_path);
    let written = receiver
        .finish()
        .map_err(|e| Error::internal("receiving layers from the builder", e))?;
    stage.done("written");
    Ok(written.len())
}

/// `uid:gid` of this process, for files a local builder writes for us.
fn owner() -> String {
    use std::os::unix::fs::MetadataExt;
    // A file we just made is ours; failing that, root.
    let probe = std::env::temp_dir().join(format!(".nixpack-owner-{}", std::process::id()));
    let owner = std::fs::write(&probe, b"")
        .and_then(|()| std::fs::metadata(&probe))
        .map_or("0:0".to_owned(), |m| format!("{}:{}", m.uid(), m.gid()));
    let _ = std::fs::remove_file(&probe);
    owner
}

/// Reads the builder's layer stream — a line `NIXPACK-LAYER <file>`, then
/// that layer's tar, then the next line — into `<file>` in the layers
/// folder, hashing each on the way (its DiffID goes to `<file>.diffid`).
/// A layer ends where its tar ends: headers give every entry's size, two
/// zero blocks close the archive, and zeros pad it to a whole record. A file appears under its name only
/// when complete.
pub struct Receiver {
    dir: std::path::PathBuf,
    expected: BTreeSet<String>,
    line: Vec<u8>,
    current: Option<Incoming>,
    done: Vec<String>,
}

struct Incoming {
    name: String,
    /// Bytes of this layer so far.
    total: u64,
    /// The end-of-archive blocks were seen; zeros pad to a whole record.
    padding: bool,
    /// A partial 512-byte header block.
    block: Vec<u8>,
    /// Data bytes (with padding) still to pass through.
    skip: u64,
    zero_blocks: u8,
    file: std::io::BufWriter<tempfile::NamedTempFile>,
    hash: sha2::Sha256,
}

const BLOCK: usize = 512;

/// GNU tar's record: 20 blocks (`--blocking-factor=20`, its default).
const RECORD: u64 = 20 * BLOCK as u64;

impl Incoming {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use sha2::Digest;
        use std::io::Write;
        self.file.write_all(bytes)?;
        self.hash.update(bytes);
        self.total += bytes.len() as u64;
        Ok(())
    }

    /// Consumes from `chunk`; returns how much, and whether the tar ended.
    fn take(&mut self, chunk: &[u8]) -> std::io::Result<(usize, bool)> {
        if self.padding {
            let n = ((RECORD - self.total % RECORD) % RECORD).min(chunk.len() as u64) as usize;
            if chunk[..n].iter().any(|b| *b != 0) {
                return Err(std::io::Error::other(
                    "the builder's layer stream has data after the end of a tar",
                ));
            }
            self.write(&chunk[..n])?;
            return Ok((n, self.total.is_multiple_of(RECORD)));
        }
        if self.skip > 0 {
            let n = self.skip.min(chunk.len() as u64) as usize;
            self.write(&chunk[..n])?;
            self.skip -= n as u64;
            return Ok((n, false));
        }
        let n = (BLOCK - self.block.len()).min(chunk.len());
        self.block.extend_from_slice(&chunk[..n]);
        if self.block.len() < BLOCK {
            return Ok((n, false));
        }
        let block = std::mem::take(&mut self.block);
        self.write(&block)?;
        if block.iter().all(|b| *b == 0) {
            self.zero_blocks += 1;
            if self.zero_blocks == 2 {
                self.padding = true;
                return Ok((n, self.total.is_multiple_of(RECORD)));
            }
            return Ok((n, false));
        }
        self.zero_blocks = 0;
        let size = header_size(&block)?;
        self.skip = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        Ok((n, false))
    }
}

/// The size field of a tar header block, after checking its checksum.
fn header_size(block: &[u8]) -> std::io::Result<u64> {
    let bad = || std::io::Error::other("the builder's layer stream is not a tar archive");
    let field = |r: std::ops::Range<usize>| -> std::io::Result<u64> {
        let f = &block[r];
        if f[0] & 0x80 != 0 {
            // base-256, for sizes past 8 GiB
            return Ok(f[1..]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)));
        }
        let text = std::str::from_utf8(f).map_err(|_| bad())?;
        let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
        if digits.is_empty() {
            return Ok(0);
        }
        u64::from_str_radix(digits, 8).map_err(|_| bad())
    };
    let stored = field(148..156)?;
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(*b)
            }
        })
        .sum();
    if sum != stored {
        return Err(bad());
    }
    field(124..136)
}

impl Receiver {
    /// Expects exactly the layer files in `expected`.
    pub fn new(dir: &Path, expected: BTreeSet<String>) -> Self {
        Receiver {
            dir: dir.to_owned(),
            expected,
            line: Vec::new(),
            current: None,
            done: Vec::new(),
        }
    }

    /// Takes the next chunk of the stream.
    pub fn feed(&mut self, mut chunk: &[u8]) -> std::io::Result<()> {
        use sha2::Digest;
        while !chunk.is_empty() {
            match &mut self.current {
                Some(inc) => {
                    let (used, ended) = inc.take(chunk)?;
                    chunk = &chunk[used..];
                    if ended {
                        let inc = self.current.take().expect("present");
                        self.complete(inc)?;
                    }
                }
                None => {
                    let Some(nl) = chunk.iter().position(|b| *b == b'\n') else {
                        self.line.extend_from_slice(chunk);
                        if self.line.len() > 512 {
                            return Err(std::io::Error::other(
                                "the builder's layer stream lost its framing",
                            ));
                        }
                        return Ok(());
                    };
                    self.line.extend_from_slice(&chunk[..nl]);
                    chunk = &chunk[nl + 1..];
                    let line =
                        String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
                    if let Some(name) = line.strip_prefix("NIXPACK-LAYER-FILE ") {
                        self.adopt(name)?;
                        continue;
                    }
                    let Some(name) = line.strip_prefix("NIXPACK-LAYER ") else {
                        return Err(std::io::Error::other(format!(
                            "unexpected output from the builder: {line:?}"
                        )));
                    };
                    if !self.expected.contains(name) {
                        return Err(std::io::Error::other(format!(
                            "the builder sent a layer nobody asked for: {name}"
                        )));
                    }
                    self.current = Some(Incoming {
                        name: name.to_owned(),
                        total: 0,
                        padding: false,
                        block: Vec::with_capacity(BLOCK),
                        skip: 0,
                        zero_blocks: 0,
                        file: std::io::BufWriter::with_capacity(
                            1 << 20,
                            tempfile::NamedTempFile::new_in(&self.dir)?,
                        ),
                        hash: sha2::Sha256::new(),
                    });
                }
            }
        }
        Ok(())
    }

    /// A layer the builder wrote straight into the folder (bind mount) as
    /// `.tmp-<name>`: hash it, then give it its name.
    fn adopt(&mut self, name: &str) -> std::io::Result<()> {
        if !self.expected.contains(name) {
            return Err(std::io::Error::other(format!(
                "the builder wrote a layer nobody asked for: {name}"
            )));
        }
        let tmp = self.dir.join(format!(".tmp-{name}"));
        let diff_id = crate::archive::diff_id(std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(&tmp)?,
        ))?;
        crate::outputs::write_atomic(
            &self.dir.join(format!("{name}.diffid")),
            diff_id.0.as_bytes(),
        )?;
        std::fs::rename(&tmp, self.dir.join(name))?;
        self.done.push(name.to_owned());
        Ok(())
    }

    fn complete(&mut self, inc: Incoming) -> std::io::Result<()> {
        use sha2::Digest;
        let diff_id = format!("sha256:{}", crate::closure::hex(&inc.hash.finalize()));
        let tmp = inc.file.into_inner().map_err(|e| e.into_error())?;
        let target = self.dir.join(&inc.name);
        crate::outputs::write_atomic(
            &self.dir.join(format!("{}.diffid", inc.name)),
            diff_id.as_bytes(),
        )?;
        tmp.persist(&target).map_err(|e| e.error)?;
        // persist keeps the temporary file's private mode; layers are ordinary files.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644))?;
        self.done.push(inc.name);
        Ok(())
    }

    /// Checks that the stream ended between layers and that every expected
    /// layer arrived.
    pub fn finish(self) -> std::io::Result<Vec<String>> {
        if let Some(inc) = &self.current {
            return Err(std::io::Error::other(format!(
                "the builder's stream ended inside {}",
                inc.name
            )));
        }
        let got: BTreeSet<&String> = self.done.iter().collect();
        if let Some(missing) = self.expected.iter().find(|e| !got.contains(e)) {
            return Err(std::io::Error::other(format!(
                "the builder sent no {missing}"
            )));
        }
        Ok(self.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small real tar with a file, a long name and an empty file.
    fn a_tar(seed: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in [
            ("nix/store/x/file", seed.repeat(300)),
            (
                &format!("nix/store/x/{}", "n".repeat(150)) as &str,
                "long".to_owned(),
            ),
            ("nix/store/x/empty", String::new()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o444);
            h.set_cksum();
            b.append_data(&mut h, path, data.as_bytes()).unwrap();
        }
        let mut bytes = b.into_inner().unwrap();
        // As GNU tar writes it: zeros up to a whole record.
        bytes.resize(bytes.len().div_ceil(RECORD as usize) * RECORD as usize, 0);
        bytes
    }

    #[test]
    fn receives_layers_split_anywhere() {
        let (a, b) = (a_tar("a"), a_tar("bb"));
        let mut stream = b"NIXPACK-LAYER a.tar\n".to_vec();
        stream.extend_from_slice(&a);
        stream.extend_from_slice(b"NIXPACK-LAYER b.tar\n");
        stream.extend_from_slice(&b);
        for split in [1, 7, 512, 513, 100_000] {
            let dir = tempfile::tempdir().unwrap();
            let expected = ["a.tar", "b.tar"].map(String::from).into_iter().collect();
            let mut r = Receiver::new(dir.path(), expected);
            for chunk in stream.chunks(split) {
                r.feed(chunk).unwrap();
            }
            assert_eq!(r.finish().unwrap(), vec!["a.tar", "b.tar"]);
            assert_eq!(std::fs::read(dir.path().join("a.tar")).unwrap(), a);
            assert_eq!(std::fs::read(dir.path().join("b.tar")).unwrap(), b);
            let id = std::fs::read_to_string(dir.path().join("b.tar.diffid")).unwrap();
            assert_eq!(id, crate::archive::diff_id(&b[..]).unwrap().0);
        }
    }

    #[test]
    fn adopts_a_layer_written_through_the_bind_mount() {
        let dir = tempfile::tempdir().unwrap();
        let a = a_tar("a");
        std::fs::write(dir.path().join(".tmp-a.tar"), &a).unwrap();
        let mut r = Receiver::new(dir.path(), ["a.tar".to_owned()].into_iter().collect());
        r.feed(b"NIXPACK-LAYER-FILE a.tar\n").unwrap();
        assert_eq!(r.finish().unwrap(), vec!["a.tar"]);
        assert_eq!(std::fs::read(dir.path().join("a.tar")).unwrap(), a);
        assert!(!dir.path().join(".tmp-a.tar").exists());
        let id = std::fs::read_to_string(dir.path().join("a.tar.diffid")).unwrap();
        assert_eq!(id, crate::archive::diff_id(&a[..]).unwrap().0);
    }

    #[test]
    fn a_short_stream_is_an_error_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Receiver::new(dir.path(), ["a.tar".to_owned()].into_iter().collect());
        let a = a_tar("a");
        r.feed(b"NIXPACK-LAYER a.tar\n").unwrap();
        r.feed(&a[..a.len() - 700]).unwrap();
        assert!(r.finish().unwrap_err().to_string().contains("ended inside"));
        assert!(!dir.path().join("a.tar").exists());
    }

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

    #[test]
    fn unexpected_output_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Receiver::new(dir.path(), ["a.tar".to_owned()].into_iter().collect());
        assert!(r.feed(b"hello\n").is_err());
        let mut r = Receiver::new(dir.path(), ["a.tar".to_owned()].into_iter().collect());
        let mut garbage = b"NIXPACK-LAYER a.tar\n".to_vec();
        garbage.extend_from_slice(&[b'x'; 512]);
        assert!(
            r.feed(&garbage).is_err(),
            "a block that is not a tar header"
        );
    }
}
