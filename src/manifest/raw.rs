//! The serde shape of `nixpack.toml`, exactly as written in the file.
//!
//! Every value that validation may complain about is kept [`Spanned`], so
//! that a diagnostic can point at the byte range of the offending key or
//! value. Nothing here is trusted: [`super::validate`] turns a [`RawManifest`]
//! into a typed [`super::Manifest`].

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawManifest {
    pub project: Option<Spanned<RawProject>>,
    #[serde(default)]
    pub builder: RawBuilder,
    pub nixpkgs: Option<Spanned<RawNixpkgs>>,
    pub image: Option<Spanned<Vec<Spanned<RawImage>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawProject {
    pub name: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawBuilder {
    pub from: Option<Spanned<String>>,
    #[serde(default)]
    pub nix_options: BTreeMap<Spanned<String>, Spanned<String>>,
    pub store_volume: Option<Spanned<String>>,
    #[serde(default)]
    pub templates: RawTemplates,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawTemplates {
    pub builder: Option<Spanned<String>>,
    pub entrypoint: Option<Spanned<String>>,
    pub scratch: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawNixpkgs {
    pub url: Option<Spanned<String>>,
    pub sha256: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawImage {
    pub name: Option<Spanned<String>>,
    pub tag: Option<Spanned<String>>,
    pub expression: Option<Spanned<String>>,
    pub attr: Option<Spanned<String>>,
    pub entrypoint: Option<Vec<Spanned<String>>>,
    pub cmd: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub ports: Vec<Spanned<RawPort>>,
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, Spanned<String>>,
    pub workdir: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    #[serde(default)]
    pub labels: BTreeMap<Spanned<String>, Spanned<String>>,
    pub layers: Option<Spanned<i64>>,
    #[serde(default)]
    pub conventions: RawConventions,
}

/// `8080` or `"8080/tcp"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPort {
    Number(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConventions {
    #[serde(default = "yes")]
    pub tmp: bool,
    #[serde(default = "yes")]
    pub bin: bool,
    #[serde(default = "yes")]
    pub usr_local: bool,
}

impl Default for RawConventions {
    fn default() -> Self {
        RawConventions {
            tmp: true,
            bin: true,
            usr_local: true,
        }
    }
}

fn yes() -> bool {
    true
}
