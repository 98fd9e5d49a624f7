//! Compile-time UMEM/frame/MTU constants (from `build.rs`) with static assertions, and
//! the runtime [`Config`].

include!(concat!(env!("OUT_DIR"), "/build_config.rs"));

use static_assertions::const_assert;

/// Frames per pool, in UMEM order: RX, ACK, PONG, MSG.
pub const RX_FRAMES: usize = TOTAL_UMEM_FRAMES / 8 * UMEM_SPLIT_EIGHTHS[0];
pub const ACK_FRAMES: usize = TOTAL_UMEM_FRAMES / 8 * UMEM_SPLIT_EIGHTHS[1];
pub const PONG_FRAMES: usize = TOTAL_UMEM_FRAMES / 8 * UMEM_SPLIT_EIGHTHS[2];
pub const MSG_FRAMES: usize = TOTAL_UMEM_FRAMES / 8 * UMEM_SPLIT_EIGHTHS[3];

/// First frame index of each pool; a completed TX address maps back to its pool by range.
pub const RX_BASE: usize = 0;
pub const ACK_BASE: usize = RX_BASE + RX_FRAMES;
pub const PONG_BASE: usize = ACK_BASE + ACK_FRAMES;
pub const MSG_BASE: usize = PONG_BASE + PONG_FRAMES;

/// Total UMEM bytes.
pub const UMEM_BYTES: usize = TOTAL_UMEM_FRAMES * FRAME_SIZE;

pub const ETH_HDR_LEN: usize = 14;
pub const IPV4_HDR_LEN: usize = 20;
pub const TCP_HDR_LEN: usize = 20;
/// MSS implied by the build-time path MTU: MTU - IP(20) - TCP(20).
pub const TCP_MSS: usize = PATH_MTU - IPV4_HDR_LEN - TCP_HDR_LEN;
/// TLS 1.3 record overhead: 5-byte header + 16-byte AEAD tag + 1 content-type byte.
pub const TLS13_OVERHEAD: usize = 5 + 16 + 1;
/// Largest plaintext that keeps one TLS record inside one TCP segment (design §5.2).
pub const MAX_TLS_PLAINTEXT: usize = TCP_MSS - TLS13_OVERHEAD;

const_assert!(TOTAL_UMEM_FRAMES.is_power_of_two());
const_assert!(TOTAL_UMEM_FRAMES >= 64);
const_assert!(FRAME_SIZE == 2048 || FRAME_SIZE == 4096);
const_assert!(UMEM_SPLIT_EIGHTHS[0] + UMEM_SPLIT_EIGHTHS[1] + UMEM_SPLIT_EIGHTHS[2] + UMEM_SPLIT_EIGHTHS[3] == 8);
const_assert!(RX_FRAMES > 0 && ACK_FRAMES > 0 && PONG_FRAMES > 0 && MSG_FRAMES > 0);
const_assert!(MSG_BASE + MSG_FRAMES == TOTAL_UMEM_FRAMES);
// The design document's `static_assert(FRAME_SIZE >= PATH_MTU + 14)`.
const_assert!(FRAME_SIZE >= PATH_MTU + ETH_HDR_LEN);
const_assert!(PATH_MTU >= 576 && PATH_MTU <= 9000);
const_assert!(MAX_TLS_PLAINTEXT >= 256);
