//! The process allocator: the system allocator, except that very large requests are mapped
//! lazily without reserving swap/commit (`MAP_NORESERVE`).
//!
//! Why: kafka-protocol 0.18 decodes every array with `Vec::with_capacity(count)`, `count`
//! taken from the wire before a single element is read. A 20-byte request announcing 2^31
//! elements asks for ~150 GB; the system allocator refuses, and Rust aborts the process on an
//! allocation failure (it is not a catchable panic), so one bad frame would take the broker
//! and every client down. Mapped with `MAP_NORESERVE`, such a region costs only address
//! space: the decoder runs out of frame bytes on the first few elements, returns an error (the
//! connection is closed with a warning) and the untouched mapping is unmapped. Requests below
//! [`LAZY_MAPPING_THRESHOLD_BYTES`] (everything the broker allocates legitimately: frames are
//! capped by `socket.request.max.bytes`) go to the system allocator unchanged.
//!
//! Process-wide, used from every core (stateless; `Sync` trivially). Install it in a binary
//! with `#[global_allocator] static A: freshet_net::alloc::BrokerAllocator = BrokerAllocator;`.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of at least this many bytes are lazily mapped instead of reserved.
pub const LAZY_MAPPING_THRESHOLD_BYTES: usize = 1 << 30;
const PAGE_BYTES: usize = 4096;

/// See the module documentation.
pub struct BrokerAllocator;

fn is_lazy(layout: &Layout) -> bool {
    layout.size() >= LAZY_MAPPING_THRESHOLD_BYTES && layout.align() <= PAGE_BYTES
}

unsafe fn map_lazy(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping has no preconditions; failure is MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: every pointer handed out comes either from `System` (small layouts) or from `mmap`
// (lazy layouts); `dealloc`/`realloc` tell the two apart by the same `is_lazy(layout)` test
// the allocation used, because Rust passes back the layout the block was allocated with.
unsafe impl GlobalAlloc for BrokerAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_lazy(&layout) {
            unsafe { map_lazy(layout.size()) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_lazy(&layout) {
            // Fresh anonymous pages read as zero.
            unsafe { map_lazy(layout.size()) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_lazy(&layout) {
            // SAFETY: `ptr` came from `map_lazy(layout.size())`.
            let rc = unsafe { libc::munmap(ptr.cast(), layout.size()) };
            assert!(rc == 0, "munmap of a {}-byte block failed", layout.size());
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_lazy(&layout) && !is_lazy(&new_layout) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            let keep = layout.size().min(new_size);
            // SAFETY: both blocks are valid for `keep` bytes and distinct.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, keep);
                self.dealloc(ptr, layout);
            }
        }
        new_ptr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoder's worst case: a huge capacity reserved and never touched must not fail.
    #[test]
    fn a_huge_untouched_allocation_is_mapped_lazily_and_released() {
        let a = BrokerAllocator;
        let layout = Layout::from_size_align(150 << 30, 8).unwrap();
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null(), "a 150 GiB lazy mapping should succeed");
        unsafe {
            p.write(7);
            assert_eq!(p.read(), 7);
            a.dealloc(p, layout);
        }
    }

    #[test]
    fn small_allocations_and_growth_across_the_threshold_keep_their_bytes() {
        let a = BrokerAllocator;
        let small = Layout::from_size_align(64, 8).unwrap();
        let p = unsafe { a.alloc(small) };
        assert!(!p.is_null());
        unsafe {
            p.write_bytes(0xAB, 64);
            let q = a.realloc(p, small, LAZY_MAPPING_THRESHOLD_BYTES);
            assert!(!q.is_null());
            assert_eq!(*q.add(63), 0xAB);
            let big = Layout::from_size_align(LAZY_MAPPING_THRESHOLD_BYTES, 8).unwrap();
            let r = a.realloc(q, big, 128);
            assert!(!r.is_null());
            assert_eq!(*r.add(0), 0xAB);
            a.dealloc(r, Layout::from_size_align(128, 8).unwrap());
        }
    }
}
