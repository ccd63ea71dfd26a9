//! The pack + image benchmark (issue: layered, reproducible images).
//!
//! Builds a synthetic closure in the builder's store (default about 1 GiB,
//! a few hundred paths: one big shared base, fan-in libraries, leaves),
//! then measures, side by side in one run:
//!
//! - **floor**: the Engine importing the closure as one uncompressed tar
//!   (`POST /images/create?fromSrc=-`, what `docker import` does);
//! - **original recipe**: `tar cz` of the closure in the builder, copied
//!   out, and a `FROM scratch` + `ADD closure.tar.gz /` Dockerfile build;
//! - **nixpack cold** (store already built, no layer or image cached),
//!   **no change**, **one leaf changed** and **the base changed**.
//!
//! Run: `cargo bench --bench pipeline` (`NIXPACK_BENCH_MIB=256` for a
//! smaller closure, `NIXPACK_BENCH_DIR=/some/dir` to keep the synthetic
//! project for single runs). Needs the offline builder base
//! (scripts/make-builder-base).
//! Writes the table to stdout and to target/bench/pipeline.md.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use nixpack::closure::Closure;

const IMAGE: &str = "nixpack-bench/synthetic";

/// A deterministic pseudo-random generator (xorshift), so every run builds
/// the same graph shape and sizes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Node {
    name: String,
    bytes: u64,
    deps: Vec<usize>,
}

/// base ← 220 libraries (each on the base and 0–3 lower libraries) ←
/// 60 leaves (each on 2–5 libraries) ← the result (on every leaf).
/// Sizes: the base 25% of the total, libraries 55%, leaves 20%, each share
/// split unevenly (heavy tail), all random bytes (incompressible).
fn graph(total: u64) -> Vec<Node> {
    let mut rng = Rng(0x6e69_7870_6163_6b21);
    let mut nodes = vec![Node {
        name: "base".into(),
        bytes: total / 4,
        deps: vec![],
    }];
    let split = |rng: &mut Rng, share: u64, n: usize| -> Vec<u64> {
        let weights: Vec<u64> = (0..n).map(|_| 1 + rng.below(100).pow(2)).collect();
        let sum: u64 = weights.iter().sum();
        weights
            .iter()
            .map(|w| (share * w / sum).max(4096))
            .collect()
    };
    let lib_sizes = split(&mut rng, total * 55 / 100, 220);
    for (i, bytes) in lib_sizes.into_iter().enumerate() {
        let mut deps = vec![0];
        for _ in 0..rng.below(4) {
            if i > 0 {
                deps.push(1 + rng.below(i as u64) as usize);
            }
        }
        nodes.push(Node {
            name: format!("lib{i:03}"),
            bytes,
            deps,
        });
    }
    let leaf_sizes = split(&mut rng, total / 5, 60);
    for (i, bytes) in leaf_sizes.into_iter().enumerate() {
        let deps = (0..2 + rng.below(4))
            .map(|_| 1 + rng.below(220) as usize)
            .collect();
        nodes.push(Node {
            name: format!("leaf{i:02}"),
            bytes,
            deps,
        });
    }
    let leaves = (221..nodes.len()).collect();
    nodes.push(Node {
        name: "result".into(),
        bytes: 4096,
        deps: leaves,
    });
    nodes
}

