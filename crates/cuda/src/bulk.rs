//! Bulk rows on tensor cores.
//!
//! A step's rows are of two kinds: rows whose logits the step wants (each
//! decode row, each prompt's last token) and bulk rows (every other prompt
//! token, whose logits no one reads). The model names the first kind at the
//! start of a step (`Backend::begin_step`); every matrix product of the step
//! then splits its rows into contiguous runs: runs of logits rows go to the
//! matrix-vector kernels exactly as before (fused.rs, row offsets into the
//! same buffers), runs of bulk rows to the tensor-core GEMM (kernels/gemm.cu)
//! with the unfused ops around it (RMSNorm, RoPE, K/V store, SwiGLU from
//! ops.cu). Which path a row takes depends only on the row's request (is it
//! the last prompt token or a generated one), and each path computes a row
//! the same way whatever the other rows are, so batch invariance holds: a
//! request's logits are the same alone or among others, and a cached prompt
//! block (engine: only blocks before the last prompt token are published)
//! holds the same K/V whoever computed it.
//!
//! The final norm and output projection (the logits) always take the
//! matrix-vector path. `SMELT_CUDA_BULK=0` (or [`CudaBackend::set_bulk`])
//! sends every row to the matrix-vector kernels.

use std::cell::Cell;
use std::ops::Range;
use std::sync::Mutex;

use cudarc::driver::CudaSlice;

use smelt_backend::{AttnGeometry, KvType, KvWrite, QkvWeights, RopeParams, RopeStyle};

use crate::backend::{CudaBuf, CudaKv, CudaWeight, MAX_GRID_Y, blocks, row_at};
use crate::launch::{Arg, BLOCK};
use crate::meta::Meta;
use crate::{CudaBackend, weight_code};

/// Output tile of the GEMM kernels (`GB_M` and `BN` in gemm.cu) and their
/// threads. The narrow tiles are for products whose wide tiles would leave
/// SMs idle; the tile changes only which block computes an output, not how
/// (the same k tiles in the same order), so the choice may follow the
/// batch without breaking batch invariance.
const GEMM_M: u32 = 64;
const GEMM_N: [u32; 2] = [128, 64];
const GEMM_THREADS: u32 = 256;
/// Values of one k tile (`GB_K` in gemm.cu).
const GEMM_K: usize = 32;
/// Most floats of k-tile sums a split product may keep (256 MiB).
const GEMM_SCRATCH_MAX: usize = 1 << 26;

/// The bulk rows' state: the current step, scratch buffers, settings.
pub(crate) struct BulkState {
    /// Which rows of the current step want logits (`Backend::begin_step`).
    step_rows: Mutex<Option<StepRows>>,
    /// The k tiles' sums of products split over k.
    gemm_scratch: Mutex<Option<CudaSlice<f32>>>,
    /// The input of a code product split into bf16 hi and lo and the sums
    /// of its 16-value groups (`bulk_split_x`), in u32 words.
    split_scratch: Mutex<Option<CudaSlice<u32>>>,
    /// The input of int8 products quantized (`bulk_quant_x`), in u32 words.
    pub(crate) quant_scratch: Mutex<Option<CudaSlice<u32>>>,
    /// Blocks per SM a bulk product is split over k to reach when its output
    /// tiles are fewer (`SMELT_CUDA_KSPLIT`, default 2; 0: never split).
    /// Only speed depends on it: a split product gives the same bits.
    ksplit_per_sm: u32,
    /// Which weights take gemm_codes.cu's product (`SMELT_CUDA_GEMM_CODES`).
    codes: CodesMode,
    /// Which weights take gemm_q8.cu's product (`SMELT_CUDA_GEMM_Q8`).
    pub(crate) q8: crate::bulk_q8::GemmQ8Mode,
}

/// Which bulk products take the code kernels (gemm_codes.cu).
#[derive(Clone, Copy, PartialEq, Eq)]
enum CodesMode {
    /// gemm.cu's product for every type (`SMELT_CUDA_GEMM_CODES=0`).
    Off,
    /// Q4_K weights only: the type it was measured faster on (H100, 8B
    /// shape: 624 against 723 µs a gate/up product; Q4_1, Q6_K slower).
    Auto,
    /// Every type that has one (`SMELT_CUDA_GEMM_CODES=1`).
    All,
}

