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
        reference: reference.clone(),
        files: recipe.layers.iter().map(|f| dir.join(f)).collect(),
        ready: ready.clone(),
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
    let mut loaded = load_chain(ctx, &recipe, &known, shared, ready, &stage).await;
    if let Err((e, true)) = &loaded {
        // An engine that insists on every layer (or cannot import one on
        // its own) gets every layer, in one archive.
        if ctx.ui.verbose() > 0 {
            ctx.ui.log(&format!(
                "{name}: loading link by link failed ({:?}); sending every layer at once",
                e.report()
            ));
        }
        loaded = load(ctx, &recipe, &known, 0, recipe.files.len(), None)
            .await
            .map(|l| (l.engine_id, l.image_id, l.config))
            .map_err(|e| (e, false));
    } else if ctx.ui.verbose() > 0 && shared > 0 {
        ctx.ui.log(&format!(
            "{name}: {shared} of {} layers were already in the engine and not sent",
            known.len()
        ));
    }
    let (engine_id, image_id, config) = loaded.map_err(|(e, _)| e)?;
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
    /// `NAME:TAG`, to name the images made on the way.
    reference: String,
    files: Vec<std::path::PathBuf>,
    /// Which files are complete.
    ready: Arc<Ready>,
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

/// Loads the image link by link, so the engine unpacks the first layers
/// while the builder is still writing the next ones. (`docker load` first
/// copies its whole body to disk and unpacks only when it has ended: one
/// archive would make every layer wait for the last.)
///
/// - The bottom layer goes through the import endpoint, which unpacks as
///   it reads: it is followed while the builder writes it.
/// - Then each link is one `docker load` of the layers complete by then,
///   with the ones below as empty placeholders (the engine has them); a
///   link that does not reach the top is a partial image of this build's
///   own ([`archive::partial_config_json`]); the last has the real config.
/// - The helper images go once the image is loaded, or on failure.
///
/// `shared` bottom layers are in the engine already. An error says
/// whether a placeholder or an import was involved (then one archive with
/// every layer is worth a try).
async fn load_chain(
    ctx: &Ctx<'_>,
    assembly: &Arc<Assembly>,
    known: &[Option<archive::DiffId>],
    shared: usize,
    ready: &Arc<Ready>,
    stage: &crate::ui::Stage,
) -> Result<(String, String, Vec<u8>), (Error, bool)> {
    let n = assembly.files.len();
    let nonce = format!(
        "{} {}-{}",
        assembly.reference,
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let mut ids: Vec<Option<archive::DiffId>> = known.to_vec();
    let mut helpers = Vec::new();
    let mut have = shared;
    let outcome = async {
        if have == 0 && n > 1 {
            let t = std::time::Instant::now();
            let comment = format!("nixpack: the bottom layer of {}, on its way", assembly.reference);
            match import_bottom(ctx, &assembly.files[0], &comment, ready).await {
                Ok((helper, id)) => {
                    if ctx.ui.verbose() > 0 {
                        ctx.ui.log(&format!(
                            "imported the bottom layer in {:.2}s{}",
                            t.elapsed().as_secs_f64(),
                            if id.is_some() { "" } else { " (another DiffID: not used)" }
                        ));
                    }
                    helpers.push(helper);
                    ids[0] = id;
                    have = usize::from(ids[0].is_some());
                }
                Err(e) => {
                    if ctx.ui.verbose() > 0 {
                        ctx.ui.log(&format!(
                            "importing the bottom layer on its own failed ({e}); it goes in an archive"
                        ));
                    }
                }
            }
        }
        loop {
            stage.message(&format!("{have} of {n} layers in the engine"));
            // The next layer, and every one after it that is complete now.
            if have < n {
                let (path, wait) = (assembly.files[have].clone(), ready.clone());
                tokio::task::spawn_blocking(move || wait.wait(&path))
                    .await
                    .map_err(|e| (Error::internal("waiting for layers", e), have > 0))?
                    .map_err(|e| (Error::internal("waiting for layers", e), have > 0))?;
            }
            let end = (have + 1..n)
                .find(|i| !ready.is_complete(&assembly.files[*i]))
                .unwrap_or(n);
            let t = std::time::Instant::now();
            let link = load(ctx, assembly, &ids, have, end, (end < n).then_some(&nonce[..]))
                .await
                .map_err(|e| (e, have > 0))?;
            if ctx.ui.verbose() > 0 {
                let bytes: u64 = assembly.files[have..end]
                    .iter()
                    .filter_map(|p| p.metadata().ok())
                    .map(|m| m.len())
                    .sum();
                ctx.ui.log(&format!(
                    "loaded layers {}..{end} of {n} ({} MiB) in {:.2}s",
                    have + 1,
                    bytes >> 20,
                    t.elapsed().as_secs_f64()
                ));
            }
            for (i, id) in link.diff_ids.into_iter().enumerate() {
                ids[have + i] = Some(id);
            }
            if end == n {
                // (The caller checks the engine's id against nixpack's.)
                return Ok((link.engine_id, link.image_id, link.config));
            }
            if link.engine_id != link.image_id {
                ctx.engine.track_helper_image(&link.engine_id);
                helpers.push(link.engine_id);
                return Err((
                    Error::internal(
                        "loading the image",
                        format!("a partial image came out as {}", link.image_id),
                    ),
                    true,
                ));
            }
            ctx.engine.track_helper_image(&link.engine_id);
            helpers.push(link.engine_id);
            have = end;
        }
    }
    .await;
    for h in helpers.iter().rev() {
        let _ = ctx.engine.remove_helper_image(h).await;
    }
    outcome
}

/// Imports the bottom layer on its own, following its file while the
/// builder writes it. Returns the helper image and the layer's DiffID —
/// `None` when the engine's DiffID is not nixpack's (then the layer must
/// go in an archive after all).
async fn import_bottom(
    ctx: &Ctx<'_>,
    path: &Path,
    comment: &str,
    ready: &Arc<Ready>,
) -> Result<(String, Option<archive::DiffId>), crate::engine::EngineError> {
    let (follow, wait) = (path.to_owned(), ready.clone());
    let (helper, engine_diff) = ctx
        .engine
        .import_layer(comment, move |mut out| {
            wait.follow(&follow, &mut out)?;
            std::io::Write::flush(&mut out)
        })
        .await?;
    let ours = cached_diff_id(path).ok().filter(|d| d.0 == engine_diff);
    Ok((helper, ours))
}

/// What one `docker load` made.
struct Link {
    engine_id: String,
    image_id: String,
    config: Vec<u8>,
    /// DiffIDs of the layers it sent.
    diff_ids: Vec<archive::DiffId>,
}

/// One `docker load`: layers below `from` as empty placeholders (their
/// DiffIDs in `ids`; the engine has them), layers `from..to` from their
/// files as soon as each is complete, then the config and manifest. With
/// a `partial` nonce, the config is a partial image's
/// ([`archive::partial_config_json`]) over layers `..to`; without, the
/// image's own over every layer (then `to` is the top).
async fn load(
    ctx: &Ctx<'_>,
    assembly: &Arc<Assembly>,
    ids: &[Option<archive::DiffId>],
    from: usize,
    to: usize,
    partial: Option<&str>,
) -> Result<Link, Error> {
    let below: Vec<archive::DiffId> = ids[..from]
        .iter()
        .map(|i| i.clone().expect("placeholders have DiffIDs"))
        .collect();
    let (assembly, partial) = (assembly.clone(), partial.map(str::to_owned));
    // The writer thread leaves what it computed here.
    type Made = Arc<std::sync::Mutex<Option<(String, Vec<u8>, Vec<archive::DiffId>)>>>;
    let made: Made = Arc::default();
    let out = made.clone();
    let engine_id = ctx
        .engine
        .load(move |tar| {
            let mut all = below;
            for id in &all {
                super::builder::append_bytes(tar, &format!("{}/layer.tar", id.hex()), b"", 0o644)?;
            }
            for path in &assembly.files[from..to] {
                assembly.ready.wait(path)?;
                let id = cached_diff_id(path)?;
                tar.append_file(
                    format!("{}/layer.tar", id.hex()),
                    &mut std::fs::File::open(path)?,
                )?;
                all.push(id);
            }
            let (config, image_id) = match &partial {
                Some(nonce) => archive::partial_config_json(&all, &assembly.arch, nonce),
                None => assembly.config(&all),
            };
            let config_name = format!("{}.json", image_id.trim_start_matches("sha256:"));
            super::builder::append_bytes(tar, &config_name, &config, 0o644)?;
            super::builder::append_bytes(
                tar,
                "manifest.json",
                &archive::manifest_json(&config_name, &all),
                0o644,
            )?;
            let sent = all.split_off(from);
            *out.lock().expect("result lock") = Some((image_id, config, sent));
            Ok(())
        })
        .await
        .map_err(Error::user)?;
    let (image_id, config, diff_ids) = made
        .lock()
        .expect("result lock")
        .take()
        .ok_or_else(|| Error::internal("loading the image", "the archive was not finished"))?;
    Ok(Link {
        engine_id,
        image_id,
        config,
        diff_ids,
    })
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
