//! From text to a typed [`Manifest`], or a diagnostic on the exact key.
//!
//! serde (with `deny_unknown_fields`) catches syntax errors, unknown keys and
//! wrong types, and `toml` gives the span of each; the checks below catch
//! what a type cannot say (port ranges, Docker's naming rules, files that
//! must exist inside the project, values that would break a Dockerfile line).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};

use miette::{NamedSource, SourceSpan};
use toml::Spanned;

use super::raw::{RawImage, RawManifest, RawPort};
use super::*;

/// A validation failure before the source text is attached.
struct Problem {
    message: String,
    span: std::ops::Range<usize>,
    label: String,
    help: Option<String>,
}

type Check<T> = Result<T, Problem>;

fn problem<T>(span: std::ops::Range<usize>, message: impl Into<String>, label: impl Into<String>, help: Option<String>) -> Check<T> {
    Err(Problem {
        message: message.into(),
        span,
        label: label.into(),
        help,
    })
}

pub(super) fn validate(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
    let shown_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| MANIFEST_NAME.to_owned());
    let root = path.parent().unwrap_or(Path::new(".")).to_owned();
    let to_error = |p: Problem| ManifestError::Invalid {
        message: p.message,
        src: NamedSource::new(shown_name.clone(), text.to_owned()),
        span: clamp(p.span, text.len()),
        label: p.label,
        help: p.help,
    };
    let raw: RawManifest = toml::from_str(text).map_err(|e| to_error(from_toml(&e, text)))?;
    build(raw, text, path, &root).map_err(to_error)
}

fn clamp(span: std::ops::Range<usize>, len: usize) -> SourceSpan {
    let start = span.start.min(len);
    let end = span.end.clamp(start, len);
    (start, end - start).into()
}

/// Turns a `toml`/serde error into a [`Problem`], adding a "did you mean"
/// for unknown keys.
fn from_toml(e: &toml::de::Error, text: &str) -> Problem {
    let span = e.span().unwrap_or(0..0);
    let message = e.message().trim().to_owned();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((key, expected)) = rest.split_once('`') {
            let choices: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            let help = closest(key, &choices)
                .map(|c| format!("did you mean `{c}`?"))
                .or_else(|| (!choices.is_empty()).then(|| format!("the keys allowed here are: {}", choices.join(", "))));
            return Problem {
                message: format!("unknown key `{key}`"),
                span,
                label: "not a key nixpack knows here".into(),
                help,
            };
        }
    }
    if let Some(field) = message.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
        return Problem {
            message: format!("missing key `{field}`"),
            span,
            label: format!("this table needs `{field}`"),
            help: Some(format!("add `{field} = …` to it; see nixpack.toml.example for every key")),
        };
    }
    let label = if text.get(span.clone()).is_some_and(|s| !s.is_empty()) {
        "here".to_owned()
    } else {
        "near here".to_owned()
    };
    Problem {
        message: format!("invalid nixpack.toml: {message}"),
        span,
        label,
        help: None,
    }
}

fn closest<'a>(word: &str, choices: &[&'a str]) -> Option<&'a str> {
    choices
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

