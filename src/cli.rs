//! Command-line types (clap). Nothing here runs anything; `commands/` does.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

/// Build minimal FROM-scratch Docker images out of Nix expressions.
#[derive(Debug, Parser)]
#[command(name = "nixpack", version, about, propagate_version = true)]
pub struct Cli {
    /// Path to nixpack.toml (default: search the current directory and its parents).
    #[arg(long, global = true, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,

    /// Print less: no build logs, only results and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more (repeat for even more).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create nixpack.toml and an example expression in DIR (default: here).
    Init(InitArgs),
    /// Write the rendered builder Dockerfile, entrypoint and scratch Dockerfile.
    Render(RenderArgs),
    /// Build the declared images through the Docker Engine.
    Build(BuildArgs),
    /// Run a built image with its ports published on 127.0.0.1.
    Run(RunArgs),
    /// Push built images straight to a registry (no engine involved).
    Push(PushArgs),
}

/// `nixpack init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Folder to initialise (created if missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Project name (default: the folder's name).
    #[arg(long)]
    pub name: Option<String>,
}

/// `nixpack render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Only this image (repeatable; default: all).
    #[arg(long = "image", value_name = "NAME")]
    pub images: Vec<String>,
    /// Write here instead of .nixpack/<image>/ (one sub-folder per image).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `nixpack build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Only this image (repeatable; default: all).
    #[arg(long = "image", value_name = "NAME")]
    pub images: Vec<String>,
    /// Build this many images at once over the shared store.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Fail (exit 1, with a diff) if the build would change nixpack.lock;
    /// images are tagged only when it would not.
    #[arg(long)]
    pub locked: bool,
    /// Also write the images as OCI: `oci:DIR` (an OCI image layout folder;
    /// with several images, one sub-folder each) or `oci-archive:FILE` (the
    /// same as a tar, one image). Repeatable.
    #[arg(long = "output", value_name = "oci:DIR|oci-archive:FILE", value_parser = parse_output)]
    pub outputs: Vec<Output>,
    /// Then push the images to their registries, as `nixpack push` does.
    #[arg(long)]
    pub push: bool,
    /// How to push (with --push).
    #[command(flatten)]
    pub push_options: PushOptions,
}

/// `nixpack push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Only this image (repeatable; default: all).
    #[arg(long = "image", value_name = "NAME")]
    pub images: Vec<String>,
    /// Push to these references instead of the image's NAME:TAG
    /// (`[REGISTRY/]REPOSITORY[:TAG]`; one image must be selected).
    #[arg(value_name = "REF")]
    pub refs: Vec<String>,
    /// How to push.
    #[command(flatten)]
    pub options: PushOptions,
}

/// Options of a push, shared by `nixpack push` and `nixpack build --push`.
#[derive(Debug, Args, Clone, Default)]
pub struct PushOptions {
    /// Speak plain HTTP to the registry (loopback registries always get
    /// plain HTTP).
    #[arg(long)]
    pub insecure: bool,
    /// Log in as USER (the password is read from stdin with
    /// --password-stdin); default: Docker's config.json and its helpers.
    #[arg(long, value_name = "USER", requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password for --username from stdin.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// How layers are compressed for the registry.
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
    pub compression: CompressionArg,
}

/// `--compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CompressionArg {
    /// gzip, level 6: every client pulls it.
    #[default]
    Gzip,
    /// zstd, level 3: smaller and faster; Docker 20.10 cannot pull it.
    Zstd,
}

impl From<CompressionArg> for crate::compress::Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::Gzip => crate::compress::Compression::GZIP,
            CompressionArg::Zstd => crate::compress::Compression::ZSTD,
        }
    }
}

/// Where `--output` writes an image besides the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An OCI image layout folder.
    Oci(PathBuf),
    /// An OCI image layout as a tar file.
    OciArchive(PathBuf),
}

fn parse_output(s: &str) -> Result<Output, String> {
    let (kind, path) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` names no kind: write oci:DIR or oci-archive:FILE"))?;
    if path.is_empty() {
        return Err(format!("`{s}` names no path"));
    }
    match kind {
        "oci" => Ok(Output::Oci(path.into())),
        "oci-archive" => Ok(Output::OciArchive(path.into())),
        other => Err(format!(
            "unknown output kind `{other}`: write oci:DIR or oci-archive:FILE"
        )),
    }
}

/// `nixpack run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The image to run (default: the only one, or the first declared).
    #[arg(long = "image", value_name = "NAME")]
    pub image: Option<String>,
    /// Arguments passed to the image (replace its CMD).
    #[arg(last = true)]
    pub args: Vec<String>,
}
