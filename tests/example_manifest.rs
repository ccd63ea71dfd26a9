//! `nixpack.toml.example` is the manifest's reference: it must load with
//! the real loader, say what it promises, and document every key of the
//! schema (so a new key without documentation fails here).

mod common;

use std::path::PathBuf;

use nixpack::manifest::{Manifest, Nixpkgs, Protocol};

use common::{example_project, EXAMPLE};

fn load(text: &str, dir: &tempfile::TempDir) -> Manifest {
    let path = dir.path().join("nixpack.toml");
    match Manifest::from_str(text, &path) {
        Ok(m) => m,
        Err(e) => panic!(
            "nixpack.toml.example does not load: {:?}",
            miette::Report::new(e)
        ),
    }
}

#[test]
fn the_example_loads_with_the_values_it_shows() {
    let dir = example_project();
    let m = load(EXAMPLE, &dir);

    assert_eq!(m.project.name, "webshop");
    assert_eq!(m.builder.from.to_string(), "nixos/nix:2.28.3");
    assert_eq!(m.builder.store_volume.as_deref(), Some("webshop-nix-store"));
    assert_eq!(
        m.builder.nix_options.get("max-jobs").map(String::as_str),
        Some("4")
    );
    assert_eq!(m.builder.nix_options.len(), 3);
    assert_eq!(
        m.builder.templates.builder,
        Some(PathBuf::from("nixpack/builder.Dockerfile.hbs"))
    );
    assert_eq!(
        m.builder.templates.entrypoint,
        Some(PathBuf::from("nixpack/entrypoint.sh.hbs"))
    );
    assert_eq!(
        m.builder.templates.scratch,
        Some(PathBuf::from("nixpack/scratch.Dockerfile.hbs"))
    );
    assert!(
        matches!(&m.nixpkgs, Some(Nixpkgs::Tarball { url, .. }) if url.ends_with("24.11.tar.gz"))
    );

    assert_eq!(m.images.len(), 2);
    let api = &m.images[0];
    assert_eq!(api.reference(), "registry.example.com/webshop/api:1.4.2");
    assert_eq!(api.expression, "nix/api.nix");
    assert_eq!(api.attr.as_deref(), Some("packages.api"));
    assert_eq!(api.entrypoint, Some(vec!["/bin/api-server".to_owned()]));
    assert_eq!(
        api.cmd,
        Some(vec!["--listen".to_owned(), "0.0.0.0:8080".to_owned()])
    );
    let ports: Vec<String> = api.ports.iter().map(ToString::to_string).collect();
    assert_eq!(ports, ["5353/udp", "8080/tcp", "8443/tcp"]);
    assert!(api
        .ports
        .iter()
        .any(|p| p.number == 5353 && p.protocol == Protocol::Udp));
    assert_eq!(api.workdir.as_deref(), Some("/srv"));
    assert_eq!(api.user.as_deref(), Some("1000:1000"));
    assert_eq!(api.layers, 40);
    assert_eq!(api.env.get("RUST_LOG").map(String::as_str), Some("info"));
    assert_eq!(
        api.labels.get("com.example.team").map(String::as_str),
        Some("payments")
    );
    assert!(api.conventions.tmp && api.conventions.bin && !api.conventions.usr_local);

    // The second image shows the defaults.
    let worker = &m.images[1];
    assert_eq!(worker.reference(), "webshop/worker:latest");
    assert_eq!(worker.layers, nixpack::manifest::DEFAULT_LAYERS);
    assert!(worker.entrypoint.is_none() && worker.ports.is_empty() && worker.env.is_empty());
    assert!(worker.conventions.tmp && worker.conventions.bin && worker.conventions.usr_local);
}

/// The commented-out `path` is the alternative to `url` + `sha256`: swapped
/// in, it loads too.
#[test]
fn the_nixpkgs_path_alternative_loads() {
    let dir = example_project();
    let swapped: String = EXAMPLE
        .lines()
        .map(|l| {
            if l.starts_with("url = ") || l.starts_with("sha256 = ") {
                format!("# {l}")
            } else if let Some(path) = l.strip_prefix("# path = ") {
                format!("path = {path}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(
        swapped, EXAMPLE,
        "the example shows `# path = …` under [nixpkgs]"
    );
    let m = load(&swapped, &dir);
    assert_eq!(
        m.nixpkgs,
        Some(Nixpkgs::Path(PathBuf::from("vendor/nixpkgs")))
    );
}

/// Every field of every `Raw*` struct in src/manifest/raw.rs, kebab-cased.
fn schema_keys() -> Vec<String> {
    let raw = include_str!("../src/manifest/raw.rs");
    let mut keys = Vec::new();
    let mut in_struct = false;
    for line in raw.lines() {
        let t = line.trim();
        if t.starts_with("pub struct Raw") && t.ends_with('{') {
            in_struct = true;
        } else if t == "}" {
            in_struct = false;
        } else if in_struct {
            if let Some(field) = t
                .strip_prefix("pub ")
                .and_then(|r| r.split_once(':'))
                .map(|(f, _)| f)
            {
                keys.push(field.replace('_', "-"));
            }
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Every key of the schema appears in the example (as `key = …`, as
/// `# key = …`, or as a table header ending in it), right under a comment.
#[test]
fn every_schema_key_is_documented_in_the_example() {
    let keys = schema_keys();
    assert!(keys.len() >= 25, "raw.rs was read: {keys:?}");
    let lines: Vec<&str> = EXAMPLE.lines().collect();
    let mut undocumented = Vec::new();
    for key in &keys {
        let documented = lines.iter().enumerate().any(|(i, line)| {
            let l = line.trim_start_matches("# ");
            let header = l.trim_matches(|c| c == '[' || c == ']');
            let names_it = l
                .split('=')
                .next()
                .is_some_and(|k| k.trim() == key && l.contains('='))
                || (l.starts_with('[') && header.rsplit('.').next() == Some(key.as_str()));
            let commented = lines[..i]
                .iter()
                .rev()
                .find(|p| !p.trim().is_empty())
                .is_some_and(|p| p.starts_with('#'));
            names_it && commented
        });
        if !documented {
            undocumented.push(key.clone());
        }
    }
    assert!(undocumented.is_empty(), "keys of src/manifest/raw.rs without a commented entry in nixpack.toml.example: {undocumented:?}");
}
