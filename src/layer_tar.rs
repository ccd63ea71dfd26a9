//! One layer tar out of the NARs of its store paths: the single writer
//! every sink uses, so the bytes (and the DiffID) of a layer are the same
//! whether it is hashed, written to disk or pushed.
//!
//! # Why the bytes are deterministic
//!
//! The tar is a pure function of the NARs, their order and one `mtime`;
//! nothing of the machine leaks in. NARs are already canonical (sorted
//! names, no owners, times or permission bits beyond "executable"), and
//! every header field nixpack writes is fixed:
//!
//! | field        | value                                                     |
//! |--------------|-----------------------------------------------------------|
//! | order        | `nix/`, `nix/store/`, then each path's NAR, depth first    |
//! | names        | `nix/store/<hash>-<name>/…`, directories end in `/`        |
//! | mode         | dirs 0555, files 0444 (0555 if executable), symlinks 0777 |
//! | uid/gid      | 0, with empty uname/gname                                 |
//! | mtime        | the layer's `mtime`; no atime, ctime or xattrs           |
//!
//! These are the modes Nix itself gives a store path. `nix/` and
//! `nix/store/` are 0755 instead: they are not store contents but ordinary
//! parents that every layer repeats (the topmost wins), Docker makes
//! missing parents 0755 too, and an extractor that does not run as root and
//! applies modes as it goes (rootless unpackers) could not create the
//! store paths inside a 0555 `nix/store/`.
//!
//! Headers are written here, byte by byte, not by the `tar` crate, so no
//! crate upgrade can change an image id: GNU format (`ustar  \0` magic),
//! numbers in zero-padded octal, a `././@LongLink` entry (type `L` for a
//! name, `K` for a link target) before any header whose name or target
//! exceeds 100 bytes, and sizes past 8 GiB in GNU base-256. Names are raw
//! bytes, so non-UTF-8 names round-trip. The archive ends with two zero
//! blocks and no further record padding. [`TAR_FORMAT_VERSION`] names this
//! format in every layer's cache key; a golden test pins its bytes.
//!
//! # One pass
//!
//! Each NAR streams through once: the [`NarReader`] hashes and counts it
//! (checked against the NAR hash and size Nix recorded, which is how a
//! corrupted store path fails the build) while its files' contents go,
//! chunk by chunk, into the tar, whose bytes are hashed into the DiffID on
//! their way to the writer. No file is ever held whole in memory.

use std::io::{self, BufWriter, Read, Write};

use sha2::{Digest, Sha256};

use crate::archive::DiffId;
use crate::closure::{hex, PathInfo, STORE_DIR};
use crate::nar::{NarError, NarKind, NarReader, NarSummary};

/// Version of nixpack's layer tar format; part of every layer's cache key. Bump when bytes change.
pub const TAR_FORMAT_VERSION: u32 = 1;

const BLOCK: usize = 512;

/// Mode of `nix/` and `nix/store/` (see the module docs for why not 0555).
const PARENT_MODE: u32 = 0o755;

/// A layer tar being written; see the module docs.
pub struct LayerTar<W: Write> {
    out: DiffIdWriter<W>,
    mtime: u64,
    /// Reused for entry names.
    name: Vec<u8>,
    /// A path failed half-way: the tar is incomplete and must not end as
    /// if it were whole.
    broken: bool,
}

impl<W: Write> LayerTar<W> {
    /// Starts a layer: writes the `nix/` and `nix/store/` directory entries
    /// (0755, see the module docs). Every entry gets `mtime`.
    pub fn new(out: W, mtime: u64) -> io::Result<Self> {
        let mut tar = LayerTar {
            out: DiffIdWriter {
                inner: BufWriter::with_capacity(64 * 1024, out),
                hasher: Sha256::new(),
                written: 0,
            },
            mtime,
            name: Vec::new(),
            broken: false,
        };
        tar.entry(b"nix/", Type::Dir, PARENT_MODE, 0, b"")?;
        tar.entry(b"nix/store/", Type::Dir, PARENT_MODE, 0, b"")?;
        Ok(tar)
    }

