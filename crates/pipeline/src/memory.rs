//! Peak memory for the run summary: the process's peak resident set (`VmHWM` in
//! `/proc/self/status`, Linux), which on the CPU backend is where the tensors live.

/// Peak resident memory of this process in bytes, where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
