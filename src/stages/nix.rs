//! Stage `nix`: nix-build in the builder, and a description of the result.
//!
//! Reads the project's files (sent read-only through the archive API) and
//! the image's `expression`/`attr`; writes `closure.json` (parsed from
//! Nix's own output), `graph.dot` and `build.log` into `.nixpack/<image>/`.
//! The key covers the builder image, every project file and the image's
//! Nix inputs; an unchanged key with a valid closure.json starts nothing.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::builder::BuilderImage;
use super::{key, Ctx};
use crate::closure::Closure;
use crate::engine::RunSpec;
use crate::error::Error;
use crate::manifest::{Image, Nixpkgs};

/// Runs nix-build for `image` unless its key is unchanged; returns the
/// closure and whether work was done.
pub async fn run(
    ctx: &Ctx<'_>,
    builder: &BuilderImage,
    store: &super::store::Store,
    image: &Image,
    dir: &Path,
) -> Result<(Closure, bool), Error> {
    let project = project_tar(&ctx.manifest.root)
        .map_err(|e| Error::internal("packing the project for the builder", e))?;
    let env = environment(ctx, image);
    let env_bytes = env.join("\n");
    // The store is part of the key: a volume removed and made again no
    // longer holds the closure, however unchanged the project is.
    let store_id = format!("{}@{}", store.name, store.created_at);
    let key = key(&[
        builder.id.as_bytes(),
        store_id.as_bytes(),
        &project,
        env_bytes.as_bytes(),
    ]);
    let volume = store.name.as_str();
    let key_file = dir.join("nix.key");
    if std::fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str()) {
        if let Some(Ok(closure)) = crate::outputs::read_closure(dir) {
            return Ok((closure, false));
        }
    }

    let name = image.name.to_string();
    let stage = ctx.ui.stage(&name, "nix-build");
    std::fs::create_dir_all(dir).map_err(|e| Error::internal("creating the output folder", e))?;
    let log_path = dir.join("build.log");
    let mut log =
        std::fs::File::create(&log_path).map_err(|e| Error::internal("creating build.log", e))?;
    let mut tail: Vec<String> = Vec::new();
    let spec = RunSpec {
        image: &builder.id,
        cmd: vec!["build".into()],
        entrypoint: None,
        env,
        volumes: vec![(volume.to_owned(), "/nix".into())],
        uploads: vec![project],
        labels: HashMap::from([
            ("dev.nixpack.stage".to_owned(), "nix".to_owned()),
            ("dev.nixpack.image".to_owned(), name.clone()),
        ]),
        binds: vec![],
        raw_stdout: false,
    };
    let ui = ctx.ui.clone();
    let many = ctx.manifest.images.len() > 1;
    let out = crate::outputs::temp_dir(dir)
        .map_err(|e| Error::internal("creating a download folder", e))?;
    let code = ctx
        .engine
        .run_to_completion(
            &spec,
            |line| {
                let _ = writeln!(log, "{line}");
                stage.message(line);
                if many {
                    ui.log(&format!("{name} | {line}"));
                } else {
                    ui.log(line);
                }
                tail.push(line.to_owned());
                if tail.len() > 15 {
                    tail.remove(0);
                }
            },
            Some(("/nixpack/out", out.path())),
        )
        .await
        .map_err(Error::user)?;
    if code != 0 {
        return Err(Error::msg(
            format!(
                "nix-build failed for image `{name}` (exit {code}); the last lines of its log:\n{}",
                indent(&tail)
            ),
            format!(
                "the whole log is in {}; no image was tagged{}",
                log_path.display(),
                super::entrypoint_note(ctx)
            ),
        ));
    }
    // What Nix said of the closure, parsed here; outputs are replaced only
    // after a successful build.
    let read = |f: &str| {
        std::fs::read_to_string(out.path().join(f)).map_err(|e| {
            Error::internal(
                "reading the closure from the builder",
                format!("{f}: {e}{}", super::entrypoint_note(ctx)),
            )
        })
    };
    let closure = Closure::from_nix(
        &read("result")?,
        &read("result-dirs")?,
        &read("closure.db")?,
    )
    .map_err(|e| Error::internal("reading the closure from the builder", e))?;
    for (file, text) in [
        ("closure.json", closure.to_json()),
        ("graph.dot", crate::picture::dot(&closure)),
    ] {
        crate::outputs::write_atomic(&dir.join(file), text.as_bytes())
            .map_err(|e| Error::internal(&format!("writing {file}"), e))?;
    }
    crate::outputs::write_atomic(&key_file, key.as_bytes())
        .map_err(|e| Error::internal("writing nix.key", e))?;
    stage.done(&format!(
        "{} ({} store paths, {})",
        closure.result,
        closure.paths.len(),
        human_bytes(closure.nar_size())
    ));
    Ok((closure, true))
}

