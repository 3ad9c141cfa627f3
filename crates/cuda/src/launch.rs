//! Kernel launches (recorded on the queue) and the backend's deferred error.

use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr};

use crate::CudaBackend;
pub(crate) use crate::queue::Arg;
use crate::queue::Launch;

/// Threads per block of the simple kernels.
pub(crate) const BLOCK: u32 = 256;

impl CudaBackend {
    /// Keeps `msg` as the pending error unless one is already kept.
    pub(crate) fn fail(&self, msg: String) {
        self.queue.fail(msg);
    }

    /// Records a failed check; returns whether it held.
    pub(crate) fn ensure(&self, ok: bool, msg: impl FnOnce() -> String) -> bool {
        if !ok {
            self.fail(msg());
        }
        ok
    }

    /// The device address of a buffer.
    pub(crate) fn addr<T>(&self, s: &CudaSlice<T>) -> u64 {
        // Event tracking is off (see `CudaBackend::on_device`), so the guard
        // records nothing.
        let (ptr, _guard) = s.device_ptr(&self.queue.stream);
        ptr
    }

    /// Queues `f` with a 1-D block of `block` threads; the queue sends it
    /// (directly or in a graph) when its results are needed.
    pub(crate) fn launch(
        &self,
        what: &'static str,
        f: &CudaFunction,
        grid: (u32, u32, u32),
        block: u32,
        args: &[Arg],
    ) {
        self.launch_shared(what, f, grid, block, 0, args);
    }

    /// As [`CudaBackend::launch`], with `shared` bytes of dynamic shared memory.
    pub(crate) fn launch_shared(
        &self,
        what: &'static str,
        f: &CudaFunction,
        grid: (u32, u32, u32),
        block: u32,
        shared: u32,
        args: &[Arg],
    ) {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return;
        }
        self.queue.push(Launch {
            what,
            func: f.clone(),
            grid,
            block,
            shared,
            args: args.to_vec(),
            param_blob: None,
        });
    }
}
