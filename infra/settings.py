"""Process settings, read once from ``EXDR_*`` environment variables.

Every knob lives here, and only here (tests/unit/test_settings_env.py checks that no other module
reads the environment), so that the CLI, the node, the REST facade, the workers and the tests
agree on addresses and tuning. ``Settings.from_env()`` validates eagerly: a bad value raises
``ValueError`` naming the variable, at start-up rather than on first use. The result is passed
in to whatever needs it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from application.replication.quorum import QuorumError, ReplicaKind, check_replica_set
from application.wal.auth import DEVELOPMENT_KEY, DEVELOPMENT_KEY_ID, ReplicationKeys
from infra.security_settings import KafkaSecurity, SecuritySettings

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


def _optional_int(env: Mapping[str, str], var: str, *, minimum: int) -> int | None:
    if not env.get(var, "").strip():
        return None
    return _int(env, var, 0, minimum=minimum)


def _ms(env: Mapping[str, str], var: str, default_s: float) -> float:
    """A duration given in milliseconds (fractions allowed), returned in seconds; > 0."""
    raw = env.get(var)
    if raw is None:
        return default_s
    try:
        value = float(raw.strip()) / 1000
    except ValueError:
        raise ValueError(f"{var}: expected milliseconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{var}: must be > 0, got {raw!r}")
    return value


def _int_set(env: Mapping[str, str], var: str) -> frozenset[int]:
    raw = env.get(var, "")
    try:
        return frozenset(int(s) for s in raw.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"{var}: expected integers separated by commas, got {raw!r}") from None


def _url(env: Mapping[str, str], var: str) -> str | None:
    value = env.get(var, "").strip()
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{var}: expected an http(s) URL, got {value!r}")
    return value


def _znode_path(env: Mapping[str, str], var: str, default: str) -> str:
    """An absolute ZooKeeper path such as ``/exdr/prod``: no empty or relative segments."""
    value = _text(env, var, default).rstrip("/")
    parts = value.split("/")
    if (
        not value.startswith("/")
        or any(p in ("", ".", "..") for p in parts[1:])
        or any(c.isspace() for c in value)
    ):
        raise ValueError(f"{var}: expected an absolute path such as /exdr, got {value!r}")
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
    "standby=postgresql://postgres@127.0.0.1:5432/exchange_dr_standby|http://127.0.0.1:8081;"
    "witness=postgresql://postgres@127.0.0.1:5432/exchange_dr_witness|http://127.0.0.1:8082"
    "|witness"
)

# the ZooKeeper ensemble of scripts/services.sh: one member per site
DEFAULT_ZK_HOSTS = "127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183"


@dataclass(frozen=True, slots=True)
class Region:
    """One replica of every shard on a site of its own: its event store and its REST facade.
    A full region keeps the hot state and may lead; a witness only stores and confirms the WAL."""

    name: str
    pg_dsn: str
    api_url: str
    kind: ReplicaKind = ReplicaKind.FULL

    @property
    def promotable(self) -> bool:
        return self.kind is ReplicaKind.FULL


def parse_regions(spec: str, var: str = "EXDR_REGIONS") -> tuple[Region, ...]:
    """Parse ``name=DSN|URL[|witness];...``; at least one region, names unique, and at least
    one that may lead."""
    regions: list[Region] = []
    for part in spec.split(";"):
        if not part.strip():
            continue
        name, sep, rest = part.partition("=")
        dsn, bar, tail = rest.partition("|")
        url, _, kind_text = tail.partition("|")
        name, dsn, url = name.strip(), dsn.strip(), url.strip()
        if not sep or not bar or not _is_word(name):
            raise ValueError(
                f"{var}: expected 'region=DSN|URL[|witness];...', got {part.strip()!r}"
            )
        _dsn({var: dsn}, var, dsn)
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{var}: region {name!r} needs an http(s) URL, got {url!r}")
        kind_text = kind_text.strip().lower() or ReplicaKind.FULL.value
        if kind_text not in {k.value for k in ReplicaKind}:
            choices = ", ".join(k.value for k in ReplicaKind)
            raise ValueError(
                f"{var}: region {name!r} kind must be one of {choices}, got {kind_text!r}"
            )
        if any(r.name == name for r in regions):
            raise ValueError(f"{var}: region {name!r} is listed twice")
        regions.append(Region(name, dsn, url.rstrip("/"), ReplicaKind(kind_text)))
    if not regions:
        raise ValueError(f"{var}: no regions configured")
    if not any(r.promotable for r in regions):
        raise ValueError(f"{var}: every region is a witness; at least one must be able to lead")
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
class FailoverSettings:
    """The failover manager's timing (infra/failover/controller.py), in seconds."""

    health_interval_s: float = 1.0  # EXDR_HEALTH_INTERVAL_MS
    failover_after_s: float = 5.0  # EXDR_FAILOVER_AFTER_MS
    max_lag_s: float = 2.0  # EXDR_MAX_STANDBY_LAG_MS
    store_loss_after_s: float = 1.0  # EXDR_STORE_LOSS_AFTER_MS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FailoverSettings:
        d = cls()
        return cls(
            health_interval_s=_ms(env, "EXDR_HEALTH_INTERVAL_MS", d.health_interval_s),
            failover_after_s=_ms(env, "EXDR_FAILOVER_AFTER_MS", d.failover_after_s),
            max_lag_s=_ms(env, "EXDR_MAX_STANDBY_LAG_MS", d.max_lag_s),
            store_loss_after_s=_ms(env, "EXDR_STORE_LOSS_AFTER_MS", d.store_loss_after_s),
        )


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """Fault injection, for drills only: unset in production."""

    tamper_seqs: frozenset[int] = frozenset()  # EXDR_FAULT_TAMPER_SEQS: altered in transit
    stall_after_seq: int | None = None  # EXDR_FAULT_STALL_AFTER_SEQ: a standby stops applying
    commit_delay_ms: int = 0  # EXDR_FAULT_COMMIT_DELAY_MS: the writer waits before each commit
    failed_promotions: int = 0  # EXDR_FAULT_FAILED_PROMOTIONS: fail after take_leadership

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FaultSettings:
        return cls(
            tamper_seqs=_int_set(env, "EXDR_FAULT_TAMPER_SEQS"),
            stall_after_seq=_optional_int(env, "EXDR_FAULT_STALL_AFTER_SEQ", minimum=0),
            commit_delay_ms=_int(env, "EXDR_FAULT_COMMIT_DELAY_MS", 0, minimum=0, maximum=10_000),
            failed_promotions=_int(env, "EXDR_FAULT_FAILED_PROMOTIONS", 0, minimum=0),
        )


