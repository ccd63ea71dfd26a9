//! The root-filesystem conventions of the original recipe, as one small
//! deterministic layer on top of the closure:
//!
//! - `/tmp`, mode 1777;
//! - `/bin` → the result's `bin` (a symlink: no store byte stored twice);
//! - `/usr/local/<dir>` → the result's other top-level directories.
//!
//! Built here with the `tar` crate, not in the builder: it needs only the
//! result's path and directory names, which closure.json carries.

use std::io::Write;

use sha2::{Digest, Sha256};

use crate::closure::{hex, Closure};

/// The entries of the conventions layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conventions {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Entry {
    Dir { path: String, mode: u32 },
    Symlink { path: String, target: String },
}

impl Conventions {
    /// What the switches ask for, given this closure's result.
    pub fn new(closure: &Closure, switches: crate::manifest::Conventions) -> Self {
        let mut entries = Vec::new();
        if switches.tmp {
            entries.push(Entry::Dir {
                path: "tmp".into(),
                mode: 0o1777,
            });
        }
        let has = |d: &str| closure.result_dirs.iter().any(|x| x == d);
        if switches.bin && has("bin") {
            entries.push(Entry::Symlink {
                path: "bin".into(),
                target: format!("{}/bin", closure.result),
            });
        }
        let others: Vec<&String> = closure.result_dirs.iter().filter(|d| *d != "bin").collect();
        if switches.usr_local && !others.is_empty() {
            entries.push(Entry::Dir {
                path: "usr".into(),
                mode: 0o755,
            });
            entries.push(Entry::Dir {
                path: "usr/local".into(),
                mode: 0o755,
            });
            for d in others {
                entries.push(Entry::Symlink {
                    path: format!("usr/local/{d}"),
                    target: format!("{}/{d}", closure.result),
                });
            }
        }
        entries.sort_by(|a, b| a.path().cmp(b.path()));
        Conventions { entries }
    }

    /// Nothing to add.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the layer tarball: sorted entries, uid/gid 0, fixed mtime.
    pub fn write_tar(&self, out: impl Write, mtime: u64) -> std::io::Result<()> {
        let mut b = tar::Builder::new(out);
        for e in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(mtime);
            h.set_size(0);
            match e {
                Entry::Dir { path, mode } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
                }
                Entry::Symlink { path, target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    b.append_link(&mut h, path, target)?;
                }
            }
        }
        b.into_inner()?.flush()
    }

    /// `conventions-<first 20 hex of the sha256 of the tarball>.tar`.
    pub fn file_name(&self) -> String {
        let mut bytes = Vec::new();
        self.write_tar(&mut bytes, 1).expect("writing to memory");
        format!("conventions-{}.tar", &hex(&Sha256::digest(&bytes))[..20])
    }
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. } | Entry::Symlink { path, .. } => path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Conventions as Switches;

    fn golden() -> Closure {
        Closure::from_json(include_str!("../tests/golden/python-closure.json")).unwrap()
    }

    fn listing(c: &Conventions) -> Vec<String> {
        let mut bytes = Vec::new();
        c.write_tar(&mut bytes, 1).unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| format!(" -> {}", l.display()))
                    .unwrap_or_default();
                format!(
                    "{:o} {}{}",
                    h.mode().unwrap(),
                    e.path().unwrap().display(),
                    link
                )
            })
            .collect()
    }

    #[test]
    fn tmp_bin_and_usr_local() {
        let all = Switches {
            tmp: true,
            bin: true,
            usr_local: true,
        };
        let c = Conventions::new(&golden(), all);
        let r = "/nix/store/9gq0s3y4m1l2rwh1n0p3n7cfd2hiyc5a-python-http";
        assert_eq!(
            listing(&c),
            vec![
                format!("777 bin -> {r}/bin"),
                "1777 tmp/".to_owned(),
                "755 usr/".to_owned(),
                "755 usr/local/".to_owned(),
                format!("777 usr/local/share -> {r}/share"),
            ]
        );
    }

    #[test]
    fn switched_off_is_empty() {
        let none = Switches {
            tmp: false,
            bin: false,
            usr_local: false,
        };
        assert!(Conventions::new(&golden(), none).is_empty());
    }
}
