//! Bad manifests, each run through `nixpack render`: exit code 1, nothing
//! rendered, and a diagnostic that names the file, the line and column of
//! the key or value at fault (miette prints `[nixpack.toml:LINE:COL]` and
//! the line itself), says what is wrong and, where it helps, what to do.

mod common;

use common::{nixpack, project, squash};

/// `[project]` on lines 1–2, a blank line 3.
const PROJECT: &str = "[project]\nname = \"shop\"\n\n";
/// `[[image]]` on lines 4–6.
const IMAGE: &str = "[[image]]\nname = \"shop/web\"\nexpression = \"default.nix\"\n";

/// The manifest with `PROJECT` and `IMAGE` first, then `rest` from line 7.
fn with_image(rest: &str) -> String {
    format!("{PROJECT}{IMAGE}{rest}")
}

/// Runs `nixpack render` on `manifest` (beside a `default.nix` and `files`)
/// and checks the diagnostic: exit 1, `[nixpack.toml:LINE:COL]` where COL is
/// where `at` starts on that line, the line itself, and each of `says`.
/// Returns the squashed stderr for further checks.
fn assert_bad(
    manifest: &str,
    files: &[(&str, &str)],
    line: usize,
    at: &str,
    says: &[&str],
) -> String {
    let mut all = vec![("nixpack.toml", manifest), ("default.nix", "{}")];
    all.extend_from_slice(files);
    let dir = project(&all);
    let output = nixpack(dir.path())
        .args(["render", "--manifest-path", "nixpack.toml"])
        .assert()
        .code(1)
        .stdout("")
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();

    let source_line = manifest
        .lines()
        .nth(line - 1)
        .unwrap_or_else(|| panic!("the manifest has a line {line}"));
    // `at` may be "\n": the end of the line.
    let column = format!("{source_line}\n")
        .find(at)
        .unwrap_or_else(|| panic!("`{at}` is on line {line}: {source_line:?}"))
        + 1;
    let location = format!("[nixpack.toml:{line}:{column}]");
    assert!(
        stderr.contains(&location),
        "expected {location} in:\n{stderr}"
    );
    // miette shows the line as ` 7 │ text` (with `╭─▶` before a value
    // that spans lines).
    let gutter = format!("{line} │");
    let shown = stderr
        .lines()
        .any(|l| l.trim_start().starts_with(&gutter) && l.contains(source_line.trim()));
    assert!(
        shown,
        "expected line {line} `{source_line}` to be shown in:\n{stderr}"
    );
    let squashed = squash(&stderr);
    for s in says {
        assert!(squashed.contains(s), "expected `{s}` in:\n{stderr}");
    }
    assert!(
        !dir.path().join(".nixpack").exists(),
        "nothing is rendered from a bad manifest"
    );
    squashed
}

// ---- TOML itself ------------------------------------------------------------

#[test]
fn toml_syntax_error() {
    let m = with_image("tag = \"1.0\ncmd = [\"serve\"]\n");
    assert_bad(
        &m,
        &[],
        7,
        "\n",
        &[
            "TOML syntax error: invalid basic string, expected `\"`",
            "https://toml.io",
        ],
    );
}

#[test]
fn toml_duplicate_key() {
    let m = with_image("name = \"shop/api\"\n");
    assert_bad(&m, &[], 7, "name", &["duplicate key `name`", "only once"]);
}

// ---- keys nixpack does not know -------------------------------------------------

#[test]
fn unknown_key_prots_suggests_ports() {
    let m = with_image("prots = [8080]\n");
    assert_bad(
        &m,
        &[],
        7,
        "prots",
        &[
            "unknown key `prots` in `[[image]]`",
            "did you mean `ports`?",
        ],
    );
}

#[test]
fn unknown_key_entrypint_suggests_entrypoint() {
    let m = with_image("entrypint = [\"/bin/server\"]\n");
    assert_bad(
        &m,
        &[],
        7,
        "entrypint",
        &["unknown key `entrypint`", "did you mean `entrypoint`?"],
    );
}

#[test]
fn unknown_key_in_builder_suggests_from() {
    let m = format!("[builder]\nform = \"nixos/nix:2.28.3\"\n{PROJECT}{IMAGE}");
    assert_bad(
        &m,
        &[],
        2,
        "form",
        &["unknown key `form` in `[builder]`", "did you mean `from`?"],
    );
}

