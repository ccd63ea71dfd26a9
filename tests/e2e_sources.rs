//! End-to-end: what `nixpack build` sends to the builder (issue #10). A
//! FIFO in the project is named and skipped, not opened (it used to hang
//! the build for good); files a `.gitignore` leaves out neither reach the
//! builder nor start a nix-build when they change; a sent file does.
//!
//! Needs the offline builder base `nixpack-base:bookworm` (scripts/test
//! makes it with scripts/make-builder-base).

mod common;

use common::engine::{docker, require_base, rt, text, unique, ImageGuard, BASE};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::StreamExt;

/// `nixpack build` in `dir`, killed (and the test failed) if it has not
/// ended after five minutes: the bug this pins was a build that never did.
fn build(dir: &Path) -> Output {
    let mut child = Command::new(PathBuf::from(env!("CARGO_BIN_EXE_nixpack")))
        .arg("build")
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nixpack runs");
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("nixpack build did not end within 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

fn build_ok(dir: &Path) -> Output {
    let out = build(dir);
    assert!(
        out.status.success(),
        "build failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// A derivation with a `bin/`, unique per `nonce`.
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

/// Containers created with `label` between `since` and now (Engine events).
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

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

#[test]
fn a_fifo_is_named_and_skipped_and_ignored_logs_start_no_container() {
    require_base();
    let name = unique("sources");
    let _guard = ImageGuard(vec![format!("{name}:latest")]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("nixpack.toml"),
        format!("[project]\nname = \"t\"\n[builder]\nfrom = \"{BASE}\"\n[[image]]\nname = \"{name}\"\nexpression = \"default.nix\"\n"),
    )
    .unwrap();
    std::fs::write(root.join("default.nix"), tiny_expression(&name)).unwrap();
    std::fs::write(root.join(".gitignore"), "logs/\n").unwrap();
    std::fs::create_dir(root.join("logs")).unwrap();
    std::fs::write(root.join("logs/first.log"), "started\n").unwrap();
    let fifo = Command::new("mkfifo")
        .arg(root.join("events.pipe"))
        .status()
        .unwrap();
    assert!(fifo.success());

    let first = build_ok(root);
    let stderr = text(&first.stderr);
    assert!(
        stderr.contains("events.pipe (FIFO)") && stderr.contains(".nixpackignore"),
        "the FIFO is named, with how to silence it:\n{stderr}"
    );

    // A log written into an ignored folder changes nothing.
    let label = format!("dev.nixpack.image={name}");
    let since = now();
    std::fs::write(root.join("logs/x.log"), "a line the app wrote\n").unwrap();
    let again = build_ok(root);
    assert!(
        text(&again.stdout).contains("unchanged"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(
        containers_created_since(&label, since),
        0,
        "no builder container when only an ignored file changed"
    );

    // An edited expression is sent and built.
    let since = now();
    std::fs::write(
        root.join("default.nix"),
        tiny_expression(&format!("{name}-2")),
    )
    .unwrap();
    let edited = build_ok(root);
    assert!(
        text(&edited.stdout).contains("nix-build ran"),
        "{}",
        text(&edited.stdout)
    );
    assert!(containers_created_since(&label, since) > 0);
}
