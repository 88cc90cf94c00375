"""`exchange-dr replay` and `checkpoint`: a shard's state rebuilt from its WAL, or saved now."""

from __future__ import annotations

import argparse

from infra.cli.common import Commands, emit
from infra.settings import Settings


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bootstrap import make_shard_app
    from infra.cli.progress import Progress

    app = make_shard_app(settings, args.shard)
    try:
        with Progress("replay", 0) as bar:
            report = app.recover(from_scratch=args.from_scratch, progress=bar.update_to)
        other = app.recover(from_scratch=not args.from_scratch, upto_seq=report.seq)
    finally:
        app.close()
    matches = other.state_hash == report.state_hash and report.checkpoint_hash_matches is not False
    data = {
        "shard": args.shard,
        "from_scratch": args.from_scratch,
        "from_checkpoint_seq": report.from_checkpoint_seq,
        "seq": report.seq,
        "records": report.records,
        "events": report.events,
        "seconds": round(report.seconds, 4),
        "events_per_second": round(report.events / report.seconds, 1) if report.seconds else 0.0,
        "state_hash": report.state_hash,
        "matches_live": matches,
    }
    emit(data, args.json, f"replay of {args.shard}")
    return 0 if matches else 1


def cmd_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    from infra.bootstrap import make_shard_app

    app = make_shard_app(settings, args.shard)
    try:
        app.recover()
        checkpoint = app.checkpoint()
    finally:
        app.close()
    emit(
        {"shard": args.shard, "seq": checkpoint.seq, "state_hash": checkpoint.state_hash},
        args.json,
        "checkpoint written",
    )
    return 0


def register(sub: Commands) -> None:
    replay = sub.add_parser("replay", help="rebuild a shard's state from its WAL and compare")
    replay.add_argument("--shard", required=True)
    replay.add_argument("--from-scratch", action="store_true", help="ignore checkpoints")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(handler=cmd_replay)

    checkpoint = sub.add_parser("checkpoint", help="write a shard checkpoint now")
    checkpoint.add_argument("--shard", required=True)
    checkpoint.add_argument("--json", action="store_true")
    checkpoint.set_defaults(handler=cmd_checkpoint)
