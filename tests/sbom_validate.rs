//! The SBOMs nixpack writes, checked by the formats' own validators: the
//! CycloneDX 1.5 JSON schema (cyclonedx-python-lib's strict validator)
//! and the SPDX tools (`pyspdxtools -i`). Both live in a venv that
//! `scripts/sbom-validators` makes (`scripts/test` runs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use nixpack::closure::Closure;
use nixpack::sbom;

fn venv() -> PathBuf {
    let venv = std::env::var_os("NIXPACK_SBOM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/nixpack-test/sbom-venv"));
    assert!(
        venv.join("bin/pyspdxtools").is_file() && venv.join("bin/python").is_file(),
        "the SBOM validators are missing from {}: run scripts/sbom-validators",
        venv.display()
    );
    venv
}

/// Runs both validators on the SBOMs of `closure`; panics with what they said.
fn validate(what: &str, closure: &Closure) {
    let venv = venv();
    let dir = tempfile::tempdir().unwrap();
    let cdx = dir.path().join(sbom::CYCLONEDX_FILE);
    let spdx = dir.path().join(sbom::SPDX_FILE);
    std::fs::write(&cdx, sbom::cyclonedx(closure, 1_700_000_000)).unwrap();
    std::fs::write(&spdx, sbom::spdx(closure, 1_700_000_000)).unwrap();

    let snippet = "import sys\n\
        from cyclonedx.schema import SchemaVersion\n\
        from cyclonedx.validation.json import JsonStrictValidator\n\
        error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())\n\
        if error is not None:\n    print(error)\n    sys.exit(1)\n\
        print('valid CycloneDX 1.5')\n";
    check(
        &format!("{what}: CycloneDX 1.5 validator"),
        Command::new(venv.join("bin/python"))
            .args(["-c", snippet])
            .arg(&cdx),
    );
    check(
        &format!("{what}: pyspdxtools"),
        Command::new(venv.join("bin/pyspdxtools"))
            .arg("-i")
            .arg(&spdx),
    );
}

fn check(what: &str, cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} refused the SBOM ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_golden_closure_sboms_pass_both_validators() {
    let golden = include_str!("golden/python-closure.json");
    validate("golden closure", &Closure::from_json(golden).unwrap());
}

/// A closure of `n` paths shaped like a real one: a base, libraries on it
/// and on each other, a result on every leaf; names with and without
/// versions and every character a store path name may hold.
fn synthetic(n: usize) -> Closure {
    const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let hash_part = |i: usize| -> String {
        let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555;
        (0..32)
            .map(|_| {
                let c = NIX32[(x % 32) as usize] as char;
                x = x.rotate_right(5) ^ (i as u64);
                c
            })
            .collect()
    };
    let names = [
        "glibc-2.36",
        "python3-3.11.2",
        "openssl-3.0.8-bin",
        "source",
        "hook",
        "perl5.36.0-DBI-1.643",
        "gcc-12.2.0-lib",
        "libc++-15.0.7",
        "a_b?c=d-1.0",
        "x-.1",
    ];
    let path = |i: usize| format!("/nix/store/{}-{}{i}", hash_part(i), names[i % names.len()]);
    let mut paths = Vec::new();
    for i in 0..n - 1 {
        let mut refs = vec![path(0)];
        if i > 1 {
            refs.push(path(1 + i * 7 % (i - 1)));
            refs.push(path(i / 2));
        }
        refs.push(path(i)); // a self-reference, as Nix records many
        refs.sort();
        refs.dedup();
        paths.push(serde_json::json!({
            "path": path(i),
            "nar_hash": format!("sha256:{:064x}", i * 7919 + 1),
            "nar_size": 4096 * (1 + i % 97),
            "references": refs,
            "deriver": (i % 3 == 0).then(|| format!("/nix/store/{}-x{i}.drv", hash_part(i + 100_000))),
        }));
    }
    let result = format!("/nix/store/{}-app", hash_part(n));
    paths.push(serde_json::json!({
        "path": result,
        "nar_hash": format!("sha256:{:064x}", 42),
        "nar_size": 4096,
        "references": (n / 2..n - 1).map(path).collect::<Vec<_>>(),
    }));
    let text = serde_json::json!({"result": result, "result_dirs": ["bin"], "paths": paths});
    let c = Closure::from_json(&text.to_string()).unwrap();
    assert_eq!(c.paths.len(), n, "no two generated paths collide");
    c
}

#[test]
fn a_300_path_closure_sboms_pass_both_validators() {
    validate("300-path synthetic closure", &synthetic(300));
}

#[test]
fn the_validators_refuse_a_broken_sbom() {
    // The check is only worth something if it can fail.
    let venv = venv();
    let dir = tempfile::tempdir().unwrap();
    let golden = Closure::from_json(include_str!("golden/python-closure.json")).unwrap();
    let broken = sbom::spdx(&golden, 1).replace("\"SHA256\"", "\"SHA-256-ish\"");
    let file = Path::new(dir.path()).join("broken.spdx.json");
    std::fs::write(&file, broken).unwrap();
    let out = Command::new(venv.join("bin/pyspdxtools"))
        .arg("-i")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success(), "pyspdxtools took a broken SPDX file");
}
