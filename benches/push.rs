//! The push benchmark (issue #9: the registry sink).
//!
//! Builds a synthetic closure of compressible data (default about 1 GiB:
//! one shared base, 40 libraries, 20 leaves and a result; each path's
//! data is hex text of random bytes, `od -tx1`, which gzip takes to about
//! 44% — the ratio of real binaries — at the speed of real data), then
//! pushes the same image three ways to a registry of its own
//! (`scripts/test-registry start bench-push`, stopped and deleted at the
//! end), each into a fresh repository:
//!
//! - **nixpack push** (from `.nixpack/`, no engine; cold = no compressed
//!   layer cached either),
//! - **docker push** from the classic engine,
//! - **skopeo copy docker-daemon:… docker://…**,
//!
//! cold, with nothing changed, and after one leaf changed (rebuilt by
//! `nixpack build` first; nixpack's row adds the build's time beyond
//! nix-build). Every derivation carries a per-run nonce, so neither
//! Docker's nor skopeo's blob caches know any layer from an earlier run.
//!
//! Run: `cargo bench --bench push` (`NIXPACK_BENCH_MIB=256` for a
//! smaller closure). Needs the builder base (scripts/make-builder-base),
//! docker-registry, skopeo. Writes the table to stdout and to
//! target/bench/push.md; removes its images, and deletes its store paths
//! from the shared store where nothing else holds them.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const IMAGE: &str = "nixpack-bench/push";
const REGISTRY_NAME: &str = "bench-push";

struct Node {
    name: String,
    bytes: u64,
    deps: Vec<usize>,
}

/// base ← 40 libraries (on the base) ← 20 leaves (on 2 libraries each) ←
/// the result (on every leaf). Sizes: base 25%, libraries 55%, leaves 20%.
fn graph(total: u64) -> Vec<Node> {
    let mut nodes = vec![Node {
        name: "base".into(),
        bytes: total / 4,
        deps: vec![],
    }];
    for i in 0..40u64 {
        nodes.push(Node {
            name: format!("lib{i:02}"),
            // Uneven: 1..40 parts of the libraries' share.
            bytes: total * 55 / 100 * (i + 1) / 820,
            deps: vec![0],
        });
    }
    for i in 0..20u64 {
        nodes.push(Node {
            name: format!("leaf{i:02}"),
            bytes: total / 5 * (i + 1) / 210,
            deps: vec![1 + (i as usize * 7) % 40, 1 + (i as usize * 13 + 5) % 40],
        });
    }
    let leaves = (41..nodes.len()).collect();
    nodes.push(Node {
        name: "result".into(),
        bytes: 4096,
        deps: leaves,
    });
    nodes
}

/// The Nix expression: each path holds `size` bytes of a 1 MiB chunk of
/// `od -tx1` text of random bytes, repeated (far beyond gzip's 32 KiB
/// window, so it compresses like fresh data).
fn expression(nodes: &[Node], nonce: &str, seeds: &[(&str, u32)]) -> String {
    let mut s = format!(
        "let\n  mk = name: size: seed: deps: builtins.derivation {{\n    inherit name seed;\n    nonce = \"{nonce}\";\n    system = builtins.currentSystem;\n    builder = \"/bin/sh\";\n    args = [ \"-c\" \"/bin/mkdir -p $out && /bin/od -An -tx1 -v /dev/urandom | /bin/head -c 1048576 > chunk && n=$(( ${{toString size}} / 1048576 + 1 )) && i=0 && while [ $i -lt $n ]; do /bin/cat chunk; i=$((i+1)); done | /bin/head -c ${{toString size}} > $out/data && echo ${{toString deps}} > $out/refs\" ];\n  }};\n"
    );
    for n in nodes {
        let seed = seeds
            .iter()
            .find(|(name, _)| *name == n.name)
            .map_or(0, |(_, s)| *s);
        let deps: Vec<&str> = n.deps.iter().map(|d| nodes[*d].name.as_str()).collect();
        let _ = writeln!(
            s,
            "  {} = mk \"{}\" {} \"{seed}\" [ {} ];",
            n.name,
            n.name,
            n.bytes,
            deps.join(" ")
        );
    }
    s.push_str("in result\n");
    s
}