#[test]
fn unknown_key_in_conventions() {
    let m = with_image("[image.conventions]\nusr_local = false\n");
    assert_bad(
        &m,
        &[],
        8,
        "usr_local",
        &[
            "unknown key `usr_local` in `[image.conventions]`",
            "did you mean `usr-local`?",
        ],
    );
}

#[test]
fn unknown_top_level_table_suggests_the_close_one() {
    let m = format!("{PROJECT}[nixpgks]\npath = \"vendor\"\n\n{IMAGE}");
    assert_bad(
        &m,
        &[],
        4,
        "nixpgks",
        &["unknown table `[nixpgks]`", "did you mean `[nixpkgs]`?"],
    );
}

#[test]
fn unknown_top_level_table_lists_the_known_ones() {
    let m = format!("{PROJECT}[deploy]\nreplicas = 3\n\n{IMAGE}");
    assert_bad(
        &m,
        &[],
        4,
        "deploy",
        &[
            "unknown table `[deploy]`",
            "`[project]`, `[builder]`, `[nixpkgs]`, `[[image]]`",
        ],
    );
}

// ---- wrong types ---------------------------------------------------------------

#[test]
fn ports_as_a_string() {
    let m = with_image("ports = \"abc\"\n");
    assert_bad(
        &m,
        &[],
        7,
        "\"abc\"",
        &[
            "wrong type for `image.ports`: expected a list, found string \"abc\"",
            "ports = [8080",
        ],
    );
}

#[test]
fn ports_as_a_table() {
    let m = with_image("ports = { http = 8080 }\n");
    assert_bad(
        &m,
        &[],
        7,
        "{ http",
        &["wrong type for `image.ports`: expected a list, found a table"],
    );
}

#[test]
fn port_of_the_wrong_type() {
    let m = with_image("ports = [8080, true]\n");
    assert_bad(
        &m,
        &[],
        7,
        "true",
        &["expected a port number or a string such as \"53/udp\", found boolean `true`"],
    );
}

#[test]
fn tag_as_a_number() {
    let m = with_image("tag = 5\n");
    assert_bad(
        &m,
        &[],
        7,
        "5",
        &[
            "wrong type for `image.tag`: expected a string, found integer `5`",
            "double quotes",
        ],
    );
}

#[test]
fn nix_option_as_a_number() {
    let m = format!("[builder.nix-options]\nmax-jobs = 4\n\n{PROJECT}{IMAGE}");
    assert_bad(
        &m,
        &[],
        2,
        "4",
        &[
            "wrong type for `builder.nix-options.max-jobs`: expected a string",
            "double quotes",
        ],
    );
}

#[test]
fn convention_switch_as_a_string() {
    let m = with_image("[image.conventions]\ntmp = \"yes\"\n");
    assert_bad(
        &m,
        &[],
        8,
        "\"yes\"",
        &["wrong type for `image.conventions.tmp`: expected true or false"],
    );
}

#[test]
fn layers_as_a_float() {
    let m = with_image("layers = 2.5\n");
    assert_bad(
        &m,
        &[],
        7,
        "2.5",
        &[
            "wrong type for `image.layers`: expected an integer",
            "layers = 40",
        ],
    );
}

// ---- ports ---------------------------------------------------------------------

#[test]
fn port_out_of_range() {
    let m = with_image("ports = [8080, 70000]\n");
    assert_bad(
        &m,
        &[],
        7,
        "70000",
        &["port 70000 is out of range", "must be 1 to 65535"],
    );
}

#[test]
fn port_zero_in_a_string() {
    let m = with_image("ports = [\"0/udp\"]\n");
    assert_bad(&m, &[], 7, "\"0/udp\"", &["port 0 is out of range"]);
}

#[test]
fn port_with_a_bad_protocol() {
    let m = with_image("ports = [\"53/icmp\"]\n");
    assert_bad(
        &m,
        &[],
        7,
        "\"53/icmp\"",
        &[
            "`icmp` is not a port protocol",
            "use `tcp`, `udp` or `sctp`",
        ],
    );
}

