//! The three files every build runs, rendered from handlebars templates.
//!
//! Templates are embedded in the binary and can be replaced per project
//! (`[builder.templates]`). Rendering is Dockerfile-safe by construction:
//! HTML escaping is off, strict mode turns a misspelt variable into an
//! error, ENTRYPOINT/CMD go through the `json` helper (exec form) and
//! ENV/LABEL/WORKDIR/USER values through `quote`, which escapes `"`, `\`
//! and `$` (`shell` single-quotes for the entrypoint script, `bytes` writes
//! sizes for comments). Validation has already refused control characters, so no value
//! can end its line and start another instruction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use handlebars::{Handlebars, RenderErrorReason};
use miette::{Diagnostic, NamedSource, SourceSpan};
use serde::Serialize;
use thiserror::Error;

use crate::manifest::{Image, Manifest};

/// Which of the three templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// `builder.Dockerfile`.
    Builder,
    /// `entrypoint.sh`.
    Entrypoint,
    /// `scratch.Dockerfile`.
    Scratch,
}

impl Template {
    /// All three, in build order.
    pub const ALL: [Template; 3] = [Template::Builder, Template::Entrypoint, Template::Scratch];

    /// The rendered file's name.
    pub fn file_name(self) -> &'static str {
        match self {
            Template::Builder => "builder.Dockerfile",
            Template::Entrypoint => "entrypoint.sh",
            Template::Scratch => "scratch.Dockerfile",
        }
    }

    fn embedded(self) -> &'static str {
        match self {
            Template::Builder => include_str!("../templates/builder.Dockerfile.hbs"),
            Template::Entrypoint => include_str!("../templates/entrypoint.sh.hbs"),
            Template::Scratch => include_str!("../templates/scratch.Dockerfile.hbs"),
        }
    }

    /// The values this template is rendered with, for error messages.
    fn variables(self) -> &'static str {
        match self {
            Template::Builder | Template::Entrypoint => "nixpack_version, from, nix_options",
            Template::Scratch => {
                "nixpack_version, project, image.name, image.tag, image.entrypoint, image.cmd, image.ports, \
                 image.env, image.workdir, image.user, image.labels, layers (each with file, paths, bytes)"
            }
        }
    }

    fn override_path(self, manifest: &Manifest) -> Option<PathBuf> {
        let t = &manifest.builder.templates;
        let rel = match self {
            Template::Builder => t.builder.as_ref(),
            Template::Entrypoint => t.entrypoint.as_ref(),
            Template::Scratch => t.scratch.as_ref(),
        }?;
        Some(manifest.root.join(rel))
    }
}

/// A template that could not be read, parsed or rendered.
#[derive(Debug, Error, Diagnostic)]
#[non_exhaustive]
pub enum RenderError {
    /// An override named in the manifest cannot be read.
    #[error("could not read the template `{}`", path.display())]
    #[diagnostic(
        code(nixpack::render::read),
        help("fix the path under `[builder.templates]` in nixpack.toml, or remove it to use the built-in template")
    )]
    Read {
        /// The override's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The template is not valid handlebars, or fails to render.
    #[error("template `{name}`: {reason}")]
    #[diagnostic(code(nixpack::render::template))]
    Template {
        /// File name as the user knows it.
        name: String,
        /// What handlebars said.
        reason: String,
        /// The template text (shared, which keeps the error small).
        #[source_code]
        src: Arc<NamedSource<String>>,
        /// Where.
        #[label("here")]
        span: Option<SourceSpan>,
        /// What to do next.
        #[help]
        help: String,
    },
}

/// A layer as the scratch Dockerfile sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LayerEntry {
    /// File name in the build context.
    pub file: String,
    /// Store paths in it (0 for the conventions layer).
    pub paths: usize,
    /// Bytes of store content (NAR size sum).
    pub bytes: u64,
}

#[derive(Serialize)]
struct BuilderContext<'a> {
    nixpack_version: &'static str,
    from: String,
    nix_options: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ScratchContext<'a> {
    nixpack_version: &'static str,
    project: &'a str,
    image: ImageContext<'a>,
    layers: &'a [LayerEntry],
}

