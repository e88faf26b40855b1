#!/usr/bin/env bash
# A throwaway one-node Slurm cluster (slurmctld + slurmd + munged on localhost) for the
# tests that drive a real Slurm through sbatch/squeue/scancel/scontrol and submitit.
#
#   .ci/slurm.sh start    install (apt, if missing), configure and start; idempotent
#   .ci/slurm.sh stop     cancel jobs, stop the daemons this script started, undo the conf link
#   .ci/slurm.sh status   exit 0 when the controller answers and the node takes jobs
#
# Needs root (the daemons and the /etc/slurm/slurm.conf link). All state lives in one
# folder, $GENLAB_SLURM_DIR (default /tmp/genlab-slurm). No accounting: sacct does not work.
set -euo pipefail

DIR=${GENLAB_SLURM_DIR:-/tmp/genlab-slurm}
CONF=$DIR/slurm.conf
MUNGE_DIR=$DIR/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket.2
ETC_CONF=/etc/slurm/slurm.conf
ETC_BACKUP=/etc/slurm/slurm.conf.genlab-backup
LINK_MARK=$DIR/made-etc-link # present when we made the /etc link (and so must undo it)
NODE=localhost
# the daemons live in sbin, which a CI user's PATH may lack
export PATH=$PATH:/usr/sbin:/sbin

log() { echo "slurm: $*"; }
die() {
    echo "slurm: $*" >&2
    exit 1
}

# pid of a running daemon from its pid file, or nothing
live_pid() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# the node's state, without sinfo's flag suffixes (idle*, drain~, ...); empty if no answer
node_state() {
    timeout 15 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1 | tr -d '*~#!%$@^-' || true
}

# whether a node state means the node takes jobs
takes_jobs() {
    case "$1" in
    idle | mixed | allocated | completing) return 0 ;;
    *) return 1 ;;
    esac
}

install_packages() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return 0
    [ "$(id -u)" -eq 0 ] || die "slurm-wlm is not installed, and installing it needs root"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge
}

start_munge() {
    # our own key and socket, so nothing depends on (or clobbers) /etc/munge or /run/munge;
    # munged wants the socket's folder searchable by all (0711), the key private (0400)
    install -d -o munge -g munge -m 0711 "$MUNGE_DIR"
    if [ ! -s "$MUNGE_DIR/munge.key" ]; then
        dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1 count=1024 status=none
        chown munge:munge "$MUNGE_DIR/munge.key"
        chmod 0400 "$MUNGE_DIR/munge.key"
    fi
    if ! live_pid "$MUNGE_DIR/munged.pid" >/dev/null; then
        # as the munge user, like the packaged service (munged 0.5.15 would also run as root)
        runuser -u munge -- munged \
            --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCKET" \
            --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" \
            --seed-file="$MUNGE_DIR/munged.seed" ||
            die "munged did not start: $(tail -n 20 "$MUNGE_DIR/munged.log" 2>/dev/null)"
    fi
    munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null ||
        die "munge -n | unmunge fails: $(tail -n 20 "$MUNGE_DIR/munged.log" 2>/dev/null)"
}

