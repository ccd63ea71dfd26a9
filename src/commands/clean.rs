//! `nixpack clean`: removes this project's outputs (`.nixpack/<image>/`
//! for the selected images, or all of `.nixpack/`) and the images it
//! tagged — only an image whose tag still points at what this project
//! last built (the engine's id recorded in `.nixpack/<image>/report.json`,
//! with nixpack's `dev.nixpack.closure` label), and never forced: an image
//! a container uses is kept, and said so. `nixpack.lock` stays: it is
//! checked in.

use std::path::Path;

use crate::cli::CleanArgs;
use crate::engine::{Engine, Removal};
use crate::error::Error;
use crate::manifest::Manifest;
use crate::ui::Ui;

/// Runs `nixpack clean`.
pub fn run(manifest: &Manifest, args: &CleanArgs, ui: Ui) -> Result<(), Error> {
    let images = manifest
        .select(&args.images)
        .map_err(|m| Error::msg(m, "pass a name declared in an `[[image]]` table"))?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    super::runtime()?.block_on(async {
        let engine = Engine::connect().await.map_err(Error::user)?;
        for image in &images {
            let dir = crate::outputs::image_dir(manifest, image);
            let reference = image.reference();
            // Never under a build of the same image.
            let _turn = match busy(&dir.join(".lock")) {
                Some(f) => f,
                None => {
                    return Err(Error::msg(
                        format!("a nixpack build of `{reference}` is running"),
                        "run `nixpack clean` again once it has finished",
                    ))
                }
            };
            let recorded = std::fs::read_to_string(dir.join("report.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|r| r["id"].as_str().map(str::to_owned));
            match engine.inspect_image(&reference).await.map_err(Error::user)? {
                None => {}
                Some(facts) if !facts.labels.contains_key("dev.nixpack.closure") => ui.line(
                    &format!("kept image {reference}: nixpack did not make it (no dev.nixpack.closure label)"),
                ),
                Some(facts) if recorded.as_deref() != Some(facts.id.as_str()) => ui.line(&format!(
                    "kept image {reference}: it is not the image this project last built (see {})",
                    dir.join("report.json").display()
                )),
                Some(facts) if args.dry_run => ui.line(&format!(
                    "{verb} image {reference} ({})",
                    crate::stages::nix::human_bytes(facts.size)
                )),
                Some(facts) => match engine
                    .remove_image_if_unused(&reference)
                    .await
                    .map_err(Error::user)?
                {
                    Removal::InUse(why) => ui.line(&format!(
                        "kept image {reference}: a container uses it ({why}); remove the container and clean again"
                    )),
                    _ => ui.line(&format!(
                        "{verb} image {reference} ({})",
                        crate::stages::nix::human_bytes(facts.size)
                    )),
                },
            }
            if dir.exists() {
                ui.line(&format!(
                    "{verb} {} ({})",
                    dir.display(),
                    crate::stages::nix::human_bytes(du(&dir))
                ));
                if !args.dry_run {
                    std::fs::remove_dir_all(&dir)
                        .map_err(|e| Error::internal(&format!("removing {}", dir.display()), e))?;
                }
            }
        }
        let project = crate::outputs::project_dir(manifest);
        if args.images.is_empty() && project.exists() {
            // What is left is the project's own: the nixpack.lock lock file.
            if !args.dry_run {
                std::fs::remove_dir_all(&project).map_err(|e| {
                    Error::internal(&format!("removing {}", project.display()), e)
                })?;
            }
            ui.line(&format!("{verb} {}", project.display()));
        }
        Ok(())
    })
}

/// The image folder's lock, or `None` when a build holds it.
fn busy(lock: &Path) -> Option<Option<std::fs::File>> {
    let Ok(f) = std::fs::OpenOptions::new().write(true).open(lock) else {
        return Some(None);
    };
    match f.try_lock() {
        Ok(()) => Some(Some(f)),
        Err(_) => None,
    }
}

/// Bytes of the files under `dir`.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => total += e.metadata().map_or(0, |m| m.len()),
                Err(_) => {}
            }
        }
    }
    total
}