fn run(cmd: &mut Command) -> (Duration, String) {
    let t = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let elapsed = t.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (elapsed, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn nixpack(dir: &Path, args: &[&str]) -> Duration {
    run(Command::new(env!("CARGO_BIN_EXE_nixpack"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("DOCKER_HOST"))
    .0
}

fn image_dir(dir: &Path) -> PathBuf {
    dir.join(".nixpack").join(IMAGE.replace('/', "_"))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn script(args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    run(Command::new(root.join("scripts/test-registry")).args(args)).1
}

/// Stops the benchmark's registry (and deletes its storage) when dropped.
struct Registry(String);

impl Registry {
    fn start() -> Registry {
        script(&["start", REGISTRY_NAME]);
        let env = script(&["env", REGISTRY_NAME]);
        let host = env
            .split('=')
            .nth(1)
            .expect("test-registry env prints VAR=HOST")
            .trim()
            .to_owned();
        Registry(host)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = script(&["stop", REGISTRY_NAME]);
    }
}

/// The `layers/*.tar` files: (name, size).
fn layer_files(dir: &Path) -> BTreeSet<(String, u64)> {
    std::fs::read_dir(image_dir(dir).join("layers"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect()
}

fn remove_compressed(dir: &Path) {
    for e in std::fs::read_dir(image_dir(dir).join("layers"))
        .unwrap()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".gz") || name.ends_with(".gz.json") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

fn docker(args: &[&str]) -> Duration {
    run(Command::new("docker").args(args).env_remove("DOCKER_HOST")).0
}

fn skopeo_copy(to: &str) -> Duration {
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("docker-daemon:{IMAGE}:latest"),
        &format!("docker://{to}"),
    ]))
    .0
}

fn pushed(dir: &Path) -> serde_json::Value {
    json(&image_dir(dir).join("push.json"))["pushes"][0].clone()
}

/// Deletes the benchmark's store paths from the shared store volume
/// where nothing else holds them (a builder container runs
/// `nix-store --delete`; paths still alive stay).
fn delete_store_paths(dir: &Path, paths: &BTreeSet<String>) {
    let report = json(&image_dir(dir).join("report.json"));
    let builder = report["builder"].as_str().unwrap();
    let volume = report["store_volume"].as_str().unwrap();
    let list: Vec<&str> = paths.iter().map(String::as_str).collect();
    let out = Command::new("docker")
        .env_remove("DOCKER_HOST")
        .args([
            "run",
            "--rm",
            "-v",
            &format!("{volume}:/nix"),
            "--entrypoint",
            "/bin/sh",
            builder,
            "-c",
            &format!("nix-store --delete {} 2>&1 | tail -n 1", list.join(" ")),
        ])
        .output()
        .unwrap();
    eprintln!(
        "bench: store clean-up: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
}

fn main() {
    let mib: u64 = std::env::var("NIXPACK_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let nonce = format!(
        "{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let nodes = graph(mib << 20);
    let registry = Registry::start();
    let reg = registry.0.clone();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("project");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("nixpack.toml"), format!("[project]\nname = \"bench\"\n[builder]\nfrom = \"nixpack-base:bookworm\"\n[[image]]\nname = \"{IMAGE}\"\nexpression = \"default.nix\"\n")).unwrap();
    std::fs::write(dir.join("default.nix"), expression(&nodes, &nonce, &[])).unwrap();
    eprintln!(
        "bench: building the synthetic closure ({mib} MiB, {} paths) and its image…",
        nodes.len()
    );
    nixpack(&dir, &["build"]);
    let mut store_paths: BTreeSet<String> = json(&image_dir(&dir).join("closure.json"))["paths"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["path"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();

    let repo = |tool: &str| format!("{reg}/nixpack-bench/{tool}-{nonce}:1");
    let mut rows: Vec<(String, f64, f64, f64, String)> = Vec::new();

    // Cold.
    eprintln!("bench: cold pushes");
    docker(&["tag", &format!("{IMAGE}:latest"), &repo("docker")]);
    let docker_cold = docker(&["push", &repo("docker")]).as_secs_f64();
    let skopeo_cold = skopeo_copy(&repo("skopeo")).as_secs_f64();
    remove_compressed(&dir);
    let cold = nixpack(&dir, &["push", &repo("nixpack")]).as_secs_f64();
    let p = pushed(&dir);
    let total_uncompressed: u64 = layer_files(&dir).iter().map(|(_, s)| s).sum();
    rows.push((
        "cold (empty repository)".into(),
        cold,
        docker_cold,
        skopeo_cold,
        format!(
            "nixpack sent {} blobs, {} MiB (layers {} MiB uncompressed)",
            p["blobs_uploaded"],
            p["bytes_uploaded"].as_u64().unwrap() >> 20,
            total_uncompressed >> 20
        ),
    ));

    // Nothing changed.
    eprintln!("bench: nothing changed");
    let same = nixpack(&dir, &["push", &repo("nixpack")]).as_secs_f64();
    let p = pushed(&dir);
    let docker_same = docker(&["push", &repo("docker")]).as_secs_f64();
    let skopeo_same = skopeo_copy(&repo("skopeo")).as_secs_f64();
    rows.push((
        "nothing changed".into(),
        same,
        docker_same,
        skopeo_same,
        format!(
            "nixpack sent {} blobs, {} bytes",
            p["blobs_uploaded"], p["bytes_uploaded"]
        ),
    ));

    // One leaf changed: rebuild, then push.
    eprintln!("bench: one leaf changed");
    let leaf = "leaf09";
    let before = layer_files(&dir);
    std::fs::write(
        dir.join("default.nix"),
        expression(&nodes, &nonce, &[(leaf, 1)]),
    )
    .unwrap();
    let build = nixpack(&dir, &["build"]).as_secs_f64();
    let seconds = json(&image_dir(&dir).join("report.json"))["seconds"].clone();
    let nix = seconds["nix"].as_f64().unwrap();
    // The build's own stages after nix-build: layer tarballs, and the
    // image loaded into the engine (not part of a push).
    let stages = format!(
        "layers {:.1}s + engine load {:.1}s",
        seconds["layers"].as_f64().unwrap(),
        seconds["image"].as_f64().unwrap()
    );
    store_paths.extend(
        json(&image_dir(&dir).join("closure.json"))["paths"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["path"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
    );
    let leaf_push = nixpack(&dir, &["push", &repo("nixpack")]).as_secs_f64();
    let p = pushed(&dir);
    // The changed store paths' layers (not the conventions layer), compressed.
    let changed: Vec<String> = layer_files(&dir)
        .difference(&before)
        .map(|(name, _)| name.clone())
        .filter(|n| n.starts_with("layer-"))
        .collect();
    let changed_compressed: u64 = changed
        .iter()
        .map(|n| {
            std::fs::metadata(image_dir(&dir).join("layers").join(format!("{n}.gz")))
                .unwrap()
                .len()
        })
        .sum();
    let uploaded = p["bytes_uploaded"].as_u64().unwrap();
    let ratio = uploaded as f64 / changed_compressed as f64;
    docker(&["tag", &format!("{IMAGE}:latest"), &repo("docker")]);
    let docker_leaf = docker(&["push", &repo("docker")]).as_secs_f64();
    let skopeo_leaf = skopeo_copy(&repo("skopeo")).as_secs_f64();
    let beyond = build - nix + leaf_push;
    rows.push((
        format!("one leaf ({leaf}) changed"),
        leaf_push,
        docker_leaf,
        skopeo_leaf,
        format!(
            "nixpack sent {} blobs, {uploaded} bytes for {} changed layer(s) of {changed_compressed} bytes compressed: ratio {ratio:.2}; nixpack build {build:.1}s (nix-build {nix:.1}s, {stages}) + push {leaf_push:.2}s = {beyond:.1}s beyond nix-build",
            p["blobs_uploaded"],
            changed.len()
        ),
    ));

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Closure: {mib} MiB in {} store paths (od -tx1 text of random bytes, gzip -6 ratio about 0.44). Registry: docker-registry 2.8 on loopback. Machine: {} cores.\n",
        nodes.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        md,
        "| push | nixpack | docker push | skopeo copy | nixpack ÷ docker | notes |\n|---|---:|---:|---:|---:|---|"
    );
    for (name, n, d, s, note) in &rows {
        let _ = writeln!(
            md,
            "| {name} | {n:.2} s | {d:.2} s | {s:.2} s | {:.2} | {note} |",
            n / d
        );
    }
    let _ = writeln!(
        md,
        "\nTargets: cold ≤ 0.5× docker push: {:.2}×; nothing changed ≤ 0.5 s: {same:.2} s; leaf changed: uploaded ÷ changed compressed ≤ 1.5: {ratio:.2}, ≤ 2 s beyond nix-build: {beyond:.1} s.",
        cold / docker_cold
    );
    print!("{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("push.md"), &md).unwrap();

    // Clean up: the engine's images, then the store paths; the registry
    // goes with `registry`'s drop.
    let _ = Command::new("docker")
        .env_remove("DOCKER_HOST")
        .args(["rmi", &repo("docker")])
        .output();
    let ids = Command::new("docker")
        .env_remove("DOCKER_HOST")
        .args([
            "images",
            "-q",
            "--filter",
            &format!("label=org.opencontainers.image.title={IMAGE}"),
        ])
        .output()
        .unwrap();
    for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
        let _ = Command::new("docker")
            .env_remove("DOCKER_HOST")
            .args(["rmi", "-f", id])
            .output();
    }
    delete_store_paths(&dir, &store_paths);
    drop(registry);
}
