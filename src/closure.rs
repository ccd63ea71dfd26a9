//! The runtime closure of a build: every store path with its NAR hash, NAR
//! size and references. Parsed once from what Nix itself prints
//! ([`Closure::from_nix`]: `nix-store --dump-db`, whose registration
//! format is the same from Nix 2.8 to today) and kept as `closure.json`.
//! Pure: parsing and queries, no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The Nix store directory the builder uses.
pub const STORE_DIR: &str = "/nix/store";

/// An absolute store path, `/nix/store/<32 chars of Nix base32>-<name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StorePath(String);

impl StorePath {
    /// Parses and checks a store path.
    pub fn parse(s: &str) -> Result<Self, String> {
        let base = s
            .strip_prefix(STORE_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| format!("`{s}` is not under {STORE_DIR}"))?;
        let (hash, name) = base
            .split_at_checked(32)
            .ok_or_else(|| format!("`{s}` is too short for a store path"))?;
        let hash_ok = hash
            .chars()
            .all(|c| "0123456789abcdfghijklmnpqrsvwxyz".contains(c));
        let name_ok = name.strip_prefix('-').is_some_and(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-._?=".contains(c))
        });
        if hash_ok && name_ok {
            Ok(StorePath(s.to_owned()))
        } else {
            Err(format!("`{s}` is not a valid store path"))
        }
    }

    /// The full path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the hash: `python3-3.11`.
    pub fn name(&self) -> &str {
        &self.0[STORE_DIR.len() + 1 + 33..]
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StorePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StorePath::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The sha256 of a store path's NAR serialisation, as Nix records it.
/// Shown as `sha256:<hex>`; parsed from that, from Nix's own base-32 form
/// (`sha256:<52 chars>`, what `nix-store --query --hash` prints) or from
/// bare hex (what some Nix versions print in `--dump-db`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NarHash(pub [u8; 32]);

/// Nix's base-32 alphabet (no e, o, u, t).
const NIX32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

impl NarHash {
    /// Parses `sha256:<hex>`, `sha256:<nix base-32>` or bare hex.
    pub fn parse(s: &str) -> Result<NarHash, String> {
        let body = s.strip_prefix("sha256:").unwrap_or(s);
        let bytes = match body.len() {
            64 => (0..32)
                .map(|i| u8::from_str_radix(body.get(2 * i..2 * i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>(),
            52 => nix32_decode(body),
            _ => None,
        };
        bytes
            .and_then(|b| b.try_into().ok())
            .map(NarHash)
            .ok_or_else(|| format!("`{s}` is not a sha256 NAR hash"))
    }

    /// `sha256:<hex>`.
    pub fn to_hex(&self) -> String {
        format!("sha256:{}", hex(&self.0))
    }

    /// `sha256:<nix base-32>`: the form of a `.narinfo`'s `NarHash` and of
    /// `nix-store --query --hash` (Nix's printHash32: the first character
    /// holds the highest bits).
    pub fn to_nix32(&self) -> String {
        let body: String = (0..52)
            .rev()
            .map(|n: usize| {
                let (i, j) = (n * 5 / 8, n * 5 % 8);
                let lo = u16::from(self.0[i]) >> j;
                let hi = self.0.get(i + 1).map_or(0, |b| u16::from(*b) << (8 - j));
                NIX32[usize::from((lo | hi) & 0x1f)] as char
            })
            .collect();
        format!("sha256:{body}")
    }
}

/// Nix's base-32 decoding: the last character holds the lowest bits.
fn nix32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = vec![0u8; 32];
    for (n, c) in s.bytes().rev().enumerate() {
        let digit = NIX32.iter().position(|a| *a == c)? as u16;
        let (i, j) = (n * 5 / 8, n * 5 % 8);
        out[i] |= (digit << j) as u8;
        let carry = digit >> (8 - j);
        match out.get_mut(i + 1) {
            Some(next) => *next |= carry as u8,
            None if carry != 0 => return None,
            None => {}
        }
    }
    Some(out)
}

impl fmt::Display for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for NarHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for NarHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NarHash::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One store path of the closure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathInfo {
    /// The path.
    pub path: StorePath,
    /// Size of its NAR serialisation in bytes (≈ bytes on disk).
    pub nar_size: u64,
    /// The sha256 of its NAR, checked as its bytes stream into a layer.
    pub nar_hash: NarHash,
    /// Store paths it refers to (may include itself).
    pub references: BTreeSet<StorePath>,
    /// The derivation (`.drv`) Nix recorded as having built it, when it
    /// knows one. Information only: another machine may record another
    /// `.drv` for the same output (fixed-output derivations), so it is no
    /// part of [`Closure::closure_hash`]. Missing in closure.json files
    /// written before nixpack kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deriver: Option<StorePath>,
}

/// A closure: the result and every path it needs at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    /// The build result (`nix-build`'s out link target).
    pub result: StorePath,
    /// Top-level directories of the result (`bin`, `share`, …).
    pub result_dirs: Vec<String>,
    /// Every path, keyed and sorted by path.
    #[serde(with = "paths_as_list")]
    pub paths: BTreeMap<StorePath, PathInfo>,
}

mod paths_as_list {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        m: &BTreeMap<StorePath, PathInfo>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.values())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<StorePath, PathInfo>, D::Error> {
        let list = Vec::<PathInfo>::deserialize(d)?;
        Ok(list.into_iter().map(|p| (p.path.clone(), p)).collect())
    }
}

impl Closure {
    /// Parses `closure.json` and checks that it is closed: the result and
    /// every reference are paths of the closure.
    pub fn from_json(text: &str) -> Result<Closure, String> {
        let c: Closure =
            serde_json::from_str(text).map_err(|e| format!("closure.json is malformed: {e}"))?;
        c.check().map_err(|e| format!("closure.json: {e}"))?;
        Ok(c)
    }

    /// The closure from the builder's raw Nix output: the result path
    /// (`result`), the result's top-level directories one per line
    /// (`result-dirs`) and `nix-store --dump-db` of every path of the
    /// closure (`closure.db`). That format is, per path: the path, its NAR
    /// hash (hex, with or without `sha256:`), its NAR size, its deriver (or
    /// an empty line), the number of references, then one reference per
    /// line.
    pub fn from_nix(result: &str, result_dirs: &str, dump_db: &str) -> Result<Closure, String> {
        let result = StorePath::parse(result.trim())?;
        let result_dirs = result_dirs
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        let mut lines = dump_db.lines().enumerate();
        let mut paths = BTreeMap::new();
        let bad = |n: usize, what: &str| format!("closure.db line {}: {what}", n + 1);
        while let Some((n, line)) = lines.next() {
            if line.is_empty() {
                continue;
            }
            let path = StorePath::parse(line).map_err(|e| bad(n, &e))?;
            let mut next = |what: &str| {
                lines
                    .next()
                    .ok_or_else(|| format!("closure.db ends inside {path} (expected {what})"))
            };
            let (n, hash) = next("its NAR hash")?;
            let nar_hash = NarHash::parse(hash).map_err(|e| bad(n, &e))?;
            let (n, size) = next("its NAR size")?;
            let nar_size = size
                .parse()
                .map_err(|_| bad(n, &format!("`{size}` is not a NAR size")))?;
            let (n, deriver) = next("its deriver")?;
            let deriver = match deriver {
                "" => None,
                d => Some(StorePath::parse(d).map_err(|e| bad(n, &e))?),
            };
            let (n, count) = next("its reference count")?;
            let count: usize = count
                .parse()
                .map_err(|_| bad(n, &format!("`{count}` is not a reference count")))?;
            let mut references = BTreeSet::new();
            for _ in 0..count {
                let (n, r) = next("a reference")?;
                references.insert(StorePath::parse(r).map_err(|e| bad(n, &e))?);
            }
            let info = PathInfo {
                path: path.clone(),
                nar_size,
                nar_hash,
                references,
                deriver,
            };
            if paths.insert(path.clone(), info).is_some() {
                return Err(format!("closure.db lists {path} twice"));
            }
        }
        let closure = Closure {
            result,
            result_dirs,
            paths,
        };
        closure.check()?;
        Ok(closure)
    }

    /// The result and every reference are paths of the closure, and the
    /// result directories are plain names.
    fn check(&self) -> Result<(), String> {
        if !self.paths.contains_key(&self.result) {
            return Err(format!(
                "the closure does not list its result {}",
                self.result
            ));
        }
        for info in self.paths.values() {
            if let Some(missing) = info
                .references
                .iter()
                .find(|r| !self.paths.contains_key(*r))
            {
                return Err(format!(
                    "the closure is not closed: {} refers to {missing}, which is not listed",
                    info.path
                ));
            }
        }
        for d in &self.result_dirs {
            if d.is_empty() || d.contains('/') || d == "." || d == ".." {
                return Err(format!("the closure lists a bad result directory `{d}`"));
            }
        }
        Ok(())
    }

    /// `closure.json`: pretty, stable JSON of the whole closure.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("closure serializes");
        text.push('\n');
        text
    }

    /// Total NAR size.
    pub fn nar_size(&self) -> u64 {
        self.paths.values().map(|p| p.nar_size).sum()
    }

    /// A hex sha256 of the canonical closure (paths, sizes, hashes,
    /// references), stable across builds of the same closure. Derivers are
    /// left out: they are not the same on every machine.
    pub fn closure_hash(&self) -> String {
        let mut canonical = self.clone();
        for info in canonical.paths.values_mut() {
            info.deriver = None;
        }
        let canonical = serde_json::to_vec(&canonical).expect("closure serializes");
        hex(&Sha256::digest(canonical))
    }

    /// The shortest reference chain from the result to `target`, both
    /// included (`[result]` when `target` is the result); `None` when the
    /// result does not reach it. Breadth-first over references in
    /// store-path order, so among chains of equal length the first in that
    /// order wins, every time.
    pub fn shortest_chain(&self, target: &StorePath) -> Option<Vec<&StorePath>> {
        let mut parent: BTreeMap<&StorePath, &StorePath> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([&self.result]);
        let mut seen: BTreeSet<&StorePath> = BTreeSet::from([&self.result]);
        while let Some(p) = queue.pop_front() {
            if p == target {
                let mut chain = vec![p];
                let mut at = p;
                while let Some(up) = parent.get(at) {
                    chain.push(up);
                    at = up;
                }
                chain.reverse();
                return Some(chain);
            }
            for r in &self.paths.get(p)?.references {
                if seen.insert(r) {
                    parent.insert(r, p);
                    queue.push_back(r);
                }
            }
        }
        None
    }

    /// For each path, the set of paths that (transitively) depend on it,
    /// excluding itself.
    pub fn dependents(&self) -> BTreeMap<&StorePath, BTreeSet<&StorePath>> {
        let mut out: BTreeMap<&StorePath, BTreeSet<&StorePath>> =
            self.paths.keys().map(|p| (p, BTreeSet::new())).collect();
        for start in self.paths.keys() {
            // Everything reachable from `start` has `start` as a dependent.
            let mut stack: Vec<&StorePath> = vec![start];
            let mut seen: BTreeSet<&StorePath> = BTreeSet::new();
            while let Some(p) = stack.pop() {
                for r in &self.paths[p].references {
                    if r != p && r != start && seen.insert(r) {
                        stack.push(r);
                    }
                }
            }
            for r in seen {
                out.get_mut(r).expect("closed").insert(start);
            }
        }
        out
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN: &str = include_str!("../tests/golden/python-closure.json");

    #[test]
    fn parses_the_golden_closure() {
        let c = Closure::from_json(GOLDEN).unwrap();
        assert_eq!(c.paths.len(), 4);
        assert!(c.result.name().starts_with("python-http"));
        let deps = c.dependents();
        let glibc = c
            .paths
            .keys()
            .find(|p| p.name().starts_with("glibc"))
            .unwrap();
        assert_eq!(deps[glibc].len(), 3, "everything else depends on glibc");
        assert_eq!(deps[&c.result].len(), 0);
    }

    #[test]
    fn refuses_an_open_closure() {
        let open = GOLDEN.replacen(
            "\"references\": [\"/nix/store/",
            "\"references\": [\"/nix/store/00000000000000000000000000000000-gone\", \"/nix/store/",
            1,
        );
        assert!(Closure::from_json(&open)
            .unwrap_err()
            .contains("not closed"));
    }

    /// `nix-store --dump-db` of a three-path closure, as Nix 2.8 printed it
    /// in the bookworm builder (hashes in bare hex, drv derivers).
    const DUMP_DB_2_8: &str = include_str!("../tests/golden/dump-db-nix-2.8.txt");

    #[test]
    fn parses_nix_dump_db() {
        let c = Closure::from_nix(
            "/nix/store/gxmg97m4di946nxk8g7xi426zddfdmmw-top\n",
            "",
            DUMP_DB_2_8,
        )
        .unwrap();
        assert_eq!(c.paths.len(), 3);
        let top = &c.paths[&c.result];
        assert_eq!(top.nar_size, 208);
        assert_eq!(
            top.nar_hash.to_string(),
            "sha256:59a283dff55a582b64ca408cc32d2215ebeedc1294eff145f0cdca4bc0c5331f"
        );
        let names: Vec<&str> = top.references.iter().map(StorePath::name).collect();
        assert_eq!(names, ["b", "a-1.0"]);
        // The same closure written by a newer Nix with `sha256:` prefixes.
        let prefixed = DUMP_DB_2_8
            .lines()
            .map(|l| {
                if l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()) {
                    format!("sha256:{l}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let again = Closure::from_nix(c.result.as_str(), "", &prefixed).unwrap();
        assert_eq!(again, c);
        // Nix 2.26 (trixie) prints the same closure the same way.
        let nix_2_26 = include_str!("../tests/golden/dump-db-nix-2.26.txt");
        assert_eq!(
            Closure::from_nix(c.result.as_str(), "", nix_2_26).unwrap(),
            c
        );
        // closure.json round-trips.
        assert_eq!(Closure::from_json(&c.to_json()).unwrap(), c);
    }

    #[test]
    fn keeps_the_deriver_from_dump_db_out_of_the_closure_hash() {
        let c = Closure::from_nix(
            "/nix/store/gxmg97m4di946nxk8g7xi426zddfdmmw-top",
            "",
            DUMP_DB_2_8,
        )
        .unwrap();
        let a = c.paths.values().find(|p| p.path.name() == "a-1.0").unwrap();
        assert_eq!(
            a.deriver.as_ref().map(StorePath::as_str),
            Some("/nix/store/a0mw9jhb1dzff8lq9kv8a99a0jaqkaw5-a-1.0.drv")
        );
        // closure.json keeps it, and reads back.
        assert!(c.to_json().contains("a-1.0.drv"));
        assert_eq!(Closure::from_json(&c.to_json()).unwrap(), c);
        // Another machine may record another deriver: same closure hash.
        let mut other = c.clone();
        for info in other.paths.values_mut() {
            info.deriver = None;
        }
        assert_eq!(other.closure_hash(), c.closure_hash());
        // A path without a deriver (an empty line) has none.
        let none = DUMP_DB_2_8.replace("/nix/store/a0mw9jhb1dzff8lq9kv8a99a0jaqkaw5-a-1.0.drv", "");
        let c = Closure::from_nix(c.result.as_str(), "", &none).unwrap();
        assert!(c.paths.values().any(|p| p.deriver.is_none()));
    }

    #[test]
    fn closure_json_without_derivers_still_loads_with_the_same_hash() {
        // Written before nixpack kept derivers: the golden file has none.
        let c = Closure::from_json(GOLDEN).unwrap();
        assert!(c.paths.values().all(|p| p.deriver.is_none()));
        assert!(!c.to_json().contains("deriver"));
        assert_eq!(
            Closure::from_json(&c.to_json()).unwrap().closure_hash(),
            c.closure_hash()
        );
    }

    #[test]
    fn shortest_chain_from_the_result() {
        let c = Closure::from_json(GOLDEN).unwrap();
        let by_name = |n: &str| c.paths.keys().find(|p| p.name().starts_with(n)).unwrap();
        let names = |chain: Vec<&StorePath>| -> Vec<String> {
            chain.iter().map(|p| p.name().to_owned()).collect()
        };
        assert_eq!(
            names(c.shortest_chain(by_name("expat")).unwrap()),
            ["python-http", "expat-2.5.0"]
        );
        // glibc is referenced directly too: the chain is one step, not via zlib.
        assert_eq!(
            names(c.shortest_chain(by_name("glibc")).unwrap()),
            ["python-http", "glibc-2.36"]
        );
        assert_eq!(names(c.shortest_chain(&c.result).unwrap()), ["python-http"]);
        // A deeper closure: result → leaf → lib → base, never longer.
        let s = crate::layers::tests::synthetic(30, 10);
        let dependents = s.dependents();
        for p in s.paths.keys() {
            // The generator leaves some libraries unused: no chain to them.
            let Some(chain) = s.shortest_chain(p) else {
                assert!(!dependents[p].contains(&s.result), "{p} is reachable");
                continue;
            };
            assert_eq!(chain.first(), Some(&&s.result));
            assert_eq!(chain.last(), Some(&p));
            for w in chain.windows(2) {
                assert!(
                    s.paths[w[0]].references.contains(w[1]),
                    "each step is a reference"
                );
            }
            if p.name() == "base0" {
                assert_eq!(chain.len(), 4, "result, a leaf, a library, the base");
            }
        }
    }

    #[test]
    fn refuses_broken_dump_db() {
        let result = "/nix/store/gxmg97m4di946nxk8g7xi426zddfdmmw-top";
        let lines: Vec<&str> = DUMP_DB_2_8.lines().collect();
        let truncated = lines[..lines.len() - 1].join("\n");
        assert!(Closure::from_nix(result, "", &truncated)
            .unwrap_err()
            .contains("ends inside"));
        let open: String = DUMP_DB_2_8.lines().skip(5).collect::<Vec<_>>().join("\n");
        assert!(Closure::from_nix(result, "", &open)
            .unwrap_err()
            .contains("not closed"));
        assert!(Closure::from_nix(result, "", "")
            .unwrap_err()
            .contains("result"));
        let bad_size = DUMP_DB_2_8.replacen("\n120\n", "\n12x\n", 1);
        assert!(Closure::from_nix(result, "", &bad_size)
            .unwrap_err()
            .contains("line 3"));
    }

    #[test]
    fn nar_hashes_in_every_form_nix_prints() {
        // The NAR hash of an empty regular file, as `nix-store --query
        // --hash` (base-32) and `--dump-db` (hex) print it.
        let hex_form = "sha256:aad1a5d2e3d5dcd4c5e2d7b1e2a5b2c4d3e0f1a2b3c4d5e6f708192a3b4c5d6e";
        let h = NarHash::parse(hex_form).unwrap();
        assert_eq!(h.to_string(), hex_form);
        assert_eq!(NarHash::parse(&hex_form[7..]).unwrap(), h);
        // Round trip through Nix base-32.
        let nix32 = h.to_nix32();
        assert_eq!(nix32.len(), 7 + 52);
        assert_eq!(NarHash::parse(&nix32).unwrap(), h);
        // The empty file's NAR hash as `nix-hash --type sha256 --to-base32` prints it.
        let empty = NarHash::parse(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        )
        .unwrap();
        assert_eq!(
            empty.to_nix32(),
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
        assert!(NarHash::parse("sha256:xyz").is_err());
        assert!(NarHash::parse(&format!("sha256:{}", "e".repeat(52))).is_err());
    }

    #[test]
    fn store_paths() {
        assert!(StorePath::parse("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x-1.0").is_ok());
        assert!(StorePath::parse("/nix/store/0123456789abcdfghijklmnpqrsvwxyz").is_err());
        assert!(StorePath::parse("/nix/store/0123456789abcdfghijklmnpqrsvwxye-x").is_err());
        assert!(StorePath::parse("/usr/lib/x").is_err());
    }
}