#[test]
fn port_that_is_not_a_number() {
    let m = with_image("ports = [\"http\"]\n");
    assert_bad(
        &m,
        &[],
        7,
        "\"http\"",
        &["`http` is not a port", "\"53/udp\""],
    );
}

#[test]
fn port_listed_twice() {
    let m = with_image("ports = [8080, \"8080/tcp\"]\n");
    assert_bad(
        &m,
        &[],
        7,
        "\"8080/tcp\"",
        &["port 8080/tcp is listed twice"],
    );
}

// ---- names and tags -------------------------------------------------------------

#[test]
fn duplicate_image_names() {
    let m = with_image("\n[[image]]\nname = \"shop/web\"\nexpression = \"default.nix\"\n");
    assert_bad(
        &m,
        &[],
        9,
        "\"shop/web\"",
        &[
            "duplicate image name `shop/web`",
            "first declared at line 5",
        ],
    );
}

#[test]
fn image_name_in_upper_case() {
    let m = format!("{PROJECT}[[image]]\nname = \"Shop/Web\"\nexpression = \"default.nix\"\n");
    assert_bad(
        &m,
        &[],
        5,
        "\"Shop/Web\"",
        &[
            "`Shop/Web` is not an image name Docker accepts",
            "lower case",
        ],
    );
}

#[test]
fn image_name_with_a_space() {
    let m = format!("{PROJECT}[[image]]\nname = \"my shop\"\nexpression = \"default.nix\"\n");
    assert_bad(
        &m,
        &[],
        5,
        "\"my shop\"",
        &["is not an image name Docker accepts"],
    );
}

#[test]
fn bad_tag() {
    let m = with_image("tag = \"-rc1\"\n");
    assert_bad(
        &m,
        &[],
        7,
        "\"-rc1\"",
        &[
            "`-rc1` is not a tag Docker accepts",
            "cannot start with `-`",
        ],
    );
}

#[test]
fn tag_with_a_colon() {
    let m = with_image("tag = \"1.0:beta\"\n");
    assert_bad(
        &m,
        &[],
        7,
        "\"1.0:beta\"",
        &["is not a tag Docker accepts", "not `:`"],
    );
}

#[test]
fn builder_from_that_is_no_image_reference() {
    let m = format!("[builder]\nfrom = \"Nix OS\"\n\n{PROJECT}{IMAGE}");
    assert_bad(
        &m,
        &[],
        2,
        "\"Nix OS\"",
        &["`[builder] from` is not a valid image reference"],
    );
}

#[test]
fn store_volume_with_a_slash() {
    let m = format!("[builder]\nstore-volume = \"nix/store\"\n\n{PROJECT}{IMAGE}");
    assert_bad(
        &m,
        &[],
        2,
        "\"nix/store\"",
        &["`store-volume` is not a valid Docker volume name"],
    );
}

#[test]
fn runner_that_nixpack_does_not_know() {
    let m = format!("[builder]\nrunner = \"podman\"\n\n{PROJECT}{IMAGE}");
    assert_bad(
        &m,
        &[],
        2,
        "\"podman\"",
        &[
            "`runner = \"podman\"` is not a runner nixpack knows",
            "\"docker\"",
            "\"host\"",
        ],
    );
}

// ---- files ---------------------------------------------------------------------

#[test]
fn expression_file_missing() {
    let m = format!("{PROJECT}[[image]]\nname = \"shop/web\"\nexpression = \"nix/web.nix\"\n");
    assert_bad(
        &m,
        &[],
        6,
        "\"nix/web.nix\"",
        &[
            "the expression file `nix/web.nix` does not exist",
            "relative to the folder of nixpack.toml",
        ],
    );
}

#[test]
fn expression_is_a_directory() {
    let m = format!("{PROJECT}[[image]]\nname = \"shop/web\"\nexpression = \"nix\"\n");
    assert_bad(
        &m,
        &[("nix/web.nix", "{}")],
        6,
        "\"nix\"",
        &["the expression `nix` is not a file"],
    );
}

#[test]
fn expression_outside_the_project() {
    let m = format!("{PROJECT}[[image]]\nname = \"shop/web\"\nexpression = \"../x.nix\"\n");
    assert_bad(
        &m,
        &[],
        6,
        "\"../x.nix\"",
        &[
            "the expression `../x.nix` lies outside the project",
            "without `..`",
        ],
    );
}

