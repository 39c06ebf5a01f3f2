"""Drop-in compatibility with the Rust crate's Python binding (PyPI simd-r-drive): the same
classes and members, each of the same kind (method or property), and the stub file covering
every public name."""
import ast
import inspect
import io
import os

import pytest

import simdr
import simdr as simd_r_drive

# class -> (methods, properties) of the Rust binding
RUST_API = {
    "DataStore": (["write", "batch_write", "write_stream", "read", "read_entry", "read_stream",
                   "delete", "exists", "__contains__"], []),
    "EntryHandle": (["as_memoryview", "as_slice", "raw_checksum", "is_valid_checksum",
                     "offset_range", "address_range", "clone_arc", "len", "__len__"],
                    ["size", "file_size", "size_with_metadata", "key_hash", "checksum",
                     "start_offset", "end_offset"]),
    "EntryStream": (["read", "__iter__", "__next__"], []),
    "NamespaceHasher": (["namespace"], []),
}


def test_member_kinds_match_the_rust_binding():
    for cls_name, (methods, properties) in RUST_API.items():
        cls = getattr(simd_r_drive, cls_name)
        for name in methods:
            attr = inspect.getattr_static(cls, name)
            assert callable(attr) and not inspect.isdatadescriptor(attr), (cls_name, name)
        for name in properties:
            attr = inspect.getattr_static(cls, name)
            assert inspect.isdatadescriptor(attr), (cls_name, name)


def test_rust_readme_example_runs_unchanged(tmp_path):
    store = simd_r_drive.DataStore(str(tmp_path / "mydata.bin"))
    store.write(b"mykey", b"myvalue")
    assert store.read(b"mykey") == b"myvalue"
    entry = store.read_entry(b"mykey")
    view = entry.as_memoryview()
    assert bytes(view) == b"myvalue"
    store.write_stream(b"large", io.BytesIO(b"x" * 1024 * 1024))
    stream = store.read_stream(b"large")
    data = bytearray()
    while chunk := stream.read(4096):
        data.extend(chunk)
    assert data == b"x" * 1024 * 1024
    store.batch_write([(b"a", b"1"), (b"b", b"2")])
    assert store.exists(b"a") and b"b" in store
    store.delete(b"a")
    assert store.read(b"a") is None
    del store


def test_rust_binding_calls_by_keyword_work_unchanged(tmp_path):
    # The Rust binding's methods are PyO3 functions, which take their parameters by
    # name as well: code written for it may spell them out.
    store = simd_r_drive.DataStore(path=str(tmp_path / "kw.bin"))
    store.write(key=b"k", data=b"v")
    store.batch_write(items=[(b"a", b"1"), (b"b", b"2")])
    store.write_stream(key=b"s", reader=io.BytesIO(b"streamed"))
    assert store.read(key=b"k") == b"v" and store.read(b"a") == b"1"
    assert bytes(store.read_entry(key=b"b")) == b"2"
    stream = store.read_stream(key=b"s")
    assert stream.read(size=3) == b"str" and stream.read(5) == b"eamed"
    assert store.exists(key=b"k") and b"a" in store
    store.delete(key=b"k")
    assert not store.exists(b"k")
    hasher = simd_r_drive.NamespaceHasher(prefix=b"ns")
    assert hasher.namespace(key=b"x") == hasher.namespace(b"x")
    # and a misspelt, repeated, missing or extra argument is a TypeError, appending nothing
    size = store.info()["file_size"]
    for call in (lambda: store.write(b"k", value=b"v"), lambda: store.write(b"k", b"v", key=b"k"),
                 lambda: store.write(key=b"k"), lambda: store.write(b"k", b"v", b"w"),
                 lambda: store.read(), lambda: store.read(b"k", key=b"k"),
                 lambda: store.read(b"k", b"j"), lambda: store.delete(keys=b"k"),
                 lambda: store.batch_write(), lambda: store.write_stream(key=b"s"),
                 lambda: stream.read(n=1), lambda: stream.read(1, size=1),
                 lambda: hasher.namespace(k=b"x"), lambda: store.exists(b"k", key=b"k")):
        with pytest.raises(TypeError):
            call()
    assert store.info()["file_size"] == size
    store.close()


def test_failures_the_rust_binding_reports_as_oserror_are_oserrors(tmp_path):
    # The Rust binding raises OSError (IOError) for every failure of DataStore(path),
    # write, batch_write and delete, so code written for it catches OSError there.
    not_a_store = tmp_path / "notes.txt"
    not_a_store.write_bytes(b"not a store, " * 20)
    store = simd_r_drive.DataStore(str(tmp_path / "s.bin"))
    failing = [lambda: simd_r_drive.DataStore(str(tmp_path / "s.bin")),  # locked
               lambda: simd_r_drive.DataStore(str(not_a_store)),
               lambda: simd_r_drive.DataStore(str(tmp_path)),  # a directory
               lambda: simd_r_drive.DataStore(str(tmp_path / "no" / "dir.bin")),
               lambda: store.write(b"k", b""), lambda: store.write(b"k", b"\x00"),
               lambda: store.batch_write([(b"a", b"1"), (b"k", b"")])]
    for call in failing:
        with pytest.raises(OSError) as caught:
            call()
        assert isinstance(caught.value, simdr.Error) and caught.value.code < 0
    assert store.read(b"k") is None and store.read(b"a") is None
    assert not_a_store.read_bytes() == b"not a store, " * 20
    store.close()
    # the classes keep their other bases: a bad argument is a ValueError still
    assert issubclass(simdr.InvalidArgumentError, ValueError)
    assert issubclass(simdr.ClosedError, ValueError)
    assert issubclass(simdr.OutOfMemoryError, MemoryError)


def _stub_names():
    path = os.path.join(os.path.dirname(simdr.__file__), "__init__.pyi")
    if not os.path.exists(path):  # tests run against the source tree's stub
        path = os.path.join(os.path.dirname(__file__), "..", "simdr", "__init__.pyi")
    tree = ast.parse(open(path).read())
    classes, functions = {}, set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = {n.name for n in node.body
                                  if isinstance(n, (ast.FunctionDef, ast.AnnAssign))
                                  and hasattr(n, "name")}
        elif isinstance(node, ast.FunctionDef):
            functions.add(node.name)
    return classes, functions


def test_stub_covers_the_runtime_api():
    classes, functions = _stub_names()
    for name in simdr.__all__:
        obj = getattr(simdr, name)
        if inspect.isclass(obj):
            assert name in classes, name
            public = {m for m in vars(obj) if not m.startswith("_")}
            if not issubclass(obj, BaseException):
                assert public <= classes[name], (name, public - classes[name])
        elif callable(obj):
            assert name in functions, name


def test_every_public_member_has_a_docstring():
    for name in simdr.__all__:
        obj = getattr(simdr, name)
        if callable(obj):
            assert obj.__doc__, name
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            for member, attr in vars(obj).items():
                if not member.startswith("_"):
                    assert getattr(attr, "__doc__", None), f"{name}.{member}"
