//! The project's files as sent to the builder: what git would commit,
//! minus `.nixpackignore`, and a key for them that costs one `lstat` per
//! file when nothing changed.
//!
//! **What is sent.** Every file, folder and symlink below the manifest's
//! folder, walked by the `ignore` crate (ripgrep's walker) with git's
//! rules, whether or not the folder is a git repository: `.gitignore` in
//! every folder (and in the folders above, as in a monorepo),
//! `.git/info/exclude`, the global excludes file (`core.excludesFile`),
//! and `.nixpackignore` files in the same syntax, which win over git's
//! (`!dist/` in `.nixpackignore` sends a folder git ignores). Hidden files
//! are sent unless ignored. Never sent, at any depth: `.git` and
//! `.nixpack` (nixpack's outputs, also a nested project's); at the top:
//! `nixpack.lock` (an output of the build). `result` links into
//! `/nix/store` are left out (they point into a store the builder does
//! not share). FIFOs, sockets and devices are never opened (a FIFO would
//! block the walk for ever) and are named in one warning.
//!
//! `target/` and `node_modules/` are *not* left out by name any more: one
//! rule ("what git sees") is easier to predict than a list, `cargo new`
//! and every Node template put them in `.gitignore`, and a project that
//! wants them sent (or not, without git) says so in `.nixpackignore`.
//!
//! **The key.** The nix stage's key covers the sorted entries: kind, path,
//! the mode the builder sees (0444/0555), each file's content sha256 and
//! each link's target. Content hashes are cached in
//! `.nixpack/sources.json`, keyed by path and a [`Stamp`] (size, mtime,
//! ctime, inode, device, mode); a file is read again only when its stamp
//! changed, so an unchanged tree costs a walk and a JSON read. A file
//! touched without a change is re-hashed once and keeps the key. Like
//! git's index, a file modified within [`RACY_NS`] of the hashing is not
//! cached ("racily clean"): a second write in the same timestamp tick
//! would leave its stamp unchanged.
//!
//! **The upload.** [`Sources::write_tar`] streams the same entries as a
//! deterministic tar under `nixpack/src/` (sorted; uid/gid 0; mtime 1;
//! files 0444 or 0555, folders 0555, symlinks kept), reading each file
//! as it goes: memory stays at one buffer whatever the project's size.
//!
//! The decisions ([`decide`], [`reusable`], [`key`], [`warning`]) are pure
//! and unit-tested; the walk, the hashing and the cache file are the
//! effects around them.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Ignore files in git's syntax that only nixpack reads.
pub const IGNORE_FILE: &str = ".nixpackignore";

/// The content-hash cache, in the project's `.nixpack/`.
pub const CACHE_FILE: &str = "sources.json";

/// Folder names never sent, at any depth: version control and nixpack's
/// own outputs (a nested project's `.nixpack/` holds layer tarballs).
pub const NEVER_SENT: &[&str] = &[".git", ".nixpack"];

/// Top-level names never sent: the lock is an output of the build.
pub const NEVER_SENT_TOP: &[&str] = &["nixpack.lock"];

/// How recently modified a file may be and still have its content hash
/// cached (2 s: coarser than any timestamp tick but FAT's).
pub const RACY_NS: i64 = 2_000_000_000;

/// The sha256 of one file's bytes.
pub type ContentSha256 = [u8; 32];

/// What a walked entry is, as far as sending goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// A folder.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A FIFO (named pipe).
    Fifo,
    /// A Unix socket.
    Socket,
    /// A block or character device.
    Device,
}

impl EntryType {
    fn of(ft: std::fs::FileType) -> EntryType {
        if ft.is_dir() {
            EntryType::Dir
        } else if ft.is_symlink() {
            EntryType::Symlink
        } else if ft.is_fifo() {
            EntryType::Fifo
        } else if ft.is_socket() {
            EntryType::Socket
        } else if ft.is_block_device() || ft.is_char_device() {
            EntryType::Device
        } else {
            EntryType::File
        }
    }

    fn name(self) -> &'static str {
        match self {
            EntryType::Dir => "folder",
            EntryType::File => "file",
            EntryType::Symlink => "symlink",
            EntryType::Fifo => "FIFO",
            EntryType::Socket => "socket",
            EntryType::Device => "device",
        }
    }
}

/// What to do with an entry the ignore rules let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it (and walk into it, for a folder).
    Send,
    /// Leave it out silently (and everything below it).
    Skip,
    /// Leave it out and name it in the warning: reading it could block.
    Warn,
}

