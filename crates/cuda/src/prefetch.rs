//! L2 prefetch of a decode step's next weights (`Backend::prefetch`).
//!
//! A decode step on a 1B-class model spends much of its time where the
//! memory bus idles: attention at short contexts (one small block per head,
//! a chain of dependent loads) and each kernel's launch and tail. The model
//! names the layer's remaining weights before its attention; here a small
//! kernel (`prefetch_l2`, ops.cu) asks L2 for the first bytes of them, in
//! the order they are read, up to a budget that fits L2 beside the rest of
//! the step's data, so the products after attention find them there (the
//! requests go out once the QKV product has finished, during attention;
//! `SMELT_CUDA_DEFINES=SMELT_PF_EARLY=1` sends them before, an A/B). It is
//! a hint: results never change. Off by default until measured on a GPU
//! (`SMELT_CUDA_PREFETCH_MIB=N` turns it on with an N MiB budget).

use crate::CudaBackend;
use crate::backend::CudaWeight;
use crate::launch::Arg;

/// Ranges one `prefetch_l2` launch takes.
const RANGES: usize = 4;

/// The budget `SMELT_CUDA_PREFETCH_MIB` asks for, in bytes (0: off).
pub(crate) fn budget_from_env() -> u64 {
    std::env::var("SMELT_CUDA_PREFETCH_MIB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |mib| mib.min(1 << 20) << 20)
}

/// Calls `take(weight, bytes)` with the bytes to prefetch of each weight
/// (in `groups` order, a group's weights together): groups in turn take
/// what the budget has left, split evenly over their weights (read row by
/// row together, so their first bytes are wanted first), each weight at
/// most its length `len`. No allocation: it runs a few times a decode step.
fn plan<W>(groups: &[&[W]], len: impl Fn(&W) -> u64, budget: u64, mut take: impl FnMut(&W, u64)) {
    let mut left = budget;
    for group in groups.iter().filter(|g| !g.is_empty()) {
        let share = left / group.len() as u64;
        for w in group.iter() {
            let bytes = len(w).min(share);
            take(w, bytes);
            left -= bytes;
        }
    }
}

impl CudaBackend {
    /// `Backend::prefetch`: one `prefetch_l2` launch for the first
    /// `RANGES` weights the plan gives bytes (the model names at most
    /// four), only in steps without bulk rows (a prompt's products read
    /// each weight many times over; their loads are not the problem).
    pub(crate) fn prefetch_weights(&self, groups: &[&[&CudaWeight]]) {
        if self.prefetch_bytes == 0 || self.step_has_bulk_rows() {
            return;
        }
        let mut args = [Arg::U64(0); 2 * RANGES];
        let mut n = 0;
        let len = |w: &&CudaWeight| w.bytes.len() as u64;
        plan(groups, len, self.prefetch_bytes, |w, bytes| {
            if bytes > 0 && n < RANGES {
                // The kernel needs 16-byte aligned starts, which a
                // weight's own allocation has.
                let addr = self.addr(&w.bytes);
                debug_assert!(addr.is_multiple_of(16), "prefetch: unaligned weight");
                args[2 * n] = Arg::U64(addr);
                args[2 * n + 1] = Arg::U64(bytes);
                n += 1;
            }
        });
        if n > 0 {
            self.launch("prefetch", &self.k.prefetch_l2, (8, 1, 1), 128, &args);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(groups: &[&[u64]], budget: u64) -> Vec<u64> {
        let mut out = Vec::new();
        plan(groups, |&l| l, budget, |_, bytes| out.push(bytes));
        out
    }

    #[test]
    fn the_plan_fills_the_budget_in_order_and_shares_it_within_a_group() {
        // wo 10, gate / up 100 each, down 100; budget 70: wo whole, then
        // 30 each of gate and up, nothing of down.
        assert_eq!(
            planned(&[&[10], &[100, 100], &[100]], 70),
            vec![10, 30, 30, 0]
        );
        // A large budget takes every weight whole and leaves the rest.
        assert_eq!(
            planned(&[&[10], &[20, 30], &[40]], 1000),
            vec![10, 20, 30, 40]
        );
        // A group's short weight leaves its share to the next group.
        assert_eq!(planned(&[&[5, 100], &[100]], 60), vec![5, 30, 25]);
        assert_eq!(planned(&[&[10]], 0), vec![0]);
    }
}
