"""Checkpoints in a forked child: the writer pauses for a fork, not for the encoding.

Encoding a shard's state and hashing it takes about a tenth of a second per few thousand live
aggregates on a quiet core, several times that under load; inline, every command arriving
meanwhile waits (the acknowledgement p99 of a loaded shard was that stall). As Redis does for
BGSAVE, the writer forks at a point where the state is durable at a seq; the child, holding a
copy-on-write image of exactly that state, encodes it, stores it over its own connection and
exits. The parent never waits for it and reaps it later.

The child runs only its own code: no logging (a lock another thread held at the fork would
never be released there), no inherited connection or pool (it opens its own), and it leaves
with os._exit so nothing inherited is flushed or closed. Where fork is unavailable or fails,
the writer captures inline as before.
"""

from __future__ import annotations

import logging
import os
import time

import psycopg

from application.shard.app import ShardApp
from infra.wal.pg_wal import SAVE_CHECKPOINT_SQL, checkpoint_row

log = logging.getLogger("exchange_dr.checkpointer")

CHILD_TIMEOUT_S = 300.0


class ForkedCheckpointer:
    """`ShardApp.background_checkpoint` for one shard: fork, capture, store, exit."""

    def __init__(self) -> None:
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (seq, started)
        self.taken = 0
        self.failed = 0

    def __call__(self, app: ShardApp) -> bool:
        self.reap()
        if not hasattr(os, "fork"):
            return False
        started = time.monotonic()
        try:
            pid = os.fork()
        except OSError as exc:
            log.warning("checkpoint fork failed shard=%s error=%s", app.shard_id, exc)
            return False
        if pid == 0:  # the child: never returns
            os._exit(_child(app))
        self.children[pid] = (app.seq, started)
        log.info(
            "checkpoint forked shard=%s epoch=%s seq=%s pid=%s pause_ms=%.1f",
            app.shard_id,
            app.epoch,
            app.seq,
            pid,
            (time.monotonic() - started) * 1000,
        )
        return True

    def wait(self, timeout_s: float) -> None:
        """Wait for the children still running (a graceful stop keeps its checkpoints)."""
        deadline = time.monotonic() + timeout_s
        self.reap()
        while self.children and time.monotonic() < deadline:
            time.sleep(0.02)
            self.reap()

    def reap(self) -> None:
        """Collect finished children (and log the ones that failed)."""
        for pid, (seq, started) in list(self.children.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                if time.monotonic() - started > CHILD_TIMEOUT_S:
                    log.error("checkpoint child pid=%s seq=%s overran; killing it", pid, seq)
                    os.kill(pid, 9)
                continue
            del self.children[pid]
            code = os.waitstatus_to_exitcode(status) if status else 0
            if code == 0:
                self.taken += 1
            else:
                self.failed += 1
                log.warning("checkpoint child pid=%s seq=%s failed exit=%s", pid, seq, code)


def _child(app: ShardApp) -> int:
    try:
        checkpoint = app.capture_checkpoint()
        # the store's own connection settings, on a connection of the child's own
        kwargs = dict(app.store.datastore.pool.kwargs)  # type: ignore[attr-defined]
        kwargs.pop("row_factory", None)
        with psycopg.connect(autocommit=True, connect_timeout=10, **kwargs) as conn:
            conn.execute(SAVE_CHECKPOINT_SQL, checkpoint_row(checkpoint))
        return 0
    except BaseException as exc:  # the parent logs the exit code; say why on stderr
        os.write(2, f"checkpoint child failed shard={app.shard_id}: {exc!r}\n".encode())
        return 1
