//! Memory read bandwidth of this machine, measured the way decode reads
//! weights: every thread streams once through its own share of a buffer far
//! larger than the last-level cache, summing as it goes. The result is the
//! ceiling a memory-bound decode step can reach (`smelt bench`'s roofline).

use std::time::Instant;

/// One bandwidth measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct MemBandwidth {
    /// Best pass, in 10^9 bytes per second.
    pub gb_per_s: f64,
    /// Every pass, GB/s, in the order run.
    pub passes_gb_per_s: Vec<f64>,
    /// Size of the buffer streamed through on each pass.
    pub bytes: usize,
    pub threads: usize,
    /// CPUs' worth of time other processes took meanwhile, if the caller
    /// measured it (`measure` leaves it None).
    pub other_cpu: Option<f64>,
}

/// Streams `threads` threads through a `bytes`-byte buffer `passes` times
/// and keeps the fastest pass. The buffer is written (first touch, by the
/// thread that later reads it) before any pass, so no page is the shared
/// zero page and the timed passes only read.
pub fn measure(bytes: usize, threads: usize, passes: usize) -> Result<MemBandwidth, String> {
    let threads = threads.max(1);
    let words = bytes / 8;
    if words < threads * 8 {
        return Err(format!(
            "memory bandwidth buffer of {bytes} bytes is too small for {threads} threads"
        ));
    }
    // One buffer per thread, filled by that thread: written (so no page is
    // the shared zero page) and first touched where it will be read.
    let share = words / threads;
    let parts: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || filled(share, (t * share) as u64)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(None))
            .collect::<Option<Vec<_>>>()
    })
    .ok_or_else(|| format!("cannot allocate the {bytes}-byte memory bandwidth buffer"))?;
    let mut passes_gb_per_s = Vec::with_capacity(passes.max(1));
    let mut checksum = 0u64;
    for _ in 0..passes.max(1) {
        let t0 = Instant::now();
        let sums: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .iter()
                .map(|part| s.spawn(move || stream_sum(part)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
        });
        let secs = t0.elapsed().as_secs_f64();
        checksum = sums.iter().fold(checksum, |a, &b| a.wrapping_add(b));
        passes_gb_per_s.push((share * threads * 8) as f64 / secs.max(1e-9) / 1e9);
    }
    std::hint::black_box(checksum);
    let gb_per_s = passes_gb_per_s.iter().copied().fold(0.0, f64::max);
    Ok(MemBandwidth {
        gb_per_s,
        passes_gb_per_s,
        bytes: share * threads * 8,
        threads,
        other_cpu: None,
    })
}

/// `len` words of a non-constant pattern, or None if they cannot be allocated.
fn filled(len: usize, seed: u64) -> Option<Vec<u64>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.extend((0..len as u64).map(|i| (seed + i).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    Some(v)
}

/// Wrapping sum of `data` in eight independent lanes: the loop compiles to
/// vector adds, so one core issues loads as fast as memory delivers them.
pub fn stream_sum(data: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut lanes = data.chunks_exact(8);
    for c in &mut lanes {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(*v);
        }
    }
    let tail = lanes
        .remainder()
        .iter()
        .fold(0u64, |a, &v| a.wrapping_add(v));
    acc.iter().fold(tail, |a, &v| a.wrapping_add(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_sum_matches_a_plain_sum_with_a_ragged_tail() {
        let data: Vec<u64> = (0..1003u64)
            .map(|i| i.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (i << 7))
            .collect();
        let plain = data.iter().fold(0u64, |a, &v| a.wrapping_add(v));
        assert_eq!(stream_sum(&data), plain);
        let head = data[..5].iter().fold(0u64, |a, &v| a.wrapping_add(v));
        assert_eq!(stream_sum(&data[..5]), head);
    }

    #[test]
    fn measure_reports_every_pass_and_the_best() {
        let bw = measure(1 << 20, 2, 3).unwrap();
        assert_eq!(bw.passes_gb_per_s.len(), 3);
        assert_eq!(bw.bytes, 1 << 20);
        assert!(bw.gb_per_s > 0.0);
        assert!(bw.passes_gb_per_s.iter().all(|&p| p <= bw.gb_per_s));
        assert!(measure(16, 4, 1).is_err());
    }
}
