//! A persistent thread pool built for one thing: running the same closure on
//! every thread, many thousand times per second, with a wake-up and join that
//! cost about a microsecond.
//!
//! A forward step issues a few parallel regions per layer. General-purpose
//! pools (work stealing, futex sleep after each job) spend tens of
//! microseconds per region, which at hundreds of regions per token is a large
//! share of a small model's decode time. Here the workers spin on a
//! generation counter for a while after each job, so back-to-back regions
//! find them awake; only after a long idle stretch (e.g. waiting for user
//! input) do they park.
//!
//! The caller is worker 0: it runs its share of the job and then waits for
//! the others, so `run` returns only when every thread has finished.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle, Thread};

/// Spins before a worker parks: long enough to bridge the gaps between the
/// parallel regions of a forward step.
const SPINS_BEFORE_PARK: u32 = 1 << 16;

/// The job of the current generation: a pointer to the caller's closure.
type JobPtr = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// Incremented to publish a new job.
    generation: AtomicUsize,
    /// Workers still running the current job.
    remaining: AtomicUsize,
    /// Set when a worker's job panicked.
    panicked: AtomicBool,
    stop: AtomicBool,
    job: UnsafeCell<Option<JobPtr>>,
    /// Per worker (index 1..): parked and waiting for an unpark.
    sleeping: Vec<AtomicBool>,
}

// SAFETY: `job` is written only by the thread inside `Pool::run` while no
// worker reads it (all workers have finished the previous generation, as
// `remaining == 0` shows), and published to workers with the Release store of
// `generation` that they Acquire before reading it.
unsafe impl Sync for Shared {}
// SAFETY: the raw job pointer is only dereferenced during `run`, while the
// closure it points to is alive (see `run`).
unsafe impl Send for Shared {}

/// A fixed set of threads that run one closure at a time on all of them.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<(Thread, JoinHandle<()>)>,
    /// Serializes `run` calls from different threads.
    busy: std::sync::Mutex<()>,
}

impl Pool {
    /// A pool of `n_threads` threads in all (the caller counts as one).
    pub fn new(n_threads: usize) -> std::io::Result<Pool> {
        let n = n_threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            remaining: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            job: UnsafeCell::new(None),
            sleeping: (0..n).map(|_| AtomicBool::new(false)).collect(),
        });
        let mut workers = Vec::with_capacity(n - 1);
        for index in 1..n {
            let shared = shared.clone();
            let handle = thread::Builder::new()
                .name(format!("smelt-cpu-{index}"))
                .spawn(move || worker_loop(&shared, index))?;
            workers.push((handle.thread().clone(), handle));
        }
        Ok(Pool {
            shared,
            workers,
            busy: std::sync::Mutex::new(()),
        })
    }

    /// Number of threads, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `job(i)` once on each thread `i` in `0..threads()`, the caller
    /// running `job(0)`, and returns when all are done. A panic in any of
    /// them is re-raised here.
    pub fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            job(0);
            return;
        }
        let _guard = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: the lifetime of `job` is erased to store it; every worker
        // finishes using it before `remaining` reaches 0, and this function
        // does not return (or unwind) before that, so the pointer never
        // outlives the closure.
        let ptr: JobPtr = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), JobPtr>(job) };
        // SAFETY: no worker reads `job` now: the previous generation is
        // complete (remaining == 0) and the next is not yet published.
        unsafe { *s.job.get() = Some(ptr) };
        s.remaining.store(self.workers.len(), Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::SeqCst);
        for (i, (thread, _)) in self.workers.iter().enumerate() {
            if s.sleeping[i + 1].load(Ordering::SeqCst) {
                thread.unpark();
            }
        }
        let mine = catch_unwind(AssertUnwindSafe(|| job(0)));
        let mut spins = 0u32;
        while s.remaining.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            relax(spins);
        }
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a smelt CPU worker thread panicked");
        }
    }
}

/// One step of a busy wait. Yields to the OS now and then, so that more
/// threads than cores (an oversubscribed `--threads`) still make progress.
#[inline]
fn relax(spins: u32) {
    if spins.is_multiple_of(256) {
        thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

fn worker_loop(s: &Shared, index: usize) {
    let mut seen = 0usize;
    loop {
        // Wait for a new generation: spin, then park.
        let mut spins = 0u32;
        let generation = loop {
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                break g;
            }
            if s.stop.load(Ordering::Relaxed) {
                return;
            }
            spins += 1;
            if spins < SPINS_BEFORE_PARK {
                relax(spins);
            } else {
                s.sleeping[index].store(true, Ordering::SeqCst);
                if s.generation.load(Ordering::SeqCst) == seen && !s.stop.load(Ordering::SeqCst) {
                    thread::park();
                }
                s.sleeping[index].store(false, Ordering::SeqCst);
                spins = 0;
            }
        };
        seen = generation;
        // SAFETY: the job was stored before the Release increment of
        // `generation` we just Acquired, and stays valid until we decrement
        // `remaining` below (see `Pool::run`).
        let job = unsafe { (*s.job.get()).map(|p| &*p) };
        if let Some(job) = job
            && catch_unwind(AssertUnwindSafe(|| job(index))).is_err()
        {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.remaining.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for (thread, _) in &self.workers {
            thread.unpark();
        }
        for (_, handle) in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

/// The half-open range of `0..n` that part `i` of `parts` takes, with the
/// remainder spread over the first parts.
pub fn split(n: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
    let (base, extra) = (n / parts, n % parts);
    let start = i * base + i.min(extra);
    start..start + base + usize::from(i < extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_each_job_once_and_ranges_cover() {
        for n in [1, 2, 3] {
            let pool = Pool::new(n).expect("pool");
            for round in 0..300 {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(&|i| {
                    hits[i].fetch_add(round + 1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == round + 1));
            }
            let mut covered = vec![0; 103];
            for i in 0..n {
                for j in split(103, n, i) {
                    covered[j] += 1;
                }
            }
            assert!(covered.iter().all(|&c| c == 1));
        }
    }

    #[test]
    fn workers_wake_after_parking_and_panics_propagate() {
        let pool = Pool::new(3).expect("pool");
        std::thread::sleep(std::time::Duration::from_millis(300));
        let count = AtomicUsize::new(0);
        pool.run(&|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 3);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|i| {
                if i == 2 {
                    panic!("boom");
                }
            })
        }));
        assert!(caught.is_err());
        // Still usable afterwards.
        pool.run(&|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 6);
    }
}
