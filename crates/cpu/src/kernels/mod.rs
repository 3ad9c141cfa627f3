//! Matrix kernels of the CPU backend: `out = x · Wᵀ` for a weight `W` kept in
//! its stored (quantized) format and f32 activations `x`.
//!
//! # The arithmetic contract: one canonical reduction per output
//!
//! Every output `(o, r)` (weight row `o`, activation row `r`) is computed as
//! [`canonical_dot`]`(dequantize_row(W[o]), x[r])`, bit for bit, on every path:
//!
//! * `dequantize_row` is the scalar reference ([`smelt_tensor::dequantize_row`]).
//!   The SIMD paths dequantize with fused multiply-adds, but every quantized
//!   format's products (`d * q`, `d * sc * q`) are exact in f32, so a fused
//!   `fma(d, q, m)` rounds once exactly where the reference's `d * q + m`
//!   does: the values are identical (for finite block scales; a file with
//!   inf/NaN scales gives NaNs either way, not necessarily the same ones).
//! * [`canonical_dot`] runs eight f32 lanes: lane `j` accumulates the products
//!   of the elements `k ≡ j (mod 8)` in increasing `k` with one fused
//!   multiply-add each, the row zero-padded to a multiple of 8; the lanes are
//!   then summed as `((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7))`.
//!
//! So the value of an output does not depend on the batch size, on the row's
//! place in the batch, on which weight rows a thread was given, or on the
//! path taken (fused dequantize-in-registers matrix-vector product for small
//! batches, dequantized panels and a register-blocked micro-kernel for large
//! ones, the portable fallback): batch invariance holds by construction, and
//! the tests check it bit for bit. Parallelism comes from computing several
//! outputs at once, never from splitting one output's reduction.
//!
//! # Paths
//!
//! * AVX-512 (F, BW, VL) + BMI2 on top of AVX2 (x86-64, detected once at run
//!   time): for Q4_0, Q4_1, Q5_0, Q8_0, Q4_K and Q6_K a 512-bit register
//!   holds two weight rows (interleaved lanes in the fused matrix-vector
//!   kernel, halves in the panel micro-kernel), each with its own eight
//!   canonical lanes, so the values are the AVX2 path's bit for bit; every
//!   other type takes the AVX2 kernels. `SMELT_CPU_ISA=avx2` (or
//!   `portable`) caps the detected set, to compare paths in one build.
//! * AVX2 + FMA + F16C (x86-64, detected once at run time): fused
//!   dequantizing kernels for F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K,
//!   Q5_K and Q6_K; the other types (Q5_1, Q2_K, Q3_K, Q8_K) dequantize rows
//!   with the scalar reference into the same panels and micro-kernel.
//! * Portable: reference dequantization and a scalar [`canonical_dot`] (with
//!   `f32::mul_add`, which is a single instruction wherever the target has
//!   FMA, and a correctly rounded library call elsewhere).
//!
//! # Use from threads
//!
//! Split the weight rows (`rows`) across threads; every thread passes its own
//! [`Scratch`] (or uses [`with_thread_scratch`]). For one activation row the
//! output row's `rows` slice is the thread's own output ([`matmul`] with any
//! stride). For several, either give each thread an `n_x × rows.len()` tile
//! ([`matmul`], `out_stride = rows.len()`) and scatter afterwards, or write
//! in place into the shared row-major `n_x × n_out` output with
//! [`matmul_to_ptr`] (`out_stride = n_out`): threads then write disjoint
//! columns. Row ranges that are multiples of 8 use the widest tiles.

mod canonical;
pub mod q8;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::cell::RefCell;
use std::ops::Range;
use std::sync::OnceLock;

use smelt_tensor::DType;

pub use canonical::canonical_dot;

/// The instruction set a kernel call runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust, any target.
    Portable,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// x86-64 with AVX-512 (F, BW, VL) and BMI2 on top of [`Isa::Avx2`]:
    /// AVX-512 fused decode kernels for the common quantized types, the
    /// AVX2 kernels for everything else. Same values, bit for bit.
    Avx512,
}

impl Isa {
    /// Whether this machine can run kernels of this instruction set.
    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2 => matches!(detected_isa(), Isa::Avx2 | Isa::Avx512),
            Isa::Avx512 => detected_isa() == Isa::Avx512,
        }
    }
}

/// The best instruction set of this machine (detected once, then cached),
/// capped by the environment variable `SMELT_CPU_ISA` (`portable`, `avx2`
/// or `avx512`) when it is set: A/B comparisons of one build.
pub fn detected_isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = best_isa();
        let cap = match std::env::var("SMELT_CPU_ISA").as_deref() {
            Ok("portable") => Isa::Portable,
            Ok("avx2") => Isa::Avx2,
            _ => return best,
        };
        match (best, cap) {
            (Isa::Portable, _) | (_, Isa::Portable) => Isa::Portable,
            _ => cap,
        }
    })
}

