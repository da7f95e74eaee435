//! The heads of a layer file's blocks, laid out for a search that waits on memory once.
//!
//! A lookup in a layer file first finds the blocks that may hold its key by searching the
//! sorted heads (the 8 bytes of each block's first key after the file's shared prefix). A plain
//! binary search over the heads of a 50 MB file (12,000 blocks, 96 KiB of heads) takes 14
//! probes, each depending on the one before; the first few land on lines every lookup reads,
//! which stay cached, but the last five or six land on lines no recent lookup read, and each
//! waits for memory in turn. Here the heads sit in groups of eight, one cache line each, and
//! every group's first head is copied into a small top array (one byte per block, read
//! by every lookup of the file and so kept in cache): a lookup searches the top array, then
//! reads one line.

/// Heads in one group: one cache line of `u64`s.
pub(crate) const GROUP: usize = 8;

/// One cache line of heads; a last group not filled is padded with `u64::MAX`.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Group([u64; GROUP]);

/// A sorted array of block heads, searched through a sampled top level.
#[derive(Default)]
pub(crate) struct Heads {
    groups: Box<[Group]>,
    /// The first head of each group.
    top: Box<[u64]>,
    len: usize,
}

impl Heads {
    /// The heads, which must be sorted (not strictly: several blocks may share a head).
    pub(crate) fn new(heads: &[u64]) -> Heads {
        debug_assert!(heads.is_sorted());
        let groups: Box<[Group]> = heads
            .chunks(GROUP)
            .map(|c| {
                let mut g = Group([u64::MAX; GROUP]);
                g.0[..c.len()].copy_from_slice(c);
                g
            })
            .collect();
        let top = groups.iter().map(|g| g.0[0]).collect();
        Heads {
            groups,
            top,
            len: heads.len(),
        }
    }

    /// How many heads there are.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Head `i`.
    pub(crate) fn get(&self, i: usize) -> u64 {
        debug_assert!(i < self.len);
        self.groups[i / GROUP].0[i % GROUP]
    }

    /// How many heads are below `h`: the first index whose head is at least `h`.
    #[cfg(test)]
    pub(crate) fn below(&self, h: u64) -> usize {
        self.group_below(h).map_or(0, |g| self.below_in(g, h))
    }

    /// The last group whose first head is below `h`, if any: the heads below `h` end in it
    /// (heads `GROUP·g ..`). Reads only the top array.
    pub(crate) fn group_below(&self, h: u64) -> Option<usize> {
        self.top.partition_point(|x| *x < h).checked_sub(1)
    }

    /// How many heads are below `h`, given `g = group_below(h)`: reads group `g`'s line.
    pub(crate) fn below_in(&self, g: usize, h: u64) -> usize {
        // Branch-free over the line (the padding is never below `h`, as `u64::MAX` is not).
        let n = self.groups[g].0.iter().filter(|x| **x < h).count();
        (g * GROUP + n).min(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn agrees_with_a_sorted_vec(
            mut heads in proptest::collection::vec(
                prop_oneof![0u64..40, Just(u64::MAX), any::<u64>()], 0..200),
            probes in proptest::collection::vec(prop_oneof![0u64..45, Just(u64::MAX), any::<u64>()], 1..50),
        ) {
            heads.sort_unstable();
            let h = Heads::new(&heads);
            prop_assert_eq!(h.len(), heads.len());
            for (i, x) in heads.iter().enumerate() {
                prop_assert_eq!(h.get(i), *x);
            }
            for p in probes {
                prop_assert_eq!(h.below(p), heads.partition_point(|x| *x < p), "probe {}", p);
            }
        }
    }
}
