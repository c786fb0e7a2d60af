#!/usr/bin/env bash
# local-slurm.sh: a real single-node SLURM (with slurmdbd accounting) for nkflow's CI.
#
#   bash tests/cluster/local-slurm.sh up       install if needed, start the daemons, wait for idle
#   bash tests/cluster/local-slurm.sh down     cancel our jobs, stop ONLY the daemons we started
#   bash tests/cluster/local-slurm.sh status   show our daemons and `sinfo`
#
# What it does (see ../shared/docs/SLURM.md for why each step is needed):
#   * installs Debian's munge slurm-client slurmctld slurmd slurmdbd mariadb-server with a
#     temporary /usr/sbin/policy-rc.d (exit 101) so that no service is started by dpkg;
#   * runs munged, a private MariaDB (127.0.0.1:13306), slurmdbd, slurmctld and slurmd as plain
#     processes (no systemd), with all state, pid and log files under $NKFLOW_SLURM_DIR
#     (default /tmp/nkflow-slurm);
#   * writes /etc/slurm/slurm.conf and /etc/slurm/slurmdbd.conf (so that sbatch/sacct/squeue
#     work from any shell without SLURM_CONF), but only when they are absent or were written by
#     this script (first line marker); a site's own configuration is never overwritten;
#   * registers cluster "localcluster", account "ci" and user root, partition "debug";
#   * waits until `sinfo` shows the node idle.
# `up` is idempotent: when our daemons are alive and the node is idle it does nothing.
# `down` only signals the pids recorded in our pid files (never by name).
# Exit status: 0 on success; 1 with a message naming the failed step otherwise.
set -euo pipefail

BASE="${NKFLOW_SLURM_DIR:-/tmp/nkflow-slurm}"
RUN="$BASE/run"
LOG="$BASE/log"
ETC=/etc/slurm
MARKER="# written by nkflow tests/cluster/local-slurm.sh"
DB_PORT=13306
DB_PASS="nkflow-ci-only"
CLUSTER=localcluster
PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

