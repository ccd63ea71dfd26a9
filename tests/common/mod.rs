//! Helpers shared by the integration tests: a `nixpack` command with a
//! plain, colourless output, and throwaway projects in temporary folders.
#![allow(dead_code)] // each test crate uses a different part of it

pub mod engine;

use std::path::Path;

use assert_cmd::Command;

/// The `nixpack` binary, in `dir`, with colours and terminal links off and
/// no Docker settings from the environment (the engine is the default
/// socket).
pub fn nixpack(dir: &Path) -> Command {
    let mut cmd = assert_cmd::cargo::cargo_bin_cmd!("nixpack");
    cmd.current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("FORCE_COLOR")
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_CONFIG")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH");
    cmd
}

/// A temporary folder holding `files` (path, contents); parents are made.
pub fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for (path, text) in files {
        write(dir.path(), path, text);
    }
    dir
}

/// Writes `root/rel`, creating its parents.
pub fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("a file has a parent")).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A diagnostic with miette's line wrapping and gutter undone, so that a
/// sentence can be searched for wherever the terminal width broke it.
pub fn squash(stderr: &str) -> String {
    stderr
        .split_whitespace()
        .filter(|w| !matches!(*w, "│" | "·"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The three rendered files of an image folder, in build order.
pub const RENDERED: [&str; 3] = ["builder.Dockerfile", "entrypoint.sh", "scratch.Dockerfile"];

/// The built-in templates, as `[builder.templates]` overrides expect them.
pub const TEMPLATES: [(&str, &str); 3] = [
    (
        "builder.Dockerfile.hbs",
        include_str!("../../templates/builder.Dockerfile.hbs"),
    ),
    (
        "entrypoint.sh.hbs",
        include_str!("../../templates/entrypoint.sh.hbs"),
    ),
    (
        "scratch.Dockerfile.hbs",
        include_str!("../../templates/scratch.Dockerfile.hbs"),
    ),
];

/// `nixpack.toml.example` from the top of the repository.
pub const EXAMPLE: &str = include_str!("../../nixpack.toml.example");

/// A folder where `nixpack.toml.example` is `nixpack.toml` and every file
/// it names exists: the expressions, the template overrides (copies of the
/// built-in templates, so rendering matches the defaults) and the nixpkgs
/// checkout its commented-out `path` would use.
pub fn example_project() -> tempfile::TempDir {
    let dir = project(&[
        ("nixpack.toml", EXAMPLE),
        ("nix/api.nix", "{ packages.api = builtins.derivation { name = \"api\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \"mkdir -p $out/bin\" ]; }; }\n"),
        ("nix/worker.nix", "builtins.derivation { name = \"worker\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \"mkdir -p $out/bin\" ]; }\n"),
        ("vendor/nixpkgs/default.nix", "{ ... }: { }\n"),
    ]);
    for (name, text) in TEMPLATES {
        write(dir.path(), &format!("nixpack/{name}"), text);
    }
    dir
}

/// The instructions the built-in scratch template writes: any other line
/// (besides comments) in a rendered scratch.Dockerfile is an injection.
pub const SCRATCH_INSTRUCTIONS: [&str; 9] = [
    "FROM ",
    "ADD ",
    "ENV ",
    "EXPOSE ",
    "WORKDIR ",
    "USER ",
    "LABEL ",
    "ENTRYPOINT ",
    "CMD ",
];
