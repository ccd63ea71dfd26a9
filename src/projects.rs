//! What nixpack made on each engine and which project uses it: a small
//! JSON file in the user's state folder (`$XDG_STATE_HOME/nixpack/projects.json`,
//! else `~/.local/state/nixpack/projects.json`), written by every build.
//!
//! `nixpack gc` needs to know which builder images and store volumes a
//! project on this machine still uses. The engine cannot say (a store
//! volume is used by no container between builds, and a builder image is
//! shared by every project on the same base), and searching the disk for
//! manifests would be slow and never complete. So each build records
//! `(manifest, engine) → (builder, store volume, image names)`, and adds
//! the builder and the volume to what nixpack made on that engine. A
//! project "still uses" what its latest build recorded while its manifest
//! file exists; what nixpack made and no such project uses is garbage.
//! Whatever nixpack did not record (made before it recorded builds, or by
//! another user) is never removed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's contents.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Per engine (its `DOCKER_HOST`), per manifest path: what its latest
    /// build used.
    #[serde(default)]
    pub engines: BTreeMap<String, EngineRecord>,
}

/// What nixpack made on one engine, and who uses it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineRecord {
    /// Manifest path → what its latest build used.
    #[serde(default)]
    pub projects: BTreeMap<PathBuf, ProjectUse>,
    /// Every builder image reference nixpack recorded making or using.
    #[serde(default)]
    pub builders: BTreeSet<String>,
    /// Every store volume nixpack recorded making or using.
    #[serde(default)]
    pub volumes: BTreeSet<String>,
}

/// What one project's latest build used.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectUse {
    /// `nixpack-builder:<key>`.
    pub builder: String,
    /// The store volume.
    pub store_volume: String,
    /// The image names the project declares (to find their untagged
    /// leftovers).
    #[serde(default)]
    pub images: BTreeSet<String>,
}

/// What gc would remove on one engine, and what it keeps.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Garbage {
    /// Builder images no live project uses.
    pub builders: Vec<String>,
    /// Store volumes no live project uses.
    pub volumes: Vec<String>,
    /// Manifests that no longer exist (their records go).
    pub gone: Vec<PathBuf>,
}

impl Registry {
    /// The file: `$XDG_STATE_HOME/nixpack/projects.json`, else
    /// `$HOME/.local/state/nixpack/projects.json`.
    pub fn path() -> Option<PathBuf> {
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|s| !s.is_empty())
                    .map(|h| PathBuf::from(h).join(".local/state"))
            })?;
        Some(state.join("nixpack").join("projects.json"))
    }

    /// Reads the file; a missing or unreadable one is an empty registry
    /// (gc then removes nothing it cannot account for).
    pub fn read(path: &Path) -> Registry {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).expect("registry serializes");
        crate::outputs::write_atomic(path, text.as_bytes())
    }

    /// Records a build of `manifest` on `engine`.
    pub fn record(&mut self, engine: &str, manifest: &Path, used: ProjectUse) {
        let e = self.engines.entry(engine.to_owned()).or_default();
        e.builders.insert(used.builder.clone());
        e.volumes.insert(used.store_volume.clone());
        e.projects.insert(manifest.to_owned(), used);
    }

    /// What nothing uses on `engine`, given which manifests exist.
    pub fn garbage(&self, engine: &str, exists: impl Fn(&Path) -> bool) -> Garbage {
        let Some(e) = self.engines.get(engine) else {
            return Garbage::default();
        };
        let (live, gone): (Vec<_>, Vec<_>) = e.projects.iter().partition(|(m, _)| exists(m));
        let used_builders: BTreeSet<&String> = live.iter().map(|(_, u)| &u.builder).collect();
        let used_volumes: BTreeSet<&String> = live.iter().map(|(_, u)| &u.store_volume).collect();
        Garbage {
            builders: e
                .builders
                .iter()
                .filter(|b| !used_builders.contains(b))
                .cloned()
                .collect(),
            volumes: e
                .volumes
                .iter()
                .filter(|v| !used_volumes.contains(v))
                .cloned()
                .collect(),
            gone: gone.into_iter().map(|(m, _)| m.clone()).collect(),
        }
    }

    /// Image names of every project recorded on `engine`.
    pub fn image_names(&self, engine: &str) -> BTreeSet<String> {
        self.engines
            .get(engine)
            .map(|e| {
                e.projects
                    .values()
                    .flat_map(|p| p.images.iter().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets what gc removed and the projects whose manifest is gone.
    pub fn forget(
        &mut self,
        engine: &str,
        builders: &[String],
        volumes: &[String],
        gone: &[PathBuf],
    ) {
        if let Some(e) = self.engines.get_mut(engine) {
            for b in builders {
                e.builders.remove(b);
            }
            for v in volumes {
                e.volumes.remove(v);
            }
            for m in gone {
                e.projects.remove(m);
            }
        }
    }
}

/// Records a build in the user's registry, under its lock. A failure to
/// record is reported and does not fail the build: gc then keeps what it
/// cannot account for.
pub async fn record_build(engine: &str, manifest: &Path, used: ProjectUse) -> Result<(), String> {
    let path = Registry::path().ok_or("neither XDG_STATE_HOME nor HOME is set")?;
    let lock = path.with_extension("lock");
    let _turn = crate::outputs::lock_file(&lock, || {})
        .await
        .map_err(|e| format!("{}: {e}", lock.display()))?;
    let mut r = Registry::read(&path);
    let before = r.clone();
    r.record(engine, manifest, used);
    if r != before {
        r.write(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(b: &str, v: &str) -> ProjectUse {
        ProjectUse {
            builder: b.into(),
            store_volume: v.into(),
            images: BTreeSet::from(["app".to_owned()]),
        }
    }

    #[test]
    fn what_only_a_deleted_project_used_is_garbage() {
        let mut r = Registry::default();
        r.record("e", Path::new("/a/nixpack.toml"), used("b1", "v1"));
        r.record("e", Path::new("/b/nixpack.toml"), used("b1", "v2"));
        r.record("other", Path::new("/a/nixpack.toml"), used("b9", "v9"));
        let g = r.garbage("e", |m| m.starts_with("/b"));
        assert_eq!(g.builders, Vec::<String>::new(), "b1 is still used by /b");
        assert_eq!(g.volumes, vec!["v1".to_owned()]);
        assert_eq!(g.gone, vec![PathBuf::from("/a/nixpack.toml")]);
    }

    #[test]
    fn a_project_that_moved_to_another_builder_frees_the_old_one() {
        let mut r = Registry::default();
        r.record("e", Path::new("/a/nixpack.toml"), used("b1", "v1"));
        r.record("e", Path::new("/a/nixpack.toml"), used("b2", "v2"));
        let g = r.garbage("e", |_| true);
        assert_eq!(g.builders, vec!["b1".to_owned()]);
        assert_eq!(g.volumes, vec!["v1".to_owned()]);
        r.forget("e", &g.builders, &g.volumes, &g.gone);
        assert_eq!(r.garbage("e", |_| true), Garbage::default());
    }

    #[test]
    fn an_unknown_engine_has_no_garbage() {
        let r = Registry::default();
        assert_eq!(r.garbage("e", |_| false), Garbage::default());
    }
}