fn build(raw: RawManifest, text: &str, path: &Path, root: &Path) -> Check<Manifest> {
    let project = match raw.project {
        Some(p) => {
            let p = p.into_inner();
            let name = p.name.get_ref();
            if name.trim().is_empty() || name.chars().any(char::is_control) {
                return problem(p.name.span(), "the project name must be non-empty text on one line", "invalid project name", None);
            }
            Project { name: name.clone() }
        }
        None => {
            return problem(0..0, "missing `[project]` table", "the manifest starts here", Some("add `[project]` with `name = \"…\"`".into()));
        }
    };

    let from = match &raw.builder.from {
        Some(f) => ImageRef::parse(f.get_ref()).or_else(|why| problem(f.span(), format!("`[builder] from` is not a valid image reference: {why}"), "invalid image reference", None))?,
        None => ImageRef::parse(DEFAULT_BUILDER_FROM).expect("the default builder image parses"),
    };
    let mut nix_options = BTreeMap::new();
    for (k, v) in &raw.builder.nix_options {
        one_line(k, "a nix option name")?;
        if k.get_ref().is_empty() || !k.get_ref().chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return problem(k.span(), format!("`{}` is not a nix.conf setting name", k.get_ref()), "invalid option name", Some("setting names look like `max-jobs` or `cores`".into()));
        }
        one_line(v, "a nix option value")?;
        nix_options.insert(k.get_ref().clone(), v.get_ref().clone());
    }
    let store_volume = match &raw.builder.store_volume {
        Some(v) => {
            let ok = v.get_ref().chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && v.get_ref().chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return problem(v.span(), "`store-volume` is not a valid Docker volume name", "invalid volume name", Some("use letters, digits, `_`, `.` and `-`, starting with a letter or digit".into()));
            }
            Some(v.get_ref().clone())
        }
        None => None,
    };
    let t = &raw.builder.templates;
    let templates = TemplateOverrides {
        builder: t.builder.as_ref().map(|p| project_file(p, root, "template")).transpose()?.map(Into::into),
        entrypoint: t.entrypoint.as_ref().map(|p| project_file(p, root, "template")).transpose()?.map(Into::into),
        scratch: t.scratch.as_ref().map(|p| project_file(p, root, "template")).transpose()?.map(Into::into),
    };

    let nixpkgs = match raw.nixpkgs {
        None => None,
        Some(n) => {
            let span = n.span();
            let n = n.into_inner();
            match (n.url, n.sha256, n.path) {
                (Some(url), Some(sha), None) => {
                    one_line(&url, "the nixpkgs url")?;
                    check_sha256(&sha)?;
                    Some(Nixpkgs::Tarball {
                        url: url.into_inner(),
                        sha256: sha.into_inner(),
                    })
                }
                (Some(url), None, None) => {
                    return problem(url.span(), "`[nixpkgs] url` needs its `sha256`", "a tarball without a hash is not reproducible", Some("add `sha256 = \"…\"` (`nix-prefetch-url --unpack URL` prints it)".into()));
                }
                (None, None, Some(p)) => {
                    let rel = project_path(&p, root, "nixpkgs path")?;
                    if !root.join(&rel).is_dir() {
                        return problem(p.span(), format!("`{}` is not a directory in the project", p.get_ref()), "no such directory", Some("point `path` at a nixpkgs checkout inside the project".into()));
                    }
                    Some(Nixpkgs::Path(rel.into()))
                }
                (None, Some(sha), None) => return problem(sha.span(), "`[nixpkgs] sha256` without a `url`", "hash of what?", Some("add `url = \"…\"`".into())),
                (_, _, Some(p)) => return problem(p.span(), "`[nixpkgs]` takes either `url` + `sha256` or `path`, not both", "choose one", None),
                (None, None, None) => return problem(span, "`[nixpkgs]` is empty", "empty table", Some("set `url` + `sha256`, or `path`, or remove the table".into())),
            }
        }
    };

    let images = match raw.image {
        None => return problem(text.len()..text.len(), "the manifest declares no image", "no `[[image]]` table in the file", Some("add an `[[image]]` table with `name` and `expression`".into())),
        Some(list) if list.get_ref().is_empty() => return problem(list.span(), "the manifest declares no image", "empty list", Some("add an `[[image]]` table with `name` and `expression`".into())),
        Some(list) => list.into_inner(),
    };
    let mut seen: BTreeMap<String, std::ops::Range<usize>> = BTreeMap::new();
    let mut out = Vec::new();
    for image in images {
        let span = image.span();
        let image = build_image(image.into_inner(), span.clone(), root)?;
        // Name and tag together must be unique; the same name with another
        // tag would still share the `.nixpack/<name>` folder, so refuse it too.
        if let Some(first) = seen.get(image.name.as_str()) {
            let line = text[..first.start].matches('\n').count() + 1;
            let name_span = find_in(text, span.clone(), image.name.as_str());
            return problem(name_span, format!("duplicate image name `{}`", image.name), "declared again here", Some(format!("it is first declared in the `[[image]]` at line {line}; image names must be unique")));
        }
        seen.insert(image.name.to_string(), span);
        out.push(image);
    }
    Ok(Manifest {
        path: path.to_owned(),
        root: root.to_owned(),
        project,
        builder: Builder {
            from,
            nix_options,
            store_volume,
            templates,
        },
        nixpkgs,
        images: out,
    })
}

/// The span of `needle` as a quoted value inside `within`, for errors about
/// a value we no longer hold a span for.
fn find_in(text: &str, within: std::ops::Range<usize>, needle: &str) -> std::ops::Range<usize> {
    let hay = &text[within.clone()];
    match hay.find(&format!("\"{needle}\"")).or_else(|| hay.find(&format!("'{needle}'"))) {
        Some(i) => within.start + i..within.start + i + needle.len() + 2,
        None => within,
    }
}

