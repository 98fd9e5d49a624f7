#!/usr/bin/env python3
"""Writes the seed corpus of tests/c/fuzz_consumer.c (see its input layout) into DIR
(default tests/c/fuzz_corpus/consumer): an idle pipeline, frames as the pipeline
writes them (data, a control entry, a fragmented message), and the hostile headers
of issue 9 (capacity 2^40, a frame of length 0xFFFFFFF0, a frame beyond write_pos).

    python3 tools/fuzz_consumer_seeds.py [DIR]
"""
import os
import struct
import sys

RING_HDR, INBOX_HDR = 512, 704
RING_PAYLOAD = 256


def seed(ring_ctl=None, inbox_ctl=None, ring_hdr=None, infos=(), inbox_data=b""):
    """ring_ctl/inbox_ctl: {offset: u64} XORed into the header page;
    infos: (offset32, len, meta) frame infos; inbox_data: the inbox's first bytes."""
    ring = bytearray(RING_HDR)
    inbox = bytearray(INBOX_HDR)
    for off, v in (ring_hdr or {}).items():
        ring[off:off + 8] = struct.pack("<Q", v)
    for off, v in (ring_ctl or {}).items():
        ring[off:off + 8] = struct.pack("<Q", v)
    for off, v in (inbox_ctl or {}).items():
        inbox[off:off + 8] = struct.pack("<Q", v)
    slots = bytearray(RING_PAYLOAD)
    for i, (o, n, meta) in enumerate(infos):
        slots[i * 16:(i + 1) * 16] = struct.pack("<IIQ", o, n, meta)
    out = b"\0\0\0\0" + bytes(ring) + bytes(inbox)
    if inbox_data:
        out += bytes(slots) + inbox_data
    elif infos:
        out += bytes(slots)
    return out


def meta(opcode, final=True, flags=0):
    return (opcode << 48) | (int(final) << 56) | (flags << 57)


def frames(payloads, opcodes=None):
    """Server frames (2-byte headers) back to back, and their infos."""
    data, infos = b"", []
    for i, pl in enumerate(payloads):
        op = (opcodes or [1] * len(payloads))[i]
        data += bytes([0x80 | op, len(pl)])
        infos.append((len(data), len(pl), meta(op)))
        data += pl
    return data, infos


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "tests/c/fuzz_corpus/consumer"
    os.makedirs(d, exist_ok=True)
    seeds = {}
    seeds["idle"] = b""
    data, infos = frames([b"hello", b"msg 1", b"msg 2"])
    seeds["three_frames"] = seed({256: 3}, {256: len(data)}, infos=infos, inbox_data=data)
    data, infos = frames([b"a", b"ping", b"b"], [1, 9, 2])
    seeds["control_entry"] = seed({256: 3}, {256: len(data)}, infos=infos, inbox_data=data)
    data, infos = frames([b"frag1", b"frag2"], [1, 0])
    infos[0] = (infos[0][0], infos[0][1], meta(1, final=False))
    seeds["fragments"] = seed({256: 2}, {256: len(data)}, infos=infos, inbox_data=data)
    data, infos = frames([b"hello"])
    seeds["capacity_2_40"] = seed({256: (1 << 39) + 1, 384: 1 << 39}, {256: len(data)},
                                  ring_hdr={24: 16 ^ (1 << 40)}, infos=infos, inbox_data=data)
    seeds["len_fffffff0"] = seed({256: 1}, {256: len(data)}, infos=[(2, 0xFFFFFFF0, meta(1))], inbox_data=data)
    seeds["beyond_write_pos"] = seed({256: 1}, {256: len(data)}, infos=[(5000, 10, meta(1))], inbox_data=data)
    seeds["overwrite_lapped"] = seed({256: 1}, {256: 3 * 4096, 644: 1}, infos=infos, inbox_data=data)
    for name, b in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(b)
    print(f"{len(seeds)} seeds in {d}")


if __name__ == "__main__":
    main()
