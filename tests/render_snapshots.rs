//! The three rendered files, pinned with `insta` snapshots (in
//! tests/snapshots/): for the python-http example, for a manifest that uses
//! every key (nixpack.toml.example), and with the layers a closure plans.
//! Rendered through the CLI, as a user gets them. Plus: no manifest value
//! can add a Dockerfile line.
//!
//! To accept changed output: `INSTA_UPDATE=always cargo test --test render_snapshots`
//! (or `cargo insta review`), then read the diff.

mod common;

use std::path::{Path, PathBuf};

use common::{example_project, nixpack, project, RENDERED};

const GOLDEN_CLOSURE: &str = include_str!("golden/python-closure.json");

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python-http")
}

/// A rendered file with nixpack's version made stable.
fn rendered(dir: &Path, file: &str) -> String {
    let text = std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()));
    text.replace(
        &format!("nixpack {}", env!("CARGO_PKG_VERSION")),
        "nixpack [VERSION]",
    )
}

fn snapshot_all(prefix: &str, dir: &Path) {
    for file in RENDERED {
        insta::assert_snapshot!(format!("{prefix}__{file}"), rendered(dir, file));
    }
}

/// The `ADD` lines of a scratch Dockerfile.
fn adds(scratch: &str) -> Vec<&str> {
    scratch.lines().filter(|l| l.starts_with("ADD ")).collect()
}

#[test]
fn python_http_example() {
    let out = tempfile::tempdir().unwrap();
    nixpack(&example_dir())
        .arg("render")
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    let dir = out.path().join("nixpack-example_python-http");
    snapshot_all("python_http", &dir);
    assert!(
        adds(&rendered(&dir, "scratch.Dockerfile")).is_empty(),
        "no closure yet, so no layers"
    );
}

/// After `nixpack build` has described the closure, `render` shows the
/// layers it plans: one per store path (4 paths, `layers` defaults to 40)
/// and the conventions layer on top.
#[test]
fn python_http_example_with_its_closure() {
    let dir = project(&[
        (
            "nixpack.toml",
            &std::fs::read_to_string(example_dir().join("nixpack.toml")).unwrap(),
        ),
        (
            "default.nix",
            &std::fs::read_to_string(example_dir().join("default.nix")).unwrap(),
        ),
        (
            ".nixpack/nixpack-example_python-http/closure.json",
            GOLDEN_CLOSURE,
        ),
    ]);
    nixpack(dir.path()).arg("render").assert().success();
    let out = dir.path().join(".nixpack/nixpack-example_python-http");
    let scratch = rendered(&out, "scratch.Dockerfile");
    insta::assert_snapshot!("python_http_layers__scratch.Dockerfile", scratch);
    let adds = adds(&scratch);
    assert_eq!(adds.len(), 5, "{scratch}");
    assert!(
        adds[4].starts_with("ADD layers/conventions-"),
        "conventions on top: {scratch}"
    );
}

/// nixpack.toml.example uses every key; its template overrides are copies
/// of the built-in templates, so this pins the built-ins with every value
/// set (and shows that overrides are used).
#[test]
fn every_key() {
    let dir = example_project();
    nixpack(dir.path()).arg("render").assert().success();
    let api = dir.path().join(".nixpack/registry.example.com_webshop_api");
    snapshot_all("every_key", &api);
    let worker = dir.path().join(".nixpack/webshop_worker");
    insta::assert_snapshot!(
        "every_key_worker__scratch.Dockerfile",
        rendered(&worker, "scratch.Dockerfile")
    );
    for file in ["builder.Dockerfile", "entrypoint.sh"] {
        assert_eq!(
            rendered(&api, file),
            rendered(&worker, file),
            "{file} is the same for every image"
        );
    }
}

/// The conventions switches change the top layer: with `usr-local = false`
/// the golden closure's `share` is not linked, so the layer differs from
/// the python-http one.
#[test]
fn every_key_with_its_closure() {
    let dir = example_project();
    common::write(
        dir.path(),
        ".nixpack/registry.example.com_webshop_api/closure.json",
        GOLDEN_CLOSURE,
    );
    nixpack(dir.path()).arg("render").assert().success();
    let scratch = rendered(
        &dir.path().join(".nixpack/registry.example.com_webshop_api"),
        "scratch.Dockerfile",
    );
    insta::assert_snapshot!("every_key_layers__scratch.Dockerfile", scratch);
    assert_eq!(adds(&scratch).len(), 5, "{scratch}");
}

