//! `nixpack gc`: removes what nixpack made on this engine and no project
//! on this machine uses any more — builder images and store volumes (with
//! their seeded markers) that only deleted projects used, as the registry
//! ([`crate::projects`]) records; seeding locks whose owner is gone; and
//! the untagged images nixpack made for the recorded projects. Nothing is
//! forced: an image or volume a container uses is kept, and said so.

use std::collections::HashMap;

use crate::cli::GcArgs;
use crate::engine::{Engine, Removal};
use crate::error::Error;
use crate::projects::Registry;
use crate::stages::store::{judge_lock, marker_name, LockVerdict};
use crate::ui::Ui;

/// Runs `nixpack gc`.
pub fn run(args: &GcArgs, ui: Ui) -> Result<(), Error> {
    let path = Registry::path().ok_or_else(|| {
        Error::msg(
            "nixpack cannot find its state folder",
            "set XDG_STATE_HOME or HOME",
        )
    })?;
    super::runtime()?.block_on(async {
        let engine = Engine::connect().await.map_err(Error::user)?;
        let _turn = crate::outputs::lock_file(&path.with_extension("lock"), || {
            ui.log("waiting for another nixpack using the registry")
        })
        .await
        .map_err(|e| Error::internal("locking the registry", e))?;
        let mut registry = Registry::read(&path);
        let garbage = registry.garbage(&engine.host, |m| m.exists());
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let mut total = 0u64;
        let mut removed_builders = Vec::new();
        let mut removed_volumes = Vec::new();

        for b in &garbage.builders {
            let Some(facts) = engine.inspect_image(b).await.map_err(Error::user)? else {
                removed_builders.push(b.clone());
                continue;
            };
            if args.dry_run {
                ui.line(&format!("{verb} builder image {b} ({})", human(facts.size)));
                total += facts.size;
                continue;
            }
            match engine
                .remove_image_if_unused(b)
                .await
                .map_err(Error::user)?
            {
                Removal::InUse(why) => ui.line(&format!("kept builder image {b}: {why}")),
                _ => {
                    ui.line(&format!("{verb} builder image {b} ({})", human(facts.size)));
                    total += facts.size;
                    removed_builders.push(b.clone());
                }
            }
        }

        let sizes = if garbage.volumes.is_empty() {
            HashMap::new()
        } else {
            engine.volume_sizes().await
        };
        for v in &garbage.volumes {
            let size = sizes.get(v).copied();
            let shown = size.map_or("size unknown".to_owned(), human);
            if engine.volume_facts(v).await.map_err(Error::user)?.is_none() {
                let _ = engine.remove_volume(&marker_name(v)).await;
                removed_volumes.push(v.clone());
                continue;
            }
            if args.dry_run {
                ui.line(&format!("{verb} store volume {v} ({shown})"));
                total += size.unwrap_or(0);
                continue;
            }
            match engine
                .remove_volume_if_unused(v)
                .await
                .map_err(Error::user)?
            {
                Removal::InUse(why) => ui.line(&format!("kept store volume {v}: {why}")),
                _ => {
                    engine
                        .remove_volume(&marker_name(v))
                        .await
                        .map_err(Error::user)?;
                    ui.line(&format!("{verb} store volume {v} ({shown})"));
                    total += size.unwrap_or(0);
                    removed_volumes.push(v.clone());
                }
            }
        }

        // Seeding locks whose owner is gone (the rule of stages::store).
        let here = crate::engine::LockOwner::me();
        for name in engine
            .container_names_labelled("dev.nixpack.lock")
            .await
            .map_err(Error::user)?
        {
            let Some(lock) = engine.lock_facts(&name).await.map_err(Error::user)? else {
                continue;
            };
            if judge_lock(&lock, &here) == LockVerdict::TakeOver {
                if !args.dry_run {
                    engine
                        .force_remove_container(&lock.id)
                        .await
                        .map_err(Error::user)?;
                }
                ui.line(&format!("{verb} stale seeding lock {name}"));
            }
        }

        // Untagged images nixpack made for a recorded project: an older
        // build's image, or one an interrupted build loaded.
        let names = registry.image_names(&engine.host);
        let dangling = engine
            .list_images(HashMap::from([
                ("dangling", vec!["true"]),
                ("label", vec!["dev.nixpack.closure"]),
            ]))
            .await
            .map_err(Error::user)?;
        for i in dangling.iter().filter(|i| {
            i.tags.is_empty()
                && i.labels
                    .get("org.opencontainers.image.title")
                    .is_some_and(|t| names.contains(t))
        }) {
            let title = &i.labels["org.opencontainers.image.title"];
            let short = &i.id[i.id.len().min(7)..i.id.len().min(19)];
            if args.dry_run {
                ui.line(&format!(
                    "{verb} untagged image {short} of {title} ({})",
                    human(i.size)
                ));
                total += i.size;
                continue;
            }
            match engine
                .remove_image_if_unused(&i.id)
                .await
                .map_err(Error::user)?
            {
                Removal::InUse(why) => {
                    ui.line(&format!("kept untagged image {short} of {title}: {why}"))
                }
                _ => {
                    ui.line(&format!(
                        "{verb} untagged image {short} of {title} ({})",
                        human(i.size)
                    ));
                    total += i.size;
                }
            }
        }

        if !args.dry_run {
            registry.forget(
                &engine.host,
                &removed_builders,
                &removed_volumes,
                &garbage.gone,
            );
            registry
                .write(&path)
                .map_err(|e| Error::internal("writing the registry", e))?;
        }
        ui.line(&format!(
            "{} {} in all{}",
            if args.dry_run { "would free" } else { "freed" },
            human(total),
            if args.dry_run {
                " (nothing was removed)"
            } else {
                ""
            }
        ));
        Ok(())
    })
}

fn human(bytes: u64) -> String {
    crate::stages::nix::human_bytes(bytes)
}