#[derive(Serialize)]
struct ImageContext<'a> {
    name: &'a str,
    tag: &'a str,
    entrypoint: Option<&'a Vec<String>>,
    cmd: Option<&'a Vec<String>>,
    ports: Vec<String>,
    env: &'a BTreeMap<String, String>,
    workdir: Option<&'a String>,
    user: Option<&'a String>,
    labels: BTreeMap<String, String>,
}

/// The handlebars registry with the project's templates loaded.
pub struct Renderer<'m> {
    manifest: &'m Manifest,
    registry: Handlebars<'static>,
    sources: BTreeMap<&'static str, (String, String)>,
}

mod helpers {
    #![allow(missing_docs)]
    use handlebars::handlebars_helper;

    handlebars_helper!(json: |v: Json| serde_json::to_string(v).expect("JSON values serialize"));
    handlebars_helper!(quote: |s: str| super::quote_str(s));
    handlebars_helper!(shell: |s: str| super::shell_quote(s));
    handlebars_helper!(bytes: |n: u64| super::human_bytes(n));
}
use helpers::{bytes, json, quote, shell};

/// `5.0 MiB`: a size for people (comments in the rendered files).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut size = n as f64 / 1024.0;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.1} {}", UNITS[unit])
}

/// `"…"` with `\`, `"` and `$` escaped: a Dockerfile word that stays one
/// word and is never expanded.
pub fn quote_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// POSIX shell single quotes.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl<'m> Renderer<'m> {
    /// Loads the embedded templates and the manifest's overrides.
    pub fn new(manifest: &'m Manifest) -> Result<Self, RenderError> {
        let mut registry = Handlebars::new();
        registry.register_escape_fn(handlebars::no_escape);
        registry.set_strict_mode(true);
        registry.register_helper("json", Box::new(json));
        registry.register_helper("quote", Box::new(quote));
        registry.register_helper("shell", Box::new(shell));
        registry.register_helper("bytes", Box::new(bytes));
        let mut sources = BTreeMap::new();
        for t in Template::ALL {
            let (shown, text) = match t.override_path(manifest) {
                Some(path) => {
                    let text =
                        std::fs::read_to_string(&path).map_err(|source| RenderError::Read {
                            path: path.clone(),
                            source,
                        })?;
                    (display_relative(&path, &manifest.root), text)
                }
                None => (
                    format!("templates/{}.hbs (built in)", t.file_name()),
                    t.embedded().to_owned(),
                ),
            };
            registry.register_template_string(t.file_name(), &text).map_err(|e| {
                let span = e.pos().map(|(line, col)| span_at(&text, line, col));
                RenderError::Template {
                    name: shown.clone(),
                    reason: e.reason().to_string(),
                    src: Arc::new(NamedSource::new(shown.clone(), text.clone())),
                    span,
                    help: format!("fix the handlebars syntax; `nixpack render` without the override writes the built-in {} to compare", t.file_name()),
                }
            })?;
            sources.insert(t.file_name(), (shown, text));
        }
        Ok(Renderer {
            manifest,
            registry,
            sources,
        })
    }

    fn render<T: Serialize>(&self, t: Template, ctx: &T) -> Result<String, RenderError> {
        self.registry.render(t.file_name(), ctx).map_err(|e| {
            let (shown, text) = &self.sources[t.file_name()];
            let position = e.line_no.zip(e.column_no);
            let span = position.map(|(l, c)| span_at(text, l, c));
            // The argument of the helper call at the error, e.g. `image.cmd`
            // in `{{json image.cmd}}`: handlebars names only the parameter.
            let argument = |helper: &str| position.and_then(|(l, c)| helper_argument(text, l, c, helper));
            let values = format!("{} is rendered with: {}", t.file_name(), t.variables());
            let (reason, help) = match e.reason() {
                // handlebars says `Failed to access variable in strict mode Some("x")`.
                RenderErrorReason::MissingVariable(Some(name)) => (format!("`{name}` is not a value this template is given"), values),
                RenderErrorReason::ParamNotFoundForName(helper, _) | RenderErrorReason::ParamNotFoundForIndex(helper, _) => match argument(helper) {
                    Some(arg) => (format!("`{arg}` is not a value this template is given (or it is empty here), so `{helper}` has nothing to work on"), values),
                    None => (format!("the helper `{helper}` is missing its value"), values),
                },
                RenderErrorReason::ParamTypeMismatchForName(helper, _, expected) => {
                    let what = argument(helper).map_or_else(|| "its value".to_owned(), |a| format!("`{a}`"));
                    let expected = match expected.as_str() {
                        "str" => "a string",
                        "u64" => "a number",
                        other => other,
                    };
                    (
                        format!("`{helper}` needs {expected}, and {what} is not one"),
                        format!("a value that is not set (workdir, user, entrypoint, cmd) is null: use it inside `{{{{#if …}}}}`; {values}"),
                    )
                }
                RenderErrorReason::HelperNotFound(name) => (
                    format!("there is no helper `{name}`"),
                    "nixpack's helpers are json, quote, shell and bytes; handlebars adds if, unless, each, with, lookup, eq, ne, and, or, not".to_owned(),
                ),
                other => (other.to_string(), values),
            };
            RenderError::Template {
                name: shown.clone(),
                reason,
                src: Arc::new(NamedSource::new(shown.clone(), text.clone())),
                span,
                help,
            }
        })
    }

    /// `builder.Dockerfile`.
    pub fn builder_dockerfile(&self) -> Result<String, RenderError> {
        self.render(
            Template::Builder,
            &BuilderContext {
                nixpack_version: env!("CARGO_PKG_VERSION"),
                from: self.manifest.builder.from.to_string(),
                nix_options: &self.manifest.builder.nix_options,
            },
        )
    }

    /// `entrypoint.sh`.
    pub fn entrypoint(&self) -> Result<String, RenderError> {
        self.render(
            Template::Entrypoint,
            &BuilderContext {
                nixpack_version: env!("CARGO_PKG_VERSION"),
                from: self.manifest.builder.from.to_string(),
                nix_options: &self.manifest.builder.nix_options,
            },
        )
    }

    /// `scratch.Dockerfile` for `image` with these layers (in order) and
    /// the extra labels nixpack sets (result path, OCI annotations).
    pub fn scratch_dockerfile(
        &self,
        image: &Image,
        layers: &[LayerEntry],
        extra_labels: &BTreeMap<String, String>,
    ) -> Result<String, RenderError> {
        let mut labels = extra_labels.clone();
        // The user's labels win over nixpack's defaults.
        labels.extend(image.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.render(
            Template::Scratch,
            &ScratchContext {
                nixpack_version: env!("CARGO_PKG_VERSION"),
                project: &self.manifest.project.name,
                image: ImageContext {
                    name: image.name.as_str(),
                    tag: image.tag.as_str(),
                    entrypoint: image.entrypoint.as_ref(),
                    cmd: image.cmd.as_ref(),
                    ports: image.ports.iter().map(ToString::to_string).collect(),
                    env: &image.env,
                    workdir: image.workdir.as_ref(),
                    user: image.user.as_ref(),
                    labels,
                },
                layers,
            },
        )
    }
}

