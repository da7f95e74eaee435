//! A vector that one writer appends to while readers read it without a lock.
//!
//! The open in-memory layer takes the writer's puts while readers look keys up in it. Behind a
//! lock, a reader that finds the writer inside waits for it, and on a machine with fewer cores
//! than busy threads the writer is sometimes off the CPU there: milliseconds a reader under
//! ingest feels as its tail. Here an element, once pushed, never moves and is never written
//! again, so a reader needs no lock: the elements live in buckets that double in size, each
//! allocated whole when the one before is full and never reallocated (so growing copies
//! nothing), and a push is published by storing the new length with `Release`.
//!
//! Pushing is for one thread at a time ([`AppendVec::push`] is `unsafe` for that). Readers see
//! every element below the length they load. [`hide_from`](AppendVec::hide_from) lowers the
//! length without freeing anything, for a layer that takes no more pushes: a reader that
//! already holds a reference to a hidden element keeps reading valid, unchanged memory.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Buckets: with a first bucket of at least one element, room for far more than any layer.
const BUCKETS: usize = 40;

/// Bytes of the first bucket, about: later buckets double.
const FIRST_BUCKET_BYTES: usize = 16 << 10;

/// Buckets of at least this many bytes give their pages back in steps before they are freed.
const RELEASE_FIRST: usize = 1 << 20;

/// Elements of `T` that one writer appends and any thread reads.
pub(crate) struct AppendVec<T> {
    /// Bucket `b` holds `first() << b` elements; null until the writer needs it.
    buckets: [AtomicPtr<T>; BUCKETS],
    /// Elements readers may read: all below it are written.
    len: AtomicUsize,
    /// Elements written (above `len` only once [`hide_from`](Self::hide_from) lowered it);
    /// stored with `Release` after each write, as `len` is.
    pushed: AtomicUsize,
}

// SAFETY: the vector owns its elements, as a `Vec<T>` does; a shared reference hands out only
// `&T` (pushing moves a `T` in from one thread at a time), so sharing it needs `T: Sync` and
// moving it (and so dropping the elements elsewhere) `T: Send`.
unsafe impl<T: Send> Send for AppendVec<T> {}
// SAFETY: see above; pushes also move `T`s in from the pushing thread.
unsafe impl<T: Send + Sync> Sync for AppendVec<T> {}

impl<T> Default for AppendVec<T> {
    fn default() -> Self {
        AppendVec {
            buckets: [const { AtomicPtr::new(ptr::null_mut()) }; BUCKETS],
            len: AtomicUsize::new(0),
            pushed: AtomicUsize::new(0),
        }
    }
}

impl<T> AppendVec<T> {
    /// log2 of the first bucket's elements.
    const FIRST_BITS: u32 = {
        assert!(std::mem::size_of::<T>() > 0, "no zero-sized elements");
        let n = FIRST_BUCKET_BYTES / std::mem::size_of::<T>();
        if n <= 1 { 0 } else { n.ilog2() }
    };

    /// The bucket holding element `i`, and its place there.
    fn locate(i: usize) -> (usize, usize) {
        let j = i + (1 << Self::FIRST_BITS);
        let b = j.ilog2() - Self::FIRST_BITS;
        (b as usize, j - (1 << (b + Self::FIRST_BITS)))
    }

    fn bucket_layout(b: usize) -> Layout {
        Layout::array::<T>(1 << (b as u32 + Self::FIRST_BITS)).expect("bucket size overflows")
    }

    /// Elements readers may read.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `x`, visible to readers once this returns.
    ///
    /// # Safety
    /// No other thread pushes to this vector meanwhile (the in-memory layer pushes only under
    /// its writer lock), and [`hide_from`](Self::hide_from) was not called.
    pub(crate) unsafe fn push(&self, x: T) {
        let i = self.pushed.load(Ordering::Relaxed);
        debug_assert_eq!(i, self.len.load(Ordering::Relaxed), "push after hide_from");
        let (b, at) = Self::locate(i);
        let mut bucket = self.buckets[b].load(Ordering::Acquire);
        if bucket.is_null() {
            let layout = Self::bucket_layout(b);
            // SAFETY: the layout is of a non-empty array of a type that is not zero-sized.
            bucket = unsafe { alloc(layout) }.cast::<T>();
            if bucket.is_null() {
                handle_alloc_error(layout);
            }
            self.buckets[b].store(bucket, Ordering::Release);
        }
        // SAFETY: `at` is inside bucket `b`, whose slot `at` no reader reads (it is at or above
        // `len`) and no other thread writes (one pusher at a time).
        unsafe { bucket.add(at).write(x) };
        self.pushed.store(i + 1, Ordering::Release);
        self.len.store(i + 1, Ordering::Release);
    }