/// Whether an entry at `rel` (relative to the project, not empty) of type
/// `ty` is sent; `link_target` is read for symlinks only.
pub fn decide(rel: &Path, ty: EntryType, link_target: Option<&Path>) -> Decision {
    let name = rel.file_name().unwrap_or(rel.as_os_str());
    if NEVER_SENT.iter().any(|n| name == OsStr::new(n)) {
        return Decision::Skip;
    }
    let top = rel.components().count() == 1;
    if top && NEVER_SENT_TOP.iter().any(|n| name == OsStr::new(n)) {
        return Decision::Skip;
    }
    match ty {
        EntryType::Dir | EntryType::File => Decision::Send,
        // `result` links of a local nix-build point into a store the
        // builder does not share.
        EntryType::Symlink if link_target.is_some_and(|t| t.starts_with("/nix/store")) => {
            Decision::Skip
        }
        EntryType::Symlink => Decision::Send,
        EntryType::Fifo | EntryType::Socket | EntryType::Device => Decision::Warn,
    }
}

/// When a file last changed, as far as nixpack can tell without reading
/// it. Equal stamps mean "the cached content hash still holds".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Size in bytes.
    pub len: u64,
    /// Modification time, ns since the epoch.
    pub mtime: i64,
    /// Status-change time, ns since the epoch (catches `touch -d` back).
    pub ctime: i64,
    /// Inode (catches an editor's replace-by-rename).
    pub ino: u64,
    /// Device.
    pub dev: u64,
    /// Mode bits.
    pub mode: u32,
}

impl Stamp {
    /// The stamp of a file's `lstat`/`fstat`.
    pub fn of(m: &Metadata) -> Stamp {
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Stamp {
            len: m.len(),
            mtime: ns(m.mtime(), m.mtime_nsec()),
            ctime: ns(m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
            mode: m.mode(),
        }
    }
}

/// One entry to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the project.
    pub rel: PathBuf,
    /// What it is.
    pub kind: Kind,
}

/// What an [`Entry`] is, with what the builder sees of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A folder.
    Dir,
    /// A regular file.
    File {
        /// Any execute bit set (sent as 0555, else 0444).
        executable: bool,
        /// Its stamp at the walk.
        stamp: Stamp,
    },
    /// A symlink, sent as such.
    Symlink {
        /// Where it points.
        target: PathBuf,
    },
}

/// An entry left out because reading it could block or means nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Path relative to the project.
    pub rel: PathBuf,
    /// FIFO, socket or device.
    pub ty: EntryType,
}

/// The one warning for skipped special files, or `None`.
pub fn warning(skipped: &[Skipped]) -> Option<String> {
    if skipped.is_empty() {
        return None;
    }
    let names: Vec<String> = skipped
        .iter()
        .map(|s| format!("{} ({})", s.rel.display(), s.ty.name()))
        .collect();
    Some(format!(
        "warning: not sending {} to the builder: {}; nixpack never reads FIFOs, sockets or devices (add them to {IGNORE_FILE} to silence this)",
        if skipped.len() == 1 {
            "a special file".to_owned()
        } else {
            format!("{} special files", skipped.len())
        },
        names.join(", ")
    ))
}

/// The project's files to send, sorted by path.
#[derive(Debug, Clone)]
pub struct Sources {
    root: PathBuf,
    entries: Vec<Entry>,
    skipped: Vec<Skipped>,
}

/// The nix stage's view of the sources: hex sha256 over every entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcesKey(pub String);

/// What [`Sources::fingerprint`] found.
#[derive(Debug, Clone)]
pub struct Fingerprint {
    /// The key.
    pub key: SourcesKey,
    /// Files whose content was read (the rest came from the cache).
    pub hashed: usize,
    /// Files in all.
    pub files: usize,
}