impl BulkState {
    pub(crate) fn from_env() -> Self {
        BulkState {
            step_rows: Mutex::new(None),
            gemm_scratch: Mutex::new(None),
            split_scratch: Mutex::new(None),
            quant_scratch: Mutex::new(None),
            ksplit_per_sm: std::env::var("SMELT_CUDA_KSPLIT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2),
            codes: match std::env::var("SMELT_CUDA_GEMM_CODES").as_deref() {
                Ok("0") => CodesMode::Off,
                Ok("1") => CodesMode::All,
                _ => CodesMode::Auto,
            },
            q8: crate::bulk_q8::GemmQ8Mode::from_env(),
        }
    }
}

/// The input rows of bulk products (their device address) and the forms
/// products derive from them: split into bf16 hi / lo for the code products
/// (the bf16 products read the hi words),
/// quantized to int8 for the int8 products. The first product that needs a
/// form makes it; the other products of the same input (Q/K/V, gate/up)
/// read it.
pub(crate) struct GemmInput {
    pub addr: u64,
    pub split: Cell<Option<[u64; 3]>>,
    pub quantized: Cell<Option<[u64; 3]>>,
}

impl GemmInput {
    pub fn new(addr: u64) -> Self {
        GemmInput {
            addr,
            split: Cell::new(None),
            quantized: Cell::new(None),
        }
    }
}

/// A form of a bulk product's input and how it is made: three parts at
/// word offsets `parts` of `words` u32 words of `scratch`, written by
/// `kernel` with `threads` threads, remembered in `cache`.
pub(crate) struct InputForm<'a> {
    pub cache: &'a Cell<Option<[u64; 3]>>,
    pub scratch: &'a Mutex<Option<CudaSlice<u32>>>,
    pub parts: [usize; 3],
    pub words: usize,
    pub kernel: &'a cudarc::driver::CudaFunction,
    pub threads: usize,
}

/// Which rows of the current step want logits.
pub(crate) struct StepRows {
    n_rows: usize,
    wants_logits: Vec<bool>,
}

/// A contiguous run of a step's rows and the path it takes.
pub(crate) struct RowRun {
    pub rows: Range<usize>,
    /// Tensor cores (bulk rows) or the matrix-vector kernels.
    pub bulk: bool,
}

/// Splits `0..n` into runs of equal `bulk(r)`.
fn runs_of(n: usize, bulk: impl Fn(usize) -> bool) -> Vec<RowRun> {
    let mut runs: Vec<RowRun> = Vec::new();
    for r in 0..n {
        let b = bulk(r);
        match runs.last_mut() {
            Some(run) if run.bulk == b => run.rows.end = r + 1,
            _ => runs.push(RowRun {
                rows: r..r + 1,
                bulk: b,
            }),
        }
    }
    runs
}

impl CudaBackend {
    /// `Backend::begin_step`: remembers which of the step's `n_rows` rows
    /// want logits (indices past `n_rows` are ignored; the model checks them).
    pub(crate) fn set_step_rows(&self, logits_rows: &[usize], n_rows: usize) {
        let mut wants_logits = vec![false; n_rows];
        for &r in logits_rows {
            if let Some(w) = wants_logits.get_mut(r) {
                *w = true;
            }
        }
        *self
            .bulk_state
            .step_rows
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(StepRows {
            n_rows,
            wants_logits,
        });
    }