def _number(env: Mapping[str, str], var: str, default: float, minimum: float) -> float:
    raw = env.get(var)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"{var}: expected a number, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{var}: must be >= {minimum:g}, got {raw.strip()}")
    return value


@dataclass(frozen=True, slots=True)
class ArchiveOptions:
    """WAL retention and its archive (infra/wal/retention_settings.py builds the policy)."""

    url: str = ""  # EXDR_ARCHIVE_URL; "{database}" becomes the region's database name
    retain_records: int = 1_000_000  # EXDR_WAL_RETAIN_RECORDS
    max_hold_s: float = 3600.0  # EXDR_ARCHIVE_MAX_HOLD_S
    segment_records: int = 100_000  # EXDR_ARCHIVE_SEGMENT_RECORDS
    checkpoints_keep: int = 3  # EXDR_CHECKPOINTS_KEEP
    interval_s: float = 10.0  # EXDR_ARCHIVE_INTERVAL_S
    # EXDR_ARCHIVE_READ_MODELS: "wait" (archive nothing the region's read models have not
    # projected; no tracking row holds archiving) or "ignore" (a database whose history
    # nobody serves from its read models)
    read_models: str = "wait"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ArchiveOptions:
        d = cls()
        return cls(
            url=env.get("EXDR_ARCHIVE_URL", "").strip(),
            retain_records=int(_number(env, "EXDR_WAL_RETAIN_RECORDS", d.retain_records, 0)),
            max_hold_s=_number(env, "EXDR_ARCHIVE_MAX_HOLD_S", d.max_hold_s, 0),
            segment_records=int(_number(env, "EXDR_ARCHIVE_SEGMENT_RECORDS", d.segment_records, 1)),
            checkpoints_keep=int(_number(env, "EXDR_CHECKPOINTS_KEEP", d.checkpoints_keep, 1)),
            interval_s=_number(env, "EXDR_ARCHIVE_INTERVAL_S", d.interval_s, 0.1),
            read_models=_choice(env, "EXDR_ARCHIVE_READ_MODELS", d.read_models, ("wait", "ignore")),
        )


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a process of ours is configured with; each field comes from the `EXDR_*`
    variable of the same name (README, "Settings"), grouped where a part owns several."""

    pg_dsn: str = "postgresql://postgres@127.0.0.1:5432/exchange_dr"
    kafka_bootstrap: str = "127.0.0.1:9092"
    zk_hosts: str = DEFAULT_ZK_HOSTS
    var_dir: Path = REPO_ROOT / "var"
    region: str = "primary"
    shard_map: ShardMap = DEFAULT_SHARD_MAP
    batch_max: int = 100
    batch_wait_ms: int = 0
    checkpoint_every: int = 10000
    checkpoint_fork: bool = True
    snapshot_every: int = 100
    # records of a shard's unprojected tail indexed at start before commands are taken; a longer
    # tail is indexed in the background, listings answer 503 warming_up meanwhile
    overlay_sync_records: int = 50_000
    # idempotency keys held in the in-memory filters (about 1.8 bytes each); past it, keys not
    # among the recent ones are looked up in the store (application/shard/keys.py)
    key_filter_max_keys: int = 20_000_000
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    regions: tuple[Region, ...] = parse_regions(DEFAULT_REGIONS)
    replication_mode: str = "sync"
    sync_policy: str = "strict"
    sync_timeout_ms: int = 1000
    topic_prefix: str = "exdr"
    kafka_fetch_wait_ms: int | None = None  # None: the consumer's own default
    zk_root: str = "/exdr/exdr"  # EXDR_ZK_ROOT; from the environment, /exdr/<topic_prefix>
    zk_session_ms: int = 2000
    leader_region: str | None = None  # who leads a brand-new shard (None: the first region)
    peer_token: str = ""  # shared by the regions: the peer link (records and confirmations)
    failover: FailoverSettings = FailoverSettings()
    alert_webhook: str | None = None
    gc_tuned: bool = True
    # the node projects its region's read models up to the confirmed point (infra/node/
    # projection.py); off: `exchange-dr projections run` does it from the topics
    project_in_node: bool = True
    api_leads: bool = True  # `exchange-dr serve` (no ZooKeeper): lead every shard, or none
    leader_url: str | None = None  # ... and the leader's facade, told to clients of a non-leader
    operator_key: str = ""  # `exchange-dr switchover`
    drill_zk_session_ms: int | None = None  # the drill harness's session for its nodes
    faults: FaultSettings = FaultSettings()
    archive: ArchiveOptions = ArchiveOptions()
    security: SecuritySettings = field(default_factory=SecuritySettings)  # keys, limits, TLS
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
        regions = parse_regions(e.get("EXDR_REGIONS", DEFAULT_REGIONS))
        topic_prefix = _text(e, "EXDR_TOPIC_PREFIX", d.topic_prefix)
        leader_region = e.get("EXDR_LEADER_REGION", "").strip() or None
        if leader_region is not None and all(r.name != leader_region for r in regions):
            known = ", ".join(r.name for r in regions)
            raise ValueError(
                f"EXDR_LEADER_REGION: {leader_region!r} is not a configured region ({known})"
            )
        if leader_region is not None and not any(
            r.name == leader_region and r.promotable for r in regions
        ):
            raise ValueError(f"EXDR_LEADER_REGION: {leader_region!r} is a witness; it never leads")
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
            overlay_sync_records=_int(
                e, "EXDR_OVERLAY_SYNC_RECORDS", d.overlay_sync_records, minimum=0
            ),
            key_filter_max_keys=_int(
                e, "EXDR_KEY_FILTER_MAX_KEYS", d.key_filter_max_keys, minimum=1
            ),
            api_host=_text(e, "EXDR_API_HOST", d.api_host),
            api_port=_int(e, "EXDR_API_PORT", d.api_port, minimum=1, maximum=65535),
            regions=regions,
            replication_mode=_choice(e, "EXDR_REPLICATION", "sync", ("sync", "async")),
            sync_policy=_choice(e, "EXDR_SYNC_POLICY", "strict", ("strict", "degrade")),
            sync_timeout_ms=_int(e, "EXDR_SYNC_TIMEOUT_MS", d.sync_timeout_ms, minimum=1),
            topic_prefix=topic_prefix,
            kafka_fetch_wait_ms=_optional_int(e, "EXDR_KAFKA_FETCH_WAIT_MS", minimum=1),
            zk_root=_znode_path(e, "EXDR_ZK_ROOT", f"/exdr/{topic_prefix}"),
            zk_session_ms=_int(e, "EXDR_ZK_SESSION_MS", d.zk_session_ms, minimum=1),
            leader_region=leader_region,
            peer_token=e.get("EXDR_PEER_TOKEN", "").strip(),
            failover=FailoverSettings.from_env(e),
            alert_webhook=_url(e, "EXDR_ALERT_WEBHOOK"),
            gc_tuned=_choice(e, "EXDR_GC", "tuned", ("tuned", "default")) == "tuned",
            project_in_node=_choice(e, "EXDR_PROJECT_IN_NODE", "1", ("1", "0")) == "1",
            api_leads=_choice(e, "EXDR_API_LEADS", "all", ("all", "none")) == "all",
            leader_url=_url(e, "EXDR_LEADER_URL"),
            operator_key=e.get("EXDR_OPERATOR_KEY", "").strip(),
            drill_zk_session_ms=_optional_int(e, "EXDR_DRILL_ZK_SESSION_MS", minimum=1),
            faults=FaultSettings.from_env(e),
            archive=ArchiveOptions.from_env(e),
            security=SecuritySettings.from_env(e),
            replication_key=_replication_key(e),
            replication_key_id=_key_id(e),
            replication_keys_accepted=tuple(
                parse_accepted_keys(e.get("EXDR_REPLICATION_KEYS_ACCEPTED", "")).items()
            ),
        )

    @property
    def kafka_security(self) -> KafkaSecurity:
        """The Kafka clients' security (projections' BrokerSettings asks for it by this name)."""
        return self.security.kafka

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

    @property
    def preferred_leader(self) -> str:
        """Who leads a brand-new cluster (afterwards ZooKeeper decides): the first full region
        unless EXDR_LEADER_REGION names one."""
        return self.leader_region or next(r.name for r in self.regions if r.promotable)

    def peers(self, name: str) -> tuple[Region, ...]:
        """Every configured region except `name`."""
        return tuple(r for r in self.regions if r.name != name)

    def promotable_peers(self, name: str) -> tuple[Region, ...]:
        """The regions other than `name` that may lead (a handover goes to one of these)."""
        return tuple(r for r in self.peers(name) if r.promotable)

    @property
    def replicas(self) -> int:
        """Copies of every shard: one per configured region, witnesses included."""
        return len(self.regions)

    def replica_set_problem(self) -> str | None:
        """Why this replica set cannot keep RPO 0 and a leader through the loss of one site
        (None when it can). Two regions stay allowed for small setups: it is a warning."""
        try:
            check_replica_set({r.name: r.kind for r in self.regions})
        except QuorumError as exc:
            return str(exc)
        return None

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
