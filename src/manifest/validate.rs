//! From text to a typed [`Manifest`], or a diagnostic on the exact key.
//!
//! serde (with `deny_unknown_fields`) catches syntax errors, unknown keys and
//! wrong types, and `toml` gives the span of each; the checks below catch
//! what a type cannot say (port ranges, Docker's naming rules, files that
//! must exist inside the project, values that would break a Dockerfile line).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};
use std::sync::Arc;

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

fn problem<T>(
    span: std::ops::Range<usize>,
    message: impl Into<String>,
    label: impl Into<String>,
    help: Option<String>,
) -> Check<T> {
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
        src: Arc::new(NamedSource::new(shown_name.clone(), text.to_owned())),
        span: clamp(p.span, text.len()),
        label: p.label,
        help: p.help,
    };
    // Syntax first, then the schema: the two kinds of error read differently.
    text.parse::<toml::Table>()
        .map_err(|e| to_error(from_syntax(&e, text)))?;
    let raw: RawManifest = toml::from_str(text).map_err(|e| to_error(from_schema(&e, text)))?;
    build(raw, text, path, &root).map_err(to_error)
}

fn clamp(span: std::ops::Range<usize>, len: usize) -> SourceSpan {
    let start = span.start.min(len);
    let end = span.end.clamp(start, len);
    (start, end - start).into()
}

/// A TOML syntax error (the text is not TOML at all).
fn from_syntax(e: &toml::de::Error, text: &str) -> Problem {
    let span = e.span().unwrap_or(0..0);
    let message = e.message().trim();
    let written = text
        .get(span.clone())
        .filter(|s| !s.is_empty() && !s.contains('\n'));
    if message == "duplicate key" {
        let key = written.unwrap_or("?");
        return Problem {
            message: format!("duplicate key `{key}`"),
            span,
            label: "set a second time here".into(),
            help: Some("a key may appear only once in a table; remove one of them".into()),
        };
    }
    Problem {
        message: format!("TOML syntax error: {message}"),
        span,
        label: if written.is_some() {
            "here"
        } else {
            "near here"
        }
        .into(),
        help: Some(
            "nixpack.toml must be valid TOML (https://toml.io): check quotes, brackets and commas"
                .into(),
        ),
    }
}

/// A TOML document that does not fit the schema: unknown keys (with a
/// "did you mean"), missing keys and wrong types, each named by its key.
fn from_schema(e: &toml::de::Error, text: &str) -> Problem {
    let span = e.span().unwrap_or(0..0);
    let message = e.message().trim();
    let keys = error_keys(e);
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((key, expected)) = rest.split_once('`') {
            let choices: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            return unknown_key(key, &choices, &keys, span, text);
        }
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        return Problem {
            message: format!("missing key `{field}`{}", in_table(&keys)),
            span,
            label: format!("this table needs `{field}`"),
            help: Some(format!(
                "add `{field} = …` to it; see nixpack.toml.example for every key"
            )),
        };
    }
    let key = if keys.is_empty() {
        String::new()
    } else {
        format!(" for `{}`", keys.join("."))
    };
    if let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|r| r.split_once(", expected "))
    {
        let expected = plain_type(expected);
        let found = plain_type(found);
        let help = example_for(&keys).or_else(|| {
            (expected == "a string" && !found.starts_with("string"))
                .then(|| "put the value in double quotes".to_owned())
        });
        return Problem {
            message: format!("wrong type{key}: expected {expected}, found {found}"),
            span,
            label: format!("expected {expected}"),
            help,
        };
    }
    Problem {
        message: format!("invalid value{key}: {message}"),
        span,
        label: "here".into(),
        help: example_for(&keys),
    }
}

fn unknown_key(
    key: &str,
    choices: &[&str],
    keys: &[String],
    span: std::ops::Range<usize>,
    text: &str,
) -> Problem {
    // At the top level every key is a table; name it as it is written.
    let top = keys.is_empty();
    let header = top
        && text
            .get(..span.start)
            .is_some_and(|before| before.trim_end_matches([' ', '\t']).ends_with('['));
    let shown = |k: &str| {
        if top && k == "image" {
            "[[image]]".to_owned()
        } else if top {
            format!("[{k}]")
        } else {
            k.to_owned()
        }
    };
    let listed: Vec<String> = choices.iter().map(|c| format!("`{}`", shown(c))).collect();
    let help = closest(key, choices)
        .map(|c| format!("did you mean `{}`?", shown(c)))
        .or_else(|| {
            (!listed.is_empty()).then(|| {
                format!(
                    "the {} allowed here are: {}",
                    if top { "tables" } else { "keys" },
                    listed.join(", ")
                )
            })
        });
    let (message, label) = if header {
        (
            format!("unknown table `[{key}]`"),
            "not a table nixpack knows",
        )
    } else {
        (
            format!("unknown key `{key}`{}", in_table(keys)),
            "not a key nixpack knows here",
        )
    };
    Problem {
        message,
        span,
        label: label.into(),
        help,
    }
}

