//! One module per subcommand: each takes its clap arguments and the global
//! options, does the work, and returns an [`crate::error::Error`] on failure.

pub mod build;
pub mod clean;
pub mod gc;
pub mod init;
pub mod inspect;
pub mod push;
pub mod render;
pub mod run;
pub mod why;

use std::path::Path;

use crate::error::Error;
use crate::manifest::{discover, Manifest};

/// Finds and loads the manifest from `--manifest-path` or the current folder.
pub fn load_manifest(explicit: Option<&Path>) -> Result<Manifest, Error> {
    let cwd = std::env::current_dir()
        .map_err(|e| Error::internal("cannot read the current directory", e))?;
    let path = discover(explicit, &cwd)?;
    Ok(Manifest::load(&path)?)
}

/// The image `--image NAME` names, or the first declared.
pub fn pick_image<'m>(
    manifest: &'m Manifest,
    name: Option<&String>,
) -> Result<&'m crate::manifest::Image, Error> {
    match name {
        Some(n) => manifest
            .select(std::slice::from_ref(n))
            .map_err(|m| Error::msg(m, "pass a name declared in an `[[image]]` table"))?
            .first()
            .copied()
            .ok_or_else(|| {
                Error::msg(
                    format!("no image `{n}`"),
                    "pass a name declared in an `[[image]]` table",
                )
            }),
        None => Ok(&manifest.images[0]),
    }
}

/// The closure of a built image, from `.nixpack/<image>/closure.json`.
pub fn built_closure(
    manifest: &Manifest,
    image: &crate::manifest::Image,
) -> Result<crate::closure::Closure, Error> {
    let dir = crate::outputs::image_dir(manifest, image);
    match crate::outputs::read_closure(&dir) {
        Some(Ok(c)) => Ok(c),
        Some(Err(e)) => Err(Error::msg(
            format!("{}: {e}", dir.join("closure.json").display()),
            "run `nixpack build` again to write it anew",
        )),
        None => Err(Error::msg(
            format!(
                "the image `{}` is not built yet (no {})",
                image.reference(),
                dir.join("closure.json").display()
            ),
            "run `nixpack build` first",
        )),
    }
}

/// The async runtime for the commands that talk to the engine.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal("starting the async runtime", e))
}
