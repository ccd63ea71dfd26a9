//! Stage `builder`: the image Nix runs in.
//!
//! Reads `[builder] from` and the builder + entrypoint templates; writes
//! the image `nixpack-builder:<key>`, where the key covers the base image's
//! id and both rendered files. Skipped when that tag exists.

use std::collections::HashMap;

use super::{key, Ctx};
use crate::error::Error;

/// The builder image and the identities derived from it.
#[derive(Debug, Clone)]
pub struct BuilderImage {
    /// `nixpack-builder:<key>`.
    pub reference: String,
    /// Its image id.
    pub id: String,
    /// The base image's content, the same in every image store: sha256 of
    /// its layer DiffIDs (the engine's image id is the config digest on
    /// the classic store and the manifest digest on containerd's).
    pub base_rootfs: String,
    /// Key of what seeds `/nix`: the base id and the builder Dockerfile.
    /// The store volume is named after it.
    pub store_key: String,
}

/// Ensures the builder image exists; returns it and whether it was built.
pub async fn ensure(ctx: &Ctx<'_>) -> Result<(BuilderImage, bool), Error> {
    let dockerfile = ctx.renderer.builder_dockerfile()?;
    let entrypoint = ctx.renderer.entrypoint()?;
    let from = ctx.manifest.builder.from.to_string();

    let base = match ctx
        .engine()?
        .inspect_image(&from)
        .await
        .map_err(Error::user)?
    {
        Some(b) => b,
        None => {
            // A private base: the credentials `docker login` stored.
            let credentials = crate::registry::auth::for_pull(&from).map_err(|e| {
                Error::msg(
                    format!("reading the credentials to pull `{from}`: {e}"),
                    "fix or remove that entry of ~/.docker/config.json (or $DOCKER_CONFIG), or run `docker login` again",
                )
            })?;
            let stage = ctx.ui.stage("builder", &format!("pulling {from}"));
            let pulled = ctx
                .engine()?
                .pull(&from, credentials, |line| stage.message(line))
                .await;
            if let Err(e) = pulled {
                return Err(Error::msg(
                    format!("the builder base image `{from}` is not here and could not be pulled: {e}"),
                    format!(
                        "a private base needs `docker login {}` first (nixpack pulls with the credentials it stored); or point `[builder] from` in nixpack.toml at a local image with Nix (offline: run scripts/make-builder-base and use from = \"nixpack-base:bookworm\")",
                        crate::registry::auth::registry_of(&from)
                    ),
                ));
            }
            stage.done("pulled");
            ctx.engine()?
                .inspect_image(&from)
                .await
                .map_err(Error::user)?
                .ok_or_else(|| {
                    Error::msg(
                        format!("`{from}` is still missing after the pull"),
                        "check the engine's image store",
                    )
                })?
        }
    };
    let full = key(&[
        base.id.as_bytes(),
        dockerfile.as_bytes(),
        entrypoint.as_bytes(),
    ]);
    let store_key = key(&[base.id.as_bytes(), dockerfile.as_bytes()]);
    let reference = format!("nixpack-builder:{}", &full[..16]);
    if let Some(existing) = ctx
        .engine()?
        .inspect_image(&reference)
        .await
        .map_err(Error::user)?
    {
        return Ok((
            BuilderImage {
                reference,
                id: existing.id,
                base_rootfs: rootfs_digest(&base.layers),
                store_key,
            },
            false,
        ));
    }

    let stage = ctx.ui.stage("builder", &format!("building {reference}"));
    let labels = HashMap::from([("dev.nixpack.builder.key".to_owned(), full.clone())]);
    let (df, ep) = (dockerfile.clone(), entrypoint.clone());
    let ui = ctx.ui.clone();
    let built = ctx
        .engine()?
        .build(
            "the builder image",
            labels,
            move |tar| {
                append_bytes(tar, "Dockerfile", df.as_bytes(), 0o644)?;
                append_bytes(tar, "entrypoint.sh", ep.as_bytes(), 0o755)
            },
            |line| {
                stage.message(line);
                if ui.verbose() > 0 {
                    ui.log(&format!("builder: {line}"));
                }
            },
        )
        .await;
    let id = match built {
        Ok(id) => id,
        Err(e) => {
            let template = match &ctx.manifest.builder.templates.builder {
                Some(p) => format!("your override `{}`", p.display()),
                None => "the built-in templates/builder.Dockerfile.hbs".to_owned(),
            };
            return Err(Error::msg(
                format!("stage builder failed: {e}"),
                format!("the builder Dockerfile comes from {template}; `nixpack render` writes it to .nixpack/<image>/builder.Dockerfile to inspect"),
            ));
        }
    };
    // Another nixpack may have built the same recipe meanwhile: keep its
    // image and drop ours rather than leave a dangling copy.
    if let Some(winner) = ctx
        .engine()?
        .inspect_image(&reference)
        .await
        .map_err(Error::user)?
    {
        if winner.id != id {
            let _ = ctx.engine()?.remove_image(&id).await;
        }
        stage.done("built (another build tagged it first)");
        return Ok((
            BuilderImage {
                reference,
                id: winner.id,
                base_rootfs: rootfs_digest(&base.layers),
                store_key,
            },
            true,
        ));
    }
    ctx.engine()?
        .tag(&id, "nixpack-builder", &full[..16])
        .await
        .map_err(Error::user)?;
    stage.done("built");
    Ok((
        BuilderImage {
            reference,
            id,
            base_rootfs: rootfs_digest(&base.layers),
            store_key,
        },
        true,
    ))
}

/// Appends an in-memory file with fixed metadata.
pub fn append_bytes<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(mode);
    h.set_mtime(1);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, bytes)
}

/// `sha256:` of an image's layer DiffIDs, one per line.
pub fn rootfs_digest(diff_ids: &[String]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for d in diff_ids {
        h.update(d.as_bytes());
        h.update(b"\n");
    }
    format!("sha256:{}", crate::closure::hex(&h.finalize()))
}
