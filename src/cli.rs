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
    /// Show a built image: digests, size, layers, largest store paths (no engine needed).
    Inspect(InspectArgs),
    /// Show why the image holds a store path: the shortest chain from the result to it.
    Why(WhyArgs),
    /// Remove this project's outputs (.nixpack/) and the images it tagged.
    Clean(CleanArgs),
    /// Remove builder images and store volumes no project on this machine uses.
    Gc(GcArgs),
    /// Push built images straight to a registry (no engine involved).
    Push(PushArgs),
}

/// `nixpack clean`.
#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Only this image (repeatable; default: all).
    #[arg(long = "image", value_name = "NAME")]
    pub images: Vec<String>,
    /// List what would be removed, with sizes; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `nixpack gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// List what would be removed, with sizes; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
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
    /// Where the images go (repeatable; default: docker, or only the
    /// registry with --push): `docker` (loaded
    /// into the Docker Engine and tagged), `oci:DIR` (an OCI image layout
    /// folder; with several images, one sub-folder each) or
    /// `oci-archive:FILE` (the same as a tar, one image).
    #[arg(long = "output", value_name = "docker|oci:DIR|oci-archive:FILE", value_parser = parse_output)]
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
    /// Do not attach the CycloneDX SBOM to the pushed image (by default it
    /// goes with it, as an OCI 1.1 referrer).
    #[arg(long)]
    pub no_sbom: bool,
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

/// Where `--output` writes an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The Docker Engine (the default when no `--output` is given).
    Docker,
    /// An OCI image layout folder.
    Oci(PathBuf),
    /// An OCI image layout as a tar file.
    OciArchive(PathBuf),
}

fn parse_output(s: &str) -> Result<Output, String> {
    if s == "docker" {
        return Ok(Output::Docker);
    }
    let (kind, path) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` names no kind: write docker, oci:DIR or oci-archive:FILE"))?;
    if path.is_empty() {
        return Err(format!("`{s}` names no path"));
    }
    match kind {
        "oci" => Ok(Output::Oci(path.into())),
        "oci-archive" => Ok(Output::OciArchive(path.into())),
        other => Err(format!(
            "unknown output kind `{other}`: write docker, oci:DIR or oci-archive:FILE"
        )),
    }
}

/// `nixpack run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The image to run (default: the only one, or the first declared).
    #[arg(long = "image", value_name = "NAME")]
    pub image: Option<String>,
    /// Publish the container's port CONTAINER on HOST instead (repeatable):
    /// `8081:8080` (on 127.0.0.1), `0.0.0.0:8081:8080`, `8081:53/udp`.
    /// Default: each of the image's ports on the same number of 127.0.0.1.
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:CONTAINER[/PROTO]", value_parser = parse_publish)]
    pub publish: Vec<Publish>,
    /// Arguments passed to the image (replace its CMD).
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// `nixpack inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image (default: the only one, or the first declared).
    #[arg(long = "image", value_name = "NAME")]
    pub image: Option<String>,
    /// Print JSON for machines (stable field names) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `nixpack why`.
#[derive(Debug, Args)]
pub struct WhyArgs {
    /// A store path (`/nix/store/…-expat-2.5.0`, or a file inside one) or a
    /// fragment of a name (`expat`).
    #[arg(value_name = "PATH|NAME")]
    pub target: String,
    /// The image (default: the only one, or the first declared).
    #[arg(long = "image", value_name = "NAME")]
    pub image: Option<String>,
}

/// One `-p`: where a container port is published on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The host address (default 127.0.0.1).
    pub ip: String,
    /// The host port.
    pub host: u16,
    /// The container port with its protocol, as the engine names it (`8080/tcp`).
    pub container: String,
}

fn parse_publish(s: &str) -> Result<Publish, String> {
    let (spec, proto) = match s.rsplit_once('/') {
        Some((spec, p @ ("tcp" | "udp" | "sctp"))) => (spec, p),
        Some((_, p)) => return Err(format!("unknown protocol `{p}`: write tcp, udp or sctp")),
        None => (s, "tcp"),
    };
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c, h] => ("127.0.0.1", *h, *c),
        [c, h, ip] => (*ip, *h, *c),
        _ => return Err(format!("`{s}` is not HOST:CONTAINER")),
    };
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{p}` is not a port (1 to 65535)"))
    };
    Ok(Publish {
        ip: ip.trim_start_matches('[').trim_end_matches(']').to_owned(),
        host: port(host)?,
        container: format!("{}/{proto}", port(container)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_takes_host_container_with_optional_ip_and_protocol() {
        let p = parse_publish("8081:8080").unwrap();
        assert_eq!(
            (p.ip.as_str(), p.host, p.container.as_str()),
            ("127.0.0.1", 8081, "8080/tcp")
        );
        let p = parse_publish("0.0.0.0:53:5353/udp").unwrap();
        assert_eq!(
            (p.ip.as_str(), p.host, p.container.as_str()),
            ("0.0.0.0", 53, "5353/udp")
        );
        assert!(parse_publish("8080").is_err());
        assert!(parse_publish("x:8080").is_err());
        assert!(parse_publish("1:2/icmp").is_err());
    }
}
