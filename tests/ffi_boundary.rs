//! The FFI panic boundary and last-error plumbing.

use pipeline::ffi::{boundary, pl_last_error, PlResult};
use pipeline::Error;

fn last_error() -> String {
    let mut buf = vec![0u8; 256];
    // SAFETY: buf has 256 writable bytes.
    let n = unsafe { pl_last_error(buf.as_mut_ptr() as *mut _, buf.len()) };
    String::from_utf8_lossy(&buf[..n.min(255)]).into_owned()
}

#[test]
fn errors_map_to_codes_with_messages() {
    assert_eq!(boundary(|| Ok(())), PlResult::PL_OK);
    let code = boundary(|| Err(Error::Tls("certificate verify failed: certificate has expired".into())));
    assert_eq!(code, PlResult::PL_ERR_TLS);
    assert!(last_error().contains("certificate has expired"));
    let code = boundary(|| {
        let p: *const u8 = std::ptr::null();
        pipeline::ffi_nonnull!(p);
        Ok(())
    });
    assert_eq!(code, PlResult::PL_ERR_NULL_ARG);
    assert_eq!(last_error(), "argument `p` is NULL");
}

#[test]
fn panics_are_caught_and_reported() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let code = boundary(|| panic!("boom {}", 42));
    std::panic::set_hook(prev);
    assert_eq!(code, PlResult::PL_ERR_PANIC);
    assert!(last_error().contains("panic): boom 42"));
}

#[test]
fn truncation_returns_the_full_length() {
    boundary(|| Err(Error::Config("0123456789".into())));
    let mut small = [0x7fu8; 5];
    // SAFETY: 5 writable bytes.
    let n = unsafe { pl_last_error(small.as_mut_ptr() as *mut _, small.len()) };
    assert_eq!(n, "configuration: 0123456789".len());
    assert_eq!(&small, b"conf\0");
}
