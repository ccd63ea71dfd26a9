//! `nixpack render`: write the three rendered files for each image so a
//! user can read them or eject them as overrides.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cli::RenderArgs;
use crate::error::Error;
use crate::manifest::Manifest;
use crate::render::{Renderer, Template};

/// Runs `nixpack render`; returns the folders written.
pub fn run(manifest: &Manifest, args: &RenderArgs) -> Result<Vec<PathBuf>, Error> {
    let images = manifest
        .select(&args.images)
        .map_err(|m| Error::msg(m, "pass a name declared in an `[[image]]` table"))?;
    let renderer = Renderer::new(manifest)?;
    let builder = renderer.builder_dockerfile()?;
    let entrypoint = renderer.entrypoint()?;
    let mut written = Vec::new();
    for image in images {
        let dir = match &args.out {
            Some(out) => out.join(image.slug()),
            None => crate::outputs::image_dir(manifest, image),
        };
        // Layers are only known once a build has described the closure.
        let layers = crate::outputs::planned_layers(&dir, image).unwrap_or_default();
        let scratch = renderer.scratch_dockerfile(image, &layers, &BTreeMap::new())?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::internal(&format!("cannot create {}", dir.display()), e))?;
        for (t, text) in [
            (Template::Builder, &builder),
            (Template::Entrypoint, &entrypoint),
            (Template::Scratch, &scratch),
        ] {
            let path = dir.join(t.file_name());
            crate::outputs::write_atomic(&path, text.as_bytes())
                .map_err(|e| Error::internal(&format!("cannot write {}", path.display()), e))?;
        }
        written.push(dir);
    }
    Ok(written)
}
