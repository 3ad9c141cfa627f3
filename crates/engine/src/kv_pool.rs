//! The KV block pool: fixed-size blocks handed to sequences on demand. The
//! backend owns the storage; this is the bookkeeping of which sequence holds
//! which blocks.

/// The pool has no free block for a sequence that needs one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("KV cache is full: {needed} more blocks of {block_size} positions needed, {free} free")]
pub struct KvFull {
    pub needed: usize,
    pub free: usize,
    pub block_size: usize,
}

/// Free-list allocator over `n_blocks` blocks of `block_size` positions.
#[derive(Debug)]
pub struct KvPool {
    block_size: usize,
    n_blocks: usize,
    free: Vec<u32>,
}

/// The blocks one sequence holds, in position order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeqBlocks {
    pub blocks: Vec<u32>,
}

impl KvPool {
    pub fn new(n_blocks: usize, block_size: usize) -> Self {
        // Reversed so blocks are handed out in ascending order.
        let free = (0..n_blocks as u32).rev().collect();
        KvPool {
            block_size,
            n_blocks,
            free,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Positions a pool of this size can hold.
    pub fn capacity(&self) -> usize {
        self.n_blocks * self.block_size
    }

    /// Makes `seq` hold enough blocks for `n_positions` positions; on failure
    /// `seq` is unchanged.
    pub fn reserve(&mut self, seq: &mut SeqBlocks, n_positions: usize) -> Result<(), KvFull> {
        let want = n_positions.div_ceil(self.block_size);
        let needed = want.saturating_sub(seq.blocks.len());
        if needed > self.free.len() {
            return Err(KvFull {
                needed,
                free: self.free.len(),
                block_size: self.block_size,
            });
        }
        let at = self.free.len() - needed;
        seq.blocks.extend(self.free.drain(at..).rev());
        Ok(())
    }

    /// Keeps only the blocks `seq` needs for its first `n_positions`.
    pub fn truncate(&mut self, seq: &mut SeqBlocks, n_positions: usize) {
        let keep = n_positions.div_ceil(self.block_size);
        while seq.blocks.len() > keep {
            if let Some(b) = seq.blocks.pop() {
                self.free.push(b);
            }
        }
    }

    /// Returns every block of `seq` to the pool.
    pub fn release(&mut self, seq: &mut SeqBlocks) {
        self.truncate(seq, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_truncate_release_balance() {
        let mut pool = KvPool::new(10, 16);
        let (mut a, mut b) = (SeqBlocks::default(), SeqBlocks::default());
        pool.reserve(&mut a, 33).unwrap();
        assert_eq!(a.blocks, vec![0, 1, 2]);
        pool.reserve(&mut b, 16 * 7).unwrap();
        assert_eq!(pool.free_blocks(), 0);
        let err = pool.reserve(&mut a, 49).unwrap_err();
        assert_eq!(
            err,
            KvFull {
                needed: 1,
                free: 0,
                block_size: 16
            }
        );
        assert_eq!(a.blocks.len(), 3);
        pool.truncate(&mut b, 17);
        assert_eq!(b.blocks.len(), 2);
        pool.reserve(&mut a, 49).unwrap();
        pool.release(&mut a);
        pool.release(&mut b);
        assert_eq!(pool.free_blocks(), 10);
        let mut all: Vec<u32> = pool.free.clone();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }
}
