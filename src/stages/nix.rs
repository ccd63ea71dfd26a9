//! Stage `nix`: nix-build in the builder, and a description of the result.
//!
//! Reads the project's files ([`crate::sources`]: what git would commit,
//! streamed read-only through the archive API) and the image's
//! `expression`/`attr`; writes `closure.json` (parsed from Nix's own
//! output), `graph.dot` and `build.log` into `.nixpack/<image>/`.
//! The key covers the builder image, the sources' key (paths, modes,
//! content hashes; no file is read when none changed) and the image's Nix
//! inputs; an unchanged key with a valid closure.json starts nothing.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::runner::Backend;
use super::{key, Ctx};
use crate::closure::Closure;
use crate::error::Error;
use crate::manifest::{Image, Nixpkgs};
use crate::sources::{Sources, SourcesKey};

/// The project's files, walked and keyed once per build for every image.
pub struct ProjectSources {
    /// What is sent.
    pub sources: Arc<Sources>,
    /// Their key.
    pub key: SourcesKey,
}

/// Walks the project and computes its sources' key (reading only files
/// changed since the last build), on a blocking thread; warns about
/// special files left out.
pub async fn sources(ctx: &Ctx<'_>) -> Result<ProjectSources, Error> {
    let root = ctx.manifest.root.clone();
    let cache = crate::outputs::project_dir(ctx.manifest).join(crate::sources::CACHE_FILE);
    let (sources, print) = tokio::task::spawn_blocking(move || {
        let sources = Sources::walk(&root)?;
        let print = sources.fingerprint(&cache)?;
        Ok::<_, std::io::Error>((sources, print))
    })
    .await
    .map_err(|e| Error::internal("reading the project's files", e))?
    .map_err(|e| Error::internal("reading the project's files", e))?;
    if let Some(w) = crate::sources::warning(sources.skipped()) {
        ctx.ui.warn(&w);
    }
    if ctx.ui.verbose() > 0 {
        ctx.ui.log(&format!(
            "sources: {} files, {} read (the others unchanged since the last build)",
            print.files, print.hashed
        ));
    }
    Ok(ProjectSources {
        sources: Arc::new(sources),
        key: print.key,
    })
}

/// Runs nix-build for `image` unless its key is unchanged; returns the
/// closure and whether work was done.
pub async fn run(
    ctx: &Ctx<'_>,
    backend: &Backend,
    project: &ProjectSources,
    image: &Image,
    dir: &Path,
) -> Result<(Closure, bool), Error> {
    if !project.sources.contains(Path::new(&image.expression)) {
        return Err(Error::msg(
            format!(
                "the expression `{}` of image `{}` is not sent to the builder: a .gitignore or {} leaves it out",
                image.expression,
                image.name,
                crate::sources::IGNORE_FILE
            ),
            format!(
                "add `!{}` to {} (it wins over .gitignore), or remove the rule that ignores it",
                image.expression,
                crate::sources::IGNORE_FILE
            ),
        ));
    }
    let env = environment(ctx, image);
    let env_bytes = env.join("\n");
    // The store is part of the key: a volume removed and made again no
    // longer holds the closure, however unchanged the project is.
    let key = key(&[
        backend.key_part().as_bytes(),
        project.key.0.as_bytes(),
        env_bytes.as_bytes(),
    ]);
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
    let ui = ctx.ui.clone();
    let many = ctx.manifest.images.len() > 1;
    let out = crate::outputs::temp_dir(dir)
        .map_err(|e| Error::internal("creating a download folder", e))?;
    let code = backend
        .build(
            ctx,
            &name,
            dir,
            env,
            &project.sources,
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
            out.path(),
        )
        .await?;
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
