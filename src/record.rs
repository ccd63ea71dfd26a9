//! What a build records so that an image can be read later without an
//! engine (`nixpack inspect`), and what changed since the build before.
//!
//! - `layers.json`: the image's layers, bottom first, each with its file,
//!   DiffID, tar size, NAR size, store paths and why its paths were put
//!   together ([`LayerList`]). When a build gives another list, the old one
//!   becomes `previous-layers.json`, so "changed" always means "since the
//!   image before this one", however often an unchanged project is built.
//! - [`Changes`]: the store paths added, removed and changed (by name, or
//!   by NAR hash under the same path) between two closures, with the bytes
//!   of layers a build had to write for them: their ratio is the
//!   leaf-change ratio of [`crate::layers`], measured on a real rebuild.
//!
//! Pure: the build fills in DiffIDs and tar sizes from its files.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::closure::{Closure, StorePath};
use crate::conventions::Conventions;
use crate::layers::Layer;

/// `layers.json` in `.nixpack/<image>/`.
pub const LAYERS_FILE: &str = "layers.json";
/// The layer list of the image before, in `.nixpack/<image>/`.
pub const PREVIOUS_LAYERS_FILE: &str = "previous-layers.json";

/// Why a layer holds what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The build result: alone on top, since every change touches it.
    Result,
    /// A path most of the closure needs, kept alone so images share it.
    SharedBase,
    /// A path alone in its layer (the budget allowed it).
    Own,
    /// Paths that change together, merged to stay within the budget.
    Grouped,
    /// nixpack's `/tmp`, `/bin` and `/usr/local` conventions.
    Conventions,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Result => "result",
            Reason::SharedBase => "shared base",
            Reason::Own => "own layer",
            Reason::Grouped => "grouped: change together",
            Reason::Conventions => "conventions",
        })
    }
}

/// One layer of a built image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The tarball, relative to the image folder (`layers/…tar`).
    pub file: String,
    /// The sha256 of the tar, when known.
    pub diff_id: Option<String>,
    /// Bytes of the tar, when known.
    pub size: Option<u64>,
    /// Bytes of its store paths' NARs.
    pub nar_size: u64,
    /// Its store paths, sorted.
    pub paths: Vec<StorePath>,
    /// Why these paths are together.
    pub reason: Reason,
}

/// `layers.json`: an image's layers, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerList {
    /// The image's manifest digest, when nixpack wrote the image.
    pub manifest_digest: Option<String>,
    /// The layers, bottom first; the conventions layer last.
    pub layers: Vec<LayerRecord>,
}

impl LayerList {
    /// The layers of `plan` and `conventions` for `closure`, without
    /// DiffIDs or tar sizes.
    pub fn new(closure: &Closure, plan: &[Layer], conventions: &Conventions) -> LayerList {
        let dependents = closure.dependents();
        let others = closure.paths.len().saturating_sub(1);
        let mut layers: Vec<LayerRecord> = plan
            .iter()
            .map(|l| {
                let reason = match l.paths.as_slice() {
                    [p] if *p == closure.result => Reason::Result,
                    [p] if others > 1 && 2 * dependents[p].len() >= others => Reason::SharedBase,
                    [_] => Reason::Own,
                    _ if l.paths.contains(&closure.result) => Reason::Result,
                    _ => Reason::Grouped,
                };
                LayerRecord {
                    file: format!("layers/{}", l.file_name()),
                    diff_id: None,
                    size: None,
                    nar_size: l.nar_size,
                    paths: l.paths.clone(),
                    reason,
                }
            })
            .collect();
        if !conventions.is_empty() {
            layers.push(LayerRecord {
                file: format!("layers/{}", conventions.file_name()),
                diff_id: None,
                size: None,
                nar_size: 0,
                paths: vec![],
                reason: Reason::Conventions,
            });
        }
        LayerList {
            manifest_digest: None,
            layers,
        }
    }

    /// Parses `layers.json`.
    pub fn from_json(text: &str) -> Result<LayerList, String> {
        serde_json::from_str(text).map_err(|e| format!("layers.json is malformed: {e}"))
    }

    /// Pretty, stable JSON.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a layer list serializes");
        text.push('\n');
        text
    }

    /// Whether the layer at `index` is new since `previous` (true when
    /// there was none: then every layer is new).
    pub fn is_new(&self, index: usize, previous: Option<&LayerList>) -> bool {
        previous.is_none_or(|p| p.layers.iter().all(|l| l.file != self.layers[index].file))
    }
}

