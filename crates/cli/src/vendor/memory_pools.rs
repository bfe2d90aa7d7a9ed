//! The GPU memory pools `--cuda-memory` picks (pure planning, tested on the CPU; `cuda.rs` turns
//! a plan into cubecl's `MemoryConfiguration` through reel's cubecl-cuda patch).
//!
//! cubecl's default (`sliced`) serves every size from sliced pages whose largest is a quarter of
//! the card (20 GB on an 80 GB H100): a tensor of a few hundred MB reserves a 5 GB page, and pages
//! are only returned when wholly free. The sixth session measured reel's pool at 13–14 GiB where
//! diffusers allocates 5.5 GiB (docs/performance.md). `split` follows PyTorch's caching allocator
//! (`c10/cuda/CUDACachingAllocator.cpp`): allocations up to 1 MiB are sliced from 2 MiB pages, up
//! to 10 MiB from 20 MiB pages, and larger ones get a page of their own, from size classes 1.25×
//! apart (at most a quarter over the request), freed when unused for a while or on an explicit
//! cleanup. `exclusive` is cubecl's own every-allocation-its-own-page preset (24 size classes
//! from 32 KiB to the page limit, about 1.8× apart).

const MIB: u64 = 1024 * 1024;

/// One pool of a plan, in cubecl's terms (`PoolType` + `dealloc_period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Slices of at most `max_slice` bytes cut from pages of `page` bytes.
    Sliced { page: u64, max_slice: u64 },
    /// One page per allocation of at most `max_alloc` bytes, freed after `dealloc_period`
    /// allocations without use (`None`: only on an explicit cleanup).
    Exclusive { max_alloc: u64, dealloc_period: Option<u64> },
}

/// cubecl's exclusive pages are freed after `5000 · round(1 + size / 1 GiB)` allocations without
/// use (its `ExclusivePages` preset); `split` keeps that rule.
fn dealloc_period(size: u64) -> u64 {
    5000 * (1.0 + size as f64 / (1024.0 * MIB as f64)).round() as u64
}

/// The `split` plan for a device whose largest page is `max_page` bytes and whose allocations
/// are aligned to `alignment` bytes. cubecl offers an allocation to the pools in order and the
/// first that accepts it serves it, so the plan lists them from small to large.
pub fn split(max_page: u64, alignment: u64) -> Vec<Pool> {
    let align = |v: u64| v.next_multiple_of(alignment);
    let mut pools = vec![
        // As cubecl's own plans: a pool for zero-sized allocations, which cannot be slices.
        Pool::Exclusive { max_alloc: 0, dealloc_period: None },
        Pool::Sliced { page: align(2 * MIB), max_slice: align(MIB) },
        Pool::Sliced { page: align(20 * MIB), max_slice: align(10 * MIB) },
    ];
    // Size classes 1.25× apart above 10 MiB, up to the page limit. A class's pool gets requests
    // larger than the class below it, so a page is at most 1.25× its request (an exclusive pool
    // allocates the larger of the request and its running mean request, which starts at half the
    // class and stays inside it).
    let mut class = align(10 * MIB);
    while class < max_page {
        class = align(((class as f64) * 1.25) as u64).min(max_page.next_multiple_of(alignment));
        pools.push(Pool::Exclusive { max_alloc: class, dealloc_period: Some(dealloc_period(class)) });
    }
    pools
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_serves_every_size_up_to_the_page_limit_with_little_waste() {
        let (max_page, alignment) = (20 * 1024 * MIB, 512);
        let pools = split(max_page, alignment);
        // The first pool that accepts a size serves it (cubecl's order).
        let serve = |size: u64| {
            pools.iter().find(|p| match p {
                Pool::Sliced { max_slice, .. } => size <= *max_slice,
                Pool::Exclusive { max_alloc, .. } => size <= *max_alloc,
            })
        };
        let mut below = 0u64;
        for pool in &pools {
            match *pool {
                Pool::Sliced { page, max_slice } => {
                    assert!(max_slice * 2 <= page && page <= 20 * MIB, "{pool:?}");
                    assert_eq!((page % alignment, max_slice % alignment), (0, 0), "{pool:?}");
                }
                Pool::Exclusive { max_alloc, dealloc_period } => {
                    assert_eq!(max_alloc % alignment, 0, "{pool:?}");
                    if max_alloc > 0 {
                        assert!(max_alloc > below, "classes grow: {pool:?} after {below}");
                        // The worst request of a class is just above the class below it.
                        assert!(max_alloc as f64 <= below as f64 * 1.25 + alignment as f64, "{pool:?} after {below}");
                        assert!(dealloc_period.is_some());
                    }
                }
            }
            below = match *pool {
                Pool::Sliced { max_slice, .. } => max_slice,
                Pool::Exclusive { max_alloc, .. } => max_alloc,
            };
        }
        assert!(below >= max_page, "the largest class {below} reaches the page limit {max_page}");
        for size in [1, 511, 512, MIB, MIB + 1, 10 * MIB, 10 * MIB + 1, 300 * MIB, 5 * 1024 * MIB, max_page] {
            assert!(serve(size).is_some(), "{size} bytes has no pool");
        }
        assert!(serve(max_page + 1).is_none(), "past the page limit, as cubecl's own plans");
        // A 400 MB tensor (a 64-frame attention score block) reserves at most 500 MB, not the
        // 5 GB page cubecl's default slices it from.
        match serve(400_000_000) {
            Some(Pool::Exclusive { max_alloc, .. }) => assert!(*max_alloc <= 500_000_000, "{max_alloc}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dealloc_period_follows_cubecl_preset() {
        assert_eq!(dealloc_period(10 * MIB), 5000);
        assert_eq!(dealloc_period(1024 * MIB), 10_000);
        assert_eq!(dealloc_period(20 * 1024 * MIB), 105_000);
    }
}
