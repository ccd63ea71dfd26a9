//! Helpers of the end-to-end tests that talk to the real engine: a
//! runtime, a client (`DOCKER_HOST` or the default socket, like nixpack),
//! names no other run uses, the offline base, and guards that remove what
//! a test made, pass or fail.

use std::time::{SystemTime, UNIX_EPOCH};

/// The offline builder base `scripts/make-builder-base` makes.
pub const BASE: &str = "nixpack-base:bookworm";

/// Bytes of a process's output as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("nixpack-e2e/{prefix}-{}-{nanos}", std::process::id())
}

/// A runtime for the test's own engine calls.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The engine nixpack uses too (`DOCKER_HOST` or the default socket).
pub fn docker() -> bollard::Docker {
    rt().block_on(async {
        bollard::Docker::connect_with_defaults()
            .unwrap()
            .negotiate_version()
            .await
            .unwrap()
    })
}

/// Fails the test, saying how to fix it, when the base is missing.
pub fn require_base() {
    let present = rt().block_on(docker().inspect_image(BASE)).is_ok();
    assert!(
        present,
        "the builder base {BASE} is missing: run scripts/make-builder-base (scripts/test does)"
    );
}

/// Removes the images when the test ends, pass or fail.
pub struct ImageGuard(pub Vec<String>);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let d = docker();
        for r in &self.0 {
            let opts = bollard::query_parameters::RemoveImageOptionsBuilder::default()
                .force(true)
                .build();
            let _ = rt().block_on(d.remove_image(r, Some(opts), None));
        }
    }
}

/// Removes the volumes (and a store volume's `.seeded` marker) when the
/// test ends, pass or fail.
pub struct VolumeGuard(pub Vec<String>);

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        let d = docker();
        for v in &self.0 {
            for name in [v.clone(), format!("{v}.seeded")] {
                let opts = bollard::query_parameters::RemoveVolumeOptionsBuilder::default()
                    .force(true)
                    .build();
                let _ = rt().block_on(d.remove_volume(&name, Some(opts)));
            }
        }
    }
}
