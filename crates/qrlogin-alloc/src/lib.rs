//! The `qrlogin` binary's global allocator: mimalloc, asked the way C asks
//! `malloc`.
//!
//! The `mimalloc` crate passes every Rust allocation to
//! `mi_malloc_aligned`, even the common case whose alignment any malloc
//! block already has. mimalloc's aligned path then takes a slower route
//! whenever the size's page has no free block at hand, and for sizes that
//! are not powers of two it over-allocates into a larger size class: in a
//! `perf` profile of 1,000 confirms a second, 12 % of the server's samples
//! were in mimalloc, a quarter of them on that route (the service's
//! docs/performance.md).
//! mimalloc aligns every block of 16 bytes or more to 16 and every smaller
//! one to 8 (`MI_MAX_ALIGN_SIZE`, its size classes are whole double
//! words), so such layouts go to `mi_malloc` and the rest keep the aligned
//! calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

// mimalloc's option calls, which the crate only declares with its
// `extended` feature (and a dependency more); `mi_option_t` is a C enum.
// `mi_option_get` only for the tests, which read back what was set.
unsafe extern "C" {
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// mimalloc's guaranteed alignment of any block of at least this size.
const MALLOC_ALIGN: usize = 16;
/// ... and of any block at all.
const MIN_BLOCK_ALIGN: usize = 8;

pub struct MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its `mi_option_t` value, the same in
/// v2 and v3; the crate does not export the option constants).
/// `tests::the_purge_delay_option_is_the_one_its_variable_sets` holds the
/// number to the option `MIMALLOC_PURGE_DELAY` sets.
const PURGE_DELAY_OPTION: i32 = 15;

/// How long a page of memory stays unused before it is given back to the
/// system: 10 s rather than mimalloc's 1 s.
///
/// Why: a page given back (`madvise(MADV_DONTNEED)`) and then needed again
/// costs a page fault, and on a virtual machine whose memory the host
/// reclaims that fault can cost a millisecond, all of it outside the
/// guest's profilers. With 1 s, a service confirming 1,000 logins a second
/// out of 10,000 waiting took 0–94 such faults in 6 s, and the runs with
/// the most had a p99 of 0.89–0.95 ms against 0.36–0.40 ms; with 10 s it
/// took 0–1 in 27 runs (docs/performance.md, "The steady tail and
/// mimalloc's purge", which also says what this does not fix). Memory a
/// burst left behind still goes back, 10 s after it was last used.
pub const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Sets [`PURGE_DELAY_MS`] unless the operator chose a delay of their own
/// with `MIMALLOC_PURGE_DELAY`. Call it first in `main`, before any other
/// thread starts: mimalloc's option setters are not thread-safe.
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain FFI call with a valid option number; called
        // before other threads exist (see above).
        unsafe { mi_option_set(PURGE_DELAY_OPTION, PURGE_DELAY_MS) }
    }
}

/// Whether a plain `mi_malloc(size)` block is aligned enough for `layout`.
fn malloc_fits(align: usize, size: usize) -> bool {
    align <= MIN_BLOCK_ALIGN || (align <= MALLOC_ALIGN && size >= MALLOC_ALIGN)
}

