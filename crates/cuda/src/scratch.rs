//! Device scratch buffers that grow on demand (split attention's partial
//! results, the k-tile sums of split bulk products, the code products'
//! split input): one place for the grow-flush-allocate rule.

use std::sync::Mutex;

use cudarc::driver::{CudaSlice, DeviceRepr};

use crate::CudaBackend;

/// What scratch may hold: plain numbers, for which every bit pattern is a
/// value (the buffers are not initialised).
pub(crate) trait ScratchElem: DeviceRepr {}
impl ScratchElem for f32 {}
impl ScratchElem for u32 {}

impl CudaBackend {
    /// The device address of `slot`'s buffer, first grown (to a power of
    /// two) when it holds fewer than `len` elements; None, with the failure
    /// kept for `Backend::finish`, when the allocation fails. The kernels
    /// using it must write every element they read.
    pub(crate) fn scratch<T: ScratchElem>(
        &self,
        what: &str,
        slot: &Mutex<Option<CudaSlice<T>>>,
        len: usize,
    ) -> Option<u64> {
        let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(|s| s.len() < len) {
            // The old buffer may be used by recorded launches: send them
            // first (its release is ordered on the stream after them).
            self.queue.flush();
            // SAFETY: every bit pattern of a ScratchElem is a value, and the
            // callers' kernels write every element they read.
            match unsafe { self.queue.stream.alloc::<T>(len.next_power_of_two()) } {
                Ok(s) => *guard = Some(s),
                Err(e) => {
                    self.fail(format!(
                        "{what}: cannot allocate {len} elements of scratch: {e}"
                    ));
                    return None;
                }
            }
        }
        guard.as_ref().map(|s| self.addr(s))
    }
}
