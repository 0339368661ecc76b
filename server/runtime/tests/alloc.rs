//! `tune_allocator` on glibc: buffers of the sizes a tunnel moves come from the heap, and
//! a freed one is reused instead of being mapped and faulted in again. A test binary of
//! its own, so that no other test allocates while it reads the allocator's counters.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn megabyte_buffers_come_from_the_heap_after_tuning() {
    // What the allocator has mapped outside the heap, in bytes.
    fn mapped() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        unsafe { libc::mallinfo2() }.hblkhd
    }
    let size = 2 << 20;
    assert!(size < pht_runtime::MMAP_THRESHOLD);

    let before = mapped();
    let plain = std::hint::black_box(vec![1u8; size]);
    assert!(
        mapped() >= before + size,
        "glibc's default maps a {size}-byte buffer of its own"
    );
    drop(plain);

    pht_runtime::tune_allocator();
    let before = mapped();
    for _ in 0..4 {
        let buf = std::hint::black_box(vec![1u8; size]);
        assert_eq!(mapped(), before, "a {size}-byte buffer was mapped apart");
        drop(buf);
    }
}
