//! The project's files are streamed to the builder, never held in memory
//! (issue #10: a 1 GiB data folder was read into one buffer, then copied).
//! A counting allocator watches the peak while a 200 MiB sparse file is
//! written as a tar; its own test binary, so no other test allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let n = NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(n, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Counts what it is given and keeps none of it.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_200_mib_file_is_streamed_without_holding_it_in_memory() {
    const SIZE: u64 = 200 << 20;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("default.nix"), "{ }").unwrap();
    let big = std::fs::File::create(dir.path().join("data.bin")).unwrap();
    big.set_len(SIZE).unwrap(); // sparse: no disk, all zeros
    drop(big);

    let sources = nixpack::sources::Sources::walk(dir.path()).unwrap();
    let before = NOW.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let mut b = tar::Builder::new(Counter(0));
    sources.write_tar(&mut b).unwrap();
    let sent = b.into_inner().unwrap().0;
    let peak = PEAK.load(Ordering::Relaxed) - before;

    assert!(sent > SIZE, "the whole file was sent ({sent} bytes)");
    assert!(
        peak < 4 << 20,
        "{peak} bytes allocated at once to send a {SIZE}-byte file"
    );
}