write_conf() {
    local cpus mem_total mem
    cpus=$(nproc)
    mem_total=$(free -m | awk '/^Mem:/ {print $2}')
    # below the real total, else slurmd drains the node for "Low RealMemory"
    mem=$((mem_total * 9 / 10))
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    cat >"$CONF" <<EOF
# written by .ci/slurm.sh; a one-node test cluster, state in $DIR
ClusterName=genlab
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# our munged's socket (clients, slurmctld and slurmd all read this file); cred_expire is
# also how long a requeued job waits before it may run again (default 120 s)
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# no cgroups: plain process tracking, no task binding, no accounting (sacct fails)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
# run the scheduler often, so a job starts within a second or two
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default every job would ask for the whole node's memory and run alone
DefMemPerCPU=$((mem / cpus))
ReturnToService=2
JobRequeue=1
# finished jobs stay visible to scontrol show job for 5 minutes
MinJobAge=300
KillWait=5
NodeName=$NODE CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

# The client commands (and submitit, and the tests) read /etc/slurm/slurm.conf with no
# SLURM_CONF set, so point it at ours; a real file there is kept aside and put back on stop.
link_conf() {
    if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then
        return 0
    fi
    mkdir -p "$(dirname "$ETC_CONF")"
    if [ -e "$ETC_CONF" ] || [ -L "$ETC_CONF" ]; then
        if [ -e "$ETC_BACKUP" ] || [ -L "$ETC_BACKUP" ]; then
            die "$ETC_CONF exists and so does $ETC_BACKUP; not overwriting either"
        fi
        mv "$ETC_CONF" "$ETC_BACKUP"
    fi
    ln -s "$CONF" "$ETC_CONF"
    touch "$LINK_MARK"
}

unlink_conf() {
    [ -e "$LINK_MARK" ] || return 0
    if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then
        rm -f "$ETC_CONF"
    fi
    if [ -e "$ETC_BACKUP" ] || [ -L "$ETC_BACKUP" ]; then
        mv "$ETC_BACKUP" "$ETC_CONF"
    fi
    rm -f "$LINK_MARK"
}

show_logs() {
    local f
    for f in "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" "$MUNGE_DIR/munged.log"; do
        [ -e "$f" ] || continue
        echo "----- tail $f" >&2
        tail -n 30 "$f" >&2
    done
}

cmd_start() {
    if takes_jobs "$(node_state)"; then
        log "already up ($(nproc) cpus)"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "start needs root"
    install_packages
    mkdir -p "$DIR"
    start_munge
    write_conf
    link_conf
    if ! live_pid "$DIR/slurmctld.pid" >/dev/null; then
        slurmctld -f "$CONF" || {
            show_logs
            die "slurmctld did not start"
        }
    fi
    if ! live_pid "$DIR/slurmd.pid" >/dev/null; then
        # -N: the node is "localhost" whatever the machine's hostname
        slurmd -f "$CONF" -N "$NODE" || {
            show_logs
            die "slurmd did not start"
        }
    fi
    # the node registers as idle within a few seconds; a node left down/drained by an
    # earlier run's state is resumed
    local state i
    for i in $(seq 60); do
        state=$(node_state)
        if takes_jobs "$state"; then
            log "up ($(nproc) cpus)"
            return 0
        fi
        case "$state" in
        down | drain | drained | draining | fail | failing)
            scontrol update nodename="$NODE" state=resume 2>/dev/null || true
            ;;
        esac
        sleep 1
    done
    show_logs
    die "node $NODE not idle after 60 s (state: '${state:-no answer}')"
}

# SIGTERM a daemon via its pid file and wait for it to go (SIGKILL after 20 s)
stop_daemon() {
    local pid i
    pid=$(live_pid "$1") || {
        rm -f "$1"
        return 0
    }
    kill "$pid" 2>/dev/null || true
    for i in $(seq 20); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$1"
}

cmd_stop() {
    # cancel what is still queued or running, so no job processes outlive the cluster
    if live_pid "$DIR/slurmctld.pid" >/dev/null; then
        local jobs i
        jobs=$(timeout 15 squeue -h -o %A 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086 # one word per job id
            scancel $jobs 2>/dev/null || true
            for i in $(seq 15); do
                [ -z "$(timeout 15 squeue -h -o %A 2>/dev/null || true)" ] && break
                sleep 1
            done
        fi
    fi
    stop_daemon "$DIR/slurmd.pid"
    stop_daemon "$DIR/slurmctld.pid"
    stop_daemon "$MUNGE_DIR/munged.pid"
    unlink_conf
    log "stopped"
}

cmd_status() {
    local state
    state=$(node_state)
    if takes_jobs "$state"; then
        log "up, node $NODE $state"
    else
        log "down (node state: '${state:-no answer}')"
        return 1
    fi
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*) die "usage: $0 start|stop|status" ;;
esac
