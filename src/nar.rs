//! Nix archives (NARs), read as a stream, and the `nix-store --serve`
//! protocol that asks Nix for them.
//!
//! # The NAR format
//!
//! A NAR is Nix's canonical serialisation of one store path: no owners, no
//! times, no permissions beyond "executable", directory entries sorted by
//! name. Nix hashes it to get a path's NAR hash, so a NAR read here can be
//! checked against what Nix recorded. Every token is a *string*: a u64
//! little-endian length, the bytes, then zeros up to a multiple of 8.
//!
//! ```text
//! nar       = "nix-archive-1" node
//! node      = "(" "type" ( regular | symlink | directory ) ")"
//! regular   = "regular" [ "executable" "" ] "contents" <string: the file>
//! symlink   = "symlink" "target" <string>
//! directory = "directory" { "entry" "(" "name" <string> "node" node ")" }
//! ```
//!
//! [`NarReader`] is a pull parser over any [`Read`]: it hands out one
//! [`NarEntry`] at a time, depth first, in the NAR's own order, and lets
//! the caller stream a file's contents out ([`NarReader::copy_contents`])
//! without holding them: a store path may hold files of many GiB. It reads
//! **exactly** the bytes of one NAR and never past its end, because the
//! serve protocol sends the next NAR right behind it; it hashes (sha256)
//! and counts every byte it reads, so the caller can check the NAR hash
//! and size in the same pass ([`NarReader::finish`]). It never buffers
//! ahead, so give it a buffered reader (a `BufReader` kept across NARs
//! stays exact: what it buffered belongs to the next NAR).
//!
//! It rejects what Nix would never write and what could escape or confuse
//! a layer: entry names that are empty, hold `/` or NUL, are `.` or `..`,
//! are longer than a file name can be, or are not strictly increasing;
//! non-zero padding; nesting deeper than [`MAX_DEPTH`]; unknown tokens.
//! A malformed or truncated NAR is an error, never a panic.
//!
//! # The dump side of `nix-store --serve`
//!
//! `nix-store --serve` (Nix's ssh-store protocol; unchanged for this use
//! between the 2.8-era and current sources, and checked against Nix 2.8
//! itself) reads commands on stdin and writes answers on stdout; every
//! integer is a u64 little-endian:
//!
//! ```text
//! client → server   SERVE_MAGIC_1, client version,
//!                   then per path: cmdDumpStorePath (3), <string: path>
//! server → client   SERVE_MAGIC_2, server version (major 2: 0x2xx),
//!                   then per path, in request order: its NAR
//! ```
//!
//! The server answers a dump with the bare NAR (no length, no framing),
//! flushes, and exits when stdin ends. [`serve_dump_request`] builds the
//! whole stdin at once and [`read_serve_hello`] checks the greeting; the
//! NARs that follow are read with one [`NarReader`] each. A path the
//! server cannot dump ends its output (the reason goes to its stderr), so
//! that NAR reads as truncated; the caller then shows the server's stderr.

use std::io::{self, Read, Write};

use miette::Diagnostic;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::closure::{NarHash, StorePath};

/// The first string of every NAR.
pub const NAR_MAGIC: &[u8] = b"nix-archive-1";

/// What a client sends first to `nix-store --serve`.
pub const SERVE_MAGIC_1: u64 = 0x390c_9deb;

/// What `nix-store --serve` answers first.
pub const SERVE_MAGIC_2: u64 = 0x5452_eecb;

/// The protocol version nixpack announces: 2.7 (`0x207`).
///
/// The server never rejects a client version: Nix 2.8 keeps it as sent,
/// current Nix takes `min(client, own)`, and the dump command does not look
/// at it in any version (it only shapes build and path-info answers). 2.7
/// is what both ends of nixpack's range speak themselves — Nix 2.8 answers
/// `0x207` (checked against the real `nix-store --serve` of Nix 2.8), and
/// current Nix defines `SERVE_PROTOCOL_VERSION (2 << 8 | 7)` — so no server
/// is told of a protocol it does not know, and it is above 2.5, the oldest
/// version current Nix accepts from a peer.
pub const SERVE_CLIENT_VERSION: u64 = 0x207;

/// The serve command that dumps one store path as a NAR.
pub const CMD_DUMP_STORE_PATH: u64 = 3;

/// Deepest directory nesting accepted. Real store paths nest a few dozen
/// levels at most (deep `node_modules` included); the bound keeps a hostile
/// stream from growing the directory stack without end.
pub const MAX_DEPTH: usize = 512;

/// Longest entry name: Linux's NAME_MAX. Nix could not have restored a
/// longer name into its store, so no real NAR holds one.
const MAX_NAME: u64 = 255;

