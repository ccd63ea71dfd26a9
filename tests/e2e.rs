//! End-to-end tests against the real Docker Engine: every stage runs for
//! real (builder image, store volume, nix-build in the builder, layers,
//! scratch image), and the results are checked through the Engine's API.
//!
//! They need the offline builder base `nixpack-base:bookworm`; `scripts/test`
//! makes it first (`scripts/make-builder-base`).

mod common;

use common::engine::{docker, require_base, rt, text, unique, ImageGuard, VolumeGuard, BASE};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures_util::StreamExt;
use nixpack::closure::Closure;

fn nixpack_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nixpack"))
}

/// The binary, recording its builds (for `nixpack gc`) in a registry of
/// the tests' own, never the user's.
fn nixpack_command() -> Command {
    let mut cmd = Command::new(nixpack_bin());
    cmd.env(
        "XDG_STATE_HOME",
        std::env::temp_dir().join(format!("nixpack-e2e-state-{}", std::process::id())),
    );
    cmd
}

fn nixpack(dir: &Path, args: &[&str]) -> Output {
    nixpack_command()
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("nixpack runs")
}

/// `nixpack build` in `dir`, which must succeed; returns its output.
fn build_ok(dir: &Path) -> Output {
    let out = nixpack(dir, &["build"]);
    assert!(out.status.success(), "build failed:\n{}", text(&out.stderr));
    out
}

/// A project folder with a manifest and files.
fn project(manifest: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nixpack.toml"), manifest).unwrap();
    for (p, t) in files {
        std::fs::write(dir.path().join(p), t).unwrap();
    }
    dir
}

/// A manifest with one image `name` built from `default.nix` on the
/// offline base; `builder` and `image` add lines to those tables.
fn one_image(name: &str, builder: &str, image: &str) -> String {
    format!("[project]\nname = \"t\"\n[builder]\nfrom = \"{BASE}\"\n{builder}[[image]]\nname = \"{name}\"\nexpression = \"default.nix\"\n{image}")
}

/// A derivation with a `bin/` and a `share/`, unique per `nonce`.
fn tiny_expression(nonce: &str) -> String {
    format!(
        r#"builtins.derivation {{
  name = "tiny";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir -p $out/bin $out/share/tiny; echo {nonce} > $out/share/tiny/nonce; echo '#!/bin/sh' > $out/bin/tiny" ];
}}
"#
    )
}

fn containers_labelled(label: &str) -> Vec<String> {
    let d = docker();
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&HashMap::from([("label", vec![label])]))
        .build();
    rt().block_on(d.list_containers(Some(opts)))
        .unwrap()
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// Containers created with `label` between `since` and now (Engine events).
/// `since` is a fractional Unix time: whole seconds would also count the
/// containers of a build that ended earlier in the same second.
fn containers_created_since(label: &str, since: Duration) -> usize {
    let d = docker();
    let until = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let filters = HashMap::from([
        ("type", vec!["container"]),
        ("event", vec!["create"]),
        ("label", vec![label]),
    ]);
    let opts = EventsOptionsBuilder::default()
        .since(&format!("{}.{:09}", since.as_secs(), since.subsec_nanos()))
        .until(&until.to_string())
        .filters(&filters)
        .build();
    rt().block_on(async { d.events(Some(opts)).collect::<Vec<_>>().await })
        .len()
}

/// The image's filesystem, from `docker save` (the Engine's image export):
/// path → (mode, link target), the union of its layers.
fn image_filesystem(reference: &str) -> BTreeMap<String, (u32, Option<String>)> {
    let d = docker();
    let bytes: Vec<u8> = rt().block_on(async {
        let mut s = d.export_image(reference);
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    });
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut archive = tar::Archive::new(&bytes[..]);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        files.insert(path, data);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let mut fs = BTreeMap::new();
    for layer in manifest[0]["Layers"].as_array().unwrap() {
        let mut a = tar::Archive::new(&files[layer.as_str().unwrap()][..]);
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            let path = e
                .path()
                .unwrap()
                .display()
                .to_string()
                .trim_end_matches('/')
                .to_owned();
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            fs.insert(path, (e.header().mode().unwrap(), link));
        }
    }
    fs
}

/// Images the image stage loaded as steps ahead of the image (see
/// `load_in_steps`) and did not remove.
fn partial_images_left(reference: &str) -> Vec<String> {
    let label = format!("dev.nixpack.partial={reference}");
    let opts = bollard::query_parameters::ListImagesOptionsBuilder::default()
        .all(true)
        .filters(&std::collections::HashMap::from([(
            "label",
            vec![label.as_str()],
        )]))
        .build();
    rt().block_on(docker().list_images(Some(opts)))
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect()
}

fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn copy_example(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python-http");
    for f in ["default.nix", "nixpack.toml"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[test]
fn example_builds_runs_and_answers_over_http() {
    require_base();
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path());
    let name = unique("python-http");
    let port = 18000 + (std::process::id() % 1000) as u16;
    let manifest = std::fs::read_to_string(dir.path().join("nixpack.toml"))
        .unwrap()
        .replace("\"nixpack-example/python-http\"", &format!("{name:?}"))
        .replace("\"8080\"", &format!("\"{port}\""))
        .replace(
            "ports = [8080]",
            &format!("ports = [{port}]\nuser = \"65534:65534\""),
        );
    std::fs::write(dir.path().join("nixpack.toml"), manifest).unwrap();
    let reference = format!("{name}:latest");
    let _guard = ImageGuard(vec![reference.clone()]);

    let out = build_ok(dir.path());
    assert!(
        text(&out.stdout).contains(&reference),
        "the summary names the image:\n{}",
        text(&out.stdout)
    );
    assert_eq!(partial_images_left(&reference), Vec::<String>::new());

    // The SBOM lists exactly the closure, with the versions in its names.
    let out_dir = dir.path().join(".nixpack").join(name.replace('/', "_"));
    let closure =
        Closure::from_json(&std::fs::read_to_string(out_dir.join("closure.json")).unwrap())
            .unwrap();
    let sbom: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("sbom.cdx.json")).unwrap())
            .unwrap();
    let mut listed: Vec<String> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .chain(std::iter::once(&sbom["metadata"]["component"]))
        .map(|c| c["bom-ref"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    listed.dedup();
    let paths: Vec<String> = closure.paths.keys().map(|p| p.to_string()).collect();
    assert_eq!(listed, paths, "one SBOM component per store path");
    let versions: BTreeMap<String, String> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| {
            Some((
                c["name"].as_str()?.to_owned(),
                c["version"].as_str()?.to_owned(),
            ))
        })
        .collect();
    for (n, v) in [
        ("glibc", "2.36"),
        ("zlib", "1.2.13"),
        ("expat", "2.5.0"),
        ("python3", "3.11.2"),
    ] {
        assert_eq!(
            versions.get(n).map(String::as_str),
            Some(v),
            "{n} in {versions:?}"
        );
    }

    // The image config is what the manifest says.
    let d = docker();
    let inspect = rt().block_on(d.inspect_image(&reference)).unwrap();
    let config = inspect.config.unwrap();
    assert_eq!(
        config.entrypoint.unwrap(),
        vec!["/bin/python3", "-m", "http.server"]
    );
    assert_eq!(
        config.cmd.unwrap(),
        vec![
            port.to_string(),
            "--bind".into(),
            "0.0.0.0".into(),
            "--directory".into(),
            "/usr/local/share/www".into()
        ]
    );
    assert!(config
        .env
        .unwrap()
        .contains(&"PYTHONUNBUFFERED=1".to_owned()));
    assert_eq!(config.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(config.user.as_deref(), Some("65534:65534"));
    assert_eq!(
        config
            .exposed_ports
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![format!("{port}/tcp")]
    );
    let labels = config.labels.unwrap();
    let closure_json = std::fs::read_to_string(
        dir.path()
            .join(".nixpack")
            .join(name.replace('/', "_"))
            .join("closure.json"),
    )
    .unwrap();
    let closure = Closure::from_json(&closure_json).unwrap();
    assert_eq!(labels["dev.nixpack.result"], closure.result.as_str());
    assert_eq!(labels["org.opencontainers.image.title"], name);

    // The filesystem is exactly the closure plus the conventions.
    let fs = image_filesystem(&reference);
    let store: BTreeSet<String> = fs
        .keys()
        .filter(|p| p.matches('/').count() == 2 && p.starts_with("nix/store/"))
        .map(|p| format!("/{p}"))
        .collect();
    let expected: BTreeSet<String> = closure.paths.keys().map(|p| p.to_string()).collect();
    assert_eq!(store, expected, "store paths in the image");
    let top: BTreeSet<&str> = fs.keys().map(|p| p.split('/').next().unwrap()).collect();
    assert_eq!(top, BTreeSet::from(["bin", "nix", "tmp", "usr"]));
    let outside: Vec<&String> = fs
        .keys()
        .filter(|p| !p.starts_with("nix/") && *p != "nix")
        .collect();
    assert_eq!(
        outside,
        vec!["bin", "tmp", "usr", "usr/local", "usr/local/share"]
    );
    assert_eq!(fs["tmp"].0 & 0o7777, 0o1777, "/tmp is 1777");
    assert_eq!(
        fs["bin"].1.as_deref(),
        Some(format!("{}/bin", closure.result).as_str())
    );
    assert_eq!(
        fs["usr/local/share"].1.as_deref(),
        Some(format!("{}/share", closure.result).as_str())
    );

    // `nixpack run` publishes the port on loopback and answers over HTTP.
    let mut run = nixpack_command()
        .arg("run")
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answer = None;
    while Instant::now() < deadline {
        if let Some(body) = http_get(port).filter(|b| b.contains("200 OK")) {
            answer = Some(body);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(run.id().to_string())
        .status();
    let status = run.wait().unwrap();
    let mut err = String::new();
    run.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let answer = answer
        .unwrap_or_else(|| panic!("no HTTP answer on 127.0.0.1:{port}; nixpack run said:\n{err}"));
    assert!(
        answer.contains("Hello from a FROM-scratch Nix image"),
        "{answer}"
    );
    assert!(
        status.success(),
        "nixpack run ends cleanly on SIGTERM: {status:?}\n{err}"
    );
    assert!(
        containers_labelled(&format!("dev.nixpack.run={reference}")).is_empty(),
        "the run container is removed"
    );
}

#[test]
fn a_rebuild_with_nothing_changed_starts_no_container() {
    require_base();
    let name = unique("unchanged");
    let dir = project(
        &one_image(&name, "", ""),
        &[("default.nix", &tiny_expression(&name))],
    );
    let _guard = ImageGuard(vec![format!("{name}:latest")]);
    build_ok(dir.path());
    let first = rt()
        .block_on(docker().inspect_image(&format!("{name}:latest")))
        .unwrap()
        .id;

    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let out = build_ok(dir.path());
    assert!(
        text(&out.stdout).contains("unchanged"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        containers_created_since(&format!("dev.nixpack.image={name}"), since),
        0,
        "no builder container on a no-change rebuild"
    );
    assert_eq!(
        rt().block_on(docker().inspect_image(&format!("{name}:latest")))
            .unwrap()
            .id,
        first
    );

    // The store volume is labelled with the builder recipe it was seeded from.
    let volumes = rt()
        .block_on(docker().list_volumes(None::<bollard::query_parameters::ListVolumesOptions>))
        .unwrap()
        .volumes
        .unwrap_or_default();
    assert!(volumes.iter().any(|v| v.name.starts_with("nixpack-store-")
        && v.labels.contains_key("dev.nixpack.store.recipe")));
}

#[test]
fn a_failing_expression_exits_non_zero_and_leaves_nothing_behind() {
    require_base();
    let name = unique("failing");
    let expr = r#"builtins.derivation { name = "fails"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo nixpack-test-about-to-fail; exit 3" ]; }"#;
    let dir = project(&one_image(&name, "", ""), &[("default.nix", expr)]);
    let out = nixpack(dir.path(), &["build"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nix-build failed"), "{err}");
    assert!(
        err.contains("nixpack-test-about-to-fail"),
        "the log tail is shown:\n{err}"
    );
    assert!(err.contains("build.log"), "the log's path is named:\n{err}");
    assert!(
        rt().block_on(docker().inspect_image(&format!("{name}:latest")))
            .is_err(),
        "no image is tagged"
    );
    assert!(
        containers_labelled(&format!("dev.nixpack.image={name}")).is_empty(),
        "no container is left"
    );
}

#[test]
fn a_broken_scratch_override_names_the_stage_and_the_file() {
    require_base();
    let name = unique("override");
    let template = format!(
        "FROM scratch\n{{{{#each layers}}}}ADD {{{{this.file}}}} /\n{{{{/each}}}}ENV NONCE={name}\nRUN /no/such/program\n"
    );
    let dir = project(
        &one_image(&name, "[builder.templates]\nscratch = \"broken.hbs\"\n", ""),
        &[
            ("default.nix", &tiny_expression(&name)),
            ("broken.hbs", &template),
        ],
    );
    let out = nixpack(dir.path(), &["build"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("stage image failed"), "{err}");
    assert!(err.contains("broken.hbs"), "{err}");
    assert!(
        rt().block_on(docker().inspect_image(&format!("{name}:latest")))
            .is_err(),
        "no image is tagged"
    );
    // The steps that succeeded made images; the failed build removed them.
    let d = docker();
    let all = rt()
        .block_on(
            d.list_images(Some(
                bollard::query_parameters::ListImagesOptionsBuilder::default()
                    .all(true)
                    .build(),
            )),
        )
        .unwrap();
    for summary in all {
        let Ok(i) = rt().block_on(d.inspect_image(&summary.id)) else {
            continue; // (another test's image, gone meanwhile)
        };
        let env = i.config.and_then(|c| c.env).unwrap_or_default();
        assert!(
            !env.contains(&format!("NONCE={name}")),
            "a step image of the failed build is left: {}",
            summary.id
        );
    }
}

#[test]
fn two_images_build_in_parallel_over_one_store() {
    require_base();
    let (a, b) = (unique("par-a"), unique("par-b"));
    let manifest = format!(
        "[project]\nname = \"t\"\n[builder]\nfrom = \"{BASE}\"\n[[image]]\nname = \"{a}\"\nexpression = \"a.nix\"\n[[image]]\nname = \"{b}\"\nexpression = \"b.nix\"\n"
    );
    let dir = project(
        &manifest,
        &[
            ("a.nix", &tiny_expression(&a)),
            ("b.nix", &tiny_expression(&b)),
        ],
    );
    let _guard = ImageGuard(vec![format!("{a}:latest"), format!("{b}:latest")]);
    let out = nixpack(dir.path(), &["build", "-j", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for n in [&a, &b] {
        assert!(
            rt().block_on(docker().inspect_image(&format!("{n}:latest")))
                .is_ok(),
            "{n} is tagged"
        );
    }
}

#[test]
fn two_build_processes_at_once_share_the_store() {
    require_base();
    let names = [unique("proc-a"), unique("proc-b")];
    let dirs: Vec<_> = names
        .iter()
        .map(|n| {
            project(
                &one_image(n, "", ""),
                &[("default.nix", &tiny_expression(n))],
            )
        })
        .collect();
    let _guard = ImageGuard(names.iter().map(|n| format!("{n}:latest")).collect());
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            nixpack_command()
                .arg("build")
                .current_dir(d.path())
                .env("NO_COLOR", "1")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    for n in &names {
        assert!(
            rt().block_on(docker().inspect_image(&format!("{n}:latest")))
                .is_ok(),
            "{n} is tagged"
        );
    }
}

#[test]
fn two_build_processes_of_one_project_take_turns() {
    require_base();
    let name = unique("same-project");
    // An empty option value must reach Nix as one (empty) argument.
    let dir = project(
        &one_image(
            &name,
            "nix-options = { substituters = \"\", max-jobs = \"1\" }\n",
            "",
        ),
        &[("default.nix", &tiny_expression(&name))],
    );
    let _guard = ImageGuard(vec![format!("{name}:latest")]);
    let children: Vec<_> = (0..2)
        .map(|_| {
            nixpack_command()
                .arg("build")
                .current_dir(dir.path())
                .env("NO_COLOR", "1")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    assert!(rt()
        .block_on(docker().inspect_image(&format!("{name}:latest")))
        .is_ok());
    let lock = std::fs::read_to_string(dir.path().join("nixpack.lock")).unwrap();
    assert_eq!(lock.matches("[[image]]").count(), 1, "{lock}");
}

#[test]
fn an_unreachable_engine_is_one_clear_error() {
    let dir = project(
        "[project]\nname = \"t\"\n[[image]]\nname = \"x\"\nexpression = \"default.nix\"\n",
        &[("default.nix", "1")],
    );
    let out = nixpack_command()
        .arg("build")
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env("DOCKER_HOST", "unix:///tmp/nixpack-no-such-docker.sock")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // miette wraps at 100 columns.
    let one_line: Vec<&str> = err
        .lines()
        .map(|l| l.trim_start_matches([' ', '│']))
        .collect();
    assert!(
        one_line.join(" ").contains(
            "cannot reach the Docker Engine at unix:///tmp/nixpack-no-such-docker.sock (chosen by DOCKER_HOST)"
        ),
        "it says which engine it tried and how it was chosen:\n{err}"
    );
    assert!(
        err.contains("DOCKER_HOST"),
        "the help says what to set:\n{err}"
    );
}

/// A store path with what tarballs get wrong: hard links, a symlink to a
/// directory, a non-UTF-8 name, a name past 100 bytes, executables and a
/// setuid request (Nix's seccomp filter refuses setuid and setgid bits in
/// builds, so the file ends up 0555; the image must show exactly what the
/// store holds).
const TRICKY: &str = r#"builtins.derivation {
  name = "tricky";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" ''
    set -e
    PATH=/usr/bin:/bin
    mkdir -p $out/sub/deeper $out/bin
    echo hello > $out/sub/file
    ln $out/sub/file $out/hardlink
    ln -s sub $out/link-to-dir
    ln -s ../sub/file $out/bin/relative-link
    printf 'latin1\n' > "$out/caf$(printf '\351')"
    echo long > "$out/sub/deeper/$(printf 'n%.0s' $(seq 1 150))"
    printf '#!/bin/sh\necho hi\n' > $out/bin/tool
    chmod 755 $out/bin/tool
    echo s > $out/bin/suid
    chmod 4755 $out/bin/suid 2>/dev/null || chmod 755 $out/bin/suid
  '' ];
}
"#;

/// path → (kind, mode, link target, content sha256), hard links resolved
/// to their target's content.
type Listing = BTreeMap<Vec<u8>, (String, u32, Option<Vec<u8>>, String)>;

fn listing(tar_bytes: &[u8], prefix: &[u8]) -> Listing {
    use sha2::Digest;
    let mut out = Listing::new();
    let mut contents: HashMap<Vec<u8>, String> = HashMap::new();
    let mut a = tar::Archive::new(tar_bytes);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path_bytes().into_owned();
        let path: Vec<u8> = path.strip_suffix(b"/").map(<[u8]>::to_vec).unwrap_or(path);
        if !path.starts_with(prefix) {
            continue;
        }
        let h = e.header().clone();
        let mode = h.mode().unwrap() & 0o7777;
        let link = e.link_name_bytes().map(|l| l.into_owned());
        let (kind, sha) = match h.entry_type() {
            tar::EntryType::Directory => ("dir".to_owned(), String::new()),
            tar::EntryType::Symlink => ("symlink".to_owned(), String::new()),
            tar::EntryType::Link => {
                let target = link.clone().unwrap();
                ("file".to_owned(), contents[&target].clone())
            }
            _ => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (
                    "file".to_owned(),
                    format!("{:x}", sha2::Sha256::digest(&data)),
                )
            }
        };
        contents.insert(path.clone(), sha.clone());
        let link = if kind == "symlink" { link } else { None };
        out.insert(path, (kind, mode, link, sha));
    }
    out
}

fn save(reference: &str) -> Vec<u8> {
    let d = docker();
    rt().block_on(async {
        let mut s = d.export_image(reference);
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    })
}

/// Every layer of a saved image, in order, as raw tar bytes.
fn saved_layers(saved: &[u8]) -> Vec<Vec<u8>> {
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut archive = tar::Archive::new(saved);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        files.insert(path, data);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| files[l.as_str().unwrap()].clone())
        .collect()
}

fn layer_digests(dir: &Path) -> BTreeMap<String, String> {
    use sha2::Digest;
    std::fs::read_dir(dir.join("layers"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                format!(
                    "{:x}",
                    sha2::Sha256::digest(std::fs::read(e.path()).unwrap())
                ),
            )
        })
        .collect()
}

fn tricky_project(name: &str, volume: &str) -> tempfile::TempDir {
    project(
        &one_image(name, &format!("store-volume = \"{volume}\"\n"), ""),
        &[("default.nix", TRICKY)],
    )
}

#[test]
fn layers_are_byte_identical_across_two_fresh_stores_and_match_the_store() {
    require_base();
    let tag = unique("tricky")
        .replace('/', "-")
        .replace("nixpack-e2e-", "");
    let volumes = [
        format!("nixpack-e2e-store-a-{tag}"),
        format!("nixpack-e2e-store-b-{tag}"),
    ];
    let _volumes = VolumeGuard(volumes.to_vec());
    let names = [unique("tricky-a"), unique("tricky-b")];
    let _images = ImageGuard(names.iter().map(|n| format!("{n}:latest")).collect());
    let dirs: Vec<_> = names
        .iter()
        .zip(&volumes)
        .map(|(n, v)| tricky_project(n, v))
        .collect();
    // Two stores, each seeded and built from nothing: nixpack writes the
    // layers from each store's NARs, and both give the same bytes.
    for d in &dirs {
        let mut cmd = nixpack_command();
        cmd.arg("build").current_dir(d.path()).env("NO_COLOR", "1");
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out_dir = |i: usize| {
        dirs[i]
            .path()
            .join(".nixpack")
            .join(names[i].replace('/', "_"))
    };

    // Same layer files, same bytes; same DiffIDs and image ids.
    assert_eq!(layer_digests(&out_dir(0)), layer_digests(&out_dir(1)));
    let report = |i: usize| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out_dir(i).join("report.json")).unwrap())
            .unwrap()
    };
    assert_eq!(report(0)["diff_ids"], report(1)["diff_ids"]);
    let ids: Vec<String> = names
        .iter()
        .map(|n| {
            rt().block_on(docker().inspect_image(&format!("{n}:latest")))
                .unwrap()
                .id
                .unwrap()
        })
        .collect();
    assert_ne!(
        ids[0], ids[1],
        "the two images differ only in their labels (title)"
    );

    // The image holds exactly what the store holds.
    let closure =
        Closure::from_json(&std::fs::read_to_string(out_dir(0).join("closure.json")).unwrap())
            .unwrap();
    let result = closure.result.as_str().to_owned();
    let mut image = Listing::new();
    for layer in saved_layers(&save(&format!("{}:latest", names[0]))) {
        image.extend(listing(&layer, result.trim_start_matches('/').as_bytes()));
    }
    // The store side, through the Engine's archive API from a container on volume A.
    let d = docker();
    let store: Listing = rt().block_on(async {
        let id = create_with_store(&d, BASE, &volumes[0], vec!["true".into()]).await;
        let opts = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
            .path(&result)
            .build();
        let mut s = d.download_from_container(&id, Some(opts));
        let mut bytes = Vec::new();
        while let Some(c) = s.next().await {
            bytes.extend_from_slice(&c.unwrap());
        }
        let rm = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
            .force(true)
            .build();
        d.remove_container(&id, Some(rm)).await.unwrap();
        // The archive API names entries after the folder's base name.
        let base = result.rsplit('/').next().unwrap();
        listing(&bytes, base.as_bytes())
            .into_iter()
            .map(|(k, v)| ([b"nix/store/".as_slice(), &k].concat(), v))
            .collect()
    });
    assert!(
        store.len() > 10,
        "the store listing has the tricky entries: {store:?}"
    );
    assert_eq!(image, store, "image content equals the store path");
    let show = |k: &str| {
        image
            .iter()
            .find(|(p, _)| p.ends_with(k.as_bytes()))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k} missing"))
    };
    assert_eq!(show("/link-to-dir").0, "symlink");
    assert_eq!(
        show("/hardlink").3,
        show("/sub/file").3,
        "hard link keeps its content"
    );
    assert!(
        image.keys().any(|k| k.ends_with(b"/caf\xe9")),
        "non-UTF-8 name kept"
    );
    assert!(image.keys().any(|k| k.len() > 150), "long name kept");
    assert_eq!(
        show("/bin/tool").1,
        0o555,
        "read-only executable store mode"
    );
    assert_eq!(show("/sub/file").1, 0o444, "read-only store mode");
    assert_eq!(
        show("/bin/suid").1,
        0o555,
        "the store refused setuid; the image shows the store's mode"
    );
}

#[test]
fn rebuilding_from_scratch_gives_identical_diff_ids_and_image_id() {
    require_base();
    let name = unique("repro");
    let dir = project(
        &one_image(&name, "", "layers = 2\n"),
        &[("default.nix", &tiny_expression(&name))],
    );
    let _guard = ImageGuard(vec![format!("{name}:latest")]);
    build_ok(dir.path());
    let first = rt()
        .block_on(docker().inspect_image(&format!("{name}:latest")))
        .unwrap();
    // Forget everything nixpack made: outputs, layer tarballs, the image.
    std::fs::remove_dir_all(dir.path().join(".nixpack")).unwrap();
    let opts = bollard::query_parameters::RemoveImageOptionsBuilder::default()
        .force(true)
        .build();
    rt().block_on(docker().remove_image(&format!("{name}:latest"), Some(opts), None))
        .unwrap();
    build_ok(dir.path());
    let second = rt()
        .block_on(docker().inspect_image(&format!("{name}:latest")))
        .unwrap();
    assert_eq!(
        first.root_fs.unwrap().layers,
        second.root_fs.unwrap().layers,
        "same DiffIDs"
    );
    assert_eq!(first.id, second.id, "same image id");
    assert_eq!(
        partial_images_left(&format!("{name}:latest")),
        Vec::<String>::new()
    );
    // nixpack's own identity of the image: the same OCI manifest and config.
    let r = report(dir.path(), &name);
    let digests = [&r["manifest_digest"], &r["config_digest"]];
    assert!(digests
        .iter()
        .all(|d| d.as_str().is_some_and(|d| d.starts_with("sha256:"))));
    assert!(
        digests.iter().any(|d| d.as_str() == first.id.as_deref()),
        "the engine names the image by one of nixpack's digests (config: classic store, manifest: containerd)"
    );
    std::fs::remove_dir_all(dir.path().join(".nixpack")).unwrap();
    let opts = bollard::query_parameters::RemoveImageOptionsBuilder::default()
        .force(true)
        .build();
    rt().block_on(docker().remove_image(&format!("{name}:latest"), Some(opts), None))
        .unwrap();
    build_ok(dir.path());
    assert_eq!(
        report(dir.path(), &name)["manifest_digest"],
        r["manifest_digest"]
    );
}

#[test]
fn locked_fails_on_a_changed_expression_and_tags_nothing() {
    require_base();
    let name = unique("locked");
    let dir = project(
        &one_image(&name, "", ""),
        &[("default.nix", &tiny_expression(&name))],
    );
    let _guard = ImageGuard(vec![format!("{name}:latest")]);
    build_ok(dir.path());
    let lock = std::fs::read_to_string(dir.path().join("nixpack.lock")).unwrap();
    assert!(lock.contains(&format!("name = \"{name}\"")), "{lock}");
    let out = nixpack(dir.path(), &["build", "--locked"]);
    assert!(
        out.status.success(),
        "an unchanged build passes --locked: {}",
        text(&out.stderr)
    );
    let tagged = rt()
        .block_on(docker().inspect_image(&format!("{name}:latest")))
        .unwrap()
        .id;

    std::fs::write(
        dir.path().join("default.nix"),
        tiny_expression(&format!("{name}-changed")),
    )
    .unwrap();
    let out = nixpack(dir.path(), &["build", "--locked"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("would change nixpack.lock"), "{err}");
    assert!(
        err.contains("- result = ") && err.contains("+ result = "),
        "a readable diff:\n{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("nixpack.lock")).unwrap(),
        lock,
        "the lock is untouched"
    );
    assert_eq!(
        rt().block_on(docker().inspect_image(&format!("{name}:latest")))
            .unwrap()
            .id,
        tagged,
        "the tag did not move"
    );
}

#[test]
fn a_builder_base_that_cannot_be_pulled_says_how_to_fix_it() {
    let dir = project(
        "[project]\nname = \"t\"\n[builder]\nfrom = \"nixpack-e2e/no-such-base:1\"\n[[image]]\nname = \"x\"\nexpression = \"default.nix\"\n",
        &[("default.nix", "1")],
    );
    let out = nixpack(dir.path(), &["build"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nixpack-e2e/no-such-base:1"), "{err}");
    assert!(err.contains("could not be pulled"), "{err}");
    assert!(
        err.contains("make-builder-base"),
        "the help names the offline way:\n{err}"
    );
}

/// A closure made with the shell and coreutils alone (no sed, tar, awk or
/// python): its store paths and bytes are the same whatever base builds it.
const COREUTILS_ONLY: &str = r#"let
  mk = name: script: builtins.derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
  };
  lib = mk "lib-1.0" "mkdir -p $out/lib/empty; for i in $(seq 1 2000); do echo line $i; done > $out/lib/data; ln -s data $out/lib/link";
  tool = mk "tool-2.1" "mkdir -p $out/bin; printf '#!/bin/sh\\necho ${lib}\\n' > $out/bin/tool; chmod 755 $out/bin/tool";
in mk "app" "mkdir -p $out/bin $out/share; ln -s ${tool}/bin/tool $out/bin/tool; echo ${lib} > $out/share/refs"
"#;

/// Creates (does not start) a container of `image` running `command`, with
/// `volume` at `/nix`; returns its id.
async fn create_with_store(
    d: &bollard::Docker,
    image: &str,
    volume: &str,
    command: Vec<String>,
) -> String {
    let body = bollard::models::ContainerCreateBody {
        image: Some(image.into()),
        entrypoint: Some(command),
        host_config: Some(bollard::models::HostConfig {
            binds: Some(vec![format!("{volume}:/nix")]),
            ..Default::default()
        }),
        ..Default::default()
    };
    d.create_container(
        None::<bollard::query_parameters::CreateContainerOptions>,
        body,
    )
    .await
    .unwrap()
    .id
}

/// Runs `script` with `sh -c` in a container of `image` with `volume` at
/// `/nix`; returns its exit code.
fn run_with_store(image: &str, volume: &str, script: &str) -> i64 {
    let d = docker();
    rt().block_on(async {
        let command = vec!["/bin/sh".into(), "-c".into(), script.into()];
        let id = create_with_store(&d, image, volume, command).await;
        d.start_container(
            &id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .unwrap();
        let code = match d
            .wait_container(&id, None::<bollard::query_parameters::WaitContainerOptions>)
            .next()
            .await
        {
            Some(Ok(r)) => r.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            other => panic!("waiting for the container: {other:?}"),
        };
        let rm = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
            .force(true)
            .build();
        d.remove_container(&id, Some(rm)).await.unwrap();
        code
    })
}

fn report(dir: &Path, name: &str) -> serde_json::Value {
    let path = dir
        .join(".nixpack")
        .join(name.replace('/', "_"))
        .join("report.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The builder needs only `/bin/sh`, coreutils and Nix: the same closure
/// gives the same DiffIDs from Nix 2.8 (bookworm), Nix 2.26 (trixie) and a
/// base without sed, grep, tar, gzip, find, awk or python3.
#[test]
fn a_coreutils_only_closure_gets_the_same_diff_ids_on_every_base() {
    let bases = [
        "nixpack-base:bookworm",
        "nixpack-base:trixie",
        "nixpack-base:minimal",
    ];
    let d = docker();
    for b in bases {
        assert!(
            rt().block_on(d.inspect_image(b)).is_ok(),
            "the builder base {b} is missing: run scripts/make-builder-base all (scripts/test does)"
        );
    }
    let volume = unique("bases").replace(['/', '-'], "_");
    let volumes: Vec<String> = (0..bases.len()).map(|i| format!("{volume}_{i}")).collect();
    let _volumes = VolumeGuard(volumes.clone());
    let names: Vec<String> = (0..bases.len())
        .map(|i| unique(&format!("bases-{i}")))
        .collect();
    let _images = ImageGuard(names.iter().map(|n| format!("{n}:latest")).collect());
    let mut seen = Vec::new();
    for ((base, volume), name) in bases.iter().zip(&volumes).zip(&names) {
        let manifest = format!(
            "[project]\nname = \"t\"\n[builder]\nfrom = \"{base}\"\nstore-volume = \"{volume}\"\n[[image]]\nname = \"{name}\"\nexpression = \"default.nix\"\n"
        );
        let dir = project(&manifest, &[("default.nix", COREUTILS_ONLY)]);
        let out = nixpack(dir.path(), &["build"]);
        assert!(out.status.success(), "{base}: {}", text(&out.stderr));
        let r = report(dir.path(), name);
        assert_eq!(r["store_paths"], 3, "{base}: app, tool, lib");
        seen.push((base, r["diff_ids"].clone()));
    }
    assert_ne!(
        run_with_store(
            bases[2],
            &volumes[2],
            "command -v sed || command -v tar || command -v awk"
        ),
        0,
        "the minimal base has no sed, tar or awk"
    );
    let (first, ids) = &seen[0];
    assert_eq!(ids.as_array().unwrap().len(), 4, "3 paths + conventions");
    for (base, other) in &seen[1..] {
        assert_eq!(other, ids, "DiffIDs on {base} differ from {first}");
    }
}

/// A store path whose bytes are not what Nix recorded never lands in an
/// image: the build fails naming it, and the tag stays where it was.
#[test]
fn a_corrupted_store_path_fails_the_build_and_names_it() {
    require_base();
    let name = unique("corrupt");
    let volume = unique("corrupt-store").replace(['/', '-'], "_");
    let _volumes = VolumeGuard(vec![volume.clone()]);
    let _images = ImageGuard(vec![format!("{name}:latest")]);
    let dir = project(
        &one_image(&name, &format!("store-volume = \"{volume}\"\n"), ""),
        &[("default.nix", &tiny_expression(&name))],
    );
    build_ok(dir.path());
    let before = rt()
        .block_on(docker().inspect_image(&format!("{name}:latest")))
        .unwrap()
        .id;
    let out_dir = dir.path().join(".nixpack").join(name.replace('/', "_"));
    let closure =
        Closure::from_json(&std::fs::read_to_string(out_dir.join("closure.json")).unwrap())
            .unwrap();
    let file = format!("{}/share/tiny/nonce", closure.result);
    assert_eq!(
        run_with_store(
            BASE,
            &volume,
            // Same size, other bytes: only the NAR hash can tell.
            &format!("chmod u+w {file} && printf Z | dd of={file} bs=1 count=1 conv=notrunc")
        ),
        0
    );
    // Forget the layers, so they are written again from the store.
    std::fs::remove_dir_all(out_dir.join("layers")).unwrap();
    let out = nixpack(dir.path(), &["build"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // (The diagnostic may wrap the path across lines.)
    let flat: String = err
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '│')
        .collect();
    assert!(
        flat.contains(closure.result.as_str()),
        "names the path: {err}"
    );
    assert!(flat.contains("NARhashesto"), "says why: {err}");
    let after = rt()
        .block_on(docker().inspect_image(&format!("{name}:latest")))
        .unwrap()
        .id;
    assert_eq!(before, after, "the tag did not move");
    assert!(
        containers_labelled(&format!("dev.nixpack.image={name}")).is_empty(),
        "no builder container is left"
    );
}

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap()
        .status
        .success();
    assert!(
        found,
        "{name} is missing: scripts/install-test-tools installs it"
    );
    Command::new(name)
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// `--output oci:DIR` and `oci-archive:FILE` hold nixpack's exact image:
/// skopeo sees its manifest digest, oci-image-tool validates the layout,
/// umoci unpacks the closure.
#[test]
fn oci_outputs_are_read_by_skopeo_umoci_and_oci_image_tool() {
    require_base();
    let name = unique("oci-out");
    let dir = project(
        &one_image(&name, "", ""),
        &[("default.nix", &tiny_expression(&name))],
    );
    let _guard = ImageGuard(vec![format!("{name}:latest")]);
    let layout = dir.path().join("out/layout");
    let archive = dir.path().join("out/image.tar");
    let out = nixpack(
        dir.path(),
        &[
            "build",
            "--output",
            &format!("oci:{}", layout.display()),
            "--output",
            &format!("oci-archive:{}", archive.display()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest_digest = report(dir.path(), &name)["manifest_digest"]
        .as_str()
        .unwrap()
        .to_owned();

    let raw = run_ok(tool("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci:{}:latest", layout.display()),
    ]));
    use sha2::Digest;
    assert_eq!(
        format!("sha256:{:x}", sha2::Sha256::digest(raw.as_bytes())),
        manifest_digest,
        "the layout holds nixpack's manifest bytes"
    );
    // The SBOM is listed beside the image (no ref name), its blob the
    // build's sbom.cdx.json; the readers below pick the image by tag.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let referrers: Vec<&serde_json::Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["artifactType"] == "application/vnd.cyclonedx+json")
        .collect();
    assert_eq!(referrers.len(), 1, "{index:#}");
    assert!(referrers[0]["annotations"]["org.opencontainers.image.ref.name"].is_null());
    let blob = |digest: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.strip_prefix("sha256:").unwrap()),
        )
        .unwrap()
    };
    let referrer: serde_json::Value =
        serde_json::from_slice(&blob(referrers[0]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(referrer["subject"]["digest"], manifest_digest.as_str());
    let sbom = blob(referrer["layers"][0]["digest"].as_str().unwrap());
    let built = std::fs::read(
        dir.path()
            .join(".nixpack")
            .join(name.replace('/', "_"))
            .join("sbom.cdx.json"),
    )
    .unwrap();
    assert!(sbom == built, "the layout holds the build's sbom.cdx.json");

    let inspected: serde_json::Value = serde_json::from_str(&run_ok(
        tool("skopeo").args(["inspect", &format!("oci-archive:{}", archive.display())]),
    ))
    .unwrap();
    assert_eq!(inspected["Digest"], manifest_digest.as_str());

    run_ok(tool("oci-image-tool").args([
        "validate",
        "--type",
        "image",
        "--ref",
        "name=latest",
        layout.to_str().unwrap(),
    ]));
    let unpacked = dir.path().join("out/bundle");
    run_ok(tool("umoci").args([
        "unpack",
        "--rootless",
        "--image",
        &format!("{}:latest", layout.display()),
        unpacked.to_str().unwrap(),
    ]));
    let closure = Closure::from_json(
        &std::fs::read_to_string(
            dir.path()
                .join(".nixpack")
                .join(name.replace('/', "_"))
                .join("closure.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let nonce = unpacked
        .join("rootfs")
        .join(closure.result.as_str().trim_start_matches('/'))
        .join("share/tiny/nonce");
    assert_eq!(std::fs::read_to_string(nonce).unwrap().trim(), name);
}

/// `runner = "host"`: the same entrypoint on this machine's Nix (Debian's
/// nix-bin, single-user, with a test-owned nix.conf), the same layers: the
/// coreutils-only closure gets the DiffIDs the builder container gives it.
/// With only `--output oci:DIR`, no engine is contacted at all.
#[test]
fn the_host_runner_gives_the_builder_containers_diff_ids_without_an_engine() {
    require_base();
    assert!(
        Command::new("sh")
            .args(["-c", "command -v nix-build"])
            .status()
            .unwrap()
            .success(),
        "nix-build is not on PATH: scripts/install-test-tools installs Debian's nix-bin"
    );
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(
        conf.path().join("nix.conf"),
        "build-users-group =\nsandbox = false\nsubstituters =\n",
    )
    .unwrap();
    let names = [unique("runner-docker"), unique("runner-host")];
    let _images = ImageGuard(names.iter().map(|n| format!("{n}:latest")).collect());
    let manifest = |name: &str, runner: &str| {
        format!("[project]\nname = \"t\"\n[builder]\nfrom = \"{BASE}\"\nrunner = \"{runner}\"\n[[image]]\nname = \"{name}\"\nexpression = \"default.nix\"\n")
    };
    let docker_dir = project(
        &manifest(&names[0], "docker"),
        &[("default.nix", COREUTILS_ONLY)],
    );
    build_ok(docker_dir.path());
    let host_dir = project(
        &manifest(&names[1], "host"),
        &[("default.nix", COREUTILS_ONLY)],
    );
    let layout = host_dir.path().join("layout");
    let out = Command::new(nixpack_bin())
        .args(["build", "--output", &format!("oci:{}", layout.display())])
        .current_dir(host_dir.path())
        .env("NO_COLOR", "1")
        .env("NIX_CONF_DIR", conf.path())
        // No engine to reach: the build must not try.
        .env("DOCKER_HOST", "unix:///nonexistent/nixpack-no-engine.sock")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (d, h) = (
        report(docker_dir.path(), &names[0]),
        report(host_dir.path(), &names[1]),
    );
    assert_eq!(h["store_paths"], 3);
    assert_eq!(
        d["diff_ids"], h["diff_ids"],
        "the same layers from either runner"
    );
    assert!(
        layout.join("index.json").is_file(),
        "the image went to the layout"
    );
    // The result link is a GC root of the host's store.
    let link = host_dir
        .path()
        .join(".nixpack")
        .join(names[1].replace('/', "_"))
        .join("result");
    assert!(std::fs::read_link(&link)
        .unwrap()
        .starts_with("/nix/store/"));
    assert!(
        rt().block_on(docker().inspect_image(&format!("{}:latest", names[1])))
            .is_err(),
        "nothing was loaded into the engine"
    );
}
