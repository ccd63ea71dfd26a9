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

/// Ensures the store volume exists and matches the builder; returns its name.
pub async fn ensure(ctx: &Ctx<'_>, builder: &BuilderImage) -> Result<String, Error> {
    let name = ctx
        .manifest
        .builder
        .store_volume
        .clone()
        .unwrap_or_else(|| format!("nixpack-store-{}", &builder.store_key[..16]));
    match ctx.engine.volume_labels(&name).await.map_err(Error::user)? {
        Some(labels) if labels.get(RECIPE_LABEL) == Some(&builder.store_key) => return Ok(name),
        Some(labels) => {
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
    let stage = ctx.ui.stage("store", &format!("creating volume {name}"));
    let labels = HashMap::from([
        (RECIPE_LABEL.to_owned(), builder.store_key.clone()),
        ("dev.nixpack.store.base".to_owned(), builder.base_id.clone()),
    ]);
    ctx.engine
        .create_volume(&name, labels)
        .await
        .map_err(Error::user)?;
    // Seed it now, once, from the builder's /nix and open the store, so
    // parallel builds never race to initialise an empty volume.
    let spec = RunSpec {
        image: &builder.id,
        cmd: vec!["-c".into(), "nix-instantiate --eval -E 1 >/dev/null".into()],
        entrypoint: Some(vec!["/bin/sh".into()]),
        env: vec![],
        volumes: vec![(name.clone(), "/nix".into())],
        uploads: vec![],
        labels: HashMap::from([("dev.nixpack.stage".to_owned(), "store".to_owned())]),
        raw_stdout: false,
    };
    let mut tail = Vec::new();
    let code = ctx
        .engine
        .run_to_completion(&spec, |l| tail.push(l.to_owned()), None)
        .await
        .map_err(Error::user)?;
    if code != 0 {
        return Err(Error::msg(
            format!("Nix does not run in the builder `{}` (exit {code}): {}", builder.reference, tail.join(" | ")),
            "the base image in `[builder] from` must have Nix (nix-build, nix-store, nix-instantiate), a POSIX shell and coreutils",
        ));
    }
    stage.done("seeded");
    Ok(name)
}