fn display_relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The first argument of the `{{helper ARG …}}` expression that starts at
/// 1-based `line` and 0- or 1-based `col`.
fn helper_argument(text: &str, line: usize, col: usize, helper: &str) -> Option<String> {
    let span = span_at(text, line, col);
    let rest = text.get(span.offset()..)?;
    let start = rest.find("{{")?;
    let inner = &rest[start + 2..];
    let inner = &inner[..inner.find("}}")?];
    let mut words = inner.trim_start_matches(['{', '~', '#']).split_whitespace();
    (words.next()? == helper)
        .then(|| words.next().map(str::to_owned))
        .flatten()
}

/// Byte span of 1-based `line`, from 0- or 1-based `col` to the line's end.
fn span_at(text: &str, line: usize, col: usize) -> SourceSpan {
    let start_of_line: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let line_text = text[start_of_line.min(text.len())..]
        .lines()
        .next()
        .unwrap_or("");
    let offset = start_of_line + col.saturating_sub(1).min(line_text.len());
    (
        offset.min(text.len()),
        line_text
            .len()
            .saturating_sub(col.saturating_sub(1))
            .max(1)
            .min(text.len().saturating_sub(offset)),
    )
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_keeps_a_value_one_word() {
        assert_eq!(quote_str(r#"a "b" $HOME \"#), r#""a \"b\" \$HOME \\""#);
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(121_304), "118.5 KiB");
        assert_eq!(human_bytes(5_211_832), "5.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