/// Longest symlink target: PATH_MAX less its NUL, what `symlink(2)` takes.
const MAX_TARGET: u64 = 4095;

/// Longest keyword token (`directory`, `executable`, …), with room to spare.
const MAX_TOKEN: u64 = 16;

/// Chunk in which file contents stream through: big enough to amortise the
/// per-call cost of hashing and writing, small enough to stay in cache.
const CHUNK: usize = 256 * 1024;

/// Turning NARs into layers failed.
#[derive(Debug, Error, Diagnostic)]
#[non_exhaustive]
pub enum NarError {
    /// Reading the stream or writing the layer failed.
    #[error("I/O error while streaming store paths into a layer: {0}")]
    #[diagnostic(
        code(nixpack::nar::io),
        help("check free disk space where layers are written, and that the builder container is still running")
    )]
    Io(#[from] io::Error),
    /// The bytes are not a NAR nixpack can accept.
    #[error("malformed NAR{}: {reason}", for_path(.path))]
    #[diagnostic(
        code(nixpack::nar::malformed),
        help("the builder sent something that is not a NAR from `nix-store --serve`; check the builder's stderr above, and build again")
    )]
    Malformed {
        /// The store path being read, when known.
        path: Option<StorePath>,
        /// What is wrong, and where.
        reason: String,
    },
    /// The NAR does not hash to what Nix recorded: the path is corrupted.
    #[error("{path} is corrupted in the builder's store: its NAR hashes to {found}, but Nix recorded {expected}")]
    #[diagnostic(
        code(nixpack::nar::hash_mismatch),
        help("repair it in the builder (`nix-store --verify --check-contents --repair`), or remove the builder's Nix store volume and build again")
    )]
    HashMismatch {
        /// The corrupted path.
        path: StorePath,
        /// The NAR hash Nix recorded.
        expected: NarHash,
        /// The NAR hash of the bytes received.
        found: NarHash,
    },
    /// The NAR is not as long as Nix recorded: the path is corrupted.
    #[error("{path} is corrupted in the builder's store: its NAR is {found} bytes, but Nix recorded {expected}")]
    #[diagnostic(
        code(nixpack::nar::size_mismatch),
        help("repair it in the builder (`nix-store --verify --check-contents --repair`), or remove the builder's Nix store volume and build again")
    )]
    SizeMismatch {
        /// The corrupted path.
        path: StorePath,
        /// The NAR size Nix recorded.
        expected: u64,
        /// The NAR size received.
        found: u64,
    },
    /// `nix-store --serve` did not answer with its greeting.
    #[error("`nix-store --serve` did not greet as expected: {reason}")]
    #[diagnostic(
        code(nixpack::nar::bad_hello),
        help("the builder image needs a Nix with `nix-store --serve` (protocol 2.x); its stderr above says why it stopped")
    )]
    BadHello {
        /// What came instead.
        reason: String,
    },
}

fn for_path(path: &Option<StorePath>) -> String {
    path.as_ref()
        .map(|p| format!(" of {p}"))
        .unwrap_or_default()
}

impl NarError {
    /// Names the store path a `Malformed` error happened in, if not yet
    /// named; other errors are returned as they are.
    pub fn in_path(self, store_path: &StorePath) -> NarError {
        match self {
            NarError::Malformed { path: None, reason } => NarError::Malformed {
                path: Some(store_path.clone()),
                reason,
            },
            e => e,
        }
    }
}

fn malformed(reason: String) -> NarError {
    NarError::Malformed { path: None, reason }
}

fn failed() -> NarError {
    malformed("read on after an earlier error".into())
}

/// The NAR hash and size of a NAR read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NarSummary {
    /// sha256 of every byte of the NAR.
    pub nar_hash: NarHash,
    /// Number of bytes of the NAR.
    pub nar_size: u64,
}

/// One node of a NAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarEntry {
    /// Path below the store path: names joined by `/`, empty for the
    /// store path itself. Raw bytes: names need not be UTF-8.
    pub path: Vec<u8>,
    /// What the node is.
    pub kind: NarKind,
}

/// What a NAR node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NarKind {
    /// A directory; its entries follow, sorted by name.
    Directory,
    /// A regular file; its `size` bytes are read next
    /// ([`NarReader::copy_contents`]).
    Regular {
        /// Whether Nix marked it executable.
        executable: bool,
        /// Length of its contents.
        size: u64,
    },
    /// A symbolic link.
    Symlink {
        /// Where it points, as stored (raw bytes).
        target: Vec<u8>,
    },
}