#[test]
fn expression_as_an_absolute_path() {
    let m = format!("{PROJECT}[[image]]\nname = \"shop/web\"\nexpression = \"/etc/hostname\"\n");
    assert_bad(
        &m,
        &[],
        6,
        "\"/etc/hostname\"",
        &["lies outside the project"],
    );
}

#[cfg(unix)]
#[test]
fn expression_symlinked_out_of_the_project() {
    let outside = tempfile::NamedTempFile::new().unwrap();
    let m = format!("{PROJECT}[[image]]\nname = \"shop/web\"\nexpression = \"link.nix\"\n");
    let dir = project(&[("nixpack.toml", &m)]);
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link.nix")).unwrap();
    let out = nixpack(dir.path())
        .arg("render")
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8_lossy(&out);
    assert!(err.contains("[nixpack.toml:6:14]"), "{err}");
    assert!(
        squash(&err).contains("the expression `link.nix` lies outside the project"),
        "{err}"
    );
}

#[test]
fn missing_expression() {
    let m = format!("{PROJECT}[[image]]\nname = \"shop/web\"\n");
    assert_bad(
        &m,
        &[],
        5,
        "\"shop/web\"",
        &[
            "image `shop/web` has no `expression`",
            "expression = \"default.nix\"",
        ],
    );
}

#[test]
fn nixpkgs_path_that_is_not_a_directory() {
    let m = format!("{PROJECT}[nixpkgs]\npath = \"vendor/nixpkgs\"\n\n{IMAGE}");
    assert_bad(
        &m,
        &[],
        5,
        "\"vendor/nixpkgs\"",
        &["`vendor/nixpkgs` is not a directory in the project"],
    );
}

// ---- values that would break a Dockerfile line -------------------------------------

#[test]
fn newline_in_an_env_value() {
    let m = with_image("env = { GREETING = \"a\\nb\" }\n");
    assert_bad(
        &m,
        &[],
        7,
        "\"a\\nb\"",
        &[
            "the environment variable `GREETING` contains a control character (\\n)",
            "new Dockerfile instruction",
        ],
    );
}

#[test]
fn newline_in_a_label() {
    let m = with_image("[image.labels]\n\"org.example.note\" = \"\"\"\nfirst\nsecond\"\"\"\n");
    assert_bad(
        &m,
        &[],
        8,
        "\"\"\"",
        &[
            "the label `org.example.note` contains a control character (\\n)",
            "new Dockerfile instruction",
        ],
    );
}

#[test]
fn env_name_that_is_no_variable() {
    let m = with_image("env = { \"1-BAD\" = \"x\" }\n");
    assert_bad(
        &m,
        &[],
        7,
        "\"1-BAD\"",
        &["`1-BAD` is not a valid environment variable name"],
    );
}

#[test]
fn tab_in_a_user() {
    let m = with_image("user = \"app\\tadmin\"\n");
    assert_bad(
        &m,
        &[],
        7,
        "\"app",
        &["`user` contains a control character (\\t)"],
    );
}

// ---- images, nixpkgs, layers, workdir ------------------------------------------------

#[test]
fn no_image_table() {
    let m = "[project]\nname = \"shop\"\n\n# images come later\n";
    assert_bad(
        m,
        &[],
        4,
        "\n",
        &["the manifest declares no image", "add an `[[image]]` table"],
    );
}

#[test]
fn empty_image_list() {
    let m = format!("image = []\n\n{PROJECT}");
    assert_bad(&m, &[], 1, "[]", &["the manifest declares no image"]);
}

#[test]
fn image_without_a_name() {
    let m = format!("{PROJECT}[[image]]\nexpression = \"default.nix\"\n");
    assert_bad(&m, &[], 4, "[[image]]", &["this `[[image]]` has no `name`"]);
}

#[test]
fn missing_project_table() {
    let m = IMAGE;
    assert_bad(m, &[], 1, "[[image]]", &["missing `[project]` table"]);
}

