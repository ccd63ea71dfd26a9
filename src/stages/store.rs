//! Stage `store`: the persistent `/nix` volume.
//!
//! Docker seeds an empty named volume from the image's `/nix` once, on
//! first mount; after that the volume keeps whatever it has. So a volume
//! must only ever be used with the builder recipe it was seeded from: it is
//! named after the recipe's key (base image id + builder Dockerfile) and
//! labelled with it, and a volume whose label disagrees is refused. An
//! unchanged base keeps its warm store; every project on the same base
//! shares it.

use std::collections::HashMap;

use super::builder::BuilderImage;
use super::Ctx;
use crate::engine::RunSpec;
use crate::error::Error;

const RECIPE_LABEL: &str = "dev.nixpack.store.recipe";

/// The store volume, as the nix stage's key sees it: a volume removed and
/// made again under the same name is another store.
#[derive(Debug, Clone)]
pub struct Store {
    /// Volume name.
    pub name: String,
    /// When the engine created it.
    pub created_at: String,
}

/// How long to wait for another nixpack that is seeding the same volume.
const SEED_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Ensures the store volume exists, matches the builder and is seeded.
///
/// Creating and seeding a volume happens under an engine-wide lock — a
/// container named `nixpack-seeding-<volume>`, which the engine lets only
/// one client create — taken before the volume exists. So a second nixpack
/// either sees no volume and waits for the lock, or sees the lock, or sees
/// a seeded volume: never a half-seeded one.
pub async fn ensure(ctx: &Ctx<'_>, builder: &BuilderImage) -> Result<Store, Error> {
    let name = ctx
        .manifest
        .builder
        .store_volume
        .clone()
        .unwrap_or_else(|| format!("nixpack-store-{}", &builder.store_key[..16]));
    let lock = format!("nixpack-seeding-{name}");
    let started = std::time::Instant::now();
    loop {
        if ctx
            .engine
            .container_exists(&lock)
            .await
            .map_err(Error::user)?
        {
            if started.elapsed() > SEED_WAIT {
                return Err(Error::msg(
                    format!("another nixpack has been seeding the store volume `{name}` for over {} s", SEED_WAIT.as_secs()),
                    format!("if no other nixpack is running, remove the container `{lock}` and build again"),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        }
        match ctx.engine.volume_facts(&name).await.map_err(Error::user)? {
            Some((labels, created_at)) if labels.get(RECIPE_LABEL) == Some(&builder.store_key) => {
                return Ok(Store { name, created_at })
            }
            Some((labels, _)) => {
                let seeded = labels
                    .get(RECIPE_LABEL)
                    .map_or("something that is not a nixpack builder".to_owned(), |k| {
                        format!("builder recipe {}", &k[..16.min(k.len())])
                    });
                return Err(Error::msg(
                    format!("the store volume `{name}` was seeded from {seeded}, not from this builder (recipe {})", &builder.store_key[..16]),
                    "a /nix volume must not be shared with a builder it does not match; remove `[builder] store-volume` to get one named after this builder, or remove the old volume",
                ));
            }
            None => {}
        }
        if ctx
            .engine
            .try_lock(&lock, &builder.id)
            .await
            .map_err(Error::user)?
        {
            let seeded = seed(ctx, builder, &name).await;
            ctx.engine
                .remove_container(&lock)
                .await
                .map_err(Error::user)?;
            seeded?;
        }
    }
}

async fn seed(ctx: &Ctx<'_>, builder: &BuilderImage, name: &str) -> Result<(), Error> {
    let stage = ctx.ui.stage("store", &format!("creating volume {name}"));
    let labels = HashMap::from([
        (RECIPE_LABEL.to_owned(), builder.store_key.clone()),
        (
            "dev.nixpack.store.base".to_owned(),
            builder.base_rootfs.clone(),
        ),
    ]);
    ctx.engine
        .create_volume(name, labels)
        .await
        .map_err(Error::user)?;
    // Docker fills an empty volume from the image's /nix on first mount;
    // opening the store here initialises Nix's database once.
    let spec = RunSpec {
        image: &builder.id,
        cmd: vec!["-c".into(), "nix-instantiate --eval -E 1 >/dev/null".into()],
        entrypoint: Some(vec!["/bin/sh".into()]),
        env: vec![],
        volumes: vec![(name.to_owned(), "/nix".into())],
        uploads: vec![],
        labels: HashMap::from([("dev.nixpack.stage".to_owned(), "store".to_owned())]),
        binds: vec![],
        raw_stdout: false,
    };
    let mut tail = Vec::new();
    let code = ctx
        .engine
        .run_to_completion(&spec, |l| tail.push(l.to_owned()), None)
        .await
        .map_err(Error::user)?;
    if code != 0 {
        // Leave no volume that would pass for seeded.
        let _ = ctx.engine.remove_volume(name).await;
        return Err(Error::msg(
            format!("Nix does not run in the builder `{}` (exit {code}): {}", builder.reference, tail.join(" | ")),
            "the base image in `[builder] from` must have Nix (nix-build, nix-store, nix-instantiate), a POSIX shell and coreutils",
        ));
    }
    stage.done("seeded");
    Ok(())
}
