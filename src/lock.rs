//! `nixpack.lock`: what a successful build produced, beside the manifest.
//!
//! Written only after every selected image built; deterministic and
//! diff-friendly (one value per line, images in manifest order). It pins
//! the builder base image id and, per image, the result store path, a hash
//! of the closure, the layer DiffIDs and the image's identity: its OCI
//! manifest digest and config digest, the same on every machine and every
//! image store (the engine's own "image id" is the one or the other,
//! depending on the store, so it is never locked). `nixpack build
//! --locked` fails, with a readable diff, when a build would change it.

use std::fmt::Write as _;

use serde::Deserialize;

/// The file name.
pub const LOCK_NAME: &str = "nixpack.lock";

/// The whole lock.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Lock {
    /// Format version.
    pub version: u32,
    /// The builder.
    pub builder: LockedBuilder,
    /// Images, in manifest order.
    #[serde(default, rename = "image")]
    pub images: Vec<LockedImage>,
}

/// `[builder]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LockedBuilder {
    /// `[builder] from` as written.
    pub from: String,
    /// Its content: sha256 of its layer DiffIDs (the same in every image
    /// store, unlike the engine's image id).
    pub base_rootfs: String,
}

/// One `[[image]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LockedImage {
    /// Repository.
    pub name: String,
    /// Tag.
    pub tag: String,
    /// The nix-build result.
    pub result: String,
    /// sha256 of the canonical closure (paths, sizes, references).
    pub closure_hash: String,
    /// sha256 of the image's OCI manifest: its identity in registries and
    /// in the containerd image store. None when the Engine's Dockerfile
    /// builder made the image (an ejected scratch template with `RUN`).
    #[serde(default)]
    pub manifest_digest: Option<String>,
    /// sha256 of the image config: the image id on Docker's classic store.
    #[serde(default)]
    pub config_digest: Option<String>,
    /// Layer DiffIDs, bottom first.
    pub diff_ids: Vec<String>,
}

impl Lock {
    /// Parses a lock file's text.
    pub fn parse(text: &str) -> Result<Lock, String> {
        toml::from_str(text).map_err(|e| format!("nixpack.lock is not valid: {}", e.message()))
    }

    /// The canonical text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(
            "# nixpack.lock: written by `nixpack build` after a successful build. Check it in;\n",
        );
        s.push_str("# `nixpack build --locked` fails when a build would change it.\n");
        let _ = writeln!(s, "version = {}", self.version);
        let _ = writeln!(
            s,
            "\n[builder]\nfrom = {}\nbase-rootfs = {}",
            q(&self.builder.from),
            q(&self.builder.base_rootfs)
        );
        for i in &self.images {
            let _ = writeln!(s, "\n[[image]]");
            let _ = writeln!(s, "name = {}", q(&i.name));
            let _ = writeln!(s, "tag = {}", q(&i.tag));
            let _ = writeln!(s, "result = {}", q(&i.result));
            let _ = writeln!(s, "closure-hash = {}", q(&i.closure_hash));
            for (key, value) in [
                ("manifest-digest", &i.manifest_digest),
                ("config-digest", &i.config_digest),
            ] {
                if let Some(v) = value {
                    let _ = writeln!(s, "{key} = {}", q(v));
                }
            }
            s.push_str("diff-ids = [\n");
            for d in &i.diff_ids {
                let _ = writeln!(s, "    {},", q(d));
            }
            s.push_str("]\n");
        }
        s
    }

    /// Replaces or adds the entries of `images`, keeping the order of
    /// `order` (the manifest's image names) and entries for images not
    /// rebuilt this time.
    pub fn merge(
        old: Option<&Lock>,
        builder: LockedBuilder,
        images: Vec<LockedImage>,
        order: &[String],
    ) -> Lock {
        let mut all: Vec<LockedImage> = old.map(|l| l.images.clone()).unwrap_or_default();
        all.retain(|o| order.contains(&o.name) && !images.iter().any(|n| n.name == o.name));
        all.extend(images);
        all.sort_by_key(|i| {
            order
                .iter()
                .position(|n| *n == i.name)
                .unwrap_or(usize::MAX)
        });
        Lock {
            version: 2,
            builder,
            images: all,
        }
    }
}

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// A unified-style line diff (`-` old, `+` new, two lines of context).
pub fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Longest common subsequence table; lock files are small.
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| {
        ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
            .iter()
            .any(|(c, _)| *c != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if *c == ' ' && !near_change(k) {
            skipped = true;
            continue;
        }
        if skipped {
            out.push_str("  …\n");
            skipped = false;
        }
        let _ = writeln!(out, "{c} {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, id: &str) -> LockedImage {
        LockedImage {
            name: name.into(),
            tag: "latest".into(),
            result: format!("/nix/store/00000000000000000000000000000000-{name}"),
            closure_hash: "sha256:aa".into(),
            manifest_digest: Some(id.into()),
            config_digest: Some("sha256:cc".into()),
            diff_ids: vec!["sha256:11".into(), "sha256:22".into()],
        }
    }

    fn builder() -> LockedBuilder {
        LockedBuilder {
            from: "nixpack-base:bookworm".into(),
            base_rootfs: "sha256:bb".into(),
        }
    }

    #[test]
    fn renders_and_parses_back() {
        let lock = Lock::merge(
            None,
            builder(),
            vec![image("b", "sha256:2"), image("a", "sha256:1")],
            &["a".into(), "b".into()],
        );
        assert_eq!(lock.images[0].name, "a", "manifest order");
        let text = lock.render();
        assert_eq!(Lock::parse(&text).unwrap(), lock);
        assert_eq!(lock.render(), text, "deterministic");
    }

    #[test]
    fn merge_keeps_images_not_rebuilt() {
        let old = Lock::merge(
            None,
            builder(),
            vec![image("a", "sha256:1"), image("b", "sha256:2")],
            &["a".into(), "b".into()],
        );
        let new = Lock::merge(
            Some(&old),
            builder(),
            vec![image("b", "sha256:3")],
            &["a".into(), "b".into()],
        );
        assert_eq!(
            new.images
                .iter()
                .map(|i| i.manifest_digest.as_deref().unwrap())
                .collect::<Vec<_>>(),
            vec!["sha256:1", "sha256:3"]
        );
    }

    #[test]
    fn diff_shows_the_changed_line() {
        let old =
            Lock::merge(None, builder(), vec![image("a", "sha256:1")], &["a".into()]).render();
        let new =
            Lock::merge(None, builder(), vec![image("a", "sha256:9")], &["a".into()]).render();
        let d = diff(&old, &new);
        assert!(d.contains("- manifest-digest = \"sha256:1\""), "{d}");
        assert!(d.contains("+ manifest-digest = \"sha256:9\""), "{d}");
        assert!(!d.contains("version = 2"), "far context is elided:\n{d}");
    }
}
