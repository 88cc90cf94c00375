"""Settings are read from the environment in one place (infra/settings.py), validated once.

The first test reads the production tree's tokens: any other module that touches
`os.environ` / `os.getenv` fails it, named by file and line, unless it is allowed below for a
reason (handing an environment to a child process is not reading a setting).
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("domain", "application", "projections", "infra")
SETTINGS = Path("infra/settings.py")
ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}

# (file, the line's code) -> why it may touch the environment
ALLOWED = {
    (Path("infra/drills/cluster.py"), "**os.environ,"): (
        "the drill harness hands its own environment on to the nodes it starts"
    ),
    (
        Path("infra/bench/api.py"),
        'env = {**os.environ, "EXDR_PG_DSN": dsn, "EXDR_API_LEADS": "all"}',
    ): "the benchmark hands its own environment on to the server it starts",
}


def _env_uses(path: Path) -> list[tuple[int, str]]:
    """(line, code) of every name token that reaches the process environment."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME and token.string in ENV_NAMES:
            found.append((token.start[0], lines[token.start[0] - 1].strip()))
    return found


def test_only_settings_reads_the_environment() -> None:
    stray = []
    for top in PRODUCTION:
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative == SETTINGS:
                continue
            for line, code in _env_uses(path):
                if (relative, code) not in ALLOWED:
                    stray.append(f"{relative}:{line}: {code}")
    assert not stray, (
        "read settings through infra.settings.Settings (passed in), not the environment:\n"
        + "\n".join(stray)
    )


def test_the_check_sees_every_way_of_reading_the_environment(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\n"
        "from os import environ\n"
        "# os.environ in a comment is not a read\n"
        'a = os.environ.get("EXDR_X")\n'
        'b = os.getenv("EXDR_Y")\n'
        'c = environ["EXDR_Z"]\n'
        'd = "os.environ in a string is not a read either"\n'
    )
    assert [line for line, _ in _env_uses(sample)] == [2, 4, 5, 6]


def test_the_allow_list_has_no_stale_entries() -> None:
    for relative, code in ALLOWED:
        assert code in [c for _, c in _env_uses(ROOT / relative)], f"{relative}: {code}"


def test_every_variable_read_is_documented_in_the_readme() -> None:
    read = set(re.findall(r'"(EXDR_[A-Z_]+)"', (ROOT / SETTINGS).read_text()))
    readme = (ROOT / "README.md").read_text()
    assert read, "no variable found in infra/settings.py"
    assert [v for v in sorted(read) if f"`{v}`" not in readme] == []


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.topic_prefix == "exdr"
    assert settings.zk_root == "/exdr/exdr"
    assert settings.kafka_fetch_wait_ms is None
    assert settings.preferred_leader == settings.regions[0].name
    assert settings.failover.failover_after_s == 5.0
    assert settings.faults.tamper_seqs == frozenset()


def test_the_znode_root_is_configurable() -> None:
    assert Settings.from_env({"EXDR_ZK_ROOT": "/exchange/prod/"}).zk_root == "/exchange/prod"


def test_values_are_parsed_once_into_typed_fields() -> None:
    settings = Settings.from_env(
        {
            "EXDR_TOPIC_PREFIX": "t1",
            "EXDR_KAFKA_FETCH_WAIT_MS": "100",
            "EXDR_ZK_SESSION_MS": "600",
            "EXDR_LEADER_REGION": "standby",
            "EXDR_HEALTH_INTERVAL_MS": "100",
            "EXDR_FAILOVER_AFTER_MS": "500",
            "EXDR_ALERT_WEBHOOK": "http://127.0.0.1:9/alerts",
            "EXDR_GC": "default",
            "EXDR_API_LEADS": "none",
            "EXDR_FAULT_TAMPER_SEQS": "5, 40",
            "EXDR_FAULT_STALL_AFTER_SEQ": "7",
        }
    )
    assert settings.topic_prefix == "t1"
    assert settings.zk_root == "/exdr/t1"  # the prefix's by default
    assert settings.kafka_fetch_wait_ms == 100
    assert settings.zk_session_ms == 600
    assert settings.preferred_leader == "standby"
    assert settings.failover.health_interval_s == 0.1
    assert settings.failover.failover_after_s == 0.5
    assert settings.alert_webhook == "http://127.0.0.1:9/alerts"
    assert not settings.gc_tuned
    assert not settings.api_leads
    assert settings.faults.tamper_seqs == {5, 40}
    assert settings.faults.stall_after_seq == 7


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("EXDR_KAFKA_FETCH_WAIT_MS", "soon"),  # once silently ignored
        ("EXDR_KAFKA_FETCH_WAIT_MS", "0"),
        ("EXDR_ZK_SESSION_MS", "2s"),
        ("EXDR_HEALTH_INTERVAL_MS", "0"),
        ("EXDR_FAILOVER_AFTER_MS", "-5"),
        ("EXDR_MAX_STANDBY_LAG_MS", "two"),
        ("EXDR_STORE_LOSS_AFTER_MS", "nan"),
        ("EXDR_LEADER_REGION", "elsewhere"),
        ("EXDR_ALERT_WEBHOOK", "ftp://alerts"),
        ("EXDR_LEADER_URL", "leader:8080"),
        ("EXDR_GC", "off"),
        ("EXDR_API_LEADS", "some"),
        ("EXDR_FAULT_TAMPER_SEQS", "5,x"),
        ("EXDR_FAULT_STALL_AFTER_SEQ", "-1"),
        ("EXDR_DRILL_ZK_SESSION_MS", "fast"),
        ("EXDR_TOPIC_PREFIX", " "),
        ("EXDR_ZK_ROOT", "exdr/prod"),
        ("EXDR_ZK_ROOT", "/exdr//prod"),
        ("EXDR_ZK_ROOT", "/exdr/../prod"),
    ],
)
def test_a_bad_value_stops_with_an_error_naming_its_variable(var: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"^{var}: "):
        Settings.from_env({var: value})
