#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for trying and testing the workflow's Slurm profile
# (tests/test_slurm.py, profiles/slurm-local). Debian/Ubuntu, root, no systemd needed.
#
#   scripts/local-slurm.sh start     install slurm-wlm + munge if missing (apt-get), write the
#                                    configuration, start munged, slurmctld and slurmd, wait until
#                                    the node is idle
#   eval "$(scripts/local-slurm.sh env)"    point sbatch/srun/squeue/... at it (SLURM_CONF, PATH)
#   scripts/local-slurm.sh status    daemons and node state (exit 0 only when all is up)
#   scripts/local-slurm.sh stop      cancel its jobs, end the three daemons it started (pid files)
#
# The node is this machine (its hostname, cores and memory from `slurmd -C`), in one partition
# (`local`, the default), and declares ONE GPU as a generic resource (gres.conf: AutoDetect=off,
# File=/dev/null): a job asking for --gpus=1 waits for the GPU, two such jobs run one after the
# other, and each sees CUDA_VISIBLE_DEVICES=0 although there is no GPU. No accounting daemon:
# `sacct` does not work, query job states with `squeue` (MinJobAge is raised to an hour so that
# finished jobs stay visible to squeue/scontrol).
#
# `env` also puts $LOCAL_SLURM_DIR/bin first on PATH: wrappers of srun, sbatch, squeue, ... that
# default SLURM_CONF to this cluster's file. They are needed because the plugin's job step
# (snakemake-executor-plugin-slurm-jobstep 0.6) removes every SLURM_* variable but the job's ids
# from the environment of the `srun` it runs inside each job, SLURM_CONF included; on a real
# cluster srun finds /etc/slurm/slurm.conf, here it would find nothing.
#
# All state (configuration, munge key and socket, logs, spool, pid files) lives in one folder,
# $LOCAL_SLURM_DIR (default /tmp/irem-local-slurm); nothing is written to /etc. Ports: slurmctld
# $LOCAL_SLURM_PORT (default 6817), slurmd the next one. `start` gives up after
# $LOCAL_SLURM_TIMEOUT seconds (default 60). Exit status: 0 ok, 1 failure, 3 this host cannot run
# it (not root, or slurm missing and no apt-get).
set -euo pipefail

DIR="${LOCAL_SLURM_DIR:-/tmp/irem-local-slurm}"
PORT="${LOCAL_SLURM_PORT:-6817}"
TIMEOUT="${LOCAL_SLURM_TIMEOUT:-60}"
PARTITION=local
CONF="$DIR/etc/slurm.conf"
MUNGE_SOCKET="$DIR/munge/munge.socket.2"
export SLURM_CONF="$CONF"

say() { echo "local-slurm: $*"; }
# On an error during `start`, what was started is stopped again.
STARTING=""
die() {
    echo "local-slurm: error: $*" >&2
    [[ -z "$STARTING" ]] || stop_daemons quiet
    exit "${2:-1}"
}

# daemon name -> pid file
pidfile() { echo "$DIR/run/$1.pid"; }

# The pid in a daemon's pid file, if that process is alive and is that daemon of this cluster
# (its command line names the daemon and this cluster's folder).
live_pid() {
    local name="$1" file pid cmd
    file="$(pidfile "$name")"
    [[ -s "$file" ]] || return 1
    pid="$(tr -dc 0-9 <"$file")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    [[ "$cmd" == *"$name"* && "$cmd" == *"$DIR/"* ]] || return 1
    echo "$pid"
}

# Whether something accepts connections on a local TCP port.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -n1; }

show_logs() {
    local f
    for f in "$DIR"/log/*.log; do
        [[ -f "$f" ]] || continue
        echo "--- $f (last lines)" >&2
        tail -n 15 "$f" >&2
    done
}

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    for bin in slurmctld slurmd sbatch; do
        command -v "$bin" >/dev/null || { missing+=(slurm-wlm); break; }
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || die "slurm-wlm/munge are not installed and there is no apt-get" 3
    say "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends slurm-wlm munge >"$DIR/log/apt.log" 2>&1; then
        apt-get update -qq >>"$DIR/log/apt.log" 2>&1 || true
        apt-get install -y -qq --no-install-recommends slurm-wlm munge >>"$DIR/log/apt.log" 2>&1 \
            || { tail -n 20 "$DIR/log/apt.log" >&2; die "apt-get install slurm-wlm munge failed" 3; }
    fi
}

write_config() {
    local host hw cpus mem
    host="$(hostname -s)"
    # This machine as slurmd sees it: "NodeName=... CPUs=2 Boards=1 SocketsPerBoard=1
    # CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105".
    hw="$(slurmd -C | head -n1)"
    cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
    mem="$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
    [[ -n "$cpus" && -n "$mem" ]] || die "cannot read cores and memory from 'slurmd -C': $hw"
    cat >"$CONF" <<EOF
# Written by scripts/local-slurm.sh: a single-node cluster on $host.
ClusterName=irem-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups (tasks are pinned to their cores with sched_setaffinity), no accounting daemon:
# sacct does not work here, squeue does.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
# No reservations for pending jobs (bf_min_prio_reserve above every priority) and backfill every
# 2 s: on one node a reservation blocks the whole node, so a job waiting for the GPU would hold
# up every CPU job queued after it.
SchedulerParameters=bf_interval=2,bf_min_prio_reserve=4294967294
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol for an hour.
MinJobAge=3600
GresTypes=gpu
$hw Gres=gpu:1 NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    sed -i "s/^NodeName=[^ ]*/NodeName=$host/" "$CONF"
    # Client wrappers that know this cluster (see the header).
    local cmd real
    mkdir -p "$DIR/bin"
    for cmd in srun sbatch salloc squeue scontrol scancel sinfo sacct; do
        real="$(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v "$cmd")" \
            || continue
        printf '#!/bin/sh\nexport SLURM_CONF="${SLURM_CONF:-%s}"\nexec %s "$@"\n' "$CONF" "$real" \
            >"$DIR/bin/$cmd"
        chmod 755 "$DIR/bin/$cmd"
    done
    # One GPU that is not there: File must name an existing device, else the node is INVAL.
    cat >"$DIR/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=$host Name=gpu File=/dev/null
EOF
}