/// Where the parser is in the NAR.
enum State {
    /// The root node comes next.
    Root,
    /// Inside a regular file: `remaining` content bytes, then padding and `)`.
    Contents { remaining: u64, size: u64 },
    /// A node's closing `)` has been read.
    NodeEnd,
    /// Inside a directory: `entry` or `)` comes next.
    InDir,
    /// The NAR has been read to its end.
    Done,
    /// An error happened: the stream's position is unknown.
    Failed,
}

/// An open directory.
struct Dir {
    /// Length of its path in `NarReader::path`.
    path_len: usize,
    /// Its last entry's name, to check the next one sorts after it.
    last: Option<Vec<u8>>,
}

/// A streaming parser for one NAR; see the module docs.
pub struct NarReader<R: Read> {
    inner: R,
    hasher: Sha256,
    offset: u64,
    state: State,
    path: Vec<u8>,
    dirs: Vec<Dir>,
}

impl<R: Read> NarReader<R> {
    /// Starts reading a NAR: reads and checks its magic.
    pub fn new(inner: R) -> Result<Self, NarError> {
        let mut r = NarReader {
            inner,
            hasher: Sha256::new(),
            offset: 0,
            state: State::Root,
            path: Vec::new(),
            dirs: Vec::new(),
        };
        let magic = r.read_string(NAR_MAGIC.len() as u64, "the NAR magic")?;
        if magic != NAR_MAGIC {
            return Err(malformed(format!(
                "it does not start with `nix-archive-1` but with `{}`",
                magic.escape_ascii()
            )));
        }
        Ok(r)
    }

    /// The next node, depth first in NAR order; `None` at the end of the
    /// NAR (nothing past it is read). Unread contents of the previous file
    /// are skipped (and hashed).
    #[allow(clippy::should_implement_trait)] // fallible, and borrows self between calls
    pub fn next(&mut self) -> Result<Option<NarEntry>, NarError> {
        let next = self.step();
        if next.is_err() {
            self.state = State::Failed;
        }
        next
    }

    fn step(&mut self) -> Result<Option<NarEntry>, NarError> {
        loop {
            match self.state {
                State::Root => {
                    self.state = State::Done; // until the node says otherwise
                    return self.node().map(Some);
                }
                State::Contents { .. } => {
                    self.copy_contents(&mut io::sink())?;
                }
                State::NodeEnd => {
                    if self.dirs.is_empty() {
                        self.state = State::Done;
                        return Ok(None);
                    }
                    self.expect(b")", "the end of a directory entry")?;
                    self.state = State::InDir;
                }
                State::InDir => {
                    let token = self.read_string(MAX_TOKEN, "a directory's next entry")?;
                    match &token[..] {
                        b"entry" => return self.entry().map(Some),
                        b")" => {
                            self.dirs.pop();
                            self.state = State::NodeEnd;
                        }
                        other => return Err(self.unexpected("`entry` or `)`", other)),
                    }
                }
                State::Done => return Ok(None),
                State::Failed => return Err(failed()),
            }
        }
    }

    /// Streams the current file's remaining contents into `out`, then reads
    /// the file's padding and end. Returns the number of bytes copied; 0
    /// when the current node is not a file. The contents are never held
    /// whole: they pass through in chunks.
    pub fn copy_contents(&mut self, out: &mut impl Write) -> Result<u64, NarError> {
        let copied = self.copy(out);
        if copied.is_err() {
            self.state = State::Failed;
        }
        copied
    }