impl Sources {
    /// Walks `root` with git's ignore rules and [`decide`].
    pub fn walk(root: &Path) -> io::Result<Sources> {
        let mut builder = ignore::WalkBuilder::new(root);
        builder
            .hidden(false)
            // `.ignore` is ripgrep's own file, not git's.
            .ignore(false)
            .parents(true)
            .git_ignore(true)
            .git_exclude(true)
            .git_global(true)
            .require_git(false)
            .follow_links(false)
            .add_custom_ignore_filename(IGNORE_FILE);
        let prune_root = root.to_owned();
        // Prune `.git`/`.nixpack` before the walker reads inside them.
        builder.filter_entry(move |e| {
            let rel = e.path().strip_prefix(&prune_root).unwrap_or(e.path());
            rel.as_os_str().is_empty()
                || e.file_type().is_none_or(|ft| !ft.is_dir())
                || decide(rel, EntryType::Dir, None) == Decision::Send
        });
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        for item in builder.build() {
            let entry = match item {
                Ok(e) => e,
                Err(e) if vanished(&e) => continue,
                Err(e) => return Err(io::Error::other(e.to_string())),
            };
            let Ok(rel) = entry.path().strip_prefix(root) else {
                continue;
            };
            if rel.as_os_str().is_empty() {
                continue;
            }
            let rel = rel.to_owned();
            // A file another process renames away while we walk (a lock
            // file being replaced) was never part of the project.
            let meta = match std::fs::symlink_metadata(entry.path()) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                m => m?,
            };
            let ty = EntryType::of(meta.file_type());
            let target = match ty {
                EntryType::Symlink => match std::fs::read_link(entry.path()) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    t => Some(t?),
                },
                _ => None,
            };
            match decide(&rel, ty, target.as_deref()) {
                Decision::Skip => continue,
                Decision::Warn => skipped.push(Skipped { rel, ty }),
                Decision::Send => {
                    let kind = match (ty, target) {
                        (EntryType::Dir, _) => Kind::Dir,
                        (EntryType::Symlink, Some(target)) => Kind::Symlink { target },
                        _ => Kind::File {
                            executable: meta.mode() & 0o111 != 0,
                            stamp: Stamp::of(&meta),
                        },
                    };
                    entries.push(Entry { rel, kind });
                }
            }
        }
        entries.sort_by(|a, b| a.rel.cmp(&b.rel));
        skipped.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(Sources {
            root: root.to_owned(),
            entries,
            skipped,
        })
    }

    /// The entries to send, sorted by path.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// FIFOs, sockets and devices left out.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Whether `rel` (relative, `/`-separated) is sent.
    pub fn contains(&self, rel: &Path) -> bool {
        self.entries
            .binary_search_by(|e| e.rel.as_path().cmp(rel))
            .is_ok()
    }

    /// The key of the sources, reading only files whose stamp differs
    /// from the cache at `cache_path` (which is then rewritten, atomically,
    /// if anything in it changed).
    pub fn fingerprint(&self, cache_path: &Path) -> io::Result<Fingerprint> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let old: Cache = std::fs::read(cache_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|c: &Cache| c.version == CACHE_VERSION)
            .unwrap_or_default();
        let mut hashes: Vec<Option<ContentSha256>> = vec![None; self.entries.len()];
        let mut todo = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if let Kind::File { stamp, .. } = &e.kind {
                let cached = cache_name(&e.rel).and_then(|n| old.files.get(n));
                match cached.and_then(|c| reusable(c, stamp)) {
                    Some(h) => hashes[i] = Some(h),
                    None => todo.push(i),
                }
            }
        }
        let hashed = todo.len();
        for (i, r) in hash_files(&self.root, &self.entries, &todo) {
            match r {
                Ok(h) => hashes[i] = Some(h),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("reading {}: {e}", self.entries[i].rel.display()),
                    ))
                }
            }
        }
        let mut new = Cache {
            version: CACHE_VERSION,
            files: HashMap::new(),
        };
        let mut files = 0;
        for (e, h) in self.entries.iter().zip(&hashes) {
            if let (Kind::File { stamp, .. }, Some(h), Some(name)) =
                (&e.kind, h, cache_name(&e.rel))
            {
                files += 1;
                if !racy(stamp, now) {
                    new.files.insert(
                        name.to_owned(),
                        Cached {
                            stamp: *stamp,
                            sha256: crate::closure::hex(h),
                        },
                    );
                }
            }
        }
        if new.files != old.files || old.version != CACHE_VERSION {
            let bytes = serde_json::to_vec(&new).map_err(io::Error::other)?;
            crate::outputs::write_atomic(cache_path, &bytes)?;
        }
        Ok(Fingerprint {
            key: key(&self.entries, &hashes),
            hashed,
            files,
        })
    }

    /// Writes the sources as a deterministic tar under `nixpack/src/`
    /// into `b`, reading each file as it goes. A file that vanished since
    /// the walk is left out; one that shrank fails the archive.
    pub fn write_tar<W: Write>(&self, b: &mut tar::Builder<W>) -> io::Result<()> {
        for dir in ["nixpack/", "nixpack/src/"] {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, dir, io::empty())?;
        }
        for e in &self.entries {
            let name = Path::new("nixpack/src").join(&e.rel);
            match &e.kind {
                Kind::Dir => {
                    let mut h = header(tar::EntryType::Directory, 0o555, 0);
                    b.append_data(&mut h, &name, io::empty())?;
                }
                Kind::Symlink { target } => {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                    b.append_link(&mut h, &name, target)?;
                }
                Kind::File { executable, .. } => {
                    let file = match open_regular(&self.root.join(&e.rel)) {
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        f => f?,
                    };
                    let len = file.metadata()?.len();
                    let mode = if *executable { 0o555 } else { 0o444 };
                    let mut h = header(tar::EntryType::Regular, mode, len);
                    let exact = Exact {
                        inner: file.take(len),
                        left: len,
                        rel: &e.rel,
                    };
                    b.append_data(&mut h, &name, exact)?;
                }
            }
        }
        Ok(())
    }
}

