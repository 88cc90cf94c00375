#!/usr/bin/env bash
# Prepare a machine for development and tests; cheap to re-run.
#  - Debian packages the servers and checks need (zookeeper, promtool, openssl for
#    `make certs`), only when missing;
#  - .venv with python3.11, created when missing;
#  - `pip install -e '.[local,dev]'` only when pyproject.toml changed since the last install.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PYTHON="${PYTHON:-python3.11}"
VENV="$ROOT/.venv"
STAMP="$VENV/.pyproject.sha256"

missing=()
[[ -x /usr/share/zookeeper/bin/zkServer.sh ]] || missing+=(zookeeper)
command -v promtool >/dev/null || missing+=(prometheus)
command -v openssl >/dev/null || missing+=(openssl)
command -v "$PYTHON" >/dev/null || die "bootstrap: $PYTHON not found; install Python 3.11"
if ((${#missing[@]})); then
    apt_install "${missing[@]}"
fi

if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    log "creating $VENV with $PYTHON"
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        # Debian's own python3.11 has no ensurepip until python3.11-venv is installed.
        rm -rf "$VENV"
        apt_install python3.11-venv
        "$PYTHON" -m venv "$VENV"
    fi
fi

want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
    log "installing the project into $VENV (pyproject.toml changed)"
    (cd "$ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[local,dev]')
    echo "$want" >"$STAMP"
fi