    fn copy(&mut self, out: &mut impl Write) -> Result<u64, NarError> {
        let (remaining, size) = match self.state {
            State::Contents { remaining, size } => (remaining, size),
            State::Failed => return Err(failed()),
            _ => return Ok(0),
        };
        let mut buf = vec![0u8; remaining.min(CHUNK as u64) as usize];
        let mut left = remaining;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = match self.inner.read(&mut buf[..want]) {
                Ok(0) => return Err(self.truncated()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NarError::Io(e)),
            };
            self.hasher.update(&buf[..n]);
            self.offset += n as u64;
            left -= n as u64;
            // Kept current so that an error while writing leaves a state
            // that still describes the stream.
            self.state = State::Contents {
                remaining: left,
                size,
            };
            out.write_all(&buf[..n])?;
        }
        self.read_padding(size)?;
        self.expect(b")", "the end of a regular file")?;
        self.state = State::NodeEnd;
        Ok(remaining)
    }

    /// Reads the NAR to its end (skipping what the caller did not read)
    /// and returns its hash and size. Reads nothing past the NAR. After an
    /// earlier error it fails: there is no summary of a broken NAR.
    pub fn finish(mut self) -> Result<NarSummary, NarError> {
        while self.next()?.is_some() {}
        Ok(NarSummary {
            nar_hash: NarHash(self.hasher.finalize().into()),
            nar_size: self.offset,
        })
    }

    /// Reads `entry` after the keyword: `( name <n> node <node>`.
    fn entry(&mut self) -> Result<NarEntry, NarError> {
        self.expect(b"(", "the start of a directory entry")?;
        self.expect(b"name", "an entry's `name`")?;
        let name = self.read_string(MAX_NAME, "an entry name")?;
        let bad = if name.is_empty() {
            Some("is empty")
        } else if name == b"." || name == b".." {
            Some("is `.` or `..`")
        } else if name.contains(&b'/') {
            Some("contains `/`")
        } else if name.contains(&0) {
            Some("contains a NUL byte")
        } else {
            None
        };
        let dir = self
            .dirs
            .last_mut()
            .expect("entries are read inside a directory");
        if let Some(bad) = bad {
            let at = self.offset;
            return Err(malformed(format!(
                "entry name `{}` {bad} (in `{}`, at byte {at})",
                name.escape_ascii(),
                self.path[..dir.path_len].escape_ascii()
            )));
        }
        if dir.last.as_ref().is_some_and(|last| *last >= name) {
            let (at, last) = (self.offset, dir.last.take().unwrap_or_default());
            return Err(malformed(format!(
                "entry `{}` does not sort after `{}` (in `{}`, at byte {at}); NARs list names sorted and unique",
                name.escape_ascii(),
                last.escape_ascii(),
                self.path[..dir.path_len].escape_ascii()
            )));
        }
        let path_len = dir.path_len;
        self.path.truncate(path_len);
        if path_len > 0 {
            self.path.push(b'/');
        }
        self.path.extend_from_slice(&name);
        dir.last = Some(name);
        self.expect(b"node", "an entry's `node`")?;
        self.node()
    }

    /// Reads a node up to its contents: `( type …`.
    fn node(&mut self) -> Result<NarEntry, NarError> {
        self.expect(b"(", "the start of a node")?;
        self.expect(b"type", "a node's `type`")?;
        let kind = self.read_string(MAX_TOKEN, "a node type")?;
        let kind = match &kind[..] {
            b"regular" => {
                let mut token = self.read_string(MAX_TOKEN, "`executable` or `contents`")?;
                let executable = token == b"executable";
                if executable {
                    self.expect(b"", "the empty string after `executable`")?;
                    token = self.read_string(MAX_TOKEN, "`contents`")?;
                }
                if token != b"contents" {
                    return Err(self.unexpected("`contents`", &token));
                }
                let size = self.read_u64("a file size")?;
                self.state = State::Contents {
                    remaining: size,
                    size,
                };
                NarKind::Regular { executable, size }
            }
            b"symlink" => {
                self.expect(b"target", "a symlink's `target`")?;
                let target = self.read_string(MAX_TARGET, "a symlink target")?;
                if target.is_empty() || target.contains(&0) {
                    return Err(malformed(format!(
                        "symlink `{}` has an empty target or one holding NUL (at byte {})",
                        self.path.escape_ascii(),
                        self.offset
                    )));
                }
                self.expect(b")", "the end of a symlink")?;
                self.state = State::NodeEnd;
                NarKind::Symlink { target }
            }
            b"directory" => {
                if self.dirs.len() >= MAX_DEPTH {
                    return Err(malformed(format!(
                        "directories nest deeper than {MAX_DEPTH} levels (at `{}`)",
                        self.path.escape_ascii()
                    )));
                }
                self.dirs.push(Dir {
                    path_len: self.path.len(),
                    last: None,
                });
                self.state = State::InDir;
                NarKind::Directory
            }
            other => return Err(self.unexpected("`regular`, `symlink` or `directory`", other)),
        };
        Ok(NarEntry {
            path: self.path.clone(),
            kind,
        })
    }

    /// Reads exactly `buf.len()` bytes, hashing them.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), NarError> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.hasher.update(&*buf);
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.truncated()),
            Err(e) => Err(NarError::Io(e)),
        }
    }

    fn read_u64(&mut self, what: &str) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.fill(&mut b).map_err(|e| self.context(e, what))?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a string of at most `max` bytes and its padding.
    fn read_string(&mut self, max: u64, what: &str) -> Result<Vec<u8>, NarError> {
        let len = self.read_u64(what)?;
        if len > max {
            return Err(malformed(format!(
                "expected {what} of at most {max} bytes, found a length of {len} (at byte {})",
                self.offset - 8
            )));
        }
        let mut s = vec![0u8; len as usize];
        self.fill(&mut s).map_err(|e| self.context(e, what))?;
        self.read_padding(len)?;
        Ok(s)
    }

    /// Reads the zeros that pad `len` bytes to a multiple of 8.
    fn read_padding(&mut self, len: u64) -> Result<(), NarError> {
        let mut pad = [0u8; 8];
        let pad = &mut pad[..(8 - len % 8) as usize % 8];
        self.fill(pad)?;
        if pad.iter().any(|b| *b != 0) {
            return Err(malformed(format!(
                "non-zero padding before byte {}",
                self.offset
            )));
        }
        Ok(())
    }

    fn expect(&mut self, token: &[u8], what: &str) -> Result<(), NarError> {
        let found = self.read_string(MAX_TOKEN, what)?;
        if found == token {
            Ok(())
        } else {
            Err(self.unexpected(what, &found))
        }
    }

    fn unexpected(&self, what: &str, found: &[u8]) -> NarError {
        let at = if self.path.is_empty() {
            String::new()
        } else {
            format!(" in `{}`", self.path.escape_ascii())
        };
        malformed(format!(
            "expected {what}, found `{}`{at} (before byte {})",
            found.escape_ascii(),
            self.offset
        ))
    }

    fn truncated(&self) -> NarError {
        malformed(format!(
            "the stream ends inside the NAR, after {} of its bytes (truncated)",
            self.offset
        ))
    }

    fn context(&self, e: NarError, what: &str) -> NarError {
        match e {
            NarError::Malformed { path, reason } => NarError::Malformed {
                path,
                reason: format!("{reason}, while reading {what}"),
            },
            e => e,
        }
    }
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s);
    out.resize(out.len().next_multiple_of(8), 0);
}

