//! Cache prefetch hints.

/// Asks the CPU to bring the cache line at `p` in: a hint, with no effect the program can see.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address, and reads or writes nothing.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Bytes in a cache line, on the machines we tune for.
const LINE: usize = 64;

/// Prefetches `lines` cache lines from `start` on (any address: a prefetch never faults).
#[inline(always)]
pub(crate) fn prefetch_lines(start: *const u8, lines: usize) {
    for line in 0..lines {
        prefetch(start.wrapping_add(line * LINE));
    }
}

/// Prefetches the cache lines of `s`, at most `max_lines` of them from its start: a search
/// about to probe a small array then waits for its misses together rather than one after
/// another.
#[inline(always)]
pub(crate) fn prefetch_slice<T>(s: &[T], max_lines: usize) {
    let start = s.as_ptr().cast::<u8>();
    let bytes = std::mem::size_of_val(s).min(max_lines * LINE);
    prefetch_lines(start, bytes.div_ceil(LINE));
    // The last line, when the slice starts partway into its first one.
    if bytes > 0 {
        prefetch(start.wrapping_add(bytes - 1));
    }
}
