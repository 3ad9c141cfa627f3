//! RoPE for the CPU backend: the reference's rotation ([`smelt_backend::rope_row`]),
//! value for value, with the cosines and sines of a step's positions
//! computed once and kept for the step's other layers (every layer of a
//! model usually shares one set of frequencies, and a step one set of
//! positions): the f64 `cos`/`sin` pairs cost more than the rotation itself.

use smelt_backend::RopeParams;

use crate::{CpuBackend, DisjointOut};

/// Tables kept (models alternating a few RoPE bases still hit).
const ENTRIES: usize = 4;

/// One table: `(cos, sin)` of every pair at every position of a step.
struct Entry {
    positions: Vec<u32>,
    /// The bits of the inverse frequencies the table was made with.
    inv_freq: Vec<u32>,
    /// `positions.len() × pairs`.
    table: Vec<(f32, f32)>,
}

/// The last few tables.
#[derive(Default)]
pub(crate) struct TableCache {
    entries: Vec<Entry>,
    /// The entry replaced next once all are in use.
    next: usize,
}

impl TableCache {
    /// `(cos, sin)` of pair `i` at `positions[r]` at index `r * pairs + i`
    /// (`pairs = params.n_rot / 2`), exactly [`RopeParams::cos_sin`]'s values.
    ///
    /// # Panics
    /// If `params` holds fewer than `n_rot / 2` inverse frequencies (as
    /// [`smelt_backend::rope_row`] does).
    pub(crate) fn table(
        &mut self,
        be: &CpuBackend,
        positions: &[u32],
        params: &RopeParams,
    ) -> &[(f32, f32)] {
        let pairs = params.n_rot / 2;
        let freq = &params.inv_freq[..pairs];
        let hit = self.entries.iter().position(|e| {
            e.positions == positions
                && e.inv_freq.len() == pairs
                && e.inv_freq.iter().zip(freq).all(|(a, b)| *a == b.to_bits())
        });
        if let Some(i) = hit {
            return &self.entries[i].table;
        }
        let mut table = vec![(0.0f32, 0.0f32); positions.len() * pairs];
        let dst = DisjointOut::new(&mut table);
        be.par_ranges(positions.len(), 32 * pairs, &|rows| {
            // SAFETY: this part's rows of the table belong to it alone.
            let mine = unsafe { dst.slice(rows.start * pairs, rows.len() * pairs) };
            for (out, &pos) in mine.chunks_exact_mut(pairs).zip(&positions[rows]) {
                for (i, t) in out.iter_mut().enumerate() {
                    *t = params.cos_sin(pos, i);
                }
            }
        });
        let entry = Entry {
            positions: positions.to_vec(),
            inv_freq: freq.iter().map(|f| f.to_bits()).collect(),
            table,
        };
        let i = if self.entries.len() < ENTRIES {
            self.entries.push(entry);
            self.entries.len() - 1
        } else {
            let i = self.next;
            self.entries[i] = entry;
            self.next = (i + 1) % ENTRIES;
            i
        };
        &self.entries[i].table
    }
}

/// [`smelt_backend::rope_row`] with the row's `(cos, sin)` pairs given
/// (`table[i]` for pair `i`): the same operations in the same order.
pub(crate) fn rotate_row(row: &mut [f32], n_heads: usize, table: &[(f32, f32)], p: &RopeParams) {
    for h in 0..n_heads {
        let head = &mut row[h * p.head_dim..(h + 1) * p.head_dim];
        for (i, &(cos, sin)) in table.iter().enumerate() {
            let (a, b) = p.pair(i);
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos - x1 * sin;
            head[b] = x0 * sin + x1 * cos;
        }
    }
}

#[cfg(test)]
mod tests {
    use smelt_backend::{RopeStyle, rope_row};

    use super::*;

    /// The cached tables and the rotation give the reference's values bit
    /// for bit, on one thread or two, for any batch, repeated or not.
    #[test]
    fn rope_matches_the_reference_bit_for_bit() {
        use smelt_backend::{Backend, HostBuf};
        for threads in [1, 2] {
            let be = CpuBackend::with_threads(threads).expect("backend");
            for style in [RopeStyle::Interleaved, RopeStyle::Neox] {
                for (head_dim, n_rot, n_heads) in [(64, 64, 9), (10, 6, 3), (128, 128, 2)] {
                    let params = RopeParams::new(style, head_dim, n_rot, 10_000.0, 1.0, None);
                    let cols = n_heads * head_dim + 3;
                    for n in [1usize, 2, 5, 33] {
                        let positions: Vec<u32> = (0..n as u32).map(|i| i * 37 % 1000).collect();
                        let data: Vec<f32> = (0..n * cols)
                            .map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0)
                            .collect();
                        let mut want = data.clone();
                        for (row, &pos) in want.chunks_exact_mut(cols).zip(&positions) {
                            rope_row(row, n_heads, pos, &params);
                        }
                        // Twice: a miss, then a hit of the cache.
                        for _ in 0..2 {
                            let mut x = HostBuf {
                                data: data.clone(),
                                rows: n,
                                cols,
                            };
                            be.rope(&mut x, n_heads, &positions, &params);
                            let same = x
                                .data
                                .iter()
                                .zip(&want)
                                .all(|(a, b)| a.to_bits() == b.to_bits());
                            assert!(
                                same,
                                "{style:?} d{head_dim} rot{n_rot} n{n} threads {threads}"
                            );
                        }
                    }
                }
            }
        }
    }
}