/// The dotted key path serde was reading when it failed (`image.ports`).
/// `toml` prints it (only) when the error carries no source text.
fn error_keys(e: &toml::de::Error) -> Vec<String> {
    let mut bare = e.clone();
    bare.set_input(None);
    let shown = bare.to_string();
    let mut lines = shown.trim_end().lines();
    let last = lines.next_back();
    match (
        lines.next(),
        last.and_then(|l| l.strip_prefix("in `"))
            .and_then(|l| l.strip_suffix('`')),
    ) {
        (Some(_), Some(path)) => path.split('.').map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// ` in [[image]]` / ` in [builder.templates]` for a key path.
fn in_table(keys: &[String]) -> String {
    match keys {
        [] => String::new(),
        [only] if only == "image" => " in `[[image]]`".to_owned(),
        _ => format!(" in `[{}]`", keys.join(".")),
    }
}

/// serde's type words in the words of a TOML user.
fn plain_type(t: &str) -> String {
    let t = t.trim();
    if t.starts_with("struct ") || t == "map" || t == "a map" {
        return "a table".into();
    }
    match t {
        "sequence" | "a sequence" => "a list".into(),
        "a boolean" => "true or false".into(),
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" => "an integer".into(),
        _ => t.to_owned(),
    }
}

/// How a key is written, for the help under a wrong value.
fn example_for(keys: &[String]) -> Option<String> {
    let example = match keys.join(".").as_str() {
        "project" => "[project] with `name = \"…\"`",
        "builder" => "[builder] with `from = \"nixos/nix:2.28.3\"`",
        "builder.nix-options" => "[builder.nix-options] with `max-jobs = \"4\"`",
        "builder.templates" => {
            "[builder.templates] with `scratch = \"path/to/scratch.Dockerfile.hbs\"`"
        }
        "nixpkgs" => "[nixpkgs] with `url` + `sha256`, or `path`",
        "image" => "[[image]] tables, each with `name` and `expression`",
        "image.ports" => r#"ports = [8080, "8080/tcp", "53/udp"]"#,
        "image.entrypoint" => r#"entrypoint = ["/bin/server", "--flag"]"#,
        "image.cmd" => r#"cmd = ["--port", "8080"]"#,
        "image.env" => r#"env = { NAME = "value" }"#,
        "image.labels" => r#"labels = { "org.example.team" = "web" }"#,
        "image.layers" => "layers = 40",
        "image.conventions" => "[image.conventions] with `tmp`, `bin`, `usr-local` = true or false",
        "image.conventions.tmp" | "image.conventions.bin" | "image.conventions.usr-local" => {
            "tmp = true"
        }
        _ => return None,
    };
    Some(format!("write it like: {example}"))
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
                return problem(
                    p.name.span(),
                    "the project name must be non-empty text on one line",
                    "invalid project name",
                    None,
                );
            }
            Project { name: name.clone() }
        }
        None => {
            return problem(
                0..0,
                "missing `[project]` table",
                "the manifest starts here",
                Some("add `[project]` with `name = \"…\"`".into()),
            );
        }
    };

    let from = match &raw.builder.from {
        Some(f) => ImageRef::parse(f.get_ref()).or_else(|why| {
            problem(
                f.span(),
                format!("`[builder] from` is not a valid image reference: {why}"),
                "invalid image reference",
                None,
            )
        })?,
        None => ImageRef::parse(DEFAULT_BUILDER_FROM).expect("the default builder image parses"),
    };
    // Without a tag the Engine would pull every tag of the repository.
    let from = match (&from.tag, &from.digest) {
        (None, None) => ImageRef {
            tag: Some(Tag::parse("latest").expect("`latest` is a tag")),
            ..from
        },
        _ => from,
    };
    let mut nix_options = BTreeMap::new();
    for (k, v) in &raw.builder.nix_options {
        one_line(k, "a nix option name")?;
        if k.get_ref().is_empty()
            || !k
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return problem(
                k.span(),
                format!("`{}` is not a nix.conf setting name", k.get_ref()),
                "invalid option name",
                Some("setting names look like `max-jobs` or `cores`".into()),
            );
        }
        one_line(v, "a nix option value")?;
        nix_options.insert(k.get_ref().clone(), v.get_ref().clone());
    }
    let store_volume = match &raw.builder.store_volume {
        Some(v) => {
            let ok = v
                .get_ref()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && v.get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return problem(
                    v.span(),
                    "`store-volume` is not a valid Docker volume name",
                    "invalid volume name",
                    Some(
                        "use letters, digits, `_`, `.` and `-`, starting with a letter or digit"
                            .into(),
                    ),
                );
            }
            Some(v.get_ref().clone())
        }
        None => None,
    };
    let runner = match &raw.builder.runner {
        None => Runner::Docker,
        Some(r) => match r.get_ref().as_str() {
            "docker" => Runner::Docker,
            "host" => Runner::Host,
            "auto" => Runner::Auto,
            other => {
                return problem(
                    r.span(),
                    format!("`runner = \"{other}\"` is not a runner nixpack knows"),
                    "not docker, host or auto",
                    Some("write \"docker\" (Nix in a builder container), \"host\" (this machine's Nix) or \"auto\" (the host when it has nix-build)".into()),
                )
            }
        },
    };
    let t = &raw.builder.templates;
    let templates = TemplateOverrides {
        builder: t
            .builder
            .as_ref()
            .map(|p| project_file(p, root, "template"))
            .transpose()?
            .map(Into::into),
        entrypoint: t
            .entrypoint
            .as_ref()
            .map(|p| project_file(p, root, "template"))
            .transpose()?
            .map(Into::into),
        scratch: t
            .scratch
            .as_ref()
            .map(|p| project_file(p, root, "template"))
            .transpose()?
            .map(Into::into),
    };

    let nixpkgs = match raw.nixpkgs {
        None => None,
        Some(n) => {
            let span = n.span();
            let n = n.into_inner().0;
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
                    return problem(
                        url.span(),
                        "`[nixpkgs] url` needs its `sha256`",
                        "a tarball without a hash is not reproducible",
                        Some(
                            "add `sha256 = \"…\"` (`nix-prefetch-url --unpack URL` prints it)"
                                .into(),
                        ),
                    );
                }
                (None, None, Some(p)) => {
                    let rel = project_path(&p, root, "nixpkgs path")?;
                    if !root.join(&rel).is_dir() {
                        return problem(
                            p.span(),
                            format!("`{}` is not a directory in the project", p.get_ref()),
                            "no such directory",
                            Some("point `path` at a nixpkgs checkout inside the project".into()),
                        );
                    }
                    Some(Nixpkgs::Path(rel.into()))
                }
                (None, Some(sha), None) => {
                    return problem(
                        sha.span(),
                        "`[nixpkgs] sha256` without a `url`",
                        "hash of what?",
                        Some("add `url = \"…\"`".into()),
                    )
                }
                (_, _, Some(p)) => {
                    return problem(
                        p.span(),
                        "`[nixpkgs]` takes either `url` + `sha256` or `path`, not both",
                        "choose one",
                        None,
                    )
                }
                (None, None, None) => {
                    return problem(
                        span,
                        "`[nixpkgs]` is empty",
                        "empty table",
                        Some("set `url` + `sha256`, or `path`, or remove the table".into()),
                    )
                }
            }
        }
    };

    let images = match raw.image {
        None => {
            // Point at the end of the last line with text: an empty span
            // past the final newline would show no line at all.
            let end = text.trim_end().len();
            return problem(end..end, "the manifest declares no image", "add an `[[image]]` table after this", Some("add an `[[image]]` table with `name` and `expression`; `nixpack init` writes an example".into()));
        }
        Some(list) if list.get_ref().is_empty() => {
            return problem(
                list.span(),
                "the manifest declares no image",
                "empty list",
                Some("add an `[[image]]` table with `name` and `expression`".into()),
            )
        }
        Some(list) => list.into_inner(),
    };
    let mut seen: BTreeMap<String, std::ops::Range<usize>> = BTreeMap::new();
    let mut out = Vec::new();
    for image in images {
        let span = image.span();
        let name_span = image
            .get_ref()
            .name
            .as_ref()
            .map_or(span.clone(), Spanned::span);
        let image = build_image(image.into_inner().0, span, root)?;
        // The same name with another tag would still share the
        // `.nixpack/<name>` folder, so a repeated name is refused outright.
        if let Some(first) = seen.get(image.name.as_str()) {
            let line = text[..first.start].matches('\n').count() + 1;
            return problem(
                name_span,
                format!("duplicate image name `{}`", image.name),
                "declared again here",
                Some(format!(
                    "`{}` is first declared at line {line}; image names must be unique",
                    image.name
                )),
            );
        }
        // Names that differ only in `/` and `_` would share an output folder.
        if let Some(other) = out.iter().find(|o: &&Image| o.slug() == image.slug()) {
            return problem(
                name_span,
                format!(
                    "image names `{}` and `{}` would share the output folder .nixpack/{}",
                    other.name,
                    image.name,
                    image.slug()
                ),
                "clashes with an earlier image",
                Some("rename one of them".into()),
            );
        }
        seen.insert(image.name.to_string(), name_span);
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
            runner,
            templates,
        },
        nixpkgs,
        images: out,
    })
}