/// The whole stdin for `nix-store --serve` that dumps `paths`, in order:
/// the client greeting, then one `cmdDumpStorePath` per path. The server
/// answers with its greeting ([`read_serve_hello`]) and then the paths'
/// NARs back to back, in this order, and exits when stdin ends.
pub fn serve_dump_request(paths: &[&StorePath]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + paths.len() * 96);
    put_u64(&mut out, SERVE_MAGIC_1);
    put_u64(&mut out, SERVE_CLIENT_VERSION);
    for p in paths {
        put_u64(&mut out, CMD_DUMP_STORE_PATH);
        put_string(&mut out, p.as_str().as_bytes());
    }
    out
}

/// Reads and checks the greeting of `nix-store --serve`; returns the
/// server's protocol version (`0x2xx`). Reads exactly 16 bytes.
pub fn read_serve_hello(r: &mut impl Read) -> Result<u64, NarError> {
    let mut b = [0u8; 16];
    if let Err(e) = r.read_exact(&mut b) {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
            NarError::BadHello {
                reason: "its output ended before the greeting".into(),
            }
        } else {
            NarError::Io(e)
        });
    }
    let magic = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    let version = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
    if magic != SERVE_MAGIC_2 {
        return Err(NarError::BadHello {
            reason: format!(
                "expected the magic {SERVE_MAGIC_2:#x}, got {magic:#x} (`{}`)",
                b.escape_ascii()
            ),
        });
    }
    // What Nix's own clients check: the same major version.
    if version & 0xff00 != 0x200 {
        return Err(NarError::BadHello {
            reason: format!("unsupported protocol version {version:#x}, nixpack speaks 2.x"),
        });
    }
    Ok(version)
}

