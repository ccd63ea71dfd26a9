//! The command line as a user meets it: `init`, finding the manifest,
//! `--help`, `--version`, and exit codes (0 ok, 1 user error, 2 usage).

mod common;

use clap::CommandFactory;
use predicates::prelude::*;

use nixpack::manifest::Manifest;

use common::{nixpack, project, squash, RENDERED};

const MINIMAL: &str = r#"[project]
name = "shop"

[[image]]
name = "shop/web"
expression = "default.nix"
"#;

fn read(path: impl AsRef<std::path::Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

// ---- init ----------------------------------------------------------------

#[test]
fn init_writes_a_manifest_that_loads_an_expression_and_a_gitignore() {
    let dir = project(&[]);
    let app = dir.path().join("my-app");
    nixpack(dir.path())
        .args(["init", "my-app"])
        .assert()
        .success()
        .stdout(predicate::str::contains("created").and(predicate::str::contains("nixpack.toml")));

    let manifest =
        Manifest::load(&app.join("nixpack.toml")).expect("the manifest init writes loads");
    assert_eq!(
        manifest.project.name, "my-app",
        "the project is named after its folder"
    );
    assert_eq!(manifest.images.len(), 1);
    assert_eq!(manifest.images[0].reference(), "my-app:latest");
    assert_eq!(manifest.images[0].expression, "default.nix");
    assert!(read(app.join("default.nix")).contains("builtins.derivation"));
    assert_eq!(read(app.join(".gitignore")).matches(".nixpack/").count(), 1);
}

#[test]
fn init_in_the_current_folder_then_render_works() {
    let dir = project(&[]);
    nixpack(dir.path()).arg("init").assert().success();
    nixpack(dir.path()).arg("render").assert().success();
    let folders: Vec<_> = std::fs::read_dir(dir.path().join(".nixpack"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        folders.len(),
        1,
        "one image folder under .nixpack/: {folders:?}"
    );
    for file in RENDERED {
        assert!(folders[0].join(file).is_file(), "{file}");
    }
}

#[test]
fn init_name_sets_the_project_and_image_names() {
    let dir = project(&[]);
    nixpack(dir.path())
        .args(["init", "--name", "My Shop"])
        .assert()
        .success();
    let m = Manifest::load(&dir.path().join("nixpack.toml")).unwrap();
    assert_eq!(m.project.name, "My Shop");
    assert_eq!(
        m.images[0].name.as_str(),
        "my-shop",
        "the image name is the project name as Docker accepts it"
    );
}

#[test]
fn init_name_with_quotes_stays_one_toml_string() {
    let dir = project(&[]);
    nixpack(dir.path())
        .args(["init", "--name", r#"a "quoted" \ name"#])
        .assert()
        .success();
    let m = Manifest::load(&dir.path().join("nixpack.toml")).unwrap();
    assert_eq!(m.project.name, r#"a "quoted" \ name"#);
}

#[test]
fn init_refuses_to_overwrite_a_manifest() {
    let existing = "# mine, keep it\n[project]\nname = \"mine\"\n";
    let dir = project(&[("nixpack.toml", existing)]);
    let out = nixpack(dir.path())
        .arg("init")
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let err = squash(&String::from_utf8_lossy(&out));
    assert!(err.contains("nixpack.toml` already exists"), "{err}");
    assert!(err.contains("never overwrites"), "{err}");
    assert_eq!(
        read(dir.path().join("nixpack.toml")),
        existing,
        "the manifest is unchanged"
    );
    assert!(
        !dir.path().join("default.nix").exists(),
        "nothing else is written"
    );
    assert!(
        !dir.path().join(".gitignore").exists(),
        "nothing else is written"
    );
}

#[test]
fn init_keeps_an_existing_expression() {
    let dir = project(&[("default.nix", "# my own\n")]);
    nixpack(dir.path()).arg("init").assert().success();
    assert_eq!(read(dir.path().join("default.nix")), "# my own\n");
}

#[test]
fn init_appends_to_gitignore_and_keeps_what_is_there() {
    // No newline at the end: the appended line must not join the last one.
    let dir = project(&[(".gitignore", "/target\n*.log")]);
    nixpack(dir.path()).arg("init").assert().success();
    let ignore = read(dir.path().join(".gitignore"));
    assert!(ignore.starts_with("/target\n*.log\n"), "{ignore:?}");
    assert_eq!(
        ignore.lines().filter(|l| *l == ".nixpack/").count(),
        1,
        "{ignore:?}"
    );
}

#[test]
fn init_does_not_repeat_an_ignore_line_that_is_there() {
    for present in [".nixpack/", ".nixpack", "/.nixpack/"] {
        let before = format!("target/\n{present}\n");
        let dir = project(&[(".gitignore", &before)]);
        nixpack(dir.path()).arg("init").assert().success();
        assert_eq!(
            read(dir.path().join(".gitignore")),
            before,
            "`{present}` already ignores the outputs"
        );
    }
}

/// A second `init` further down the same repository finds `.nixpack/`
/// ignored by the top's .gitignore and leaves the sub-folder without one.
#[test]
fn init_in_a_subfolder_of_the_repository_does_not_duplicate_the_ignore() {
    let dir = project(&[]);
    std::fs::create_dir(dir.path().join(".git")).unwrap();
    nixpack(dir.path()).arg("init").assert().success();
    nixpack(dir.path())
        .args(["init", "services/api"])
        .assert()
        .success();
    nixpack(dir.path())
        .args(["init", "services/worker"])
        .assert()
        .success();
    assert_eq!(
        read(dir.path().join(".gitignore"))
            .matches(".nixpack")
            .count(),
        1
    );
    assert!(!dir.path().join("services/api/.gitignore").exists());
    assert!(!dir.path().join("services/worker/.gitignore").exists());
    assert!(dir.path().join("services/worker/nixpack.toml").is_file());
}

/// Outside a repository only the folder's own .gitignore counts, so each
/// project folder gets its line, once, however often init runs there.
#[test]
fn init_outside_a_repository_writes_each_folders_own_gitignore_once() {
    let dir = project(&[]);
    for sub in ["a", "b"] {
        nixpack(dir.path()).args(["init", sub]).assert().success();
        std::fs::remove_file(dir.path().join(sub).join("nixpack.toml")).unwrap();
        nixpack(dir.path()).args(["init", sub]).assert().success();
        assert_eq!(
            read(dir.path().join(sub).join(".gitignore"))
                .matches(".nixpack/")
                .count(),
            1
        );
    }
}

// ---- finding the manifest --------------------------------------------------

#[test]
fn render_from_a_subfolder_finds_the_manifest_above() {
    let dir = project(&[
        ("nixpack.toml", MINIMAL),
        ("default.nix", "{}"),
        ("src/deep/er/.keep", ""),
    ]);
    nixpack(&dir.path().join("src/deep/er"))
        .arg("render")
        .assert()
        .success()
        .stdout(predicate::str::contains("rendered"));
    for file in RENDERED {
        assert!(
            dir.path().join(".nixpack/shop_web").join(file).is_file(),
            "{file} is written beside the manifest"
        );
    }
    assert!(!dir.path().join("src/deep/er/.nixpack").exists());
}

#[test]
fn no_manifest_anywhere_says_to_run_init() {
    let dir = project(&[]);
    nixpack(dir.path()).arg("render").assert().code(1).stderr(
        predicate::str::contains("could not find `nixpack.toml`")
            .and(predicate::str::contains("nixpack init")),
    );
}

#[test]
fn manifest_path_to_a_directory_is_a_clear_error() {
    let dir = project(&[("app/nixpack.toml", MINIMAL)]);
    let out = nixpack(dir.path())
        .args(["render", "--manifest-path", "app"])
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let err = squash(&String::from_utf8_lossy(&out));
    assert!(
        err.contains("the manifest path `app` is a directory, not a file"),
        "{err}"
    );
    assert!(
        err.contains("--manifest-path app/nixpack.toml"),
        "the help shows the path to pass: {err}"
    );
}

#[test]
fn manifest_path_to_a_missing_file_is_a_clear_error() {
    let dir = project(&[]);
    nixpack(dir.path())
        .args(["render", "--manifest-path", "nope/nixpack.toml"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "could not read the manifest `nope/nixpack.toml`",
        ));
}

#[test]
fn manifest_path_works_from_anywhere_and_before_the_subcommand() {
    let dir = project(&[
        ("app/nixpack.toml", MINIMAL),
        ("app/default.nix", "{}"),
        ("elsewhere/.keep", ""),
    ]);
    let manifest = dir.path().join("app/nixpack.toml");
    nixpack(&dir.path().join("elsewhere"))
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("render")
        .assert()
        .success();
    assert!(dir
        .path()
        .join("app/.nixpack/shop_web/scratch.Dockerfile")
        .is_file());
}

#[test]
fn render_out_and_image_select_what_is_written() {
    let two = format!("{MINIMAL}\n[[image]]\nname = \"shop/jobs\"\nexpression = \"default.nix\"\n");
    let dir = project(&[("nixpack.toml", &two), ("default.nix", "{}")]);
    nixpack(dir.path())
        .args(["render", "--image", "shop/jobs", "--out", "rendered"])
        .assert()
        .success();
    assert!(dir
        .path()
        .join("rendered/shop_jobs/scratch.Dockerfile")
        .is_file());
    assert!(
        !dir.path().join("rendered/shop_web").exists(),
        "only the selected image"
    );
    assert!(
        !dir.path().join(".nixpack").exists(),
        "--out replaces .nixpack/"
    );
}

#[test]
fn render_of_an_unknown_image_lists_the_declared_ones() {
    let dir = project(&[("nixpack.toml", MINIMAL), ("default.nix", "{}")]);
    nixpack(dir.path())
        .args(["render", "--image", "shop/nope"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("no image named `shop/nope`")
                .and(predicate::str::contains("shop/web")),
        );
}

#[test]
fn quiet_render_prints_only_its_result() {
    let dir = project(&[("nixpack.toml", MINIMAL), ("default.nix", "{}")]);
    nixpack(dir.path())
        .args(["-q", "render"])
        .assert()
        .success()
        .stderr("")
        .stdout(predicate::str::starts_with("rendered ").and(predicate::str::contains("shop_web")));
}

// ---- help, version, usage ----------------------------------------------------

#[test]
fn version_prints_the_crate_version() {
    let dir = project(&[]);
    nixpack(dir.path())
        .arg("--version")
        .assert()
        .success()
        .stdout(format!("nixpack {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn every_subcommand_has_help() {
    let dir = project(&[]);
    let cli = nixpack::cli::Cli::command();
    let subcommands: Vec<String> = cli
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    assert!(subcommands.len() >= 4, "{subcommands:?}");
    for sub in &subcommands {
        for flag in ["--help", "-h"] {
            nixpack(dir.path())
                .args([sub.as_str(), flag])
                .assert()
                .success()
                .stdout(predicate::str::contains(format!("Usage: nixpack {sub}")));
        }
    }
    let top = nixpack(dir.path())
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let top = String::from_utf8_lossy(&top);
    for sub in &subcommands {
        assert!(
            top.contains(sub.as_str()),
            "top-level help lists `{sub}`:\n{top}"
        );
    }
    assert!(top.contains("--manifest-path"));
}

#[test]
fn usage_errors_exit_2() {
    let dir = project(&[]);
    for args in [
        &["frobnicate"][..],
        &["render", "--no-such-flag"],
        &[],
        &["-q", "-v", "render"],
        &["build", "--jobs", "0"],
    ] {
        nixpack(dir.path())
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("Usage:").or(predicate::str::contains("error:")));
    }
}

#[test]
fn a_bad_manifest_exits_1_with_the_diagnostic_on_stderr() {
    let dir = project(&[
        ("nixpack.toml", "[project]\nname = \"x\"\n"),
        ("default.nix", "{}"),
    ]);
    nixpack(dir.path())
        .arg("render")
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains("the manifest declares no image"));
}

#[test]
fn build_output_names_its_kind_and_path() {
    let dir = project(&[]);
    for (arg, says) in [
        (
            "layout",
            "names no kind: write docker, oci:DIR or oci-archive:FILE",
        ),
        ("docker:x", "unknown output kind `docker`"),
        ("oci:", "names no path"),
    ] {
        let out = nixpack(dir.path())
            .args(["build", "--output", arg])
            .assert()
            .code(2);
        let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
        assert!(err.contains(says), "{arg}: {err}");
    }
}

#[test]
fn an_oci_archive_of_several_images_says_to_pick_one() {
    let dir = project(&[
        (
            "nixpack.toml",
            "[project]\nname = \"t\"\n[[image]]\nname = \"a\"\nexpression = \"default.nix\"\n[[image]]\nname = \"b\"\nexpression = \"default.nix\"\n",
        ),
        ("default.nix", "1"),
    ]);
    let out = nixpack(dir.path())
        .args(["build", "--output", "oci-archive:x.tar"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .assert()
        .code(1);
    let err = common::squash(&String::from_utf8_lossy(&out.get_output().stderr));
    assert!(
        err.contains("holds one image, and this build has 2"),
        "{err}"
    );
    assert!(err.contains("--image NAME"), "{err}");
}
