//! Stage `image`: the `FROM scratch` image for `NAME:TAG`.
//!
//! Reads the layer tarballs and the scratch template; writes the image
//! (untagged: the build command tags it once every stage has succeeded,
//! so a failure never leaves a tag on a half-made image).
//!
//! Normally nixpack writes the OCI image itself from its rendered scratch
//! Dockerfile ([`crate::dockerfile`], [`crate::oci`]): its manifest and
//! config digests are then a pure function of layers and config, and
//! "unchanged" means the tag already points at that image. An ejected template that needs the whole
//! Dockerfile language goes to the Engine's builder instead, with a context
//! streamed from disk and the stage key as a label for the same check.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use super::layers::{Layers, Ready};
use super::{key, Ctx};
use crate::archive;
use crate::closure::Closure;
use crate::error::Error;
use crate::manifest::Image;
use crate::oci;
use crate::render::Template;

/// Label holding the image stage's key.
pub const KEY_LABEL: &str = "dev.nixpack.key";

/// Label of a partial image loaded ahead of the image (see
/// [`load_in_steps`]), holding the image's `NAME:TAG`.
pub const PARTIAL_LABEL: &str = "dev.nixpack.partial";

/// The image for `NAME:TAG`.
#[derive(Debug, Clone)]
pub struct Built {
    /// `NAME:TAG`.
    pub reference: String,
    /// The engine's id for it, to tag and remove it by: the config digest
    /// on the classic image store, the manifest digest on containerd's.
    pub id: String,
    /// nixpack's own OCI image (config, manifest, digests), when nixpack
    /// wrote it (not for the Engine's Dockerfile builder).
    pub oci: Option<Arc<oci::Image>>,
    /// The layer files of `oci`, bottom first.
    pub layer_files: Vec<std::path::PathBuf>,
    /// Size in bytes, as the engine reports it.
    pub size: u64,
    /// Layer DiffIDs, bottom first.
    pub diff_ids: Vec<String>,
    /// Whether this run built it (false: unchanged).
    pub built: bool,
}

/// Makes the image unless `NAME:TAG` already is this image. It does not
/// tag: the caller tags once every stage has succeeded (and, with
/// `--locked`, once the lock agrees).
pub async fn run(
    ctx: &Ctx<'_>,
    image: &Image,
    dir: &Path,
    closure: &Closure,
    layers: &Layers,
    ready: &Arc<Ready>,
    load: bool,
) -> Result<Built, Error> {
    let labels = BTreeMap::from([
        (
            "org.opencontainers.image.title".to_owned(),
            image.name.to_string(),
        ),
        (
            "org.opencontainers.image.version".to_owned(),
            image.tag.to_string(),
        ),
        (
            "org.opencontainers.image.description".to_owned(),
            format!(
                "{} built by nixpack from {}",
                ctx.manifest.project.name, image.expression
            ),
        ),
        ("dev.nixpack.result".to_owned(), closure.result.to_string()),
        ("dev.nixpack.closure".to_owned(), closure.closure_hash()),
    ]);
    let entries = crate::outputs::layer_entries(&layers.plan, &layers.conventions);
    let dockerfile = ctx.renderer.scratch_dockerfile(image, &entries, &labels)?;
    // Keep the rendered files with the outputs, as `nixpack render` would.
    for (t, text) in [
        (Template::Builder, ctx.renderer.builder_dockerfile()?),
        (Template::Entrypoint, ctx.renderer.entrypoint()?),
        (Template::Scratch, dockerfile.clone()),
    ] {
        crate::outputs::write_atomic(&dir.join(t.file_name()), text.as_bytes())
            .map_err(|e| Error::internal("writing rendered files", e))?;
    }

    let reference = image.reference();
    match crate::dockerfile::parse(&dockerfile) {
        Ok(recipe) => {
            let notes: Vec<String> = recipe
                .layers
                .iter()
                .map(|f| match entries.iter().find(|e| e.file == *f) {
                    Some(e) if e.paths > 0 => format!(
                        "nixpack: {} store path(s), {} bytes of NAR",
                        e.paths, e.bytes
                    ),
                    Some(_) => "nixpack: root conventions".to_owned(),
                    None => format!("ADD {f} /"),
                })
                .collect();
            if load {
                assemble(ctx, image, dir, &recipe, &notes, ready).await
            } else {
                compose(image, dir, &recipe, &notes, ready).await
            }
        }
        Err(why) => {
            if ctx.ui.verbose() > 0 {
                ctx.ui.log(&format!("{reference}: scratch.Dockerfile line {}: {}; building it with the Engine's builder", why.line, why.reason));
            }
            // The Engine's builder needs every layer in its context first.
            let all: Vec<std::path::PathBuf> = entries.iter().map(|e| dir.join(&e.file)).collect();
            let wait = ready.clone();
            tokio::task::spawn_blocking(move || all.iter().try_for_each(|p| wait.wait(p)))
                .await
                .map_err(|e| Error::internal("waiting for layers", e))?
                .map_err(|e| Error::internal("waiting for layers", e))?;
            docker_build(ctx, image, dir, &dockerfile, &entries).await
        }
    }
}