fn build_image(raw: RawImage, span: std::ops::Range<usize>, root: &Path) -> Check<Image> {
    let name_raw = match raw.name {
        Some(n) => n,
        None => {
            return problem(
                span,
                "this `[[image]]` has no `name`",
                "image without a name",
                Some("add `name = \"my-app\"` (the repository to tag)".into()),
            )
        }
    };
    let name = ImageName::parse(name_raw.get_ref()).or_else(|why| {
        problem(
            name_raw.span(),
            format!(
                "`{}` is not an image name Docker accepts: {why}",
                name_raw.get_ref().escape_debug()
            ),
            "invalid image name",
            Some("use lower-case letters, digits and `.`, `_`, `-` separated by `/`".into()),
        )
    })?;
    let tag = match raw.tag {
        Some(t) => Tag::parse(t.get_ref()).or_else(|why| {
            problem(
                t.span(),
                format!(
                    "`{}` is not a tag Docker accepts: {why}",
                    t.get_ref().escape_debug()
                ),
                "invalid tag",
                None,
            )
        })?,
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
            let ok = !a.get_ref().is_empty()
                && a.get_ref().chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '\'' | '"')
                });
            if !ok {
                return problem(
                    a.span(),
                    format!(
                        "`{}` is not a Nix attribute path",
                        a.get_ref().escape_debug()
                    ),
                    "invalid attribute path",
                    Some("attribute paths look like `packages.server`".into()),
                );
            }
            Some(a.into_inner())
        }
        None => None,
    };
    let entrypoint = raw
        .entrypoint
        .map(|v| v.into_iter().map(Spanned::into_inner).collect());
    let cmd = raw
        .cmd
        .map(|v| v.into_iter().map(Spanned::into_inner).collect());
    let mut ports = BTreeSet::new();
    for p in &raw.ports {
        let port = parse_port(p)?;
        if !ports.insert(port) {
            return problem(
                p.span(),
                format!("port {port} is listed twice"),
                "duplicate port",
                None,
            );
        }
    }
    let env = key_values(&raw.env, "environment variable", |k| {
        !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })?;
    let labels = key_values(&raw.labels, "label", |k| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
    })?;
    let workdir = raw
        .workdir
        .map(|w| {
            one_line(&w, "`workdir`")?;
            if !w.get_ref().starts_with('/') {
                return problem(
                    w.span(),
                    "`workdir` must be an absolute path",
                    "relative path",
                    Some("write it from the image root, e.g. `/srv`".into()),
                );
            }
            Ok(w.into_inner())
        })
        .transpose()?;
    let user = raw
        .user
        .map(|u| {
            one_line(&u, "`user`")?;
            if u.get_ref().is_empty() || u.get_ref().contains(char::is_whitespace) {
                return problem(
                    u.span(),
                    "`user` must be a user name or `uid[:gid]` without spaces",
                    "invalid user",
                    None,
                );
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
        problem(
            p.span(),
            format!("port {n} is out of range"),
            "must be 1 to 65535",
            None::<String>,
        )
    };
    let (number, protocol) = match p.get_ref() {
        RawPort::Number(n) => (*n, "tcp"),
        RawPort::Text(s) => {
            let (num, proto) = s.split_once('/').unwrap_or((s.as_str(), "tcp"));
            match num.parse::<i64>() {
                Ok(n) if num.chars().all(|c| c.is_ascii_digit()) => (n, proto),
                _ => {
                    return problem(
                        p.span(),
                        format!("`{}` is not a port", s.escape_debug()),
                        "expected `8080`, `\"8080/tcp\"` or `\"53/udp\"`",
                        None,
                    )
                }
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
        other => {
            return problem(
                p.span(),
                format!("`{}` is not a port protocol", other.escape_debug()),
                "unknown protocol",
                Some("use `tcp`, `udp` or `sctp`".into()),
            )
        }
    };
    Ok(Port {
        number: number as u16,
        protocol,
    })
}

fn key_values(
    map: &BTreeMap<Spanned<String>, Spanned<String>>,
    what: &str,
    key_ok: impl Fn(&str) -> bool,
) -> Check<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in map {
        if !key_ok(k.get_ref()) {
            return problem(
                k.span(),
                format!(
                    "`{}` is not a valid {what} name",
                    k.get_ref().escape_debug()
                ),
                "invalid name",
                None,
            );
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
        Some(c) => problem(
            v.span(),
            format!(
                "{what} contains a control character ({})",
                c.escape_default()
            ),
            "this value must be on one line",
            Some("a newline here would start a new Dockerfile instruction; remove it".into()),
        ),
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
        return problem(
            p.span(),
            msg,
            "no such file",
            Some(format!(
                "paths are relative to the folder of nixpack.toml: {}",
                root.display()
            )),
        );
    }
    // Symlinks may still lead out of the project.
    if let (Ok(real), Ok(real_root)) = (full.canonicalize(), root.canonicalize()) {
        if !real.starts_with(&real_root) {
            return problem(
                p.span(),
                format!("the {what} `{}` lies outside the project", p.get_ref()),
                "outside the project",
                Some("only files under the folder of nixpack.toml are sent to the builder".into()),
            );
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
                None => {
                    return problem(
                        p.span(),
                        format!("the {what} path is not valid UTF-8"),
                        "invalid path",
                        None,
                    )
                }
            },
            Component::CurDir => {}
            Component::ParentDir if parts.pop().is_some() => {}
            _ => {
                return problem(
                    p.span(),
                    format!("the {what} `{}` lies outside the project", p.get_ref()),
                    "outside the project",
                    Some(format!(
                        "use a path relative to {}, without `..` leading out of it",
                        root.display()
                    )),
                )
            }
        }
    }
    if parts.is_empty() {
        return problem(
            p.span(),
            format!("the {what} path is empty"),
            "empty path",
            None,
        );
    }
    // What the sources walk always leaves out (`.gitignore` rules are
    // checked at build time, against the walk itself).
    use crate::sources::{NEVER_SENT, NEVER_SENT_TOP};
    let skipped = parts
        .iter()
        .find(|p| NEVER_SENT.contains(p))
        .or_else(|| NEVER_SENT_TOP.iter().find(|d| parts == [**d]));
    if let Some(skipped) = skipped {
        return problem(
            p.span(),
            format!(
                "the {what} `{}` lies in `{skipped}`, which nixpack does not send to the builder",
                p.get_ref()
            ),
            "not sent to the builder",
            Some(format!(
                "move it out of `{skipped}`; nixpack never sends {} (at any depth) or the top-level {}",
                NEVER_SENT.join(", "),
                NEVER_SENT_TOP.join(", ")
            )),
        );
    }
    Ok(parts.join("/"))
}

fn check_sha256(s: &Spanned<String>) -> Check<()> {
    let v = s.get_ref();
    let base32 = v.len() == 52
        && v.chars()
            .all(|c| "0123456789abcdfghijklmnpqrsvwxyz".contains(c));
    let hex = v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit());
    let sri = v
        .strip_prefix("sha256-")
        .is_some_and(|b| b.len() == 44 && b.ends_with('='));
    if base32 || hex || sri {
        Ok(())
    } else {
        problem(
            s.span(),
            "`sha256` is not a sha256 hash",
            "expected 52 base-32, 64 hex characters or `sha256-…=`",
            None,
        )
    }
}
