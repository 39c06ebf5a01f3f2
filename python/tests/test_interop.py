"""Files written by the Rust reference (0.4.1 unaligned and 0.16 aligned) read from Python:
every present key's value, every deleted or never-written key absent. The torn files end in a
cut-off append: read-only they read as their sound prefix, untouched; a writable open cuts
them to that prefix, as the reference does."""
import hashlib
import json
import os
import shutil

import pytest

import simdr

INTEROP = os.environ.get("SIMDR_INTEROP_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared", "interop")
FILES = ["v041_basic", "v041_stream", "v041_torn", "head_basic", "head_stream", "head_torn"]


@pytest.mark.parametrize("name", FILES)
def test_reference_file(tmp_path, name):
    manifest_path = os.path.join(INTEROP, name + ".json")
    if not os.path.exists(manifest_path):
        pytest.skip(f"interop file missing: {manifest_path} (the Rust-written files live in ../shared/interop; set SIMDR_INTEROP_DIR)")
    manifest = json.load(open(manifest_path))
    path = tmp_path / manifest["file"]
    shutil.copy(os.path.join(INTEROP, manifest["file"]), path)
    with simdr.open(path, readonly=True) as db:
        assert len(db) == manifest["live_count"]
        for k in manifest["keys"]:
            key = bytes.fromhex(k["key_hex"])
            assert simdr.hash_key(key) == int(k["key_hash_xxh3"], 16)
            h = db.read_entry(key)
            if k["state"] != "present":
                assert h is None
                continue
            assert h.size == k["value_len"] and h.is_valid_checksum()
            if "value_hex" in k:
                assert bytes(h) == bytes.fromhex(k["value_hex"])
            else:
                assert hashlib.sha256(memoryview(h)).hexdigest() == k["value_sha256"]
        for k in manifest.get("absent_probe_keys", []):
            key = bytes.fromhex(k["key_hex"]) if isinstance(k, dict) else k.encode()
            assert db.read(key) is None


@pytest.mark.parametrize("name", ["v041_torn", "head_torn"])
def test_reference_torn_file_cut_by_a_writable_open(tmp_path, name):
    manifest_path = os.path.join(INTEROP, name + ".json")
    if not os.path.exists(manifest_path):
        pytest.skip(f"interop file missing: {manifest_path}")
    manifest = json.load(open(manifest_path))
    path = tmp_path / manifest["file"]
    shutil.copy(os.path.join(INTEROP, manifest["file"]), path)
    with simdr.open(path, readonly=True) as db:
        assert len(db) == manifest["live_count"]
    assert os.path.getsize(path) == manifest["file_size"]  # read-only never cuts
    with simdr.open(path) as db:
        assert len(db) == manifest["live_count"]
        assert sum(len(h) for h in db) == manifest["live_payload_bytes"]
    assert os.path.getsize(path) == manifest["valid_size_after_recovery"]
