//! The C allocator's thresholds, set for a process that moves bulk data.
//!
//! A tunnel's buffers come and go in sizes of a few hundred KiB to a few MiB (a push
//! body, a run of download frames). With glibc's defaults each of those is a fresh
//! `mmap`, and freeing it gives the pages back: the next one is zeroed and faulted in
//! again, page by page. A profile of a PHT/2 download put the server at half its CPU time
//! in that churn (docs/BENCHMARKS.md, "The allocator"). Serving such sizes from the heap
//! and keeping a bounded amount of freed memory removes it.

/// Allocations below this size come from the heap, not from a fresh mapping.
pub const MMAP_THRESHOLD: usize = 8 << 20;
/// Free memory at the top of the heap kept for reuse before it is given back.
pub const TRIM_THRESHOLD: usize = 32 << 20;

/// Sets [`MMAP_THRESHOLD`] and [`TRIM_THRESHOLD`] on glibc, unless `GLIBC_TUNABLES`
/// already says something about malloc (the operator's choice wins). Elsewhere it does
/// nothing. Call it early in `main`: the thresholds apply to allocations made after.
///
/// ```
/// pht_runtime::tune_allocator();
/// ```
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
            return;
        }
        // SAFETY: mallopt only changes the allocator's parameters; both values are in
        // the range glibc accepts (its cap for the mmap threshold is 32 MiB on 64-bit).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
        }
    }
}