    /// Reads exactly one NAR from `nar` and writes `nix/store/<base>` and everything under it,
    /// hashing the NAR (sha256) and counting its bytes as it streams; at the end checks them
    /// against `info.nar_hash` / `info.nar_size`.
    ///
    /// On an error the tar holds part of the path: the layer must be
    /// thrown away, and further calls (and [`finish`](Self::finish)) fail.
    /// `nar` should be buffered (a `BufReader` kept across the stream's
    /// NARs); nothing past the NAR is read from it.
    pub fn add_path(&mut self, info: &PathInfo, nar: &mut impl Read) -> Result<(), NarError> {
        if self.broken {
            return Err(NarError::Io(incomplete()));
        }
        // Until the path is whole and checked, the layer is not.
        self.broken = true;
        let found = self
            .copy_nar(info, nar)
            .map_err(|e| e.in_path(&info.path))?;
        if found.nar_size != info.nar_size {
            return Err(NarError::SizeMismatch {
                path: info.path.clone(),
                expected: info.nar_size,
                found: found.nar_size,
            });
        }
        if found.nar_hash != info.nar_hash {
            return Err(NarError::HashMismatch {
                path: info.path.clone(),
                expected: info.nar_hash,
                found: found.nar_hash,
            });
        }
        self.broken = false;
        Ok(())
    }

    /// Ends the archive; returns the writer, the layer's DiffID (sha256 of every tar byte) and its size.
    ///
    /// Fails after a failed [`add_path`](Self::add_path): a layer missing
    /// part of a path must never get a DiffID.
    pub fn finish(mut self) -> io::Result<(W, DiffId, u64)> {
        if self.broken {
            return Err(incomplete());
        }
        self.out.write_all(&[0; 2 * BLOCK])?;
        let DiffIdWriter {
            inner,
            hasher,
            written,
        } = self.out;
        let inner = inner.into_inner().map_err(io::IntoInnerError::into_error)?;
        let diff_id = DiffId(format!("sha256:{}", hex(&hasher.finalize())));
        Ok((inner, diff_id, written))
    }

    fn copy_nar(&mut self, info: &PathInfo, nar: &mut impl Read) -> Result<NarSummary, NarError> {
        let base = &info.path.as_str()[STORE_DIR.len() + 1..];
        let mut reader = NarReader::new(nar)?;
        while let Some(entry) = reader.next()? {
            let mut name = std::mem::take(&mut self.name);
            name.clear();
            name.extend_from_slice(b"nix/store/");
            name.extend_from_slice(base.as_bytes());
            if !entry.path.is_empty() {
                name.push(b'/');
                name.extend_from_slice(&entry.path);
            }
            match entry.kind {
                NarKind::Directory => {
                    name.push(b'/');
                    self.entry(&name, Type::Dir, 0o555, 0, b"")?;
                }
                NarKind::Symlink { target } => {
                    self.entry(&name, Type::Symlink, 0o777, 0, &target)?;
                }
                NarKind::Regular { executable, size } => {
                    let mode = if executable { 0o555 } else { 0o444 };
                    self.entry(&name, Type::File, mode, size, b"")?;
                    let copied = reader.copy_contents(&mut self.out)?;
                    debug_assert_eq!(copied, size);
                    self.pad(size)?;
                }
            }
            self.name = name;
        }
        reader.finish()
    }

    /// Writes one header (and the long-name entries it needs).
    fn entry(
        &mut self,
        name: &[u8],
        kind: Type,
        mode: u32,
        size: u64,
        link: &[u8],
    ) -> io::Result<()> {
        if name.len() > 100 {
            self.long_link(Type::LongName, name)?;
        }
        if link.len() > 100 {
            self.long_link(Type::LongLink, link)?;
        }
        let h = header(name, kind, mode, size, self.mtime, link);
        self.out.write_all(&h)
    }

