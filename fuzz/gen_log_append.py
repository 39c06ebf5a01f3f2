#!/usr/bin/env python3
"""gen_log_append.py - writes the seed inputs of fuzz/corpus-log-append/ for
fuzz/fuzz_log_append.c (its header comment describes the input layout).

The seeds are the bytes a primary sends a replica: sound streams (exactly
what simdr_log_read returns for those entries: the format leaves no choice,
and the target checks an accepted stream against simdr_log_read), and the
same streams damaged: cut short, split across calls mid-entry, a flipped
byte, a wrong link, a dirty pad, zero runs, a padded lone 0x00, a tombstone,
metadata claiming huge sizes, offsets that are not the tail. Inputs that once
broke a promise are kept beside them as found-*. Run from the repository
root: python3 fuzz/gen_log_append.py
"""
import os
import struct
import zlib

from gen_hostile import XXH_A, XXH_B, meta  # the format's pieces, written once

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus-log-append")
XXH_KEY1 = 0x384D070CD5D829E2
OTHER = 0x0123456789ABCDEF
BIG = (b"a value long enough to need more than one cache line of "
       b"payload, so a replicated copy spans a pad and a boundary")


def pad(at, aligned):
    return (64 - at % 64) & 63 if aligned else 0


def entry(at, key_hash, payload, aligned):
    """The bytes of one entry appended at offset at."""
    p = 0 if payload == b"\x00" else pad(at, aligned)
    return b"\x00" * p + payload + meta(key_hash, at, zlib.crc32(payload))


def stream(at, items, aligned):
    out = b""
    for key_hash, payload in items:
        out += entry(at + len(out), key_hash, payload, aligned)
    return out


def base_tail(variant, aligned):
    """The length of the target's starting store (build_base): only the
    payload sizes and the layout decide it."""
    sizes = []
    if variant in (1, 2):
        sizes += [b"hello", b"\x00", b"world"]
    if variant == 2:
        sizes += [BIG, b"x", BIG[:70]]
    if variant == 3:
        for i in range(20):
            sizes.append(b"v%d" % i)
            if i % 7 == 6:
                sizes.append(b"\x00")
    return len(stream(0, [(0, p) for p in sizes], aligned))


def seed(layout_unaligned, variant, calls, from_first=0, from_later=0, explicit=0,
         mapped=False, reopen=False):
    cfg = (1 if layout_unaligned else 0) | variant << 1 | (8 if mapped else 0) | \
        (16 if reopen else 0) | (len(calls) - 1) << 5
    head = bytes([cfg, from_first | from_later << 4]) + struct.pack("<Q", explicit)
    head += b"".join(struct.pack("<H", len(c)) for c in calls[:-1])
    return head + b"".join(calls)


def files():
    out = {}
    for unaligned in (0, 1):
        aligned = not unaligned
        lay = "unaligned" if unaligned else "aligned"
        for variant in range(4):
            at = base_tail(variant, aligned)
            items = [(XXH_A, b"again"), (XXH_B, b"\x00"), (OTHER, BIG), (XXH_KEY1, b"z" * 3)]
            good = stream(at, items, aligned)
            name = "%s-v%d" % (lay, variant)
            out["valid-%s" % name] = seed(unaligned, variant, [good])
            # the same stream in one call per entry, as a replica catching up
            parts, pos = [], at
            for it in items:
                e = entry(pos, it[0], it[1], aligned)
                parts.append(e)
                pos += len(e)
            out["valid-%s-per-entry" % name] = seed(unaligned, variant, parts)
            out["valid-%s-reopen-mapped" % name] = seed(unaligned, variant, parts,
                                                        mapped=True, reopen=True)
            # an entry split across two calls: both halves refused, the rest re-sent
            cut = len(parts[0]) + len(parts[1]) // 2
            out["split-%s" % name] = seed(unaligned, variant,
                                          [good[:cut], good[cut:], good])
            out["truncated-%s" % name] = seed(unaligned, variant, [good[:-1]])
            out["truncated-meta-%s" % name] = seed(unaligned, variant, [good[:-13]])
            flipped = bytearray(good)
            flipped[len(parts[0]) + len(parts[1]) + len(parts[2]) // 2] ^= 0x40
            out["flipped-payload-%s" % name] = seed(unaligned, variant, [bytes(flipped)])
            flipped = bytearray(good)
            flipped[-1] ^= 1  # the last CRC
            out["flipped-crc-%s" % name] = seed(unaligned, variant, [bytes(flipped)])
            # a wrong link in the second entry's metadata
            wrong = bytearray(good)
            link = len(parts[0]) + len(parts[1]) - 12
            wrong[link:link + 8] = struct.pack("<Q", at + 1)
            out["wrong-link-%s" % name] = seed(unaligned, variant, [bytes(wrong)])
            wrong[link:link + 8] = struct.pack("<Q", at + 10**12)
            out["forward-link-%s" % name] = seed(unaligned, variant, [bytes(wrong)])
            # not at the tail: one byte early, one late, at 0, an older end
            for mode, tag in ((1, "at-zero"), (2, "one-early"), (3, "one-late"),
                              (4, "older-end"), (7, "near-max")):
                out["from-%s-%s" % (tag, name)] = seed(unaligned, variant, [good],
                                                       from_first=mode)
            out["zeros-%s" % name] = seed(unaligned, variant, [b"\x00" * 200])
            out["zero-run-value-%s" % name] = seed(
                unaligned, variant, [stream(at, [(OTHER, b"\x00" * 40)], aligned)])
            out["tombstone-%s" % name] = seed(
                unaligned, variant, [stream(at, [(XXH_B, b"\x00"), (XXH_A, b"\x00")], aligned)])
            # metadata claiming a huge entry: a link far below the bytes sent
            huge = b"q" * 8 + meta(OTHER, 0, zlib.crc32(b"q" * 8))
            out["huge-claim-%s" % name] = seed(unaligned, variant, [huge],
                                               from_first=5, explicit=at)
            huge = b"q" * 8 + meta(OTHER, 2**63, zlib.crc32(b"q" * 8))
            out["huge-link-%s" % name] = seed(unaligned, variant, [huge])
            out["huge-from-%s" % name] = seed(unaligned, variant, [good], from_first=5,
                                              explicit=2**64 - 21)
            if aligned and at % 64:
                lone = b"\x00" * pad(at, True) + b"\x00" + meta(OTHER, at, zlib.crc32(b"\x00"))
                out["padded-lone-zero-%s" % name] = seed(unaligned, variant, [lone])
                dirty = bytearray(entry(at, OTHER, b"pay", True))
                dirty[0] = 1
                out["dirty-pad-%s" % name] = seed(unaligned, variant, [bytes(dirty)])
            out["empty-call-%s" % name] = seed(unaligned, variant, [b"", good, b""],
                                               from_later=0)
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = files()
    for name, data in sorted(seeds.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(seeds), OUT))


if __name__ == "__main__":
    main()
