use super::*;

fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

fn sent(dir: &Path) -> Vec<String> {
    Sources::walk(dir)
        .unwrap()
        .entries()
        .iter()
        .map(|e| e.rel.to_str().unwrap().to_owned())
        .collect()
}

fn cache(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join(".nixpack").join(CACHE_FILE)
}

fn fingerprint(dir: &tempfile::TempDir) -> Fingerprint {
    Sources::walk(dir.path())
        .unwrap()
        .fingerprint(&cache(dir))
        .unwrap()
}

/// Sets a file's mtime an hour back, so that its hash is not "racily
/// clean" and gets cached.
fn age(path: &Path) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

fn age_all(dir: &Path) {
    for e in Sources::walk(dir).unwrap().entries() {
        if matches!(e.kind, Kind::File { .. }) {
            age(&dir.join(&e.rel));
        }
    }
}

#[test]
fn decide_skips_nixpack_and_git_at_any_depth_and_the_lock_at_the_top() {
    let d = |p: &str, ty| decide(Path::new(p), ty, None);
    assert_eq!(d(".git", EntryType::Dir), Decision::Skip);
    assert_eq!(
        d(".git", EntryType::File),
        Decision::Skip,
        "a worktree's .git file"
    );
    assert_eq!(d("services/api/.nixpack", EntryType::Dir), Decision::Skip);
    assert_eq!(d("vendor/lib/.git", EntryType::Dir), Decision::Skip);
    assert_eq!(d("nixpack.lock", EntryType::File), Decision::Skip);
    assert_eq!(
        d("services/api/nixpack.lock", EntryType::File),
        Decision::Send
    );
    assert_eq!(d(".github", EntryType::Dir), Decision::Send);
    assert_eq!(d("target", EntryType::Dir), Decision::Send);
    assert_eq!(d("run/pipe", EntryType::Fifo), Decision::Warn);
    assert_eq!(d("app.sock", EntryType::Socket), Decision::Warn);
    assert_eq!(d("tty", EntryType::Device), Decision::Warn);
    let link = |t: &str| decide(Path::new("result"), EntryType::Symlink, Some(Path::new(t)));
    assert_eq!(link("/nix/store/abc-hello"), Decision::Skip);
    assert_eq!(link("../shared/lib.nix"), Decision::Send);
}

#[test]
fn gitignore_rules_apply_without_a_git_repository() {
    let dir = tree(&[
        (".gitignore", "*.log\n/dist/\n!keep.log\n"),
        ("default.nix", "{}"),
        ("app.log", "x"),
        ("keep.log", "x"),
        ("dist/bundle.js", "x"),
        ("src/dist/kept.js", "x"),
        ("src/.gitignore", "__pycache__/\n"),
        ("src/__pycache__/m.pyc", "x"),
        ("src/m.py", "x"),
        ("src/deep/trace.log", "x"),
        (".env.example", "hidden files are sent"),
        (".hidden/config", "x"),
    ]);
    assert_eq!(
        sent(dir.path()),
        [
            ".env.example",
            ".gitignore",
            ".hidden",
            ".hidden/config",
            "default.nix",
            "keep.log",
            "src",
            "src/.gitignore",
            // Folders are sent even when all they hold is ignored.
            "src/deep",
            "src/dist",
            "src/dist/kept.js",
            "src/m.py",
        ]
    );
}

#[test]
fn git_info_exclude_is_read_in_a_repository() {
    let dir = tree(&[
        (".git/info/exclude", "scratch/\n"),
        (".git/HEAD", "ref: refs/heads/main\n"),
        ("scratch/notes", "x"),
        ("default.nix", "{}"),
    ]);
    assert_eq!(sent(dir.path()), ["default.nix"]);
}

#[test]
fn nixpackignore_adds_rules_and_can_send_what_git_ignores() {
    let dir = tree(&[
        (".gitignore", "vendor/\n"),
        (".nixpackignore", "data/\n!vendor/\ndocs/*.pdf\n"),
        ("default.nix", "{}"),
        ("data/big.bin", "x"),
        ("vendor/lib.nix", "x"),
        ("docs/a.pdf", "x"),
        ("docs/a.md", "x"),
    ]);
    assert_eq!(
        sent(dir.path()),
        [
            ".gitignore",
            ".nixpackignore",
            "default.nix",
            "docs",
            "docs/a.md",
            "vendor",
            "vendor/lib.nix",
        ]
    );
}