/// The best instruction set the CPU supports.
fn best_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") && has!("f16c") {
            if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("bmi2") {
                return Isa::Avx512;
            }
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// Reusable per-thread buffers of the kernels (dequantized weight panels,
/// zero-padded activations). Grows to the largest shape seen, then no kernel
/// call allocates.
#[derive(Default)]
pub struct Scratch {
    /// Dequantized weight rows; over-allocated so the panel can start on a
    /// 64-byte boundary.
    panel: Vec<f32>,
    /// Activation rows zero-padded to a multiple of 8 (only when `n_in` is not).
    x_pad: Vec<f32>,
    /// Unpacked weight rows of the Q8 kernels.
    q8_tile: Option<q8::unpack::Tile>,
}

impl Scratch {
    /// Empty buffers; they grow on first use.
    pub fn new() -> Self {
        Self::default()
    }
}

/// `len` values of `buf` starting on a 64-byte boundary (grows `buf`).
fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    const SLACK: usize = 16;
    if buf.len() < len + SLACK {
        buf.resize(len + SLACK, 0.0);
    }
    let skip = buf.as_ptr().align_offset(64).min(SLACK);
    &mut buf[skip..skip + len]
}

/// Runs `f` with this thread's [`Scratch`] (a fresh one if the thread's is
/// already in use further up the stack).
pub fn with_thread_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    thread_local! {
        static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
    }
    let mut f = Some(f);
    let ran = SCRATCH.try_with(|cell| {
        let mut scratch = cell.try_borrow_mut().ok()?;
        f.take().map(|f| f(&mut scratch))
    });
    if let Ok(Some(v)) = ran {
        return v;
    }
    match f {
        Some(f) => f(&mut Scratch::new()),
        // `f` is only taken on the path that returned above.
        None => unreachable!("with_thread_scratch: closure taken but not run"),
    }
}

/// `out[r * out_stride + (o - rows.start)] = Σ_k W[o][k] · x[r * n_in + k]`
/// for `o` in `rows`, `r` in `0..n_x`, each value by the canonical reduction
/// (see the module docs), on the best instruction set of this machine.
///
/// `w` holds the weight's stored rows back to back (`dtype.row_bytes(n_in)`
/// bytes each; at least `rows.end` of them), as `HostTensor::bytes` gives
/// them. `out` is this call's own tile: for one activation row pass the
/// output row's `rows` slice; for several, a `n_x × rows.len()` tile
/// (`out_stride = rows.len()`), or use [`matmul_to_ptr`] to write into a
/// shared output in place.
///
/// # Panics
/// If `n_in` is not whole blocks of `dtype`, or a slice is too short for the
/// shapes given (a caller bug: shapes are validated when a model is loaded).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    dtype: DType,
    w: &[u8],
    n_in: usize,
    rows: Range<usize>,
    x: &[f32],
    n_x: usize,
    out: &mut [f32],
    out_stride: usize,
    scratch: &mut Scratch,
) {
    matmul_with_isa(
        detected_isa(),
        dtype,
        w,
        n_in,
        rows,
        x,
        n_x,
        out,
        out_stride,
        scratch,
    )
}

/// [`matmul`] on a chosen instruction set (tests and benchmarks compare
/// them). An `isa` this machine lacks runs the portable kernels instead.
///
/// # Panics
/// As [`matmul`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_with_isa(
    isa: Isa,
    dtype: DType,
    w: &[u8],
    n_in: usize,
    rows: Range<usize>,
    x: &[f32],
    n_x: usize,
    out: &mut [f32],
    out_stride: usize,
    scratch: &mut Scratch,
) {
    if rows.is_empty() || n_x == 0 {
        return;
    }
    let need = (n_x - 1) * out_stride + rows.len();
    assert!(
        out.len() >= need && (n_x == 1 || out_stride >= rows.len()),
        "matmul: output of {} values with stride {out_stride} cannot hold {n_x} rows of {} columns",
        out.len(),
        rows.len()
    );
    let dst = Dst {
        ptr: out.as_mut_ptr(),
        stride: out_stride,
        first: rows.start,
    };
    // SAFETY: `dst` addresses `out[r * out_stride + (o - rows.start)]` for
    // `o` in `rows`, `r < n_x`: in bounds (checked above) and borrowed
    // mutably for the whole call.
    unsafe { run(isa, dtype, w, n_in, rows, x, n_x, dst, scratch) }
}

