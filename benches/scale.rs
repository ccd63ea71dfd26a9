//! The scale benchmark (issue: closures of thousands of paths).
//!
//! Builds closures of many tiny store paths — each a `builtins.derivation`
//! with `/bin/sh` as builder that writes `echo ${dep}…` (so it refers to
//! up to 4 earlier paths, picked at random, no bound on chain depth), and a
//! top path that refers to all of them — and measures, per size, what
//! nixpack spends on the closure beyond nix-build:
//!
//! - **describe**: `nix-store --query --requisites` + `--dump-db` of the
//!   closure in the builder (the entrypoint's commands, timed inside the
//!   container, and the container's whole round trip apart), then
//!   `Closure::from_nix` in this process;
//! - **plan**: `layers::plan` at the default layer budget;
//! - **picture**: `picture::svg` + `picture::dot`;
//! - **layers**: the layers stage of `nixpack build` (report.json) with no
//!   layer tarball on disk and no image in the engine;
//! - **peak memory** of that `nixpack build` (`/usr/bin/time -v`).
//!
//! Run: `cargo bench --bench scale` (`NIXPACK_BENCH_SCALE_SIZES=2000,10000`
//! by default; `NIXPACK_BENCH_REPEAT` runs per measurement, median shown).
//! The projects live in `target/bench/scale/<size>/` and the store in the
//! volume `nixpack-bench-scale`, so the first run's nix-build (minutes for
//! 10,000 paths) is reused by later runs; `NIXPACK_BENCH_CLEAN=1` removes
//! the images and the volume at the end. Needs `nixpack-base:bookworm`
//! and GNU time. Writes the table to stdout and to target/bench/scale.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nixpack::closure::Closure;

const VOLUME: &str = "nixpack-bench-scale";

/// A deterministic pseudo-random generator (xorshift).
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

/// `n` tiny paths, each on up to 4 distinct earlier ones, and `top` on all.
/// The top path's references do not fit one argument (128 KiB), so it
/// gets them through a file (`passAsFile`); the others `echo` theirs.
fn expression(n: usize) -> String {
    let mut rng = Rng(0x7363_616c_6521_2121 ^ n as u64);
    let mut s = String::from(
        "let\n  mk = name: deps: builtins.derivation {\n    inherit name;\n    system = builtins.currentSystem;\n    builder = \"/bin/sh\";\n    args = [ \"-c\" \"echo ${toString deps} > $out\" ];\n  };\n",
    );
    for i in 0..n {
        let mut deps: Vec<usize> = Vec::new();
        if i > 0 {
            for _ in 0..rng.below(5) {
                let d = rng.below(i as u64) as usize;
                if !deps.contains(&d) {
                    deps.push(d);
                }
            }
        }
        let deps: Vec<String> = deps.iter().map(|d| format!("p{d:05}")).collect();
        let _ = writeln!(s, "  p{i:05} = mk \"p{i:05}\" [ {} ];", deps.join(" "));
    }
    s.push_str("  top = builtins.derivation {\n    name = \"top\";\n    system = builtins.currentSystem;\n    builder = \"/bin/sh\";\n    passAsFile = [ \"refs\" ];\n    refs = toString [");
    for i in 0..n {
        let _ = write!(s, " p{i:05}");
    }
    s.push_str(" ];\n    args = [ \"-c\" \"read -r refs < $refsPath; echo $refs > $out\" ];\n  };\nin top\n");
    s
}

fn image_name(n: usize) -> String {
    format!("nixpack-bench/scale-{n}")
}

fn slug(n: usize) -> String {
    image_name(n).replace(['/', ':'], "_")
}

/// `nixpack build` under GNU time: wall time and peak RSS in KiB.
fn nixpack_build(dir: &Path) -> (Duration, u64) {
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_nixpack"))
        .arg("build")
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("GNU time runs (apt-get install -y time)");
    let wall = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nixpack build failed:\n{err}");
    let rss = err
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("GNU time reports the maximum resident set size");
    (wall, rss)
}