#[test]
fn project_without_a_name() {
    let m = format!("[project]\n\n{IMAGE}");
    assert_bad(
        &m,
        &[],
        1,
        "[project]",
        &["missing key `name` in `[project]`"],
    );
}

#[test]
fn nixpkgs_url_without_sha256() {
    let m = format!("{PROJECT}[nixpkgs]\nurl = \"https://github.com/NixOS/nixpkgs/archive/24.11.tar.gz\"\n\n{IMAGE}");
    assert_bad(
        &m,
        &[],
        5,
        "\"https",
        &[
            "`[nixpkgs] url` needs its `sha256`",
            "nix-prefetch-url --unpack",
        ],
    );
}

#[test]
fn nixpkgs_with_a_bad_sha256() {
    let m = format!("{PROJECT}[nixpkgs]\nurl = \"https://example.org/nixpkgs.tar.gz\"\nsha256 = \"abc\"\n\n{IMAGE}");
    assert_bad(&m, &[], 6, "\"abc\"", &["`sha256` is not a sha256 hash"]);
}

#[test]
fn nixpkgs_with_both_url_and_path() {
    let m = format!(
        "{PROJECT}[nixpkgs]\nurl = \"https://example.org/nixpkgs.tar.gz\"\nsha256 = \"{}\"\npath = \"vendor\"\n\n{IMAGE}",
        "0".repeat(64)
    );
    assert_bad(
        &m,
        &[("vendor/default.nix", "{}")],
        7,
        "\"vendor\"",
        &["takes either `url` + `sha256` or `path`, not both"],
    );
}

#[test]
fn zero_layers() {
    let m = with_image("layers = 0\n");
    assert_bad(
        &m,
        &[],
        7,
        "0",
        &["`layers = 0` is out of range", "must be 1 to 100"],
    );
}

#[test]
fn too_many_layers() {
    let m = with_image("layers = 500\n");
    assert_bad(
        &m,
        &[],
        7,
        "500",
        &["`layers = 500` is out of range", "more than 127 layers"],
    );
}

#[test]
fn relative_workdir() {
    let m = with_image("workdir = \"srv/app\"\n");
    assert_bad(
        &m,
        &[],
        7,
        "\"srv/app\"",
        &["`workdir` must be an absolute path", "`/srv`"],
    );
}

/// The first problem in file order is reported, so fixing errors one by
/// one walks down the file.
#[test]
fn the_first_problem_is_reported() {
    let m = with_image("ports = [70000]\nlayers = 0\n");
    let err = assert_bad(&m, &[], 7, "70000", &["port 70000"]);
    assert!(!err.contains("must be 1 to 100"), "{err}");
}

// ---- regressions ----------------------------------------------------------------

/// serde's derived structs also read an array, field by field:
/// `project = ["shop"]` used to name the project `shop`.
#[test]
fn regression_a_table_written_as_a_list_is_refused() {
    let m = format!("project = [\"shop\"]\n\n{IMAGE}");
    assert_bad(
        &m,
        &[],
        1,
        "[\"shop\"]",
        &[
            "wrong type for `project`: expected a table, found a list",
            "[project] with `name",
        ],
    );
}

/// `conventions = [false, false, false]` used to switch all three off.
#[test]
fn regression_conventions_written_as_a_list_are_refused() {
    let m = with_image("conventions = [false, false, false]\n");
    assert_bad(
        &m,
        &[],
        7,
        "[false",
        &[
            "wrong type for `image.conventions`: expected a table, found a list",
            "usr-local",
        ],
    );
}

#[test]
fn image_names_that_share_an_output_folder() {
    assert_bad(
        &with_image("\n[[image]]\nname = \"shop_web\"\nexpression = \"default.nix\"\n"),
        &[],
        9,
        "\"shop_web\"",
        &[
            "would share the output folder",
            "shop/web",
            "rename one of them",
        ],
    );
}

#[test]
fn expression_in_a_folder_nixpack_does_not_send() {
    assert_bad(
        &format!(
            "{PROJECT}[[image]]\nname = \"shop/web\"\nexpression = \"api/.nixpack/app.nix\"\n"
        ),
        &[("api/.nixpack/app.nix", "{}")],
        6,
        "\"api/.nixpack/app.nix\"",
        &["lies in `.nixpack`", "does not send to the builder"],
    );
}
