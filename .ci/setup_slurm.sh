#!/usr/bin/env bash
# Set up a real one-node Slurm (slurmctld + slurmd + munge) on this machine, for
# tests/test_slurm.py and CI. Idempotent: safe to run again; if the node is
# already up and idle it only checks it.
#
#   sudo bash .ci/setup_slurm.sh          # or as root
#
# Partitions: cpu (Default=YES, 12 h) and cpu_dev (30 min), both on this node,
# named like Apollo's so profile settings carry over.
# Exits non-zero with a message when any step fails.
set -euo pipefail

log() { echo "[setup_slurm] $*"; }
die() { echo "[setup_slurm] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, munge key, slurm daemons)"

HOST="$(hostname -s)"
NCPU="$(nproc)"
# RealMemory: MemTotal minus a margin (1 GiB or 10%, whichever larger), in MB.
MEM_KB="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
MEM_MB=$(( MEM_KB / 1024 ))
MARGIN=$(( MEM_MB / 10 )); [ "$MARGIN" -lt 1024 ] && MARGIN=1024
REAL_MB=$(( MEM_MB - MARGIN ))
[ "$REAL_MB" -gt 512 ] || die "too little memory for a Slurm node (MemTotal ${MEM_MB} MB)"

node_idle() {
  command -v sinfo >/dev/null 2>&1 || return 1
  local st
  st="$(timeout 10 sinfo -h -N -n "$HOST" -o '%t' 2>/dev/null | head -n1 || true)"
  case "$st" in idle|mix|alloc|comp) return 0 ;; *) return 1 ;; esac
}

# --- slurm.conf (written below; compared first: a changed config restarts the daemons) ---
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
CONF=/etc/slurm/slurm.conf
NEW_CONF="$(mktemp)"
cat > "$NEW_CONF" <<CONF
# Written by .ci/setup_slurm.sh: one-node test cluster.
ClusterName=pzpipe-ci
SlurmctldHost=${HOST}
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
# Memory is enforced by polling (no cgroups needed, none usable in a container):
# every second slurmstepd sums the RSS of each step's processes and kills a step above
# the job's --mem (job state OUT_OF_MEMORY), as a cluster's cgroup limit would.
# tests/test_slurm_faults.py relies on it.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=300
MaxArraySize=10001
MaxJobCount=20000
DefMemPerCPU=1000
NodeName=${HOST} CPUs=${NCPU} RealMemory=${REAL_MB} State=UNKNOWN
PartitionName=cpu Nodes=${HOST} Default=YES MaxTime=12:00:00 State=UP
PartitionName=cpu_dev Nodes=${HOST} Default=NO MaxTime=00:30:00 State=UP
CONF
if cmp -s "$NEW_CONF" /etc/slurm/slurm.conf && node_idle && timeout 10 scontrol ping >/dev/null 2>&1; then
  rm -f "$NEW_CONF"
  log "Slurm already running: $(sinfo -h -o '%P %a %D %t' | tr '\n' ';')"
  exit 0
fi

# --- packages -------------------------------------------------------------
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
   || ! command -v munged >/dev/null 2>&1; then
  log "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 || die "apt-get install slurm-wlm munge failed"
fi
command -v slurmctld >/dev/null || die "slurmctld not found after install"

# --- munge ----------------------------------------------------------------
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  pkill_pidfile() { [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null || true; }
  pkill_pidfile /run/munge/munged.pid
  su -s /bin/sh munge -c /usr/sbin/munged || die "munged failed to start (see /var/log/munge/munged.log)"
  for _ in $(seq 1 20); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.5
  done
  munge -n | unmunge >/dev/null 2>&1 || die "munge credential round-trip fails"
fi

# --- slurm.conf ---------------------------------------------------------------
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
CONF_CHANGED=0
if ! cmp -s "$NEW_CONF" "$CONF"; then
  cp "$NEW_CONF" "$CONF"; CONF_CHANGED=1
fi
rm -f "$NEW_CONF"
# No cgroup.conf: with proctrack/linuxproc + task/none slurmd needs none, and
# Debian's slurm 22.05 rejects "CgroupPlugin=disabled". Remove one left behind
# by an older version of this script.
if [ -f /etc/slurm/cgroup.conf ] && grep -qx 'CgroupPlugin=disabled' /etc/slurm/cgroup.conf; then
  rm -f /etc/slurm/cgroup.conf
fi

# --- daemons --------------------------------------------------------------
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ "$CONF_CHANGED" = 1 ]; then
  for p in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid; do
    if pid_alive "$p"; then kill "$(cat "$p")" 2>/dev/null || true; sleep 1; fi
  done
fi
if ! pid_alive /run/slurm/slurmctld.pid; then
  log "starting slurmctld"
  slurmctld || die "slurmctld failed to start (see /var/log/slurm/slurmctld.log)"
fi
if ! pid_alive /run/slurm/slurmd.pid; then
  log "starting slurmd"
  slurmd || die "slurmd failed to start (see /var/log/slurm/slurmd.log)"
fi

# --- wait for the node ------------------------------------------------------
for i in $(seq 1 60); do
  if node_idle; then
    log "node ${HOST} up (${NCPU} CPUs, ${REAL_MB} MB): $(sinfo -h -o '%P %a %D %t' | tr '\n' ';')"
    exit 0
  fi
  st="$(timeout 10 sinfo -h -N -n "$HOST" -o '%t' 2>/dev/null | head -n1 || true)"
  case "$st" in
    down*|drain*|fail*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 1
done
echo "--- sinfo:" >&2; sinfo -N -l >&2 || true
echo "--- slurmctld.log (tail):" >&2; tail -n 20 /var/log/slurm/slurmctld.log >&2 || true
echo "--- slurmd.log (tail):" >&2; tail -n 20 /var/log/slurm/slurmd.log >&2 || true
die "node ${HOST} did not become idle within 60 s"
