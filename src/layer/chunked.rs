//! A vector in fixed-size chunks: what it holds never moves, so it grows without copying.
//!
//! The open in-memory layer appends every version to one vector under its write lock, and
//! readers wait on that lock. A `Vec` that doubles copies all it holds when it grows: at 400k
//! versions, 22 MB copied while every reader waits, milliseconds a reader under ingest feels as
//! its tail. Here growing is one more chunk, and a chunk's memory is freed whole, so the
//! allocator is never left with the holes of the doubled vectors a `Vec` leaves behind.

use std::ops::Index;

/// Elements per chunk: with a version of 56 bytes, 224 KiB.
const CHUNK: usize = 4096;

/// A vector of `T` kept in chunks of [`CHUNK`] elements, each allocated whole when the one
/// before it is full and never reallocated.
pub(crate) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push(&mut self, x: T) {
        if self.len == self.chunks.len() * CHUNK {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        // The last chunk has room: a chunk is added only when the ones before are full, and
        // a chunk never grows past `CHUNK`, so this push does not reallocate.
        self.chunks[self.len / CHUNK].push(x);
        self.len += 1;
    }

    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    /// The index of the first element for which `pred` is false, all those for which it is
    /// true coming first (as [`slice::partition_point`]).
    pub(crate) fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        // The first chunk whose last element fails, then within it.
        let c = self
            .chunks
            .partition_point(|chunk| chunk.last().is_some_and(&mut pred));
        match self.chunks.get(c) {
            Some(chunk) => c * CHUNK + chunk.partition_point(pred),
            None => self.len,
        }
    }

    /// The elements from index `from` on, in order.
    pub(crate) fn iter_from(&self, from: usize) -> impl Iterator<Item = &T> {
        let (c, i) = (from / CHUNK, from % CHUNK);
        self.chunks
            .get(c..)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .flat_map(move |(n, chunk)| chunk[if n == 0 { i.min(chunk.len()) } else { 0 }..].iter())
    }

    /// Keeps the first `len` elements.
    pub(crate) fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let chunks = len.div_ceil(CHUNK);
        self.chunks.truncate(chunks);
        if let Some(last) = self.chunks.last_mut() {
            last.truncate(len - (chunks - 1) * CHUNK);
        }
        self.len = len;
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push(u32),
        Truncate(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            20 => any::<u32>().prop_map(Op::Push),
            1 => (0..3 * CHUNK).prop_map(Op::Truncate),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        /// A chunked vector against a `Vec`: pushes in runs that cross chunk ends, truncations,
        /// and every read checked after each step's run.
        #[test]
        fn chunked_behaves_as_a_vec(
            ops in proptest::collection::vec((op(), 1usize..2 * CHUNK), 1..12),
            probes in proptest::collection::vec(0usize..3 * CHUNK, 8),
        ) {
            let mut c = Chunked::default();
            let mut model: Vec<u32> = Vec::new();
            for (op, run) in ops {
                match op {
                    // Sorted pushes, so `partition_point` has a partition to find.
                    Op::Push(x) => for k in 0..run {
                        let v = x.wrapping_add(k as u32);
                        let v = model.last().map_or(v, |l| (*l).max(v));
                        c.push(v);
                        model.push(v);
                    },
                    Op::Truncate(n) => {
                        c.truncate(n);
                        model.truncate(n);
                    }
                }
                prop_assert_eq!(c.len(), model.len());
                prop_assert_eq!(c.is_empty(), model.is_empty());
                for &p in &probes {
                    prop_assert_eq!(c.get(p), model.get(p));
                    if p < model.len() {
                        prop_assert_eq!(c[p], model[p]);
                    }
                    let at = model.get(p).copied().unwrap_or(u32::MAX);
                    prop_assert_eq!(c.partition_point(|v| *v < at), model.partition_point(|v| *v < at));
                    let from: Vec<u32> = c.iter_from(p).copied().collect();
                    prop_assert_eq!(&from[..], model.get(p..).unwrap_or_default());
                }
            }
        }
    }
}
