"""The command line: every group registered in its place, usage and one-line errors kept."""

from __future__ import annotations

import pytest

from infra.cli.main import build_parser, main

COMMANDS = [
    "db", "replay", "checkpoint", "archive", "bench", "serve", "accounts", "keys", "node", "status",
    "projections", "switchover", "drill", "drills", "demo",
]  # fmt: skip


def test_every_command_group_is_registered_in_the_order_help_shows() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == COMMANDS


def test_a_dry_run_lists_the_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drills", "--schedule", "daily", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("schedule daily: 10 drills at ") and "unplanned x1" in out
    assert "profile defaults" in out and "site-loss x1" in out


def test_the_two_region_profile_leaves_the_site_drills_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["drills", "--schedule", "daily", "--profile", "tuned-degrade", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "profile tuned-degrade" in out and "unplanned x1" in out and "site-loss" not in out


def test_bad_input_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drill", "replay", "--repeat", "0"]) == 1
    err = capsys.readouterr().err
    assert err == "exchange-dr: --repeat, --rate and --seconds must be positive\n"


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "nothing"])
    assert exit_.value.code == 2
