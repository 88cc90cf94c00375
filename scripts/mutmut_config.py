"""mutmut hooks for scripts/mutants.sh: each safety-critical module is mutated only where it is
safety-critical and tried against the tests that cover it (not the whole suite), so a run takes
minutes. A survivor is a changed line no test notices."""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from typing import Any

UNIT = "tests/unit"


@dataclass(frozen=True)
class Target:
    path: str
    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()  # empty: the whole module


TARGETS = {
    "sync_gate": Target(
        "application/replication/sync_gate.py",
        (f"{UNIT}/test_sync_gate.py",),
    ),
    "controller": Target(
        "infra/failover/controller.py",
        # the transition table first: with -x a killed mutant stops at its first failure.
        # The pure rules (infra/failover/rules.py: test_retake_rule.py, test_failover_rules.py)
        # are not this module: their tests cannot notice a change to it.
        (
            f"{UNIT}/test_*controller*.py",
            f"{UNIT}/test_failover_defects.py",
            f"{UNIT}/test_confirmed_seq.py",
            f"{UNIT}/test_stale_epochs.py",
            f"{UNIT}/test_read_confirmation.py",
            f"{UNIT}/test_slow_follower_confirmations.py",
        ),
    ),
    "replicator": Target(
        "projections/replication/replicator.py",
        (
            f"{UNIT}/test_replicator_bookkeeping.py",
            f"{UNIT}/test_replicator_reseed.py",
            f"{UNIT}/test_replication_trust.py",
            f"{UNIT}/test_stale_epochs.py",
            f"{UNIT}/test_two_paths.py",
            f"{UNIT}/test_wire_runs.py",
        ),
    ),
    "wal_verification": Target(
        "application/wal/records.py",
        (
            f"{UNIT}/test_wal_record_checks.py",
            f"{UNIT}/test_wire_runs.py",
            f"{UNIT}/test_two_paths.py",
            f"{UNIT}/test_replay_decoding.py",
            f"{UNIT}/test_peer_ack.py",
        ),
    ),
    "failover_rules": Target(
        "infra/failover/rules.py",
        (
            f"{UNIT}/test_failover_rules.py",
            f"{UNIT}/test_retake_rule.py",
            f"{UNIT}/test_stale_epochs.py",
        ),
    ),
    "quorum_promotion": Target(
        "infra/failover/quorum_promotion.py",
        (
            f"{UNIT}/test_quorum_promotion_glue.py",
            f"{UNIT}/test_quorum_promotion.py",
            f"{UNIT}/test_quorum.py",
        ),
    ),
    "quarantine": Target(
        "infra/wal/pg_wal.py",
        ("tests/integration/test_quarantine.py",),
        ("first_divergent_seq", "quarantine_from"),
    ),
}


def selected_names() -> list[str]:
    """The modules named in MUTANT_MODULES (every module when it is unset)."""
    names = os.environ.get("MUTANT_MODULES", "").replace(",", " ").split()
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown module(s) {unknown}; known: {sorted(TARGETS)}")
    return names or list(TARGETS)


def selected() -> list[Target]:
    return [TARGETS[name] for name in selected_names()]


def flatten_parenthesized_with(source: str) -> str:
    """The same module with each `with (a as b, c):` spread over lines written on one line,
    the lines it took left blank (so every other line keeps its number): mutmut 2 parses with
    parso, which does not know parenthesized context managers (Python 3.10)."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    for node in ast.walk(tree):
        if not isinstance(node, ast.With | ast.AsyncWith):
            continue
        header_end = node.body[0].lineno - 1  # the line of the closing "):"
        if node.items[0].context_expr.lineno == node.lineno:
            continue  # not parenthesized (a call spread over lines is left as it is)
        items = []
        for item in node.items:
            text = ast.get_source_segment(source, item.context_expr) or ""
            if item.optional_vars is not None:
                text += " as " + (ast.get_source_segment(source, item.optional_vars) or "")
            items.append(text)
        first = lines[node.lineno - 1]
        indent = first[: len(first) - len(first.lstrip())]
        keyword = "async with" if isinstance(node, ast.AsyncWith) else "with"
        lines[node.lineno - 1] = f"{indent}{keyword} {', '.join(items)}:\n"
        for number in range(node.lineno, header_end):
            lines[number] = "\n"
    flattened = "".join(lines)
    ast.parse(flattened)
    return flattened


def prepare_copy() -> None:
    """(on the scratch copy) Make the selected modules parseable by mutmut."""
    for target in selected():
        with open(target.path) as f:
            source = f.read()
        flattened = flatten_parenthesized_with(source)
        if flattened != source:
            with open(target.path, "w") as f:
                f.write(flattened)


def _existing(patterns: tuple[str, ...]) -> list[str]:
    import glob

    found = [path for pattern in patterns for path in sorted(glob.glob(pattern))]
    return list(dict.fromkeys(found))  # in the order given: the quickest to fail first


def pytest_command(tests: list[str]) -> str:
    """pytest, with every failure reported as exit 1: mutmut 2 counts only exit 1 as a killed
    mutant, so a mutant that breaks the import (pytest's exit 2, collection error) would
    otherwise pass for a survivor."""
    python = os.environ["MUTANT_PYTHON"]
    strict = "import sys, pytest; sys.exit(1 if pytest.main(sys.argv[1:]) else 0)"
    return f"{python} -c '{strict}' -x -q -p no:cacheprovider " + " ".join(tests)


def test_command(target: Target) -> str:
    return pytest_command(_existing(target.tests))


def _lines_of(target: Target) -> set[int] | None:
    """1-based line numbers of the target's functions (None: every line)."""
    if not target.functions:
        return None
    with open(target.path) as f:
        tree = ast.parse(f.read())
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
            node.name in target.functions
        ):
            end = node.end_lineno or node.lineno
            lines.update(range(node.lineno, end + 1))
    return lines


_LOG_LEVELS = {"debug", "info", "warning", "error", "critical", "exception"}


def _log_lines(path: str) -> set[int]:
    """1-based line numbers of the module's `log.<level>(...)` calls: what they change is the
    text of a log line, never a decision, so their mutants are not tried (each would only
    survive, at the cost of the whole test list). Alerts are not log calls: they are tried."""
    with open(path) as f:
        tree = ast.parse(f.read())
    lines: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "log"
            and node.func.attr in _LOG_LEVELS
        ):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


_BY_PATH = {
    target.path: (target, _lines_of(target), _log_lines(target.path)) for target in TARGETS.values()
}


def _in_range(line: int) -> bool:
    """MUTANT_LINES=first-last: only the module's lines in that range (a large module run as
    parts, each on a copy of its own; the rest of it is skipped in that part)."""
    wanted = os.environ.get("MUTANT_LINES", "")
    if not wanted:
        return True
    first, _, last = wanted.partition("-")
    return int(first or 1) <= line <= int(last or 10**9)


def pre_mutation(context: Any) -> None:
    found = _BY_PATH.get(os.path.normpath(context.filename))
    if found is None:
        context.skip = True
        return
    target, lines, log_lines = found
    line = context.current_line_index + 1
    if (lines is not None and line not in lines) or line in log_lines or not _in_range(line):
        context.skip = True
        return
    context.config.test_command = test_command(target)