    /// Ends the step: every row takes the matrix-vector path until the next
    /// `begin_step`.
    pub(crate) fn clear_step_rows(&self) {
        *self
            .bulk_state
            .step_rows
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The runs of an operation over a buffer of `n` rows: bulk runs only
    /// inside a step of `n` rows with bulk rows on; otherwise one
    /// matrix-vector run of every row (decode steps, buffers of other
    /// shapes, operations outside a step).
    pub(crate) fn row_runs(&self, n: usize) -> Vec<RowRun> {
        let all = || {
            vec![RowRun {
                rows: 0..n,
                bulk: false,
            }]
        };
        if !self.has_bulk_rows(n) {
            return all();
        }
        let step = self
            .bulk_state
            .step_rows
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match step.as_ref() {
            Some(s) if s.n_rows == n => runs_of(n, |r| !s.wants_logits[r]),
            _ => all(),
        }
    }

    /// Whether the current step has bulk rows (bulk on, some rows want no
    /// logits), whatever the buffer.
    pub(crate) fn step_has_bulk_rows(&self) -> bool {
        self.bulk_rows_where(|_| true)
    }

    /// Whether an operation over `n` rows has bulk rows: bulk on, inside a
    /// step of `n` rows, some of which want no logits.
    pub(crate) fn has_bulk_rows(&self, n: usize) -> bool {
        self.bulk_rows_where(|s| s.n_rows == n)
    }

    /// Bulk on, and the current step is one `which` accepts with rows that
    /// want no logits.
    fn bulk_rows_where(&self, which: impl Fn(&StepRows) -> bool) -> bool {
        self.bulk
            && self
                .bulk_state
                .step_rows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(|s| which(s) && s.wants_logits.iter().any(|w| !w))
    }

    /// Launches the GEMM: `out[m] (+)= W · x[m] (+ bias)` for `m` rows of
    /// `k` inputs at `x`, outputs at `oa` with rows `ldo` apart.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        what: &'static str,
        w: &CudaWeight,
        x: &GemmInput,
        oa: u64,
        ldo: usize,
        bias: u64,
        m: usize,
        add: bool,
    ) {
        let Some(code) = weight_code(w.dtype) else {
            self.fail(format!("{what}: the GPU cannot read {} weights", w.dtype));
            return;
        };
        let grid_x = blocks(m, GEMM_M);
        let wide = grid_x * blocks(w.n_rows, GEMM_N[0]) >= self.sm_count();
        let tile = usize::from(!wide);
        let grid_y = blocks(w.n_rows, GEMM_N[tile]);
        if !self.ensure(grid_y as usize <= MAX_GRID_Y, || {
            format!("{what}: {} weight rows is too many", w.n_rows)
        }) {
            return;
        }
        // Weights the int8 product is for (bulk_q8.rs) take it; the
        // choice depends on the weight alone (batch invariance).
        let q8 = self.gemm_q8_for(w, code, tile);
        let k_tile = q8.as_ref().map_or(GEMM_K, |q| q.k_tile);
        // Few output tiles (a short prompt): split the k tiles over blocks
        // along z, each tile's sum kept, then added in k order by
        // gemm_sum_tiles — the same adds in the same order as one block
        // makes (gemm.cu), so a row's bits do not depend on the split. Only
        // for one block row (m <= 64): the kept sums grow with m, and for
        // longer prompts their traffic cost more than the split gained (H200:
        // 1B pp512 -5 %; pp16 2.2x, pp64 1.3x faster; docs/CUDA.md).
        let n_tiles = w.row_len.div_ceil(k_tile);
        let out_blocks = (grid_x * grid_y) as usize;
        let target = (self.sm_count() * self.bulk_state.ksplit_per_sm) as usize;
        let scratch_len = n_tiles * m * w.n_rows;
        let splits = if grid_x == 1
            && out_blocks * 2 <= target
            && n_tiles >= 4
            && scratch_len <= GEMM_SCRATCH_MAX
        {
            target.div_ceil(out_blocks).min(n_tiles / 2)
        } else {
            1
        };
        let kt_per = n_tiles.div_ceil(splits);
        let grid_z = n_tiles.div_ceil(kt_per) as u32;
        let tiles = if grid_z > 1 {
            // The split GEMM writes every tile sum gemm_sum_tiles reads.
            let Some(a) = self.scratch(what, &self.bulk_state.gemm_scratch, scratch_len) else {
                return;
            };
            a
        } else {
            0
        };
        // Weights with exact codes (every quantized type, BF16) take the
        // code product on the input split once (gemm_codes.cu).
        // The choice depends on the weight alone (batch invariance).
        let codes_wanted = match self.bulk_state.codes {
            CodesMode::Off => false,
            CodesMode::Auto => w.dtype == smelt_tensor::DType::Q4K,
            CodesMode::All => true,
        };
        let codes = self.k.gemm_codes[code]
            .as_ref()
            .filter(|_| codes_wanted && w.row_len.is_multiple_of(GEMM_K));
        let mut args = vec![Arg::U64(self.addr(&w.bytes)), Arg::U64(w.row_bytes as u64)];
        let mut shared = 0;
        let f = match (q8, codes) {
            (Some(q), _) => {
                let parts = if q.bf16_x {
                    self.split_input(what, x, m, w.row_len)
                } else {
                    self.quant_input(what, x, m, w.row_len)
                };
                let Some(parts) = parts else {
                    return;
                };
                args.push(Arg::U64(w.bytes.len() as u64));
                args.extend(parts.map(Arg::U64));
                shared = q.shared;
                q.f
            }
            (None, Some(fs)) => {
                let Some(parts) = self.split_input(what, x, m, w.row_len) else {
                    return;
                };
                args.extend(parts.map(Arg::U64));
                &fs[tile]
            }
            (None, None) => {
                args.push(Arg::U64(x.addr));
                &self.k.gemm[code][tile]
            }
        };
        args.extend([
            Arg::U64(oa),
            Arg::U64(bias),
            Arg::I32(m as i32),
            Arg::I32(w.n_rows as i32),
            Arg::I32(w.row_len as i32),
            Arg::I32(ldo as i32),
            Arg::I32(i32::from(add)),
            Arg::I32(kt_per as i32),
            Arg::U64(tiles),
        ]);
        self.launch_shared(
            what,
            f,
            (grid_x, grid_y, grid_z),
            GEMM_THREADS,
            shared,
            &args,
        );
        if tiles != 0 {
            self.launch(
                what,
                &self.k.gemm_sum_tiles,
                (blocks(m * w.n_rows, BLOCK), 1, 1),
                BLOCK,
                &[
                    Arg::U64(tiles),
                    Arg::I32(n_tiles as i32),
                    Arg::I32(m as i32),
                    Arg::I32(w.n_rows as i32),
                    Arg::U64(oa),
                    Arg::I32(ldo as i32),
                    Arg::U64(bias),
                    Arg::I32(i32::from(add)),
                ],
            );
        }
    }

