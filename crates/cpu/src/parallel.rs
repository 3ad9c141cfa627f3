//! Splitting the CPU backend's per-row and element-wise work over the
//! thread pool: disjoint output slices and the parallel-region helpers.

use crate::CpuBackend;
use crate::pool::split;

/// A buffer that several threads fill at disjoint indices.
pub(crate) struct DisjointOut<T = f32> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: threads only write through `slice` (or the kernels through
// `ptr`), each to indices no other thread touches during the same parallel
// region (the callers split by weight rows, activation rows, elements or
// attention rows), and the region joins before the buffer is read.
unsafe impl<T: Send> Sync for DisjointOut<T> {}

impl<T> DisjointOut<T> {
    pub(crate) fn new(out: &mut [T]) -> Self {
        DisjointOut {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// The start of the buffer, for kernels that take the disjointness
    /// contract themselves.
    pub(crate) fn ptr(&self) -> *mut T {
        self.ptr
    }

    /// The `len` values at `start`, for one thread's exclusive use.
    ///
    /// # Safety
    /// No other thread may access `start..start + len` while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start + len <= self.len, "disjoint write out of bounds");
        // SAFETY: in bounds (checked above) and exclusive (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// Work (in rough units of one simple f32 operation) below which a per-row
/// or element-wise op stays on the calling thread: a parallel region costs
/// about a microsecond, a few thousand such operations.
pub(crate) const PAR_MIN_WORK: usize = 4096;

/// Relative cost per element of the element-wise ops (units of
/// [`PAR_MIN_WORK`]).
pub(crate) const COST_ADD: usize = 1;
pub(crate) const COST_NORM: usize = 3;
pub(crate) const COST_ROPE: usize = 4;
pub(crate) const COST_TRANSCENDENTAL: usize = 16;

impl CpuBackend {
    /// Runs `f` on parts of `0..n` (a part per thread, contiguous, the
    /// remainder to the first parts) when `n * cost` is worth a parallel
    /// region, else on `0..n` here. `f` must compute each index the same
    /// way whatever range it comes in (batch invariance).
    pub(crate) fn par_ranges(
        &self,
        n: usize,
        cost: usize,
        f: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) {
        let threads = self.threads();
        if threads == 1 || n < 2 || n.saturating_mul(cost) < PAR_MIN_WORK {
            f(0..n);
            return;
        }
        self.pool.run(&|t| {
            let part = split(n, threads, t);
            if !part.is_empty() {
                f(part);
            }
        });
    }

    /// `f(row_in_x, row_out)` for every row of `out` (rows of `cols`
    /// values), on several threads when worth it.
    pub(crate) fn par_rows_mut(
        &self,
        out: &mut [f32],
        cols: usize,
        cost_per_row: usize,
        f: &(dyn Fn(usize, &mut [f32]) + Sync),
    ) {
        if cols == 0 {
            return;
        }
        let n = out.len() / cols;
        let dst = DisjointOut::new(out);
        self.par_ranges(n, cost_per_row, &|rows| {
            // SAFETY: this part's rows belong to it alone.
            let mine = unsafe { dst.slice(rows.start * cols, rows.len() * cols) };
            for (i, row) in mine.chunks_exact_mut(cols).enumerate() {
                f(rows.start + i, row);
            }
        });
    }

    /// `f(a_chunk, b_chunk)` over matching chunks of `a` (written) and `b`
    /// (read), element-wise ops: the chunking changes no value.
    pub(crate) fn par_zip_mut(
        &self,
        a: &mut [f32],
        b: &[f32],
        cost: usize,
        f: &(dyn Fn(&mut [f32], &[f32]) + Sync),
    ) {
        let n = a.len().min(b.len());
        // Whole cache lines per part.
        const CHUNK: usize = 16;
        let dst = DisjointOut::new(&mut a[..n]);
        self.par_ranges(n.div_ceil(CHUNK), cost * CHUNK, &|chunks| {
            let (start, end) = (chunks.start * CHUNK, (chunks.end * CHUNK).min(n));
            // SAFETY: this part's elements belong to it alone.
            let mine = unsafe { dst.slice(start, end - start) };
            f(mine, &b[start..end]);
        });
    }
}
