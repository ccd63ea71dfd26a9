//! End-to-end tests of `nixpack push` against real registries (Debian's
//! docker-registry, open and behind htpasswd) and real clients: skopeo
//! reads what nixpack pushed, both engines pull and run it.
//!
//! They read the variables `scripts/test` sets (from
//! `scripts/test-engine env` and `scripts/test-registry env open|auth`):
//! `NIXPACK_TEST_REGISTRY`, `NIXPACK_TEST_REGISTRY_AUTH` (+ `_USER`,
//! `_PASSWORD`) and `NIXPACK_TEST_CONTAINERD_HOST`, and need the builder
//! base `nixpack-base:bookworm`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::Digest as _;

const BASE: &str = "nixpack-base:bookworm";

fn env(name: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| {
        panic!("{name} is not set: run these tests through scripts/test, or eval \"$(scripts/test-registry env open)\", \"$(scripts/test-registry env auth)\" and \"$(scripts/test-engine env)\" first")
    })
}

fn registry() -> String {
    env("NIXPACK_TEST_REGISTRY")
}

fn containerd_host() -> String {
    env("NIXPACK_TEST_CONTAINERD_HOST")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A name no other test (or earlier run) uses.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// `nixpack ARGS` in `dir`, with `DOCKER_CONFIG` pointing at an empty
/// folder unless `envs` sets it (no credentials leak in from the host).
fn nixpack(dir: &Path, args: &[&str], envs: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nixpack"));
    cmd.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("DOCKER_HOST")
        .env("DOCKER_CONFIG", empty.path())
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("nixpack runs");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        pipe.write_all(s.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
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

/// `docker ARGS` against the classic engine (`None`) or another one.
fn docker(host: Option<&str>) -> Command {
    let mut c = tool("docker");
    match host {
        Some(h) => c.env("DOCKER_HOST", h),
        None => c.env_remove("DOCKER_HOST"),
    };
    c
}

/// What a test leaves in the engines and registries, removed at its end,
/// pass or fail; an image pushed is removed with the referrers its
/// referrers tag lists (its SBOM).
#[derive(Default)]
struct Cleanup {
    /// (engine host, image or container).
    images: Vec<(Option<String>, String)>,
    containers: Vec<(Option<String>, String)>,
    /// `REGISTRY/REPO@DIGEST` to delete (with skopeo creds when given).
    manifests: Vec<(String, Option<String>)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (host, c) in &self.containers {
            let _ = docker(host.as_deref()).args(["rm", "-f", c]).output();
        }
        for (host, i) in &self.images {
            let _ = docker(host.as_deref()).args(["rmi", "-f", i]).output();
        }
        let skopeo = |verb: &str, m: &str, creds: &Option<String>| {
            let mut c = tool("skopeo");
            c.args([verb, "--tls-verify=false"]);
            if verb == "inspect" {
                c.arg("--raw");
            }
            if let Some(creds) = creds {
                c.args(["--creds", creds]);
            }
            c.arg(format!("docker://{m}")).output().ok()
        };
        for (m, creds) in &self.manifests {
            // The image's referrers (its SBOM) and their referrers tag go
            // first.
            if let Some((repo, digest)) = m.split_once("@sha256:") {
                let fallback = format!("{repo}:sha256-{digest}");
                let index = skopeo("inspect", &fallback, creds)
                    .filter(|o| o.status.success())
                    .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
                if let Some(index) = index {
                    let _ = skopeo("delete", &fallback, creds);
                    for r in index["manifests"].as_array().into_iter().flatten() {
                        if let Some(d) = r["digest"].as_str() {
                            let _ = skopeo("delete", &format!("{repo}@{d}"), creds);
                        }
                    }
                }
            }
            let _ = skopeo("delete", m, creds);
        }
    }
}

/// A dependency and a leaf that refers to it: two store paths, so two
/// closure layers, and a change to the leaf leaves the dependency's layer
/// as it was.
fn expression(leaf: &str) -> String {
    format!(
        r#"let
  dep = builtins.derivation {{
    name = "push-dep";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir -p $out/share; /bin/head -c 300000 /dev/zero > $out/share/zeros; echo dep > $out/share/name" ];
  }};
in builtins.derivation {{
  name = "push-leaf";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir -p $out/bin $out/share; echo {leaf} > $out/share/leaf; echo ${{dep}} > $out/share/dep; echo '#!/bin/sh' > $out/bin/leaf" ];
}}
"#
    )
}

/// A project with one image `name:tag` built from [`expression`].
fn project(name: &str, tag: &str, leaf: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nixpack.toml"),
        format!("[project]\nname = \"t\"\n[builder]\nfrom = \"{BASE}\"\n[[image]]\nname = \"{name}\"\ntag = \"{tag}\"\nexpression = \"default.nix\"\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("default.nix"), expression(leaf)).unwrap();
    dir
}

fn image_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join(".nixpack").join(name.replace(['/', ':'], "_"))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// The one push of `push.json`.
fn pushed(dir: &Path, name: &str) -> serde_json::Value {
    let report = json(&image_dir(dir, name).join("push.json"));
    let pushes = report["pushes"].as_array().unwrap();
    assert_eq!(pushes.len(), 1, "{report:#}");
    pushes[0].clone()
}

fn count(push: &serde_json::Value, key: &str) -> u64 {
    push[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {push:#}"))
}

fn layers_with(push: &serde_json::Value, outcome: &str) -> Vec<String> {
    push["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["outcome"] == outcome)
        .map(|l| l["diff_id"].as_str().unwrap().to_owned())
        .collect()
}

/// sha256 of the manifest the registry serves for `reference`, whose
/// layers are gzip blobs.
fn registry_manifest_digest(reference: &str, creds: Option<&str>) -> String {
    registry_manifest_digest_of(reference, creds, "gzip")
}

/// sha256 of the manifest the registry serves for `reference`, whose
/// layers are `+codec` blobs.
fn registry_manifest_digest_of(reference: &str, creds: Option<&str>, codec: &str) -> String {
    let mut c = tool("skopeo");
    c.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some(creds) = creds {
        c.args(["--creds", creds]);
    }
    let raw = run_ok(c.arg(format!("docker://{reference}")));
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{raw}"
    );
    for l in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            format!("application/vnd.oci.image.layer.v1.tar+{codec}"),
            "{raw}"
        );
    }
    format!("sha256:{:x}", sha2::Sha256::digest(raw.as_bytes()))
}

/// `docker pull` on `host` (after removing any local copy), then the file `path` of the image, read by
/// running nothing: `docker create` and `docker cp`.
fn pull_and_read(host: Option<&str>, reference: &str, path: &str, cleanup: &mut Cleanup) -> String {
    cleanup
        .images
        .push((host.map(str::to_owned), reference.to_owned()));
    // Not the image the build loaded: the engine must fetch it.
    let _ = docker(host).args(["rmi", "-f", reference]).output();
    run_ok(docker(host).args(["pull", "-q", reference]));
    let id = run_ok(docker(host).args(["create", reference, "/bin/leaf"]))
        .trim()
        .to_owned();
    cleanup
        .containers
        .push((host.map(str::to_owned), id.clone()));
    let out = run_ok(docker(host).args(["cp", &format!("{id}:{path}"), "-"]));
    // `docker cp … -` writes a tar of the one file.
    let mut a = tar::Archive::new(out.as_bytes());
    let mut e = a.entries().unwrap().next().unwrap().unwrap();
    let mut s = String::new();
    e.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn push_sends_what_the_registry_lacks_and_both_engines_pull_it() {
    let name = format!("{}/nixpack-e2e/{}", registry(), unique("push"));
    let reference = format!("{name}:t1");
    let dir = project(&name, "t1", "one");
    let mut cleanup = Cleanup::default();
    cleanup.images.push((None, reference.clone()));

    // Build and push in one command.
    let out = ok(
        nixpack(dir.path(), &["build", "--push"], &[], None),
        "build --push",
    );
    let first = pushed(dir.path(), &name);
    let digest = first["manifest_digest"].as_str().unwrap().to_owned();
    cleanup.manifests.push((format!("{name}@{digest}"), None));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("pushed {reference} {digest}")),
        "the reference and digest are printed:\n{stdout}"
    );
    let built = json(&image_dir(dir.path(), &name).join("report.json"));
    // Untagged by the rebuild below: removed by id.
    cleanup
        .images
        .push((None, built["id"].as_str().unwrap().to_owned()));
    let layers = built["diff_ids"].as_array().unwrap().len();
    assert_eq!(layers, 3, "dep, leaf and the conventions: {built:#}");
    assert_eq!(
        count(&first, "blobs_uploaded"),
        layers as u64 + 1,
        "{first:#}"
    );
    assert_eq!(count(&first, "blobs_skipped"), 0);
    assert_eq!(count(&first, "layers_compressed"), layers as u64);
    assert_eq!(
        first["config_digest"], built["config_digest"],
        "same config"
    );
    assert!(count(&first, "bytes_uploaded") > 0);
    // 300 kB of zeros: the layers went compressed.
    assert!(
        count(&first, "bytes_uploaded") < 100_000,
        "{}",
        count(&first, "bytes_uploaded")
    );

    // The registry serves nixpack's exact manifest.
    assert_eq!(registry_manifest_digest(&reference, None), digest);

    // Both engines pull it and see its files.
    let leaf = |host: Option<&str>, cleanup: &mut Cleanup| {
        let closure = json(&image_dir(dir.path(), &name).join("closure.json"));
        let result = closure["result"].as_str().unwrap().to_owned();
        pull_and_read(host, &reference, &format!("{result}/share/leaf"), cleanup)
    };
    assert_eq!(leaf(None, &mut cleanup).trim(), "one");
    let containerd = containerd_host();
    assert_eq!(leaf(Some(&containerd), &mut cleanup).trim(), "one");

    // Nothing changed: nothing is uploaded, nothing compressed.
    let t = Instant::now();
    let out = ok(nixpack(dir.path(), &["push"], &[], None), "push again");
    let again = pushed(dir.path(), &name);
    assert_eq!(count(&again, "blobs_uploaded"), 0, "{again:#}");
    assert_eq!(count(&again, "bytes_uploaded"), 0);
    assert_eq!(count(&again, "layers_compressed"), 0);
    assert_eq!(again["manifest_digest"], digest.as_str());
    assert!(
        text(&out.stdout).contains("0 uploaded"),
        "{}",
        text(&out.stdout)
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // The leaf changed: only the layers whose DiffIDs changed are
    // compressed and sent (the dependency's layer is not).
    std::fs::write(dir.path().join("default.nix"), expression("two")).unwrap();
    ok(nixpack(dir.path(), &["build"], &[], None), "rebuild");
    let rebuilt = json(&image_dir(dir.path(), &name).join("report.json"));
    let before: BTreeSet<&str> = built["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    let changed: BTreeSet<String> = rebuilt["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .filter(|d| !before.contains(d.as_str()))
        .collect();
    assert!(
        !changed.is_empty() && changed.len() < layers,
        "a leaf change changes some layers, not all: {changed:?}"
    );
    ok(nixpack(dir.path(), &["push"], &[], None), "push the change");
    let third = pushed(dir.path(), &name);
    let uploaded: BTreeSet<String> = layers_with(&third, "uploaded").into_iter().collect();
    assert_eq!(uploaded, changed, "{third:#}");
    assert_eq!(
        count(&third, "blobs_uploaded"),
        changed.len() as u64 + 1,
        "the changed layers and the config"
    );
    assert_eq!(count(&third, "layers_compressed"), changed.len() as u64);
    assert_eq!(
        layers_with(&third, "skipped").len(),
        layers - changed.len(),
        "{third:#}"
    );
    let digest3 = third["manifest_digest"].as_str().unwrap().to_owned();
    cleanup.manifests.push((format!("{name}@{digest3}"), None));
    assert_ne!(digest3, digest);
    assert_eq!(registry_manifest_digest(&reference, None), digest3);
    assert_eq!(leaf(Some(&containerd), &mut cleanup).trim(), "two");

    // To another repository of the same registry: blobs are mounted, not sent.
    let other = format!("{}/nixpack-e2e/{}:copy", registry(), unique("mount"));
    ok(
        nixpack(dir.path(), &["push", &other], &[], None),
        "push to a REF",
    );
    let copy = pushed(dir.path(), &name);
    assert_eq!(copy["reference"], other.as_str());
    assert_eq!(count(&copy, "blobs_mounted"), layers as u64 + 1, "{copy:#}");
    assert_eq!(count(&copy, "bytes_uploaded"), 0);
    let (other_name, _) = other.rsplit_once(':').unwrap();
    cleanup
        .manifests
        .push((format!("{other_name}@{digest3}"), None));
    assert_eq!(registry_manifest_digest(&other, None), digest3);

    // zstd, for the engine that pulls it (Docker 20.10 cannot): another
    // manifest over the same config, and the same files.
    let zstd = format!("{name}:zstd");
    ok(
        nixpack(
            dir.path(),
            &["push", "--compression", "zstd", &zstd],
            &[],
            None,
        ),
        "push --compression zstd",
    );
    let z = pushed(dir.path(), &name);
    let zdigest = z["manifest_digest"].as_str().unwrap().to_owned();
    cleanup.manifests.push((format!("{name}@{zdigest}"), None));
    assert_eq!(z["config_digest"], third["config_digest"]);
    assert_ne!(zdigest, digest3);
    assert_eq!(count(&z, "layers_compressed"), layers as u64, "{z:#}");
    assert_eq!(registry_manifest_digest_of(&zstd, None, "zstd"), zdigest);
    let closure = json(&image_dir(dir.path(), &name).join("closure.json"));
    let result = closure["result"].as_str().unwrap().to_owned();
    assert_eq!(
        pull_and_read(
            Some(&containerd),
            &zstd,
            &format!("{result}/share/leaf"),
            &mut cleanup
        )
        .trim(),
        "two"
    );
}

#[test]
fn push_refuses_an_image_not_built_or_with_missing_layers() {
    let name = format!("{}/nixpack-e2e/{}", registry(), unique("unbuilt"));
    let dir = project(&name, "t1", "unbuilt");
    let out = nixpack(dir.path(), &["push"], &[], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("has not been built"), "{err}");
    assert!(err.contains("nixpack build --image"), "{err}");

    ok(nixpack(dir.path(), &["build"], &[], None), "build");
    let mut cleanup = Cleanup::default();
    cleanup.images.push((None, format!("{name}:t1")));
    let layers = image_dir(dir.path(), &name).join("layers");
    let victim = std::fs::read_dir(&layers)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "tar"))
        .unwrap();
    std::fs::remove_file(&victim).unwrap();
    let out = nixpack(dir.path(), &["push"], &[], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("stale"), "{err}");
    // Nothing reached the registry.
    let out = tool("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{name}:t1"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "no manifest was pushed");
}

#[test]
fn the_auth_registry_takes_credentials_from_config_json_helpers_and_stdin() {
    let host = env("NIXPACK_TEST_REGISTRY_AUTH");
    let user = env("NIXPACK_TEST_REGISTRY_AUTH_USER");
    let password = env("NIXPACK_TEST_REGISTRY_AUTH_PASSWORD");
    let creds = format!("{user}:{password}");
    let name = format!("{host}/nixpack-e2e/{}", unique("auth"));
    let dir = project(&name, "t1", "auth");
    ok(nixpack(dir.path(), &["build"], &[], None), "build");
    let mut cleanup = Cleanup::default();
    cleanup.images.push((None, format!("{name}:t1")));

    // No credentials: exit 1, and the message says how to log in.
    let out = nixpack(dir.path(), &["push"], &[], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(err.contains(&format!("docker login {host}")), "{err}");
    assert!(err.contains("--password-stdin"), "{err}");

    // `auths` in config.json.
    let config = tempfile::tempdir().unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(&creds);
    std::fs::write(
        config.path().join("config.json"),
        format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    let docker_config = config.path().to_str().unwrap();
    ok(
        nixpack(
            dir.path(),
            &["push"],
            &[("DOCKER_CONFIG", docker_config)],
            None,
        ),
        "push with auths",
    );
    let first = pushed(dir.path(), &name);
    let digest = first["manifest_digest"].as_str().unwrap().to_owned();
    cleanup
        .manifests
        .push((format!("{name}@{digest}"), Some(creds.clone())));
    assert_eq!(count(&first, "blobs_uploaded"), 4, "{first:#}");
    assert_eq!(
        registry_manifest_digest(&format!("{name}:t1"), Some(&creds)),
        digest
    );

    // A wrong password in config.json is refused, naming where it came from.
    let bad = tempfile::tempdir().unwrap();
    let wrong = base64::engine::general_purpose::STANDARD.encode(format!("{user}:wrong"));
    std::fs::write(
        bad.path().join("config.json"),
        format!(r#"{{"auths": {{"http://{host}": {{"auth": "{wrong}"}}}}}}"#),
    )
    .unwrap();
    let out = nixpack(
        dir.path(),
        &["push"],
        &[("DOCKER_CONFIG", bad.path().to_str().unwrap())],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(err.contains("refused those from"), "{err}");
    assert!(err.contains("config.json"), "{err}");

    // A credential helper named by `credsStore`, found on PATH.
    let helper_dir = tempfile::tempdir().unwrap();
    let log = helper_dir.path().join("asked");
    let script = helper_dir.path().join("docker-credential-nixpacktest");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\necho \"$server\" >> {}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}}' \"$server\" '{user}' '{password}'\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = tempfile::tempdir().unwrap();
    std::fs::write(
        store.path().join("config.json"),
        r#"{"auths": {}, "credsStore": "nixpacktest"}"#,
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        helper_dir.path().display(),
        std::env::var("PATH").unwrap()
    );
    let helper_ref = format!("{name}:t2");
    ok(
        nixpack(
            dir.path(),
            &["push", &helper_ref],
            &[
                ("DOCKER_CONFIG", store.path().to_str().unwrap()),
                ("PATH", &path),
            ],
            None,
        ),
        "push with a credential helper",
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), host);
    let second = pushed(dir.path(), &name);
    assert_eq!(second["reference"], helper_ref.as_str());
    assert_eq!(
        count(&second, "blobs_uploaded"),
        0,
        "same repository: {second:#}"
    );
    assert_eq!(registry_manifest_digest(&helper_ref, Some(&creds)), digest);

    // --username with the password on stdin.
    let stdin_ref = format!("{name}:t3");
    ok(
        nixpack(
            dir.path(),
            &["push", "--username", &user, "--password-stdin", &stdin_ref],
            &[],
            Some(&format!("{password}\n")),
        ),
        "push with --password-stdin",
    );
    assert_eq!(registry_manifest_digest(&stdin_ref, Some(&creds)), digest);
}

fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn the_example_pushed_is_pulled_by_both_engines_and_answers_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python-http");
    for f in ["default.nix", "nixpack.toml"] {
        std::fs::copy(example.join(f), dir.path().join(f)).unwrap();
    }
    let name = format!("{}/nixpack-e2e/{}", registry(), unique("python-http"));
    let manifest = std::fs::read_to_string(dir.path().join("nixpack.toml"))
        .unwrap()
        .replace("\"nixpack-example/python-http\"", &format!("{name:?}"));
    std::fs::write(dir.path().join("nixpack.toml"), manifest).unwrap();
    let reference = format!("{name}:latest");
    let mut cleanup = Cleanup::default();
    cleanup.images.push((None, reference.clone()));
    ok(nixpack(dir.path(), &["build"], &[], None), "build");

    // Ctrl-C while layers are being compressed and sent: exit 130, and
    // the registry has no tag for a half-pushed image.
    let mut child = Command::new(env!("CARGO_BIN_EXE_nixpack"))
        .arg("push")
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env_remove("DOCKER_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("pushing to") {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() == 0 {
            break;
        }
        said.push_str(&line);
    }
    assert!(said.contains("pushing to"), "the push started: {said}");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    stderr.read_to_string(&mut said).unwrap();
    assert_eq!(status.code(), Some(130), "{said}");
    let out = tool("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an interrupted push tags nothing: {}",
        text(&out.stdout)
    );

    ok(nixpack(dir.path(), &["push"], &[], None), "push");
    let push = pushed(dir.path(), &name);
    let digest = push["manifest_digest"].as_str().unwrap().to_owned();
    cleanup.manifests.push((format!("{name}@{digest}"), None));
    assert_eq!(registry_manifest_digest(&reference, None), digest);

    // The classic engine pulls it (over the image the build loaded) and runs it.
    run_ok(docker(None).args(["rmi", &reference]));
    run_ok(docker(None).args(["pull", "-q", &reference]));
    let said = run_ok(docker(None).args([
        "run",
        "--rm",
        "--entrypoint",
        "/bin/python3",
        &reference,
        "-c",
        "print('pulled and ran')",
    ]));
    assert_eq!(said.trim(), "pulled and ran");

    // The containerd-store engine pulls it by digest and serves HTTP.
    let host = containerd_host();
    cleanup.images.push((Some(host.clone()), reference.clone()));
    let by_digest = format!("{name}@{digest}");
    cleanup.images.push((Some(host.clone()), by_digest.clone()));
    run_ok(docker(Some(&host)).args(["pull", "-q", &reference]));
    let port = 19000 + (std::process::id() % 1000) as u16;
    let container = unique("nixpack-e2e-push-http");
    cleanup
        .containers
        .push((Some(host.clone()), container.clone()));
    run_ok(docker(Some(&host)).args([
        "run",
        "-d",
        "--name",
        &container,
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        &reference,
    ]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answer = None;
    while Instant::now() < deadline {
        if let Some(body) = http_get(port).filter(|b| b.contains("200 OK")) {
            answer = Some(body);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = answer.unwrap_or_else(|| {
        let logs = docker(Some(&host))
            .args(["logs", &container])
            .output()
            .unwrap();
        panic!(
            "no HTTP answer on 127.0.0.1:{port}: {}{}",
            text(&logs.stdout),
            text(&logs.stderr)
        )
    });
    assert!(
        answer.contains("Hello from a FROM-scratch Nix image"),
        "{answer}"
    );
    let repo_digests = run_ok(docker(Some(&host)).args([
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &reference,
    ]));
    assert!(repo_digests.contains(&digest), "{repo_digests}");
}

/// `skopeo inspect --raw` of `reference` on the open registry, as JSON.
fn raw_manifest(reference: &str) -> serde_json::Value {
    let raw = run_ok(
        tool("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}")),
    );
    serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{reference}: {e}: {raw}"))
}

#[test]
fn the_sbom_is_pushed_as_a_referrer_of_the_image_and_listed_under_its_referrers_tag() {
    let name = format!("{}/nixpack-e2e/{}", registry(), unique("sbom"));
    let dir = project(&name, "t1", "sbom");
    let mut cleanup = Cleanup::default();
    cleanup.images.push((None, format!("{name}:t1")));

    let out = ok(
        nixpack(dir.path(), &["build", "--push"], &[], None),
        "build --push",
    );
    let first = pushed(dir.path(), &name);
    let image = first["manifest_digest"].as_str().unwrap().to_owned();
    let sbom = &first["sbom"];
    let referrer = sbom["referrer_digest"]
        .as_str()
        .unwrap_or_else(|| panic!("push.json records the referrer: {first:#}"))
        .to_owned();
    let fallback = format!("sha256-{}", image.strip_prefix("sha256:").unwrap());
    // With its referrers and their tag.
    cleanup.manifests.push((format!("{name}@{image}"), None));
    // Debian's docker-registry has no referrers API: the tag fallback.
    assert_eq!(sbom["fallback_tag"], fallback.as_str(), "{first:#}");
    assert_eq!(count(sbom, "blobs_uploaded"), 2, "empty config and SBOM");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("attached SBOM {name}@{referrer}")),
        "{stdout}"
    );

    // The referrer is an OCI 1.1 artifact naming the image as subject.
    let manifest = raw_manifest(&format!("{name}@{referrer}"));
    assert_eq!(
        manifest["artifactType"], "application/vnd.cyclonedx+json",
        "{manifest:#}"
    );
    assert_eq!(
        manifest["subject"]["digest"],
        image.as_str(),
        "{manifest:#}"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );

    // The referrers tag names an index that lists it.
    let index = raw_manifest(&format!("{name}:{fallback}"));
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index:#}"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index:#}");
    assert_eq!(entries[0]["digest"], referrer.as_str());
    assert_eq!(entries[0]["artifactType"], "application/vnd.cyclonedx+json");

    // What the registry serves is the SBOM of the build, byte for byte.
    let copy = tempfile::tempdir().unwrap();
    let dest = copy.path().join("sbom");
    run_ok(
        tool("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{name}@{referrer}"))
            .arg(format!("dir:{}", dest.display())),
    );
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(
        manifest["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "sbom.cdx.json"
    );
    let served = std::fs::read(dest.join(layer.strip_prefix("sha256:").unwrap())).unwrap();
    let built = std::fs::read(image_dir(dir.path(), &name).join("sbom.cdx.json")).unwrap();
    assert!(
        served == built,
        "the registry serves the built sbom.cdx.json"
    );

    // Pushed again: no blob is sent, the index keeps one entry.
    ok(nixpack(dir.path(), &["push"], &[], None), "push again");
    let again = pushed(dir.path(), &name);
    assert_eq!(count(&again, "blobs_uploaded"), 0, "{again:#}");
    assert_eq!(count(&again["sbom"], "blobs_uploaded"), 0, "{again:#}");
    assert_eq!(again["sbom"]["referrer_digest"], referrer.as_str());
    assert_eq!(again["sbom"]["index_updated"], false, "{again:#}");
    let index = raw_manifest(&format!("{name}:{fallback}"));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index:#}");

    // A failed attach fails the push, and says the image itself is there.
    std::fs::remove_file(image_dir(dir.path(), &name).join("sbom.cdx.json")).unwrap();
    let out = nixpack(dir.path(), &["push"], &[], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // miette wraps lines: the words, one space apart.
    let err = text(&out.stderr)
        .split_whitespace()
        .filter(|w| !["│", "×"].contains(w))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        err.contains(&format!(
            "pushed {name}:t1 {image}, but attaching its SBOM failed"
        )),
        "{err}"
    );
    assert!(err.contains("run `nixpack push` again"), "{err}");

    // --no-sbom pushes the image alone.
    ok(
        nixpack(dir.path(), &["push", "--no-sbom"], &[], None),
        "push --no-sbom",
    );
    assert!(pushed(dir.path(), &name).get("sbom").is_none());
}