/// The native path: nixpack writes the OCI image (config, manifest) and
/// loads it as an archive both image stores read. Its digests are a pure
/// function of the layers and the config, so "unchanged" is simply "the
/// tag already points at it" — by config digest on the classic store, by
/// manifest digest on containerd's. Layers still being written are
/// streamed as soon as `ready` has them.
async fn assemble(
    ctx: &Ctx<'_>,
    image: &Image,
    dir: &Path,
    recipe: &crate::dockerfile::Recipe,
    notes: &[String],
    ready: &Arc<Ready>,
) -> Result<Built, Error> {
    let reference = image.reference();
    let arch = ctx.engine()?.architecture().await.map_err(Error::user)?;
    let assembly = Arc::new(Assembly {
        reference: reference.clone(),
        files: recipe.layers.iter().map(|f| dir.join(f)).collect(),
        recipe: recipe.clone(),
        notes: notes.to_vec(),
        arch,
        epoch: super::source_date_epoch(),
    });
    // The layers already on disk.
    let known: Vec<Option<oci::LayerBlob>> = assembly
        .files
        .iter()
        .map(|p| p.is_file().then(|| layer_blob(p)).transpose())
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::internal("reading layer DiffIDs", e))?;
    let existing = ctx
        .engine()?
        .inspect_image(&reference)
        .await
        .map_err(Error::user)?;
    if let Some(blobs) = known.iter().cloned().collect::<Option<Vec<_>>>() {
        let made = Arc::new(assembly.image(blobs));
        save_image(dir, &made)?;
        if let Some(e) = existing.as_ref().filter(|e| is_this(&e.id, &made)) {
            return Ok(Built {
                reference,
                id: e.id.clone(),
                oci: Some(made),
                layer_files: assembly.files.clone(),
                size: e.size,
                diff_ids: e.layers.clone(),
                built: false,
            });
        }
    }
    let name = image.name.to_string();
    let stage = ctx.ui.stage(&name, "loading the image");
    // Layers the engine already holds under the same parent chain need not
    // be sent again: the previous image shares a prefix of them, and both
    // image stores take an archive that leaves their blobs out.
    let shared = existing.map_or(0, |e| {
        e.layers
            .iter()
            .zip(&known)
            .take_while(|(a, b)| b.as_ref().is_some_and(|b| **a == b.diff_id.0))
            .count()
    });
    if ctx.ui.verbose() > 0 && shared > 0 {
        ctx.ui.log(&format!(
            "{name}: {shared} of {} layers are in the engine already and are not sent",
            known.len()
        ));
    }
    let loaded = load_in_steps(ctx, &assembly, &known, shared, ready).await;
    let (engine_id, made) = loaded?;
    save_image(dir, &made)?;
    if !is_this(&engine_id, &made) {
        let _ = ctx.engine()?.remove_image(&engine_id).await;
        return Err(Error::internal(
            "loading the image",
            format!(
                "the engine loaded {engine_id}, which is neither nixpack's manifest ({}) nor its config ({})",
                made.manifest_digest, made.config_digest
            ),
        ));
    }
    let mut built = finish(ctx, image, engine_id, Some(Arc::new(made)), stage).await?;
    built.layer_files = assembly.files.clone();
    Ok(built)
}

