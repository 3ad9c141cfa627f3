//! K/V storage in host memory: a pool of fixed-size blocks per layer.

use crate::{BackendError, KvLayout};

/// Host K/V pool, f32. Slot `s` of a layer is position `s % block_size` of
/// block `s / block_size`.
#[derive(Clone, Debug)]
pub struct HostKv {
    pub layout: KvLayout,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl HostKv {
    /// Allocates the pool, refusing sizes that overflow.
    pub fn new(layout: KvLayout) -> Result<Self, BackendError> {
        let bytes = layout.f32_bytes().ok_or(BackendError::OutOfMemory {
            what: "KV cache",
            bytes: usize::MAX,
        })?;
        let n = bytes / 8;
        let mut k = Vec::new();
        let mut v = Vec::new();
        if k.try_reserve_exact(n).is_err() || v.try_reserve_exact(n).is_err() {
            return Err(BackendError::OutOfMemory {
                what: "KV cache",
                bytes,
            });
        }
        k.resize(n, 0.0);
        v.resize(n, 0.0);
        Ok(HostKv { layout, k, v })
    }

    fn offset(&self, layer: usize, slot: usize) -> usize {
        let l = &self.layout;
        (layer * l.n_blocks * l.block_size + slot) * l.row_width()
    }

    fn slot(&self, block_table: &[u32], pos: usize) -> usize {
        let bs = self.layout.block_size;
        block_table[pos / bs] as usize * bs + pos % bs
    }

    /// Writes one position's K and V rows.
    pub fn store(&mut self, layer: usize, slot: usize, k: &[f32], v: &[f32]) {
        let w = self.layout.row_width();
        let o = self.offset(layer, slot);
        self.k[o..o + w].copy_from_slice(k);
        self.v[o..o + w].copy_from_slice(v);
    }

    /// K row of sequence position `pos` (through its block table).
    pub fn k_at(&self, layer: usize, block_table: &[u32], pos: usize) -> &[f32] {
        let o = self.offset(layer, self.slot(block_table, pos));
        &self.k[o..o + self.layout.row_width()]
    }

    /// V row of sequence position `pos`.
    pub fn v_at(&self, layer: usize, block_table: &[u32], pos: usize) -> &[f32] {
        let o = self.offset(layer, self.slot(block_table, pos));
        &self.v[o..o + self.layout.row_width()]
    }
}