/// A NAR writer and a tree type for tests (of this module and of
/// `layer_tar`): Nix's serialisation, written from the format above.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::BTreeMap;

    use super::put_string;

    /// A file-system tree, as a NAR describes it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Node {
        File { executable: bool, contents: Vec<u8> },
        Symlink(Vec<u8>),
        Dir(BTreeMap<Vec<u8>, Node>),
    }

    /// The NAR of `node`.
    pub fn nar(node: &Node) -> Vec<u8> {
        let mut out = Vec::new();
        put_string(&mut out, b"nix-archive-1");
        write_node(&mut out, node);
        out
    }

    fn write_node(out: &mut Vec<u8>, node: &Node) {
        for s in [&b"("[..], b"type"] {
            put_string(out, s);
        }
        match node {
            Node::File {
                executable,
                contents,
            } => {
                put_string(out, b"regular");
                if *executable {
                    put_string(out, b"executable");
                    put_string(out, b"");
                }
                put_string(out, b"contents");
                put_string(out, contents);
            }
            Node::Symlink(target) => {
                put_string(out, b"symlink");
                put_string(out, b"target");
                put_string(out, target);
            }
            Node::Dir(entries) => {
                put_string(out, b"directory");
                for (name, child) in entries {
                    for s in [&b"entry"[..], b"(", b"name", name, b"node"] {
                        put_string(out, s);
                    }
                    write_node(out, child);
                    put_string(out, b")");
                }
            }
        }
        put_string(out, b")");
    }

    /// Reads a whole NAR back into a tree, through `NarReader`.
    pub fn read_tree(nar: &mut impl std::io::Read) -> Result<Node, super::NarError> {
        let mut r = super::NarReader::new(nar)?;
        let mut root = None;
        while let Some(e) = r.next()? {
            let node = match e.kind {
                super::NarKind::Directory => Node::Dir(BTreeMap::new()),
                super::NarKind::Symlink { target } => Node::Symlink(target),
                super::NarKind::Regular { executable, .. } => {
                    let mut contents = Vec::new();
                    r.copy_contents(&mut contents)?;
                    Node::File {
                        executable,
                        contents,
                    }
                }
            };
            insert(&mut root, &e.path, node);
        }
        r.finish()?;
        Ok(root.expect("a NAR has a root"))
    }

    /// Puts `node` at `path` (names joined by `/`) below `root`.
    pub fn insert(root: &mut Option<Node>, path: &[u8], node: Node) {
        if path.is_empty() {
            *root = Some(node);
            return;
        }
        let mut cur = root.as_mut().expect("parents come first");
        let names: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
        for name in &names[..names.len() - 1] {
            let Node::Dir(entries) = cur else {
                panic!("not a directory")
            };
            cur = entries.get_mut(*name).expect("parents come first");
        }
        let Node::Dir(entries) = cur else {
            panic!("not a directory")
        };
        entries.insert(names[names.len() - 1].to_vec(), node);
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{nar, read_tree, Node};
    use super::*;
    use std::collections::BTreeMap;

    /// A real NAR from Nix 2.8 (`nix-store --dump` of a store path made by
    /// `nix-store --add`): `hello.txt`, `link -> hello.txt`, an executable
    /// `run.sh`, and `sub/nested.txt`.
    pub(crate) const SMALL_NAR: &[u8] = include_bytes!("../tests/golden/small.nar");
    /// Its path and NAR hash, as `nix-store --query --hash` printed it.
    pub(crate) const SMALL_PATH: &str = "/nix/store/fl85xd8agk0cnpj9i53pav1mfadkywvb-small";
    pub(crate) const SMALL_HASH: &str =
        "sha256:0gcaabql3hw38dw05cixvdv7164zpiw6dg8csxxycs2ll2rww8ra";

    fn file(contents: &[u8]) -> Node {
        Node::File {
            executable: false,
            contents: contents.to_vec(),
        }
    }

    fn dir<const N: usize>(entries: [(&[u8], Node); N]) -> Node {
        Node::Dir(entries.into_iter().map(|(k, v)| (k.to_vec(), v)).collect())
    }

    /// A reader that hands out one byte per call, like a slow pipe.
    struct OneByte<'a>(&'a [u8]);

    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(slot)) => {
                    *slot = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn the_real_nix_nar_reads_back_with_the_hash_nix_recorded() {
        let mut r = NarReader::new(SMALL_NAR).unwrap();
        let mut entries = Vec::new();
        while let Some(e) = r.next().unwrap() {
            let mut contents = Vec::new();
            r.copy_contents(&mut contents).unwrap();
            entries.push((e, contents));
        }
        let summary = r.finish().unwrap();
        assert_eq!(summary.nar_hash, NarHash::parse(SMALL_HASH).unwrap());
        assert_eq!(summary.nar_size, SMALL_NAR.len() as u64);
        let listed: Vec<(String, NarKind, &[u8])> = entries
            .iter()
            .map(|(e, c)| {
                (
                    String::from_utf8(e.path.clone()).unwrap(),
                    e.kind.clone(),
                    &c[..],
                )
            })
            .collect();
        let reg = |executable, size| NarKind::Regular { executable, size };
        assert_eq!(
            listed,
            [
                ("".into(), NarKind::Directory, &b""[..]),
                ("hello.txt".into(), reg(false, 15), b"hello, nixpack\n"),
                (
                    "link".into(),
                    NarKind::Symlink {
                        target: b"hello.txt".to_vec()
                    },
                    b""
                ),
                ("run.sh".into(), reg(true, 18), b"#!/bin/sh\necho hi\n"),
                ("sub".into(), NarKind::Directory, b""),
                ("sub/nested.txt".into(), reg(false, 7), b"nested\n"),
            ]
        );
    }

    #[test]
    fn the_test_writer_writes_what_nix_writes() {
        let tree = read_tree(&mut &SMALL_NAR[..]).unwrap();
        assert_eq!(nar(&tree), SMALL_NAR);
    }

    #[test]
    fn two_nars_back_to_back_are_read_exactly_even_one_byte_at_a_time() {
        let second = dir([(b"a", file(b"x")), (b"b", Node::Symlink(b"a".to_vec()))]);
        let mut stream = SMALL_NAR.to_vec();
        stream.extend(nar(&second));
        stream.extend(b"trailer");
        for one_byte in [false, true] {
            let mut fast = &stream[..];
            let mut slow = OneByte(&stream);
            let r: &mut dyn Read = if one_byte { &mut slow } else { &mut fast };
            let first = NarReader::new(&mut *r).unwrap().finish().unwrap();
            assert_eq!(first.nar_hash, NarHash::parse(SMALL_HASH).unwrap());
            assert_eq!(read_tree(&mut &mut *r).unwrap(), second);
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).unwrap();
            assert_eq!(rest, b"trailer", "nothing past the second NAR was read");
        }
    }

    #[test]
    fn a_store_path_may_be_a_single_file_or_symlink() {
        for node in [
            Node::File {
                executable: true,
                contents: vec![7; 1000],
            },
            Node::Symlink(b"/nix/store/x".to_vec()),
            file(b""),
            Node::Dir(BTreeMap::new()),
        ] {
            assert_eq!(read_tree(&mut &nar(&node)[..]).unwrap(), node);
        }
    }

    fn reason(bytes: &[u8]) -> String {
        match read_tree(&mut &bytes[..]) {
            Err(NarError::Malformed { path: None, reason }) => reason,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn malformed_nars_are_errors_that_say_what_is_wrong() {
        let mut bad_magic = SMALL_NAR.to_vec();
        bad_magic[8..21].copy_from_slice(b"nix-archive-2");
        assert!(reason(&bad_magic).contains("nix-archive-1"));

        // Entries out of order: swap two names of equal length.
        let unsorted = nar(&dir([(b"ab", file(b"")), (b"ba", file(b""))]));
        let mut swapped = unsorted.clone();
        let i = swapped.windows(2).position(|w| w == b"ab").unwrap();
        let j = swapped.windows(2).position(|w| w == b"ba").unwrap();
        swapped[i..i + 2].copy_from_slice(b"ba");
        swapped[j..j + 2].copy_from_slice(b"ab");
        assert!(reason(&swapped).contains("does not sort after `ba`"));
        let mut duplicate = unsorted.clone();
        let j = duplicate.windows(2).position(|w| w == b"ba").unwrap();
        duplicate[j..j + 2].copy_from_slice(b"ab");
        assert!(reason(&duplicate).contains("does not sort after `ab`"));

        for name in [&b".."[..], b".", b"a/b", b"", b"a\0b"] {
            let mut entries = BTreeMap::new();
            entries.insert(name.to_vec(), file(b"x"));
            let r = reason(&nar(&Node::Dir(entries)));
            assert!(r.contains("entry name"), "{name:?}: {r}");
        }

        let mut bad_pad = nar(&file(b"abc"));
        let last_pad = bad_pad.len() - 16 - 1; // before the closing `)` string
        bad_pad[last_pad] = 1;
        assert!(reason(&bad_pad).contains("padding"));

        let mut bad_type = nar(&file(b""));
        let i = bad_type.windows(7).position(|w| w == b"regular").unwrap();
        bad_type[i..i + 7].copy_from_slice(b"fifo!!!");
        assert!(reason(&bad_type).contains("`fifo!!!`"));

        // A huge length is refused before anything is allocated.
        let mut huge = nar(&dir([(b"a", file(b""))]));
        let i = huge.windows(4).position(|w| w == b"name").unwrap() + 8;
        huge[i..i + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(reason(&huge).contains("at most 255 bytes"));

        let mut deep = file(b"");
        for _ in 0..=MAX_DEPTH {
            deep = dir([(b"d", deep)]);
        }
        assert!(reason(&nar(&deep)).contains("nest deeper"));
    }

    #[test]
    fn after_an_error_the_reader_never_summarises_a_broken_nar() {
        let mut r = NarReader::new(&SMALL_NAR[..300]).unwrap();
        let err = loop {
            match r.next() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("a truncated NAR cannot end"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("truncated"));
        assert!(r.next().is_err());
        assert!(r.finish().is_err());
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        for cut in 0..SMALL_NAR.len() {
            let r = reason(&SMALL_NAR[..cut]);
            assert!(r.contains("truncated"), "cut at {cut}: {r}");
        }
    }

    #[test]
    fn the_error_of_a_malformed_path_names_it() {
        let p = StorePath::parse(SMALL_PATH).unwrap();
        let e = NarError::Malformed {
            path: None,
            reason: "x".into(),
        }
        .in_path(&p);
        assert_eq!(e.to_string(), format!("malformed NAR of {SMALL_PATH}: x"));
    }

    #[test]
    fn the_dump_request_is_what_nix_store_serve_reads() {
        let a = StorePath::parse(SMALL_PATH).unwrap();
        let req = serve_dump_request(&[&a, &a]);
        let mut want = Vec::new();
        want.extend(0x390c_9debu64.to_le_bytes());
        want.extend(0x207u64.to_le_bytes());
        for _ in 0..2 {
            want.extend(3u64.to_le_bytes());
            want.extend((SMALL_PATH.len() as u64).to_le_bytes());
            want.extend(SMALL_PATH.as_bytes());
            want.resize(want.len().next_multiple_of(8), 0);
        }
        assert_eq!(req, want);
    }

    #[test]
    fn the_serve_greeting_is_checked() {
        let hello = |magic: u64, version: u64| {
            let mut b = magic.to_le_bytes().to_vec();
            b.extend(version.to_le_bytes());
            b
        };
        // Nix 2.8 and Nix 2.26 answer 2.7; Nix 2.3 answered 2.5.
        for v in [0x205, 0x207] {
            let mut stream = hello(SERVE_MAGIC_2, v);
            stream.extend(SMALL_NAR);
            let mut r = &stream[..];
            assert_eq!(read_serve_hello(&mut r).unwrap(), v);
            assert_eq!(r, SMALL_NAR, "the greeting is read exactly");
        }
        for bad in [
            hello(SERVE_MAGIC_1, 0x206),
            hello(SERVE_MAGIC_2, 0x300),
            b"error: no such".to_vec(),
        ] {
            assert!(matches!(
                read_serve_hello(&mut &bad[..]),
                Err(NarError::BadHello { .. })
            ));
        }
    }

    /// Runs the real `nix-store --serve` of Nix 2.8 in the base image and
    /// reads its answer: `cargo test --lib -- --ignored real_nix`.
    #[test]
    #[ignore = "needs Docker and the nixpack-base:bookworm image"]
    fn real_nix_store_serve_dumps_what_nix_store_dump_writes() {
        use std::process::{Command, Stdio};
        const IMAGE: &str = "nixpack-base:bookworm";
        // Two content-addressed paths: the same in every fresh container.
        const MAKE: &str = "set -e; mkdir -p /tmp/a/d /tmp/b; echo hi >/tmp/a/d/f; \
            ln -s d/f /tmp/a/l; printf '#!/bin/sh\\n' >/tmp/b/x; chmod +x /tmp/b/x; \
            a=$(nix-store --add /tmp/a); b=$(nix-store --add /tmp/b)";
        let sh = |script: String, stdin: Vec<u8>| {
            let mut child = Command::new("docker")
                .args(["run", "--rm", "-i", IMAGE, "sh", "-c", &script])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(&stdin).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{script}");
            out.stdout
        };
        let listed = String::from_utf8(sh(
            format!("{MAKE}; echo $a; echo $b; nix-store -q --hash $a $b"),
            vec![],
        ))
        .unwrap();
        let l: Vec<&str> = listed.lines().collect();
        let (a, b) = (
            StorePath::parse(l[0]).unwrap(),
            StorePath::parse(l[1]).unwrap(),
        );
        let hashes = [NarHash::parse(l[2]).unwrap(), NarHash::parse(l[3]).unwrap()];

        let served = sh(
            format!("{MAKE}; exec nix-store --serve"),
            serve_dump_request(&[&a, &b, &a]),
        );
        let mut r = io::BufReader::new(&served[..]);
        assert_eq!(
            read_serve_hello(&mut r).unwrap(),
            0x207,
            "Nix 2.8 speaks 2.7"
        );
        let mut nars = Vec::new();
        for want in [hashes[0], hashes[1], hashes[0]] {
            let mut tee = TeeReader(&mut r, Vec::new());
            let got = NarReader::new(&mut tee).unwrap().finish().unwrap();
            assert_eq!(got.nar_hash, want);
            nars.push(tee.1);
        }
        assert_eq!(r.fill_buf().unwrap(), b"", "the server sent nothing else");
        let dumped = sh(format!("{MAKE}; nix-store --dump $a"), vec![]);
        assert_eq!(nars[0], dumped, "--serve sends what --dump writes");
        assert_eq!(nars[0], nars[2]);
        let Node::Dir(b_tree) = read_tree(&mut &nars[1][..]).unwrap() else {
            panic!("b is a directory")
        };
        assert_eq!(
            b_tree[&b"x".to_vec()],
            Node::File {
                executable: true,
                contents: b"#!/bin/sh\n".to_vec()
            }
        );
    }

    use std::io::BufRead;

    /// Keeps a copy of what passes through.
    struct TeeReader<R>(R, Vec<u8>);

    impl<R: Read> Read for TeeReader<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }
}