/// Without an engine: nixpack's OCI image alone, once every layer is
/// written (for `--output oci:…` with `runner = "host"`). Its id is the
/// manifest digest; its architecture this machine's.
async fn compose(
    image: &Image,
    dir: &Path,
    recipe: &crate::dockerfile::Recipe,
    notes: &[String],
    ready: &Arc<Ready>,
) -> Result<Built, Error> {
    let assembly = Assembly {
        reference: image.reference(),
        files: recipe.layers.iter().map(|f| dir.join(f)).collect(),
        recipe: recipe.clone(),
        notes: notes.to_vec(),
        arch: goarch().to_owned(),
        epoch: super::source_date_epoch(),
    };
    let (files, wait) = (assembly.files.clone(), ready.clone());
    let blobs = tokio::task::spawn_blocking(move || {
        files
            .iter()
            .map(|p| {
                wait.wait(p)?;
                layer_blob(p)
            })
            .collect::<std::io::Result<Vec<_>>>()
    })
    .await
    .map_err(|e| Error::internal("waiting for layers", e))?
    .map_err(|e| Error::internal("waiting for layers", e))?;
    let made = assembly.image(blobs);
    let before = std::fs::read(dir.join("image-manifest.json")).ok();
    save_image(dir, &made)?;
    Ok(Built {
        reference: image.reference(),
        id: made.manifest_digest.to_string(),
        size: made.layers.iter().map(|l| l.size).sum(),
        diff_ids: made.layers.iter().map(|l| l.diff_id.0.clone()).collect(),
        built: before.as_deref() != Some(made.manifest.as_slice()),
        layer_files: assembly.files,
        oci: Some(Arc::new(made)),
    })
}

/// This machine's architecture as OCI names it (Go's GOARCH).
fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Whether the engine's image id `id` names `image`: the classic store
/// names an image by its config digest, containerd's by its manifest digest.
fn is_this(id: &str, image: &oci::Image) -> bool {
    id == image.config_digest.as_str() || id == image.manifest_digest.as_str()
}

/// `image-config.json` and `image-manifest.json`: the bytes whose digests
/// identify the image.
fn save_image(dir: &Path, image: &oci::Image) -> Result<(), Error> {
    for (file, bytes) in [
        ("image-config.json", &image.config),
        ("image-manifest.json", &image.manifest),
    ] {
        crate::outputs::write_atomic(&dir.join(file), bytes)
            .map_err(|e| Error::internal(&format!("writing {file}"), e))?;
    }
    Ok(())
}

/// Reads the new image's size and layers and ends the stage.
async fn finish(
    ctx: &Ctx<'_>,
    image: &Image,
    id: String,
    made: Option<Arc<oci::Image>>,
    stage: crate::ui::Stage,
) -> Result<Built, Error> {
    let facts = ctx
        .engine()?
        .inspect_image(&id)
        .await
        .map_err(Error::user)?
        .ok_or_else(|| Error::internal("inspecting the new image", "it vanished"))?;
    stage.done("made");
    Ok(Built {
        reference: image.reference(),
        id,
        oci: made,
        layer_files: vec![],
        size: facts.size,
        diff_ids: facts.layers,
        built: true,
    })
}

/// What the archive writer needs, shared with its blocking thread.
struct Assembly {
    /// `NAME:TAG`.
    reference: String,
    files: Vec<std::path::PathBuf>,
    recipe: crate::dockerfile::Recipe,
    notes: Vec<String>,
    arch: String,
    epoch: u64,
}

impl Assembly {
    fn image(&self, layers: Vec<oci::LayerBlob>) -> oci::Image {
        oci::Image::new(&self.recipe, layers, &self.notes, &self.arch, self.epoch)
    }

    /// The bottom `count` layers with a bare config: a step of
    /// [`load_in_steps`], never tagged or kept.
    fn partial(&self, layers: Vec<oci::LayerBlob>, count: usize) -> oci::Image {
        let recipe = crate::dockerfile::Recipe {
            layers: self.recipe.layers[..count].to_vec(),
            labels: [(PARTIAL_LABEL.to_owned(), self.reference.clone())].into(),
            ..Default::default()
        };
        oci::Image::new(
            &recipe,
            layers,
            &self.notes[..count],
            &self.arch,
            self.epoch,
        )
    }
}

