//! Greedy decoding of one sequence, step after step, with the backend
//! allowed to run a step ahead of the host (`Model::decode_greedy`).

use smelt_backend::Backend;

use crate::ModelError;
use crate::forward::{Batch, Model, StepInput};

impl<B: Backend> Model<B> {
    /// Decodes greedily from `first`, the token at position `start` (not yet
    /// in `kv`), through the sequence's `block_table`: up to `max` tokens,
    /// handed to `on_token` in order as they are known, until it returns
    /// false. Returns the tokens generated; each is what
    /// [`Model::forward_greedy`] step by step would give.
    ///
    /// Where the backend chains greedy steps (`Backend::chains_greedy`: the
    /// CUDA backend), step i + 1 is queued (its input: step i's argmax, where
    /// the logits are) before the host reads step i's token, so the host's
    /// work for a step (recording its kernels, copying its positions)
    /// overlaps the device's work on the one before instead of leaving the
    /// device idle. When `on_token` stops the run early, that one queued
    /// step has still run: `kv` then also holds K/V at the position after
    /// the last token returned, which later steps simply overwrite.
    pub fn decode_greedy(
        &self,
        kv: &mut B::Kv,
        block_table: &[u32],
        start: u32,
        first: u32,
        max: usize,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<Vec<u32>, ModelError> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        if !self.backend.chains_greedy() {
            let mut token = first;
            for i in 0..max {
                let (tokens, positions, tables) = ([token], [position(start, i)?], [block_table]);
                let batch = one_row(&tokens, &positions, &tables);
                token = only_id(&self.forward_greedy(kv, &batch)?)?;
                out.push(token);
                if !on_token(token) {
                    break;
                }
            }
            return Ok(out);
        }
        let be = &self.backend;
        let mut run = || -> Result<(), ModelError> {
            let pos = position(start, 0)?;
            let mut ticket = self.chained_step(kv, block_table, pos, first, StepInput::Host)?;
            for i in 0..max {
                let next = if i + 1 < max {
                    let pos = position(start, i + 1)?;
                    Some(self.chained_step(kv, block_table, pos, first, StepInput::Chained)?)
                } else {
                    None
                };
                let token = only_id(&be.chained_ids(ticket)?)?;
                out.push(token);
                let go = on_token(token);
                match next {
                    Some(t) if go => ticket = t,
                    _ => break,
                }
            }
            Ok(())
        };
        let result = run();
        // Every queued step has finished (the one past a stop included)
        // before the cache is handed back.
        let finished = be.finish();
        result?;
        finished?;
        Ok(out)
    }

    /// Queues one step of one row at `pos` and its argmax; `token` is the
    /// input for `StepInput::Host` (and only sizes a chained step).
    fn chained_step(
        &self,
        kv: &mut B::Kv,
        block_table: &[u32],
        pos: u32,
        token: u32,
        input: StepInput,
    ) -> Result<u64, ModelError> {
        let (tokens, positions, tables) = ([token], [pos], [block_table]);
        let batch = one_row(&tokens, &positions, &tables);
        let logits = self
            .run_step(kv, &batch, input)?
            .ok_or_else(|| ModelError::BadBatch("a greedy step computed no logits".into()))?;
        Ok(self.backend.argmax_rows_chained(&logits))
    }
}

/// The id a one-row greedy step returned.
fn only_id(ids: &[u32]) -> Result<u32, ModelError> {
    ids.first()
        .copied()
        .ok_or_else(|| ModelError::BadBatch("a greedy step returned no token".into()))
}

/// Position `start + i`, or an error past `u32`.
fn position(start: u32, i: usize) -> Result<u32, ModelError> {
    u32::try_from(i)
        .ok()
        .and_then(|i| start.checked_add(i))
        .ok_or_else(|| ModelError::BadBatch(format!("position {start} + {i} is out of range")))
}

/// A one-row batch that wants that row's logits.
fn one_row<'a>(tokens: &'a [u32], positions: &'a [u32], tables: &'a [&'a [u32]]) -> Batch<'a> {
    Batch {
        tokens,
        positions,
        block_tables: tables,
        logits_rows: &[0],
    }
}
