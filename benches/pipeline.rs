//! The pack + image benchmark (issue: layered, reproducible images).
//!
//! Builds a synthetic closure in the builder's store (default about 1 GiB,
//! a few hundred paths: one big shared base, fan-in libraries, leaves),
//! filled with slices of the builder base's own `/usr/lib` and `/usr/share`
//! files, so it compresses like real software (its gzip -6 ratio is
//! reported), then measures, side by side in one run:
//!
//! - **floor**: the Engine importing the closure as one uncompressed tar
//!   (`POST /images/create?fromSrc=-`, what `docker import` does);
//! - **engine alone**: `docker load` of as many one-file layers as the
//!   default plan makes, so only the per-layer cost counts;
//! - **original recipe**: `tar cz` of the closure in the builder, copied
//!   out, and a `FROM scratch` + `ADD closure.tar.gz /` Dockerfile build;
//! - **nixpack cold** (store already built, no layer or image cached),
//!   and **the engine loading the same layered archive, prepared
//!   beforehand** (nixpack's own engine archive of that image, written to
//!   a file with `nixpack::oci`, then `docker load` of the file): what
//!   nixpack's layers + image stages cost against the engine's own part;
//! - **no change**, **one leaf changed** and **the base changed**.
//!
//! Floor, cold and the prepared load run on the default engine (classic
//! image store) and, when `NIXPACK_BENCH_CONTAINERD_HOST` names a second
//! engine with the containerd image store (`unix:///…`), on that one too,
//! side by side (its store volume is its own, so the closure is built
//! there once more, untimed).
//!
//! Run: `cargo bench --bench pipeline` (`NIXPACK_BENCH_MIB=256` for a
//! smaller closure, `NIXPACK_BENCH_REPEAT` runs for the median rows,
//! `NIXPACK_BENCH_DIR=/some/dir` to keep the synthetic project and its
//! store volume for single runs; without it the volume is removed at the
//! end). Needs the offline builder base (scripts/make-builder-base).
//! Writes the table to stdout and to target/bench/pipeline.md.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use nixpack::closure::Closure;

const IMAGE: &str = "nixpack-bench/synthetic";
/// The benchmark's own store volume (on each engine).
const VOLUME: &str = "nixpack-bench-pipeline";

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
/// split unevenly (heavy tail).
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

