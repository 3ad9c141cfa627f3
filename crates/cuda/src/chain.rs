//! Greedy steps chained on the device (`Backend::chains_greedy`): a step's
//! argmax stays in the argmax scratch, where the next step's embedding reads
//! it, and its copy to the host goes into one of two pinned buffers, so the
//! host can queue step i + 1 before it waits for step i's token
//! (`Model::decode_greedy`). The launch list of a chained step does not
//! depend on the token, so it replays as one graph like any decode step.

use cudarc::driver::{CudaEvent, PinnedHostSlice};
use smelt_backend::BackendError;

use crate::CudaBackend;
use crate::backend::{CudaBuf, CudaWeight, MAX_GRID_Y, blocks};
use crate::launch::{Arg, BLOCK};
use crate::weight_code;

/// One pinned copy of a chained argmax.
struct Slot {
    host: PinnedHostSlice<u32>,
    /// Recorded after the copy into `host`. (The pinned buffer's own event
    /// is recorded only when cudarc manages stream synchronisation, which
    /// this backend turns off: without this event the host read stale ids,
    /// found by the first run on a GPU.)
    copied: CudaEvent,
    ticket: u64,
    rows: usize,
}

/// The pinned copies of the two latest chained argmaxes.
#[derive(Default)]
pub(crate) struct ChainState {
    /// Per slot (ticket % 2).
    slots: [Option<Slot>; 2],
    next: u64,
    /// Columns (the vocabulary) of the last chained argmax's logits: its
    /// ids are below this.
    cols: usize,
}

fn device(reason: String) -> BackendError {
    BackendError::Device {
        backend: "cuda",
        reason,
    }
}

impl CudaBackend {
    /// `Backend::argmax_rows_chained`.
    pub(crate) fn argmax_chained_on_device(&self, x: &CudaBuf) -> u64 {
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        let ticket = chain.next;
        chain.next += 1;
        chain.cols = x.cols;
        let slot = (ticket % 2) as usize;
        chain.slots[slot] = chain.slots[slot].take().filter(|s| s.host.len() >= x.rows);
        if chain.slots[slot].is_none() {
            // SAFETY: the buffer is only read after a copy into it has
            // completed (`chained_ids` checks the slot's ticket and waits for
            // its event).
            let host = unsafe { self.queue.ctx.alloc_pinned::<u32>(x.rows.max(1)) };
            match (host, self.queue.ctx.new_event(None)) {
                (Ok(host), Ok(copied)) => {
                    chain.slots[slot] = Some(Slot {
                        host,
                        copied,
                        ticket: u64::MAX,
                        rows: 0,
                    });
                }
                (Err(e), _) | (_, Err(e)) => {
                    self.fail(format!("argmax_rows: cannot allocate pinned memory: {e}"));
                    return ticket;
                }
            }
        }
        self.argmax_launch(x, |scratch, rows| {
            if let Some(s) = chain.slots[slot].as_mut() {
                // Queued after the step's launches, before the next step's:
                // it copies this step's ids.
                let copy = self
                    .queue
                    .stream
                    .memcpy_dtoh(&scratch.slice(..rows), &mut s.host)
                    .and_then(|()| s.copied.record(&self.queue.stream));
                match copy {
                    Ok(()) => (s.ticket, s.rows) = (ticket, rows),
                    Err(e) => self.fail(format!("argmax_rows: {e}")),
                }
            }
        });
        ticket
    }

    /// `Backend::chained_ids`.
    pub(crate) fn chained_ids_on_device(&self, ticket: u64) -> Result<Vec<u32>, BackendError> {
        let chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        let ids = match &chain.slots[(ticket % 2) as usize] {
            Some(s) if s.ticket == ticket => self
                .queue
                .waiting(|| s.copied.synchronize())
                .and_then(|()| s.host.as_slice())
                .map(|ids| ids[..s.rows].to_vec())
                .map_err(|e| device(format!("queued work failed: {e}"))),
            _ => Err(device(format!(
                "greedy step {ticket}'s tokens are not kept (only the two latest are)"
            ))),
        };
        match self.queue.take_error() {
            Some(e) => Err(device(e)),
            None => ids,
        }
    }

    /// `Backend::embed_chained`: the token ids are the argmax scratch's
    /// first values, where the last chained argmax left them.
    pub(crate) fn embed_chained_on_device(
        &self,
        table: &CudaWeight,
        scale: f32,
        out: &mut CudaBuf,
    ) {
        let cols = self.chain.lock().unwrap_or_else(|p| p.into_inner()).cols;
        if !self.ensure(cols > 0 && cols <= table.n_rows, || {
            format!(
                "embed: no chained greedy step picked ids below the table's {} rows (logits of {cols})",
                table.n_rows
            )
        }) {
            return;
        }
        let toks = {
            let guard = self
                .argmax_scratch
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match guard.as_ref() {
                Some((scratch, r, _)) if *r >= out.rows => self.addr(scratch),
                _ => {
                    self.fail(format!(
                        "embed: no chained greedy step picked {} ids",
                        out.rows
                    ));
                    return;
                }
            }
        };
        self.embed_ids(table, toks, scale, out);
    }

    /// The embedding rows of the `out.rows` token ids at device address
    /// `toks` (below `table.n_rows`: the caller checked), times `scale`.
    pub(crate) fn embed_ids(&self, table: &CudaWeight, toks: u64, scale: f32, out: &mut CudaBuf) {
        if !self.ensure(out.rows <= MAX_GRID_Y && out.cols == table.row_len, || {
            format!(
                "embed: {}×{} rows from a table of rows of {}",
                out.rows, out.cols, table.row_len
            )
        }) {
            return;
        }
        let (Some(oa), Some(code)) = (self.buf_addr(out), weight_code(table.dtype)) else {
            return;
        };
        let chunks = table.row_len.div_ceil(8);
        self.launch(
            "embed",
            &self.k.embed[code],
            (blocks(chunks, BLOCK), out.rows as u32, 1),
            BLOCK,
            &[
                Arg::U64(self.addr(&table.bytes)),
                Arg::U64(table.row_bytes as u64),
                Arg::I32(table.row_len as i32),
                Arg::U64(toks),
                Arg::F32(scale),
                Arg::U64(oa),
            ],
        );
    }
}