fn report(dir: &Path, n: usize) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(".nixpack").join(slug(n)).join("report.json"))
        .expect("report.json");
    serde_json::from_str(&text).unwrap()
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

/// Median seconds of `repeat()` calls of `f`.
fn timed<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut last = None;
    let secs = median(
        (0..repeat())
            .map(|_| {
                let t = Instant::now();
                last = Some(f());
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    (secs, last.expect("at least one run"))
}

/// Removes the benchmark's images (tagged or not) so a load is cold.
async fn remove_images(docker: &bollard::Docker, n: usize) {
    let label = format!("org.opencontainers.image.title={}", image_name(n));
    let opts = bollard::query_parameters::ListImagesOptionsBuilder::default()
        .all(true)
        .filters(&std::collections::HashMap::from([(
            "label",
            vec![label.as_str()],
        )]))
        .build();
    for image in docker.list_images(Some(opts)).await.unwrap_or_default() {
        let opts = bollard::query_parameters::RemoveImageOptionsBuilder::default()
            .force(true)
            .build();
        let _ = docker.remove_image(&image.id, Some(opts), None).await;
    }
}

struct Row {
    n: usize,
    paths: usize,
    db_bytes: usize,
    nix_store: f64,
    round_trip: f64,
    parse: f64,
    plan: f64,
    picture: f64,
    layers: f64,
    nix_stage: f64,
    build_wall: f64,
    rss_kib: u64,
}

fn measure(
    rt: &tokio::runtime::Runtime,
    engine: &nixpack::engine::Engine,
    root: &Path,
    n: usize,
) -> Row {
    let dir = root.join(n.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!(
        "[project]\nname = \"bench-scale\"\n[builder]\nfrom = \"nixpack-base:bookworm\"\nstore-volume = \"{VOLUME}\"\n[builder.nix-options]\nmax-jobs = \"8\"\nfsync-metadata = \"false\"\n[[image]]\nname = \"{}\"\nexpression = \"default.nix\"\n",
        image_name(n)
    );
    // Rewritten only when different: the nix stage's key covers the files.
    for (file, text) in [("nixpack.toml", toml), ("default.nix", expression(n))] {
        if std::fs::read_to_string(dir.join(file)).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(dir.join(file), text).unwrap();
        }
    }
    eprintln!("scale: {n} paths: nix-build (reused when already built)…");
    let t = Instant::now();
    nixpack_build(&dir);
    eprintln!(
        "scale: {n} paths: first build {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let out_dir = dir.join(".nixpack").join(slug(n));
    let r = report(&dir, n);
    let builder = r["builder"].as_str().unwrap().to_owned();
    let result = r["result"].as_str().unwrap().to_owned();

    // describe, in the builder: the entrypoint's two commands, timed there.
    let script = format!(
        "set -eu; mkdir -p /out; t0=$(date +%s%N); paths=$(nix-store --query --requisites {result}); set -f; nix-store --dump-db $paths > /out/closure.db; t1=$(date +%s%N); echo $((t1 - t0)) > /out/ns"
    );
    let spec = nixpack::engine::RunSpec {
        image: &builder,
        cmd: vec!["-c".into(), script],
        entrypoint: Some(vec!["/bin/sh".into()]),
        env: vec![],
        volumes: vec![(VOLUME.to_owned(), "/nix".into())],
        uploads: vec![],
        labels: Default::default(),
        raw_stdout: false,
    };
    let got = tempfile::tempdir().unwrap();
    let mut inside = Vec::new();
    let (round_trip, ()) = timed(|| {
        let mut log = Vec::new();
        let code = rt
            .block_on(engine.run_to_completion(
                &spec,
                |l| log.push(l.to_owned()),
                Some(("/out", got.path())),
            ))
            .unwrap();
        assert_eq!(code, 0, "{}", log.join("\n"));
        let ns: f64 = std::fs::read_to_string(got.path().join("ns"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        inside.push(ns / 1e9);
    });
    let nix_store = median(inside);
    let db = std::fs::read_to_string(got.path().join("closure.db")).unwrap();
    let (parse, closure) = timed(|| Closure::from_nix(&result, "", &db).expect("the dump parses"));
    assert_eq!(closure.paths.len(), n + 1, "every path and the top");
    let (plan_s, plan) =
        timed(|| nixpack::layers::plan(&closure, nixpack::manifest::DEFAULT_LAYERS));
    let (picture, _) = timed(|| {
        (
            nixpack::picture::svg(&closure, &plan).len(),
            nixpack::picture::dot(&closure).len(),
        )
    });

    // A build after nix-build: the nix stage runs again (nix-build has
    // nothing to do; describe + parse), then layers and image from nothing.
    eprintln!("scale: {n} paths: cold layers");
    let mut builds = Vec::new();
    for _ in 0..repeat() {
        rt.block_on(remove_images(engine.docker(), n));
        let _ = std::fs::remove_dir_all(out_dir.join("layers"));
        for f in ["nix.key", "graph.svg", "graph.svg.key"] {
            let _ = std::fs::remove_file(out_dir.join(f));
        }
        let (wall, rss) = nixpack_build(&dir);
        let r = report(&dir, n);
        assert_eq!(r["store_paths"].as_u64(), Some(n as u64 + 1));
        builds.push((
            r["seconds"]["layers"].as_f64().unwrap(),
            r["seconds"]["nix"].as_f64().unwrap(),
            wall.as_secs_f64(),
            rss,
        ));
    }
    builds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (layers, nix_stage, build_wall, _) = builds[builds.len() / 2];
    Row {
        n,
        paths: closure.paths.len(),
        db_bytes: db.len(),
        nix_store,
        round_trip,
        parse,
        plan: plan_s,
        picture,
        layers,
        nix_stage,
        build_wall,
        rss_kib: builds.iter().map(|b| b.3).max().unwrap(),
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("NIXPACK_BENCH_SCALE_SIZES")
        .unwrap_or_else(|_| "2000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("sizes are numbers"))
        .collect();
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/scale");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = rt.block_on(nixpack::engine::Engine::connect()).unwrap();
    let rows: Vec<Row> = sizes
        .iter()
        .map(|n| measure(&rt, &engine, &root, *n))
        .collect();

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Closures of tiny paths (each on up to 4 earlier ones, a top path on all), builder nixpack-base:bookworm (Nix 2.8). Machine: {} cores. Medians of {}.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        repeat()
    );
    let _ = writeln!(
        md,
        "| paths | nix-store query + dump-db (in builder) | describe container round trip | Closure::from_nix | describe (in builder + parse) | layers::plan | describe + plan | target | picture (svg + dot) | layers stage (cold) | nix stage (no-op nix-build + describe) | nixpack build wall | peak RSS |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &rows {
        let describe = r.nix_store + r.parse;
        let target = if r.n <= 2000 { 2.0 } else { 5.0 };
        let _ = writeln!(
            md,
            "| {} ({} KiB dump) | {:.3} s | {:.2} s | {:.3} s | {:.3} s | {:.3} s | **{:.3} s** | ≤ {target:.0} s: {} | {:.3} s | {:.2} s | {:.2} s | {:.2} s | {:.1} MiB |",
            r.paths,
            r.db_bytes >> 10,
            r.nix_store,
            r.round_trip,
            r.parse,
            describe,
            r.plan,
            describe + r.plan,
            if describe + r.plan <= target { "met" } else { "MISSED" },
            r.picture,
            r.layers,
            r.nix_stage,
            r.build_wall,
            r.rss_kib as f64 / 1024.0
        );
    }
    print!("{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("scale.md"), &md).unwrap();

    if std::env::var_os("NIXPACK_BENCH_CLEAN").is_some() {
        for n in &sizes {
            rt.block_on(remove_images(engine.docker(), *n));
        }
        let _ = rt.block_on(engine.remove_volume(VOLUME));
    }
}