fn build_image(raw: RawImage, span: std::ops::Range<usize>, root: &Path) -> Check<Image> {
    let header = span.start..span.start;
    let name_raw = match raw.name {
        Some(n) => n,
        None => return problem(header, "this `[[image]]` has no `name`", "image without a name", Some("add `name = \"my-app\"` (the repository to tag)".into())),
    };
    let name = ImageName::parse(name_raw.get_ref()).or_else(|why| problem(name_raw.span(), format!("`{}` is not an image name Docker accepts: {why}", name_raw.get_ref().escape_debug()), "invalid image name", Some("use lower-case letters, digits and `.`, `_`, `-` separated by `/`".into())))?;
    let tag = match raw.tag {
        Some(t) => Tag::parse(t.get_ref()).or_else(|why| problem(t.span(), format!("`{}` is not a tag Docker accepts: {why}", t.get_ref().escape_debug()), "invalid tag", None))?,
        None => Tag::parse("latest").expect("`latest` is a tag"),
    };
    let expression = match raw.expression {
        Some(e) => {
            project_file(&e, root, "expression")?
        }
        None => return problem(name_raw.span(), format!("image `{name}` has no `expression`"), "this image needs an `expression`", Some("add `expression = \"default.nix\"`: the Nix file to build, relative to nixpack.toml".into())),
    };
    let attr = match raw.attr {
        Some(a) => {
            let ok = !a.get_ref().is_empty() && a.get_ref().chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '\'' | '"'));
            if !ok {
                return problem(a.span(), format!("`{}` is not a Nix attribute path", a.get_ref().escape_debug()), "invalid attribute path", Some("attribute paths look like `packages.server`".into()));
            }
            Some(a.into_inner())
        }
        None => None,
    };
    let entrypoint = raw.entrypoint.map(|v| v.into_iter().map(Spanned::into_inner).collect());
    let cmd = raw.cmd.map(|v| v.into_iter().map(Spanned::into_inner).collect());
    let mut ports = BTreeSet::new();
    for p in &raw.ports {
        let port = parse_port(p)?;
        if !ports.insert(port) {
            return problem(p.span(), format!("port {port} is listed twice"), "duplicate port", None);
        }
    }
    let env = key_values(&raw.env, "environment variable", |k| {
        !k.is_empty() && !k.starts_with(|c: char| c.is_ascii_digit()) && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })?;
    let labels = key_values(&raw.labels, "label", |k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/')))?;
    let workdir = raw
        .workdir
        .map(|w| {
            one_line(&w, "`workdir`")?;
            if !w.get_ref().starts_with('/') {
                return problem(w.span(), "`workdir` must be an absolute path", "relative path", Some("write it from the image root, e.g. `/srv`".into()));
            }
            Ok(w.into_inner())
        })
        .transpose()?;
    let user = raw
        .user
        .map(|u| {
            one_line(&u, "`user`")?;
            if u.get_ref().is_empty() || u.get_ref().contains(char::is_whitespace) {
                return problem(u.span(), "`user` must be a user name or `uid[:gid]` without spaces", "invalid user", None);
            }
            Ok(u.into_inner())
        })
        .transpose()?;
    let layers = match raw.layers {
        Some(l) => {
            let n = *l.get_ref();
            if n < 1 || n > i64::from(MAX_LAYERS) {
                return problem(l.span(), format!("`layers = {n}` is out of range"), format!("must be 1 to {MAX_LAYERS}"), Some(format!("Docker refuses images with more than 127 layers; nixpack allows at most {MAX_LAYERS} for the closure")));
            }
            n as u16
        }
        None => DEFAULT_LAYERS,
    };
    Ok(Image {
        name,
        tag,
        expression,
        attr,
        entrypoint,
        cmd,
        ports: ports.into_iter().collect(),
        env,
        workdir,
        user,
        labels,
        layers,
        conventions: Conventions {
            tmp: raw.conventions.tmp,
            bin: raw.conventions.bin,
            usr_local: raw.conventions.usr_local,
        },
    })
}