fn environment(ctx: &Ctx<'_>, image: &Image) -> Vec<String> {
    let mut env = vec![
        "NIXPACK_SRC=/nixpack/src".to_owned(),
        "NIXPACK_OUT=/nixpack/out".to_owned(),
        format!("NIXPACK_EXPRESSION={}", image.expression),
    ];
    if let Some(a) = &image.attr {
        env.push(format!("NIXPACK_ATTR={a}"));
    }
    match &ctx.manifest.nixpkgs {
        Some(Nixpkgs::Tarball { url, sha256 }) => {
            env.push(format!("NIXPACK_NIXPKGS_URL={url}"));
            env.push(format!("NIXPACK_NIXPKGS_SHA256={sha256}"));
        }
        Some(Nixpkgs::Path(p)) => env.push(format!("NIXPACK_NIXPKGS_PATH={}", p.display())),
        None => {}
    }
    env
}

fn indent(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `12.3 MiB`.
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// The project as a deterministic tar under `nixpack/src/`: sorted, fixed
/// owner and mtime, files read-only. Its bytes are also the stage key's
/// input, so any edit to any file means a new nix-build.
pub fn project_tar(root: &Path) -> std::io::Result<Vec<u8>> {
    let mut files = Vec::new();
    collect(root, Path::new(""), &mut files)?;
    files.sort();
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    for dir in ["nixpack/", "nixpack/src/"] {
        let mut h = dir_header();
        b.append_data(&mut h, dir, std::io::empty())?;
    }
    for rel in files {
        let full = root.join(&rel);
        let meta = match std::fs::symlink_metadata(&full) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            meta => meta?,
        };
        let name = Path::new("nixpack/src").join(&rel);
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        if meta.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o555);
            h.set_size(0);
            b.append_data(&mut h, &name, std::io::empty())?;
        } else if meta.file_type().is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            b.append_link(&mut h, &name, std::fs::read_link(&full)?)?;
        } else {
            use std::os::unix::fs::PermissionsExt;
            let exec = meta.permissions().mode() & 0o111 != 0;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(if exec { 0o555 } else { 0o444 });
            h.set_size(meta.len());
            b.append_data(&mut h, &name, std::fs::File::open(&full)?)?;
        }
    }
    b.into_inner()
}

fn dir_header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    h.set_size(0);
    h
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry.file_name();
        let child = rel.join(&name);
        // A file another process renames away while we walk (a lock file
        // being replaced) was never part of the project.
        let ft = match entry.file_type() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            ft => ft?,
        };

        if rel.as_os_str().is_empty() && crate::manifest::NOT_SENT.iter().any(|s| name == *s) {
            continue;
        }
        // `result` links from a local nix-build point into a store the
        // builder does not share.
        if ft.is_symlink()
            && std::fs::read_link(entry.path()).is_ok_and(|t| t.starts_with("/nix/store"))
        {
            continue;
        }
        out.push(child.clone());
        if ft.is_dir() {
            collect(root, &child, out)?;
        }
    }
    Ok(())
}
