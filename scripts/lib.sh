# Shared by scripts/*.sh (sourced, not run). Resolves the repo root from this file's path, so the
# scripts work from any working directory.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# EXDR_VAR_DIR: same default and same rule as infra/settings.py (relative paths are under the repo).
VAR_DIR="${EXDR_VAR_DIR:-var}"
[[ "$VAR_DIR" == /* ]] || VAR_DIR="$ROOT/$VAR_DIR"

log() { printf '%s\n' "$*" >&2; }
die() { printf '%s\n' "$*" >&2; exit 1; }

_APT_UPDATED=0

# apt_install PKG... : install Debian packages, running `apt-get update` at most once per run.
apt_install() {
    local sudo=()
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root (or sudo) to apt-get install $*"
        sudo=(sudo)
    fi
    if [[ $_APT_UPDATED -eq 0 ]]; then
        log "apt-get update (to install: $*)"
        "${sudo[@]}" apt-get update -qq >&2
        _APT_UPDATED=1
    fi
    log "apt-get install $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >&2
}

# port_open HOST PORT : true when something accepts TCP connections there.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# pid_alive PIDFILE PATTERN : true when the pid in PIDFILE runs and its command line has PATTERN
# (guards against a stale pid file whose number was reused by another process).
pid_alive() {
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(<"$1")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"
}
