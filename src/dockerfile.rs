//! Reads a rendered scratch Dockerfile back into an image recipe, so that
//! nixpack can assemble the image itself (see [`crate::archive`]) instead of
//! asking the Engine's builder to replay it instruction by instruction.
//!
//! Only the subset a scratch image of Nix layers needs is understood:
//! `FROM scratch`, `ADD <layer>.tar /`, `ENV`, `LABEL`, `EXPOSE`, `WORKDIR`,
//! `USER`, and exec-form `ENTRYPOINT`/`CMD`. Quoting follows Dockerfile
//! rules for double quotes and backslashes. Anything else — `RUN`, `COPY`,
//! build args, an unescaped `$` — is [`Unsupported`], and the caller hands
//! the Dockerfile to the Engine's builder unchanged, so an ejected template
//! can still use the whole Dockerfile language.

use std::collections::BTreeMap;

/// The recipe: layers in order, and the image config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipe {
    /// Context paths of the layer tarballs, bottom first.
    pub layers: Vec<String>,
    /// `ENV`, in order of first appearance (later values win).
    pub env: Vec<(String, String)>,
    /// `LABEL`.
    pub labels: BTreeMap<String, String>,
    /// `EXPOSE`, as `8080/tcp`.
    pub exposed: Vec<String>,
    /// `WORKDIR`.
    pub workdir: Option<String>,
    /// `USER`.
    pub user: Option<String>,
    /// `ENTRYPOINT`.
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    pub cmd: Option<Vec<String>>,
}

/// Why a Dockerfile is left to the Engine's builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// 1-based line.
    pub line: usize,
    /// What is not understood.
    pub reason: String,
}

/// Parses the supported subset.
pub fn parse(text: &str) -> Result<Recipe, Unsupported> {
    let mut recipe = Recipe::default();
    let mut saw_from = false;
    for (line, instruction) in logical_lines(text) {
        let unsupported = |reason: String| Unsupported { line, reason };
        let (keyword, rest) = match instruction.split_once(char::is_whitespace) {
            Some((k, r)) => (k.to_ascii_uppercase(), r.trim()),
            None => (instruction.to_ascii_uppercase(), ""),
        };
        if !saw_from && keyword != "FROM" {
            return Err(unsupported(format!("`{keyword}` before FROM")));
        }
        match keyword.as_str() {
            "FROM" if !saw_from && rest.eq_ignore_ascii_case("scratch") => saw_from = true,
            "FROM" => {
                return Err(unsupported(format!(
                    "FROM {rest}: only a single `FROM scratch` is assembled natively"
                )))
            }
            "ADD" => {
                let words = words(rest).map_err(unsupported)?;
                match words.as_slice() {
                    [src, dest]
                        if dest == "/"
                            && src.ends_with(".tar")
                            && !src.starts_with('-')
                            && !src.contains("://") =>
                    {
                        recipe.layers.push(src.clone())
                    }
                    _ => {
                        return Err(unsupported(
                            "only `ADD <file>.tar /` is assembled natively".into(),
                        ))
                    }
                }
            }
            "ENV" => {
                for (k, v) in pairs(rest).map_err(unsupported)? {
                    match recipe.env.iter_mut().find(|(key, _)| *key == k) {
                        Some(slot) => slot.1 = v,
                        None => recipe.env.push((k, v)),
                    }
                }
            }
            "LABEL" => recipe.labels.extend(pairs(rest).map_err(unsupported)?),
            "EXPOSE" => {
                for w in words(rest).map_err(unsupported)? {
                    let (n, proto) = w.split_once('/').unwrap_or((&w, "tcp"));
                    if n.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                        return Err(unsupported(format!("EXPOSE {w}")));
                    }
                    let p = format!("{n}/{proto}");
                    if !recipe.exposed.contains(&p) {
                        recipe.exposed.push(p);
                    }
                }
            }
            "WORKDIR" => recipe.workdir = Some(one_word(rest).map_err(unsupported)?),
            "USER" => recipe.user = Some(one_word(rest).map_err(unsupported)?),
            "ENTRYPOINT" => recipe.entrypoint = Some(exec_form(rest).map_err(unsupported)?),
            "CMD" => recipe.cmd = Some(exec_form(rest).map_err(unsupported)?),
            other => {
                return Err(unsupported(format!(
                    "`{other}` is left to the Engine's builder"
                )))
            }
        }
    }
    if !saw_from {
        return Err(Unsupported {
            line: 1,
            reason: "no FROM".into(),
        });
    }
    Ok(recipe)
}

