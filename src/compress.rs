//! Compressed layer blobs for registries: made once per layer, cached
//! beside it.
//!
//! The engine and OCI layouts take nixpack's layers uncompressed; a
//! registry gets them compressed, since that is what crosses a network
//! and what every client pulls. A layer's compressed blob is a different
//! blob — another [`Digest`] and size — of the same tar, so it keeps its
//! [`DiffId`].
//!
//! The blob is a function of the layer's bytes, the codec and the level
//! (gzip through `flate2` with the pure-Rust `zlib-rs` backend, header
//! fields fixed: no name, mtime 0, OS "unknown"), so it is made once and
//! kept as `layers/<file>.tar.gz` with a sidecar `layers/<file>.tar.gz.json`
//! holding `{diff_id, codec, level, digest, size}`. A push after nothing
//! changed reads sidecars only; a push after a leaf changed compresses
//! only the new layer files (the build removes the blobs of layers it
//! removes, see [`crate::stages::layers::prepare`]).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::DiffId;
use crate::oci::{Digest, HashingWriter, LayerBlob, MediaType};

/// A compression algorithm for layer blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// gzip: what every registry client can pull (Docker 20.10 included).
    Gzip,
    /// zstd: smaller and faster, pulled by Docker 23+ and containerd.
    Zstd,
}

/// A codec and its level: the cache key of a compressed blob, with the
/// layer's DiffID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compression {
    /// The algorithm.
    pub codec: Codec,
    /// Its level (gzip 0–9, zstd 1–22).
    pub level: u32,
}

impl Compression {
    /// gzip at zlib's default level 6, what `docker push` uses.
    pub const GZIP: Compression = Compression {
        codec: Codec::Gzip,
        level: 6,
    };
    /// zstd at its default level 3.
    pub const ZSTD: Compression = Compression {
        codec: Codec::Zstd,
        level: 3,
    };

    /// The default level of `codec`.
    pub fn of(codec: Codec) -> Compression {
        match codec {
            Codec::Gzip => Compression::GZIP,
            Codec::Zstd => Compression::ZSTD,
        }
    }

    /// The suffix added to the layer file's name.
    pub fn extension(&self) -> &'static str {
        match self.codec {
            Codec::Gzip => "gz",
            Codec::Zstd => "zst",
        }
    }

    /// The OCI media type of a layer compressed this way.
    pub fn media_type(&self) -> MediaType {
        match self.codec {
            Codec::Gzip => MediaType::ImageLayerGzip,
            Codec::Zstd => MediaType::ImageLayerZstd,
        }
    }

    /// Compresses everything `input` yields into `output`.
    pub fn compress(&self, mut input: impl io::Read, output: impl Write) -> io::Result<()> {
        match self.codec {
            Codec::Gzip => {
                let mut enc = flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(output, flate2::Compression::new(self.level.min(9)));
                io::copy(&mut input, &mut enc)?;
                enc.finish()?.flush()
            }
            Codec::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(output, self.level as i32)?;
                io::copy(&mut input, &mut enc)?;
                enc.finish()?.flush()
            }
        }
    }
}

/// A layer's compressed blob on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    /// The blob as the manifest describes it (its DiffID is the layer's).
    pub blob: LayerBlob,
    /// The blob's file.
    pub path: PathBuf,
    /// Whether this call compressed it (false: it was cached).
    pub made: bool,
}

/// The sidecar beside a compressed blob.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Sidecar {
    diff_id: String,
    codec: Codec,
    level: u32,
    digest: Digest,
    size: u64,
}

/// The blob and sidecar paths for `layer` compressed with `c`.
pub fn paths(layer: &Path, c: Compression) -> (PathBuf, PathBuf) {
    let mut blob = layer.as_os_str().to_owned();
    blob.push(".");
    blob.push(c.extension());
    let mut side = blob.clone();
    side.push(".json");
    (blob.into(), side.into())
}

/// The cached blob of `layer` (whose DiffID is `diff_id`) compressed with
/// `c`, when its sidecar matches all three and the blob has its size.
pub fn cached(layer: &Path, diff_id: &DiffId, c: Compression) -> Option<Compressed> {
    let (blob, side) = paths(layer, c);
    let s: Sidecar = serde_json::from_slice(&std::fs::read(&side).ok()?).ok()?;
    if s.diff_id != diff_id.0 || s.codec != c.codec || s.level != c.level {
        return None;
    }
    let len = std::fs::metadata(&blob).ok()?.len();
    (len == s.size).then(|| Compressed {
        blob: LayerBlob {
            diff_id: diff_id.clone(),
            digest: s.digest,
            size: s.size,
            media_type: c.media_type(),
        },
        path: blob,
        made: false,
    })
}

