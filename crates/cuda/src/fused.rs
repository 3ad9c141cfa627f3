//! The fused operations of the CUDA backend (the `Backend` methods that
//! replace several plain ones): matrix products with the RMSNorm before them
//! and the residual add after (`mv_plain`), the attention input (`mv_qkv`),
//! the SwiGLU block input (`mv_swiglu`), and the greedy argmax. The kernels
//! are in kernels/matvec.cu, kernels/units.cu and kernels/ops.cu.

use std::ops::Range;

use smelt_backend::{AttnGeometry, Backend, KvType, KvWrite, QkvWeights, RopeParams, RopeStyle};
use smelt_tensor::DType;

use crate::backend::{CudaBuf, CudaKv, CudaWeight, MAX_GRID_Y, blocks, row_at};
use crate::launch::Arg;
use crate::meta::Meta;
use crate::queue::MvJob;
use crate::{CudaBackend, weight_code};

/// Warps per block of the fused matrix products (`MV_WARPS` in matvec.cu);
/// each warp takes two output rows (one gate/up pair for `mv_swiglu`).
const MV_WARPS: u32 = 4;

/// Whether the shapes of a Q/K/V step agree: the weights with x, the
/// heads with the cache, RoPE with the head, `q` with its rows, and every
/// position, slot and row range with the cache (the checks the fused and
/// the bulk-row paths share; each adds its own).
#[allow(clippy::too_many_arguments)]
pub(crate) fn qkv_shapes_fit(
    x: &CudaBuf,
    w: &QkvWeights<'_, CudaWeight>,
    geom: &AttnGeometry,
    rope: &RopeParams,
    kv: &CudaKv,
    at: &KvWrite<'_>,
    q: &CudaBuf,
    rows: &Range<usize>,
) -> bool {
    let l = kv.layout;
    let (n, hd, width) = (x.rows, geom.head_dim, l.row_width());
    let n_slots = l.n_blocks * l.block_size;
    [w.q, w.k, w.v].iter().all(|m| m.row_len == x.cols)
        && w.q.n_rows == geom.n_heads * hd
        && w.k.n_rows == width
        && w.v.n_rows == width
        && geom.n_kv_heads == l.n_kv_heads
        && hd == l.head_dim
        && rope.head_dim == hd
        && rope.n_rot <= hd
        && rope.inv_freq.len() == rope.n_rot / 2
        && (q.rows, q.cols) == (n, w.q.n_rows)
        && at.positions.len() == n
        && at.slots.len() == n
        && rows.end <= n
        && at.layer < l.n_layers
        && at.slots.iter().all(|&s| (s as usize) < n_slots)
}

/// Threads per block of `argmax_rows`, values per block (about), and the
/// most blocks one row is split over.
const ARGMAX_THREADS: u32 = 256;
const ARGMAX_PER_BLOCK: usize = 4096;
const ARGMAX_MAX_BLOCKS: usize = 64;
/// Warps that share one item of a fused matrix product (`kw` in matvec.cu):
/// long rows are split over 2 or 4 warps so that a weight with few rows
/// still has warps enough in flight; so are rows of a weight with too few
/// items (`items`) for 8 warps per SM (`sms`), as long as every lane still
/// gets a unit. A function of the weight only (its row length, type and
/// rows), so every launch on a weight splits its rows alike.
fn warps_per_item(n_in: usize, dtype: DType, items: usize, sms: u32) -> u32 {
    // Values each thread takes at a time (units.cu, or dequant8's chunks).
    let unit = match dtype {
        DType::Q4_1 | DType::Q8_0 | DType::Q4K => 32,
        DType::Q6K => 64,
        _ => 8,
    };
    let units = n_in / unit;
    let mut kw = match units {
        u if u >= 256 => 4,
        u if u >= 96 => 2,
        _ => 1,
    };
    while kw < 4 && items * (kw as usize) < 8 * sms as usize && units >= 64 * kw as usize {
        kw *= 2;
    }
    kw
}

