//! CPU time of this process's threads between two moments (Linux: `/proc/self/task/*/schedstat`,
//! nanoseconds on a CPU; `comm` for the name), for `reel bench`: which thread sets the pace of a
//! part. On burn-cuda with fusion three threads share a step — the caller's (`main`), burn-fusion's
//! stream thread and cubecl's device thread (cubecl names them `DS…`), which launches the kernels
//! and runs reel's vendor operations —, so a thread busy for about the whole wall time while the
//! GPU idles is the per-operation floor's home. No such file elsewhere: no numbers, no error.

use std::collections::HashMap;

/// CPU nanoseconds and name of each live thread, by thread id.
#[derive(Debug, Clone, Default)]
pub struct ThreadTimes(HashMap<u32, (String, u64)>);

/// The threads of this process now (empty where `/proc/self/task` cannot be read).
pub fn snapshot() -> ThreadTimes {
    let mut threads = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return ThreadTimes(threads);
    };
    let pid = std::process::id();
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let path = entry.path();
        let Some(ns) = cpu_ns(&path.join("schedstat")) else {
            continue;
        };
        let name = if tid == pid {
            "main".to_string()
        } else {
            std::fs::read_to_string(path.join("comm")).map(|s| s.trim().to_string()).unwrap_or_default()
        };
        threads.insert(tid, (name, ns));
    }
    ThreadTimes(threads)
}

/// A thread's nanoseconds on a CPU from its `schedstat` file (the first field).
fn cpu_ns(schedstat: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(schedstat).ok()?.split_whitespace().next()?.parse().ok()
}

/// The busiest threads between `before` and `after`, as `(name, CPU ms per run)` for `runs`
/// runs, busiest first: at most `top` of them, each at least 1% of the busiest one. A thread that
/// started in between counts from zero; same-named threads stay apart (`name#tid` when a name
/// repeats among those listed).
pub fn busiest(before: &ThreadTimes, after: &ThreadTimes, runs: usize, top: usize) -> Vec<(String, f64)> {
    let mut used: Vec<(u32, &str, u64)> = after
        .0
        .iter()
        .map(|(tid, (name, ns))| {
            let start = before.0.get(tid).map_or(0, |(_, b)| *b);
            (*tid, name.as_str(), ns.saturating_sub(start))
        })
        .filter(|(_, _, ns)| *ns > 0)
        .collect();
    used.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    let Some(&(_, _, max)) = used.first() else {
        return Vec::new();
    };
    used.retain(|(_, _, ns)| *ns * 100 >= max);
    used.truncate(top);
    let runs = runs.max(1) as f64;
    used.iter()
        .map(|&(tid, name, ns)| {
            let repeated = used.iter().filter(|(_, n, _)| *n == name).count() > 1;
            let label = if repeated { format!("{name}#{tid}") } else { name.to_string() };
            (label, ns as f64 / 1e6 / runs)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_shows_with_its_name_and_time() {
        // The spinner spins for 60 ms of its own CPU time (not of wall time: other tests share
        // the cores), then waits until the second snapshot has read it.
        let own_cpu_ns = || cpu_ns(std::path::Path::new("/proc/thread-self/schedstat"));
        let before = snapshot();
        let (spun, read) = (std::sync::mpsc::channel::<()>(), std::sync::mpsc::channel::<()>());
        let (spun_tx, read_rx) = (spun.0, read.1);
        let worker = std::thread::Builder::new()
            .name("reel-spin".into())
            .spawn(move || {
                let (t0, c0) = (std::time::Instant::now(), own_cpu_ns());
                let mut x = 0u64;
                loop {
                    for _ in 0..100_000 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    let cpu = match (c0, own_cpu_ns()) {
                        (Some(a), Some(b)) => b - a,
                        _ => t0.elapsed().as_nanos() as u64,
                    };
                    // (at most 10 s of wall time, however busy the machine)
                    if cpu >= 60_000_000 || t0.elapsed().as_secs() >= 10 {
                        break;
                    }
                }
                std::hint::black_box(x);
                spun_tx.send(()).unwrap();
                let _ = read_rx.recv();
            })
            .unwrap();
        spun.1.recv().unwrap();
        let after = snapshot();
        read.0.send(()).unwrap();
        worker.join().unwrap();
        if after.0.is_empty() {
            eprintln!("no /proc/self/task here: thread times are not measured");
            return;
        }
        let busy = busiest(&before, &after, 2, 4);
        let spin = busy.iter().find(|(n, _)| n == "reel-spin").expect("the spinning thread is listed");
        // 60 ms of spinning over 2 runs: 30 ms a run, and a little more (its last round, its reads)
        assert!(spin.1 >= 30.0 && spin.1 < 45.0, "{busy:?}");
        assert!(busy.windows(2).all(|w| w[0].1 >= w[1].1), "busiest first: {busy:?}");
    }

    #[test]
    fn repeated_names_are_told_apart_and_idle_threads_dropped() {
        let t = |v: &[(u32, &str, u64)]| ThreadTimes(v.iter().map(|&(tid, n, ns)| (tid, (n.to_string(), ns))).collect());
        let before = t(&[(1, "main", 1_000_000), (2, "w", 0), (3, "w", 0), (4, "idle", 5)]);
        let after = t(&[(1, "main", 11_000_000), (2, "w", 4_000_000), (3, "w", 2_000_000), (4, "idle", 5), (5, "new", 3_000_000)]);
        let busy = busiest(&before, &after, 2, 3);
        assert_eq!(busy, vec![("main".to_string(), 5.0), ("w".to_string(), 2.0), ("new".to_string(), 1.5)]);
        let all = busiest(&before, &after, 2, 5);
        assert_eq!(all.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["main", "w#2", "new", "w#3"]);
    }
}