/// The blob of `layer` compressed with `c`: from the cache, or
/// compressed now (streamed from the layer file through the encoder and
/// a hasher into a temporary file, then renamed) and cached.
pub fn compressed(layer: &Path, diff_id: &DiffId, c: Compression) -> io::Result<Compressed> {
    if let Some(hit) = cached(layer, diff_id, c) {
        return Ok(hit);
    }
    let (blob, side) = paths(layer, c);
    // A sidecar never describes a blob being replaced.
    let _ = std::fs::remove_file(&side);
    let dir = layer.parent().unwrap_or(Path::new("."));
    let input = io::BufReader::with_capacity(1 << 20, std::fs::File::open(layer)?);
    // Named as this process's, so an interrupted push sweeps it.
    let tmp = crate::outputs::temp_file(dir)?;
    let mut out = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, tmp));
    c.compress(input, &mut out)?;
    let (digest, size, w) = out.finish();
    let tmp = w.into_inner().map_err(|e| e.into_error())?;
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(&blob).map_err(|e| e.error)?;
    let sidecar = Sidecar {
        diff_id: diff_id.0.clone(),
        codec: c.codec,
        level: c.level,
        digest: digest.clone(),
        size,
    };
    crate::outputs::write_atomic(
        &side,
        &serde_json::to_vec(&sidecar).expect("a sidecar serialises"),
    )?;
    Ok(Compressed {
        blob: LayerBlob {
            diff_id: diff_id.clone(),
            digest,
            size,
            media_type: c.media_type(),
        },
        path: blob,
        made: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn layer(dir: &Path, name: &str, bytes: &[u8]) -> (PathBuf, DiffId) {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        (p, crate::archive::diff_id(bytes).unwrap())
    }

    fn compressible(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| b"nix store path "[i % 15].wrapping_add(seed * ((i / 4096) % 3) as u8))
            .collect()
    }

    #[test]
    fn gzip_is_deterministic_and_decompresses_to_the_layer() {
        let data = compressible(3 << 20, 1);
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        let (a, id) = layer(one.path(), "l.tar", &data);
        let (b, _) = layer(two.path(), "l.tar", &data);
        let x = compressed(&a, &id, Compression::GZIP).unwrap();
        let y = compressed(&b, &id, Compression::GZIP).unwrap();
        assert_eq!(
            std::fs::read(&x.path).unwrap(),
            std::fs::read(&y.path).unwrap()
        );
        assert_eq!(x.blob, y.blob);
        assert_eq!(x.blob.media_type, MediaType::ImageLayerGzip);
        assert_eq!(x.blob.diff_id, id, "compression keeps the DiffID");
        assert_ne!(x.blob.digest, Digest::of_uncompressed(&id));
        let gz = std::fs::read(&x.path).unwrap();
        assert_eq!(Digest::of(&gz), x.blob.digest);
        assert_eq!(gz.len() as u64, x.blob.size);
        assert!(x.blob.size < data.len() as u64 / 10, "{}", x.blob.size);
        // Fixed header: magic, deflate, no flags, mtime 0, OS unknown.
        assert_eq!(&gz[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        assert_eq!(gz[9], 255);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn zstd_is_deterministic_and_decompresses_to_the_layer() {
        let data = compressible(1 << 20, 2);
        let dir = tempfile::tempdir().unwrap();
        let (a, id) = layer(dir.path(), "l.tar", &data);
        let x = compressed(&a, &id, Compression::ZSTD).unwrap();
        std::fs::remove_file(&x.path).unwrap();
        let y = compressed(&a, &id, Compression::ZSTD).unwrap();
        assert!(y.made);
        assert_eq!(x.blob, y.blob);
        assert_eq!(y.blob.media_type, MediaType::ImageLayerZstd);
        let back = zstd::decode_all(std::fs::File::open(&y.path).unwrap()).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn the_cache_is_keyed_by_diff_id_codec_and_level() {
        let dir = tempfile::tempdir().unwrap();
        let (p, id) = layer(dir.path(), "l.tar", &compressible(1 << 20, 3));
        let first = compressed(&p, &id, Compression::GZIP).unwrap();
        assert!(first.made);
        assert_eq!(first.path, dir.path().join("l.tar.gz"));
        assert!(dir.path().join("l.tar.gz.json").is_file());
        let again = compressed(&p, &id, Compression::GZIP).unwrap();
        assert!(!again.made, "a second call reads the cache");
        assert_eq!(again.blob, first.blob);

        // Another level is another blob.
        let nine = Compression {
            codec: Codec::Gzip,
            level: 9,
        };
        assert!(cached(&p, &id, nine).is_none());
        let at_nine = compressed(&p, &id, nine).unwrap();
        assert!(at_nine.made);
        assert!(cached(&p, &id, Compression::GZIP).is_none(), "replaced");

        // Another DiffID (the layer file was rewritten) misses.
        let other = crate::archive::diff_id(&b"other"[..]).unwrap();
        assert!(cached(&p, &other, nine).is_none());
        // A truncated blob misses rather than being sent.
        std::fs::write(&at_nine.path, b"short").unwrap();
        assert!(cached(&p, &id, nine).is_none());
        // zstd blobs live beside the gzip ones.
        let z = compressed(&p, &id, Compression::ZSTD).unwrap();
        assert_eq!(z.path, dir.path().join("l.tar.zst"));
    }
}
