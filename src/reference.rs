//! Docker image references: `[registry[:port]/]path[:tag][@digest]`.
//!
//! Parsed once, at the edge (the manifest), following the grammar of the
//! distribution reference spec that the Engine itself enforces, so a name the
//! Engine would reject is reported against the manifest line instead of
//! failing halfway through a build.

use std::fmt;

/// A repository name such as `nixpack-example/python-http` or
/// `localhost:5000/team/app` (no tag).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageName(String);

/// A tag such as `latest` or `1.2.3-rc1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(String);

/// A full reference as used for the builder base: a name with an optional
/// tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// The repository.
    pub name: ImageName,
    /// The tag, if one was written.
    pub tag: Option<Tag>,
    /// The digest (`sha256:…`), if one was written.
    pub digest: Option<String>,
}

impl ImageName {
    /// Parses a repository name; the error says what is wrong in words.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("an image name cannot be empty".into());
        }
        if s.len() > 255 {
            return Err("an image name is at most 255 characters".into());
        }
        let mut parts: Vec<&str> = s.split('/').collect();
        // A first component with a `.` or `:` or equal to `localhost` is a
        // registry host, which follows different rules (upper case allowed).
        if parts.len() > 1 {
            let first = parts[0];
            if first.contains('.') || first.contains(':') || first == "localhost" {
                check_domain(first)?;
                parts.remove(0);
            }
        }
        for part in parts {
            check_path_component(part)?;
        }
        Ok(ImageName(s.to_owned()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Tag {
    /// Parses a tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut chars = s.chars();
        match chars.next() {
            None => return Err("a tag cannot be empty".into()),
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
            Some(c) => return Err(format!("a tag cannot start with `{c}`")),
        }
        if s.len() > 128 {
            return Err("a tag is at most 128 characters".into());
        }
        if let Some(c) =
            chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(format!(
                "a tag may only contain letters, digits, `_`, `.` and `-`, not `{}`",
                c.escape_default()
            ));
        }
        Ok(Tag(s.to_owned()))
    }

    /// The tag as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl ImageRef {
    /// Parses `name[:tag][@digest]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest)?;
                (rest, Some(digest.to_owned()))
            }
            None => (s, None),
        };
        // A `:` after the last `/` separates the tag; one before it belongs
        // to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(Tag::parse(&rest[at + 1..])?))
            }
            None => (rest, None),
        };
        Ok(ImageRef {
            name: ImageName::parse(name)?,
            tag,
            digest,
        })
    }
}

fn check_domain(d: &str) -> Result<(), String> {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("the registry port in `{d}` must be a number"));
        }
    }
    let ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{d}` is not a valid registry host"))
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn check_path_component(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err(
            "an image name cannot have an empty path component (`//` or a leading or trailing `/`)"
                .into(),
        );
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        let why = if c.is_ascii_uppercase() {
            "image names must be lower case".to_owned()
        } else {
            format!(
                "image names may only contain `a-z`, `0-9`, `.`, `_`, `-` and `/`, not `{}`",
                c.escape_default()
            )
        };
        return Err(why);
    }
    let bytes = p.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(format!(
            "the name component `{p}` must start and end with a letter or digit"
        ));
    }
    // Separators: `.`, `_`, `__` or any run of `-`.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-');
        if !ok {
            return Err(format!(
                "`{sep}` is not allowed between letters in the name component `{p}`"
            ));
        }
    }
    Ok(())
}

fn check_digest(d: &str) -> Result<(), String> {
    match d.split_once(':') {
        Some((alg, hex))
            if !alg.is_empty() && hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "`{d}` is not a digest like `sha256:<64 hex digits>`"
        )),
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_the_engine_accepts() {
        for ok in [
            "app",
            "nixpack-example/python-http",
            "a__b",
            "a.b_c---d",
            "localhost:5000/x/y",
            "Registry.Example:443/app",
        ] {
            assert!(ImageName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_names_the_engine_rejects() {
        for bad in [
            "", "App", "-app", "app-", "a//b", "a/", "a b", "a___b", "a..b", "a:b",
        ] {
            assert!(ImageName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags() {
        assert!(Tag::parse("1.2.3-rc_1").is_ok());
        assert!(Tag::parse(".hidden").is_err());
        assert!(Tag::parse("a/b").is_err());
        assert!(Tag::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn refs_split_tag_from_registry_port() {
        let r = ImageRef::parse("localhost:5000/nix:2.8").unwrap();
        assert_eq!(r.name.as_str(), "localhost:5000/nix");
        assert_eq!(r.tag.unwrap().as_str(), "2.8");
        let r = ImageRef::parse("localhost:5000/nix").unwrap();
        assert_eq!(r.name.as_str(), "localhost:5000/nix");
        assert!(r.tag.is_none());
        assert_eq!(
            ImageRef::parse("nixos/nix:2.28.3").unwrap().to_string(),
            "nixos/nix:2.28.3"
        );
    }
}