/// Loads the image in steps, so the engine registers the bottom layers
/// while the upper ones are still being written (neither image store
/// starts on an archive before all of it has arrived). Whenever the engine
/// is free, the layers completed since its last step go in as an untagged
/// partial image (the bottom layers and a bare config); the engine keeps
/// them, so the next step leaves them out. The last step is the image.
/// Partial images are removed once the image is in. When a load that left
/// layers out fails, one load with every layer follows. Returns the
/// engine's id and nixpack's image.
async fn load_in_steps(
    ctx: &Ctx<'_>,
    assembly: &Arc<Assembly>,
    known: &[Option<oci::LayerBlob>],
    skip: usize,
    ready: &Arc<Ready>,
) -> Result<(String, oci::Image), Error> {
    let n = assembly.files.len();
    let mut held = skip;
    let mut partials = Vec::new();
    let result = async {
        loop {
            // Wait for the next layer, then take every one complete by now.
            let (files, wait) = (assembly.files.clone(), ready.clone());
            let upto = tokio::task::spawn_blocking(move || -> std::io::Result<usize> {
                match files.get(held) {
                    Some(next) => wait.wait(next)?,
                    None => return Ok(held),
                }
                Ok(held + files[held..].iter().take_while(|p| wait.is_done(p)).count())
            })
            .await
            .map_err(|e| Error::internal("waiting for layers", e))?
            .map_err(|e| Error::internal("waiting for layers", e))?;
            if upto >= n {
                return load(ctx, assembly, known, held, None, ready).await;
            }
            let started = std::time::Instant::now();
            let (id, _) = load(ctx, assembly, known, held, Some(upto), ready).await?;
            if ctx.ui.verbose() > 0 {
                ctx.ui.log(&format!(
                    "{}: loaded layers {}..{upto} of {n} ahead of the image ({:.1}s)",
                    assembly.reference,
                    held + 1,
                    started.elapsed().as_secs_f64()
                ));
            }
            partials.push(id);
            held = upto;
        }
    }
    .await;
    for id in partials {
        // Untagged and superseded: the image holds its layers now. Never
        // forced, so a partial image identical to one in use stays.
        let _ = ctx.engine()?.remove_image(&id).await;
        ctx.engine()?.cleanup.forget_image(&id);
    }
    match result {
        // An engine that insists on every layer (or lost one held for this
        // load) gets every layer; the loads are untagged, so a failed one
        // moved no tag.
        Err(e) if held > 0 => {
            if ctx.ui.verbose() > 0 {
                ctx.ui.log(&format!(
                    "{}: the engine wants all layers ({:?}); sending them",
                    assembly.reference,
                    e.report()
                ));
            }
            load(ctx, assembly, known, 0, None, ready).await
        }
        result => result,
    }
}

/// Streams the engine archive, untagged: each layer blob as soon as it is
/// complete (the first `skip` left out: the engine holds them), then the
/// config, manifest and indexes, which need every DiffID. With `upto`, only
/// the bottom `upto` layers, as a partial image with a bare config (see
/// [`load_in_steps`]). Returns the engine's id and nixpack's image.
async fn load(
    ctx: &Ctx<'_>,
    assembly: &Arc<Assembly>,
    known: &[Option<oci::LayerBlob>],
    skip: usize,
    upto: Option<usize>,
    ready: &Arc<Ready>,
) -> Result<(String, oci::Image), Error> {
    let (assembly, ready, known) = (assembly.clone(), ready.clone(), known.to_vec());
    // The writer thread leaves the image it computed here.
    let made: Arc<std::sync::Mutex<Option<oci::Image>>> = Arc::default();
    let out = made.clone();
    let engine_id = ctx
        .engine()?
        .load(move |tar| {
            let mut archive = oci::EngineArchive::start(tar)?;
            let count = upto.unwrap_or(assembly.files.len());
            let mut blobs = Vec::with_capacity(count);
            for (i, path) in assembly.files[..count].iter().enumerate() {
                match known[i].clone().filter(|_| i < skip) {
                    Some(blob) => blobs.push(blob),
                    None if i < skip => blobs.push(layer_blob(path)?),
                    None => {
                        ready.wait(path)?;
                        let blob = layer_blob(path)?;
                        archive.layer(tar, &blob, path)?;
                        blobs.push(blob);
                    }
                }
            }
            let image = match upto {
                Some(count) => assembly.partial(blobs, count),
                None => assembly.image(blobs),
            };
            archive.finish(tar, &image, &[])?;
            *out.lock().expect("result lock") = Some(image);
            Ok(())
        })
        .await
        .map_err(Error::user)?;
    let image = made
        .lock()
        .expect("result lock")
        .take()
        .ok_or_else(|| Error::internal("loading the image", "the archive was not finished"))?;
    Ok((engine_id, image))
}