start() {
    [[ "$(id -u)" -eq 0 ]] || die "must run as root (slurmd and munged need it)" 3
    if live_pid slurmctld >/dev/null && live_pid slurmd >/dev/null && live_pid munged >/dev/null; then
        say "already running in $DIR"
        wait_idle
        return 0
    fi
    # Leftovers of a half-started cluster.
    stop_daemons quiet
    local port
    for port in "$PORT" "$((PORT + 1))"; do
        ! port_busy "$port" \
            || die "port $port is in use (another Slurm?): choose others with LOCAL_SLURM_PORT=N (N and N+1)"
    done
    STARTING=1
    mkdir -p "$DIR"/{etc,log,run,munge,spool/ctld,spool/d}
    chmod 711 "$DIR/munge"
    install_packages
    command -v slurmd >/dev/null || die "slurmd not found after installing slurm-wlm"
    write_config

    # munge: a fresh key for this cluster only.
    if [[ ! -s "$DIR/munge/munge.key" ]]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$DIR/munge/munge.key" --force
        else
            dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        fi
    fi
    chmod 400 "$DIR/munge/munge.key"
    say "starting munged"
    munged --force --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$(pidfile munged)" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed" \
        || { show_logs; die "munged did not start"; }
    wait_for "munged pid file" 10 live_pid munged

    say "starting slurmctld (port $PORT)"
    slurmctld -f "$CONF" -i || { show_logs; die "slurmctld did not start"; }
    wait_for "slurmctld" 15 scontrol ping
    say "starting slurmd"
    slurmd -f "$CONF" -N "$(hostname -s)" || { show_logs; die "slurmd did not start"; }
    wait_for "slurmd pid file" 10 live_pid slurmd
    wait_idle
    STARTING=""
    say "up: partition '$PARTITION', $(sinfo -h -N -o '%c CPUs, %m MB, %G' | head -n1)"
    say "use it with: eval \"\$($0 env)\""
}

# wait_for WHAT SECONDS COMMAND...: until COMMAND succeeds.
wait_for() {
    local what="$1" secs="$2" i
    shift 2
    for ((i = 0; i < secs * 4; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    show_logs
    die "$what not up after ${secs} s (logs in $DIR/log)"
}

wait_idle() {
    local state="" i
    for ((i = 0; i < TIMEOUT * 2; i++)); do
        state="$(node_state)"
        case "$state" in
            idle | mixed | allocated) return 0 ;;
        esac
        sleep 0.5
    done
    echo "local-slurm: node state after ${TIMEOUT} s: '${state:-unknown}'" >&2
    scontrol show node 2>&1 | grep -E "State=|Reason=" >&2 || true
    show_logs
    die "the node did not become idle within ${TIMEOUT} s (set LOCAL_SLURM_TIMEOUT to wait longer)"
}

# End a daemon by its pid file: TERM, then KILL after 10 s.
stop_one() {
    local name="$1" quiet="${2:-}" pid i
    if pid="$(live_pid "$name")"; then
        [[ -n "$quiet" ]] || say "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 40; i++)); do
            [[ -d "/proc/$pid" ]] || break
            sleep 0.25
        done
        if [[ -d "/proc/$pid" ]]; then
            say "$name (pid $pid) did not stop: killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$(pidfile "$name")"
}

stop_daemons() {
    stop_one slurmd "${1:-}"
    stop_one slurmctld "${1:-}"
    stop_one munged "${1:-}"
}

stop() {
    [[ -d "$DIR" ]] || { say "not running ($DIR does not exist)"; return 0; }
    # Jobs first, while slurmd can still end their processes.
    if live_pid slurmctld >/dev/null && scontrol ping >/dev/null 2>&1; then
        local jobs i
        jobs="$(squeue -h -t PENDING,RUNNING,SUSPENDED,COMPLETING -o %i 2>/dev/null || true)"
        if [[ -n "$jobs" ]]; then
            say "cancelling jobs: $(echo $jobs)"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for ((i = 0; i < 60; i++)); do
                [[ -z "$(squeue -h -t PENDING,RUNNING,SUSPENDED,COMPLETING -o %i 2>/dev/null)" ]] && break
                sleep 0.25
            done
        fi
    fi
    stop_daemons
    say "stopped (state kept in $DIR)"
}

status() {
    local rc=0 name pid
    for name in munged slurmctld slurmd; do
        if pid="$(live_pid "$name")"; then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running"
            rc=1
        fi
    done
    if [[ $rc -eq 0 ]]; then
        echo "node: $(node_state)"
        sinfo 2>&1 || rc=1
        squeue 2>&1 || rc=1
    fi
    echo "SLURM_CONF=$CONF"
    return $rc
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env)
        echo "export SLURM_CONF=$CONF"
        echo "export PATH=$DIR/bin:\$PATH"
        ;;
    *)
        echo "usage: $0 start|stop|status|env   (state in \$LOCAL_SLURM_DIR, default $DIR)" >&2
        exit 2
        ;;
esac