#[test]
fn a_nested_projects_nixpack_folder_and_the_lock_are_not_sent() {
    let dir = tree(&[
        ("default.nix", "{}"),
        ("nixpack.lock", "x"),
        (".nixpack/img/closure.json", "x"),
        ("services/api/nixpack.toml", "x"),
        ("services/api/nixpack.lock", "x"),
        ("services/api/.nixpack/img/layers/a.tar", "x"),
        ("vendor/lib/.git/HEAD", "x"),
        ("vendor/lib/lib.nix", "x"),
    ]);
    assert_eq!(
        sent(dir.path()),
        [
            "default.nix",
            "services",
            "services/api",
            "services/api/nixpack.lock",
            "services/api/nixpack.toml",
            "vendor",
            "vendor/lib",
            "vendor/lib/lib.nix",
        ]
    );
}

#[test]
fn result_links_into_the_store_are_not_sent_other_links_are() {
    let dir = tree(&[("default.nix", "{}")]);
    std::os::unix::fs::symlink("/nix/store/abc-hello", dir.path().join("result")).unwrap();
    std::os::unix::fs::symlink("default.nix", dir.path().join("main.nix")).unwrap();
    let s = Sources::walk(dir.path()).unwrap();
    assert_eq!(
        s.entries()[1],
        Entry {
            rel: "main.nix".into(),
            kind: Kind::Symlink {
                target: "default.nix".into()
            }
        }
    );
    assert_eq!(s.entries().len(), 2);
}

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

#[test]
fn a_fifo_is_skipped_with_a_warning_never_opened() {
    let dir = tree(&[("default.nix", "{}"), ("run/keep", "x")]);
    mkfifo(&dir.path().join("run/pipe"));
    // Were it opened, the walk, the hashing or the tar would block here.
    let s = Sources::walk(dir.path()).unwrap();
    assert_eq!(
        s.skipped(),
        [Skipped {
            rel: "run/pipe".into(),
            ty: EntryType::Fifo
        }]
    );
    assert!(!s.contains(Path::new("run/pipe")));
    s.fingerprint(&cache(&dir)).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    s.write_tar(&mut b).unwrap();
    let w = warning(s.skipped()).unwrap();
    assert!(w.contains("run/pipe (FIFO)"), "{w}");
    assert!(w.contains(".nixpackignore"), "{w}");

    // Ignored, it is not mentioned.
    std::fs::write(dir.path().join(".nixpackignore"), "run/pipe\n").unwrap();
    assert!(Sources::walk(dir.path()).unwrap().skipped().is_empty());
}

#[test]
fn the_key_ignores_ignored_files_and_follows_sent_content() {
    let dir = tree(&[
        (".gitignore", "logs/\n"),
        ("default.nix", "{ }"),
        ("logs/x.log", "one"),
    ]);
    let first = fingerprint(&dir);
    std::fs::write(dir.path().join("logs/x.log"), "two, longer").unwrap();
    std::fs::write(dir.path().join("logs/y.log"), "new").unwrap();
    assert_eq!(fingerprint(&dir).key, first.key, "ignored files");

    std::fs::write(dir.path().join("default.nix"), "{ a = 1; }").unwrap();
    let edited = fingerprint(&dir);
    assert_ne!(edited.key, first.key, "an edited file");

    std::fs::write(dir.path().join("new.nix"), "").unwrap();
    assert_ne!(fingerprint(&dir).key, edited.key, "a new empty file");
}

