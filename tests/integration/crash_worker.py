"""A shard under load that prints every acknowledgement; the crash test kills it with SIGKILL."""

from __future__ import annotations

import sys
from concurrent.futures import Future

from application.shard.app import Outcome
from domain.commands import Command, PlaceOrder
from infra.bench.flow import generate_commands
from infra.bootstrap import make_shard_app, make_writer
from infra.settings import Settings


def main(dsn: str, shard: str, count: int) -> None:
    settings = Settings.from_env()
    app = make_shard_app(settings, shard, dsn=dsn)
    app.recover()
    writer = make_writer(settings, app).start()
    out = sys.stdout

    def report(command: Command, future: Future[Outcome]) -> None:
        if future.exception() is not None:
            return
        outcome = future.result()
        label = command.client_order_id if isinstance(command, PlaceOrder) else "-"
        out.write(f"ACK {outcome.seq} {type(command).__name__} {command.account} {label}\n")
        out.flush()

    print("READY", flush=True)
    for command in generate_commands(shard, app.instruments, count, seed=5):
        writer.submit(command).add_done_callback(lambda f, c=command: report(c, f))
    writer.stop(timeout=600)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
