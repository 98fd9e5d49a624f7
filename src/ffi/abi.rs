//! The ABI policy's moving parts: the version macros, `pl_abi_version`, the sized
//! `PlConfig` and the sized `PlStats` (docs/c-api.md, "ABI policy").
//!
//! - The shared library's SONAME is `libwspipe.so.<PL_ABI_VERSION>` (build.rs). The
//!   number changes when a symbol goes away or changes meaning, a struct other than
//!   `PlConfig` changes layout, or an enum value is renumbered.
//! - `PlConfig` only grows, at the end. Its first field, `struct_size`, is the caller's
//!   `sizeof(PlConfig)` (the header's `pl_config_init` macro passes it); the library
//!   reads that many bytes and keeps its defaults for the fields after them, so a
//!   program built against an older header runs on a newer library unchanged. A size
//!   larger than the library's own (a newer header, an older library) is refused
//!   with `PL_ERR_CONFIG` instead of ignoring options the caller asked for.
//! - `PlStats` only grows, at the end, too: `pl_get_stats(p, out)` in the header is a
//!   macro passing `sizeof *out` to `pl_get_stats_size`, which writes only that many
//!   bytes. The plain symbols `pl_get_stats` / `pl_feed_get_stats` (what a program
//!   built before the macro calls) write the frozen 0.1 layout only.

use std::mem::{offset_of, size_of};

use super::api::{PlConfig, PlStats};
use super::boundary::boundary;
use super::PlResult;
use crate::error::{Error, Result};
use crate::ffi_nonnull;

/// Major version of the library (`pl_version()` has the full string).
pub const WSPIPE_VERSION_MAJOR: u32 = 0;
/// Minor version of the library.
pub const WSPIPE_VERSION_MINOR: u32 = 1;
/// Patch version of the library.
pub const WSPIPE_VERSION_PATCH: u32 = 0;
/// The ABI this header describes: the SONAME is `libwspipe.so.<PL_ABI_VERSION>`.
/// Compare with `pl_abi_version()` at run time.
pub const PL_ABI_VERSION: u32 = 0;

/// The smallest `PlConfig` this ABI accepts: the 0.1 layout, up to `on_message_ex`.
/// Frozen: fields added later lie beyond it and get their defaults when a caller's
/// `struct_size` ends before them.
pub(crate) const PL_CONFIG_MIN_SIZE: usize = offset_of!(PlConfig, on_message_ex) + size_of::<usize>();

/// The smallest `PlStats` this ABI fills: the 0.1 layout, up to `feed_held_now`.
/// Frozen: counters added later lie beyond it; `pl_get_stats_size` with a smaller
/// caller's size writes only the counters that caller knows.
pub(crate) const PL_STATS_MIN_SIZE: usize = offset_of!(PlStats, deflate);

/// Write the first `size` bytes of `values` (every counter, in `PlStats` order) to
/// `out`: the caller's `sizeof(PlStats)`, from the 0.1 layout to this library's.
///
/// # Safety
/// `out` points to `size` writable bytes.
pub(crate) unsafe fn write_stats(values: &[u64], out: *mut PlStats, size: usize) -> Result<()> {
    if size < PL_STATS_MIN_SIZE || size > size_of::<PlStats>() || size % 8 != 0 {
        return Err(Error::Config(format!(
            "PlStats size {size}: this library (ABI {PL_ABI_VERSION}, version {}) fills {PL_STATS_MIN_SIZE} to {} bytes              (a multiple of 8); call pl_get_stats(p, &stats), the header's macro passing sizeof(stats)",
            env!("CARGO_PKG_VERSION"),
            size_of::<PlStats>()
        )));
    }
    debug_assert!(values.len() * 8 >= size);
    // SAFETY: the caller promises `size` writable bytes; `values` has at least size / 8.
    unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), out as *mut u64, size / 8) };
    Ok(())
}

/// The ABI of the loaded library (`PL_ABI_VERSION` it was built with).
#[no_mangle]
pub extern "C" fn pl_abi_version() -> u32 {
    PL_ABI_VERSION
}