/// Where in the corpus a node's bytes start: a function of its name and
/// seed, so a changed seed changes the bytes too (FNV-1a, then xorshift).
fn offset(name: &str, seed: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(seed.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    Rng(h | 1).next() >> 24
}

/// The Nix expression for the graph; `seeds` changes chosen nodes.
///
/// Each node's `data` is a slice of the corpus — every file under the
/// builder base's `/usr/lib` and `/usr/share`, in sorted order, end to end
/// (shared objects, Perl and Python modules, locale data, docs: what
/// closures are made of) — starting at the node's offset and wrapping
/// around. The corpus is a build input only: no output refers to it, so
/// it is not in the closure.
fn expression(nodes: &[Node], seeds: &[(&str, u32)]) -> String {
    let mut s = String::from(concat!(
        "let\n",
        "  corpus = builtins.derivation {\n",
        "    name = \"corpus\";\n",
        "    system = builtins.currentSystem;\n",
        "    builder = \"/bin/sh\";\n",
        "    args = [ \"-c\" \"/usr/bin/find /usr/lib /usr/share -type f -print0 | LC_ALL=C /usr/bin/sort -z | /usr/bin/xargs -0 /usr/bin/cat > $out\" ];\n",
        "  };\n",
        "  mk = name: size: offset: seed: deps: builtins.derivation {\n",
        "    inherit name seed;\n",
        "    system = builtins.currentSystem;\n",
        "    builder = \"/bin/sh\";\n",
        "    args = [ \"-c\" \"/bin/mkdir -p $out && { /usr/bin/tail -c +$(( ${toString offset} % $(/usr/bin/stat -c %s ${corpus}) + 1 )) ${corpus}; while /usr/bin/cat ${corpus}; do :; done; } | /usr/bin/head -c ${toString size} > $out/data && echo ${toString deps} > $out/refs\" ];\n",
        "  };\n",
    ));
    for n in nodes {
        let seed = seeds
            .iter()
            .find(|(name, _)| *name == n.name)
            .map_or(0, |(_, s)| *s);
        let deps: Vec<&str> = n.deps.iter().map(|d| nodes[*d].name.as_str()).collect();
        let _ = writeln!(
            s,
            "  {} = mk \"{}\" {} {} \"{seed}\" [ {} ];",
            n.name,
            n.name,
            n.bytes,
            offset(&n.name, seed),
            deps.join(" ")
        );
    }
    s.push_str("in result\n");
    s
}

/// `nixpack build` in `dir`, on the engine at `host` (`DOCKER_HOST`; the
/// default engine when `None`).
fn nixpack(dir: &Path, host: Option<&str>) -> Duration {
    let t = Instant::now();
    let verbose = std::env::var_os("NIXPACK_BENCH_VERBOSE").is_some();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nixpack"));
    cmd.args(["build"])
        .args(verbose.then_some("-v"))
        .current_dir(dir)
        .env("NO_COLOR", "1");
    if let Some(h) = host {
        cmd.env("DOCKER_HOST", h);
    }
    let out = cmd.output().expect("nixpack runs");
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

/// gzip -6 of the whole closure tar: (uncompressed bytes, gzip bytes).
fn gzip_ratio(tarball: &Path) -> (u64, u64) {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut gz = flate2::write::GzEncoder::new(Count(0), flate2::Compression::new(6));
    let read = std::io::copy(&mut std::fs::File::open(tarball).unwrap(), &mut gz).unwrap();
    (read, gz.finish().unwrap().0)
}

/// The image nixpack made in `dir`, written as the engine archive nixpack
/// streams (`nixpack::oci`, untagged, every layer in it) to `to`: the
/// config and manifest bytes it saved, the layer files found by their
/// DiffIDs (the `.diffid` files beside them). Returns the ids the engine
/// may give it (config digest, manifest digest).
fn prepared_archive(dir: &Path, to: &Path) -> (String, String) {
    use nixpack::oci::{Digest, Image, LayerBlob};
    let out = dir.join(".nixpack/nixpack-bench_synthetic");
    let config = std::fs::read(out.join("image-config.json")).unwrap();
    let manifest = std::fs::read(out.join("image-manifest.json")).unwrap();
    let by_diff_id: std::collections::HashMap<String, PathBuf> =
        std::fs::read_dir(out.join("layers"))
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let tar = name.strip_suffix(".diffid")?;
                let id = std::fs::read_to_string(e.path()).ok()?;
                Some((id, out.join("layers").join(tar)))
            })
            .collect();
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let (layers, files): (Vec<LayerBlob>, Vec<PathBuf>) = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let digest = l["digest"].as_str().unwrap().to_owned();
            let file = by_diff_id[&digest].clone();
            let size = l["size"].as_u64().unwrap();
            (
                LayerBlob::uncompressed(nixpack::archive::DiffId(digest), size),
                file,
            )
        })
        .unzip();
    let image = Image {
        config_digest: Digest::of(&config),
        manifest_digest: Digest::of(&manifest),
        config,
        manifest,
        layers,
    };
    let mut tar = tar::Builder::new(std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(to).unwrap(),
    ));
    nixpack::oci::write_engine_archive(&mut tar, &image, &files, &[]).unwrap();
    tar.into_inner()
        .unwrap()
        .into_inner()
        .unwrap()
        .sync_all()
        .unwrap();
    (
        image.config_digest.to_string(),
        image.manifest_digest.to_string(),
    )
}

