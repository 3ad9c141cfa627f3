//! `Backend::attention` on the GPU: checks, the block tables of the rows
//! flattened into one device array (rows of one sequence share a copy), and
//! the launches of the split-key kernel and its merge (kernels/attention.cu).

use smelt_backend::{AttnGeometry, AttnRow, KvType};

use crate::CudaBackend;
use crate::backend::{CudaBuf, CudaKv, MAX_GRID_Y};
use crate::launch::Arg;
use crate::meta::Meta;

/// Keys per attention block (`ATT_SPAN` in attention.cu).
const ATT_SPAN: usize = 1024;
/// Bulk rows per attention tile (`AT_ROWS` in attention_tile.cu).
const TILE_ROWS: usize = 64;
/// Threads per attention block (`ATT_THREADS` in attention.cu: 256, or the
/// `SMELT_ATT_THREADS` tuning define, which the kernel checks).
fn att_threads() -> u32 {
    static THREADS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        crate::compile::define("SMELT_ATT_THREADS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(256)
    })
}

/// Whether bulk rows may take the attention tiles (`SMELT_CUDA_ATT_TILE=0`:
/// never, for measuring against the one-row kernel).
fn tiles_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SMELT_CUDA_ATT_TILE").map_or(true, |v| v != "0"))
}

