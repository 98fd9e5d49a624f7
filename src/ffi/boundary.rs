//! The panic boundary and the per-thread last-error message.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::PlResult;
use crate::error::Result;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Record `msg` as this thread's last error.
pub fn set_last_error(msg: impl Into<String>) {
    let msg = msg.into();
    LAST_ERROR.with(|e| *e.borrow_mut() = msg);
}

pub(crate) fn with_last_error<R>(f: impl FnOnce(&str) -> R) -> R {
    LAST_ERROR.with(|e| f(&e.borrow()))
}

/// Run `f` for an exported function: errors become result codes with their message
/// kept for `pl_last_error`, panics become `PL_ERR_PANIC`. `AssertUnwindSafe` is sound
/// here because a panicking call's handle is reported broken to C and never trusted
/// again by the caller's contract (see the header's notes on `PL_ERR_PANIC`).
pub fn boundary(f: impl FnOnce() -> Result<()>) -> PlResult {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => PlResult::PL_OK,
        Ok(Err(e)) => {
            let code = PlResult::from(&e);
            set_last_error(e.to_string());
            code
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(format!("internal error (panic): {what}"));
            PlResult::PL_ERR_PANIC
        }
    }
}

/// Null-check a pointer argument inside a boundary.
#[macro_export]
#[doc(hidden)]
macro_rules! ffi_nonnull {
    ($($p:ident),+) => {
        $( if $p.is_null() {
            return Err($crate::error::Error::NullArg(stringify!($p)));
        } )+
    };
}