#[test]
fn the_key_follows_the_execute_bit_and_link_targets() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tree(&[("run.sh", "echo"), ("a", ""), ("b", "")]);
    std::os::unix::fs::symlink("a", dir.path().join("l")).unwrap();
    let first = fingerprint(&dir);
    std::fs::set_permissions(
        dir.path().join("run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let exec = fingerprint(&dir);
    assert_ne!(exec.key, first.key);
    std::fs::set_permissions(
        dir.path().join("run.sh"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    assert_eq!(fingerprint(&dir).key, exec.key, "only x matters");
    std::fs::remove_file(dir.path().join("l")).unwrap();
    std::os::unix::fs::symlink("b", dir.path().join("l")).unwrap();
    assert_ne!(fingerprint(&dir).key, exec.key);
}

#[test]
fn an_unchanged_tree_reads_no_file_and_a_touched_file_keeps_the_key() {
    let dir = tree(&[("default.nix", "{ }"), ("src/a.py", "print(1)"), ("b", "b")]);
    age_all(dir.path());
    let cold = fingerprint(&dir);
    assert_eq!((cold.hashed, cold.files), (3, 3));
    let warm = fingerprint(&dir);
    assert_eq!((warm.hashed, warm.key.clone()), (0, cold.key.clone()));

    // `touch`: a new mtime, the same bytes: read once, same key.
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("src/a.py"))
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    let touched = fingerprint(&dir);
    assert_eq!((touched.hashed, touched.key), (1, cold.key));
}

#[test]
fn a_file_changed_just_now_is_not_cached() {
    let dir = tree(&[("default.nix", "{ }")]);
    fingerprint(&dir);
    // Modified within the racy window: read again, never trusted.
    assert_eq!(fingerprint(&dir).hashed, 1);
    age(&dir.path().join("default.nix"));
    fingerprint(&dir);
    assert_eq!(fingerprint(&dir).hashed, 0);
}

#[test]
fn a_damaged_cache_is_rebuilt() {
    let dir = tree(&[("default.nix", "{ }")]);
    age_all(dir.path());
    let first = fingerprint(&dir);
    std::fs::write(cache(&dir), "{ not json").unwrap();
    let again = fingerprint(&dir);
    assert_eq!((again.hashed, again.key), (1, first.key));
    assert_eq!(fingerprint(&dir).hashed, 0);
}

#[test]
fn reusable_needs_the_same_stamp_and_a_well_formed_hash() {
    let stamp = Stamp {
        len: 3,
        mtime: 10,
        ctime: 11,
        ino: 7,
        dev: 1,
        mode: 0o100644,
    };
    let cached = Cached {
        stamp,
        sha256: "ab".repeat(32),
    };
    assert_eq!(reusable(&cached, &stamp), Some([0xab; 32]));
    for other in [
        Stamp { len: 4, ..stamp },
        Stamp { mtime: 12, ..stamp },
        Stamp { ctime: 12, ..stamp },
        Stamp { ino: 8, ..stamp },
    ] {
        assert_eq!(reusable(&cached, &other), None);
    }
    let bad = Cached {
        sha256: "zz".repeat(32),
        ..cached
    };
    assert_eq!(reusable(&bad, &stamp), None);
    assert!(racy(&stamp, 10 + RACY_NS - 1));
    assert!(!racy(&stamp, 10 + RACY_NS));
}

/// The archive of the previous, in-memory `project_tar` (before issue #10),
/// kept here to pin that streaming changed no byte.
fn old_project_tar(root: &Path) -> Vec<u8> {
    fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(root.join(rel)).unwrap() {
            let entry = entry.unwrap();
            let child = rel.join(entry.file_name());
            out.push(child.clone());
            if entry.file_type().unwrap().is_dir() {
                collect(root, &child, out);
            }
        }
    }
    let mut files = Vec::new();
    collect(root, Path::new(""), &mut files);
    files.sort();
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    for dir in ["nixpack/", "nixpack/src/"] {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, dir, io::empty()).unwrap();
    }
    for rel in files {
        let full = root.join(&rel);
        let meta = std::fs::symlink_metadata(&full).unwrap();
        let name = Path::new("nixpack/src").join(&rel);
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        if meta.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o555);
            h.set_size(0);
            b.append_data(&mut h, &name, io::empty()).unwrap();
        } else if meta.file_type().is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            b.append_link(&mut h, &name, std::fs::read_link(&full).unwrap())
                .unwrap();
        } else {
            let exec = meta.mode() & 0o111 != 0;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(if exec { 0o555 } else { 0o444 });
            h.set_size(meta.len());
            b.append_data(&mut h, &name, std::fs::File::open(&full).unwrap())
                .unwrap();
        }
    }
    b.into_inner().unwrap()
}

fn streamed(root: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    Sources::walk(root).unwrap().write_tar(&mut b).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn the_streamed_tar_has_the_bytes_of_the_in_memory_one() {
    use std::os::unix::fs::PermissionsExt;
    let long = format!("deep/{}/file.nix", "x".repeat(120));
    let dir = tree(&[
        ("default.nix", "{ }"),
        ("src/b.py", "print(2)"),
        ("src/a.py", "print(1)"),
        ("bin/run", "#!/bin/sh\n"),
        (&long, "long names take a GNU record"),
        (".hidden", "h"),
    ]);
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    std::fs::set_permissions(
        dir.path().join("bin/run"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("../default.nix", dir.path().join("src/link.nix")).unwrap();
    let bytes = streamed(dir.path());
    assert_eq!(bytes, old_project_tar(dir.path()));
    assert_eq!(bytes, streamed(dir.path()), "deterministic");
}

#[test]
fn the_tar_is_the_same_whatever_the_files_times_and_owners_say() {
    let a = tree(&[("default.nix", "{ }"), ("src/a.py", "1")]);
    let b = tree(&[("src/a.py", "1"), ("default.nix", "{ }")]);
    age_all(b.path());
    assert_eq!(streamed(a.path()), streamed(b.path()));
}

#[test]
fn a_file_that_shrinks_while_sent_fails_the_archive() {
    // The header takes the size at open time; a reader that ends early
    // is reported, not padded into a corrupt archive.
    let mut exact = Exact {
        inner: io::Cursor::new(b"ab".to_vec()),
        left: 3,
        rel: Path::new("default.nix"),
    };
    let err = io::copy(&mut exact, &mut io::sink()).unwrap_err();
    assert!(err.to_string().contains("default.nix shrank"), "{err}");
}