/// Instructions with their first line number: comments and blank lines
/// dropped, `\` continuations joined.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if current.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if current.is_some() && trimmed.starts_with('#') {
            continue;
        }
        let (start, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                acc.push_str(head);
                acc.push(' ');
                current = Some((start, acc));
            }
            None => {
                acc.push_str(trimmed);
                out.push((start, acc));
            }
        }
    }
    if let Some(c) = current {
        out.push(c);
    }
    out
}

/// Splits on unquoted whitespace, honouring `"…"` and `\` escapes. An
/// unescaped `$` would be variable expansion: not supported.
fn words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next().ok_or("a trailing backslash")?;
                cur.push(next);
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '$' => return Err("variable expansion (`$`) is left to the Engine's builder".into()),
            '\'' if !quoted => return Err("single quotes are left to the Engine's builder".into()),
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("an unterminated quote".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn one_word(s: &str) -> Result<String, String> {
    match words(s)?.as_slice() {
        [w] => Ok(w.clone()),
        _ => Err("expected one value".into()),
    }
}

/// `K=V K2=V2` (the legacy `K V` form is left to the Engine).
fn pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    // Split on the first unquoted `=` of each word: quote-aware split first,
    // then re-scan the raw text of each word for its `=`.
    let mut out = Vec::new();
    for raw in raw_words(s)? {
        let eq = first_unquoted_eq(&raw)
            .ok_or("the legacy `KEY VALUE` form is left to the Engine's builder")?;
        let key = one_word(&raw[..eq])?;
        let value = match words(&raw[eq + 1..])?.as_slice() {
            [] => String::new(),
            [v] => v.clone(),
            _ => return Err("a value with unquoted spaces".into()),
        };
        out.push((key, value));
    }
    Ok(out)
}

/// Words as they are written (quotes and escapes kept).
fn raw_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                cur.push(chars.next().ok_or("a trailing backslash")?);
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("an unterminated quote".into());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn first_unquoted_eq(raw: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in raw.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            '=' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn exec_form(s: &str) -> Result<Vec<String>, String> {
    serde_json::from_str::<Vec<String>>(s)
        .map_err(|_| "only the exec (JSON array) form is assembled natively".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::quote_str;

    #[test]
    fn reads_what_the_scratch_template_writes() {
        let text = format!(
            "# comment\nFROM scratch\n\nADD layers/a.tar /\nADD layers/b.tar /\nENV A={} B={}\nEXPOSE 8080/tcp 53/udp\nWORKDIR {}\nUSER {}\nLABEL {}={} \\\n  {}={}\nENTRYPOINT [\"/bin/x\",\"a \\\"b\\\"\"]\nCMD [\"--port\",\"8080\"]\n",
            quote_str("1 \"2\" $3 \\4"),
            quote_str(""),
            quote_str("/srv dir"),
            quote_str("65534:65534"),
            quote_str("org.x"),
            quote_str("v=1"),
            quote_str("k"),
            quote_str("w")
        );
        let r = parse(&text).unwrap();
        assert_eq!(r.layers, vec!["layers/a.tar", "layers/b.tar"]);
        assert_eq!(
            r.env,
            vec![
                ("A".into(), "1 \"2\" $3 \\4".into()),
                ("B".into(), String::new())
            ]
        );
        assert_eq!(r.exposed, vec!["8080/tcp", "53/udp"]);
        assert_eq!(r.workdir.as_deref(), Some("/srv dir"));
        assert_eq!(r.user.as_deref(), Some("65534:65534"));
        assert_eq!(
            r.labels,
            BTreeMap::from([("org.x".into(), "v=1".into()), ("k".into(), "w".into())])
        );
        assert_eq!(r.entrypoint.unwrap(), vec!["/bin/x", "a \"b\""]);
        assert_eq!(r.cmd.unwrap(), vec!["--port", "8080"]);
    }

    #[test]
    fn leaves_the_rest_to_the_engine() {
        for (text, line) in [
            ("FROM scratch\nRUN true\n", 2),
            ("FROM debian\n", 1),
            ("FROM scratch\nENV A=$HOME\n", 2),
            ("FROM scratch\nCMD /bin/sh -c x\n", 2),
            ("FROM scratch\nCOPY a.tar /\n", 2),
            ("FROM scratch\nADD a.tar /opt\n", 2),
            ("FROM scratch\nENV A b\n", 2),
            ("FROM scratch\nFROM scratch\n", 2),
        ] {
            assert_eq!(parse(text).unwrap_err().line, line, "{text}");
        }
    }
}
