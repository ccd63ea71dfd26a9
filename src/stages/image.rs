//! Stage `image`: the `FROM scratch` image for `NAME:TAG`.
//!
//! Reads the layer tarballs and the scratch template; writes the image
//! (untagged: the build command tags it once every stage has succeeded,
//! so a failure never leaves a tag on a half-made image).
//!
//! Normally nixpack assembles the image itself from its rendered scratch
//! Dockerfile ([`crate::dockerfile`], [`crate::archive`]): the image id is
//! then a pure function of layers and config, and "unchanged" means the
//! tag already points at that id. An ejected template that needs the whole
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
use crate::render::Template;

/// Label holding the image stage's key.
pub const KEY_LABEL: &str = "dev.nixpack.key";

/// The image for `NAME:TAG`.
#[derive(Debug, Clone)]
pub struct Built {
    /// `NAME:TAG`.
    pub reference: String,
    /// Image id.
    pub id: String,
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
            assemble(ctx, image, dir, &recipe, &notes, ready).await
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

/// The native path: nixpack writes the image config and loads the layers
/// as a docker-archive. The image id is a pure function of the layers and
/// the config, so "unchanged" is simply "the tag already points at it".
/// Layers still being written are streamed as soon as `ready` has them.
#[allow(clippy::too_many_arguments)]
async fn assemble(
    ctx: &Ctx<'_>,
    image: &Image,
    dir: &Path,
    recipe: &crate::dockerfile::Recipe,
    notes: &[String],
    ready: &Arc<Ready>,
) -> Result<Built, Error> {
    let reference = image.reference();
    let arch = ctx.engine.architecture().await.map_err(Error::user)?;
    let recipe = Arc::new(Assembly {
        files: recipe.layers.iter().map(|f| dir.join(f)).collect(),
        recipe: recipe.clone(),
        notes: notes.to_vec(),
        arch,
        epoch: super::source_date_epoch(),
    });
    // DiffIDs of the layers already on disk.
    let known: Vec<Option<archive::DiffId>> = recipe
        .files
        .iter()
        .map(|p| p.is_file().then(|| cached_diff_id(p)).transpose())
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::internal("reading layer DiffIDs", e))?;
    let existing = ctx
        .engine
        .inspect_image(&reference)
        .await
        .map_err(Error::user)?;
    if let Some(ids) = known.iter().cloned().collect::<Option<Vec<_>>>() {
        let (config, image_id) = recipe.config(&ids);
        crate::outputs::write_atomic(&dir.join("image-config.json"), &config)
            .map_err(|e| Error::internal("writing image-config.json", e))?;
        if let Some(e) = existing.as_ref().filter(|e| e.id == image_id) {
            return Ok(Built {
                reference,
                id: e.id.clone(),
                size: e.size,
                diff_ids: e.layers.clone(),
                built: false,
            });
        }
    }
    let name = image.name.to_string();
    let stage = ctx.ui.stage(&name, "loading the image");
    // Layers the engine already holds under the same parent chain need not
    // be sent again: the previous image shares a prefix of them.
    let shared = existing.map_or(0, |e| {
        e.layers
            .iter()
            .zip(&known)
            .take_while(|(a, b)| b.as_ref().is_some_and(|b| **a == b.0))
            .count()
    });
    let mut loaded = load(ctx, &recipe, &known, shared, ready).await;
    if let (Err(e), true) = (&loaded, shared > 0) {
        // An engine that insists on every layer gets every layer.
        if ctx.ui.verbose() > 0 {
            ctx.ui.log(&format!(
                "{name}: the engine wants all layers ({:?}); sending them",
                e.report()
            ));
        }
        loaded = load(ctx, &recipe, &known, 0, ready).await;
    } else if ctx.ui.verbose() > 0 && shared > 0 {
        ctx.ui.log(&format!(
            "{name}: {shared} of {} layers were already in the engine and not sent",
            known.len()
        ));
    }
    let (engine_id, image_id, config) = loaded?;
    crate::outputs::write_atomic(&dir.join("image-config.json"), &config)
        .map_err(|e| Error::internal("writing image-config.json", e))?;
    if engine_id != image_id {
        let _ = ctx.engine.remove_image(&engine_id).await;
        return Err(Error::internal(
            "loading the image",
            format!("the engine computed {engine_id}, nixpack {image_id}"),
        ));
    }
    finish(ctx, image, image_id, stage).await
}