    /// A GNU `././@LongLink` entry holding `value` and its NUL. Its own
    /// fields are all zero: readers only take its data.
    fn long_link(&mut self, kind: Type, value: &[u8]) -> io::Result<()> {
        let size = value.len() as u64 + 1;
        let h = header(b"././@LongLink", kind, 0, size, 0, b"");
        self.out.write_all(&h)?;
        self.out.write_all(value)?;
        self.out.write_all(&[0])?;
        self.pad(size)
    }

    /// Zeros from the end of `size` bytes of data to the next block.
    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem == 0 {
            return Ok(());
        }
        self.out.write_all(&[0; BLOCK][rem..])
    }
}

fn incomplete() -> io::Error {
    io::Error::other("a store path failed half-way into this layer; the layer is incomplete")
}

/// A header's type flag.
#[derive(Clone, Copy)]
enum Type {
    File = b'0' as isize,
    Symlink = b'2' as isize,
    Dir = b'5' as isize,
    LongLink = b'K' as isize,
    LongName = b'L' as isize,
}

/// One GNU tar header block. `name` and `link` are cut at 100 bytes (a
/// long-link entry before it carries the whole value).
fn header(name: &[u8], kind: Type, mode: u32, size: u64, mtime: u64, link: &[u8]) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let name = &name[..name.len().min(100)];
    h[..name.len()].copy_from_slice(name);
    number(&mut h[100..108], mode.into());
    number(&mut h[108..116], 0); // uid
    number(&mut h[116..124], 0); // gid
    number(&mut h[124..136], size);
    number(&mut h[136..148], mtime);
    h[156] = kind as u8;
    let link = &link[..link.len().min(100)];
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..265].copy_from_slice(b"ustar  \0"); // GNU magic and version
                                               // uname, gname, devmajor, devminor, atime, ctime: left empty.
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