/// A layer file as an uncompressed OCI layer blob (its DiffID is cached).
fn layer_blob(path: &Path) -> std::io::Result<oci::LayerBlob> {
    let size = std::fs::metadata(path)?.len();
    Ok(oci::LayerBlob::uncompressed(cached_diff_id(path)?, size))
}

/// A layer's DiffID, cached beside it in `<file>.diffid` (layer files are
/// named by content and never change).
pub fn cached_diff_id(path: &Path) -> std::io::Result<archive::DiffId> {
    let mut side = path.as_os_str().to_owned();
    side.push(".diffid");
    let side = std::path::PathBuf::from(side);
    if let Ok(s) = std::fs::read_to_string(&side) {
        if s.starts_with("sha256:") && s.len() == 71 {
            return Ok(archive::DiffId(s));
        }
    }
    let id = archive::diff_id(std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(path)?,
    ))?;
    crate::outputs::write_atomic(&side, id.0.as_bytes())?;
    Ok(id)
}

/// The fallback: the Engine's builder replays the Dockerfile.
async fn docker_build(
    ctx: &Ctx<'_>,
    image: &Image,
    dir: &Path,
    dockerfile: &str,
    entries: &[crate::render::LayerEntry],
) -> Result<Built, Error> {
    // nixpack has no OCI image of its own for this one: an earlier
    // native build's files must not be taken for it (`nixpack push`).
    for file in ["image-config.json", "image-manifest.json"] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    let files: Vec<String> = entries.iter().map(|e| e.file.clone()).collect();
    let key = key(&[dockerfile.as_bytes(), files.join("\n").as_bytes()]);
    let reference = image.reference();
    if let Some(existing) = ctx
        .engine()?
        .inspect_image(&reference)
        .await
        .map_err(Error::user)?
    {
        if existing.labels.get(KEY_LABEL) == Some(&key) {
            return Ok(Built {
                reference,
                id: existing.id,
                oci: None,
                layer_files: vec![],
                size: existing.size,
                diff_ids: existing.layers,
                built: false,
            });
        }
    }

    let name = image.name.to_string();
    let stage = ctx.ui.stage(&name, "building the scratch image");
    let context_dir = dir.to_owned();
    let df = dockerfile.to_owned();
    let ui = ctx.ui.clone();
    let id = ctx
        .engine()?
        .build(
            &format!("the scratch image {reference}"),
            HashMap::from([(KEY_LABEL.to_owned(), key.clone())]),
            move |tar| {
                super::builder::append_bytes(tar, "Dockerfile", df.as_bytes(), 0o644)?;
                for f in &files {
                    // Streamed from disk by the tar writer, chunk by chunk.
                    let mut file = std::fs::File::open(context_dir.join(f))?;
                    tar.append_file(f, &mut file)?;
                }
                Ok(())
            },
            |line| {
                stage.message(line);
                if ui.verbose() > 0 {
                    ui.log(&format!("{name} | {line}"));
                }
            },
        )
        .await
        .map_err(|e| {
            let template = match &ctx.manifest.builder.templates.scratch {
                Some(p) => format!("your override `{}`", p.display()),
                None => "the built-in templates/scratch.Dockerfile.hbs".to_owned(),
            };
            Error::msg(
                format!("stage image failed for `{reference}`: {e}"),
                format!(
                    "the Dockerfile comes from {template}; it is saved as {}",
                    dir.join("scratch.Dockerfile").display()
                ),
            )
        })?;
    finish(ctx, image, id, None, stage).await
}
