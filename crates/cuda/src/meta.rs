//! The small arrays a step hands to its kernels (token ids, positions, cache
//! slots, block tables, RoPE frequencies), kept in device memory between ops
//! and between steps.
//!
//! Every layer passes the same positions, slots and block tables, so each is
//! copied to the GPU once per step (and not at all when it did not change),
//! instead of once per op: at decode, a copy per op was the largest cost of
//! a token. Each kind of array has its own buffer at a fixed address while
//! it does not outgrow it, which a captured CUDA graph will need too.

use cudarc::driver::CudaSlice;

use crate::CudaBackend;

/// Which array.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Meta {
    Tokens,
    Positions,
    InvFreq,
    /// A second RoPE table, for models whose layers alternate two (Gemma 3).
    InvFreqB,
    Slots,
    AttnPositions,
    AttnStarts,
    AttnTables,
    /// Bulk attention tiles: (first row, rows) pairs.
    AttnTiles,
    Gather,
}

const KINDS: usize = 10;

/// The host copy of what the device buffer holds, and the buffer.
struct Entry {
    host: Vec<u32>,
    dev: CudaSlice<u32>,
    /// The queue epoch in which the buffer was last handed to a kernel.
    used: u64,
}

/// One entry per [`Meta`] kind.
#[derive(Default)]
pub(crate) struct MetaCache {
    entries: [Option<Entry>; KINDS],
}

impl CudaBackend {
    /// The device address of a RoPE frequency table. Two tables are kept
    /// (`InvFreq`, `InvFreqB`), so a model whose layers alternate two RoPE
    /// bases (Gemma 3's local and global layers) uploads each once, not at
    /// every layer (which would also cut each step into several launch lists).
    pub(crate) fn freq_meta(&self, data: &[u32]) -> Option<u64> {
        let key = {
            let cache = self.meta.lock().unwrap_or_else(|p| p.into_inner());
            let holds = |k: Meta| {
                cache.entries[k as usize]
                    .as_ref()
                    .is_some_and(|e| e.host == data)
            };
            // Unused slots first, then the one used least recently.
            let age = |k: Meta| cache.entries[k as usize].as_ref().map(|e| e.used);
            if holds(Meta::InvFreq) {
                Meta::InvFreq
            } else if holds(Meta::InvFreqB) {
                Meta::InvFreqB
            } else if age(Meta::InvFreq) <= age(Meta::InvFreqB) {
                Meta::InvFreq
            } else {
                Meta::InvFreqB
            }
        };
        self.meta(key, data)
    }

    /// The device address of `data` as array `key`: uploaded only when it
    /// differs from what the buffer already holds. None (with the pending
    /// error set) if it cannot be copied; None without an error for no data.
    pub(crate) fn meta(&self, key: Meta, data: &[u32]) -> Option<u64> {
        if data.is_empty() {
            return None;
        }
        let mut cache = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut cache.entries[key as usize];
        let epoch = self.queue.epoch();
        if let Some(e) = slot.as_mut()
            && e.host == data
        {
            e.used = epoch;
            return Some(self.addr(&e.dev));
        }
        // New contents: launches recorded since the last flush may read the
        // old ones, so they go first.
        let epoch = if slot.as_ref().is_some_and(|e| e.used == epoch) {
            self.queue.flush();
            self.queue.epoch()
        } else {
            epoch
        };
        if slot.as_ref().is_none_or(|e| e.dev.len() < data.len()) {
            let want = data.len().max(slot.as_ref().map_or(0, |e| 2 * e.dev.len()));
            // SAFETY: u32 has no invalid bit patterns; the first `data.len()`
            // values are written below before any kernel reads them.
            match unsafe { self.queue.stream.alloc::<u32>(want) } {
                Ok(dev) => {
                    *slot = Some(Entry {
                        host: Vec::new(),
                        dev,
                        used: epoch,
                    })
                }
                Err(e) => {
                    self.fail(format!(
                        "{key:?}: cannot allocate {want} values on the GPU: {e}"
                    ));
                    *slot = None;
                    return None;
                }
            }
        }
        let e = slot.as_mut()?;
        // Ordered on the stream after every kernel sent so far, so kernels
        // still to run on the old contents read the old contents.
        let mut dst = e.dev.slice_mut(..data.len());
        if let Err(err) = self.queue.timed(crate::queue::HostClock::Upload, || {
            self.queue.stream.memcpy_htod(data, &mut dst)
        }) {
            self.fail(format!(
                "{key:?}: cannot copy {} values to the GPU: {err}",
                data.len()
            ));
            *slot = None;
            return None;
        }
        e.host.clear();
        e.host.extend_from_slice(data);
        e.used = epoch;
        Some(self.addr(&e.dev))
    }
}
