//! End-to-end: a builder base in a private registry is pulled with the
//! credentials `docker login` stored in `config.json` (a temporary
//! `DOCKER_CONFIG`), against the real engine and Debian's docker-registry
//! behind htpasswd (`scripts/test-registry`, which `scripts/test` starts).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

const BASE: &str = "nixpack-base:bookworm";

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: scripts/test starts the registries and sets it")
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
    out
}

fn nixpack(dir: &Path, docker_config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nixpack"))
        .arg("build")
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("DOCKER_CONFIG", docker_config)
        .output()
        .unwrap()
}

/// Removes the pulled base and the built images whatever happens.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for r in &self.0 {
            let _ = Command::new("docker").args(["rmi", r]).output();
        }
    }
}

#[test]
fn a_private_base_is_pulled_with_the_credentials_docker_login_stored() {
    let registry = var("NIXPACK_TEST_REGISTRY_AUTH");
    let (user, password) = (
        var("NIXPACK_TEST_REGISTRY_AUTH_USER"),
        var("NIXPACK_TEST_REGISTRY_AUTH_PASSWORD"),
    );
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let private = format!("{registry}/nixpack-e2e/base-{nonce}:t");
    let image = format!("nixpack-e2e/private-base-{nonce}");
    let _cleanup = Cleanup(vec![private.clone(), format!("{image}:latest")]);
    // The base goes to the registry and is not in the engine under that name.
    run(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("{user}:{password}"),
        &format!("docker-daemon:{BASE}"),
        &format!("docker://{private}"),
    ]));
    let present = Command::new("docker")
        .args(["image", "inspect", &private])
        .output()
        .unwrap();
    assert!(!present.status.success(), "{private} must not be local yet");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nixpack.toml"),
        format!("[project]\nname = \"t\"\n[builder]\nfrom = \"{private}\"\n[[image]]\nname = \"{image}\"\nexpression = \"default.nix\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("default.nix"),
        format!("builtins.derivation {{ name = \"private-base\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \"echo {nonce} > $out\" ]; }}\n"),
    )
    .unwrap();

    // Without credentials the pull is refused, and the error says what to do.
    let empty = tempfile::tempdir().unwrap();
    let out = nixpack(dir.path(), empty.path());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("docker login {registry}")), "{err}");

    // With `auths` in config.json, as `docker login` writes it, it works.
    let config = tempfile::tempdir().unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        config.path().join("config.json"),
        format!("{{\"auths\":{{\"{registry}\":{{\"auth\":\"{auth}\"}}}}}}"),
    )
    .unwrap();
    let out = nixpack(dir.path(), config.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    run(Command::new("docker").args(["image", "inspect", &private]));
    run(Command::new("docker").args(["image", "inspect", &format!("{image}:latest")]));
}
