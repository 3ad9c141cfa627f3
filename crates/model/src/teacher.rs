//! Teacher-forced logits of a whole token sequence, for tests that compare a
//! model (on any backend) with reference logits position by position.

use smelt_backend::Backend;

use crate::{Batch, KV_BLOCK_SIZE, KvType, Model, ModelError};

/// The logits after every token of `tokens` (position 0 first), from an f32
/// KV cache whose block table runs backwards (so no test relies on slots
/// equalling positions): one prefill batch, or one row per step when
/// `one_by_one` (the decode path).
pub fn teacher_forced_logits<B: Backend>(
    model: &Model<B>,
    tokens: &[u32],
    one_by_one: bool,
) -> Result<Vec<Vec<f32>>, ModelError> {
    let n_blocks = tokens.len().div_ceil(KV_BLOCK_SIZE);
    let mut kv = model.new_kv(n_blocks, KvType::F32)?;
    let table: Vec<u32> = (0..n_blocks as u32).rev().collect();
    let positions: Vec<u32> = (0..tokens.len() as u32).collect();
    let steps: Vec<std::ops::Range<usize>> = if one_by_one {
        (0..tokens.len()).map(|i| i..i + 1).collect()
    } else {
        std::iter::once(0..tokens.len()).collect()
    };
    let mut out = Vec::with_capacity(tokens.len());
    for s in steps {
        let tables = vec![&table[..]; s.len()];
        let rows: Vec<usize> = (0..s.len()).collect();
        let batch = Batch {
            tokens: &tokens[s.clone()],
            positions: &positions[s.clone()],
            block_tables: &tables,
            logits_rows: &rows,
        };
        let l = model.forward(&mut kv, &batch)?;
        out.extend((0..l.rows).map(|r| l.row(r).to_vec()));
    }
    Ok(out)
}