    /// Splits `m` rows of `k` inputs at `x` (`k` a multiple of 32) for the
    /// code product (and the bf16 one, which reads the hi words), unless an
    /// earlier product of the same input did: the addresses of the bf16 hi
    /// words, the lo words and the f32 sums of each 16 values
    /// (`bulk_split_x`, one thread per 8 values).
    fn split_input(
        &self,
        what: &'static str,
        x: &GemmInput,
        m: usize,
        k: usize,
    ) -> Option<[u64; 3]> {
        let half = m * k / 2;
        let form = InputForm {
            cache: &x.split,
            scratch: &self.bulk_state.split_scratch,
            parts: [0, half, 2 * half],
            words: 2 * half + m * k / 16,
            kernel: &self.k.bulk_split_x,
            threads: m * k / 8,
        };
        self.input_form(what, x.addr, m, k, form)
    }

    /// The form `form` of the input at `x_addr` (`m` rows of `k`): made by
    /// its kernel (arguments x, m, k and the three parts' addresses) unless
    /// an earlier product of the same input made it.
    pub(crate) fn input_form(
        &self,
        what: &'static str,
        x_addr: u64,
        m: usize,
        k: usize,
        form: InputForm<'_>,
    ) -> Option<[u64; 3]> {
        if let Some(parts) = form.cache.get() {
            return Some(parts);
        }
        // The kernel writes every word the products read.
        let base = self.scratch(what, form.scratch, form.words)?;
        let parts = form.parts.map(|words| base + 4 * words as u64);
        self.launch(
            what,
            form.kernel,
            (blocks(form.threads, BLOCK), 1, 1),
            BLOCK,
            &[
                Arg::U64(x_addr),
                Arg::I32(m as i32),
                Arg::I32(k as i32),
                Arg::U64(parts[0]),
                Arg::U64(parts[1]),
                Arg::U64(parts[2]),
            ],
        );
        form.cache.set(Some(parts));
        Some(parts)
    }

    /// Bulk products of every weight type with exact codes take
    /// gemm_codes.cu's kernels (on), or none (off: gemm.cu's for every
    /// type). By default (`SMELT_CUDA_GEMM_CODES` unset) Q4_K weights take
    /// them and the others gemm.cu's; `=1` / `=0` start on / off. Only
    /// precision and speed differ (docs/CUDA.md, "Session 11").
    pub fn set_gemm_codes(&mut self, on: bool) {
        self.bulk_state.codes = if on { CodesMode::All } else { CodesMode::Off };
    }

    /// `out (+)= W · x` for the bulk rows `rows`.
    pub(crate) fn bulk_matmul(
        &self,
        what: &'static str,
        x: &CudaBuf,
        w: &CudaWeight,
        out: &mut CudaBuf,
        rows: Range<usize>,
        add: bool,
    ) {
        if !self.ensure(
            x.cols == w.row_len && out.rows == x.rows && out.cols == w.n_rows && rows.end <= x.rows,
            || {
                format!(
                    "{what}: x {}×{}, weight {}×{}, out {}×{}",
                    x.rows, x.cols, w.n_rows, w.row_len, out.rows, out.cols
                )
            },
        ) {
            return;
        }
        let Some([xa, oa]) = self.addrs([x, out]) else {
            return;
        };
        self.gemm(
            what,
            w,
            &GemmInput::new(row_at(xa, x, rows.start)),
            row_at(oa, out, rows.start),
            out.cols,
            0,
            rows.len(),
            add,
        );
    }

