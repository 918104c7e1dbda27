#!/usr/bin/env bash
# A throw-away single-node Slurm 22.05 cluster (Debian 12) on loopback, no systemd: munged + slurmctld +
# slurmd as root, everything under $SLURM_BASE. tests/test_slurm.py starts it in a session fixture; the
# benchmark (bench/bench_slurm.py) too. Adapted from the team's shared peer script: free ports and a
# private base per session; three partitions (debug, the default; second; noroot, which refuses root's
# jobs: a partition whose submissions keep failing); more CPUs than the machine has (config_overrides:
# many small test jobs run at once); walltime enforced without grace (OverTimeLimit=0, short KillWait),
# so a TIMEOUT test takes about 90 s; munged stopped only if this script started it.
#
#   slurm.sh install   apt-get the packages (CI installs them from scripts/apt-packages.txt)
#   slurm.sh start     write slurm.conf, start the daemons, wait until the node is idle
#   slurm.sh stop      stop the daemons started from $SLURM_BASE (by pid file)
#   slurm.sh stopctld  stop only slurmctld (tests: the controller goes away)
#   slurm.sh startctld start slurmctld again, keeping the job state (with -c: forgetting every job)
#   slurm.sh env       print the export line clients need (SLURM_CONF)
#
# Knobs (environment):
#   SLURM_BASE=/tmp/slurm-local    config, state, spool, logs, pid files
#   SLURMCTLD_PORT=6817 SLURMD_PORT=6818
#   SLURM_CPUS=16                  CPUs the node announces (may exceed the real ones)
#   SLURM_MEM_MB=16000             RealMemory of the node
#   SLURM_MIN_JOB_AGE=300          seconds a finished job stays in squeue/scontrol
set -euo pipefail

SLURM_BASE="${SLURM_BASE:-/tmp/slurm-local}"
NODE="$(hostname -s)"
CPUS="${SLURM_CPUS:-16}"
MEM_MB="${SLURM_MEM_MB:-16000}"
MIN_JOB_AGE="${SLURM_MIN_JOB_AGE:-300}"
CONF="$SLURM_BASE/slurm.conf"
export SLURM_CONF="$CONF"

install_pkgs() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    slurm-wlm slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
  mkdir -p "$SLURM_BASE"/{state,spool,log,run}
  cat > "$CONF" <<EOF
ClusterName=localcluster
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$SLURM_BASE/state
SlurmdSpoolDir=$SLURM_BASE/spool
SlurmctldPidFile=$SLURM_BASE/run/slurmctld.pid
SlurmdPidFile=$SLURM_BASE/run/slurmd.pid
SlurmctldLogFile=$SLURM_BASE/log/slurmctld.log
SlurmdLogFile=$SLURM_BASE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in containers: track processes via /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# the node announces more CPUs than the machine has: many small test jobs run at once
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerParameters=sched_interval=1
MessageTimeout=10
# no grace beyond the time limit, and SIGKILL 2 s after SIGTERM (KillWait default: 30 s); slurmctld
# still checks limits only every 30 s or so, so a 1-minute job ends 60-90 s after it started
OverTimeLimit=0
KillWait=2
MinJobAge=${MIN_JOB_AGE}
MaxJobCount=100000
# no slurmdbd: no accounting storage; ended jobs also go to a text job-completion log (sacct -c)
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_BASE/log/jobcomp.txt
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
PartitionName=second Nodes=${NODE} MaxTime=INFINITE State=UP
# up in sinfo, but sbatch refuses root's jobs there: a partition whose submissions keep failing
PartitionName=noroot Nodes=${NODE} MaxTime=INFINITE State=UP DisableRootJobs=YES
EOF
  # slurmd 22.05 reads cgroup.conf even with proctrack/linuxproc; make it harmless
  cat > "$SLURM_BASE/cgroup.conf" <<EOF
CgroupPlugin=autodetect
IgnoreSystemd=yes
EOF
}

munge_works() {
  [ -S /run/munge/munge.socket.2 ] && munge -n </dev/null | unmunge >/dev/null 2>&1
}

start_munge() {
  if munge_works; then
    return 0   # someone else's munged: use it, never stop it
  fi
  [ -s /etc/munge/munge.key ] || mungekey --create --force 2>/dev/null \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown munge:munge /etc/munge/munge.key; chmod 600 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged   # daemonizes; pid in /run/munge/munged.pid
  for _ in $(seq 50); do
    if munge_works; then
      cp /run/munge/munged.pid "$SLURM_BASE/run/munged.ours"
      return 0
    fi
    sleep 0.1
  done
  echo "munged did not come up" >&2; return 1
}

wait_idle() {
  local st=""
  for _ in $(seq 150); do
    st=$(sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -1 || true)
    case "$st" in idle*|mixed*|allocated*) echo "slurm up: node $NODE is $st ($CONF)"; return 0;; esac
    sleep 0.2
  done
  echo "node did not become idle: '$st'" >&2
  sinfo -N >&2 || true
  tail -20 "$SLURM_BASE/log/slurmctld.log" "$SLURM_BASE/log/slurmd.log" >&2 || true
  return 1
}

wait_ctld() {
  for _ in $(seq 100); do
    scontrol ping 2>/dev/null | grep -q 'is UP' && return 0
    sleep 0.1
  done
  echo "slurmctld does not answer" >&2; return 1
}

start() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    || { echo "Slurm is not installed: $0 install (or apt-get the packages in scripts/apt-packages.txt)" >&2; exit 1; }
  write_conf
  start_munge
  # -c: start clean (ignore old state). Both daemonize and write their pid files.
  slurmctld -f "$CONF" -c
  wait_ctld
  slurmd -f "$CONF"
  wait_idle
}

stop_pidfile() {
  local f=$1
  if [ -s "$f" ]; then
    local pid; pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$f"
  fi
}

cancel_jobs() {
  # Jobs still running when slurmd stops would leave their slurmstepd behind: cancel them first.
  local ids
  ids=$(squeue -h -t PENDING,RUNNING,SUSPENDED -o %i 2>/dev/null || true)
  [ -n "$ids" ] || return 0
  scancel $ids 2>/dev/null || true
  for _ in $(seq 100); do
    [ -z "$(squeue -h -t RUNNING,COMPLETING,SUSPENDED -o %i 2>/dev/null || true)" ] && return 0
    sleep 0.1
  done
}

stop() {
  if [ -s "$SLURM_BASE/run/slurmctld.pid" ] && kill -0 "$(cat "$SLURM_BASE/run/slurmctld.pid")" 2>/dev/null; then
    cancel_jobs
  fi
  stop_pidfile "$SLURM_BASE/run/slurmd.pid"
  stop_pidfile "$SLURM_BASE/run/slurmctld.pid"
  if [ -s "$SLURM_BASE/run/munged.ours" ]; then
    stop_pidfile "$SLURM_BASE/run/munged.ours"
    rm -f /run/munge/munged.pid
  fi
}

case "${1:-start}" in
  install) install_pkgs ;;
  start) start ;;
  stop) stop ;;
  stopctld) stop_pidfile "$SLURM_BASE/run/slurmctld.pid" ;;
  startctld) slurmctld -f "$CONF" ${2:-}; wait_ctld; wait_idle ;;   # no -c: keeps the jobs it saved
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 install|start|stop|stopctld|startctld|env" >&2; exit 2 ;;
esac
