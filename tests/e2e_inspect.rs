//! End-to-end: what a real build leaves for `inspect`, `why` and the SBOMs,
//! and what a rebuild says changed — against the real Docker Engine and
//! the offline builder base `nixpack-base:bookworm` (`scripts/test` makes
//! it). Helpers copied from tests/e2e.rs.

mod common;

use common::engine::{require_base, text, unique, ImageGuard, BASE};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

fn nixpack(dir: &Path, args: &[&str]) -> Output {
    Command::new(PathBuf::from(env!("CARGO_BIN_EXE_nixpack")))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("nixpack runs")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = nixpack(dir, args);
    assert!(
        out.status.success(),
        "nixpack {args:?} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A result `tiny` that refers to a dependency `tinydep-1.0`; `nonce`
/// changes the result only.
fn expression(nonce: &str) -> String {
    format!(
        r#"let
  dep = builtins.derivation {{
    name = "tinydep-1.0";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir -p $out/share; echo dep > $out/share/dep" ];
  }};
in builtins.derivation {{
  name = "tiny";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir -p $out/bin $out/share/tiny; echo ${{dep}} > $out/share/tiny/dep; echo {nonce} > $out/share/tiny/nonce; echo '#!/bin/sh' > $out/bin/tiny" ];
}}
"#
    )
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn inspect_why_and_sboms_after_a_build_and_a_leaf_change() {
    require_base();
    let name = unique("inspect");
    let _guard = ImageGuard(vec![format!("{name}:latest")]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nixpack.toml"),
        format!("[project]\nname = \"t\"\n[builder]\nfrom = \"{BASE}\"\n[[image]]\nname = \"{name}\"\nexpression = \"default.nix\"\nentrypoint = [\"/bin/tiny\"]\nports = [8080]\n"),
    )
    .unwrap();
    let nonce = format!(
        "{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    std::fs::write(dir.path().join("default.nix"), expression(&nonce)).unwrap();
    let out_dir = dir
        .path()
        .join(".nixpack")
        .join(name.replace(['/', ':'], "_"));

    // First build: inspect shows what report.json says, nothing changed yet.
    let first = ok(dir.path(), &["build"]);
    assert!(
        !first.contains("store path(s) changed"),
        "a first build compares with nothing:\n{first}"
    );
    let report = json(&std::fs::read_to_string(out_dir.join("report.json")).unwrap());
    let digest = report["manifest_digest"].as_str().unwrap().to_owned();
    let shown = ok(dir.path(), &["inspect"]);
    assert!(shown.contains(&format!("manifest   {digest}")), "{shown}");
    assert!(shown.contains("entrypoint [\"/bin/tiny\"]"), "{shown}");
    assert!(shown.contains("ports      8080/tcp"), "{shown}");
    let inspected = json(&ok(dir.path(), &["inspect", "--json"]));
    assert_eq!(inspected["manifest_digest"], digest.as_str());
    assert_eq!(inspected["config_digest"], report["config_digest"]);
    assert!(inspected["previous_manifest_digest"].is_null());
    // The DiffIDs inspect shows are the image's.
    let diff_ids: Vec<&str> = inspected["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["diff_id"].as_str().unwrap())
        .collect();
    let report_ids: Vec<&str> = report["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(diff_ids, report_ids);

    // The SBOMs are there and name both store paths.
    let cdx = std::fs::read_to_string(out_dir.join("sbom.cdx.json")).unwrap();
    let spdx = std::fs::read_to_string(out_dir.join("sbom.spdx.json")).unwrap();
    let cdx = json(&cdx);
    assert_eq!(cdx["specVersion"], "1.5");
    assert_eq!(cdx["metadata"]["component"]["name"], "tiny");
    assert_eq!(cdx["components"][0]["name"], "tinydep");
    assert_eq!(cdx["components"][0]["version"], "1.0");
    assert!(spdx.contains("\"spdxVersion\": \"SPDX-2.3\""));

    // why: result → dependency.
    let why = ok(dir.path(), &["why", "tinydep"]);
    let lines: Vec<&str> = why.lines().collect();
    assert_eq!(lines.len(), 2, "{why}");
    assert!(lines[0].ends_with("-tiny"), "{why}");
    assert!(
        lines[1].starts_with("→ /nix/store/") && lines[1].ends_with("-tinydep-1.0"),
        "{why}"
    );

    // Change the leaf: the build names it, inspect marks its layer.
    std::fs::write(
        dir.path().join("default.nix"),
        expression(&format!("{nonce}-2")),
    )
    .unwrap();
    let second = ok(dir.path(), &["build"]);
    assert!(
        second.contains("1 store path(s) changed, 0 added, 0 removed"),
        "{second}"
    );
    let changed_line = second
        .lines()
        .find(|l| l.starts_with("  ~ "))
        .unwrap_or_else(|| panic!("{second}"));
    assert!(changed_line.ends_with("-tiny"), "{second}");
    assert!(second.contains("of changed store paths (ratio"), "{second}");
    let report = json(&std::fs::read_to_string(out_dir.join("report.json")).unwrap());
    let inspected = json(&ok(dir.path(), &["inspect", "--json"]));
    assert_eq!(inspected["manifest_digest"], report["manifest_digest"]);
    assert_eq!(inspected["previous_manifest_digest"], digest.as_str());
    // The result's layer changed, and the conventions layer (its /bin
    // links point into the new result); the dependency's did not.
    for l in inspected["layers"].as_array().unwrap() {
        let follows_result = l["reason"] == "result" || l["reason"] == "conventions";
        assert_eq!(l["changed"].as_bool(), Some(follows_result), "{l}");
    }
    let shown = ok(dir.path(), &["inspect"]);
    let result_row = shown.lines().find(|l| l.contains("result: tiny")).unwrap();
    assert!(result_row.contains("changed"), "{shown}");

    // -q hides the change report.
    std::fs::write(
        dir.path().join("default.nix"),
        expression(&format!("{nonce}-3")),
    )
    .unwrap();
    let quiet = ok(dir.path(), &["-q", "build"]);
    assert!(!quiet.contains("changed"), "{quiet}");
}
