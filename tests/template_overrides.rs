//! `[builder.templates]` overrides: used when set, and when broken, an
//! error that names the template file and line (or the manifest line when
//! the file is missing).

mod common;

use common::{nixpack, project, squash};

fn manifest_with(templates: &str) -> String {
    format!("[project]\nname = \"shop\"\n\n[builder.templates]\n{templates}\n\n[[image]]\nname = \"shop/web\"\nexpression = \"default.nix\"\ncmd = [\"serve\"]\n")
}

/// Runs `nixpack render` and returns (exit code, stderr).
fn render(files: &[(&str, &str)]) -> (tempfile::TempDir, i32, String) {
    let mut all = vec![("default.nix", "{}")];
    all.extend_from_slice(files);
    let dir = project(&all);
    let out = nixpack(dir.path()).arg("render").output().unwrap();
    let code = out.status.code().expect("an exit code");
    (dir, code, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn an_override_replaces_the_built_in_template() {
    let custom = "FROM scratch\nLABEL made.by=\"my template\"\nCMD {{json image.cmd}}\n";
    let (dir, code, err) = render(&[
        (
            "nixpack.toml",
            &manifest_with("scratch = \"ops/scratch.hbs\""),
        ),
        ("ops/scratch.hbs", custom),
    ]);
    assert_eq!(code, 0, "{err}");
    let scratch =
        std::fs::read_to_string(dir.path().join(".nixpack/shop_web/scratch.Dockerfile")).unwrap();
    assert_eq!(
        scratch,
        "FROM scratch\nLABEL made.by=\"my template\"\nCMD [\"serve\"]\n"
    );
    let builder =
        std::fs::read_to_string(dir.path().join(".nixpack/shop_web/builder.Dockerfile")).unwrap();
    assert!(
        builder.contains("FROM nixos/nix:"),
        "the other templates stay built in"
    );
}

#[test]
fn a_syntax_error_names_the_template_and_line() {
    let bad =
        "# my scratch template\nFROM scratch\n{{#if image.cmd}\nCMD {{json image.cmd}}\n{{/if}}\n";
    let (dir, code, err) = render(&[
        ("nixpack.toml", &manifest_with("scratch = \"bad.hbs\"")),
        ("bad.hbs", bad),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("[bad.hbs:3:"),
        "the location is bad.hbs line 3:\n{err}"
    );
    assert!(
        err.contains("3 │ {{#if image.cmd}"),
        "the line is shown:\n{err}"
    );
    let err = squash(&err);
    assert!(
        err.contains("template `bad.hbs`: invalid handlebars syntax"),
        "{err}"
    );
    assert!(
        err.contains("built-in scratch.Dockerfile to compare"),
        "{err}"
    );
    assert!(!dir.path().join(".nixpack").exists(), "nothing is rendered");
}

#[test]
fn an_unclosed_block_names_the_template() {
    let bad = "FROM {{from}}\n{{#each nix_options}}\nRUN true\n";
    let (_dir, code, err) = render(&[
        (
            "nixpack.toml",
            &manifest_with("builder = \"nixpack/builder.hbs\""),
        ),
        ("nixpack/builder.hbs", bad),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        squash(&err).contains("template `nixpack/builder.hbs`"),
        "{err}"
    );
    assert!(err.contains("[nixpack/builder.hbs:"), "{err}");
}

#[test]
fn an_unknown_value_names_the_line_and_lists_the_values() {
    let bad = "FROM scratch\n# fine so far\nENTRYPOINT {{json image.entrypiont}}\n";
    let (_dir, code, err) = render(&[
        ("nixpack.toml", &manifest_with("scratch = \"scratch.hbs\"")),
        ("scratch.hbs", bad),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("[scratch.hbs:3:"), "{err}");
    let err = squash(&err);
    assert!(
        err.contains("`image.entrypiont` is not a value this template is given"),
        "{err}"
    );
    assert!(
        err.contains("scratch.Dockerfile is rendered with:") && err.contains("image.entrypoint"),
        "{err}"
    );
}

#[test]
fn a_missing_override_points_at_the_manifest_line() {
    let manifest = manifest_with("entrypoint = \"nixpack/entrypoint.sh.hbs\"");
    let (_dir, code, err) = render(&[("nixpack.toml", &manifest)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("[nixpack.toml:5:14]"), "{err}");
    assert!(
        err.contains("5 │ entrypoint = \"nixpack/entrypoint.sh.hbs\""),
        "{err}"
    );
    let err = squash(&err);
    assert!(
        err.contains("the template file `nixpack/entrypoint.sh.hbs` does not exist"),
        "{err}"
    );
}

#[test]
fn an_override_outside_the_project_is_refused() {
    let (_dir, code, err) = render(&[(
        "nixpack.toml",
        &manifest_with("scratch = \"../shared/scratch.hbs\""),
    )]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("[nixpack.toml:5:11]"), "{err}");
    assert!(
        squash(&err).contains("the template `../shared/scratch.hbs` lies outside the project"),
        "{err}"
    );
}

#[test]
fn an_unknown_template_key_suggests_the_right_one() {
    let (_dir, code, err) = render(&[
        ("nixpack.toml", &manifest_with("scrach = \"s.hbs\"")),
        ("s.hbs", "FROM scratch\n"),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("[nixpack.toml:5:1]"), "{err}");
    let err = squash(&err);
    assert!(
        err.contains("unknown key `scrach` in `[builder.templates]`")
            && err.contains("did you mean `scratch`?"),
        "{err}"
    );
}

#[test]
fn a_value_of_the_wrong_kind_for_a_helper_is_named() {
    let bad = "FROM scratch\nWORKDIR {{quote image.workdir}}\n";
    let (_dir, code, err) = render(&[
        ("nixpack.toml", &manifest_with("scratch = \"scratch.hbs\"")),
        ("scratch.hbs", bad),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("[scratch.hbs:2:9]"), "{err}");
    let err = squash(&err);
    assert!(
        err.contains("`quote` needs a string, and `image.workdir` is not one"),
        "{err}"
    );
    assert!(
        err.contains("{{#if …}}"),
        "the help says how to use a value that may be unset: {err}"
    );
}

#[test]
fn an_unknown_helper_lists_the_helpers() {
    let bad = "FROM scratch\n\nENV A={{dockerquote image.name}}\n";
    let (_dir, code, err) = render(&[
        ("nixpack.toml", &manifest_with("scratch = \"scratch.hbs\"")),
        ("scratch.hbs", bad),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("[scratch.hbs:3:7]"), "{err}");
    let err = squash(&err);
    assert!(
        err.contains("there is no helper `dockerquote`")
            && err.contains("json, quote, shell and bytes"),
        "{err}"
    );
}
