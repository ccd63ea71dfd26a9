//! The sources benchmark (issue #10): how long `nixpack build` takes to
//! decide that a big project did not change.
//!
//! Makes a project of 20,000 sent files and 1 GiB in nested folders
//! (deterministic pseudo-random contents: 19,900 files of 1–63 KiB and
//! 100 of 4 MiB), plus a `data/` folder of 2,000 files that `.gitignore`
//! leaves out, every file's mtime an hour back (as for files not edited in
//! the last seconds). Then measures the walk and the sources key
//! ([`Sources::walk`] + [`Sources::fingerprint`], what the nix stage does
//! before deciding) and the tar stream:
//!
//! - **cold**: no `.nixpack/sources.json`, every file read (from the page
//!   cache: the tree was just written);
//! - **warm, no change**: the target is ≤ 0.3 s;
//! - **one file touched** (new mtime, same bytes): read again, same key;
//! - **one file edited**: read again, a new key;
//! - **tar**: the whole archive written to a counter, as to the engine.
//!
//! Run: `cargo bench --bench sources` (`NIXPACK_BENCH_DIR=/some/dir` to
//! keep the tree between runs).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use nixpack::sources::{Fingerprint, Sources, CACHE_FILE};

const FILES: usize = 20_000;
const BIG: usize = 100;
const BIG_SIZE: usize = 4 << 20;
const IGNORED: usize = 2_000;

/// xorshift64*: the same bytes on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn rel_path(i: usize) -> String {
    // 4 levels: 10 × 10 × 20 folders, 10 files each.
    format!(
        "src/m{}/p{}/q{}/f{i}.dat",
        i % 10,
        (i / 10) % 10,
        (i / 100) % 20
    )
}

fn make_tree(root: &Path) -> u64 {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let pool: Vec<u8> = (0..(8 << 20) / 8)
        .flat_map(|_| rng.next().to_le_bytes())
        .collect();
    let old = SystemTime::now() - Duration::from_secs(3600);
    let mut total = 0u64;
    let write = |rel: &str, size: usize, rng: &mut Rng| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let start = (rng.next() as usize) % (pool.len() - size);
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(rel.as_bytes()).unwrap();
        f.write_all(&pool[start..start + size - rel.len().min(size)])
            .unwrap();
        f.set_modified(old).unwrap();
        size as u64
    };
    for i in 0..FILES {
        let size = if i % (FILES / BIG) == 0 {
            BIG_SIZE
        } else {
            1024 + (rng.next() as usize) % (62 * 1024)
        };
        total += write(&rel_path(i), size, &mut rng);
    }
    for i in 0..IGNORED {
        write(&format!("data/d{}/x{i}.bin", i % 20), 64 * 1024, &mut rng);
    }
    std::fs::write(root.join(".gitignore"), "/data/\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(root.join(".gitignore"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    total
}

fn measure(root: &Path) -> (Duration, Fingerprint) {
    let t = Instant::now();
    let s = Sources::walk(root).unwrap();
    let walked = t.elapsed();
    let print = s
        .fingerprint(&root.join(".nixpack").join(CACHE_FILE))
        .unwrap();
    eprintln!(
        "  walk {:.3} s, fingerprint {:.3} s",
        walked.as_secs_f64(),
        (t.elapsed() - walked).as_secs_f64()
    );
    (t.elapsed(), print)
}

struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn row(what: &str, d: Duration, p: &Fingerprint) {
    println!(
        "| {what:<28} | {:>8.3} s | {:>6} | {:>6} | {}… |",
        d.as_secs_f64(),
        p.files,
        p.hashed,
        &p.key.0[..12]
    );
}

fn main() {
    let kept = std::env::var_os("NIXPACK_BENCH_DIR");
    let temp = tempfile::tempdir().unwrap();
    let root = kept
        .as_ref()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_owned());
    let t = Instant::now();
    let bytes = if root.join("src").is_dir() {
        0
    } else {
        make_tree(&root)
    };
    eprintln!(
        "tree: {FILES} sent files, {:.1} MiB, made in {:.1} s",
        bytes as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_file(root.join(".nixpack").join(CACHE_FILE));

    println!("| step                         |      time | files | read | key |");
    println!("|------------------------------|-----------|-------|------|-----|");
    let (d, cold) = measure(&root);
    row("cold (all read)", d, &cold);
    let mut warm = Vec::new();
    for _ in 0..5 {
        let (d, p) = measure(&root);
        assert_eq!(p.key, cold.key);
        assert_eq!(p.hashed, 0);
        warm.push(d);
        row("warm, no change", d, &p);
    }
    warm.sort();
    eprintln!(
        "warm, no change: median {:.3} s, worst {:.3} s (target 0.3 s)",
        warm[2].as_secs_f64(),
        warm[4].as_secs_f64()
    );

    let one = root.join(rel_path(FILES / 2 + 1));
    std::fs::File::options()
        .write(true)
        .open(&one)
        .unwrap()
        .set_modified(SystemTime::now())
        .unwrap();
    let (d, touched) = measure(&root);
    assert_eq!((touched.hashed, &touched.key), (1, &cold.key));
    row("one file touched", d, &touched);

    let mut bytes = std::fs::read(&one).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&one, &bytes).unwrap();
    let (d, edited) = measure(&root);
    assert_eq!(edited.hashed, 1);
    assert_ne!(edited.key, cold.key);
    row("one file edited", d, &edited);

    let t = Instant::now();
    let s = Sources::walk(&root).unwrap();
    let mut b = tar::Builder::new(Counter(0));
    s.write_tar(&mut b).unwrap();
    let sent = b.into_inner().unwrap().0;
    let d = t.elapsed();
    println!(
        "| tar stream                   | {:>8.3} s | {} MiB at {:.0} MiB/s |",
        d.as_secs_f64(),
        sent >> 20,
        sent as f64 / (1 << 20) as f64 / d.as_secs_f64()
    );
}
