"""Settings of the trust boundary: API keys' cache, rate limits, the peer link's TLS, the
Kafka client's security. Read from ``EXDR_*`` variables with the rest (infra/settings.py),
validated eagerly; a bad value raises ``ValueError`` naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _number(env: Mapping[str, str], var: str, default: float, *, minimum: float) -> float:
    raw = env.get(var)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"{var}: expected a number, got {raw!r}") from None
    if not value >= minimum:  # also refuses nan
        raise ValueError(f"{var}: must be >= {minimum:g}, got {raw.strip()}")
    return value


def _file(env: Mapping[str, str], var: str) -> Path | None:
    raw = env.get(var, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    return path if path.is_absolute() else _ROOT / path


def parse_peer_urls(spec: str, var: str = "EXDR_PEER_URLS") -> dict[str, str]:
    """``region=https://host:port;...``: where each region's peer lane listens."""
    urls: dict[str, str] = {}
    for part in spec.split(";"):
        if not part.strip():
            continue
        name, sep, url = (s.strip() for s in part.partition("="))
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise ValueError(f"{var}: expected 'region=https://host:port;...', got {part!r}")
        if name in urls:
            raise ValueError(f"{var}: region {name!r} is listed twice")
        urls[name] = url.rstrip("/")
    return urls


@dataclass(frozen=True, slots=True)
class PeerTls:
    """The peer link's TLS: each region's certificate and key, signed by the CA they share;
    both ends verify the other's certificate against `ca` (mutual TLS)."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PeerTls | None:
        files = {var: _file(env, var) for var in ("EXDR_TLS_CERT", "EXDR_TLS_KEY", "EXDR_TLS_CA")}
        given = [var for var, path in files.items() if path is not None]
        if not given:
            return None
        if len(given) < 3:
            missing = ", ".join(var for var in files if var not in given)
            raise ValueError(f"{missing}: the peer link's TLS needs a certificate, key and CA")
        for var, path in files.items():
            if path is not None and not path.is_file():
                raise ValueError(f"{var}: no file {path} (make certs writes a development set)")
        cert, key, ca = files.values()
        assert cert is not None and key is not None and ca is not None
        return cls(cert, key, ca)


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How the Kafka clients authenticate and encrypt (PLAINTEXT for the local broker)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        var = "EXDR_KAFKA_SECURITY_PROTOCOL"
        protocol = env.get(var, "PLAINTEXT").strip().upper() or "PLAINTEXT"
        if protocol not in KAFKA_PROTOCOLS:
            choices = ", ".join(KAFKA_PROTOCOLS)
            raise ValueError(f"{var}: expected one of {choices}, got {protocol!r}")
        mechanism = env.get("EXDR_KAFKA_SASL_MECHANISM", "PLAIN").strip().upper() or "PLAIN"
        if mechanism not in SASL_MECHANISMS:
            raise ValueError(
                f"EXDR_KAFKA_SASL_MECHANISM: expected one of {', '.join(SASL_MECHANISMS)}, "
                f"got {mechanism!r}"
            )
        username = env.get("EXDR_KAFKA_SASL_USERNAME", "").strip()
        password = env.get("EXDR_KAFKA_SASL_PASSWORD", "")
        if protocol.startswith("SASL") and not (username and password):
            raise ValueError(
                f"{var}={protocol}: EXDR_KAFKA_SASL_USERNAME and EXDR_KAFKA_SASL_PASSWORD "
                "are needed"
            )
        ca_file = _file(env, "EXDR_KAFKA_CA")
        if ca_file is not None and not ca_file.is_file():
            raise ValueError(f"EXDR_KAFKA_CA: no file {ca_file}")
        return cls(protocol, mechanism, username, password, ca_file)

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    key_cache_ttl_s: float = 5.0  # a revoked key is refused everywhere within this
    key_cache_unknown_max: int = 10_000  # key ids remembered as unknown (LRU)
    rate_per_key: float = 1000.0  # requests/s of one API key; 0: no limit
    burst_per_key: float = 2000.0
    rate_per_address: float = 5000.0  # requests/s from one client address; 0: no limit
    burst_per_address: float = 10000.0
    peer_urls: Mapping[str, str] = field(default_factory=dict)  # region -> its peer lane
    peer_tls: PeerTls | None = None
    kafka: KafkaSecurity = field(default_factory=KafkaSecurity)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SecuritySettings:
        d = cls()
        rate_key = _number(env, "EXDR_RATE_LIMIT_KEY", d.rate_per_key, minimum=0)
        rate_address = _number(env, "EXDR_RATE_LIMIT_ADDRESS", d.rate_per_address, minimum=0)
        peer_urls = parse_peer_urls(env.get("EXDR_PEER_URLS", ""))
        peer_tls = PeerTls.from_env(env)
        if any(url.startswith("https://") for url in peer_urls.values()) and peer_tls is None:
            raise ValueError("EXDR_PEER_URLS: https needs EXDR_TLS_CERT, EXDR_TLS_KEY, EXDR_TLS_CA")
        return cls(
            key_cache_ttl_s=_number(env, "EXDR_KEY_CACHE_TTL_S", d.key_cache_ttl_s, minimum=0),
            key_cache_unknown_max=int(
                _number(env, "EXDR_KEY_CACHE_UNKNOWN_MAX", d.key_cache_unknown_max, minimum=1)
            ),
            rate_per_key=rate_key,
            burst_per_key=_number(env, "EXDR_RATE_BURST_KEY", max(1.0, 2 * rate_key), minimum=1),
            rate_per_address=rate_address,
            burst_per_address=_number(
                env, "EXDR_RATE_BURST_ADDRESS", max(1.0, 2 * rate_address), minimum=1
            ),
            peer_urls=peer_urls,
            peer_tls=peer_tls,
            kafka=KafkaSecurity.from_env(env),
        )