/// Most dynamic shared memory a resident-x block may take (its NR = 8 input
/// rows, padded): two such blocks fit an SM's 228 KiB.
const RESIDENT_MAX_SHARED: usize = 112 * 1024;

/// Floats of one staged row of `n_in` values (`STAGE_PAD` / `xoff` in
/// units.cu: 4 floats of padding after every 32).
fn staged_row_floats(n_in: usize) -> usize {
    n_in + 4 * (n_in / 32)
}

/// What a plain product does with its output.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum MvOut {
    /// `out = W · x`.
    Write,
    /// `out += W · x` (the residual add).
    Add,
    /// `out = W · rms_norm(x)` as the model's logits: kept in f32
    /// activations unless q8 is forced.
    Logits,
}

/// Which fused product a launch is for (its kernel sets).
#[derive(Clone, Copy)]
enum MvKind {
    Plain,
    Qkv,
    Swiglu,
}

/// How one fused product is launched: kernel, rows of the batch per block
/// row, threads, blocks for `items` items, dynamic shared memory.
struct MvLaunch<'a> {
    f: &'a cudarc::driver::CudaFunction,
    per: usize,
    /// Warps per item (`kw` of the kernel).
    kw: u32,
    block: u32,
    grid_x: u32,
    shared: u32,
}

