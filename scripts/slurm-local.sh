#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests of `cutmix compare --launcher slurm`.
#
#   scripts/slurm-local.sh start    # munged, slurmctld and slurmd on localhost; waits for the node to be idle
#   scripts/slurm-local.sh status   # what runs, and sinfo
#   scripts/slurm-local.sh stop     # stops what start started
#
# Needs Debian's slurm-wlm (as root: apt-get update && apt-get install -y slurm-wlm) and root (the
# daemons run as root). Everything it writes (configuration, munge key, state, logs) is in
# $SLURM_LOCAL_DIR (default /tmp/cutmix-slurm); Slurm's commands find the cluster through
# SLURM_CONF=$SLURM_LOCAL_DIR/slurm.conf, which `start` and `status` print.
#
# The configuration uses no cgroups (proctrack/linuxproc, task/none: containers often lack a
# writable cgroup tree), gives the node every CPU of the machine, one partition `local`, allows
# requeueing (JobRequeue=1) and keeps KillWait short: a requeued or cancelled job gets SIGTERM and,
# 2 s later, SIGKILL. `start` is idempotent; `start` after `stop` begins with an empty queue.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/cutmix-slurm}
CONF=$DIR/slurm.conf
NODE=cutmix-node
PARTITION=local
START_TIMEOUT=${SLURM_LOCAL_START_TIMEOUT:-60}
export SLURM_CONF=$CONF

say() { echo "slurm-local: $*" >&2; }
die() { say "error: $*"; exit 1; }

alive() {  # alive PIDFILE: the process named in PIDFILE runs
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

node_state() {
    sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | head -n 1 || true
}

write_config() {
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    # Memory the node offers (MB): what the machine has, less a little for everything else.
    mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    mkdir -p "$DIR"/{state,spool,log,munge,jobs}
    chmod 700 "$DIR/munge"
    cat >"$CONF" <<EOF
# Written by scripts/slurm-local.sh: a one-node cluster on $host for tests.
ClusterName=cutmix-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${SLURM_LOCAL_CTLD_PORT:-6817}
SlurmdPort=${SLURM_LOCAL_SLURMD_PORT:-6818}
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket.2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups: plain process tracking, no task binding, no accounting daemon.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
ReturnToService=2
JobRequeue=1
KillWait=2
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=60
NodeName=$NODE NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    alive "$DIR/munged.pid" && return 0
    if [[ ! -s $DIR/munge/munge.key ]]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$DIR/munge/munge.key"
    fi
    # --force: the key and socket live under /tmp, whose permissions munged would otherwise refuse.
    munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket.2" \
        --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
}

start() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null ||
        die "slurmctld, slurmd or munged not found; install Debian's slurm-wlm (as root: apt-get update && apt-get install -y slurm-wlm)"
    [[ $(id -u) == 0 ]] || die "expected to run as root (the daemons run as root), got uid $(id -u)"
    if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && [[ $(node_state) == idle* || $(node_state) == mix* || $(node_state) == alloc* ]]; then
        say "already running (SLURM_CONF=$CONF)"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    write_config
    start_munge
    # -c: an empty queue (no jobs left over from an earlier start).
    alive "$DIR/slurmctld.pid" || slurmctld -c
    alive "$DIR/slurmd.pid" || slurmd -N "$NODE"
    local waited=0 state
    while true; do
        state=$(node_state)
        case $state in
            idle*|mix*|alloc*) break ;;
            down*|drain*|unk*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
        esac
        if (( waited >= START_TIMEOUT )); then
            say "node $NODE not idle after ${START_TIMEOUT}s (state: ${state:-none}); last log lines:"
            tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" "$DIR/log/munged.log" >&2 2>/dev/null || true
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "node $NODE idle, partition $PARTITION, $(nproc) CPUs (SLURM_CONF=$CONF)"
    echo "export SLURM_CONF=$CONF"
}

stop_one() {  # stop_one NAME: SIGTERM to the daemon NAME started, then SIGKILL after 10 s
    local pidfile=$DIR/$1.pid pid
    alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

stop() {
    # Jobs first, so that no training process outlives the cluster.
    if alive "$DIR/slurmctld.pid"; then
        scancel --full --partition="$PARTITION" >/dev/null 2>&1 || true
        sleep 1
    fi
    stop_one slurmd
    stop_one slurmctld
    stop_one munged
    say "stopped"
}

status() {
    local name
    for name in munged slurmctld slurmd; do
        if alive "$DIR/$name.pid"; then echo "$name: running (pid $(cat "$DIR/$name.pid"))"; else echo "$name: stopped"; fi
    done
    if alive "$DIR/slurmctld.pid"; then
        echo "export SLURM_CONF=$CONF"
        sinfo
    else
        return 1
    fi
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
