//! The serde shape of `nixpack.toml`, exactly as written in the file.
//!
//! Every value that validation may complain about is kept [`Spanned`], so
//! that a diagnostic can point at the byte range of the offending key or
//! value. Nothing here is trusted: [`super::validate`] turns a [`RawManifest`]
//! into a typed [`super::Manifest`].

use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::Deserialize;
use toml::Spanned;

/// A TOML table and nothing else. serde's derived structs also accept an
/// array and fill the fields by position (`project = ["shop"]` would name
/// the project), so every table of the schema is read through this.
#[derive(Debug, Default)]
pub struct Table<T>(pub T);

impl<T> std::ops::Deref for Table<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Table<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TableVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for TableVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(TableVisitor(PhantomData)).map(Table)
    }
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawManifest {
    pub project: Option<Spanned<Table<RawProject>>>,
    #[serde(default)]
    pub builder: Table<RawBuilder>,
    pub nixpkgs: Option<Spanned<Table<RawNixpkgs>>>,
    pub image: Option<Spanned<Vec<Spanned<Table<RawImage>>>>>,
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
    pub runner: Option<Spanned<String>>,
    #[serde(default)]
    pub templates: Table<RawTemplates>,
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
    pub conventions: Table<RawConventions>,
}

/// `8080` or `"8080/tcp"`.
#[derive(Debug)]
pub enum RawPort {
    Number(i64),
    Text(String),
}

// By hand rather than `#[serde(untagged)]`: an untagged enum reports a
// wrong value as "data did not match any variant of untagged enum", while a
// visitor can say what a port looks like.
impl<'de> Deserialize<'de> for RawPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl serde::de::Visitor<'_> for PortVisitor {
            type Value = RawPort;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a port number or a string such as \"53/udp\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawPort, E> {
                Ok(RawPort::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawPort, E> {
                Ok(RawPort::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawPort, E> {
                Ok(RawPort::Text(v.to_owned()))
            }
        }
        d.deserialize_any(PortVisitor)
    }
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
