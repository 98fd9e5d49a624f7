//! The feed cores allocate nothing per message after construction: counted with a global
//! allocator (as in tests/tcp_noalloc.rs). One test in this binary, so nothing else
//! allocates while the counter is armed.

use pipeline::feed::{
    Arbiter, ArbiterConfig, ArbiterMode, Backoff, BinaryField, Decision, DisconnectCause, Endian,
    JsonField, Key, KeyExtractor, Liveness, LivenessConfig, ReconnectPolicy, Rotation,
    RotationConfig,
};
use pipeline_testkit::alloc::{self, CountingAlloc};

#[global_allocator]
static A: CountingAlloc = CountingAlloc;

#[test]
fn no_allocation_per_message() {
    // Everything built, every input prepared, before arming.
    let mut json = KeyExtractor::Json {
        seq: JsonField::new("data.u").unwrap(),
        stream: Some(JsonField::new("stream").unwrap()),
    };
    let mut bin = KeyExtractor::Binary {
        seq: BinaryField::new(4, 8, Endian::Little).unwrap(),
        stream: None,
    };
    let msgs: Vec<Vec<u8>> = (0..64u64)
        .map(|i| {
            format!(
                r#"{{"stream":"s{}","data":{{"e":"x","b":[["1","2"]],"u":{}}}}}"#,
                i % 4,
                i
            )
            .into_bytes()
        })
        .collect();
    let mut bmsg = [0u8; 16];
    let mut contiguous = Arbiter::new(ArbiterConfig::new(2, ArbiterMode::Contiguous)).unwrap();
    let mut monotonic = Arbiter::new(ArbiterConfig::new(2, ArbiterMode::Monotonic)).unwrap();
    let mut small = Arbiter::new(ArbiterConfig {
        hold_capacity: 8,
        ..ArbiterConfig::new(2, ArbiterMode::Contiguous)
    })
    .unwrap();
    let mut live = Liveness::new(LivenessConfig::new(1_000_000, 5_000_000).unwrap(), 0);
    let mut backoff = Backoff::new(
        ReconnectPolicy {
            storm_attempts: 5,
            ..ReconnectPolicy::standard()
        },
        9,
    )
    .unwrap();
    let mut rot = Rotation::new(
        RotationConfig {
            every_ns: Some(50_000_000),
            ..Default::default()
        },
        0,
    );
    let mut decisions = 0u64;
    let mut sink = |d: Decision| {
        decisions += 1;
        std::hint::black_box(d);
    };
    // Warm: the stream tables get their streams (table slots are reserved, but do the
    // first insertions before arming too).
    for s in 0..4 {
        contiguous.expect(s, 0, &mut sink);
    }

    alloc::arm();
    let mut now = 1u64;
    for round in 0..200u64 {
        for (i, m) in msgs.iter().enumerate() {
            now += 1_000;
            let k = json.key(m).expect("key");
            let k = Key::new(k.stream, k.seq + round * 64);
            // Leg 0 loses every 7th, leg 1 every 5th; leg 1 is later.
            let h = (round * 64) + i as u64;
            if i % 7 != 0 {
                contiguous.on_message(0, Some(k), h, now, &mut sink);
                monotonic.on_message(0, Some(k), h, now, &mut sink);
                rot.observe(0, Some(k));
            }
            if i % 5 != 0 {
                contiguous.on_message(1, Some(k), h | 1 << 40, now + 300, &mut sink);
                monotonic.on_message(1, Some(k), h | 1 << 40, now + 300, &mut sink);
                rot.observe(1, Some(k));
            }
            // A hold that overflows and gaps.
            small.on_message(0, Some(Key::new(0, h * 2)), h, now, &mut sink);
            contiguous.on_message(0, None, h, now, &mut sink);
            bmsg[4..12].copy_from_slice(&h.to_le_bytes());
            std::hint::black_box(bin.key(&bmsg));
            live.on_data(now);
            std::hint::black_box(live.poll(now));
        }
        contiguous.poll(now + 2_000_000, &mut sink);
        std::hint::black_box(contiguous.release_barrier(0));
        match rot.poll(now) {
            pipeline::feed::RotationAction::Start => {
                rot.begin(0, 1, now);
            }
            a => {
                std::hint::black_box(a);
            }
        }
        std::hint::black_box(backoff.on_disconnect(DisconnectCause::Reset, now));
        std::hint::black_box(backoff.poll(now + 20_000_000_000));
        backoff.connected(now);
    }
    small.flush(&mut sink);
    let allocs = alloc::disarm();

    assert_eq!(
        allocs,
        0,
        "allocations on the per-message path"
    );
    assert!(decisions > 50_000);
    assert!(
        small.gaps().0 > 0,
        "the small hold overflowed and reported gaps"
    );
    let (a, b) = (contiguous.stats(0), contiguous.stats(1));
    assert!(a.won > 0 && b.won > 0);
}