die() {
    echo "local-slurm.sh: ERROR: $*" >&2
    for f in "$LOG"/*.log "$LOG"/*.stderr "$LOG"/munge/*.log; do
        [[ -s "$f" ]] || continue
        echo "---- last lines of $f ----" >&2
        tail -n 15 "$f" >&2 || true
    done
    exit 1
}
say() { echo "local-slurm.sh: $*"; }

# A pid is "ours and alive" when it is in our pid file and not a zombie (kill -0 succeeds on
# zombies, so read /proc/PID/status instead).
alive() {
    local pid="$1"
    [[ -n "$pid" && -r "/proc/$pid/status" ]] || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status"
}
pid_of() { [[ -s "$RUN/$1.pid" ]] && tr -dc '0-9' <"$RUN/$1.pid" || true; }

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ "$(id -u)" -eq 0 ]] || die "need root to install ${missing[*]} (apt-get); run as root"
    command -v apt-get >/dev/null || die "apt-get not found: this script needs Debian/Ubuntu" \
        "packages ${PACKAGES[*]}"
    say "installing ${missing[*]} (Debian packages, no services started)"
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local rc=0
    {
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq &&
            apt-get install -y -qq --no-install-recommends "${missing[@]}"
    } >"$BASE/apt.log" 2>&1 || rc=$?
    [[ $own_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
    if [[ $rc -ne 0 ]]; then
        tail -n 20 "$BASE/apt.log" >&2
        die "could not install SLURM: 'apt-get install ${missing[*]}' failed (rc $rc," \
            "full log $BASE/apt.log). SLURM tests cannot run without it."
    fi
}

write_file_if_ours() {
    # write_file_if_ours PATH MODE < content
    local path="$1" mode="$2" tmp
    if [[ -e "$path" ]] && ! head -n 1 "$path" | grep -qF "$MARKER"; then
        die "$path exists and was not written by this script; refusing to overwrite a site" \
            "configuration. Move it away or run on a machine without SLURM configured."
    fi
    tmp="$(mktemp "$path.XXXX")"
    cat >"$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$path"
}

write_configs() {
    mkdir -p "$ETC" "$BASE/state" "$BASE/spool"
    local node_line mem_mb
    node_line="$(slurmd -C | head -n 1 | sed -E 's/^NodeName=[^ ]+ //; s/ RealMemory=[0-9]+//')"
    mem_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) * 9 / 10 / 1024))
    write_file_if_ours "$ETC/slurm.conf" 644 <<EOF
$MARKER
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
MinJobAge=300
ReturnToService=2
MpiDefault=none
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 $node_line RealMemory=$mem_mb
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    write_file_if_ours "$ETC/slurmdbd.conf" 600 <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
EOF
}

wait_for() {
    # wait_for SECONDS DESCRIPTION COMMAND...
    local secs="$1" what="$2"
    shift 2
    local i
    for ((i = 0; i < secs * 4; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    die "timed out after ${secs}s waiting for $what"
}

start_munge() {
    alive "$(pid_of munged)" && return 0
    [[ -s /etc/munge/munge.key ]] || {
        mkdir -p /etc/munge
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    }
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    mkdir -p "$LOG/munge" && chown munge:munge "$LOG/munge"
    if [[ -S /run/munge/munge.socket.2 ]] && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        die "a munged we did not start is already running (socket /run/munge/munge.socket.2);" \
            "stop it or run 'down' with the same NKFLOW_SLURM_DIR that started it"
    fi
    runuser -u munge -- munged --force --pid-file=/run/munge/nkflow-munged.pid \
        --log-file="$LOG/munge/munged.log" ||
        die "munged failed to start"
    wait_for 10 "munged pid file" test -s /run/munge/nkflow-munged.pid
    cp /run/munge/nkflow-munged.pid "$RUN/munged.pid"
    wait_for 10 "munge to answer" bash -c 'munge -n </dev/null | unmunge'
}

start_mariadb() {
    alive "$(pid_of mariadbd)" && return 0
    local datadir="$BASE/mysql" sock="$RUN/mariadb.sock"
    if [[ ! -d "$datadir/mysql" ]]; then
        mkdir -p "$datadir"
        chown mysql:mysql "$datadir"
        mariadb-install-db --no-defaults --user=mysql --datadir="$datadir" \
            --auth-root-authentication-method=socket >"$LOG/mariadb-install.log" 2>&1 ||
            die "mariadb-install-db failed (log $LOG/mariadb-install.log)"
    fi
    chown mysql:mysql "$RUN" 2>/dev/null || true
    setsid mariadbd --no-defaults --user=mysql --datadir="$datadir" \
        --bind-address=127.0.0.1 --port=$DB_PORT --skip-name-resolve --socket="$sock" \
        --pid-file="$RUN/mariadbd.pid" --log-error="$LOG/mariadbd.log" \
        </dev/null >/dev/null 2>&1 &
    wait_for 30 "MariaDB on $sock" mariadb --no-defaults -S "$sock" -u root -e 'SELECT 1'
    mariadb --no-defaults -S "$sock" -u root <<EOF || die "could not create the slurm database user"
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_slurmdbd() {
    alive "$(pid_of slurmdbd)" && return 0
    slurmdbd >"$LOG/slurmdbd.stderr" 2>&1 || die "slurmdbd failed to start"
    wait_for 30 "slurmdbd to answer sacctmgr" sacctmgr -n list cluster
}

register_accounting() {
    sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" ||
        sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
    sacctmgr -n -P list account format=account | grep -qx ci ||
        sacctmgr -i add account ci cluster="$CLUSTER" >/dev/null || die "sacctmgr add account failed"
    sacctmgr -n -P list user format=user | grep -qx root &&
        sacctmgr -n -P list assoc user=root format=account | grep -qx ci ||
        sacctmgr -i add user root account=ci cluster="$CLUSTER" >/dev/null ||
        die "sacctmgr add user failed"
}

node_idle() { sinfo -h -N -o '%T' 2>/dev/null | grep -qx idle; }

cmd_up() {
    mkdir -p "$BASE" "$RUN" "$LOG"
    install_packages
    if alive "$(pid_of slurmctld)" && alive "$(pid_of slurmd)" && node_idle; then
        say "already up (node idle); nothing to do"
        return 0
    fi
    write_configs
    start_munge
    start_mariadb
    start_slurmdbd
    register_accounting
    if ! alive "$(pid_of slurmctld)"; then
        slurmctld >"$LOG/slurmctld.stderr" 2>&1 || die "slurmctld failed to start"
        wait_for 20 "slurmctld pid file" test -s "$RUN/slurmctld.pid"
    fi
    if ! alive "$(pid_of slurmd)"; then
        slurmd -N localhost >"$LOG/slurmd.stderr" 2>&1 || die "slurmd failed to start"
        wait_for 20 "slurmd pid file" test -s "$RUN/slurmd.pid"
    fi
    # A node left DOWN by an earlier run comes back through ReturnToService=2; nudge it anyway.
    sleep 1
    if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(down|drain|drained|fail)'; then
        scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
    fi
    wait_for 60 "node localhost to be idle in sinfo" node_idle
    say "up: $(sinfo -h -N -o '%N %T %c CPUs %m MB') (dir $BASE)"
}

cmd_down() {
    if [[ ! -d "$RUN" ]]; then
        say "nothing to stop ($RUN absent)"
        return 0
    fi
    if alive "$(pid_of slurmctld)"; then
        # Only our private cluster runs here: every job in it is ours.
        scancel --full --quiet -u "$(id -un)" 2>/dev/null || true
    fi
    local d pid i
    for d in slurmd slurmctld slurmdbd mariadbd munged; do
        pid="$(pid_of "$d")"
        if alive "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < 60; i++)); do
                alive "$pid" || break
                sleep 0.25
            done
            if alive "$pid"; then
                kill -KILL "$pid" 2>/dev/null || true
                say "$d (pid $pid) did not stop on TERM; sent KILL"
            fi
        fi
        rm -f "$RUN/$d.pid"
    done
    rm -f /run/munge/nkflow-munged.pid
    say "down"
}

cmd_status() {
    local d pid rc=0
    for d in "${DAEMONS[@]}"; do
        pid="$(pid_of "$d")"
        if alive "$pid"; then echo "$d running (pid $pid)"; else
            echo "$d not running"
            rc=1
        fi
    done
    sinfo 2>/dev/null || rc=1
    return $rc
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 up|down|status   (state under \$NKFLOW_SLURM_DIR, default /tmp/nkflow-slurm)" >&2
        exit 2
        ;;
esac
