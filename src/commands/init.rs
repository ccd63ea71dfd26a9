//! `nixpack init [DIR]`: a working nixpack.toml and example expression.
//! Like `cargo init`, it never overwrites: an existing manifest is an error.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::InitArgs;
use crate::error::Error;
use crate::manifest::MANIFEST_NAME;

const MANIFEST_TEMPLATE: &str = include_str!("../../templates/init/nixpack.toml.hbs");
const EXPRESSION: &str = include_str!("../../templates/init/default.nix");
const IGNORE_LINE: &str = ".nixpack/";

/// What `init` wrote, for the message printed afterwards.
#[derive(Debug)]
pub struct Created {
    /// The manifest path.
    pub manifest: PathBuf,
    /// Whether `default.nix` was written (kept when it existed).
    pub wrote_expression: bool,
}

#[derive(Serialize)]
struct InitContext<'a> {
    name: &'a str,
    image: String,
}

/// Runs `nixpack init`.
pub fn run(args: &InitArgs) -> Result<Created, Error> {
    let dir = &args.dir;
    let manifest = dir.join(MANIFEST_NAME);
    if manifest.exists() {
        return Err(Error::msg(
            format!("`{}` already exists", manifest.display()),
            "nixpack init never overwrites a manifest; edit it, or remove it first to start over",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let folder_name = std::path::absolute(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "app".to_owned());
    let name = args.name.clone().unwrap_or(folder_name);
    if name.trim().is_empty() || name.chars().any(char::is_control) {
        return Err(Error::msg(
            format!("`{}` is not a usable project name", name.escape_debug()),
            "pass `--name NAME` with a name on one line",
        ));
    }

    let mut hb = handlebars::Handlebars::new();
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper(
        "quote",
        Box::new(
            |h: &handlebars::Helper,
             _: &handlebars::Handlebars,
             _: &handlebars::Context,
             _: &mut handlebars::RenderContext,
             out: &mut dyn handlebars::Output| {
                let v = h
                    .param(0)
                    .and_then(|p| p.value().as_str())
                    .unwrap_or_default();
                // A TOML basic string is a JSON string for the characters we allow.
                out.write(&serde_json::to_string(v).expect("strings serialize"))?;
                Ok(())
            },
        ),
    );
    let text = hb
        .render_template(
            MANIFEST_TEMPLATE,
            &InitContext {
                name: &name,
                image: image_name(&name),
            },
        )
        .map_err(|e| Error::internal("rendering the init template", e))?;

    // `create_new`: if something appeared meanwhile, refuse rather than clobber.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&manifest)
        .map_err(|e| io(&manifest, e))?;
    f.write_all(text.as_bytes()).map_err(|e| io(&manifest, e))?;

    let expr = dir.join("default.nix");
    let wrote_expression = !expr.exists();
    if wrote_expression {
        std::fs::write(&expr, EXPRESSION).map_err(|e| io(&expr, e))?;
    }
    ignore_outputs(dir)?;
    Ok(Created {
        manifest,
        wrote_expression,
    })
}

/// Appends `.nixpack/` to `dir/.gitignore` unless it is already ignored:
/// by a line in that file, or by an unanchored `.nixpack/` line in the
/// `.gitignore` of a parent folder in the same git repository (as after a
/// first `nixpack init` at the top of it).
fn ignore_outputs(dir: &Path) -> Result<(), Error> {
    let path = dir.join(".gitignore");
    let current = read_if_present(&path)?;
    let anywhere = |text: &str| {
        text.lines()
            .map(str::trim)
            .any(|l| l == IGNORE_LINE || l == ".nixpack")
    };
    if anywhere(&current)
        || current
            .lines()
            .map(str::trim)
            .any(|l| l == "/.nixpack/" || l == "/.nixpack")
    {
        return Ok(());
    }
    // Git reads the .gitignore files from the repository's top down to the
    // folder; outside a repository no parent's file applies.
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    if let Some(top) = absolute.ancestors().find(|a| a.join(".git").exists()) {
        for parent in absolute
            .ancestors()
            .skip(1)
            .take_while(|p| p.starts_with(top))
        {
            if anywhere(&read_if_present(&parent.join(".gitignore"))?) {
                return Ok(());
            }
        }
    }
    let mut addition = String::new();
    if !current.is_empty() && !current.ends_with('\n') {
        addition.push('\n');
    }
    addition.push_str("# nixpack build outputs\n");
    addition.push_str(IGNORE_LINE);
    addition.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(|e| io(&path, e))?;
    f.write_all(addition.as_bytes()).map_err(|e| io(&path, e))
}

fn read_if_present(path: &Path) -> Result<String, Error> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(Error::msg(
            format!("cannot read `{}`: {e}", path.display()),
            "check the file's permissions",
        )),
    }
}

/// A Docker repository name derived from the project name.
fn image_name(project: &str) -> String {
    let mut s: String = project
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-').to_owned();
    if s.is_empty() {
        "app".to_owned()
    } else {
        s
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::msg(
        format!("cannot write `{}`: {e}", path.display()),
        "check the folder's permissions",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_from_project_names() {
        assert_eq!(image_name("My Cool_App"), "my-cool-app");
        assert_eq!(image_name("---"), "app");
    }
}