/// [`matmul`] writing `out.add(r * out_stride + o)` for `o` in `rows`, `r` in
/// `0..n_x`: lets several threads fill disjoint columns of one row-major
/// `n_x × n_out` output (`out_stride = n_out`) in place.
///
/// # Safety
/// Every one of those elements must be valid for writes, and no other thread
/// may read or write them during the call.
///
/// # Panics
/// As [`matmul`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_to_ptr(
    dtype: DType,
    w: &[u8],
    n_in: usize,
    rows: Range<usize>,
    x: &[f32],
    n_x: usize,
    out: *mut f32,
    out_stride: usize,
    scratch: &mut Scratch,
) {
    if rows.is_empty() || n_x == 0 {
        return;
    }
    let dst = Dst {
        ptr: out,
        stride: out_stride,
        first: 0,
    };
    // SAFETY: the elements `dst` addresses are exactly those the caller
    // promises are writable and exclusively ours.
    unsafe { run(detected_isa(), dtype, w, n_in, rows, x, n_x, dst, scratch) }
}

/// Where the outputs go: `(o, r)` is written at `ptr + r * stride + (o - first)`.
#[derive(Clone, Copy)]
struct Dst {
    ptr: *mut f32,
    stride: usize,
    first: usize,
}

impl Dst {
    /// Pointer to output `(o, r)`.
    ///
    /// # Safety
    /// `(o, r)` must be one of the outputs the [`Dst`] was made for.
    #[inline(always)]
    unsafe fn at(self, o: usize, r: usize) -> *mut f32 {
        // SAFETY: in bounds of the caller-validated output (the contract).
        unsafe { self.ptr.add(r * self.stride + (o - self.first)) }
    }
}

/// Validates the inputs and runs the kernels of `isa`.
///
/// # Safety
/// `dst` must be valid for writes of every output `(o, r)`, `o` in `rows`,
/// `r < n_x`, and exclusively ours for the call.
#[allow(clippy::too_many_arguments)]
unsafe fn run(
    isa: Isa,
    dtype: DType,
    w: &[u8],
    n_in: usize,
    rows: Range<usize>,
    x: &[f32],
    n_x: usize,
    dst: Dst,
    scratch: &mut Scratch,
) {
    let row_bytes = match dtype.row_bytes(n_in as u64) {
        Ok(b) => b as usize,
        Err(e) => panic!("matmul: {e}"),
    };
    assert!(
        rows.end
            .checked_mul(row_bytes)
            .is_some_and(|b| b <= w.len()),
        "matmul: weight of {} bytes has no row {} ({row_bytes} bytes per {dtype} row)",
        w.len(),
        rows.end.saturating_sub(1)
    );
    assert!(
        n_x.checked_mul(n_in).is_some_and(|n| n <= x.len()),
        "matmul: {} activations cannot hold {n_x} rows of {n_in}",
        x.len()
    );
    let w = &w[..rows.end * row_bytes];
    let x = &x[..n_x * n_in];
    if n_in == 0 {
        for o in rows {
            for r in 0..n_x {
                // SAFETY: `(o, r)` is one of our outputs (the contract).
                unsafe { *dst.at(o, r) = 0.0 };
            }
        }
        return;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if Isa::Avx512.available() => {
            // SAFETY: AVX-512 F/BW/VL, BMI2, AVX2, FMA and F16C are present
            // (checked just above); the slices are validated; `dst` is the
            // caller's contract.
            unsafe { x86::avx512::matmul(dtype, w, n_in, rows, x, n_x, dst, scratch) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if Isa::Avx2.available() => {
            // SAFETY: AVX2/FMA/F16C are present (checked just above); the
            // slices are validated; `dst` is the caller's contract.
            unsafe { x86::matmul(dtype, w, n_in, rows, x, n_x, dst, scratch) }
        }
        // SAFETY: as above, for the portable kernels.
        _ => unsafe { canonical::matmul(dtype, w, n_in, rows, x, n_x, dst, scratch) },
    }
}

/// `n` rounded up to a multiple of 8 (the canonical lane count).
#[inline(always)]
fn ceil8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// Activation rows with a length that is a multiple of 8: `x` itself when
/// `n_in` is, else zero-padded copies in `pad`. Returns (rows, stride).
fn padded_x<'a>(
    x: &'a [f32],
    n_in: usize,
    n_x: usize,
    pad: &'a mut Vec<f32>,
) -> (&'a [f32], usize) {
    let stride = ceil8(n_in);
    if stride == n_in {
        return (x, n_in);
    }
    pad.clear();
    pad.resize(n_x * stride, 0.0);
    for (dst, src) in pad.chunks_exact_mut(stride).zip(x.chunks_exact(n_in)) {
        dst[..n_in].copy_from_slice(src);
    }
    (pad, stride)
}