/// Fill the first `size` bytes of `cfg` with the defaults and set `cfg->struct_size`
/// to `size` (the caller's `sizeof(PlConfig)`; the header's `pl_config_init(cfg)`
/// macro passes it). `size` below the 0.1 layout or above this library's `PlConfig`
/// is `PL_ERR_CONFIG`.
///
/// # Safety
/// `cfg` must be NULL or point to `size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn pl_config_init_size(cfg: *mut PlConfig, size: usize) -> PlResult {
    boundary(|| {
        ffi_nonnull!(cfg);
        check_size(size)?;
        let mut full = std::mem::MaybeUninit::<PlConfig>::uninit();
        // SAFETY: a full-size local; pl_config_init writes all of it.
        let r = unsafe { super::api::pl_config_init(full.as_mut_ptr()) };
        if r != PlResult::PL_OK {
            return Err(Error::Config("pl_config_init failed".into()));
        }
        // SAFETY: initialised by pl_config_init above.
        let mut full = unsafe { full.assume_init() };
        full.struct_size = size;
        // SAFETY: the caller promises `size` writable bytes at cfg; size <= sizeof.
        unsafe { std::ptr::copy_nonoverlapping(&full as *const PlConfig as *const u8, cfg as *mut u8, size) };
        Ok(())
    })
}

fn check_size(size: usize) -> Result<()> {
    if size < PL_CONFIG_MIN_SIZE || size > size_of::<PlConfig>() {
        return Err(Error::Config(format!(
            "PlConfig.struct_size is {size}: this library (ABI {PL_ABI_VERSION}, version {}) takes {PL_CONFIG_MIN_SIZE} to {} \
             bytes; fill the config with pl_config_init (a larger size means a newer header than this library)",
            env!("CARGO_PKG_VERSION"),
            size_of::<PlConfig>()
        )));
    }
    Ok(())
}

/// The caller's config as this library's full `PlConfig`: its first `struct_size`
/// bytes, defaults after them.
///
/// # Safety
/// `cfg` points to at least `PL_CONFIG_MIN_SIZE` readable bytes, and to
/// `cfg->struct_size` of them.
pub(crate) unsafe fn read_config(cfg: *const PlConfig) -> Result<PlConfig> {
    // SAFETY: struct_size is the first field; the caller has at least that much.
    let size = unsafe { std::ptr::read(cfg as *const usize) };
    check_size(size)?;
    let mut full = std::mem::MaybeUninit::<PlConfig>::uninit();
    // SAFETY: as in pl_config_init_size; then the caller's bytes over the defaults.
    unsafe {
        if super::api::pl_config_init(full.as_mut_ptr()) != PlResult::PL_OK {
            return Err(Error::Config("pl_config_init failed".into()));
        }
        std::ptr::copy_nonoverlapping(cfg as *const u8, full.as_mut_ptr() as *mut u8, size);
        Ok(full.assume_init())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_macros_match_cargo() {
        assert_eq!(WSPIPE_VERSION_MAJOR.to_string(), env!("CARGO_PKG_VERSION_MAJOR"));
        assert_eq!(WSPIPE_VERSION_MINOR.to_string(), env!("CARGO_PKG_VERSION_MINOR"));
        assert_eq!(WSPIPE_VERSION_PATCH.to_string(), env!("CARGO_PKG_VERSION_PATCH"));
    }

    #[test]
    fn sized_init_and_read() {
        let mut c = std::mem::MaybeUninit::<PlConfig>::zeroed();
        unsafe {
            assert_eq!(pl_config_init_size(c.as_mut_ptr(), 8), PlResult::PL_ERR_CONFIG);
            assert_eq!(pl_config_init_size(c.as_mut_ptr(), size_of::<PlConfig>() + 8), PlResult::PL_ERR_CONFIG);
            assert_eq!(pl_config_init_size(c.as_mut_ptr(), PL_CONFIG_MIN_SIZE), PlResult::PL_OK);
            let r = read_config(c.as_ptr()).unwrap();
            assert_eq!(r.struct_size, PL_CONFIG_MIN_SIZE);
            assert_eq!(r.timeout_ms, 10_000);
        }
    }
}
