//! K/V storage in host memory: a pool of fixed-size blocks per layer, in f16
//! (the default: half the memory and bandwidth) or f32.

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

use crate::{BackendError, KvLayout, KvType};

/// Stored K or V values. f16 values are kept as their bits so the pool can
/// be allocated zeroed by the OS: pages count towards memory only once a
/// sequence writes them.
#[derive(Clone, Debug)]
enum Store {
    F32(Vec<f32>),
    F16(Vec<u16>),
}

/// One stored row (all KV heads of one position), in its storage type.
#[derive(Clone, Copy, Debug)]
pub enum KvRow<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl KvRow<'_> {
    /// Value `i` as f32.
    pub fn get(&self, i: usize) -> f32 {
        match self {
            KvRow::F32(r) => r[i],
            KvRow::F16(r) => r[i].to_f32(),
        }
    }

    /// The values `range` of this row as a sub-row.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        match self {
            KvRow::F32(r) => KvRow::F32(&r[range]),
            KvRow::F16(r) => KvRow::F16(&r[range]),
        }
    }
}

impl Store {
    fn alloc(kind: KvType, n: usize, bytes: usize) -> Result<Self, BackendError> {
        // Probe that the address space can be had (an error, not an abort),
        // then take zeroed memory, which the OS maps lazily.
        let mut probe: Vec<u8> = Vec::new();
        probe
            .try_reserve_exact(n * kind.bytes())
            .map_err(|_| BackendError::OutOfMemory {
                what: "KV cache",
                bytes,
            })?;
        drop(probe);
        Ok(match kind {
            KvType::F32 => Store::F32(vec![0.0; n]),
            KvType::F16 => Store::F16(vec![0; n]),
        })
    }

    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Store::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            Store::F16(v) => v[at..at + src.len()]
                .reinterpret_cast_mut::<f16>()
                .convert_from_f32_slice(src),
        }
    }

    fn row(&self, at: usize, len: usize) -> KvRow<'_> {
        match self {
            Store::F32(v) => KvRow::F32(&v[at..at + len]),
            Store::F16(v) => KvRow::F16(v[at..at + len].reinterpret_cast::<f16>()),
        }
    }
}

/// Host K/V pool. Slot `s` of a layer is position `s % block_size` of block
/// `s / block_size`; a block holds `block_size` consecutive rows.
#[derive(Clone, Debug)]
pub struct HostKv {
    pub layout: KvLayout,
    k: Store,
    v: Store,
}

impl HostKv {
    /// Allocates the pool, refusing sizes that overflow or cannot be had.
    pub fn new(layout: KvLayout) -> Result<Self, BackendError> {
        let bytes = layout.bytes().ok_or(BackendError::OutOfMemory {
            what: "KV cache",
            bytes: usize::MAX,
        })?;
        let n = bytes / 2 / layout.dtype.bytes();
        Ok(HostKv {
            layout,
            k: Store::alloc(layout.dtype, n, bytes)?,
            v: Store::alloc(layout.dtype, n, bytes)?,
        })
    }

    fn offset(&self, layer: usize, slot: usize) -> usize {
        let l = &self.layout;
        (layer * l.n_blocks * l.block_size + slot) * l.row_width()
    }

    fn slot(&self, block_table: &[u32], pos: usize) -> usize {
        let bs = self.layout.block_size;
        block_table[pos / bs] as usize * bs + pos % bs
    }

    /// Writes one position's K and V rows (rounded to the storage type).
    pub fn store(&mut self, layer: usize, slot: usize, k: &[f32], v: &[f32]) {
        let o = self.offset(layer, slot);
        self.k.write(o, k);
        self.v.write(o, v);
    }

    /// K row of sequence position `pos` (through its block table).
    pub fn k_row(&self, layer: usize, block_table: &[u32], pos: usize) -> KvRow<'_> {
        let o = self.offset(layer, self.slot(block_table, pos));
        self.k.row(o, self.layout.row_width())
    }

    /// V row of sequence position `pos`.
    pub fn v_row(&self, layer: usize, block_table: &[u32], pos: usize) -> KvRow<'_> {
        let o = self.offset(layer, self.slot(block_table, pos));
        self.v.row(o, self.layout.row_width())
    }

    /// The K rows of `count` consecutive positions starting at a block
    /// boundary `pos` (they are contiguous within one block).
    pub fn k_block(
        &self,
        layer: usize,
        block_table: &[u32],
        pos: usize,
        count: usize,
    ) -> KvRow<'_> {
        debug_assert!(pos % self.layout.block_size + count <= self.layout.block_size);
        let o = self.offset(layer, self.slot(block_table, pos));
        self.k.row(o, count * self.layout.row_width())
    }

    /// The V rows of `count` consecutive positions within one block.
    pub fn v_block(
        &self,
        layer: usize,
        block_table: &[u32],
        pos: usize,
        count: usize,
    ) -> KvRow<'_> {
        debug_assert!(pos % self.layout.block_size + count <= self.layout.block_size);
        let o = self.offset(layer, self.slot(block_table, pos));
        self.v.row(o, count * self.layout.row_width())
    }
}