/// `docker load` of the archive file `path` (`POST /images/load`, the
/// file streamed from disk), with no bench image in the engine before.
async fn load_prepared(docker: &bollard::Docker, path: &Path, ids: &(String, String)) -> Duration {
    remove_bench_images(docker).await;
    let docker = docker.clone().with_timeout(Duration::from_secs(3600));
    let t = Instant::now();
    let file = tokio::fs::File::open(path).await.unwrap();
    let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
    let opts = bollard::query_parameters::ImportImageOptionsBuilder::default()
        .quiet(true)
        .build();
    let mut s = docker.import_image(opts, bollard::body_try_stream(body), None);
    let mut loaded = None;
    while let Some(r) = s.next().await {
        let info = r.expect("the prepared archive loads");
        assert!(info.error_detail.is_none(), "load failed: {info:?}");
        if let Some(id) = info
            .stream
            .as_deref()
            .and_then(|t| t.trim().strip_prefix("Loaded image ID: "))
        {
            loaded = Some(id.to_owned());
        }
    }
    let elapsed = t.elapsed();
    let loaded = loaded.expect("the engine names the loaded image");
    assert!(
        loaded == ids.0 || loaded == ids.1,
        "loaded {loaded}, not nixpack's image {ids:?}"
    );
    remove_bench_images(&docker).await;
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

/// One engine's cold runs: each after removing every bench image and the
/// layer tarballs. Returns the median run (wall, layers s, image s) and
/// all walls.
fn cold_runs(
    rt: &tokio::runtime::Runtime,
    docker: &bollard::Docker,
    dir: &Path,
    host: Option<&str>,
) -> ((f64, f64, f64), Vec<f64>) {
    let layer_dir = dir.join(".nixpack/nixpack-bench_synthetic/layers");
    let mut colds = Vec::new();
    for _ in 0..repeat() {
        rt.block_on(remove_bench_images(docker));
        let _ = std::fs::remove_dir_all(&layer_dir);
        let wall = nixpack(dir, host).as_secs_f64();
        colds.push((
            wall,
            report_seconds(dir, "layers"),
            report_seconds(dir, "image"),
        ));
    }
    let walls = colds.iter().map(|c| c.0).collect();
    colds.sort_by(|a, b| a.0.total_cmp(&b.0));
    (colds[colds.len() / 2], walls)
}

/// The engine's load of nixpack's own archive of the image in `dir`,
/// written to a file first (untimed): median of REPEAT loads.
fn prepared_loads(
    rt: &tokio::runtime::Runtime,
    docker: &bollard::Docker,
    dir: &Path,
    work: &Path,
) -> f64 {
    let file = work.join("prepared.tar");
    let ids = prepared_archive(dir, &file);
    let secs = median(
        (0..repeat())
            .map(|_| {
                rt.block_on(load_prepared(docker, &file, &ids))
                    .as_secs_f64()
            })
            .collect(),
    );
    let _ = std::fs::remove_file(&file);
    secs
}

/// The project: nixpack.toml and default.nix in `dir`.
fn project(dir: &Path, nodes: &[Node]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("nixpack.toml"), format!("[project]\nname = \"bench\"\n[builder]\nfrom = \"nixpack-base:bookworm\"\nstore-volume = \"{VOLUME}\"\n[[image]]\nname = \"{IMAGE}\"\nexpression = \"default.nix\"\n")).unwrap();
    std::fs::write(dir.join("default.nix"), expression(nodes, &[])).unwrap();
}

