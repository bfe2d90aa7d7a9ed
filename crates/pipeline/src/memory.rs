//! Peak memory for the run summary: the process's peak resident set (`VmHWM` in
//! `/proc/self/status`, Linux), which on the CPU backend is where the tensors live; and giving a
//! device's unused pool memory back after a model is dropped (model CPU offload).

use burn::tensor::backend::Backend;

use crate::{Error, Result};

/// Peak resident memory of this process in bytes, where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Waits for `device` to finish its queued work, then gives its memory pool's unused pages back
/// (burn-cuda keeps freed memory in its pool): after an offloaded model was dropped, so the next
/// model finds the room and the device holds one model at a time, as diffusers' offload does.
pub fn release_device_memory<B: Backend>(device: &B::Device) -> Result<()> {
    B::sync(device).map_err(|e| Error::input(format!("device sync failed: {e:?}")))?;
    B::memory_cleanup(device);
    Ok(())
}