    /// Element `i`, if readers may read it.
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len() {
            return None;
        }
        let (b, at) = Self::locate(i);
        let bucket = self.buckets[b].load(Ordering::Acquire);
        // SAFETY: `i` is below the length loaded with `Acquire`, stored with `Release` after
        // element `i` was written into its bucket (allocated and stored before that): the
        // element is initialised, and it is never written again or freed while `self` lives.
        Some(unsafe { &*bucket.add(at) })
    }

    /// Element `i`, if it was written, hidden or not: for an index a reader learned from the
    /// writer (a link stored in an element), which a later [`hide_from`](Self::hide_from)
    /// does not take back from a reader that already follows it.
    pub(crate) fn get_written(&self, i: usize) -> Option<&T> {
        if i >= self.pushed.load(Ordering::Acquire) {
            return None;
        }
        let (b, at) = Self::locate(i);
        let bucket = self.buckets[b].load(Ordering::Acquire);
        // SAFETY: as in `get`, with `pushed`, also stored with `Release` after the write.
        Some(unsafe { &*bucket.add(at) })
    }

    /// The index of the first element for which `pred` is false, all those for which it is
    /// true coming first (as [`slice::partition_point`]).
    pub(crate) fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid).is_some_and(&mut pred) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The elements from index `from` on, in order, up to the length when called.
    pub(crate) fn iter_from(&self, from: usize) -> impl Iterator<Item = &T> {
        (from..self.len()).filter_map(|i| self.get(i))
    }

    /// Readers see only the first `len` elements from now on; nothing is freed or written, so
    /// references readers hold stay valid. The vector takes no more pushes.
    pub(crate) fn hide_from(&self, len: usize) {
        if len < self.len() {
            self.len.store(len, Ordering::Release);
        }
    }
}

impl<T> Drop for AppendVec<T> {
    fn drop(&mut self) {
        let mut left = *self.pushed.get_mut();
        for b in 0..BUCKETS {
            let bucket = *self.buckets[b].get_mut();
            if bucket.is_null() {
                break;
            }
            let size = 1usize << (b as u32 + Self::FIRST_BITS);
            let n = left.min(size);
            let layout = Self::bucket_layout(b);
            // SAFETY: the first `n` elements of the bucket were written and not dropped; the
            // bucket was allocated with this layout, and no reference outlives `&mut self`.
            // Its pages are heap memory nothing reads again: a large bucket gives them back a
            // step at a time first, so that freeing it holds the process's memory-map lock
            // only briefly (see `crate::pages`).
            unsafe {
                ptr::drop_in_place(ptr::slice_from_raw_parts_mut(bucket, n));
                if layout.size() >= RELEASE_FIRST {
                    crate::pages::release_private(bucket.cast(), layout.size());
                }
                dealloc(bucket.cast(), layout);
            }
            left -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        /// Against a `Vec`: pushes in runs that cross bucket ends, every read checked after
        /// each run, then a hidden tail.
        #[test]
        fn behaves_as_a_vec(
            runs in proptest::collection::vec((any::<u32>(), 1usize..3000), 1..8),
            probes in proptest::collection::vec(0usize..20_000, 8),
            hide in 0usize..20_000,
        ) {
            let v = AppendVec::default();
            let mut model: Vec<u32> = Vec::new();
            for (x, run) in runs {
                for k in 0..run {
                    // Sorted, so `partition_point` has a partition to find.
                    let e = x.wrapping_add(k as u32);
                    let e = model.last().map_or(e, |l| (*l).max(e));
                    // SAFETY: this thread is the only pusher.
                    unsafe { v.push(e) };
                    model.push(e);
                }
                prop_assert_eq!(v.len(), model.len());
                for &p in &probes {
                    prop_assert_eq!(v.get(p), model.get(p));
                    let at = model.get(p).copied().unwrap_or(u32::MAX);
                    prop_assert_eq!(v.partition_point(|e| *e < at), model.partition_point(|e| *e < at));
                    let from: Vec<u32> = v.iter_from(p).copied().collect();
                    prop_assert_eq!(&from[..], model.get(p..).unwrap_or_default());
                }
            }
            v.hide_from(hide);
            prop_assert_eq!(v.len(), model.len().min(hide));
            for &p in &probes {
                prop_assert_eq!(v.get(p), model.get(p).filter(|_| p < hide));
                prop_assert_eq!(v.get_written(p), model.get(p));
            }
        }
    }

    /// Elements that own memory are dropped once each, hidden ones included (counted through
    /// the strong count of a shared `Arc`).
    #[test]
    fn drops_every_element_once() {
        let shared = Arc::new(());
        let v = AppendVec::default();
        for _ in 0..5000 {
            // SAFETY: this thread is the only pusher.
            unsafe { v.push(shared.clone()) };
        }
        v.hide_from(10);
        assert_eq!(Arc::strong_count(&shared), 5001);
        drop(v);
        assert_eq!(Arc::strong_count(&shared), 1);
    }

    /// A reader on another thread, reading while the writer pushes, sees every element below
    /// the length it loads, each as written.
    #[test]
    fn a_reader_sees_what_was_pushed_while_the_writer_pushes() {
        let v: Arc<AppendVec<[u64; 4]>> = Arc::default();
        let n = 200_000u64;
        let reader = {
            let v = v.clone();
            std::thread::spawn(move || {
                let mut checked = 0u64;
                while v.len() < n as usize {
                    let len = v.len();
                    for i in len.saturating_sub(64)..len {
                        let e = v.get(i).expect("below the length");
                        assert_eq!(*e, [i as u64; 4], "element {i}");
                        checked += 1;
                    }
                }
                checked
            })
        };
        for i in 0..n {
            // SAFETY: this thread is the only pusher.
            unsafe { v.push([i; 4]) };
        }
        reader.join().expect("reader");
        assert_eq!(v.len(), n as usize);
        assert!(v.iter_from(0).zip(0..).all(|(e, i)| *e == [i; 4]));
    }
}