/// A numeric field: zero-padded octal and a NUL when it fits, else GNU
/// base-256 (top bit set, big-endian), which every reader of Docker layers
/// understands, for sizes of 8 GiB and more.
fn number(field: &mut [u8], n: u64) {
    let digits = field.len() - 1;
    if n < 1u64 << (3 * digits) {
        field[..digits].copy_from_slice(format!("{n:0digits$o}").as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        let len = field.len();
        field[len - 8..].copy_from_slice(&n.to_be_bytes());
        field[0] |= 0x80;
    }
}

/// Hashes every byte on its way to the writer, for the DiffID.
struct DiffIdWriter<W: Write> {
    inner: BufWriter<W>,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for DiffIdWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closure::{NarHash, StorePath};
    use crate::nar::testing::{insert, nar, Node};
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// The real NAR from Nix 2.8 (see `nar.rs`), its path and NAR hash.
    const SMALL_NAR: &[u8] = include_bytes!("../tests/golden/small.nar");
    const SMALL_PATH: &str = "/nix/store/fl85xd8agk0cnpj9i53pav1mfadkywvb-small";
    const SMALL_HASH: &str = "sha256:0gcaabql3hw38dw05cixvdv7164zpiw6dg8csxxycs2ll2rww8ra";
    const OTHER_PATH: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-tricky-1.0";

    fn info(path: &str, nar: &[u8]) -> PathInfo {
        PathInfo {
            path: StorePath::parse(path).unwrap(),
            nar_size: nar.len() as u64,
            nar_hash: NarHash(Sha256::digest(nar).into()),
            references: BTreeSet::new(),
            deriver: None,
        }
    }

    fn file(executable: bool, contents: &[u8]) -> Node {
        Node::File {
            executable,
            contents: contents.to_vec(),
        }
    }

    fn dir<const N: usize>(entries: [(&[u8], Node); N]) -> Node {
        Node::Dir(entries.into_iter().map(|(k, v)| (k.to_vec(), v)).collect())
    }

    /// Every case a layer must get right.
    fn tricky() -> Node {
        let long_name = [b'n'; 150];
        let long_target = [&b"../"[..], &[b't'; 200]].concat();
        dir([
            (b"bin", dir([(b"run", file(true, b"#!/bin/sh\necho hi\n"))])),
            (b"blocks", file(false, &[0xab; 1025])),
            (b"caf\xe9", file(false, b"latin-1 name\n")),
            (
                b"deep",
                dir([(b"a", dir([(b"b", dir([(b"c", file(false, b"deep\n"))]))]))]),
            ),
            (b"empty", file(false, b"")),
            (b"emptydir", Node::Dir(BTreeMap::new())),
            (b"link", Node::Symlink(b"bin/run".to_vec())),
            (b"longlink", Node::Symlink(long_target)),
            (&long_name, file(false, b"long name\n")),
        ])
    }

    /// Builds a layer from `(path, NAR)` pairs streamed back to back.
    fn layer(paths: &[(&str, &[u8])]) -> (Vec<u8>, DiffId, u64) {
        let stream: Vec<u8> = paths.iter().flat_map(|(_, n)| n.to_vec()).collect();
        let mut r = &stream[..];
        let mut tar = LayerTar::new(Vec::new(), 1).unwrap();
        for (path, nar) in paths {
            tar.add_path(&info(path, nar), &mut r).unwrap();
        }
        assert!(r.is_empty());
        tar.finish().unwrap()
    }

    /// An entry as a user unpacking the layer sees it.
    #[derive(Debug, PartialEq)]
    struct Seen {
        path: Vec<u8>,
        kind: tar::EntryType,
        mode: u32,
        /// Contents of a file, target of a symlink.
        data: Vec<u8>,
    }

    /// Reads a layer back with the `tar` crate, checking what every entry
    /// must share (owner, mtime).
    fn read_back(bytes: &[u8], mtime: u64) -> Vec<Seen> {
        let mut ar = tar::Archive::new(bytes);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            assert_eq!(h.mtime().unwrap(), mtime);
            assert_eq!(h.username_bytes(), Some(&b""[..]));
            assert_eq!(h.groupname_bytes(), Some(&b""[..]));
            let kind = h.entry_type();
            let mode = h.mode().unwrap();
            let path = e.path_bytes().into_owned();
            let data = match e.link_name_bytes() {
                Some(l) if kind.is_symlink() => l.into_owned(),
                _ => {
                    let mut d = Vec::new();
                    e.read_to_end(&mut d).unwrap();
                    d
                }
            };
            seen.push(Seen {
                path,
                kind,
                mode,
                data,
            });
        }
        seen
    }

    /// The tree of each store path in a layer, checking each entry's mode
    /// against its kind.
    fn trees(seen: &[Seen]) -> BTreeMap<Vec<u8>, Node> {
        let mut trees: BTreeMap<Vec<u8>, Option<Node>> = BTreeMap::new();
        assert_eq!(seen[0].path, b"nix/");
        assert_eq!(seen[1].path, b"nix/store/");
        for s in &seen[..2] {
            assert_eq!((s.kind, s.mode), (tar::EntryType::Directory, 0o755));
        }
        for s in &seen[2..] {
            let rest = s
                .path
                .strip_prefix(b"nix/store/")
                .expect("under nix/store/");
            let (node, rest) = match s.kind {
                tar::EntryType::Directory => {
                    assert_eq!(s.mode, 0o555);
                    let rest = rest.strip_suffix(b"/").expect("directories end in /");
                    (Node::Dir(BTreeMap::new()), rest)
                }
                tar::EntryType::Symlink => {
                    assert_eq!(s.mode, 0o777);
                    (Node::Symlink(s.data.clone()), rest)
                }
                tar::EntryType::Regular => {
                    assert!(s.mode == 0o444 || s.mode == 0o555, "{:o}", s.mode);
                    (file(s.mode == 0o555, &s.data), rest)
                }
                k => panic!("unexpected {k:?}"),
            };
            let (base, below) = match rest.iter().position(|b| *b == b'/') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b""[..]),
            };
            insert(trees.entry(base.to_vec()).or_default(), below, node);
        }
        trees.into_iter().map(|(k, v)| (k, v.unwrap())).collect()
    }

    #[test]
    fn the_real_nix_nar_gives_a_pinned_layer() {
        let (bytes, diff_id, size) = layer(&[(SMALL_PATH, SMALL_NAR)]);
        assert_eq!(
            info(SMALL_PATH, SMALL_NAR).nar_hash,
            NarHash::parse(SMALL_HASH).unwrap(),
            "the golden NAR is the one Nix hashed"
        );
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(diff_id, crate::archive::diff_id(&bytes[..]).unwrap());
        // Pinned: a change here changes every image id nixpack builds.
        assert_eq!(
            diff_id.0,
            "sha256:007fb1dbbc3fcdab4b4cf58a439ac8264b56c43da70e1d8634370c658043194b"
        );
        let base = "nix/store/fl85xd8agk0cnpj9i53pav1mfadkywvb-small";
        let seen = read_back(&bytes, 1);
        let summary: Vec<(String, u32, &[u8])> = seen
            .iter()
            .map(|s| {
                (
                    String::from_utf8(s.path.clone()).unwrap(),
                    s.mode,
                    &s.data[..],
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("nix/".into(), 0o755, &b""[..]),
                ("nix/store/".into(), 0o755, b""),
                (format!("{base}/"), 0o555, b""),
                (format!("{base}/hello.txt"), 0o444, b"hello, nixpack\n"),
                (format!("{base}/link"), 0o777, b"hello.txt"),
                (format!("{base}/run.sh"), 0o555, b"#!/bin/sh\necho hi\n"),
                (format!("{base}/sub/"), 0o555, b""),
                (format!("{base}/sub/nested.txt"), 0o444, b"nested\n"),
            ]
        );
    }

    #[test]
    fn every_tricky_entry_round_trips_into_a_pinned_layer() {
        let tree = tricky();
        let tricky_nar = nar(&tree);
        let (bytes, diff_id, _) = layer(&[(SMALL_PATH, SMALL_NAR), (OTHER_PATH, &tricky_nar)]);
        assert_eq!(
            diff_id.0,
            "sha256:f813abe897e2425eaa96547486fbb2faec14236c14f1d326a303b4b9c138f527"
        );
        let seen = read_back(&bytes, 1);
        let got = trees(&seen);
        assert_eq!(
            got[&b"0123456789abcdfghijklmnpqrsvwxyz-tricky-1.0".to_vec()],
            tree
        );
        let paths: Vec<Vec<u8>> = seen[8..].iter().map(|s| s.path.clone()).collect();
        let p = |rest: &[u8]| {
            [
                &b"nix/store/0123456789abcdfghijklmnpqrsvwxyz-tricky-1.0"[..],
                rest,
            ]
            .concat()
        };
        assert_eq!(
            paths,
            [
                p(b"/"),
                p(b"/bin/"),
                p(b"/bin/run"),
                p(b"/blocks"),
                p(b"/caf\xe9"),
                p(b"/deep/"),
                p(b"/deep/a/"),
                p(b"/deep/a/b/"),
                p(b"/deep/a/b/c"),
                p(b"/empty"),
                p(b"/emptydir/"),
                p(b"/link"),
                p(b"/longlink"),
                p(&[&b"/"[..], &[b'n'; 150]].concat()),
            ],
            "NAR order, directories ending in /, long and non-UTF-8 names intact"
        );
        assert_eq!(seen[20].path, p(b"/longlink"));
        assert_eq!(seen[20].data, [&b"../"[..], &[b't'; 200]].concat());
    }

    #[test]
    fn a_store_path_may_be_a_single_file_or_symlink() {
        let exe = nar(&file(true, b"\x7fELF"));
        let link = nar(&Node::Symlink(b"/nix/store/x".to_vec()));
        let (bytes, _, _) = layer(&[(SMALL_PATH, &exe), (OTHER_PATH, &link)]);
        let seen = read_back(&bytes, 1);
        assert_eq!(seen[2].path, &SMALL_PATH.as_bytes()[1..]);
        assert_eq!((seen[2].mode, &seen[2].data[..]), (0o555, &b"\x7fELF"[..]));
        assert_eq!(seen[3].path, &OTHER_PATH.as_bytes()[1..]);
        assert_eq!(
            (seen[3].kind, &seen[3].data[..]),
            (tar::EntryType::Symlink, &b"/nix/store/x"[..])
        );
    }

    #[test]
    fn the_same_nars_give_the_same_bytes_and_mtime_is_the_only_knob() {
        let a = layer(&[(SMALL_PATH, SMALL_NAR)]);
        assert_eq!(a, layer(&[(SMALL_PATH, SMALL_NAR)]));
        let mut tar = LayerTar::new(Vec::new(), 1_700_000_000).unwrap();
        tar.add_path(&info(SMALL_PATH, SMALL_NAR), &mut &SMALL_NAR[..])
            .unwrap();
        let (bytes, diff_id, _) = tar.finish().unwrap();
        assert_ne!(diff_id, a.1);
        assert_eq!(read_back(&bytes, 1_700_000_000).len(), 8);
    }

    #[test]
    fn a_corrupted_store_path_fails_naming_it() {
        let mut corrupt = SMALL_NAR.to_vec();
        let i = corrupt.windows(6).position(|w| w == b"nested").unwrap();
        corrupt[i] = b'N';
        let good = info(SMALL_PATH, SMALL_NAR);
        let mut tar = LayerTar::new(io::sink(), 1).unwrap();
        let e = tar.add_path(&good, &mut &corrupt[..]).unwrap_err();
        assert!(
            matches!(&e, NarError::HashMismatch { path, expected, .. } if path == &good.path && *expected == good.nar_hash),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("{SMALL_PATH} is corrupted")),
            "{e}"
        );

        assert!(tar.finish().is_err(), "a broken layer gets no DiffID");

        let mut tar = LayerTar::new(io::sink(), 1).unwrap();
        let mut wrong_size = good.clone();
        wrong_size.nar_size += 8;
        let e = tar.add_path(&wrong_size, &mut &SMALL_NAR[..]).unwrap_err();
        assert!(
            matches!(e, NarError::SizeMismatch { expected, found, .. } if expected == found + 8),
            "{e:?}"
        );
        assert!(e.to_string().contains(SMALL_PATH));
    }

    #[test]
    fn a_malformed_nar_fails_naming_the_path() {
        let mut tar = LayerTar::new(io::sink(), 1).unwrap();
        let e = tar
            .add_path(&info(SMALL_PATH, SMALL_NAR), &mut &SMALL_NAR[..500])
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("malformed NAR of {SMALL_PATH}: the stream ends")),
            "{e}"
        );
    }

    /// A reader that hands out one byte per call, like a slow pipe.
    struct OneByte<'a>(&'a [u8]);

    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((b, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = *b;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn nars_trickling_in_one_byte_at_a_time_give_the_same_layer() {
        let tricky_nar = nar(&tricky());
        let stream = [SMALL_NAR, &tricky_nar].concat();
        let mut r = OneByte(&stream);
        let mut tar = LayerTar::new(Vec::new(), 1).unwrap();
        tar.add_path(&info(SMALL_PATH, SMALL_NAR), &mut r).unwrap();
        tar.add_path(&info(OTHER_PATH, &tricky_nar), &mut r)
            .unwrap();
        assert!(r.0.is_empty());
        let slow = tar.finish().unwrap();
        assert_eq!(
            slow,
            layer(&[(SMALL_PATH, SMALL_NAR), (OTHER_PATH, &tricky_nar)])
        );
    }

    #[test]
    fn headers_pin_octal_fields_and_base256_sizes_past_8_gib() {
        let h = header(b"nix/", Type::Dir, 0o755, 0, 1, b"");
        assert_eq!(&h[100..108], b"0000755\0");
        assert_eq!(&h[124..136], b"00000000000\0");
        assert_eq!(&h[136..148], b"00000000001\0");
        assert_eq!(&h[257..265], b"ustar  \0");
        for size in [(8u64 << 30) - 1, 8 << 30, 20 << 30, u64::MAX >> 1] {
            let h = header(b"big", Type::File, 0o444, size, 1, b"");
            let parsed = tar::Header::from_byte_slice(&h);
            assert_eq!(parsed.size().unwrap(), size, "{size}");
            assert_eq!(parsed.cksum().unwrap(), {
                let mut c = h;
                c[148..156].fill(b' ');
                c.iter().map(|b| u32::from(*b)).sum::<u32>()
            });
        }
        assert_eq!(
            header(b"big", Type::File, 0o444, 8 << 30, 1, b"")[124],
            0x80
        );
    }

    fn arb_name() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop::sample::select(vec![b'a', b'b', b'.', b'-', b' ', 0xe9, 0xff, b'\n']);
        prop::collection::vec(byte, 1..12).prop_filter("not . or ..", |n| n != b"." && n != b"..")
    }

    fn arb_node() -> impl Strategy<Value = Node> {
        let leaf = prop_oneof![
            (any::<bool>(), prop::collection::vec(any::<u8>(), 0..1100)).prop_map(
                |(executable, contents)| Node::File {
                    executable,
                    contents
                }
            ),
            prop::collection::vec(1u8..=255, 1..220).prop_map(Node::Symlink),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop::collection::btree_map(arb_name(), inner, 0..5).prop_map(Node::Dir)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_tree_reads_back_from_its_layer(a in arb_node(), b in arb_node()) {
            let (na, nb) = (nar(&a), nar(&b));
            let (bytes, _, _) = layer(&[(SMALL_PATH, &na), (OTHER_PATH, &nb)]);
            let got = trees(&read_back(&bytes, 1));
            let mut want = BTreeMap::new();
            want.insert(SMALL_PATH.as_bytes()[11..].to_vec(), a);
            want.insert(OTHER_PATH.as_bytes()[11..].to_vec(), b);
            prop_assert_eq!(got, want);
        }
    }

    /// `cargo test --release --lib -- --ignored --nocapture throughput`
    #[test]
    #[ignore = "a measurement: run in release mode"]
    fn throughput_of_a_512_mib_file() {
        use std::time::Instant;
        const SIZE: u64 = 512 << 20;
        let head = {
            let mut h = nar(&file(false, b""));
            h.truncate(h.len() - 24); // drop the empty contents and `)`
            h.extend(SIZE.to_le_bytes());
            h
        };
        let tail = nar(&file(false, b""))[..].to_vec();
        let tail = tail[tail.len() - 16..].to_vec(); // `)`; SIZE needs no padding
        let stream = || {
            head.as_slice()
                .chain(io::repeat(0x5a).take(SIZE))
                .chain(tail.as_slice())
        };
        let mib = |t: std::time::Duration| SIZE as f64 / (1 << 20) as f64 / t.as_secs_f64();

        // memcpy out of cache: 8 copies of 64 MiB.
        let src = vec![0x5au8; 64 << 20];
        let mut dst = vec![0u8; 64 << 20];
        let t = Instant::now();
        for _ in 0..8 {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
        eprintln!("memcpy:                   {:8.0} MiB/s", mib(t.elapsed()));

        let t = Instant::now();
        let nar_hash = {
            let mut h = Sha256::new();
            let mut s = stream();
            let mut b = vec![0u8; 256 * 1024];
            loop {
                let n = s.read(&mut b).unwrap();
                if n == 0 {
                    break;
                }
                h.update(&b[..n]);
            }
            NarHash(h.finalize().into())
        };
        eprintln!("read + sha256 of the NAR: {:8.0} MiB/s", mib(t.elapsed()));

        let info = PathInfo {
            path: StorePath::parse(OTHER_PATH).unwrap(),
            nar_size: head.len() as u64 + SIZE + tail.len() as u64,
            nar_hash,
            references: BTreeSet::new(),
            deriver: None,
        };
        let t = Instant::now();
        let mut tar = LayerTar::new(io::sink(), 1).unwrap();
        tar.add_path(&info, &mut stream()).unwrap();
        let (_, _, size) = tar.finish().unwrap();
        eprintln!("NAR → tar (2× sha256):    {:8.0} MiB/s", mib(t.elapsed()));
        assert!(size > SIZE);
    }
}
