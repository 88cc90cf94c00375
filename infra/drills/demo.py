"""`make demo`: a generated order flow through a real shard on PostgreSQL, then recovery proofs."""

from __future__ import annotations

from urllib.parse import urlsplit

from infra.bench.flow import generate_commands
from infra.bench.writer_load import drive
from infra.bootstrap import drop_database, make_shard_app, make_writer, migrate
from infra.cli.progress import Progress
from infra.settings import Settings


def run_demo(settings: Settings, *, commands: int) -> int:
    shard = next(iter(settings.shards()))
    url = urlsplit(settings.pg_dsn)
    dsn = url._replace(path=f"{url.path or '/exchange_dr'}_demo").geturl()
    drop_database(dsn)
    migrate(dsn)
    app = make_shard_app(settings, shard, dsn=dsn)
    app.recover()
    flow = list(generate_commands(shard, app.instruments, commands, seed=42))
    writer = make_writer(settings, app).start()
    with Progress("orders", len(flow), force=True) as bar:
        stats = drive(writer, flow, in_flight=256, on_done=bar.update_to)
    writer.stop()
    live_hash = app.engine.state_hash()
    app.engine.validate_internal_state()
    depth = {s: app.engine.depth(s, 3) for s in settings.shards()[shard]}
    seq = app.seq
    app.close()

    recovering = make_shard_app(settings, shard, dsn=dsn)
    recovery = recovering.recover()
    recovering.close()
    scratch = make_shard_app(settings, shard, dsn=dsn)
    replay = scratch.recover(from_scratch=True)
    scratch.close()

    ok = live_hash == recovery.state_hash == replay.state_hash
    print()
    print(f"exchange-dr demo: shard {shard}, database {urlsplit(dsn).path.lstrip('/')}")
    rows = [
        ("commands sent", f"{stats.submitted:,}"),
        ("acknowledged (durable)", f"{stats.acked:,}"),
        ("refused by the domain", f"{stats.domain_errors:,}"),
        ("failed", f"{stats.failures:,}"),
        ("throughput", f"{stats.submitted / stats.seconds:,.0f} commands/s"),
        (
            "ack latency p50 / p99",
            f"{stats.percentile_ms(50):.1f} / {stats.percentile_ms(99):.1f} ms",
        ),
        ("WAL head seq", f"{seq:,}"),
        (
            "recovery (checkpoint + tail)",
            f"{recovery.seconds:.2f} s, from seq {recovery.from_checkpoint_seq:,}",
        ),
        ("replay from scratch", f"{replay.events:,} events in {replay.seconds:.2f} s"),
        ("state hash live", live_hash[:16]),
        ("state hash recovered", recovery.state_hash[:16]),
        ("state hash replayed", replay.state_hash[:16]),
        ("all three equal", "yes" if ok else "NO"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    for symbol, book in depth.items():
        print(f"  book {symbol}: {book}")
    return 0 if ok and stats.failures == 0 else 1
