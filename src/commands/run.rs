//! `nixpack run` (placeholder until the engine lands).
use crate::cli::RunArgs;
use crate::error::Error;
use crate::manifest::Manifest;
use crate::ui::Ui;

/// Runs `nixpack run`.
pub fn run(_m: Manifest, _a: &RunArgs, _ui: Ui) -> Result<(), Error> {
    Err(Error::internal("run", "not implemented yet"))
}