/// A Dockerfile word in double quotes, unescaped as Docker reads it.
fn unquote(word: &str) -> String {
    let inner = word
        .strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .unwrap_or_else(|| panic!("`{word}` is quoted"));
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().expect("an escape is followed by a character")),
            '"' | '$' => panic!("unescaped `{c}` in {word}"),
            c => out.push(c),
        }
    }
    out
}

/// Values with `"`, `$`, `\` and a would-be instruction stay inside their
/// own line: ENV/LABEL/WORKDIR quoted, ENTRYPOINT/CMD as JSON arrays.
#[test]
fn values_cannot_inject_dockerfile_lines() {
    let manifest = r#"
[project]
name = "inject"

[[image]]
name = "inject/app"
expression = "default.nix"
entrypoint = ["/bin/sh", "-c", "echo \"hi\" \nRUN rm -rf /", "\\"]
cmd = ["\"]", "CMD [\"evil\"]"]
workdir = "/srv/it's \"here\" $HOME"
user = "1000:1000"

[image.env]
QUOTE = "say \"hi\""
DOLLAR = "$HOME and ${PATH}"
BACKSLASH = "ends with \\"
ALL = "\" \\ $ ' `"

[image.labels]
"org.example.note" = "a \"label\" \\ $x"
"#;
    let dir = project(&[("nixpack.toml", manifest), ("default.nix", "{}")]);
    nixpack(dir.path()).arg("render").assert().success();
    let scratch = rendered(
        &dir.path().join(".nixpack/inject_app"),
        "scratch.Dockerfile",
    );
    insta::assert_snapshot!("injection__scratch.Dockerfile", scratch);

    // Every line is a comment or one of the instructions the template writes.
    let known = common::SCRATCH_INSTRUCTIONS;
    for line in scratch
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(
            known.iter().any(|k| line.starts_with(k)),
            "unexpected line `{line}` in:\n{scratch}"
        );
        assert!(
            !line.ends_with('\\'),
            "a line ending in `\\` would continue onto the next: `{line}`"
        );
    }
    let count = |prefix: &str| scratch.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(count("ENV "), 4);
    assert_eq!(count("LABEL "), 1);
    assert_eq!(
        (count("ENTRYPOINT "), count("CMD "), count("RUN ")),
        (1, 1, 0)
    );

    // ENV values read back exactly as written in the manifest.
    let env: std::collections::BTreeMap<String, String> = scratch
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), unquote(v))
        })
        .collect();
    assert_eq!(env["QUOTE"], r#"say "hi""#);
    assert_eq!(env["DOLLAR"], "$HOME and ${PATH}");
    assert_eq!(env["BACKSLASH"], r"ends with \");
    assert_eq!(env["ALL"], r#"" \ $ ' `"#);

    let label = scratch
        .lines()
        .find_map(|l| l.strip_prefix("LABEL "))
        .unwrap();
    let (k, v) = label.split_once('=').unwrap();
    assert_eq!(
        (unquote(k).as_str(), unquote(v).as_str()),
        ("org.example.note", r#"a "label" \ $x"#)
    );

    let workdir = scratch
        .lines()
        .find_map(|l| l.strip_prefix("WORKDIR "))
        .unwrap();
    assert_eq!(unquote(workdir), r#"/srv/it's "here" $HOME"#);

    // Exec form: valid JSON arrays holding exactly the manifest's strings.
    let json = |prefix: &str| -> Vec<String> {
        let line = scratch
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap();
        serde_json::from_str(line).unwrap_or_else(|e| panic!("`{line}` is not JSON: {e}"))
    };
    assert_eq!(
        json("ENTRYPOINT "),
        ["/bin/sh", "-c", "echo \"hi\" \nRUN rm -rf /", "\\"]
    );
    assert_eq!(json("CMD "), ["\"]", "CMD [\"evil\"]"]);

    // nixpack's own Dockerfile reader (the native image assembly) agrees.
    let recipe = nixpack::dockerfile::parse(&scratch).expect("the rendered file is read natively");
    assert_eq!(
        recipe
            .env
            .iter()
            .find(|(k, _)| k == "ALL")
            .map(|(_, v)| v.as_str()),
        Some(r#"" \ $ ' `"#)
    );
    assert_eq!(recipe.workdir.as_deref(), Some(r#"/srv/it's "here" $HOME"#));
    assert_eq!(recipe.entrypoint.unwrap()[2], "echo \"hi\" \nRUN rm -rf /");
}
