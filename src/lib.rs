//! nixpack: minimal `FROM scratch` Docker images out of Nix expressions.
//!
//! The pure core (`manifest`, `reference`, `render`, `closure`, `layers`,
//! `conventions`, `dockerfile`, `archive`, `lock`, `sbom`) does no I/O beyond
//! reading the manifest's own files; `engine` is the one place that talks
//! to Docker, `registry` the one that talks to registries, and `stages`
//! drive a build.
#![deny(missing_docs)]

pub mod archive;
pub mod cli;
pub mod closure;
pub mod commands;
pub mod compress;
pub mod conventions;
pub mod dockerfile;
pub mod endpoint;
pub mod engine;
pub mod error;
pub mod layer_tar;
pub mod layers;
pub mod lock;
pub mod manifest;
pub mod nar;
pub mod oci;
pub mod outputs;
pub mod picture;
pub mod projects;
pub mod record;
pub mod reference;
pub mod registry;
pub mod render;
pub mod sbom;
pub mod sources;
pub mod stages;
pub mod ui;
