//! The stages of `nixpack build`, one file each, in the order they run:
//!
//! | stage     | reads                                  | writes                                   |
//! |-----------|----------------------------------------|------------------------------------------|
//! | `builder` | `[builder]`, builder + entrypoint templates | image `nixpack-builder:<key>`         |
//! | `store`   | the builder's recipe key               | volume `nixpack-store-<key>` (`/nix`)    |
//! | `nix`     | the project's files, the image's expression | `closure.json`, `graph.*`, `build.log` |
//! | `layers`  | `closure.json`, `layers = N`           | `layers/*.tar`                           |
//! | `image`   | the layers, the scratch template       | image `NAME:TAG`                         |
//!
//! Each stage has a key computed from its inputs and skips its work when
//! the key is unchanged.

pub mod builder;
pub mod image;
pub mod layers;
pub mod nix;
pub mod runner;
pub mod store;

use sha2::{Digest, Sha256};

use crate::closure::hex;
use crate::engine::Engine;
use crate::manifest::Manifest;
use crate::render::Renderer;
use crate::ui::Ui;

/// What every stage needs.
pub struct Ctx<'a> {
    /// The engine: none when Nix runs on the host and no image is loaded
    /// into an engine.
    pub engine: Option<&'a Engine>,
    /// The manifest.
    pub manifest: &'a Manifest,
    /// Templates, loaded once.
    pub renderer: &'a Renderer<'a>,
    /// Output.
    pub ui: &'a Ui,
}

impl Ctx<'_> {
    /// The engine, for a step that needs one.
    pub fn engine(&self) -> Result<&Engine, crate::error::Error> {
        self.engine.ok_or_else(|| {
            crate::error::Error::msg(
                "this step needs a Docker Engine, and this build has none",
                "with `runner = \"host\"`, an image goes to the engine only when one is wanted: add `--output docker`, or write it with `--output oci:DIR`",
            )
        })
    }
}

/// A stage key: hex sha256 over length-prefixed parts, so that parts can
/// never run into each other.
pub fn key(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex(&h.finalize())
}

/// The mtime of every entry of every layer: `SOURCE_DATE_EPOCH` when set,
/// else 1 (what the Nix store itself uses).
pub fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// For an error in the builder container: names the entrypoint override,
/// when the project has one, as the script that ran.
pub fn entrypoint_note(ctx: &Ctx<'_>) -> String {
    match &ctx.manifest.builder.templates.entrypoint {
        Some(p) => format!(
            "; the builder ran your entrypoint override `{}` (stage nix/layers)",
            p.display()
        ),
        None => String::new(),
    }
}
