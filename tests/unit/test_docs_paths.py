"""Every file or folder of ours that the README, the runbook or a docstring names exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_PATH = re.compile(
    r"\b((?:domain|application|projections|infra|tests|scripts|monitoring|alembic|docs)"
    r"/[A-Za-z0-9_./-]+)"
)
_NOT_PATHS = {"application/json", "application/x-www-form-urlencoded"}


def _documents() -> list[Path]:
    tracked = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.yml", "*.sh", "Makefile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in tracked if (ROOT / name).is_file()]


def test_named_paths_exist() -> None:
    missing: list[str] = []
    for doc in _documents():
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for match in _PATH.finditer(line):
                path = match.group(1).rstrip(".,:;)`'\"")
                if path in _NOT_PATHS or "*" in path or "<" in path:
                    continue
                target = ROOT / path
                if not (target.exists() or target.with_suffix(".py").exists()):
                    missing.append(f"{doc.relative_to(ROOT)}:{number}: {path}")
    assert not missing, "documents name paths that do not exist:\n" + "\n".join(missing)
