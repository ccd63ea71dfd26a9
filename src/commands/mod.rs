//! One module per subcommand: each takes its clap arguments and the global
//! options, does the work, and returns an [`crate::error::Error`] on failure.

pub mod build;
pub mod init;
pub mod push;
pub mod render;
pub mod run;

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

/// The async runtime for the commands that talk to the engine.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal("starting the async runtime", e))
}
