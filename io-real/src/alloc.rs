//! The binary's global allocator: mimalloc for small blocks, the system's (glibc) for large ones.
//!
//! mimalloc is the faster of the two for the handful of small buffers every put allocates on
//! each node it crosses (glibc's malloc was ~5 % of the cluster's CPU in a profile of the
//! 64-client put benchmark, BENCHMARKS.md). But it keeps blocks above 16 KiB in 512 KiB pages,
//! and a page goes back to the OS only once every block in it is free: under overwrites of
//! random 64 KiB values, each node held 60-70 MiB more at 100 MiB of state than with glibc,
//! which reuses and trims freed space of any size (BENCHMARKS.md, "Cost curves"). Values,
//! frames and file buffers are the large blocks; each goes to the allocator that frees it well.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of at least this many bytes come from the system allocator: mimalloc's small pages
/// hold blocks up to 16 KiB, its medium pages (where fragmentation pinned memory) the rest.
pub const LARGE_BLOCK_BYTES: usize = 16 << 10;

pub struct SplitAlloc;

fn large(size: usize) -> bool {
    size >= LARGE_BLOCK_BYTES
}

// SAFETY: each block is freed (or resized) by the allocator that made it, chosen by its size;
// Rust hands `dealloc` and `realloc` the layout the block was allocated (or last resized) with,
// so the choice is the same both times. A resize across the threshold moves the block.
unsafe impl GlobalAlloc for SplitAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if large(layout.size()) {
            unsafe { System.alloc(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if large(layout.size()) {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if large(layout.size()) {
            unsafe { System.dealloc(ptr, layout) }
        } else {
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (large(layout.size()), large(new_size)) {
            (true, true) => unsafe { System.realloc(ptr, layout, new_size) },
            (false, false) => unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: the caller guarantees `new_size`, rounded up to `align`, fits an isize.
                let new_layout =
                    unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    let n = layout.size().min(new_size);
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, new, n);
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_move_between_the_allocators_when_resized_across_the_threshold() {
        let a = SplitAlloc;
        for (from, to) in [(10, 100_000), (100_000, 10), (20_000, 40_000), (64, 128)] {
            let layout = Layout::from_size_align(from, 8).unwrap();
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                for i in 0..from {
                    *p.add(i) = i as u8;
                }
                let q = a.realloc(p, layout, to);
                assert!(!q.is_null());
                for i in 0..from.min(to) {
                    assert_eq!(*q.add(i), i as u8, "{from} -> {to}: byte {i}");
                }
                a.dealloc(q, Layout::from_size_align(to, 8).unwrap());
            }
        }
    }
}
