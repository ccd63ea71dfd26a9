//! `nixpack build` (placeholder until the engine lands).
use crate::cli::BuildArgs;
use crate::error::Error;
use crate::manifest::Manifest;
use crate::ui::Ui;

/// Runs `nixpack build`.
pub fn run(_m: Manifest, _a: &BuildArgs, _ui: Ui) -> Result<(), Error> {
    Err(Error::internal("build", "not implemented yet"))
}
