//! The device-thread channel of cubecl 0.10 (`cubecl_common::device_handle::DeviceHandle`), as
//! patched in `third_party/cubecl-common`: every operation burn-cuda runs is queued to a device
//! thread through it, and reel's vendor operations wait for that thread (`exclusive`). Upstream,
//! a device thread idle past its spin and yield budgets slept in 150 µs steps, so a blocking call
//! reaching it then waited for the sleep to end (130–180 µs on the 2-core VM, against 0.6 µs when
//! it is awake); patched, it parks and the client's flush unparks it. This checks that no task is
//! lost or reordered across those idle periods, with one and with several client threads; the
//! wake-up latency is printed (`--nocapture`), not asserted (docs/performance.md has the numbers).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cubecl_common::device::{DeviceId, DeviceService, ServerUtilitiesHandle};
use cubecl_common::device_handle::DeviceHandle;

/// A stand-in device service: a log of the tasks it ran, in order.
struct Log {
    seen: Vec<(usize, usize)>,
}

impl DeviceService for Log {
    fn init(_: DeviceId) -> Self {
        Log { seen: Vec::new() }
    }

    fn utilities(&self) -> ServerUtilitiesHandle {
        Arc::new(())
    }
}

fn handle(index: u16) -> DeviceHandle<Log> {
    // A type id of our own, so no cubecl runtime's device thread is shared.
    DeviceHandle::<Log>::new(DeviceId { type_id: 0x7e01, index_id: index })
}

fn median_us(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn tasks_after_idle_periods_all_run_in_order() {
    let h = handle(0);
    let mut waits = Vec::new();
    let mut expected = Vec::new();
    for round in 0..40 {
        // Idle well past the spin and yield budgets, so the device thread parks (or, upstream,
        // sleeps) before the next call.
        std::thread::sleep(Duration::from_millis(2));
        for i in 0..3 {
            h.submit(move |s: &mut Log| s.seen.push((round, i)));
            expected.push((round, i));
        }
        let t0 = Instant::now();
        let n = h
            .submit_blocking(move |s: &mut Log| {
                s.seen.push((round, 3));
                s.seen.len()
            })
            .expect("the device thread answers");
        waits.push(t0.elapsed().as_secs_f64() * 1e6);
        expected.push((round, 3));
        assert_eq!(n, expected.len(), "round {round}: every queued task ran before the blocking one");
    }
    let seen = h.submit_blocking(|s: &mut Log| s.seen.clone()).unwrap();
    assert_eq!(seen, expected);
    eprintln!("blocking call after 2 ms idle: median {:.1} µs over {} rounds", median_us(waits), expected.len() / 4);
}

#[test]
fn several_clients_lose_no_task() {
    let h = handle(1);
    let clients = 4;
    let rounds = 25;
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let h = h.clone();
            std::thread::spawn(move || {
                for r in 0..rounds {
                    // staggered idle gaps: the device thread parks between some calls, not others
                    std::thread::sleep(Duration::from_micros(((c * 7 + r * 13) % 5) as u64 * 400));
                    h.submit(move |s: &mut Log| s.seen.push((c, 2 * r)));
                    h.submit_blocking(move |s: &mut Log| s.seen.push((c, 2 * r + 1))).expect("the device thread answers");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let seen = h.submit_blocking(|s: &mut Log| s.seen.clone()).unwrap();
    assert_eq!(seen.len(), clients * rounds * 2);
    for c in 0..clients {
        let mine: Vec<usize> = seen.iter().filter(|(k, _)| *k == c).map(|(_, i)| *i).collect();
        assert_eq!(mine, (0..2 * rounds).collect::<Vec<_>>(), "client {c}'s tasks, in its order");
    }
}