// SAFETY: every pointer handed out comes from mimalloc and is freed or
// resized by mimalloc; `malloc_fits` only picks the unaligned calls where
// mimalloc's own alignment already meets the layout's (tested below).
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls; a null return is passed on as failure.
        unsafe {
            if malloc_fits(layout.align(), layout.size()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if malloc_fits(layout.align(), layout.size()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from mimalloc; the new block is checked against
        // the same rule as a fresh one of `new_size`.
        unsafe {
            if malloc_fits(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs this test binary again with `MIMALLOC_PURGE_DELAY` as given
    /// (or unset) and returns the purge delay it reports after
    /// [`configure`]: a process of its own, because mimalloc reads its
    /// variables once.
    fn delay_in_a_child(variable: Option<&str>) -> std::ffi::c_long {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "tests::child_reports_its_purge_delay",
                "--nocapture",
            ])
            .env("QRLOGIN_ALLOC_CHILD", "1")
            .env_remove("MIMALLOC_PURGE_DELAY");
        if let Some(v) = variable {
            child.env("MIMALLOC_PURGE_DELAY", v);
        }
        let out = String::from_utf8(child.output().unwrap().stdout).unwrap();
        out.lines()
            .find_map(|l| l.strip_prefix("purge_delay_ms="))
            .unwrap_or_else(|| panic!("no delay reported in {out:?}"))
            .parse()
            .unwrap()
    }

    /// Not a test of its own: what [`delay_in_a_child`] runs.
    #[test]
    fn child_reports_its_purge_delay() {
        if std::env::var_os("QRLOGIN_ALLOC_CHILD").is_some() {
            configure();
            // SAFETY: a plain FFI call with a valid option number.
            let delay = unsafe { mi_option_get(PURGE_DELAY_OPTION) };
            println!("purge_delay_ms={delay}");
        }
    }

    #[test]
    fn the_purge_delay_option_is_the_one_its_variable_sets() {
        // A number mimalloc would never default to: if the option number
        // named another option, the variable would not show up in it.
        assert_eq!(delay_in_a_child(Some("4321")), 4321);
    }

    #[test]
    fn configure_sets_ten_seconds_unless_the_operator_chose() {
        assert_eq!(delay_in_a_child(None), PURGE_DELAY_MS);
        assert_eq!(delay_in_a_child(Some("250")), 250);
    }

    /// Every size up to 4 KiB at every alignment up to 4 KiB, allocated,
    /// zeroed, grown and shrunk while other blocks are live, comes back
    /// aligned, zeroed where asked, and with its bytes kept across a
    /// resize.
    #[test]
    fn every_block_meets_its_layouts_alignment() {
        let a = MiMalloc;
        let mut live = Vec::new();
        for align in (0..=12).map(|s| 1usize << s) {
            for size in (1..=4096).step_by(7).chain([8, 16, 24, 48, 4096]) {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; every block is freed below with
                // the layout it has at that moment.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "alloc {size} at {align}");
                    p.write_bytes(0xA5, size);
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size} at {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                    let grown = a.realloc(p, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "grown {size} at {align}");
                    assert!(
                        std::slice::from_raw_parts(grown, size)
                            .iter()
                            .all(|b| *b == 0xA5)
                    );
                    let big = Layout::from_size_align(size * 3, align).unwrap();
                    let shrunk = a.realloc(grown, big, size.div_ceil(2));
                    assert_eq!(shrunk as usize % align, 0, "shrunk {size} at {align}");
                    live.push((
                        shrunk,
                        Layout::from_size_align(size.div_ceil(2), align).unwrap(),
                    ));
                    a.dealloc(z, layout);
                }
            }
        }
        for (p, layout) in live {
            // SAFETY: allocated above with this layout.
            unsafe { a.dealloc(p, layout) }
        }
    }

    /// Blocks under 16 bytes are only 8-aligned in mimalloc: asked for 16,
    /// each of many live ones must still be 16-aligned.
    #[test]
    fn small_blocks_asked_for_sixteen_get_sixteen() {
        let a = MiMalloc;
        for size in 1..16 {
            let layout = Layout::from_size_align(size, 16).unwrap();
            // SAFETY: non-zero sizes, freed with their layout.
            let blocks: Vec<_> = (0..64).map(|_| unsafe { a.alloc(layout) }).collect();
            for p in &blocks {
                assert_eq!(*p as usize % 16, 0, "{size} bytes at 16");
            }
            for p in blocks {
                // SAFETY: allocated above with this layout.
                unsafe { a.dealloc(p, layout) }
            }
        }
    }
}
