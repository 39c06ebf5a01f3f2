"""Property tests: random sequences of puts, batches, deletes, renames, compactions and
reopens behave exactly like a dict."""
import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import simdr

from conftest import scale

keys = st.one_of(st.binary(min_size=0, max_size=6), st.text(max_size=4)).map(
    lambda k: k.encode() if isinstance(k, str) else k)
# The engine refuses empty values and the single byte 0x00 (tombstone marker)
values = st.binary(min_size=1, max_size=300).filter(lambda v: v != b"\x00")


class StoreModel(RuleBasedStateMachine):
    @initialize(layout=st.sampled_from(["aligned", "unaligned"]))
    def open_store(self, layout):
        self.dir = tempfile.mkdtemp(prefix="simdr-model-")
        self.path = os.path.join(self.dir, "store.bin")
        self.db = simdr.open(self.path, layout=layout)
        self.model = {}
        self.handles = []  # (handle, value it must keep showing)

    def teardown(self):
        if hasattr(self, "db"):
            self.db.close()
            # handles outlive the store and its file
            shutil.rmtree(self.dir, ignore_errors=True)
            for h, v in self.handles:
                assert bytes(h) == v

    @rule(k=keys, v=values)
    def put(self, k, v):
        self.db[k] = v
        self.model[k] = v

    @rule(items=st.lists(st.tuples(keys, values), max_size=8))
    def put_many(self, items):
        self.db.put_many(items)
        self.model.update(items)

    @rule(k=keys)
    def delete(self, k):
        if k in self.model:
            del self.db[k]
            del self.model[k]
        else:
            self.db.delete(k)  # absent: a no-op

    @rule(data=st.data(), new=keys)
    @precondition(lambda self: self.model)
    def rename(self, data, new):
        old = data.draw(st.sampled_from(sorted(self.model)))
        if old == new:
            try:
                self.db.rename(old, new)
                raise AssertionError("rename to the same key must fail")
            except simdr.InvalidArgumentError:
                return
        self.db.rename(old, new)
        self.model[new] = self.model.pop(old)

    @rule(data=st.data())
    @precondition(lambda self: self.model)
    def keep_handle(self, data):
        k = data.draw(st.sampled_from(sorted(self.model)))
        self.handles.append((self.db.read_entry(k), self.model[k]))

    @rule()
    def compact(self):
        self.db.compact()

    @rule(use_hint=st.booleans())
    def reopen(self, use_hint):
        self.db.close()
        self.db = simdr.open(self.path, use_hint=use_hint)

    @rule(k=keys)
    def get(self, k):
        assert self.db.get(k) == self.model.get(k)
        assert (k in self.db) == (k in self.model)

    @invariant()
    def same_contents(self):
        if not hasattr(self, "db"):
            return
        assert len(self.db) == len(self.model)
        live = sorted(bytes(h) for h in self.db)
        assert live == sorted(self.model.values())
        got = self.db.get_many(list(self.model))
        assert [bytes(h) for h in got] == list(self.model.values())
        for h, v in self.handles:
            assert bytes(h) == v


StoreModel.TestCase.settings = settings(
    max_examples=max(10, int(40 * scale())), stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestStoreModel = StoreModel.TestCase