/// Store paths that differ between two closures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// In the new closure only, with no old path of the same name.
    pub added: Vec<StorePath>,
    /// In the old closure only, with no new path of the same name.
    pub removed: Vec<StorePath>,
    /// (old, new): the same name under another path, or the same path
    /// with another NAR hash.
    pub changed: Vec<(StorePath, StorePath)>,
    /// Bytes of the new closure's added and changed paths.
    pub changed_bytes: u64,
}

impl Changes {
    /// What changed from `old` to `new`. Paths of the same name pair up in
    /// store-path order.
    pub fn between(old: &Closure, new: &Closure) -> Changes {
        let mut gone: BTreeMap<&str, Vec<&StorePath>> = BTreeMap::new();
        for p in old.paths.keys().filter(|p| !new.paths.contains_key(*p)) {
            gone.entry(p.name()).or_default().push(p);
        }
        let mut c = Changes::default();
        for (p, info) in &new.paths {
            match old.paths.get(p) {
                Some(o) if o.nar_hash != info.nar_hash => c.changed.push((p.clone(), p.clone())),
                Some(_) => continue,
                None => match gone.get_mut(p.name()).filter(|v| !v.is_empty()) {
                    Some(v) => c.changed.push((v.remove(0).clone(), p.clone())),
                    None => c.added.push(p.clone()),
                },
            }
            c.changed_bytes += info.nar_size;
        }
        c.removed = gone.into_values().flatten().cloned().collect();
        c.removed.sort();
        c
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// A few lines for the build's output: what changed, then `cost`
    /// (bytes of layers written) against the bytes of changed paths. At
    /// most `max_paths` paths are named.
    pub fn summary(
        &self,
        reference: &str,
        layers_written: (usize, usize),
        cost: u64,
        max_paths: usize,
    ) -> Vec<String> {
        let human = crate::stages::nix::human_bytes;
        let mut lines = vec![format!(
            "{reference}: {} store path(s) changed, {} added, {} removed",
            self.changed.len(),
            self.added.len(),
            self.removed.len()
        )];
        let named: Vec<String> = self
            .changed
            .iter()
            .map(|(_, new)| format!("  ~ {new}"))
            .chain(self.added.iter().map(|p| format!("  + {p}")))
            .chain(self.removed.iter().map(|p| format!("  - {p}")))
            .collect();
        let more = named.len().saturating_sub(max_paths);
        lines.extend(named.into_iter().take(max_paths));
        if more > 0 {
            lines.push(format!("  … and {more} more"));
        }
        let ratio = if self.changed_bytes > 0 {
            format!(" (ratio {:.2})", cost as f64 / self.changed_bytes as f64)
        } else {
            String::new()
        };
        lines.push(format!(
            "  {} of {} store-path layer(s) written: {} of layers for {} of changed store paths{ratio}",
            layers_written.0,
            layers_written.1,
            human(cost),
            human(self.changed_bytes)
        ));
        lines
    }
}

/// The `n` largest store paths, largest first (ties in store-path order).
pub fn largest_paths(closure: &Closure, n: usize) -> Vec<(&StorePath, u64)> {
    let mut all: Vec<(&StorePath, u64)> = closure
        .paths
        .values()
        .map(|p| (&p.path, p.nar_size))
        .collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    all.truncate(n);
    all
}

/// Store paths of `closure` whose name contains `fragment` (ignoring
/// case), or the store path a full path names (also a file inside one:
/// `/nix/store/…-expat-2.5.0/lib/libexpat.so`).
pub fn find_paths<'a>(closure: &'a Closure, fragment: &str) -> Vec<&'a StorePath> {
    if fragment.starts_with(crate::closure::STORE_DIR) {
        let top: String = fragment
            .splitn(5, '/')
            .take(4)
            .collect::<Vec<_>>()
            .join("/");
        return closure.paths.keys().filter(|p| p.as_str() == top).collect();
    }
    let needle = fragment.to_lowercase();
    closure
        .paths
        .keys()
        .filter(|p| p.name().to_lowercase().contains(&needle))
        .collect()
}

