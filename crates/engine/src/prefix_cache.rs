//! The prefix cache: KV blocks of earlier prompts, found again by their
//! tokens so that a request sharing a prefix (a system prompt, the earlier
//! turns of a chat) does not recompute it.
//!
//! Only full blocks are cached: a full block of a prompt is never written
//! again (generated tokens go to later positions), so its K/V are a pure
//! function of the tokens up to its end. A block is keyed by a hash chain,
//! `key(i) = hash(key(i-1), tokens of block i)`, so a hit on block i implies
//! the whole prefix before it matches too; each entry also keeps its tokens
//! and its parent key and a lookup compares them, so a hash collision can
//! never hand out wrong K/V.
//!
//! Entries are reference counted by the sequences using them. An entry no
//! sequence uses stays cached until the pool needs its block back, and then
//! the least recently used goes first.

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

/// The key of the empty prefix, the parent of a prompt's first block.
const ROOT: u64 = 0x736d_656c_745f_6b76;

#[derive(Debug)]
struct Entry {
    block: u32,
    parent: u64,
    tokens: Box<[u32]>,
    /// Sequences using the block now.
    refs: u32,
    /// When the last user released it (meaningful while `refs == 0`).
    released_at: u64,
}

/// Cached full KV blocks, keyed by the token prefix they end.
#[derive(Debug)]
pub struct PrefixCache {
    block_size: usize,
    entries: HashMap<u64, Entry>,
    /// The key of each cached block.
    by_block: HashMap<u32, u64>,
    /// `(released_at, key)` of every entry no sequence uses: the eviction order.
    idle: BTreeSet<(u64, u64)>,
    clock: u64,
    hit_tokens: u64,
    query_tokens: u64,
}

/// The chain key of the block holding `tokens`, after the prefix keyed `parent`.
fn chain_key(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    // Keep ROOT free so a block's key can never be mistaken for the empty prefix.
    match h.finish() {
        ROOT => ROOT ^ 1,
        k => k,
    }
}

impl PrefixCache {
    /// An empty cache of blocks of `block_size` positions.
    pub fn new(block_size: usize) -> Self {
        PrefixCache {
            block_size: block_size.max(1),
            entries: HashMap::new(),
            by_block: HashMap::new(),
            idle: BTreeSet::new(),
            clock: 0,
            hit_tokens: 0,
            query_tokens: 0,
        }
    }

    /// Blocks the cache holds (in use by sequences or idle).
    pub fn cached_blocks(&self) -> usize {
        self.entries.len()
    }

    /// Cached blocks no sequence uses: the pool can take these back.
    pub fn idle_blocks(&self) -> usize {
        self.idle.len()
    }

    /// Prompt tokens found in the cache so far (reported by [`record`](Self::record)).
    pub fn hit_tokens(&self) -> u64 {
        self.hit_tokens
    }

    /// Prompt tokens looked up so far (reported by [`record`](Self::record)).
    pub fn query_tokens(&self) -> u64 {
        self.query_tokens
    }

    /// Whether `block` is owned by the cache.
    pub fn owns(&self, block: u32) -> bool {
        self.by_block.contains_key(&block)
    }

    /// Finds the longest cached run of full blocks that starts `tokens` and
    /// takes a reference on each; returns their block ids in order. Release
    /// each with [`release`](Self::release).
    pub fn acquire(&mut self, tokens: &[u32]) -> Vec<u32> {
        let mut parent = ROOT;
        let mut found = Vec::new();
        for chunk in tokens.chunks_exact(self.block_size) {
            let key = chain_key(parent, chunk);
            let Some(e) = self.entries.get_mut(&key) else {
                break;
            };
            if e.parent != parent || *e.tokens != *chunk {
                break; // a hash collision: not our prefix
            }
            if e.refs == 0 {
                self.idle.remove(&(e.released_at, key));
            }
            e.refs += 1;
            found.push(e.block);
            parent = key;
        }
        found
    }

    /// Counts a lookup of `queried` prompt tokens of which `hit` were cached
    /// (for the hit rate).
    pub fn record(&mut self, queried: usize, hit: usize) {
        self.query_tokens += queried as u64;
        self.hit_tokens += hit as u64;
    }

