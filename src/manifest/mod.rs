//! `nixpack.toml`: the manifest a project checks in.
//!
//! Loading is three steps, each its own module:
//! [`discover`] finds the file (walk up from the current directory, or
//! `--manifest-path`), [`raw`] is the serde shape of the text, and
//! [`validate`] turns it into the typed [`Manifest`] below, reporting the
//! first problem as a [`ManifestError`] that points at the exact key.

mod discover;
mod error;
mod raw;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use discover::{discover, MANIFEST_NAME};
pub use error::ManifestError;

use crate::reference::{ImageName, ImageRef, Tag};

/// The builder base used when `[builder] from` is not set: an official Nix
/// image, pinned so that the store volume named after it stays valid.
pub const DEFAULT_BUILDER_FROM: &str = "nixos/nix:2.28.3";

/// Layers per image when `layers` is not set.
pub const DEFAULT_LAYERS: u16 = 100;

/// The most layers an image may ask for: Docker's overlay driver refuses
/// images past 127 layers, and a base image may add its own later.
pub const MAX_LAYERS: u16 = 100;

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Absolute path of `nixpack.toml`.
    pub path: PathBuf,
    /// The directory holding it: the project root. Paths in the manifest are
    /// relative to it.
    pub root: PathBuf,
    /// `[project]`.
    pub project: Project,
    /// `[builder]`.
    pub builder: Builder,
    /// `[nixpkgs]`: what `<nixpkgs>` means inside expressions.
    pub nixpkgs: Option<Nixpkgs>,
    /// `[[image]]`, in file order; never empty.
    pub images: Vec<Image>,
}

/// `[project]`.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project name, used in labels and in the default output folder.
    pub name: String,
}

/// `[builder]`: the image that runs Nix.
#[derive(Debug, Clone)]
pub struct Builder {
    /// Base image with Nix, a POSIX shell and coreutils.
    pub from: ImageRef,
    /// Extra `nix.conf` settings (`max-jobs = "4"`), passed to every Nix
    /// command as `--option NAME VALUE`.
    pub nix_options: BTreeMap<String, String>,
    /// Override for the name of the persistent `/nix` volume.
    pub store_volume: Option<String>,
    /// Where Nix runs.
    pub runner: Runner,
    /// Per-project template overrides, relative to the project root.
    pub templates: TemplateOverrides,
}

/// `[builder] runner`: where the entrypoint (nix-build, the NARs) runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Runner {
    /// In the builder container, over the store volume (the default).
    #[default]
    Docker,
    /// On this machine, against its own Nix store: `nix-build` must be on
    /// PATH. No Docker Engine is contacted unless an image is loaded into one.
    Host,
    /// The host when `nix-build` is on PATH, else Docker.
    Auto,
}

/// `[builder.templates]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateOverrides {
    /// Replaces `builder.Dockerfile.hbs`.
    pub builder: Option<PathBuf>,
    /// Replaces `entrypoint.sh.hbs`.
    pub entrypoint: Option<PathBuf>,
    /// Replaces `scratch.Dockerfile.hbs`.
    pub scratch: Option<PathBuf>,
}

/// Where `<nixpkgs>` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nixpkgs {
    /// A tarball fetched once into the store and checked against its hash.
    Tarball {
        /// The tarball's URL.
        url: String,
        /// Its sha256 (Nix base32, hex or SRI).
        sha256: String,
    },
    /// A directory in the project, relative to the root.
    Path(PathBuf),
}

/// One `[[image]]`.
#[derive(Debug, Clone)]
pub struct Image {
    /// Repository name to tag.
    pub name: ImageName,
    /// Tag (default `latest`).
    pub tag: Tag,
    /// The Nix file, relative to the project root, `/`-separated.
    pub expression: String,
    /// Attribute to build (`nix-build -A`).
    pub attr: Option<String>,
    /// ENTRYPOINT, exec form.
    pub entrypoint: Option<Vec<String>>,
    /// CMD, exec form.
    pub cmd: Option<Vec<String>>,
    /// EXPOSE.
    pub ports: Vec<Port>,
    /// ENV.
    pub env: BTreeMap<String, String>,
    /// WORKDIR.
    pub workdir: Option<String>,
    /// USER.
    pub user: Option<String>,
    /// LABEL (nixpack adds its own `org.opencontainers.image.*` ones).
    pub labels: BTreeMap<String, String>,
    /// Most layers for the closure (the conventions layer comes on top).
    pub layers: u16,
    /// The root-filesystem conventions of the original recipe.
    pub conventions: Conventions,
}

impl Image {
    /// `name:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// A filesystem-safe name for this image's output folder
    /// (`.nixpack/<slug>/`): the name with `/` and `:` replaced.
    pub fn slug(&self) -> String {
        self.name.as_str().replace(['/', ':'], "_")
    }
}

/// Switches for the filesystem conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conventions {
    /// `/tmp`, mode 1777.
    pub tmp: bool,
    /// The result's `bin` at `/bin`.
    pub bin: bool,
    /// The result's other top-level directories under `/usr/local`.
    pub usr_local: bool,
}

/// An exposed port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    /// 1–65535.
    pub number: u16,
    /// The protocol.
    pub protocol: Protocol,
}

/// Port protocol, as Docker names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// `tcp` (the default).
    Tcp,
    /// `udp`.
    Udp,
    /// `sctp`.
    Sctp,
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        };
        write!(f, "{}/{}", self.number, p)
    }
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        if path.is_dir() {
            return Err(ManifestError::IsDirectory {
                path: path.to_owned(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        Self::from_str(&text, &path)
    }

    /// Validates manifest text as if it were read from `path` (whose folder
    /// is the project root; files named in the manifest are checked there).
    pub fn from_str(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        validate::validate(text, path)
    }

    /// The images selected by `--image` (all when `names` is empty).
    pub fn select(&self, names: &[String]) -> Result<Vec<&Image>, String> {
        if names.is_empty() {
            return Ok(self.images.iter().collect());
        }
        names
            .iter()
            .map(|n| {
                self.images
                    .iter()
                    .find(|i| i.name.as_str() == n || i.reference() == *n)
                    .ok_or_else(|| {
                        let known: Vec<_> =
                            self.images.iter().map(|i| i.name.to_string()).collect();
                        format!(
                            "no image named `{n}` in the manifest (it declares: {})",
                            known.join(", ")
                        )
                    })
            })
            .collect()
    }
}