/// Names of the closure close to `fragment`, nearest first (for an error
/// that found nothing).
pub fn near_names<'a>(closure: &'a Closure, fragment: &str, n: usize) -> Vec<&'a str> {
    let needle = fragment
        .rsplit('/')
        .next()
        .unwrap_or(fragment)
        .to_lowercase();
    let mut scored: Vec<(f64, &str)> = closure
        .paths
        .keys()
        .map(|p| {
            let name = p.name();
            let (base, _) = crate::sbom::parse_name(name);
            let score = strsim::jaro_winkler(&needle, &name.to_lowercase())
                .max(strsim::jaro_winkler(&needle, &base.to_lowercase()));
            (score, name)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    let mut out: Vec<&str> = Vec::new();
    for (_, name) in scored {
        if !out.contains(&name) {
            out.push(name);
        }
        if out.len() == n {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden() -> Closure {
        Closure::from_json(include_str!("../tests/golden/python-closure.json")).unwrap()
    }

    fn conventions(c: &Closure) -> Conventions {
        Conventions::new(
            c,
            crate::manifest::Conventions {
                tmp: true,
                bin: true,
                usr_local: true,
            },
        )
    }

    #[test]
    fn layers_say_why_they_hold_what_they_hold() {
        let c = golden();
        let reasons = |n: u16| -> Vec<Reason> {
            LayerList::new(&c, &crate::layers::plan(&c, n), &conventions(&c))
                .layers
                .iter()
                .map(|l| l.reason)
                .collect()
        };
        use Reason::*;
        // glibc alone (everything needs it), zlib + expat, the result.
        assert_eq!(reasons(3), [SharedBase, Grouped, Result, Conventions]);
        assert_eq!(reasons(40), [SharedBase, Own, Own, Result, Conventions]);
        assert_eq!(reasons(1), [Result, Conventions]);
    }

    #[test]
    fn changes_pair_paths_by_name() {
        let old = golden();
        let text = include_str!("../tests/golden/python-closure.json")
            // python-http rebuilt under a new path, expat dropped for libffi.
            .replace(
                "9gq0s3y4m1l2rwh1n0p3n7cfd2hiyc5a-python-http",
                "1111s3y4m1l2rwh1n0p3n7cfd2hiyc5a-python-http",
            )
            .replace(
                "k5g3i1wjm3p2cc7y7qv5s1hfd8w2yczr-expat-2.5.0",
                "k5g3i1wjm3p2cc7y7qv5s1hfd8w2yczr-libffi-3.4",
            );
        let new = Closure::from_json(&text).unwrap();
        let c = Changes::between(&old, &new);
        let names = |v: &[StorePath]| v.iter().map(|p| p.name().to_owned()).collect::<Vec<_>>();
        assert_eq!(names(&c.added), ["libffi-3.4"]);
        assert_eq!(names(&c.removed), ["expat-2.5.0"]);
        assert_eq!(c.changed.len(), 1);
        assert_eq!(c.changed[0].1.name(), "python-http");
        assert_eq!(c.changed_bytes, 25_116_200 + 404_112);
        assert!(Changes::between(&old, &old).is_empty());
        // The same path with another NAR hash (built without the sandbox).
        let mut rebuilt = golden();
        rebuilt.paths.values_mut().next().unwrap().nar_hash.0[0] ^= 1;
        let c = Changes::between(&old, &rebuilt);
        assert_eq!(c.changed.len(), 1);
        assert_eq!(c.changed[0].0, c.changed[0].1);
        let lines = c.summary("app:latest", (1, 4), 121_304, 5);
        assert_eq!(
            lines[0],
            "app:latest: 1 store path(s) changed, 0 added, 0 removed"
        );
        assert!(lines[1].ends_with("zlib-1.2.13"), "{lines:?}");
        assert!(lines[2].contains("(ratio 1.00)"), "{lines:?}");
    }

    #[test]
    fn the_summary_stays_a_few_lines() {
        let old = golden();
        let new = crate::layers::tests::synthetic(30, 10);
        let lines = Changes::between(&old, &new).summary("x:y", (3, 9), 1, 5);
        assert_eq!(lines.len(), 1 + 5 + 1 + 1, "{lines:#?}");
        assert!(lines[6].starts_with("  … and "));
    }

    #[test]
    fn finds_paths_by_name_or_path() {
        let c = golden();
        let names = |v: Vec<&StorePath>| v.iter().map(|p| p.name().to_owned()).collect::<Vec<_>>();
        assert_eq!(names(find_paths(&c, "expat")), ["expat-2.5.0"]);
        assert_eq!(names(find_paths(&c, "LIB")), ["zlib-1.2.13", "glibc-2.36"]);
        assert_eq!(
            names(find_paths(
                &c,
                "/nix/store/k5g3i1wjm3p2cc7y7qv5s1hfd8w2yczr-expat-2.5.0/lib/libexpat.so"
            )),
            ["expat-2.5.0"]
        );
        assert!(find_paths(&c, "openssl").is_empty());
        assert_eq!(near_names(&c, "expt", 2)[0], "expat-2.5.0");
        let big = largest_paths(&c, 2);
        assert_eq!(big[0].0.name(), "python-http");
        assert_eq!(big[1].0.name(), "glibc-2.36");
    }
}