    /// The RMSNorm of rows `rows` of `x` into the same rows of `h`.
    fn bulk_rms_norm(
        &self,
        what: &'static str,
        x: &CudaBuf,
        norm: &CudaWeight,
        eps: f32,
        h: &CudaBuf,
        rows: &Range<usize>,
    ) -> Option<()> {
        let g = self.vector_addr(what, norm, x.cols)?;
        let [xa, ha] = self.addrs([x, h])?;
        self.launch(
            what,
            &self.k.rms_norm,
            (rows.len() as u32, 1, 1),
            BLOCK,
            &[
                Arg::U64(row_at(xa, x, rows.start)),
                Arg::U64(g),
                Arg::F32(eps),
                Arg::I32(x.cols as i32),
                Arg::U64(row_at(ha, h, rows.start)),
            ],
        );
        Some(())
    }

    /// `Backend::norm_qkv_rope_store` for the bulk rows `rows`, unfused:
    /// RMSNorm into `h`, three GEMMs (+ bias) into `q`, `k`, `v`, RoPE on
    /// `q` and `k`, then `k` and `v` into the cache.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn bulk_qkv(
        &self,
        x: &CudaBuf,
        w: &QkvWeights<'_, CudaWeight>,
        eps: f32,
        geom: &AttnGeometry,
        rope: &RopeParams,
        kv: &mut CudaKv,
        at: &KvWrite<'_>,
        [h, q, k, v]: [&mut CudaBuf; 4],
        rows: Range<usize>,
    ) {
        const WHAT: &str = "norm_qkv_rope_store";
        let l = kv.layout;
        let (n, hd) = (x.rows, geom.head_dim);
        let width = l.row_width();
        let n_slots = l.n_blocks * l.block_size;
        let ok = crate::fused::qkv_shapes_fit(x, w, geom, rope, kv, at, q, &rows)
            && (h.rows, h.cols) == (n, x.cols)
            && (k.rows, k.cols) == (n, width)
            && (v.rows, v.cols) == (n, width);
        if !self.ensure(ok, || {
            format!(
                "{WHAT} (bulk rows): x {}×{}, h {}×{}, q {}×{} k {}×{} v {}×{} weights, q/k/v \
                 out {}×{} {}×{} {}×{}, {} heads / {} KV heads of {hd} (rope {} of {}), cache \
                 {} KV heads of {}, layer {} of {}, {} positions, {} slots",
                x.rows,
                x.cols,
                h.rows,
                h.cols,
                w.q.n_rows,
                w.q.row_len,
                w.k.n_rows,
                w.k.row_len,
                w.v.n_rows,
                w.v.row_len,
                q.rows,
                q.cols,
                k.rows,
                k.cols,
                v.rows,
                v.cols,
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
        if self.bulk_rms_norm(WHAT, x, w.norm, eps, h, &rows).is_none() {
            return;
        }
        let bias = |b: Option<&CudaWeight>, len: usize| match b {
            Some(b) => self.vector_addr(WHAT, b, len),
            None => Some(0),
        };
        let (Some(bq), Some(bk), Some(bv)) = (
            bias(w.q_bias, w.q.n_rows),
            bias(w.k_bias, width),
            bias(w.v_bias, width),
        ) else {
            return;
        };
        let Some([ha, qa, ka, va]) = self.addrs([h, q, k, v]) else {
            return;
        };
        let (r0, m) = (rows.start, rows.len());
        let hr = row_at(ha, h, r0);
        let (qr, kr, vr) = (row_at(qa, q, r0), row_at(ka, k, r0), row_at(va, v, r0));
        // One input for the three: split or quantized once for them.
        let hi = GemmInput::new(hr);
        self.gemm(WHAT, w.q, &hi, qr, q.cols, bq, m, false);
        self.gemm(WHAT, w.k, &hi, kr, width, bk, m, false);
        self.gemm(WHAT, w.v, &hi, vr, width, bv, m, false);
        let Some(pos) = self.meta(Meta::Positions, at.positions) else {
            return;
        };
        let pos = pos + 4 * r0 as u64;
        if rope.n_rot > 0 {
            let bits: Vec<u32> = rope.inv_freq.iter().map(|f| f.to_bits()).collect();
            let Some(freq) = self.freq_meta(&bits) else {
                return;
            };
            for (xa, cols, heads) in [(qr, q.cols, geom.n_heads), (kr, width, geom.n_kv_heads)] {
                self.launch(
                    WHAT,
                    &self.k.rope,
                    (m as u32, 1, 1),
                    128,
                    &[
                        Arg::U64(xa),
                        Arg::I32(cols as i32),
                        Arg::I32(heads as i32),
                        Arg::I32(hd as i32),
                        Arg::I32(rope.n_rot as i32),
                        Arg::I32(i32::from(rope.style == RopeStyle::Neox)),
                        Arg::U64(pos),
                        Arg::U64(freq),
                    ],
                );
            }
        }
        let Some(sl) = self.meta(Meta::Slots, at.slots) else {
            return;
        };
        let store = match l.dtype {
            KvType::F16 => &self.k.kv_store_f16,
            KvType::F32 => &self.k.kv_store_f32,
        };
        self.launch(
            WHAT,
            store,
            (m as u32, 1, 1),
            128,
            &[
                Arg::U64(self.addr(&kv.k)),
                Arg::U64(self.addr(&kv.v)),
                Arg::U64(kr),
                Arg::U64(vr),
                Arg::U64(sl + 4 * r0 as u64),
                Arg::I32(width as i32),
                Arg::U64((at.layer * n_slots * width) as u64),
            ],
        );
    }

    /// `Backend::norm_gate_up_swiglu` for the bulk rows `rows`, unfused:
    /// RMSNorm into `h`, the gate and up GEMMs, then SwiGLU into `gate`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn bulk_gate_up(
        &self,
        x: &CudaBuf,
        norm: &CudaWeight,
        eps: f32,
        [w_gate, w_up]: [&CudaWeight; 2],
        [h, gate, up]: [&mut CudaBuf; 3],
        rows: Range<usize>,
    ) {
        const WHAT: &str = "norm_gate_up_swiglu";
        let n = x.rows;
        let ff = w_gate.n_rows;
        if !self.ensure(
            w_gate.row_len == x.cols
                && w_up.row_len == x.cols
                && w_up.n_rows == ff
                && (h.rows, h.cols) == (n, x.cols)
                && (gate.rows, gate.cols) == (n, ff)
                && (up.rows, up.cols) == (n, ff)
                && rows.end <= n,
            || {
                format!(
                    "{WHAT} (bulk rows): x {}×{}, h {}×{}, gate {}×{}, up {}×{} weights, out \
                     {}×{} and {}×{}",
                    x.rows,
                    x.cols,
                    h.rows,
                    h.cols,
                    w_gate.n_rows,
                    w_gate.row_len,
                    w_up.n_rows,
                    w_up.row_len,
                    gate.rows,
                    gate.cols,
                    up.rows,
                    up.cols
                )
            },
        ) {
            return;
        }
        if self.bulk_rms_norm(WHAT, x, norm, eps, h, &rows).is_none() {
            return;
        }
        let Some([ha, ga, ua]) = self.addrs([h, gate, up]) else {
            return;
        };
        let (r0, m) = (rows.start, rows.len());
        let hr = row_at(ha, h, r0);
        let (gr, ur) = (row_at(ga, gate, r0), row_at(ua, up, r0));
        let hi = GemmInput::new(hr);
        self.gemm(WHAT, w_gate, &hi, gr, ff, 0, m, false);
        self.gemm(WHAT, w_up, &hi, ur, ff, 0, m, false);
        let count = m * ff;
        self.launch(
            WHAT,
            &self.k.swiglu,
            (blocks(count, BLOCK), 1, 1),
            BLOCK,
            &[Arg::U64(gr), Arg::U64(ur), Arg::U64(count as u64)],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::runs_of;

    #[test]
    fn runs_split_rows_where_the_path_changes() {
        let wants = [false, false, true, false, true, true, false];
        let runs = runs_of(wants.len(), |r| !wants[r]);
        let got: Vec<(usize, usize, bool)> = runs
            .iter()
            .map(|r| (r.rows.start, r.rows.end, r.bulk))
            .collect();
        assert_eq!(
            got,
            [
                (0, 2, true),
                (2, 3, false),
                (3, 4, true),
                (4, 6, false),
                (6, 7, true)
            ]
        );
        assert!(runs_of(0, |_| true).is_empty());
    }
}