    /// Drops one reference on a cached block; at zero it becomes evictable.
    /// Returns false if the cache does not own `block`.
    pub fn release(&mut self, block: u32) -> bool {
        let Some(&key) = self.by_block.get(&block) else {
            return false;
        };
        let Some(e) = self.entries.get_mut(&key) else {
            return false;
        };
        if e.refs > 0 {
            e.refs -= 1;
            if e.refs == 0 {
                self.clock += 1;
                e.released_at = self.clock;
                self.idle.insert((e.released_at, key));
            }
        }
        true
    }

    /// Offers the full blocks of a prompt whose K/V are written: `blocks[i]`
    /// holds `tokens[i*bs..(i+1)*bs]`. A block whose prefix is not cached
    /// yet moves into the cache, with one reference held by the caller; one
    /// already cached (the same text prefilled by another sequence) stays
    /// the caller's. Returns, per offered block, whether the cache took it.
    pub fn publish(&mut self, tokens: &[u32], blocks: &[u32]) -> Vec<bool> {
        let mut parent = ROOT;
        let mut taken = Vec::new();
        for (chunk, &block) in tokens.chunks_exact(self.block_size).zip(blocks) {
            let key = chain_key(parent, chunk);
            match self.entries.get(&key) {
                Some(e) if e.block == block => {
                    // Already ours: the caller got it from `acquire`.
                    taken.push(false);
                }
                Some(e) if e.parent != parent || *e.tokens != *chunk => {
                    // A collision with another prefix: neither this block nor
                    // anything after it can be keyed safely.
                    break;
                }
                Some(_) => taken.push(false),
                None => {
                    self.entries.insert(
                        key,
                        Entry {
                            block,
                            parent,
                            tokens: chunk.into(),
                            refs: 1,
                            released_at: 0,
                        },
                    );
                    self.by_block.insert(block, key);
                    taken.push(true);
                }
            }
            parent = key;
        }
        taken
    }

    /// Removes up to `n` idle blocks, least recently used first, and returns
    /// them for the pool to reuse.
    pub fn evict(&mut self, n: usize) -> Vec<u32> {
        let mut freed = Vec::new();
        while freed.len() < n {
            let Some((_, key)) = self.idle.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&key) {
                self.by_block.remove(&e.block);
                freed.push(e.block);
            }
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_acquire_release_evict_in_lru_order() {
        let mut c = PrefixCache::new(4);
        let a: Vec<u32> = (0..12).map(|i| i * 7 + 3).collect();
        assert!(c.acquire(&a).is_empty());
        assert_eq!(c.publish(&a, &[10, 11, 12]), vec![true; 3]);
        assert_eq!(c.cached_blocks(), 3);
        assert_eq!(c.idle_blocks(), 0);
        // A prompt sharing the first 9 tokens shares two full blocks.
        let mut b = a[..9].to_vec();
        b.extend([999, 998, 997]);
        assert_eq!(c.acquire(&b), vec![10, 11]);
        // The first sequence ends: block 12 is idle, 10 and 11 still used.
        for blk in [12, 11, 10] {
            assert!(c.release(blk));
        }
        assert_eq!(c.idle_blocks(), 1);
        assert_eq!(c.evict(5), vec![12]);
        for blk in [11, 10] {
            c.release(blk);
        }
        // Released deepest first: the deeper block goes first.
        assert_eq!(c.evict(1), vec![11]);
        assert_eq!(c.evict(9), vec![10]);
        assert_eq!(c.cached_blocks(), 0);
        assert!(!c.release(10));
    }

    #[test]
    fn a_duplicate_prefill_stays_private_and_later_blocks_chain_on() {
        let mut c = PrefixCache::new(2);
        let t = [5, 6, 7, 8];
        assert_eq!(c.publish(&t[..2], &[1]), vec![true]);
        // Another sequence prefilled the same first block into block 2.
        assert_eq!(c.publish(&t, &[2, 3]), vec![false, true]);
        assert_eq!(c.acquire(&t), vec![1, 3]);
        assert!(!c.owns(2));
    }
}