impl CudaBackend {
    pub(crate) fn attention_on_device(
        &self,
        q: &CudaBuf,
        kv: &CudaKv,
        layer: usize,
        rows: &[AttnRow<'_>],
        geom: &AttnGeometry,
        out: &mut CudaBuf,
    ) {
        let l = kv.layout;
        let n_slots = l.n_blocks * l.block_size;
        let q_width = geom.n_heads * geom.head_dim;
        if !self.ensure(geom.window != Some(0), || {
            "attention: a sliding window of 0 keys".to_string()
        }) {
            return;
        }
        let ok = layer < l.n_layers
            && rows.len() == q.rows
            && (out.rows, out.cols) == (q.rows, q.cols)
            && q_width <= q.cols
            && geom.n_kv_heads > 0
            && geom.n_heads.is_multiple_of(geom.n_kv_heads)
            && geom.n_kv_heads == l.n_kv_heads
            && geom.head_dim == l.head_dim
            && geom.head_dim <= 256
            && geom.head_dim.is_multiple_of(8)
            && rows.len() <= MAX_GRID_Y;
        if !self.ensure(ok, || {
            format!(
                "attention: layer {layer}, q {}×{}, out {}×{}, {} rows, {} heads / {} KV heads of {} (cache: {} KV heads of {})",
                q.rows,
                q.cols,
                out.rows,
                out.cols,
                rows.len(),
                geom.n_heads,
                geom.n_kv_heads,
                geom.head_dim,
                l.n_kv_heads,
                l.head_dim
            )
        }) {
            return;
        }
        // Block tables, flattened; rows of one sequence share one copy.
        let mut positions = Vec::with_capacity(rows.len());
        let mut starts = Vec::with_capacity(rows.len());
        let mut tables: Vec<u32> = Vec::new();
        let mut last: Option<(*const u32, usize, u32)> = None;
        for row in rows {
            let blocks_needed = row.pos as usize / l.block_size + 1;
            if row.block_table.len() < blocks_needed
                || row.block_table[..blocks_needed]
                    .iter()
                    .any(|&b| b as usize >= l.n_blocks)
            {
                self.fail(format!(
                    "attention: position {} needs {blocks_needed} blocks of a pool of {}, the table has {:?}",
                    row.pos,
                    l.n_blocks,
                    row.block_table
                ));
                return;
            }
            let key = (row.block_table.as_ptr(), row.block_table.len());
            let start = match last {
                Some((p, n, s)) if (p, n) == key => s,
                _ => {
                    let s = tables.len() as u32;
                    tables.extend_from_slice(row.block_table);
                    last = Some((key.0, key.1, s));
                    s
                }
            };
            positions.push(row.pos);
            starts.push(start);
        }
        let Some([qa, oa]) = self.addrs([q, out]) else {
            return;
        };
        let (Some(pos), Some(st), Some(tb)) = (
            self.meta(Meta::AttnPositions, &positions),
            self.meta(Meta::AttnStarts, &starts),
            self.meta(Meta::AttnTables, &tables),
        ) else {
            return;
        };
        let f = match l.dtype {
            KvType::F16 => &self.k.attention_f16,
            KvType::F32 => &self.k.attention_f32,
        };
        let width = l.row_width();
        // Bulk rows (no logits wanted) take the tensor-core tiles where the
        // cache and head size allow: a property of the model and the row,
        // never of the batch.
        let tile_kernel = match (l.dtype, geom.head_dim) {
            (KvType::F16, 64) => Some(&self.k.attention_tile[0]),
            (KvType::F16, 128) => Some(&self.k.attention_tile[1]),
            _ => None,
        }
        .filter(|_| tiles_on() && self.has_bulk_rows(rows.len()));
        // The step's runs only when it has bulk rows; a decode step (every
        // row wants logits) allocates nothing here.
        let runs = match tile_kernel {
            Some(_) => self.row_runs(rows.len()),
            None => Vec::new(),
        };
        if let Some(tk) = tile_kernel {
            // Tiles of up to TILE_ROWS consecutive bulk rows of one sequence
            // (rows of one sequence share their table copy).
            let mut tiles: Vec<u32> = Vec::new();
            for run in runs.iter().filter(|r| r.bulk) {
                let mut r = run.rows.start;
                while r < run.rows.end {
                    let mut e = r + 1;
                    while e < run.rows.end && e - r < TILE_ROWS && starts[e] == starts[r] {
                        e += 1;
                    }
                    tiles.extend([r as u32, (e - r) as u32]);
                    r = e;
                }
            }
            if !tiles.is_empty() {
                let Some(ta) = self.meta(Meta::AttnTiles, &tiles) else {
                    return;
                };
                let shared = 4 * TILE_ROWS * (geom.head_dim + 8) * 2;
                self.launch_shared(
                    "attention (bulk rows)",
                    tk,
                    (geom.n_heads as u32, (tiles.len() / 2) as u32, 1),
                    128,
                    shared as u32,
                    &[
                        Arg::U64(qa),
                        Arg::I32(q.cols as i32),
                        Arg::U64(self.addr(&kv.k)),
                        Arg::U64(self.addr(&kv.v)),
                        Arg::U64((layer * n_slots * width) as u64),
                        Arg::I32(width as i32),
                        Arg::U64(pos),
                        Arg::U64(st),
                        Arg::U64(tb),
                        Arg::I32(l.block_size as i32),
                        Arg::I32(geom.n_heads as i32),
                        Arg::I32(geom.n_kv_heads as i32),
                        Arg::F32(geom.scale),
                        Arg::I32(geom.window.map_or(0, |w| w.min(i32::MAX as u32) as i32)),
                        Arg::U64(oa),
                        Arg::I32(out.cols as i32),
                        Arg::U64(ta),
                    ],
                );
            }
        }
        // The rows left for the one-row kernel: the runs of logits rows, or
        // every row when no tile was used.
        let whole = std::iter::once(0..rows.len()).filter(|_| tile_kernel.is_none());
        let mut rest = runs
            .iter()
            .filter(|r| !r.bulk)
            .map(|r| r.rows.clone())
            .chain(whole)
            .peekable();
        if rest.peek().is_none() {
            return;
        }
        // Keys are split in spans of ATT_SPAN; rows with several write
        // partial results to scratch for attention_merge.
        let max_spans = positions
            .iter()
            .map(|&p| (p as usize + 1).div_ceil(ATT_SPAN))
            .max()
            .unwrap_or(1);
        let scratch = if max_spans > 1 {
            let need = rows.len() * geom.n_heads * max_spans * (geom.head_dim + 2);
            // attention writes every value attention_merge reads.
            let Some(a) = self.scratch("attention", &self.attn_scratch, need) else {
                return;
            };
            a
        } else {
            0
        };
        // Each run of the other rows: its rows' arrays from its first row.
        for run in rest {
            let r0 = run.start as u64;
            let (qr, orow) = (qa + 4 * r0 * q.cols as u64, oa + 4 * r0 * out.cols as u64);
            let (pr, sr) = (pos + 4 * r0, st + 4 * r0);
            let n = run.len() as u32;
            self.launch(
                "attention",
                f,
                (geom.n_heads as u32, n, max_spans as u32),
                att_threads(),
                &[
                    Arg::U64(qr),
                    Arg::I32(q.cols as i32),
                    Arg::U64(self.addr(&kv.k)),
                    Arg::U64(self.addr(&kv.v)),
                    Arg::U64((layer * n_slots * width) as u64),
                    Arg::I32(width as i32),
                    Arg::U64(pr),
                    Arg::U64(sr),
                    Arg::U64(tb),
                    Arg::I32(l.block_size as i32),
                    Arg::I32(geom.n_heads as i32),
                    Arg::I32(geom.n_kv_heads as i32),
                    Arg::I32(geom.head_dim as i32),
                    Arg::F32(geom.scale),
                    Arg::I32(geom.window.map_or(0, |w| w.min(i32::MAX as u32) as i32)),
                    Arg::U64(orow),
                    Arg::I32(out.cols as i32),
                    Arg::U64(scratch),
                    Arg::I32(max_spans as i32),
                ],
            );
            if max_spans > 1 {
                self.launch(
                    "attention_merge",
                    &self.k.attention_merge,
                    (geom.n_heads as u32, n, 1),
                    128,
                    &[
                        Arg::U64(pr),
                        Arg::I32(geom.n_heads as i32),
                        Arg::I32(geom.head_dim as i32),
                        Arg::U64(scratch),
                        Arg::I32(max_spans as i32),
                        Arg::U64(orow),
                        Arg::I32(out.cols as i32),
                    ],
                );
            }
        }
    }
}
