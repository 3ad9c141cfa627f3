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

/// The byte counts to prefetch of each weight (in `groups` order, a group's
/// weights together): groups in turn take what the budget has left, split
/// evenly over their weights (read row by row together, so their first
/// bytes are wanted first), each weight at most its length.
fn plan(lens: &[&[u64]], budget: u64) -> Vec<u64> {
    let mut left = budget;
    let mut out = Vec::new();
    for group in lens {
        if group.is_empty() {
            continue;
        }
        let share = left / group.len() as u64;
        for &len in group.iter() {
            let take = len.min(share);
            out.push(take);
            left -= take;
        }
    }
    out
}

impl CudaBackend {
    /// `Backend::prefetch`: one `prefetch_l2` launch for the first ranges
    /// of the plan, only in steps without bulk rows (a prompt's products
    /// read each weight many times over; their loads are not the problem).
    pub(crate) fn prefetch_weights(&self, groups: &[&[&CudaWeight]]) {
        if self.prefetch_bytes == 0 || self.step_has_bulk_rows() {
            return;
        }
        let lens: Vec<Vec<u64>> = groups
            .iter()
            .map(|g| g.iter().map(|w| w.bytes.len() as u64).collect())
            .collect();
        let lens: Vec<&[u64]> = lens.iter().map(Vec::as_slice).collect();
        let takes = plan(&lens, self.prefetch_bytes);
        // The first RANGES weights with bytes to fetch (the model names at
        // most four); the kernel needs 16-byte aligned starts, which a
        // weight's own allocation has.
        let mut args = Vec::with_capacity(2 * RANGES);
        for (w, take) in groups.iter().flat_map(|g| g.iter()).zip(takes) {
            if take > 0 && args.len() < 2 * RANGES {
                let addr = self.addr(&w.bytes);
                debug_assert!(addr.is_multiple_of(16), "prefetch: unaligned weight");
                args.push(Arg::U64(addr));
                args.push(Arg::U64(take));
            }
        }
        if args.is_empty() {
            return;
        }
        while args.len() < 2 * RANGES {
            args.push(Arg::U64(0));
        }
        self.launch("prefetch", &self.k.prefetch_l2, (8, 1, 1), 128, &args);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_fills_the_budget_in_order_and_shares_it_within_a_group() {
        // wo 10, gate / up 100 each, down 100; budget 70: wo whole, then
        // 30 each of gate and up, nothing of down.
        assert_eq!(plan(&[&[10], &[100, 100], &[100]], 70), vec![10, 30, 30, 0]);
        // A large budget takes every weight whole and leaves the rest.
        assert_eq!(plan(&[&[10], &[20, 30], &[40]], 1000), vec![10, 20, 30, 40]);
        // A group's short weight leaves its share to the next group.
        assert_eq!(plan(&[&[5, 100], &[100]], 60), vec![5, 30, 25]);
        assert_eq!(plan(&[&[10]], 0), vec![0]);
    }
}