fn vanished(e: &ignore::Error) -> bool {
    e.io_error()
        .is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
}

fn header(ty: tar::EntryType, mode: u32, len: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(ty);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    h.set_size(len);
    h
}

/// A reader that fails instead of ending early: a file that shrank after
/// its header was written would otherwise corrupt the archive.
struct Exact<'a, R> {
    inner: R,
    left: u64,
    rel: &'a Path,
}

impl<R: Read> Read for Exact<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} shrank while it was being sent; build again",
                    self.rel.display()
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Opens a file for reading without following a symlink and without
/// blocking (a file swapped for a FIFO since the walk must not hang the
/// build), then checks it is a regular file.
fn open_regular(path: &Path) -> io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is no longer a regular file",
            path.display()
        )));
    }
    Ok(file)
}

fn hash_file(path: &Path) -> io::Result<ContentSha256> {
    let mut file = open_regular(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Hashes `entries[i]` for each `i` in `todo`, on a few threads (a cold
/// cache of a big project is bound by sha256, not by the disk).
fn hash_files(
    root: &Path,
    entries: &[Entry],
    todo: &[usize],
) -> Vec<(usize, io::Result<ContentSha256>)> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8)
        .min(todo.len().div_ceil(16).max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&i) = todo.get(k) else { break };
                        out.push((i, hash_file(&root.join(&entries[i].rel))));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a hashing thread panicked"))
            .collect()
    })
}

const CACHE_VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    version: u32,
    files: HashMap<String, Cached>,
}

/// A cached content hash and the stamp it was read at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    /// The file's stamp when it was hashed.
    pub stamp: Stamp,
    /// Hex sha256 of its bytes.
    pub sha256: String,
}

/// Paths are cached by their UTF-8 name; the rare other one is re-hashed
/// on every build.
fn cache_name(rel: &Path) -> Option<&str> {
    rel.to_str()
}

/// The cached hash, if `stamp` says the file did not change since.
pub fn reusable(cached: &Cached, stamp: &Stamp) -> Option<ContentSha256> {
    if cached.stamp != *stamp || cached.sha256.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(cached.sha256.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Whether a file modified at `stamp.mtime` may change again without a
/// new stamp (same timestamp tick) when hashed at `now`.
pub fn racy(stamp: &Stamp, now: i64) -> bool {
    stamp.mtime > now.saturating_sub(RACY_NS)
}

/// The key over sorted `entries` and the content hash of each file
/// (`None` for a file that vanished, which is not sent either).
pub fn key(entries: &[Entry], hashes: &[Option<ContentSha256>]) -> SourcesKey {
    let mut h = Sha256::new();
    h.update(b"nixpack-sources-v1\0");
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    for (e, content) in entries.iter().zip(hashes) {
        let path = e.rel.as_os_str().as_bytes();
        match &e.kind {
            Kind::Dir => {
                part(b"d");
                part(path);
            }
            Kind::File { executable, .. } => {
                let Some(content) = content else { continue };
                part(if *executable { b"x" } else { b"f" });
                part(path);
                part(content);
            }
            Kind::Symlink { target } => {
                part(b"l");
                part(path);
                part(target.as_os_str().as_bytes());
            }
        }
    }
    SourcesKey(crate::closure::hex(&h.finalize()))
}

#[cfg(test)]
mod tests;
