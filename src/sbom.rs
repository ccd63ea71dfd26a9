//! Software bills of materials of a closure: CycloneDX 1.5 JSON and SPDX
//! 2.3 JSON, written at every build beside `closure.json` as
//! `sbom.cdx.json` and `sbom.spdx.json`. Pure: a function of the closure
//! and a creation time, no I/O.
//!
//! # What they say
//!
//! One entry per store path of the closure, the result as the thing
//! described (CycloneDX `metadata.component`, SPDX `DESCRIBES`), and a
//! dependency per reference (self-references dropped):
//!
//! - **name and version** from the store path's name by Nix's own rule
//!   (`builtins.parseDrvName`): the version starts after the first `-`
//!   that is followed by something other than a letter. `python3-3.11.2`
//!   is `python3` `3.11.2`, `nss-cacert-3.86` is `nss-cacert` `3.86`,
//!   `openssl-3.0.8-bin` is `openssl` `3.0.8-bin` (an output's suffix stays
//!   in the version, as Nix has it). A name with no version part
//!   (`python-http`, `source`) gets no version: CycloneDX leaves `version`
//!   out and says `nixpack:version` = `none`; SPDX leaves `versionInfo`
//!   out.
//! - **identity**: the store path itself (CycloneDX `bom-ref`, SPDX
//!   `packageFileName`; the SPDXID is `SPDXRef-<hash part>-<name>` with
//!   every character SPDX forbids made `-`), and the NAR hash as a SHA-256
//!   hash of the component (hex), which is what Nix checks the path's
//!   bytes against.
//! - **Nix's properties** (CycloneDX), named as nixpkgs'
//!   `doc/interoperability/cyclonedx.md` names them: `nix:store_path`,
//!   `nix:narinfo:store_path`, `nix:narinfo:nar_hash` (`sha256:` and Nix's
//!   base-32, as a `.narinfo` writes it), `nix:narinfo:nar_size`,
//!   `nix:narinfo:references` (the store paths, space-separated, as Nix
//!   recorded them) and `nix:narinfo:deriver` when Nix knows the `.drv`.
//!
//! # What they do not say
//!
//! **Licenses and source URLs are not known.** They live in a package's
//! `meta`, which Nix never writes to the store; the `.drv` files hold only
//! what the builder sees. nixpack does not guess them from names: SPDX
//! says `NOASSERTION` (`licenseConcluded`, `licenseDeclared`,
//! `downloadLocation`, `copyrightText`), CycloneDX has no `licenses` and
//! says so in the metadata properties `nixpack:licenses` and
//! `nixpack:source` (`NOASSERTION`, with the reason in the documents'
//! comments).
//!
//! # Reproducible
//!
//! The same closure gives the same bytes, so an SBOM can be checked in or
//! compared: entries in store-path order, `metadata.timestamp` and
//! `created` from `SOURCE_DATE_EPOCH` (else 1, as the layers' mtimes), and
//! an identity derived from the closure hash ([`Closure::closure_hash`]):
//! the CycloneDX `serialNumber` is `urn:uuid:` + the UUID version 5 (RFC
//! 9562: SHA-1, name-based) of [`NAMESPACE_URL`](uuid::Uuid::NAMESPACE_URL)
//! and `https://nixpack.invalid/closure/<closure hash>`; the SPDX
//! `documentNamespace` is `https://nixpack.invalid/spdx/<result name>-<that
//! UUID>` (`.invalid`: a name, not a place to fetch). Different closures
//! get different identities; a new nixpack version may change the bytes
//! (its version is in the tool lists) but not the identity.
//!
//! Own serde types rather than `cyclonedx-bom` or `serde-spdx`: nixpack
//! writes a small, fixed subset, and its bytes (field order, what is left
//! out) are pinned by golden tests here, where a crate's upgrade could
//! move them unnoticed. The test suite checks both files with the
//! formats' own validators (`tests/sbom_validate.rs`).

use std::collections::BTreeSet;

use serde::Serialize;

use crate::archive::rfc3339;
use crate::closure::{hex, Closure, PathInfo, StorePath};

