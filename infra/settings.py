"""Process settings, read once from ``EXDR_*`` environment variables.

Every knob lives here so that the CLI, the REST facade, the workers and the tests agree on
addresses and tuning. ``Settings.from_env()`` validates eagerly: a bad value raises ``ValueError``
naming the variable, at start-up rather than on first use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from application.wal.auth import DEVELOPMENT_KEY, DEVELOPMENT_KEY_ID, ReplicationKeys

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_SHARDS = "shard-1=BTCUSDT,ETHUSDT;shard-2=SOLUSDT"

ShardMap = tuple[tuple[str, tuple[str, ...]], ...]


def parse_shards(spec: str, var: str = "EXDR_SHARDS") -> ShardMap:
    """Parse ``name=SYM,SYM;name=SYM``. Every shard needs a symbol; a symbol has one shard."""
    shards: list[tuple[str, tuple[str, ...]]] = []
    owner: dict[str, str] = {}
    for part in spec.split(";"):
        if not part.strip():
            continue
        name, sep, syms = part.partition("=")
        name = name.strip()
        if not sep or not _is_word(name):
            raise ValueError(f"{var}: expected 'shard=SYMBOL,SYMBOL;...', got {part.strip()!r}")
        if any(name == n for n, _ in shards):
            raise ValueError(f"{var}: shard {name!r} is listed twice")
        symbols = tuple(s.strip() for s in syms.split(",") if s.strip())
        if not symbols:
            raise ValueError(f"{var}: shard {name!r} has no symbols")
        for sym in symbols:
            if not _is_word(sym):
                raise ValueError(f"{var}: bad symbol {sym!r} in shard {name!r}")
            if sym in owner:
                raise ValueError(f"{var}: symbol {sym!r} is in both {owner[sym]!r} and {name!r}")
            owner[sym] = name
        shards.append((name, symbols))
    if not shards:
        raise ValueError(f"{var}: no shards configured")
    return tuple(shards)


def _is_word(s: str) -> bool:
    return bool(s) and not any(c.isspace() or c in "=,;" for c in s)


def _text(env: Mapping[str, str], var: str, default: str) -> str:
    value = env.get(var, default).strip()
    if not value:
        raise ValueError(f"{var}: must not be empty")
    return value


def _int(
    env: Mapping[str, str], var: str, default: int, *, minimum: int, maximum: int | None = None
) -> int:
    raw = env.get(var)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"{var}: expected an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"{var}: must be >= {minimum}{upper}, got {value}")
    return value


def _dsn(env: Mapping[str, str], var: str, default: str) -> str:
    value = _text(env, var, default)
    if not value.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"{var}: expected a postgresql:// URL, got {value!r}")
    return value


def _host_ports(env: Mapping[str, str], var: str, default: str) -> str:
    """``host:port[,host:port...]``; a ZooKeeper chroot suffix (``/path``) is allowed."""
    value = _text(env, var, default)
    hosts = value.split("/", 1)[0]
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{var}: expected host:port[,host:port...], got {value!r}")
    return value


def _path(env: Mapping[str, str], var: str, default: Path) -> Path:
    raw = env.get(var)
    if raw is None:
        return default
    if not raw.strip():
        raise ValueError(f"{var}: must not be empty")
    path = Path(raw.strip()).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


DEFAULT_SHARD_MAP = parse_shards(DEFAULT_SHARDS)

DEFAULT_REGIONS = (
    "primary=postgresql://postgres@127.0.0.1:5432/exchange_dr|http://127.0.0.1:8080;"
    "standby=postgresql://postgres@127.0.0.1:5432/exchange_dr_standby|http://127.0.0.1:8081"
)


@dataclass(frozen=True, slots=True)
class Region:
    """A full copy of the stack: its own event store and its own REST facade."""

    name: str
    pg_dsn: str
    api_url: str


def parse_regions(spec: str, var: str = "EXDR_REGIONS") -> tuple[Region, ...]:
    """Parse ``name=DSN|URL;name=DSN|URL``; at least one region, names unique."""
    regions: list[Region] = []
    for part in spec.split(";"):
        if not part.strip():
            continue
        name, sep, rest = part.partition("=")
        dsn, bar, url = rest.partition("|")
        name, dsn, url = name.strip(), dsn.strip(), url.strip()
        if not sep or not bar or not _is_word(name):
            raise ValueError(f"{var}: expected 'region=DSN|URL;...', got {part.strip()!r}")
        _dsn({var: dsn}, var, dsn)
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{var}: region {name!r} needs an http(s) URL, got {url!r}")
        if any(r.name == name for r in regions):
            raise ValueError(f"{var}: region {name!r} is listed twice")
        regions.append(Region(name, dsn, url.rstrip("/")))
    if not regions:
        raise ValueError(f"{var}: no regions configured")
    return tuple(regions)


MIN_KEY_CHARS = 16


def parse_accepted_keys(spec: str, var: str = "EXDR_REPLICATION_KEYS_ACCEPTED") -> dict[str, str]:
    """Parse ``id=key,id=key``: older replication keys still accepted during a rotation."""
    keys: dict[str, str] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        key_id, sep, key = part.partition("=")
        key_id, key = key_id.strip(), key.strip()
        if not sep or not _is_word(key_id) or ":" in key_id:
            raise ValueError(f"{var}: expected 'id=key,id=key', got {key_id!r}")
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(f"{var}: key {key_id!r} is shorter than {MIN_KEY_CHARS} characters")
        keys[key_id] = key
    return keys


def _choice(env: Mapping[str, str], var: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(var, default).strip().lower()
    if value not in choices:
        raise ValueError(f"{var}: expected one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    pg_dsn: str = "postgresql://postgres@127.0.0.1:5432/exchange_dr"
    kafka_bootstrap: str = "127.0.0.1:9092"
    zk_hosts: str = "127.0.0.1:2181"
    var_dir: Path = REPO_ROOT / "var"
    region: str = "primary"
    shard_map: ShardMap = DEFAULT_SHARD_MAP
    batch_max: int = 100
    batch_wait_ms: int = 0
    checkpoint_every: int = 10000
    checkpoint_fork: bool = True
    snapshot_every: int = 100
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    regions: tuple[Region, ...] = parse_regions(DEFAULT_REGIONS)
    replication_mode: str = "sync"
    sync_policy: str = "strict"
    sync_timeout_ms: int = 1000
    topic_prefix: str = "exdr"
    peer_token: str = ""  # shared by the regions: the peer link (records and confirmations)
    # shared by the regions: the MAC of every WAL record and confirmation (application/wal/
    # auth.py); the id names it in each tag, older keys stay accepted during a rotation
    replication_key: str = field(default="", repr=False)
    replication_key_id: str = "k1"
    replication_keys_accepted: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``); unset variables keep defaults."""
        e = os.environ if env is None else env
        d = cls()
        return cls(
            pg_dsn=_dsn(e, "EXDR_PG_DSN", d.pg_dsn),
            kafka_bootstrap=_host_ports(e, "EXDR_KAFKA_BOOTSTRAP", d.kafka_bootstrap),
            zk_hosts=_host_ports(e, "EXDR_ZK_HOSTS", d.zk_hosts),
            var_dir=_path(e, "EXDR_VAR_DIR", d.var_dir),
            region=_text(e, "EXDR_REGION", d.region),
            shard_map=parse_shards(e.get("EXDR_SHARDS", DEFAULT_SHARDS), "EXDR_SHARDS"),
            batch_max=_int(e, "EXDR_BATCH_MAX", d.batch_max, minimum=1),
            batch_wait_ms=_int(e, "EXDR_BATCH_WAIT_MS", d.batch_wait_ms, minimum=0),
            checkpoint_every=_int(e, "EXDR_CHECKPOINT_EVERY", d.checkpoint_every, minimum=1),
            checkpoint_fork=_choice(e, "EXDR_CHECKPOINT_FORK", "1", ("1", "0")) == "1",
            snapshot_every=_int(e, "EXDR_SNAPSHOT_EVERY", d.snapshot_every, minimum=1),
            api_host=_text(e, "EXDR_API_HOST", d.api_host),
            api_port=_int(e, "EXDR_API_PORT", d.api_port, minimum=1, maximum=65535),
            regions=parse_regions(e.get("EXDR_REGIONS", DEFAULT_REGIONS)),
            replication_mode=_choice(e, "EXDR_REPLICATION", "sync", ("sync", "async")),
            sync_policy=_choice(e, "EXDR_SYNC_POLICY", "strict", ("strict", "degrade")),
            sync_timeout_ms=_int(e, "EXDR_SYNC_TIMEOUT_MS", d.sync_timeout_ms, minimum=1),
            topic_prefix=_text(e, "EXDR_TOPIC_PREFIX", d.topic_prefix),
            peer_token=e.get("EXDR_PEER_TOKEN", "").strip(),
            replication_key=_replication_key(e),
            replication_key_id=_key_id(e),
            replication_keys_accepted=tuple(
                parse_accepted_keys(e.get("EXDR_REPLICATION_KEYS_ACCEPTED", "")).items()
            ),
        )

    def replication_keys(self) -> ReplicationKeys:
        """The keys records and confirmations are signed and verified with. Without
        EXDR_REPLICATION_KEY, a development key everybody knows (the node warns)."""
        if not self.replication_key:
            keys = {DEVELOPMENT_KEY_ID: DEVELOPMENT_KEY}
            keys.update((k, v.encode()) for k, v in self.replication_keys_accepted)
            return ReplicationKeys(DEVELOPMENT_KEY_ID, keys)
        keys = {k: v.encode() for k, v in self.replication_keys_accepted}
        keys[self.replication_key_id] = self.replication_key.encode()
        return ReplicationKeys(self.replication_key_id, keys)

    def region_named(self, name: str) -> Region:
        for region in self.regions:
            if region.name == name:
                return region
        known = ", ".join(r.name for r in self.regions)
        raise ValueError(f"unknown region {name!r}; configured: {known}")

    def peers(self, name: str) -> tuple[Region, ...]:
        """Every configured region except `name`."""
        return tuple(r for r in self.regions if r.name != name)

    def shards(self) -> dict[str, tuple[str, ...]]:
        """Shard name -> its symbols, in configuration order."""
        return dict(self.shard_map)


def _replication_key(env: Mapping[str, str]) -> str:
    key = env.get("EXDR_REPLICATION_KEY", "").strip()
    if key and len(key) < MIN_KEY_CHARS:
        raise ValueError(f"EXDR_REPLICATION_KEY: shorter than {MIN_KEY_CHARS} characters")
    return key


def _key_id(env: Mapping[str, str]) -> str:
    key_id = _text(env, "EXDR_REPLICATION_KEY_ID", "k1")
    if not _is_word(key_id) or ":" in key_id:
        raise ValueError(f"EXDR_REPLICATION_KEY_ID: a word without ':', got {key_id!r}")
    return key_id