/// Reads the new image's size and layers and ends the stage.
async fn finish(
    ctx: &Ctx<'_>,
    image: &Image,
    id: String,
    stage: crate::ui::Stage,
) -> Result<Built, Error> {
    let facts = ctx
        .engine
        .inspect_image(&id)
        .await
        .map_err(Error::user)?
        .ok_or_else(|| Error::internal("inspecting the new image", "it vanished"))?;
    stage.done("made");
    Ok(Built {
        reference: image.reference(),
        id,
        size: facts.size,
        diff_ids: facts.layers,
        built: true,
    })
}

/// What the archive writer needs, shared with its blocking thread.
struct Assembly {
    files: Vec<std::path::PathBuf>,
    recipe: crate::dockerfile::Recipe,
    notes: Vec<String>,
    arch: String,
    epoch: u64,
}

impl Assembly {
    fn config(&self, diff_ids: &[archive::DiffId]) -> (Vec<u8>, String) {
        archive::config_json(&self.recipe, diff_ids, &self.notes, &self.arch, self.epoch)
    }
}

/// Streams the docker-archive: each layer as soon as it is complete (the
/// first `skip` as empty placeholders), then the config and manifest,
/// which need every DiffID. Returns the engine's id, nixpack's id and the
/// config bytes.
async fn load(
    ctx: &Ctx<'_>,
    assembly: &Arc<Assembly>,
    known: &[Option<archive::DiffId>],
    skip: usize,
    ready: &Arc<Ready>,
) -> Result<(String, String, Vec<u8>), Error> {
    let (assembly, ready, known) = (assembly.clone(), ready.clone(), known.to_vec());
    // The writer thread leaves the image id and config it computed here.
    type Made = Arc<std::sync::Mutex<Option<(String, Vec<u8>)>>>;
    let made: Made = Arc::default();
    let out = made.clone();
    let engine_id = ctx
        .engine
        .load(move |tar| {
            let mut ids = Vec::with_capacity(assembly.files.len());
            for (i, path) in assembly.files.iter().enumerate() {
                match known[i].clone().filter(|_| i < skip) {
                    Some(id) => {
                        super::builder::append_bytes(
                            tar,
                            &format!("{}/layer.tar", id.hex()),
                            b"",
                            0o644,
                        )?;
                        ids.push(id);
                    }
                    None => {
                        ready.wait(path)?;
                        let id = cached_diff_id(path)?;
                        tar.append_file(
                            format!("{}/layer.tar", id.hex()),
                            &mut std::fs::File::open(path)?,
                        )?;
                        ids.push(id);
                    }
                }
            }
            let (config, image_id) = assembly.config(&ids);
            let config_name = format!("{}.json", image_id.trim_start_matches("sha256:"));
            super::builder::append_bytes(tar, &config_name, &config, 0o644)?;
            super::builder::append_bytes(
                tar,
                "manifest.json",
                &archive::manifest_json(&config_name, &ids),
                0o644,
            )?;
            *out.lock().expect("result lock") = Some((image_id, config));
            Ok(())
        })
        .await
        .map_err(Error::user)?;
    let (image_id, config) = made
        .lock()
        .expect("result lock")
        .take()
        .ok_or_else(|| Error::internal("loading the image", "the archive was not finished"))?;
    Ok((engine_id, image_id, config))
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
    let files: Vec<String> = entries.iter().map(|e| e.file.clone()).collect();
    let key = key(&[dockerfile.as_bytes(), files.join("\n").as_bytes()]);
    let reference = image.reference();
    if let Some(existing) = ctx
        .engine
        .inspect_image(&reference)
        .await
        .map_err(Error::user)?
    {
        if existing.labels.get(KEY_LABEL) == Some(&key) {
            return Ok(Built {
                reference,
                id: existing.id,
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
        .engine
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
    finish(ctx, image, id, stage).await
}