/// The CycloneDX file in `.nixpack/<image>/`.
pub const CYCLONEDX_FILE: &str = "sbom.cdx.json";
/// The SPDX file in `.nixpack/<image>/`.
pub const SPDX_FILE: &str = "sbom.spdx.json";

/// Why licenses and sources are `NOASSERTION`, for the documents' comments.
const NOT_KNOWN: &str = "Licenses and source URLs are not known: they are in each package's \
    Nix `meta`, which Nix does not keep in the store, and nixpack does not guess them.";

/// A store path name as `builtins.parseDrvName` splits it: the version
/// starts after the first `-` followed by something other than an ASCII
/// letter; without one there is no version. A name the rule would leave
/// empty (`-1.0`) is kept whole, without a version.
pub fn parse_name(name: &str) -> (&str, Option<&str>) {
    let bytes = name.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'-' && bytes.get(i + 1).is_some_and(|n| !n.is_ascii_alphabetic()) {
            if i == 0 {
                break;
            }
            return (&name[..i], Some(&name[i + 1..]));
        }
    }
    (name, None)
}

/// The UUID the SBOMs of `closure` are known by (see the module doc).
pub fn document_uuid(closure: &Closure) -> uuid::Uuid {
    let name = format!("https://nixpack.invalid/closure/{}", closure.closure_hash());
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes())
}

/// The store paths `info` refers to, itself left out, in order.
fn dependencies(info: &PathInfo) -> impl Iterator<Item = &StorePath> {
    info.references.iter().filter(move |r| **r != info.path)
}

fn pretty(value: &impl Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("an SBOM serializes");
    text.push('\n');
    text
}

// ---- CycloneDX 1.5 ---------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CdxBom<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    bom_format: &'static str,
    spec_version: &'static str,
    serial_number: String,
    version: u32,
    metadata: CdxMetadata<'a>,
    components: Vec<CdxComponent<'a>>,
    dependencies: Vec<CdxDependency<'a>>,
}

#[derive(Serialize)]
struct CdxMetadata<'a> {
    timestamp: String,
    tools: CdxTools,
    component: CdxComponent<'a>,
    properties: Vec<CdxProperty>,
}

#[derive(Serialize)]
struct CdxTools {
    components: Vec<CdxTool>,
}

#[derive(Serialize)]
struct CdxTool {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct CdxComponent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "bom-ref")]
    bom_ref: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    hashes: [CdxHash; 1],
    properties: Vec<CdxProperty>,
}

#[derive(Serialize)]
struct CdxHash {
    alg: &'static str,
    content: String,
}

