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
pub async fn run(ctx: &Ctx<'_>, image: &Image, dir: &Path, closure: &Closure, layers: &Layers) -> Result<Built, Error> {
    let labels = BTreeMap::from([
        ("org.opencontainers.image.title".to_owned(), image.name.to_string()),
        ("org.opencontainers.image.version".to_owned(), image.tag.to_string()),
        ("org.opencontainers.image.description".to_owned(), format!("{} built by nixpack from {}", ctx.manifest.project.name, image.expression)),
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
        crate::outputs::write_atomic(&dir.join(t.file_name()), text.as_bytes()).map_err(|e| Error::internal("writing rendered files", e))?;
    }

    let files: Vec<String> = entries.iter().map(|e| e.file.clone()).collect();
    let key = key(&[dockerfile.as_bytes(), files.join("\n").as_bytes()]);
    let reference = image.reference();
    if let Some(existing) = ctx.engine.inspect_image(&reference).await.map_err(Error::user)? {
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
    let df = dockerfile.clone();
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
                format!("the Dockerfile comes from {template}; it is saved as {}", dir.join("scratch.Dockerfile").display()),
            )
        })?;
    if let Err(e) = ctx.engine.tag(&id, image.name.as_str(), image.tag.as_str()).await {
        let _ = ctx.engine.remove_image(&id).await;
        return Err(Error::user(e));
    }
    let facts = ctx
        .engine
        .inspect_image(&id)
        .await
        .map_err(Error::user)?
        .ok_or_else(|| Error::internal("inspecting the new image", "it vanished"))?;
    stage.done(&format!("tagged {reference}"));
    Ok(Built {
        reference,
        id,
        size: facts.size,
        diff_ids: facts.layers,
        built: true,
    })
}