/// One row: per engine (classic, containerd) seconds, if measured.
struct Row {
    name: String,
    secs: [Option<f64>; 2],
    note: String,
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
    let kept = std::env::var_os("NIXPACK_BENCH_DIR").map(PathBuf::from);
    let dir = kept.clone().unwrap_or_else(|| work.path().join("project"));
    project(&dir, &nodes);
    let containerd_host = std::env::var("NIXPACK_BENCH_CONTAINERD_HOST")
        .ok()
        .filter(|h| !h.is_empty());
    eprintln!(
        "bench: building the synthetic closure ({mib} MiB, {} paths) in the store…",
        nodes.len()
    );
    nixpack(&dir, None);
    let base_closure = closure(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = rt.block_on(nixpack::engine::Engine::connect()).unwrap();
    let docker = engine.docker().clone();
    let containerd = containerd_host.as_deref().map(|h| {
        rt.block_on(
            bollard::Docker::connect_with_host(h)
                .unwrap()
                .negotiate_version(),
        )
        .unwrap()
    });
    let mut rows: Vec<Row> = Vec::new();

    eprintln!("bench: floor");
    let tarball = work.path().join("closure.tar");
    whole_closure_tar(&dir, &tarball);
    let t = Instant::now();
    let (tar_bytes, gz_bytes) = gzip_ratio(&tarball);
    let gzip_secs = t.elapsed().as_secs_f64();
    // Medians of REPEAT runs: a VM's disk makes single runs noisy.
    let floor_on = |docker: &bollard::Docker| {
        median(
            (0..repeat())
                .map(|_| rt.block_on(floor(docker, &tarball)).as_secs_f64())
                .collect(),
        )
    };
    let floor = floor_on(&docker);
    let floor_cd = containerd.as_ref().map(floor_on);
    let _ = std::fs::remove_file(&tarball);
    rows.push(Row {
        name: format!(
            "floor: engine imports one uncompressed tar, median of {}",
            repeat()
        ),
        secs: [Some(floor), floor_cd],
        note: String::new(),
    });

    eprintln!("bench: the engine's cost per layer");
    let count = usize::from(nixpack::manifest::DEFAULT_LAYERS) + 1;
    let per_layer = median(
        (0..repeat())
            .map(|_| rt.block_on(empty_layers(&engine, count)).as_secs_f64())
            .collect(),
    );
    rows.push(Row {
        name: format!(
            "engine alone: docker load of {count} one-file layers (the default layer count), median of {}",
            repeat()
        ),
        secs: [Some(per_layer), None],
        note: format!("{:.0} ms per layer", per_layer * 1000.0 / count as f64),
    });

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
    rows.push(Row {
        name: "original recipe: tar cz + ADD".into(),
        secs: [Some(original), None],
        note: String::new(),
    });

    eprintln!("bench: nixpack cold");
    let ((cold, layers_s, image_s), walls) = cold_runs(&rt, &docker, &dir, None);
    let pack = layers_s + image_s;
    eprintln!("bench: the engine loading the prepared archive");
    let prepared = prepared_loads(&rt, &docker, &dir, work.path());

    // The same on the containerd image store: its own project folder (the
    // nix stage's key names the store, which is another volume there).
    let mut cd = None;
    if let (Some(host), Some(docker_cd)) = (containerd_host.as_deref(), containerd.as_ref()) {
        let dir_cd = PathBuf::from(format!("{}-containerd", dir.display()));
        project(&dir_cd, &nodes);
        eprintln!("bench: containerd store: building the closure in its store (untimed)…");
        nixpack(&dir_cd, Some(host));
        eprintln!("bench: containerd store: nixpack cold");
        let (median_run, walls) = cold_runs(&rt, docker_cd, &dir_cd, Some(host));
        eprintln!("bench: containerd store: the engine loading the prepared archive");
        let prepared = prepared_loads(&rt, docker_cd, &dir_cd, work.path());
        cd = Some((median_run, walls, prepared, dir_cd));
    }
    let runs = |walls: &[f64]| {
        walls
            .iter()
            .map(|w| format!("{w:.1}s"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    rows.push(Row {
        name: format!(
            "nixpack cold (store built; no layers, no image), median of {}",
            walls.len()
        ),
        secs: [Some(cold), cd.as_ref().map(|c| c.0 .0)],
        note: format!(
            "classic: layers {layers_s:.1}s + image {image_s:.1}s, all runs {}{}",
            runs(&walls),
            cd.as_ref().map_or(String::new(), |c| format!(
                "; containerd: layers {:.1}s + image {:.1}s, all runs {}",
                c.0 .1,
                c.0 .2,
                runs(&c.1)
            ))
        ),
    });
    rows.push(Row {
        name: format!(
            "the engine loads the same layered archive, prepared beforehand (docker load of a file), median of {}",
            repeat()
        ),
        secs: [Some(prepared), cd.as_ref().map(|c| c.2)],
        note: String::new(),
    });

    eprintln!("bench: nixpack, nothing changed");
    // The prepared loads removed the image: put it back (untimed) first.
    nixpack(&dir, None);
    let same = nixpack(&dir, None).as_secs_f64();
    rows.push(Row {
        name: "nixpack, nothing changed".into(),
        secs: [Some(same), None],
        note: String::new(),
    });

    let mut changed = |what: &str, seeds: &[(&str, u32)]| {
        eprintln!("bench: nixpack, {what} changed");
        let before_files = layer_files(&dir);
        let before = closure(&dir);
        std::fs::write(dir.join("default.nix"), expression(&nodes, seeds)).unwrap();
        let total = nixpack(&dir, None).as_secs_f64();
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
        rows.push(Row {
            name: format!("nixpack, {what} changed"),
            secs: [Some(total), None],
            note: format!(
                "nix-build {nix:.1}s; layers re-created {} MiB / store paths changed {} MiB = {ratio:.2} (popularity plan: {})",
                recreated >> 20,
                changed_bytes >> 20,
                baseline.map_or("-".to_owned(), |b| format!("{b:.2}"))
            ),
        });
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
        "Closure: {mib} MiB in {} store paths, slices of the builder base's /usr/lib and /usr/share files: gzip -6 of the whole closure tar is {} MiB of {} MiB, ratio {:.2} ({:.1} s in flate2). Machine: {} cores.\n",
        base_closure.paths.len(),
        gz_bytes >> 20,
        tar_bytes >> 20,
        tar_bytes as f64 / gz_bytes as f64,
        gzip_secs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        md,
        "| run | classic store (default engine) | × floor | containerd store ({}) | × floor | notes |\n|---|---:|---:|---:|---:|---|",
        containerd_host.as_deref().unwrap_or("not measured")
    );
    let floors = [Some(floor), floor_cd];
    for r in &rows {
        let cell = |i: usize| match (r.secs[i], floors[i]) {
            (Some(s), Some(f)) => (format!("{s:.2} s"), format!("{:.2}", s / f)),
            (Some(s), None) => (format!("{s:.2} s"), "-".into()),
            _ => ("-".into(), "-".into()),
        };
        let (a, af) = cell(0);
        let (b, bf) = cell(1);
        let _ = writeln!(md, "| {} | {a} | {af} | {b} | {bf} | {} |", r.name, r.note);
    }
    let _ = writeln!(md, "\nclassic: nixpack cold layers+image = {pack:.2} s = {:.2} × floor; ÷ prepared-archive load {prepared:.2} s = **{:.2}** (target ≤ 1.15: {}).", pack / floor, pack / prepared, if pack / prepared <= 1.15 { "met" } else { "missed" });
    if let Some(((_, l, i), _, p, _)) = &cd {
        let pack_cd = l + i;
        let _ = writeln!(md, "containerd: nixpack cold layers+image = {pack_cd:.2} s = {:.2} × floor; ÷ prepared-archive load {p:.2} s = **{:.2}** (target ≤ 1.15: {}).", pack_cd / floor_cd.unwrap_or(f64::NAN), pack_cd / p, if pack_cd / p <= 1.15 { "met" } else { "missed" });
    }
    let _ = writeln!(md, "original recipe / nixpack cold = {:.1}×; leaf change ratio = {leaf_ratio:.2}; no-change rebuild = {same:.2} s.", original / cold);
    print!("{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("pipeline.md"), &md).unwrap();
    rt.block_on(remove_bench_images(&docker));
    if let Some(d) = &containerd {
        rt.block_on(remove_bench_images(d));
    }
    // Without NIXPACK_BENCH_DIR nothing is kept: the store volumes go too.
    if kept.is_none() {
        // The store volume and its `.seeded` marker.
        for v in [VOLUME.to_owned(), format!("{VOLUME}.seeded")] {
            let _ = rt.block_on(engine.remove_volume(&v));
            if let Some(d) = &containerd {
                let _ = rt.block_on(
                    d.remove_volume(&v, None::<bollard::query_parameters::RemoveVolumeOptions>),
                );
            }
        }
    }
}
