"""The idempotency key filters take bounded memory whatever the history: past `filter_max_keys`
the stored keys are not loaded and every key not among the recent ones is asked of the store,
which stays the only authority (a retry still finds its first outcome)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping

from application.shard.keys import IdempotencyKeys


class Store:
    """The two reads IdempotencyKeys makes of a WAL store, over a dict of key -> seq."""

    def __init__(self, keys: dict[str, int]) -> None:
        self.keys = keys
        self.lookups: list[list[str]] = []
        self.read_keys = 0
        self.done = threading.Event()

    def find_command_keys(self, shard_id: str, keys: Iterable[str]) -> Mapping[str, int]:
        wanted = list(keys)
        self.lookups.append(wanted)
        return {k: self.keys[k] for k in wanted if k in self.keys}

    def command_keys(self, shard_id: str, upto_seq: int) -> Iterator[str]:
        try:
            for key, seq in self.keys.items():
                if seq <= upto_seq:
                    self.read_keys += 1
                    yield key
        finally:
            self.done.set()


def _loaded(keys: IdempotencyKeys, store: Store) -> None:
    assert store.done.wait(10)
    time.sleep(0.05)  # the loader installs its filter after the last key


def test_a_history_larger_than_the_cap_loads_no_filter_and_asks_the_store() -> None:
    history = {f"k{n}": n for n in range(1, 5001)}
    store = Store(history)
    keys = IdempotencyKeys(store, "s", filter_max_keys=1000)  # type: ignore[arg-type]
    keys.enable_filter(5000)
    _loaded(keys, store)
    assert not keys.filter_loaded
    assert keys.filter_keys <= 1000
    assert store.read_keys <= 1001  # it stopped reading once past the cap
    # a retried key from long ago still finds its first outcome (from the store)
    assert keys.known(["k7", "new-1"]) == {"k7": 7}
    assert store.lookups[-1] == ["k7", "new-1"]


def test_within_the_cap_the_filter_answers_new_keys_from_memory() -> None:
    history = {f"k{n}": n for n in range(1, 501)}
    store = Store(history)
    keys = IdempotencyKeys(store, "s", filter_max_keys=1000)  # type: ignore[arg-type]
    keys.enable_filter(500)
    _loaded(keys, store)
    assert keys.filter_loaded
    store.lookups.clear()
    fresh = [f"fresh-{n}" for n in range(200)]
    assert keys.known(fresh) == {}
    assert sum(len(x) for x in store.lookups) <= 2  # false positives only
    assert keys.known(["k9"]) == {"k9": 9}


def test_keys_written_past_the_cap_drop_the_filter_and_lose_no_retry() -> None:
    store = Store({})
    keys = IdempotencyKeys(store, "s", filter_max_keys=1000, recent_max=100)  # type: ignore[arg-type]
    keys.enable_filter(0)
    _loaded(keys, store)
    assert keys.filter_loaded
    for n in range(1, 3001):
        store.keys[f"w{n}"] = n
        keys.remember(f"w{n}", n)
    assert keys.filter_keys <= 1000
    assert not keys.filter_loaded  # past the cap: the store answers
    store.lookups.clear()
    assert keys.known(["w5", "w2999", "zzz"]) == {"w5": 5, "w2999": 2999}
    assert store.lookups == [["w5", "zzz"]]  # w2999 is among the recent ones


def test_keys_written_past_the_cap_while_the_filter_loads_stop_the_loader() -> None:
    """The cap reached by new keys before the stored ones are loaded: the loader must not
    install a filter that lacks the keys remember() no longer added."""
    gate = threading.Event()
    history = {f"k{n}": n for n in range(1, 101)}

    class SlowStore(Store):
        def command_keys(self, shard_id: str, upto_seq: int) -> Iterator[str]:
            gate.wait(10)
            yield from super().command_keys(shard_id, upto_seq)

    store = SlowStore(history)
    keys = IdempotencyKeys(store, "s", filter_max_keys=500, recent_max=10)  # type: ignore[arg-type]
    keys.enable_filter(100)
    for n in range(101, 701):
        store.keys[f"w{n}"] = n
        keys.remember(f"w{n}", n)
    gate.set()
    _loaded(keys, store)
    assert not keys.filter_loaded
    assert keys.known(["w300", "k3"]) == {"w300": 300, "k3": 3}