/// The Nix expression for the graph; `seeds` changes chosen nodes.
fn expression(nodes: &[Node], seeds: &[(&str, u32)]) -> String {
    let mut s = String::from("let\n  mk = name: size: seed: deps: builtins.derivation {\n    inherit name seed;\n    system = builtins.currentSystem;\n    builder = \"/bin/sh\";\n    args = [ \"-c\" \"/bin/mkdir -p $out && /bin/head -c ${toString size} /dev/urandom > $out/data && echo ${toString deps} > $out/refs\" ];\n  };\n");
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

fn nixpack(dir: &Path) -> Duration {
    let t = Instant::now();
    let verbose = std::env::var_os("NIXPACK_BENCH_VERBOSE").is_some();
    let out = Command::new(env!("CARGO_BIN_EXE_nixpack"))
        .args(["build"])
        .args(verbose.then_some("-v"))
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("nixpack runs");
    assert!(
        out.status.success(),
        "nixpack build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if verbose {
        let err = String::from_utf8_lossy(&out.stderr);
        for line in err
            .lines()
            .filter(|l| l.contains("s)") || l.contains("loaded") || l.contains("imported"))
        {
            eprintln!("    {line}");
        }
    }
    t.elapsed()
}

fn report_seconds(dir: &Path, stage: &str) -> f64 {
    let text =
        std::fs::read_to_string(dir.join(".nixpack/nixpack-bench_synthetic/report.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["seconds"][stage].as_f64().unwrap()
}

fn closure(dir: &Path) -> Closure {
    Closure::from_json(
        &std::fs::read_to_string(dir.join(".nixpack/nixpack-bench_synthetic/closure.json"))
            .unwrap(),
    )
    .unwrap()
}

fn layer_files(dir: &Path) -> BTreeSet<(String, u64)> {
    std::fs::read_dir(dir.join(".nixpack/nixpack-bench_synthetic/layers"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().unwrap().len(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn remove_image(docker: &bollard::Docker, reference: &str) {
    let opts = bollard::query_parameters::RemoveImageOptionsBuilder::default()
        .force(true)
        .build();
    let _ = docker.remove_image(reference, Some(opts), None).await;
}

/// Removes every image of the benchmark, the untagged earlier ones too:
/// an earlier run's image still holding the closure's layers would let
/// the engine skip them, and "cold" would not be cold.
async fn remove_bench_images(docker: &bollard::Docker) {
    let label = format!("org.opencontainers.image.title={IMAGE}");
    let opts = bollard::query_parameters::ListImagesOptionsBuilder::default()
        .all(true)
        .filters(&std::collections::HashMap::from([(
            "label",
            vec![label.as_str()],
        )]))
        .build();
    for image in docker.list_images(Some(opts)).await.unwrap() {
        remove_image(docker, &image.id).await;
    }
}

/// One uncompressed tar of the whole closure, made from nixpack's layer
/// tarballs (untimed preparation for the floor).
fn whole_closure_tar(dir: &Path, to: &Path) {
    let layers = dir.join(".nixpack/nixpack-bench_synthetic/layers");
    let mut out = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(to).unwrap()));
    let mut names: Vec<PathBuf> = std::fs::read_dir(&layers)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    names.sort();
    for p in names {
        let mut a = tar::Archive::new(std::fs::File::open(&p).unwrap());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut h = e.header().clone();
            let path = e.path().unwrap().into_owned();
            if h.entry_type().is_dir()
                && (path == Path::new("nix") || path == Path::new("nix/store"))
            {
                continue;
            }
            if let Some(link) = e.link_name().unwrap().map(|l| l.into_owned()) {
                out.append_link(&mut h, &path, link).unwrap();
            } else {
                out.append_data(&mut h, &path, &mut e).unwrap();
            }
        }
    }
    out.into_inner().unwrap();
}

async fn floor(docker: &bollard::Docker, tarball: &Path) -> Duration {
    remove_image(docker, "nixpack-bench/floor:latest").await;
    let t = Instant::now();
    let file = tokio::fs::File::open(tarball).await.unwrap();
    let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
    let opts = bollard::query_parameters::CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo("nixpack-bench/floor")
        .tag("latest")
        .build();
    let mut s = docker.create_image(Some(opts), Some(bollard::body_try_stream(body)), None);
    while let Some(r) = s.next().await {
        r.expect("import succeeds");
    }
    let elapsed = t.elapsed();
    remove_image(docker, "nixpack-bench/floor:latest").await;
    elapsed
}

/// The engine's own cost per layer: `docker load` of an image of `count`
/// layers of one tiny file each, so bytes play no part. Any image of that
/// many layers pays at least this on top of its bytes.
async fn empty_layers(engine: &nixpack::engine::Engine, count: usize) -> Duration {
    use nixpack::archive::{diff_id, manifest_json, DiffId};
    use nixpack::stages::builder::append_bytes;
    let layers: Vec<(DiffId, Vec<u8>)> = (0..count)
        .map(|i| {
            let mut t = tar::Builder::new(Vec::new());
            append_bytes(&mut t, &format!("layer-{i}"), b"x", 0o644).unwrap();
            let bytes = t.into_inner().unwrap();
            (diff_id(&bytes[..]).unwrap(), bytes)
        })
        .collect();
    let ids: Vec<&DiffId> = layers.iter().map(|(d, _)| d).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Labels": { "dev.nixpack.bench": "empty-layers" } },
        "rootfs": { "type": "layers", "diff_ids": ids },
    }))
    .unwrap();
    let t = Instant::now();
    let id = engine
        .load(move |tar| {
            for (d, bytes) in &layers {
                append_bytes(tar, &format!("{}/layer.tar", d.hex()), bytes, 0o644)?;
            }
            append_bytes(tar, "config.json", &config, 0o644)?;
            let ids: Vec<DiffId> = layers.iter().map(|(d, _)| d.clone()).collect();
            append_bytes(
                tar,
                "manifest.json",
                &manifest_json("config.json", &ids),
                0o644,
            )
        })
        .await
        .expect("the empty-layer image loads");
    let elapsed = t.elapsed();
    remove_image(engine.docker(), &id).await;
    elapsed
}

/// The 2015 recipe: `tar cz` of tmp + the closure in the builder, copied
/// out, `FROM scratch` / `ADD closure.tar.gz /`.
async fn original_recipe(
    engine: &nixpack::engine::Engine,
    builder: &str,
    volume: &str,
    closure: &Closure,
    work: &Path,
) -> Duration {
    let t = Instant::now();
    let paths: Vec<String> = closure
        .paths
        .keys()
        .map(|p| p.as_str().trim_start_matches('/').to_owned())
        .collect();
    let script = format!("mkdir -p /out /conv/tmp && chmod 1777 /conv/tmp && cd / && tar czf /out/closure.tar.gz {} -C /conv tmp", paths.join(" "));
    let spec = nixpack::engine::RunSpec {
        image: builder,
        cmd: vec!["-c".into(), script],
        entrypoint: Some(vec!["/bin/sh".into()]),
        env: vec![],
        volumes: vec![(volume.to_owned(), "/nix".into())],
        uploads: vec![],
        labels: Default::default(),
        binds: vec![],
        raw_stdout: false,
    };
    let out = work.join("original");
    let mut log = Vec::new();
    let code = engine
        .run_to_completion(&spec, |l| log.push(l.to_owned()), Some(("/out", &out)))
        .await
        .unwrap();
    assert_eq!(code, 0, "{}", log.join("\n"));
    let gz = out.join("closure.tar.gz");
    let id = engine
        .build(
            "the original recipe's image",
            Default::default(),
            move |tar| {
                nixpack::stages::builder::append_bytes(
                    tar,
                    "Dockerfile",
                    b"FROM scratch\nADD closure.tar.gz /\n",
                    0o644,
                )?;
                tar.append_file("closure.tar.gz", &mut std::fs::File::open(&gz)?)
            },
            |_| {},
        )
        .await
        .unwrap();
    let elapsed = t.elapsed();
    let _ = engine.remove_image(&id).await;
    elapsed
}

fn repeat() -> usize {
    std::env::var("NIXPACK_BENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mib: u64 = std::env::var("NIXPACK_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let nodes = graph(mib << 20);
    let work = tempfile::tempdir().unwrap();
    // NIXPACK_BENCH_DIR keeps the synthetic project there, to time or
    // profile single `nixpack build` runs on it afterwards.
    let dir = std::env::var_os("NIXPACK_BENCH_DIR")
        .map_or_else(|| work.path().join("project"), PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("nixpack.toml"), format!("[project]\nname = \"bench\"\n[builder]\nfrom = \"nixpack-base:bookworm\"\n[[image]]\nname = \"{IMAGE}\"\nexpression = \"default.nix\"\n")).unwrap();
    std::fs::write(dir.join("default.nix"), expression(&nodes, &[])).unwrap();
    eprintln!(
        "bench: building the synthetic closure ({mib} MiB, {} paths) in the store…",
        nodes.len()
    );
    nixpack(&dir);
    let base_closure = closure(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = rt.block_on(nixpack::engine::Engine::connect()).unwrap();
    let docker = engine.docker().clone();
    let layer_dir = dir.join(".nixpack/nixpack-bench_synthetic/layers");
    let mut rows: Vec<(String, f64, String)> = Vec::new();

    eprintln!("bench: floor");
    let tarball = work.path().join("closure.tar");
    whole_closure_tar(&dir, &tarball);
    // Medians of REPEAT runs: a VM's disk makes single runs noisy.
    let floor = median(
        (0..repeat())
            .map(|_| rt.block_on(floor(&docker, &tarball)).as_secs_f64())
            .collect(),
    );
    let _ = std::fs::remove_file(&tarball);
    rows.push((
        format!(
            "floor: engine imports one uncompressed tar, median of {}",
            repeat()
        ),
        floor,
        String::new(),
    ));

    eprintln!("bench: the engine's cost per layer");
    let count = usize::from(nixpack::manifest::DEFAULT_LAYERS) + 1;
    let per_layer = median(
        (0..repeat())
            .map(|_| rt.block_on(empty_layers(&engine, count)).as_secs_f64())
            .collect(),
    );
    rows.push((
        format!(
            "engine alone: docker load of {count} one-file layers (the default layer count), median of {}",
            repeat()
        ),
        per_layer,
        format!("{:.0} ms per layer", per_layer * 1000.0 / count as f64),
    ));

    eprintln!("bench: original recipe");
    let report = || -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(dir.join(".nixpack/nixpack-bench_synthetic/report.json"))
                .unwrap(),
        )
        .unwrap()
    };
    let builder = report()["builder"].as_str().unwrap().to_owned();
    let volume = report()["store_volume"].as_str().unwrap().to_owned();
    let original = rt
        .block_on(original_recipe(
            &engine,
            &builder,
            &volume,
            &base_closure,
            work.path(),
        ))
        .as_secs_f64();
    rows.push((
        "original recipe: tar cz + ADD".into(),
        original,
        String::new(),
    ));

    eprintln!("bench: nixpack cold");
    let mut colds = Vec::new();
    for _ in 0..repeat() {
        rt.block_on(remove_bench_images(&docker));
        let _ = std::fs::remove_dir_all(&layer_dir);
        let wall = nixpack(&dir).as_secs_f64();
        colds.push((
            wall,
            report_seconds(&dir, "layers"),
            report_seconds(&dir, "image"),
        ));
    }
    colds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (cold, layers_s, image_s) = colds[colds.len() / 2];
    let pack = layers_s + image_s;
    rows.push((
        format!(
            "nixpack cold (store built; no layers, no image), median of {}",
            colds.len()
        ),
        cold,
        format!(
            "layers {layers_s:.1}s + image {image_s:.1}s; all runs: {}",
            colds
                .iter()
                .map(|c| format!("{:.1}s", c.0))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));

    eprintln!("bench: nixpack, nothing changed");
    let same = nixpack(&dir).as_secs_f64();
    rows.push(("nixpack, nothing changed".into(), same, String::new()));

    let mut changed = |what: &str, seeds: &[(&str, u32)]| {
        eprintln!("bench: nixpack, {what} changed");
        let before_files = layer_files(&dir);
        let before = closure(&dir);
        std::fs::write(dir.join("default.nix"), expression(&nodes, seeds)).unwrap();
        let total = nixpack(&dir).as_secs_f64();
        let after = closure(&dir);
        let changed_bytes: u64 = after
            .paths
            .values()
            .filter(|p| !before.paths.contains_key(&p.path))
            .map(|p| p.nar_size)
            .sum();
        let recreated: u64 = layer_files(&dir)
            .difference(&before_files)
            .map(|(_, len)| len)
            .sum();
        let ratio = recreated as f64 / changed_bytes as f64;
        // The same change under the popularity plan (nixpkgs' layered
        // images), computed from the closure: the baseline to beat.
        let budget = nixpack::manifest::DEFAULT_LAYERS;
        let changed_path = before
            .paths
            .keys()
            .find(|p| p.name() == what.split('(').nth(1).unwrap_or("").trim_end_matches(')'))
            .or_else(|| before.paths.keys().find(|p| p.name() == "base"));
        let baseline = changed_path.map(|p| {
            let (r, c) = nixpack::layers::change_cost(
                &before,
                &nixpack::layers::plan_popularity(&before, budget),
                p,
            );
            r as f64 / c as f64
        });
        let nix = report_seconds(&dir, "nix");
        rows.push((
            format!("nixpack, {what} changed"),
            total,
            format!(
                "nix-build {nix:.1}s; layers re-created {} MiB / store paths changed {} MiB = {ratio:.2} (popularity plan: {})",
                recreated >> 20,
                changed_bytes >> 20,
                baseline.map_or("-".to_owned(), |b| format!("{b:.2}"))
            ),
        ));
        ratio
    };
    // The median-sized leaf: neither the easiest nor the hardest case.
    let mut leaves: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.name.starts_with("leaf"))
        .collect();
    leaves.sort_by_key(|n| n.bytes);
    let leaf = leaves[leaves.len() / 2].name.clone();
    let leaf_ratio = changed(&format!("one leaf ({leaf})"), &[(leaf.as_str(), 1)]);
    changed("the base", &[(leaf.as_str(), 1), ("base", 1)]);

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Closure: {mib} MiB in {} store paths (random bytes). Machine: {} cores.\n",
        base_closure.paths.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        md,
        "| run | wall time | × floor | notes |\n|---|---:|---:|---|"
    );
    for (name, secs, note) in &rows {
        let _ = writeln!(
            md,
            "| {name} | {secs:.1} s | {:.2} | {note} |",
            secs / floor
        );
    }
    let _ = writeln!(md, "\nnixpack cold pack+image (layers + image stages) = {pack:.1} s = {:.2} × floor; original recipe / nixpack cold = {:.1}×; leaf change ratio = {leaf_ratio:.2}; no-change rebuild = {same:.2} s.", pack / floor, original / cold);
    print!("{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("pipeline.md"), &md).unwrap();
    rt.block_on(remove_bench_images(&docker));
}