impl CudaBackend {
    /// The launch of a product over `items` items (`kw` warps each) of `n`
    /// rows of `n_in` inputs against weights of type `code`: the q8 kernel
    /// when there is one for the type, its staged input fits in shared
    /// memory (judged at 8 rows) and the mode allows it (Auto: when the
    /// weight has items for a full block on every SM; never for the logits
    /// unless forced), else the f32 one.
    /// Every condition depends on the weight alone, never on the batch, so
    /// a weight takes the same path for every batch size (batch invariance).
    /// Several rows of an f32 product take the resident-x kernel (`rows`)
    /// when there is one for the type and its staged rows fit, and one row
    /// the staged-x kernel (`mvs_*`: the logits and products of quantized
    /// weights by default, see `StagedMode`): the same values as the `_8`
    /// and `_1` kernels', so those choices are free.
    #[allow(clippy::too_many_arguments)]
    fn mv_launch(
        &self,
        kind: MvKind,
        logits: bool,
        n: usize,
        n_in: usize,
        code: Option<usize>,
        items: usize,
        kw: u32,
    ) -> MvLaunch<'_> {
        let (q8, f32, rows_k, staged_k) = match kind {
            MvKind::Plain => (
                &self.k.mvq_plain,
                &self.k.mv_plain,
                &self.k.mvr_plain,
                &self.k.mvs_plain,
            ),
            MvKind::Qkv => (
                &self.k.mvq_qkv,
                &self.k.mv_qkv,
                &self.k.mvr_qkv,
                &self.k.mvs_qkv,
            ),
            MvKind::Swiglu => (
                &self.k.mvq_swiglu,
                &self.k.mv_swiglu,
                &self.k.mvr_swiglu,
                &self.k.mvs_swiglu,
            ),
        };
        // Logits keep f32 activations unless q8 is forced (On): int8
        // rounding there moves them directly, enough to flip SmolLM2's near
        // ties.
        let q8 = (!logits || self.q8.mode == crate::Q8Mode::On).then_some(q8);
        let staged = |rows: usize| rows * n_in + rows * (n_in / 32) * 12;
        let q8_kernel = code
            .filter(|_| n_in.is_multiple_of(32))
            .filter(|_| match self.q8.mode {
                crate::Q8Mode::Off => false,
                crate::Q8Mode::On => true,
                crate::Q8Mode::Auto => {
                    // Warps' worth of items for half of every SM's block.
                    items * kw as usize >= (self.q8.sm_count * self.q8.warps / 2) as usize
                }
            })
            .filter(|_| staged(8) <= self.q8.max_shared)
            .and_then(|c| q8?.pick(n, c));
        match q8_kernel {
            Some((f, per)) => {
                // The q8 blocks loop over items; when there are items for
                // every warp of the grid, one warp per item spares the
                // block-wide barrier that joins the warps of an item, so
                // warps run (and fetch) independently of each other.
                let kw = if items >= (self.q8.sm_count * self.q8.warps) as usize {
                    1
                } else {
                    kw.min(self.q8.max_kw)
                };
                MvLaunch {
                    f,
                    per,
                    kw,
                    block: self.q8.warps * 32,
                    grid_x: blocks(items, self.q8.warps / kw)
                        .min(self.q8.sm_count * self.q8.blocks_per_sm),
                    shared: staged(per) as u32,
                }
            }
            None => {
                let (f, per) = f32.pick(n, n_in, code);
                let staged_shared = staged_row_floats(n_in) * 4;
                let one_staged = code
                    .filter(|_| per == 1 && n_in.is_multiple_of(32))
                    .filter(|&c| match self.q8.staged {
                        crate::StagedMode::Off => false,
                        crate::StagedMode::Logits => logits,
                        // (F32 has no staged kernel.)
                        crate::StagedMode::Quantized => logits || !crate::float16_code(c),
                        crate::StagedMode::All => true,
                    })
                    .filter(|_| staged_shared <= self.q8.max_shared)
                    .filter(|_| self.q8.staged_warps.is_multiple_of(kw))
                    .and_then(|c| staged_k.pick(c));
                if let Some(f) = one_staged {
                    self.staged_launches
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let warps = self.q8.staged_warps;
                    return MvLaunch {
                        f,
                        per,
                        kw,
                        block: warps * 32,
                        grid_x: blocks(items, warps / kw)
                            .min(self.q8.sm_count * self.q8.staged_blocks_per_sm),
                        shared: staged_shared as u32,
                    };
                }
                let shared = per * staged_row_floats(n_in) * 4;
                let warps = self.q8.resident_warps;
                let resident = code
                    .filter(|_| per > 1 && self.q8.resident && n_in.is_multiple_of(32))
                    .filter(|_| shared <= RESIDENT_MAX_SHARED.min(self.q8.max_shared))
                    .filter(|_| warps.is_multiple_of(kw))
                    .and_then(|c| rows_k.pick(c));
                if let Some(f) = resident {
                    // A few blocks per SM over all block rows; each loops
                    // over its items.
                    let y = n.div_ceil(per).max(1) as u32;
                    let target = (self.q8.sm_count * self.q8.resident_blocks_per_sm).div_ceil(y);
                    return MvLaunch {
                        f,
                        per,
                        kw,
                        block: warps * 32,
                        grid_x: blocks(items, warps / kw).min(target.max(1)),
                        shared: shared as u32,
                    };
                }
                MvLaunch {
                    f,
                    per,
                    kw,
                    block: MV_WARPS * 32,
                    grid_x: blocks(items, MV_WARPS / kw),
                    shared: 0,
                }
            }
        }
    }

    /// A weight as a `MvJob` writing to `out`, with an optional bias.
    fn mv_job(
        &self,
        what: &str,
        w: &CudaWeight,
        out: u64,
        bias: Option<&CudaWeight>,
    ) -> Option<MvJob> {
        let Some(code) = weight_code(w.dtype) else {
            self.fail(format!("{what}: the GPU cannot read {} weights", w.dtype));
            return None;
        };
        let bias = match bias {
            Some(b) => self.vector_addr(what, b, w.n_rows)?,
            None => 0,
        };
        Some(MvJob {
            w: self.addr(&w.bytes),
            row_bytes: w.row_bytes as u64,
            out,
            bias,
            wtype: code as i32,
            n_rows: w.n_rows as i32,
        })
    }

    /// The grid's y size for `n` batch rows, `per` to a block row.
    fn batch_blocks(&self, what: &str, n: usize, per: usize) -> Option<u32> {
        let y = n.div_ceil(per);
        self.ensure(y <= MAX_GRID_Y, || format!("{what}: {n} rows is too many"))
            .then_some(y as u32)
    }

    /// `out (+)= W · x`, x first RMS-normed with `norm` if given, for the
    /// batch rows `rows` (bulk.rs runs the others on tensor cores).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn mv_plain(
        &self,
        what: &'static str,
        x: &CudaBuf,
        w: &CudaWeight,
        norm: Option<(&CudaWeight, f32)>,
        out: &mut CudaBuf,
        mode: MvOut,
        rows: Range<usize>,
    ) {
        let n = rows.len();
        if !self.ensure(
            x.cols == w.row_len && out.rows == x.rows && rows.end <= x.rows && out.cols == w.n_rows,
            || {
                format!(
                    "{what}: x {}×{}, weight {}×{}, out {}×{}",
                    x.rows, x.cols, w.n_rows, w.row_len, out.rows, out.cols
                )
            },
        ) {
            return;
        }
        let (g, eps) = match norm {
            Some((nw, eps)) => match self.vector_addr(what, nw, x.cols) {
                Some(g) => (g, eps),
                None => return,
            },
            None => (0, 0.0),
        };
        let Some([xa, oa]) = self.addrs([x, out]) else {
            return;
        };
        let (xa, oa) = (row_at(xa, x, rows.start), row_at(oa, out, rows.start));
        let Some(job) = self.mv_job(what, w, oa, None) else {
            return;
        };
        let kw = warps_per_item(x.cols, w.dtype, w.n_rows.div_ceil(2), self.q8.sm_count);
        let l = self.mv_launch(
            MvKind::Plain,
            mode == MvOut::Logits,
            n,
            x.cols,
            Some(job.wtype as usize),
            w.n_rows.div_ceil(2),
            kw,
        );
        let Some(grid_y) = self.batch_blocks(what, n, l.per) else {
            return;
        };
        self.launch_shared(
            what,
            l.f,
            (l.grid_x, grid_y, 1),
            l.block,
            l.shared,
            &[
                Arg::Job(job),
                Arg::U64(xa),
                Arg::I32(x.cols as i32),
                Arg::I32(n as i32),
                Arg::U64(g),
                Arg::F32(eps),
                Arg::I32(i32::from(mode == MvOut::Add)),
                Arg::I32(l.kw as i32),
            ],
        );
    }

    /// `Backend::norm_qkv_rope_store` as one `mv_qkv` launch per run of
    /// Q/K/V items of one weight type (K and V go straight into the cache;
    /// the k, v and h buffers are not used).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn qkv_fused(
        &self,
        x: &CudaBuf,
        w: &QkvWeights<'_, CudaWeight>,
        eps: f32,
        geom: &AttnGeometry,
        rope: &RopeParams,
        kv: &mut CudaKv,
        at: &KvWrite<'_>,
        q: &mut CudaBuf,
        rows: Range<usize>,
    ) {
        const WHAT: &str = "norm_qkv_rope_store";
        let l = kv.layout;
        let hd = geom.head_dim;
        let width = l.row_width();
        let n_slots = l.n_blocks * l.block_size;
        // The kernel rotates pairs within a head.
        let ok = qkv_shapes_fit(x, w, geom, rope, kv, at, q, &rows)
            && hd.is_multiple_of(2)
            && rope.n_rot.is_multiple_of(2);
        if !self.ensure(ok, || {
            format!(
                "{WHAT}: x {}×{}, q {}×{} k {}×{} v {}×{} weights, q out {}×{}, {} heads / {} KV \
                 heads of {hd} (rope {} of {}), cache {} KV heads of {}, layer {} of {}, {} \
                 positions, {} slots",
                x.rows,
                x.cols,
                w.q.n_rows,
                w.q.row_len,
                w.k.n_rows,
                w.k.row_len,
                w.v.n_rows,
                w.v.row_len,
                q.rows,
                q.cols,
                geom.n_heads,
                geom.n_kv_heads,
                rope.n_rot,
                rope.head_dim,
                l.n_kv_heads,
                l.head_dim,
                at.layer,
                l.n_layers,
                at.positions.len(),
                at.slots.len()
            )
        }) {
            return;
        }
        let Some(g) = self.vector_addr(WHAT, w.norm, x.cols) else {
            return;
        };
        let Some([xa, qa]) = self.addrs([x, q]) else {
            return;
        };
        let (xa, qa) = (row_at(xa, x, rows.start), row_at(qa, q, rows.start));
        let (n, r0) = (rows.len(), 4 * rows.start as u64);
        let (Some(jq), Some(jk), Some(jv)) = (
            self.mv_job(WHAT, w.q, qa, w.q_bias),
            self.mv_job(WHAT, w.k, 0, w.k_bias),
            self.mv_job(WHAT, w.v, 0, w.v_bias),
        ) else {
            return;
        };
        let bits: Vec<u32> = rope.inv_freq.iter().map(|f| f.to_bits()).collect();
        let freq = if bits.is_empty() {
            Some(0)
        } else {
            self.freq_meta(&bits)
        };
        let (Some(pos), Some(freq), Some(sl)) = (
            self.meta(Meta::Positions, at.positions),
            freq,
            self.meta(Meta::Slots, at.slots),
        ) else {
            return;
        };
        // Items (RoPE pairs / row pairs) of Q, then K, then V, in runs of
        // one weight type: each run is a launch of that type's kernel (Q4_K_M
        // files store V as Q6_K, so Q+K and V are two launches), a function
        // of the weights alone.
        let (pq, pk) = (w.q.n_rows / 2, width / 2);
        let mut runs: Vec<(usize, usize, i32, DType)> = Vec::with_capacity(3);
        for (lo, hi, t, d) in [
            (0, pq, jq.wtype, w.q.dtype),
            (pq, pq + pk, jk.wtype, w.k.dtype),
            (pq + pk, pq + 2 * pk, jv.wtype, w.v.dtype),
        ] {
            match runs.last_mut() {
                Some(last) if last.2 == t => last.1 = hi,
                _ => runs.push((lo, hi, t, d)),
            }
        }
        for (item0, item1, t, dtype) in runs {
            let lc = self.mv_launch(
                MvKind::Qkv,
                false,
                n,
                x.cols,
                Some(t as usize),
                item1 - item0,
                warps_per_item(x.cols, dtype, item1 - item0, self.q8.sm_count),
            );
            let Some(grid_y) = self.batch_blocks(WHAT, n, lc.per) else {
                return;
            };
            self.launch_shared(
                WHAT,
                lc.f,
                (lc.grid_x, grid_y, 1),
                lc.block,
                lc.shared,
                &[
                    Arg::Job(jq),
                    Arg::Job(jk),
                    Arg::Job(jv),
                    Arg::U64(xa),
                    Arg::I32(x.cols as i32),
                    Arg::I32(n as i32),
                    Arg::U64(g),
                    Arg::F32(eps),
                    Arg::U64(pos + r0),
                    Arg::U64(freq),
                    Arg::I32(hd as i32),
                    Arg::I32(rope.n_rot as i32),
                    Arg::I32(i32::from(rope.style == RopeStyle::Neox)),
                    Arg::U64(self.addr(&kv.k)),
                    Arg::U64(self.addr(&kv.v)),
                    Arg::U64((at.layer * n_slots * width) as u64),
                    Arg::U64(sl + r0),
                    Arg::I32(i32::from(l.dtype == KvType::F16)),
                    Arg::I32(lc.kw as i32),
                    Arg::I32(item0 as i32),
                    Arg::I32(item1 as i32),
                ],
            );
        }
    }

    /// `Backend::norm_gate_up_swiglu` as one `mv_swiglu` launch.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gate_up_swiglu_fused(
        &self,
        x: &CudaBuf,
        norm: &CudaWeight,
        eps: f32,
        w_gate: &CudaWeight,
        w_up: &CudaWeight,
        gate: &mut CudaBuf,
        rows: Range<usize>,
    ) {
        const WHAT: &str = "norm_gate_up_swiglu";
        let n = rows.len();
        if !self.ensure(
            w_gate.row_len == x.cols
                && w_up.row_len == x.cols
                && w_gate.n_rows == w_up.n_rows
                && rows.end <= x.rows
                && (gate.rows, gate.cols) == (x.rows, w_gate.n_rows),
            || {
                format!(
                    "{WHAT}: x {}×{}, gate {}×{}, up {}×{}, out {}×{}",
                    x.rows,
                    x.cols,
                    w_gate.n_rows,
                    w_gate.row_len,
                    w_up.n_rows,
                    w_up.row_len,
                    gate.rows,
                    gate.cols
                )
            },
        ) {
            return;
        }
        let Some(g) = self.vector_addr(WHAT, norm, x.cols) else {
            return;
        };
        let Some([xa, ga]) = self.addrs([x, gate]) else {
            return;
        };
        let (xa, ga) = (row_at(xa, x, rows.start), row_at(ga, gate, rows.start));
        let (Some(jg), Some(ju)) = (
            self.mv_job(WHAT, w_gate, ga, None),
            self.mv_job(WHAT, w_up, 0, None),
        ) else {
            return;
        };
        let kw = warps_per_item(x.cols, w_gate.dtype, w_gate.n_rows, self.q8.sm_count);
        let l = self.mv_launch(
            MvKind::Swiglu,
            false,
            n,
            x.cols,
            (jg.wtype == ju.wtype).then_some(jg.wtype as usize),
            w_gate.n_rows,
            kw,
        );
        let Some(grid_y) = self.batch_blocks(WHAT, n, l.per) else {
            return;
        };
        self.launch_shared(
            WHAT,
            l.f,
            (l.grid_x, grid_y, 1),
            l.block,
            l.shared,
            &[
                Arg::Job(jg),
                Arg::Job(ju),
                Arg::U64(xa),
                Arg::I32(x.cols as i32),
                Arg::I32(n as i32),
                Arg::U64(g),
                Arg::F32(eps),
                Arg::I32(l.kw as i32),
            ],
        );
    }

    /// `Backend::argmax_rows`: one launch, then only the indices are copied.
    pub(crate) fn argmax_on_device(&self, x: &CudaBuf) -> Vec<u32> {
        let mut ids = vec![0u32; x.rows];
        self.argmax_launch(x, |scratch, rows| {
            if let Err(e) = self.queue.waiting(|| {
                self.queue
                    .stream
                    .memcpy_dtoh(&scratch.slice(..rows), &mut ids)
            }) {
                self.fail(format!("argmax_rows: {e}"));
            }
        });
        ids
    }

    /// Launches the argmax of each row of `x` into the first `x.rows`
    /// values of the argmax scratch, sends the queued launches, and calls
    /// `then` with the scratch (nothing on an error, which is kept).
    pub(crate) fn argmax_launch(
        &self,
        x: &CudaBuf,
        then: impl FnOnce(&cudarc::driver::CudaSlice<u32>, usize),
    ) {
        let Some(xa) = self.buf_addr(x) else {
            return;
        };
        let (rows, cols) = (x.rows, x.cols);
        if !self.ensure(rows <= MAX_GRID_Y, || {
            format!("argmax_rows: {rows} rows is too many")
        }) {
            return;
        }
        // Blocks per row: about ARGMAX_PER_BLOCK values each.
        let nb = cols.div_ceil(ARGMAX_PER_BLOCK).clamp(1, ARGMAX_MAX_BLOCKS);
        let chunk = cols.div_ceil(nb);
        let mut guard = self
            .argmax_scratch
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(|(_, r, b)| *r < rows || *b < nb) {
            // The old scratch may be used by recorded launches.
            self.queue.flush();
            let (r, b) = (rows.next_power_of_two(), ARGMAX_MAX_BLOCKS);
            match self.queue.stream.alloc_zeros::<u32>(r * (2 + 2 * b)) {
                Ok(s) => *guard = Some((s, r, b)),
                Err(e) => {
                    self.fail(format!("argmax_rows: cannot allocate scratch: {e}"));
                    return;
                }
            }
        }
        let Some((scratch, r, b)) = guard.as_ref() else {
            return;
        };
        // Layout: indices [r], counters [r], partial indices [r × b],
        // partial values [r × b] (f32 bits).
        let base = self.addr(scratch);
        let (out, counters) = (base, base + 4 * *r as u64);
        let part_i = counters + 4 * *r as u64;
        let part_v = part_i + 4 * (*r * *b) as u64;
        self.launch(
            "argmax_rows",
            &self.k.argmax_rows,
            (nb as u32, rows as u32, 1),
            ARGMAX_THREADS,
            &[
                Arg::U64(xa),
                Arg::I32(cols as i32),
                Arg::I32(chunk as i32),
                Arg::U64(out),
                Arg::U64(counters),
                Arg::U64(part_i),
                Arg::U64(part_v),
            ],
        );
        self.queue.flush();
        then(scratch, rows);
    }

    /// `Backend::top_k_rows`: one block per row selects the row's `k`
    /// largest (`top_k_rows` in ops.cu), then `k` (index, value) pairs a
    /// row are copied back. Beyond 256 a row is copied whole and selected
    /// on the host.
    pub(crate) fn top_k_on_device(&self, x: &CudaBuf, k: usize) -> Vec<Vec<(u32, f32)>> {
        const TOP_K_MAX: usize = 256;
        let (rows, cols) = (x.rows, x.cols);
        let k = k.min(cols);
        if k == 0 || k > TOP_K_MAX || rows > MAX_GRID_Y {
            let host = self.download(x);
            return (0..host.rows)
                .map(|r| smelt_backend::top_k_sorted(host.row(r), k))
                .collect();
        }
        let Some(xa) = self.buf_addr(x) else {
            return vec![Vec::new(); rows];
        };
        let need = rows * k * 2;
        let mut guard = self.top_k_scratch.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(|(_, len)| *len < need) {
            // The old scratch may be used by recorded launches.
            self.queue.flush();
            let len = need.next_power_of_two();
            match self.queue.stream.alloc_zeros::<u32>(len) {
                Ok(s) => *guard = Some((s, len)),
                Err(e) => {
                    self.fail(format!("top_k_rows: cannot allocate scratch: {e}"));
                    return vec![Vec::new(); rows];
                }
            }
        }
        let Some((scratch, _)) = guard.as_ref() else {
            return vec![Vec::new(); rows];
        };
        self.launch(
            "top_k_rows",
            &self.k.top_k_rows,
            (rows as u32, 1, 1),
            1024,
            &[
                Arg::U64(xa),
                Arg::I32(cols as i32),
                Arg::I32(k as i32),
                Arg::U64(self.addr(scratch)),
            ],
        );
        self.queue.flush();
        let mut raw = vec![0u32; need];
        if let Err(e) = self.queue.waiting(|| {
            self.queue
                .stream
                .memcpy_dtoh(&scratch.slice(..need), &mut raw)
        }) {
            self.fail(format!("top_k_rows: {e}"));
            return vec![Vec::new(); rows];
        }
        raw.chunks_exact(2 * k)
            .map(|row| {
                row.chunks_exact(2)
                    .map(|p| (p[0], f32::from_bits(p[1])))
                    .collect()
            })
            .collect()
    }
}
