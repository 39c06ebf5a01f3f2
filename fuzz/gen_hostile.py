#!/usr/bin/env python3
"""gen_hostile.py - writes the hand-made hostile seed files of fuzz/corpus/.

Each file breaks one rule of the format (docs/FORMAT.md) in a way a careless
reader would trip over: chain links pointing forward or at themselves,
offsets past the end, huge sizes, zero runs, zero-length and near-tombstone
entries. Run from the repository root: python3 fuzz/gen_hostile.py
"""
import os
import struct
import zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
XXH_A = 0xE6C632B61E964E1F  # XXH3-64("a"), from FORMAT.md
XXH_B = 0x575A0B1C44D8843F  # XXH3-64("b")


def meta(key_hash, prev, crc):
    return struct.pack("<QQI", key_hash & (2**64 - 1), prev & (2**64 - 1), crc & 0xFFFFFFFF)


def entry(buf, key_hash, payload, aligned=False):
    """Appends a valid entry to buf (bytearray)."""
    prev = len(buf)
    if aligned and payload != b"\x00":
        buf += b"\x00" * ((64 - prev % 64) & 63)
    buf += payload
    buf += meta(key_hash, prev, zlib.crc32(payload))


def worked_example(aligned):
    b = bytearray()
    entry(b, XXH_A, b"hello", aligned)
    entry(b, XXH_A, b"\x00", aligned)
    entry(b, XXH_B, b"world", aligned)
    return b


def files():
    out = {}
    out["hostile-zeros-64"] = bytes(64)
    out["hostile-zeros-4096"] = bytes(4096)
    out["hostile-text"] = b"this is a text file, not a store\n" * 3
    out["valid-worked-example-aligned"] = bytes(worked_example(True))
    out["valid-worked-example-unaligned"] = bytes(worked_example(False))

    b = bytearray()
    entry(b, XXH_A, b"hello")
    m = len(b)
    b += b"xyz" + meta(XXH_B, m + 500, zlib.crc32(b"xyz"))  # link points forward
    out["hostile-forward-link"] = bytes(b)

    b = bytearray()
    entry(b, XXH_A, b"hello")
    b += b"xyz" + meta(XXH_B, len(b) + 3, zlib.crc32(b"xyz"))  # link to its own metadata
    out["hostile-self-link"] = bytes(b)

    # Two entries whose links point at each other's ends (a loop if not
    # required to decrease).
    b = bytearray(b"AAAA")
    b += meta(XXH_A, 48, zlib.crc32(b"AAAA"))  # first points past itself to the second's end
    b += b"BBBB" + meta(XXH_B, 24, zlib.crc32(b"BBBB"))
    out["hostile-loop"] = bytes(b)

    b = bytearray()
    entry(b, XXH_A, b"hello")
    b += b"q" * 10 + meta(XXH_B, 2**63, 0)  # offset far past the end
    out["hostile-offset-past-end"] = bytes(b)
    out["hostile-huge-prev"] = bytes(b"z" * 10 + meta(XXH_A, 2**64 - 1, 0))
    out["hostile-huge-prev-minus-20"] = bytes(b"z" * 10 + meta(XXH_A, 2**64 - 21, 0))

    # prev_offset 0 far behind: one "giant first entry" with a wrong CRC.
    b = bytearray()
    for i in range(20):
        entry(b, XXH_A + i, bytes([i + 1]) * (i + 3), aligned=True)
    b += b"\x01\x02" + meta(XXH_B, 0, 0x12345678)
    out["hostile-giant-first-entry"] = bytes(b)

    # A zero-length entry (prev == meta offset): hazard 7.
    b = bytearray()
    entry(b, XXH_A, b"hello")
    b += meta(XXH_B, len(b), 0)
    out["hostile-zero-length-entry"] = bytes(b)
    out["hostile-only-metadata"] = bytes(meta(XXH_A, 0, 0))

    # A one-byte non-zero payload carrying the tombstone CRC, and [0x00, 0x00].
    b = bytearray()
    entry(b, XXH_A, b"hello")
    b += b"\x01" + meta(XXH_A, len(b), 0xD202EF8D)
    out["hostile-fake-tombstone"] = bytes(b)
    b = bytearray()
    entry(b, XXH_A, b"hello")
    entry(b, XXH_B, b"\x00\x00")
    out["hostile-double-zero-value"] = bytes(b)

    # Aligned layout with non-zero pad bytes.
    b = bytearray()
    entry(b, XXH_A, b"hello", aligned=True)
    prev = len(b)
    b += b"\x07" * ((64 - prev % 64) & 63) + b"world" + meta(XXH_B, prev, zlib.crc32(b"world"))
    out["hostile-dirty-pad"] = bytes(b)

    # A long valid chain with a damaged link in the middle.
    b = bytearray()
    ends = []
    for i in range(300):
        entry(b, XXH_A + (i % 17), bytes([1 + i % 250]) * (1 + i % 5))
        ends.append(len(b))
    mid = ends[150] - 12
    b[mid:mid + 8] = struct.pack("<Q", ends[200])
    out["hostile-damaged-middle-link"] = bytes(b)

    # A valid chain followed by a zero-filled tail and by random garbage.
    b = bytearray(worked_example(True))
    out["hostile-zero-tail"] = bytes(b + bytes(300))
    out["hostile-garbage-tail"] = bytes(b + bytes((i * 89 + 7) % 256 for i in range(333)))
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in sorted(files().items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
