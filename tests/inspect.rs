//! `nixpack inspect` and `nixpack why` as a user reads them, on an image
//! folder prepared from the golden closure (no engine): pinned with
//! snapshots.

mod common;

use std::path::Path;

use common::{nixpack, project, squash};
use nixpack::closure::Closure;
use nixpack::manifest::Manifest;
use nixpack::record::LayerList;

const MANIFEST: &str = r#"[project]
name = "shop"

[[image]]
name = "shop/web"
expression = "default.nix"
entrypoint = ["/bin/python3", "-m", "http.server"]
cmd = ["8080"]
ports = [8080]
layers = 3
"#;

const GOLDEN: &str = include_str!("golden/python-closure.json");

/// The layer list of `closure` as a build records it, with made-up DiffIDs
/// and tar sizes (the NAR size plus tar headers).
fn layer_list(root: &Path, closure: &Closure, manifest_digest: &str) -> LayerList {
    let manifest = Manifest::load(&root.join("nixpack.toml")).unwrap();
    let image = &manifest.images[0];
    let plan = nixpack::layers::plan(closure, image.layers);
    let conventions = nixpack::conventions::Conventions::new(closure, image.conventions);
    let mut list = LayerList::new(closure, &plan, &conventions);
    list.manifest_digest = Some(manifest_digest.to_owned());
    for (i, l) in list.layers.iter_mut().enumerate() {
        l.diff_id = Some(format!("sha256:{:064x}", i + 1));
        l.size = Some(l.nar_size + 10_240);
    }
    list
}

/// A project whose image `shop/web` was built twice: the second time with
/// a rebuilt python-http (the golden closure), the first with an older one.
fn built_project() -> tempfile::TempDir {
    let dir = project(&[("nixpack.toml", MANIFEST), ("default.nix", "{}\n")]);
    let out = dir.path().join(".nixpack/shop_web");
    std::fs::create_dir_all(&out).unwrap();
    let closure = Closure::from_json(GOLDEN).unwrap();
    let before = Closure::from_json(&GOLDEN.replace(
        "b70acdccfd49ade0bb4e2710ef2d9da74667062044dd06340a92f890af2ca96c",
        "0000000000000000000000000000000000000000000000000000000000000001",
    ))
    .unwrap();
    let digest = |n: u8| format!("sha256:{}", format!("{n:x}").repeat(64));
    let write = |f: &str, t: String| std::fs::write(out.join(f), t).unwrap();
    write("closure.json", closure.to_json());
    write(
        "layers.json",
        layer_list(dir.path(), &closure, &digest(2)).to_json(),
    );
    write(
        "previous-layers.json",
        layer_list(dir.path(), &before, &digest(1)).to_json(),
    );
    write(
        "report.json",
        serde_json::json!({
            "image": "shop/web:latest",
            "manifest_digest": digest(2),
            "config_digest": digest(3),
            "size": 30_901_000,
            "result": closure.result,
        })
        .to_string(),
    );
    write(
        "image-config.json",
        serde_json::json!({"architecture": "amd64", "os": "linux", "config": {
            "Entrypoint": ["/bin/python3", "-m", "http.server"],
            "Cmd": ["8080"],
            "ExposedPorts": {"8080/tcp": {}}
        }})
        .to_string(),
    );
    nixpack::outputs::write_sboms(&out, &closure, 1).unwrap();
    dir
}

fn stdout(dir: &Path, args: &[&str]) -> String {
    let out = nixpack(dir)
        .args(args)
        .assert()
        .success()
        .get_output()
        .clone();
    String::from_utf8(out.stdout).unwrap()
}

fn stderr_failing(dir: &Path, args: &[&str]) -> String {
    let out = nixpack(dir)
        .args(args)
        .assert()
        .code(1)
        .get_output()
        .clone();
    squash(&String::from_utf8_lossy(&out.stderr))
}

#[test]
fn inspect_shows_the_image_its_layers_and_what_changed() {
    let dir = built_project();
    let text = stdout(dir.path(), &["inspect"]);
    insta::assert_snapshot!("inspect_text", text);
    // The result layer is the one that changed.
    let result_line = text
        .lines()
        .find(|l| l.contains("result: python-http"))
        .unwrap();
    assert!(result_line.contains("changed"), "{text}");
}

#[test]
fn inspect_json_has_stable_fields() {
    let dir = built_project();
    let text = stdout(dir.path(), &["inspect", "--json", "--image", "shop/web"]);
    insta::assert_snapshot!("inspect_json", text);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["manifest_digest"], format!("sha256:{}", "2".repeat(64)));
    let changed: Vec<bool> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["changed"].as_bool().unwrap())
        .collect();
    assert_eq!(changed, [false, false, true, false]);
}

#[test]
fn inspect_before_a_build_says_to_build() {
    let dir = project(&[("nixpack.toml", MANIFEST), ("default.nix", "{}\n")]);
    let err = stderr_failing(dir.path(), &["inspect"]);
    assert!(err.contains("`shop/web:latest` is not built yet"), "{err}");
    assert!(err.contains("run `nixpack build` first"), "{err}");
    let err = stderr_failing(dir.path(), &["why", "expat"]);
    assert!(err.contains("run `nixpack build` first"), "{err}");
}

#[test]
fn why_shows_the_chain_from_the_result() {
    let dir = built_project();
    insta::assert_snapshot!("why_expat", stdout(dir.path(), &["why", "expat"]));
    // Several matches: every chain.
    insta::assert_snapshot!("why_lib", stdout(dir.path(), &["why", "lib"]));
    // A full path, or a file inside one.
    let full = stdout(
        dir.path(),
        &[
            "why",
            "/nix/store/7x2ss8sbbm2s8wvm4nicn5aw9dqk8qsm-glibc-2.36/lib/libc.so.6",
        ],
    );
    assert_eq!(
        full,
        "/nix/store/9gq0s3y4m1l2rwh1n0p3n7cfd2hiyc5a-python-http\n→ /nix/store/7x2ss8sbbm2s8wvm4nicn5aw9dqk8qsm-glibc-2.36\n"
    );
}

#[test]
fn why_with_no_match_names_the_nearest() {
    let dir = built_project();
    let err = stderr_failing(dir.path(), &["why", "expas"]);
    assert!(
        err.contains("no store path of `shop/web:latest` matches `expas`"),
        "{err}"
    );
    assert!(err.contains("nearest first: expat-2.5.0"), "{err}");
}
