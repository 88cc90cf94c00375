"""Idempotency keys: which commands a shard already stored, so that a retry finds its outcome.

Recent keys are answered from memory exactly; older ones from the store, asked only for the
keys a Bloom filter (`KeyFilter`) may hold. The filter of older keys is loaded behind each
recovery on a thread of its own; until it is in place, every key not among the recent ones is
looked up in the store.

Memory stays bounded whatever the history: the filters hold at most `filter_max_keys` keys
(about 1.8 bytes each). A shard that stored more is answered by the store for every key not
among the recent ones (one indexed lookup per batch, the path taken before the filter is
loaded), and says so once in the log; the store stays the only authority either way.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence

from application.ports import WalStore
from application.shard.keyfilter import KeyFilter
from domain.account import Account
from domain.commands import Command, Deposit, PlaceOrder
from domain.order import Order

log = logging.getLogger("exchange_dr.shard")


def command_key(shard_id: str, command: Command) -> str | None:
    """The idempotency key of a command: a placed order's deterministic id, or a deposit's
    when it names its deposit_id."""
    if isinstance(command, PlaceOrder):
        account_id = Account.create_id(shard_id, command.account)
        return str(Order.create_id(account_id, command.client_order_id))
    if isinstance(command, Deposit) and command.deposit_id is not None:
        account_id = Account.create_id(shard_id, command.account)
        return str(Account.deposit_key(account_id, command.deposit_id))
    return None


class IdempotencyKeys:
    """The keys a shard stored, and at which seq; the store stays the only authority."""

    def __init__(
        self,
        store: WalStore,
        shard_id: str,
        *,
        recent_max: int = 200_000,
        filter_max_keys: int = 20_000_000,
    ) -> None:
        if filter_max_keys < 1:
            raise ValueError("filter_max_keys must be >= 1")
        self._store = store
        self.filter_max_keys = filter_max_keys
        self._shard_id = shard_id
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._recent_max = recent_max
        # keys stored since the last recovery, and (once loaded behind it) every older one
        self._new = KeyFilter()
        self._stored: KeyFilter | None = None
        self._generation = 0
        self._lock = threading.Lock()
        self._filter_on = False

    @property
    def filter_loaded(self) -> bool:
        """Whether the filter of the keys stored before the last recovery is in place."""
        return self._stored is not None

    @property
    def filter_keys(self) -> int:
        """How many keys the filters in memory hold (bounded by `filter_max_keys`)."""
        stored = self._stored
        return self._new.total + (stored.total if stored is not None else 0)

    def known(self, keys: Sequence[str | None]) -> dict[str, int]:
        """The seq of each of `keys` already stored (None entries are commands without one)."""
        recent = self._recent
        known = {k: recent[k] for k in keys if k is not None and k in recent}
        missing = [k for k in keys if k is not None and k not in known]
        stored = self._stored
        if missing and stored is not None:
            # only a key either filter may hold can have been used: ask the store for those
            new = self._new
            missing = [k for k in missing if k in new or k in stored]
        if missing:
            known.update(self._store.find_command_keys(self._shard_id, missing))
        return known

    def remember(self, key: str, seq: int) -> None:
        """A key just used by the command at `seq` (its batch may still fail: harmless)."""
        self._recent[key] = seq
        new = self._new
        if new.total < self.filter_max_keys:
            new.add(key)
            stored = self._stored
            held = new.total + (stored.total if stored is not None else 0)
            if held >= self.filter_max_keys:  # also stops a loader still running from installing
                self._drop_filter("the filters")
        if len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)

    def reset(self, upto_seq: int) -> None:
        """After a recovery to `upto_seq`: forget the recent keys, reload the filter."""
        self._recent.clear()
        self._load(upto_seq)

    def enable_filter(self, recovered_seq: int | None) -> None:
        """Keep the filter from now on: loaded behind every recovery, and at once up to
        `recovered_seq` if the state is already recovered (None: it is not)."""
        self._filter_on = True
        if recovered_seq is not None:
            self._load(recovered_seq)

    def _load(self, upto_seq: int) -> None:
        """Fill a filter with every key stored up to `upto_seq`, behind the writer's back."""
        with self._lock:  # a loader of an older recovery must not install its filter
            self._generation += 1
            generation = self._generation
            self._new = KeyFilter()
            self._stored = None
        read = getattr(self._store, "command_keys", None)
        if read is None or not self._filter_on:
            return
        shard_id = self._shard_id

        cap = self.filter_max_keys

        def load() -> None:
            loaded = KeyFilter(capacity=max(1 << 16, min(upto_seq, cap)))
            keys = read(shard_id, upto_seq)
            try:
                for key in keys:
                    if loaded.total + self._new.total >= cap:
                        close = getattr(keys, "close", None)
                        if close is not None:
                            close()
                        log.warning(
                            "idempotency key filter not loaded shard=%s upto_seq=%s: more than "
                            "%s keys; keys not among the recent ones are looked up in the store",
                            shard_id,
                            upto_seq,
                            cap,
                        )
                        return
                    loaded.add(key)
            except Exception as exc:  # the store answers each lookup instead: slower, correct
                log.warning("idempotency key filter not loaded shard=%s error=%s", shard_id, exc)
                return
            with self._lock:
                if generation != self._generation:
                    return
                self._stored = loaded
            log.info("idempotency key filter loaded shard=%s upto_seq=%s", shard_id, upto_seq)

        threading.Thread(target=load, name=f"key-filter-{shard_id}", daemon=True).start()

    def _drop_filter(self, why: str) -> None:
        """Past the cap: forget the filters, the store answers from now until the next recovery
        (a new filter of keys since then would not say 'new' rightly without the older ones)."""
        with self._lock:
            self._generation += 1  # a loader still running must not install its filter
            self._stored = None
            self._new = KeyFilter(capacity=64)
            self._new.total = self.filter_max_keys  # full: remember() adds nothing more
        log.warning(
            "idempotency key filter dropped shard=%s: %s reached %s keys; keys not among the "
            "recent ones are looked up in the store",
            self._shard_id,
            why,
            self.filter_max_keys,
        )
