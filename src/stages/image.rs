//! Stage `image`: the `FROM scratch` image, tagged `NAME:TAG`.
//!
//! Reads the layer tarballs and the scratch template; writes the image.
//! The build context (Dockerfile + layers) is streamed from disk, never
//! held in memory. The image carries its stage key as a label; when the
//! tagged image already has this key, nothing is built. The tag is set
//! only after a successful build, so a failure never leaves a tag on a
//! half-made image.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::layers::Layers;
use super::{key, Ctx};
use crate::archive;
use crate::closure::Closure;
use crate::error::Error;
use crate::manifest::Image;
use crate::render::Template;

/// Label holding the image stage's key.
pub const KEY_LABEL: &str = "dev.nixpack.key";

/// The tagged image.
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

/// Builds and tags the image unless the tagged one already has this key.
/// With `tag` false the image is made but `NAME:TAG` is left alone (for
/// `--locked`, which tags only once the lock agrees).
pub async fn run(
    ctx: &Ctx<'_>,
    image: &Image,
    dir: &Path,
    closure: &Closure,
    layers: &Layers,
    tag: bool,
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
            assemble(ctx, image, dir, &recipe, &notes, tag).await
        }
        Err(why) => {
            if ctx.ui.verbose() > 0 {
                ctx.ui.log(&format!("{reference}: scratch.Dockerfile line {}: {}; building it with the Engine's builder", why.line, why.reason));
            }
            docker_build(ctx, image, dir, &dockerfile, &entries, tag).await
        }
    }
}

/// The native path: nixpack writes the image config and loads the layers
/// as a docker-archive. The image id is a pure function of the layers and
/// the config, so "unchanged" is simply "the tag already points at it".
async fn assemble(
    ctx: &Ctx<'_>,
    image: &Image,
    dir: &Path,
    recipe: &crate::dockerfile::Recipe,
    notes: &[String],
    tag: bool,
) -> Result<Built, Error> {
    let reference = image.reference();
    let mut diff_ids = Vec::with_capacity(recipe.layers.len());
    for f in &recipe.layers {
        diff_ids.push(
            cached_diff_id(&dir.join(f))
                .map_err(|e| Error::internal(&format!("reading the layer {f}"), e))?,
        );
    }
    let arch = ctx.engine.architecture().await.map_err(Error::user)?;
    let (config, image_id) =
        archive::config_json(recipe, &diff_ids, notes, &arch, super::source_date_epoch());
    crate::outputs::write_atomic(&dir.join("image-config.json"), &config)
        .map_err(|e| Error::internal("writing image-config.json", e))?;

    let existing = ctx
        .engine
        .inspect_image(&reference)
        .await
        .map_err(Error::user)?;
    if existing.as_ref().is_some_and(|e| e.id == image_id) {
        let e = existing.expect("checked");
        return Ok(Built {
            reference,
            id: e.id,
            size: e.size,
            diff_ids: e.layers,
            built: false,
        });
    }
    let name = image.name.to_string();
    let stage = ctx.ui.stage(&name, "loading the image");
    if ctx
        .engine
        .inspect_image(&image_id)
        .await
        .map_err(Error::user)?
        .is_none()
    {
        // Layers the engine already holds under the same parent chain need
        // not be sent again: the previous image shares a prefix of them.
        let shared = existing.map_or(0, |e| {
            e.layers
                .iter()
                .zip(&diff_ids)
                .take_while(|(a, b)| **a == b.0)
                .count()
        });
        let mut loaded = load(ctx, dir, recipe, &diff_ids, &config, &image_id, shared).await;
        if let (Err(e), true) = (&loaded, shared > 0) {
            // An engine that insists on every layer gets every layer.
            if ctx.ui.verbose() > 0 {
                ctx.ui.log(&format!(
                    "{name}: the engine wants all layers ({:?}); sending them",
                    e.report()
                ));
            }
            loaded = load(ctx, dir, recipe, &diff_ids, &config, &image_id, 0).await;
        } else if ctx.ui.verbose() > 0 && shared > 0 {
            ctx.ui.log(&format!(
                "{name}: {shared} of {} layers were already in the engine and not sent",
                diff_ids.len()
            ));
        }
        let id = loaded?;
        if id != image_id {
            return Err(Error::internal(
                "loading the image",
                format!("the engine computed {id}, nixpack {image_id}"),
            ));
        }
    }
    if tag {
        ctx.engine
            .tag(&image_id, image.name.as_str(), image.tag.as_str())
            .await
            .map_err(Error::user)?;
    }
    let facts = ctx
        .engine
        .inspect_image(&image_id)
        .await
        .map_err(Error::user)?
        .ok_or_else(|| Error::internal("inspecting the new image", "it vanished"))?;
    stage.done(if tag {
        "tagged"
    } else {
        "loaded (not tagged yet)"
    });
    Ok(Built {
        reference,
        id: image_id,
        size: facts.size,
        diff_ids: facts.layers,
        built: true,
    })
}

async fn load(
    ctx: &Ctx<'_>,
    dir: &Path,
    recipe: &crate::dockerfile::Recipe,
    diff_ids: &[archive::DiffId],
    config: &[u8],
    image_id: &str,
    skip: usize,
) -> Result<String, Error> {
    let files: Vec<(std::path::PathBuf, archive::DiffId)> = recipe
        .layers
        .iter()
        .map(|f| dir.join(f))
        .zip(diff_ids.iter().cloned())
        .collect();
    let config = config.to_vec();
    let config_name = format!("{}.json", image_id.trim_start_matches("sha256:"));
    let manifest = archive::manifest_json(&config_name, diff_ids);
    ctx.engine
        .load(move |tar| {
            for (i, (path, id)) in files.iter().enumerate() {
                let name = format!("{}/layer.tar", id.hex());
                if i < skip {
                    super::builder::append_bytes(tar, &name, b"", 0o644)?;
                } else {
                    tar.append_file(&name, &mut std::fs::File::open(path)?)?;
                }
            }
            super::builder::append_bytes(tar, &config_name, &config, 0o644)?;
            super::builder::append_bytes(tar, "manifest.json", &manifest, 0o644)
        })
        .await
        .map_err(Error::user)
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
    tag: bool,
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
    if !tag {
        // Left untagged for the caller.
    } else if let Err(e) = ctx
        .engine
        .tag(&id, image.name.as_str(), image.tag.as_str())
        .await
    {
        let _ = ctx.engine.remove_image(&id).await;
        return Err(Error::user(e));
    }
    let facts = ctx
        .engine
        .inspect_image(&id)
        .await
        .map_err(Error::user)?
        .ok_or_else(|| Error::internal("inspecting the new image", "it vanished"))?;
    stage.done(if tag {
        "tagged"
    } else {
        "loaded (not tagged yet)"
    });
    Ok(Built {
        reference,
        id,
        size: facts.size,
        diff_ids: facts.layers,
        built: true,
    })
}
