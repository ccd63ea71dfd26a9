//! Layer identities and the classic docker-archive's `manifest.json`.
//!
//! A layer's **DiffID** is the sha256 of its uncompressed tar (what an
//! image config lists, and what an engine checks on load); the image itself
//! — config, manifest and their digests — is [`crate::oci`]'s. The classic
//! `manifest.json` here is what the benchmark's engine-alone row loads.

use std::io::Write;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::closure::hex;

/// `sha256:<hex>` of an uncompressed layer tar.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DiffId(pub String);

impl DiffId {
    /// The hex part, used as the layer's folder in the archive.
    pub fn hex(&self) -> &str {
        self.0.trim_start_matches("sha256:")
    }
}

/// Computes a DiffID by streaming `reader` through sha256.
pub fn diff_id(mut reader: impl std::io::Read) -> std::io::Result<DiffId> {
    let mut h = Sha256::new();
    std::io::copy(&mut reader, &mut HashWriter(&mut h))?;
    Ok(DiffId(format!("sha256:{}", hex(&h.finalize()))))
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `manifest.json` of a docker-archive with one untagged image.
pub fn manifest_json(config_file: &str, diff_ids: &[DiffId]) -> Vec<u8> {
    let layers: Vec<String> = diff_ids
        .iter()
        .map(|d| format!("{}/layer.tar", d.hex()))
        .collect();
    serde_json::to_vec(
        &serde_json::json!([{ "Config": config_file, "RepoTags": null, "Layers": layers }]),
    )
    .expect("manifest serializes")
}

/// `1970-01-01T00:00:01Z` from seconds since the epoch.
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(1), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn diff_id_is_the_sha256_of_the_bytes() {
        assert_eq!(
            diff_id(&b""[..]).unwrap().0,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