fn parse_port(p: &Spanned<RawPort>) -> Check<Port> {
    let bad_number = |n: &str| {
        problem(p.span(), format!("port {n} is out of range"), "must be 1 to 65535", None::<String>)
    };
    let (number, protocol) = match p.get_ref() {
        RawPort::Number(n) => (*n, "tcp"),
        RawPort::Text(s) => {
            let (num, proto) = s.split_once('/').unwrap_or((s.as_str(), "tcp"));
            match num.parse::<i64>() {
                Ok(n) if num.chars().all(|c| c.is_ascii_digit()) => (n, proto),
                _ => return problem(p.span(), format!("`{}` is not a port", s.escape_debug()), "expected `8080`, `\"8080/tcp\"` or `\"53/udp\"`", None),
            }
        }
    };
    if !(1..=65535).contains(&number) {
        return bad_number(&number.to_string());
    }
    let protocol = match protocol {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        other => return problem(p.span(), format!("`{}` is not a port protocol", other.escape_debug()), "unknown protocol", Some("use `tcp`, `udp` or `sctp`".into())),
    };
    Ok(Port {
        number: number as u16,
        protocol,
    })
}

fn key_values(map: &BTreeMap<Spanned<String>, Spanned<String>>, what: &str, key_ok: impl Fn(&str) -> bool) -> Check<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in map {
        if !key_ok(k.get_ref()) {
            return problem(k.span(), format!("`{}` is not a valid {what} name", k.get_ref().escape_debug()), "invalid name", None);
        }
        one_line(v, &format!("the {what} `{}`", k.get_ref()))?;
        out.insert(k.get_ref().clone(), v.get_ref().clone());
    }
    Ok(out)
}

/// Refuses values with a newline or other control character: rendered
/// into a Dockerfile, such a value would start a new instruction.
fn one_line(v: &Spanned<String>, what: &str) -> Check<()> {
    match v.get_ref().chars().find(|c| c.is_control()) {
        None => Ok(()),
        Some(c) => problem(v.span(), format!("{what} contains a control character ({})", c.escape_default()), "this value must be on one line", Some("a newline here would start a new Dockerfile instruction; remove it".into())),
    }
}

/// A relative path inside the project, `/`-separated; the file must exist.
fn project_file(p: &Spanned<String>, root: &Path, what: &str) -> Check<String> {
    let rel = project_path(p, root, what)?;
    let full = root.join(&rel);
    if !full.is_file() {
        let msg = if full.exists() {
            format!("the {what} `{}` is not a file", p.get_ref())
        } else {
            format!("the {what} file `{}` does not exist", p.get_ref())
        };
        return problem(p.span(), msg, "no such file", Some(format!("paths are relative to the folder of nixpack.toml: {}", root.display())));
    }
    // Symlinks may still lead out of the project.
    if let (Ok(real), Ok(real_root)) = (full.canonicalize(), root.canonicalize()) {
        if !real.starts_with(&real_root) {
            return problem(p.span(), format!("the {what} `{}` lies outside the project", p.get_ref()), "outside the project", Some("only files under the folder of nixpack.toml are sent to the builder".into()));
        }
    }
    Ok(rel)
}

fn project_path(p: &Spanned<String>, root: &Path, what: &str) -> Check<String> {
    one_line(p, &format!("the {what} path"))?;
    let path = Path::new(p.get_ref());
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => match s.to_str() {
                Some(s) => parts.push(s),
                None => return problem(p.span(), format!("the {what} path is not valid UTF-8"), "invalid path", None),
            },
            Component::CurDir => {}
            Component::ParentDir if parts.pop().is_some() => {}
            _ => return problem(p.span(), format!("the {what} `{}` lies outside the project", p.get_ref()), "outside the project", Some(format!("use a path relative to {}, without `..` leading out of it", root.display()))),
        }
    }
    if parts.is_empty() {
        return problem(p.span(), format!("the {what} path is empty"), "empty path", None);
    }
    Ok(parts.join("/"))
}

fn check_sha256(s: &Spanned<String>) -> Check<()> {
    let v = s.get_ref();
    let base32 = v.len() == 52 && v.chars().all(|c| "0123456789abcdfghijklmnpqrsvwxyz".contains(c));
    let hex = v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit());
    let sri = v.strip_prefix("sha256-").is_some_and(|b| b.len() == 44 && b.ends_with('='));
    if base32 || hex || sri {
        Ok(())
    } else {
        problem(s.span(), "`sha256` is not a sha256 hash", "expected 52 base-32, 64 hex characters or `sha256-…=`", None)
    }
}
