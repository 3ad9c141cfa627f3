//! Kernel launches and the backend's deferred error.

use std::ffi::c_void;

use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr};

use crate::CudaBackend;

/// One kernel argument, by value, as the kernel declares it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    /// A device pointer (`T*`) or a `u64`.
    U64(u64),
    I32(i32),
    F32(f32),
}

/// Threads per block of the simple kernels.
pub(crate) const BLOCK: u32 = 256;

impl CudaBackend {
    /// Keeps `msg` as the pending error unless one is already kept.
    pub(crate) fn fail(&self, msg: String) {
        let mut e = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some(msg);
        }
    }

    /// Takes the pending error, if any.
    pub(crate) fn take_error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
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
        let (ptr, _guard) = s.device_ptr(&self.stream);
        ptr
    }

    /// Launches `f` on the backend's stream with a 1-D block of `block`
    /// threads; a failure becomes the pending error, naming `what`.
    pub(crate) fn launch(
        &self,
        what: &str,
        f: &CudaFunction,
        grid: (u32, u32, u32),
        block: u32,
        args: &[Arg],
    ) {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return;
        }
        let mut vals: Vec<Arg> = args.to_vec();
        let mut params: Vec<*mut c_void> = vals
            .iter_mut()
            .map(|a| match a {
                Arg::U64(v) => (v as *mut u64).cast(),
                Arg::I32(v) => (v as *mut i32).cast(),
                Arg::F32(v) => (v as *mut f32).cast(),
            })
            .collect();
        if let Err(e) = self.ctx.bind_to_thread() {
            self.fail(format!("{what}: cannot use the GPU from this thread: {e}"));
            return;
        }
        // SAFETY: `params` points at `vals`, which outlive the call, one value
        // per kernel parameter in the kernel's order and type (each call site
        // lists them as the .cu signature declares); every pointer argument is
        // a live device allocation of this context whose extent the call site
        // checked against the grid; the launch is ordered on the one stream.
        let r = unsafe {
            cudarc::driver::result::launch_kernel(
                f.cu_function(),
                grid,
                (block, 1, 1),
                0,
                self.stream.cu_stream(),
                &mut params,
            )
        };
        if let Err(e) = r {
            self.fail(format!("{what}: launch failed: {e}"));
        }
    }
}