#[derive(Serialize)]
struct CdxProperty {
    name: &'static str,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CdxDependency<'a> {
    #[serde(rename = "ref")]
    reference: &'a str,
    depends_on: Vec<&'a str>,
}

fn cdx_component<'a>(info: &'a PathInfo, kind: &'static str) -> CdxComponent<'a> {
    let (name, version) = parse_name(info.path.name());
    let prop = |name, value: String| CdxProperty { name, value };
    let mut properties = vec![
        prop("nix:store_path", info.path.to_string()),
        prop("nix:narinfo:store_path", info.path.to_string()),
        prop("nix:narinfo:nar_hash", info.nar_hash.to_nix32()),
        prop("nix:narinfo:nar_size", info.nar_size.to_string()),
        prop(
            "nix:narinfo:references",
            info.references
                .iter()
                .map(StorePath::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ];
    if let Some(d) = &info.deriver {
        properties.push(prop("nix:narinfo:deriver", d.to_string()));
    }
    if version.is_none() {
        properties.push(prop("nixpack:version", "none".to_owned()));
    }
    CdxComponent {
        kind,
        bom_ref: info.path.as_str(),
        name,
        version,
        hashes: [CdxHash {
            alg: "SHA-256",
            content: hex(&info.nar_hash.0),
        }],
        properties,
    }
}

/// `sbom.cdx.json`: CycloneDX 1.5 JSON of `closure`, created at `epoch`
/// (seconds since 1970; `SOURCE_DATE_EPOCH` or 1).
pub fn cyclonedx(closure: &Closure, epoch: u64) -> String {
    let result = &closure.paths[&closure.result];
    let bom = CdxBom {
        schema: "http://cyclonedx.org/schema/bom-1.5.schema.json",
        bom_format: "CycloneDX",
        spec_version: "1.5",
        serial_number: format!("urn:uuid:{}", document_uuid(closure)),
        version: 1,
        metadata: CdxMetadata {
            timestamp: rfc3339(epoch),
            tools: CdxTools {
                components: vec![CdxTool {
                    kind: "application",
                    name: "nixpack",
                    version: env!("CARGO_PKG_VERSION"),
                }],
            },
            component: cdx_component(result, "application"),
            properties: vec![
                CdxProperty {
                    name: "nixpack:closure_hash",
                    value: format!("sha256:{}", closure.closure_hash()),
                },
                CdxProperty {
                    name: "nixpack:licenses",
                    value: "NOASSERTION".to_owned(),
                },
                CdxProperty {
                    name: "nixpack:source",
                    value: "NOASSERTION".to_owned(),
                },
                CdxProperty {
                    name: "nixpack:comment",
                    value: NOT_KNOWN.to_owned(),
                },
            ],
        },
        // The result is `metadata.component`; every other path is here.
        components: closure
            .paths
            .values()
            .filter(|p| p.path != closure.result)
            .map(|p| cdx_component(p, "library"))
            .collect(),
        dependencies: closure
            .paths
            .values()
            .map(|p| CdxDependency {
                reference: p.path.as_str(),
                depends_on: dependencies(p).map(StorePath::as_str).collect(),
            })
            .collect(),
    };
    pretty(&bom)
}

// ---- SPDX 2.3 --------------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpdxDocument<'a> {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: SpdxCreationInfo,
    comment: &'static str,
    packages: Vec<SpdxPackage<'a>>,
    relationships: Vec<SpdxRelationship>,
}

#[derive(Serialize)]
struct SpdxCreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpdxPackage<'a> {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<&'a str>,
    package_file_name: &'a str,
    download_location: &'static str,
    files_analyzed: bool,
    checksums: [SpdxChecksum; 1],
    license_concluded: &'static str,
    license_declared: &'static str,
    copyright_text: &'static str,
    primary_package_purpose: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpdxChecksum {
    algorithm: &'static str,
    checksum_value: String,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
struct SpdxRelationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

/// Letters, digits, `.` and `-` only: what an SPDX identifier may hold.
fn spdx_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `SPDXRef-<hash part>-<name>`, sanitised.
fn spdx_id(path: &StorePath) -> String {
    let base = &path.as_str()[crate::closure::STORE_DIR.len() + 1..];
    format!("SPDXRef-{}", spdx_safe(base))
}

/// `sbom.spdx.json`: SPDX 2.3 JSON of `closure`, created at `epoch`.
pub fn spdx(closure: &Closure, epoch: u64) -> String {
    let result_name = closure.result.name();
    let mut relationships = BTreeSet::new();
    for p in closure.paths.values() {
        for r in dependencies(p) {
            relationships.insert(SpdxRelationship {
                spdx_element_id: spdx_id(&p.path),
                relationship_type: "DEPENDS_ON",
                related_spdx_element: spdx_id(r),
            });
        }
    }
    let describes = SpdxRelationship {
        spdx_element_id: "SPDXRef-DOCUMENT".to_owned(),
        relationship_type: "DESCRIBES",
        related_spdx_element: spdx_id(&closure.result),
    };
    let doc = SpdxDocument {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: result_name.to_owned(),
        document_namespace: format!(
            "https://nixpack.invalid/spdx/{}-{}",
            spdx_safe(result_name),
            document_uuid(closure)
        ),
        creation_info: SpdxCreationInfo {
            created: rfc3339(epoch),
            creators: vec![format!("Tool: nixpack-{}", env!("CARGO_PKG_VERSION"))],
        },
        comment: NOT_KNOWN,
        packages: closure
            .paths
            .values()
            .map(|p| {
                let (name, version) = parse_name(p.path.name());
                SpdxPackage {
                    spdx_id: spdx_id(&p.path),
                    name,
                    version_info: version,
                    package_file_name: p.path.as_str(),
                    download_location: "NOASSERTION",
                    files_analyzed: false,
                    checksums: [SpdxChecksum {
                        algorithm: "SHA256",
                        checksum_value: hex(&p.nar_hash.0),
                    }],
                    license_concluded: "NOASSERTION",
                    license_declared: "NOASSERTION",
                    copyright_text: "NOASSERTION",
                    primary_package_purpose: if p.path == closure.result {
                        "APPLICATION"
                    } else {
                        "LIBRARY"
                    },
                }
            })
            .collect(),
        relationships: std::iter::once(describes).chain(relationships).collect(),
    };
    pretty(&doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn golden() -> Closure {
        Closure::from_json(include_str!("../tests/golden/python-closure.json")).unwrap()
    }

    #[test]
    fn names_and_versions_as_parse_drv_name_splits_them() {
        for (store_name, name, version) in [
            ("python3-3.11.2", "python3", Some("3.11.2")),
            ("glibc-2.36", "glibc", Some("2.36")),
            ("zlib-1.2.13", "zlib", Some("1.2.13")),
            ("nss-cacert-3.86", "nss-cacert", Some("3.86")),
            ("perl5.36.0-DBI-1.643", "perl5.36.0-DBI", Some("1.643")),
            ("unit-tests-2024-01-01", "unit-tests", Some("2024-01-01")),
            // An output's suffix stays in the version, as in Nix.
            ("openssl-3.0.8-bin", "openssl", Some("3.0.8-bin")),
            // Not only digits: anything but a letter starts the version.
            ("foo-_bar", "foo", Some("_bar")),
            ("foo--bar", "foo", Some("-bar")),
            // No version part.
            ("python-http", "python-http", None),
            ("source", "source", None),
            ("hello-world", "hello-world", None),
            ("foo-", "foo-", None),
            // The rule would leave no name: keep it whole.
            ("-1.0", "-1.0", None),
        ] {
            assert_eq!(
                parse_name(store_name),
                (name, version),
                "parseDrvName of {store_name}"
            );
        }
    }

    #[test]
    fn the_same_closure_gives_the_same_bytes() {
        let c = golden();
        assert_eq!(cyclonedx(&c, 1), cyclonedx(&golden(), 1));
        assert_eq!(spdx(&c, 1), spdx(&golden(), 1));
        // However closure.json listed its paths.
        let text = include_str!("../tests/golden/python-closure.json");
        let mut v: Value = serde_json::from_str(text).unwrap();
        v["paths"].as_array_mut().unwrap().reverse();
        let reversed = Closure::from_json(&v.to_string()).unwrap();
        assert_eq!(cyclonedx(&reversed, 1), cyclonedx(&c, 1));
        assert_eq!(spdx(&reversed, 1), spdx(&c, 1));
        // Another time, other bytes, the same identity.
        let later = cyclonedx(&c, 1_700_000_000);
        assert!(later.contains("\"timestamp\": \"2023-11-14T22:13:20Z\""));
        let serial = |t: &str| serde_json::from_str::<Value>(t).unwrap()["serialNumber"].clone();
        assert_eq!(serial(&later), serial(&cyclonedx(&c, 1)));
    }

    #[test]
    fn other_closures_get_other_identities() {
        let a = golden();
        let mut b = golden();
        let glibc = b
            .paths
            .values_mut()
            .find(|p| p.path.name() == "glibc-2.36")
            .unwrap();
        glibc.nar_hash.0[0] ^= 1;
        assert_ne!(document_uuid(&a), document_uuid(&b));
        let u = document_uuid(&a);
        assert_eq!(u.get_version_num(), 5);
        assert!(cyclonedx(&a, 1).contains(&format!("\"serialNumber\": \"urn:uuid:{u}\"")));
        assert!(spdx(&a, 1).contains(&format!("python-http-{u}\"")));
    }

    #[test]
    fn cyclonedx_dependencies_are_the_references_without_self() {
        for c in [golden(), crate::layers::tests::synthetic(60, 20)] {
            let bom: Value = serde_json::from_str(&cyclonedx(&c, 1)).unwrap();
            let deps = bom["dependencies"].as_array().unwrap();
            assert_eq!(deps.len(), c.paths.len(), "every path, the result too");
            for d in deps {
                let p = StorePath::parse(d["ref"].as_str().unwrap()).unwrap();
                let got: BTreeSet<String> = d["dependsOn"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_owned())
                    .collect();
                let want: BTreeSet<String> = c.paths[&p]
                    .references
                    .iter()
                    .filter(|r| **r != p)
                    .map(|r| r.to_string())
                    .collect();
                assert_eq!(got, want, "{p}");
            }
            // One component per store path: the result is the metadata's.
            let comps = bom["components"].as_array().unwrap();
            assert_eq!(comps.len() + 1, c.paths.len());
            assert_eq!(bom["metadata"]["component"]["bom-ref"], c.result.as_str());
        }
    }

    #[test]
    fn cyclonedx_components_carry_nix_properties() {
        let c = golden();
        let bom: Value = serde_json::from_str(&cyclonedx(&c, 1)).unwrap();
        let zlib = bom["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "zlib")
            .unwrap();
        assert_eq!(zlib["version"], "1.2.13");
        assert_eq!(zlib["type"], "library");
        assert_eq!(
            zlib["hashes"][0]["content"],
            "1eb343a8ca6b783dcb29275e6121ff7cfe36e8bf5e8d8a988d3914e67ed26e24"
        );
        let prop = |n: &str| {
            zlib["properties"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == n)
                .map(|p| p["value"].as_str().unwrap().to_owned())
        };
        assert_eq!(
            prop("nix:store_path").as_deref(),
            Some("/nix/store/1ffwkaxdwg2xbqpbl0rzq7lgbw5i3m2z-zlib-1.2.13")
        );
        assert_eq!(prop("nix:narinfo:nar_size").as_deref(), Some("121304"));
        let nar_hash = prop("nix:narinfo:nar_hash").unwrap();
        assert_eq!(
            crate::closure::NarHash::parse(&nar_hash).unwrap().to_hex(),
            "sha256:1eb343a8ca6b783dcb29275e6121ff7cfe36e8bf5e8d8a988d3914e67ed26e24"
        );
        assert_eq!(
            nar_hash.len(),
            7 + 52,
            "Nix's base-32, as a .narinfo has it"
        );
        assert_eq!(prop("nixpack:version"), None);
        // The result has no version: it says so.
        let result = &bom["metadata"]["component"];
        assert_eq!(result["name"], "python-http");
        assert!(result.get("version").is_none());
        assert!(result["properties"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "nixpack:version" && p["value"] == "none"));
    }

    #[test]
    fn spdx_packages_and_relationships() {
        let c = golden();
        let doc: Value = serde_json::from_str(&spdx(&c, 1)).unwrap();
        let packages = doc["packages"].as_array().unwrap();
        assert_eq!(packages.len(), c.paths.len());
        assert!(packages
            .iter()
            .all(|p| p["licenseConcluded"] == "NOASSERTION"
                && p["downloadLocation"] == "NOASSERTION"));
        let rels = doc["relationships"].as_array().unwrap();
        assert_eq!(rels[0]["relationshipType"], "DESCRIBES");
        assert_eq!(
            rels[0]["relatedSpdxElement"],
            "SPDXRef-9gq0s3y4m1l2rwh1n0p3n7cfd2hiyc5a-python-http"
        );
        let depends: usize = c.paths.values().map(|p| dependencies(p).count()).sum();
        assert_eq!(rels.len(), 1 + depends);
        assert_eq!(spdx_safe("a+b_c?=d.e-f"), "a-b-c--d.e-f");
    }

    #[test]
    fn golden_sboms() {
        insta::assert_snapshot!("golden_python_cyclonedx", cyclonedx(&golden(), 1));
        insta::assert_snapshot!("golden_python_spdx", spdx(&golden(), 1));
    }
}
