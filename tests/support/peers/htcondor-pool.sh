#!/usr/bin/env bash
# harvester-cli's copy of the shared minicondor script, adapted for the test suite: python3 with
# requests and tenacity in the chroot (the project's test pilot runs inside the pool), a lock so that
# two test sessions on one machine neither build nor start the pool twice, more slots, `status`.
#
# Real HTCondor daemons (collector, negotiator, schedd, startd, shared_port) on a Debian 12 host
# that has no HTCondor package: run Debian sid's `minicondor` (25.14.1, same version as the PyPI
# wheel) inside a debootstrap chroot. The chroot shares the host network namespace, so the host's
# PyPI `htcondor2` bindings talk to the schedd over 127.0.0.1:9618.
#
# Needs: root, CAP_SYS_ADMIN (mount/chroot), the Debian package registry reachable, ~600 MB disk.
# Usage:
#   bash htcondor-pool.sh start    # build chroot if missing, start pool, wait until ready
#   bash htcondor-pool.sh stop     # stop condor_master (by pid file), unmount
#   bash htcondor-pool.sh status   # exit 0 if the pool's master runs
#   bash htcondor-pool.sh env      # print the client env (CONDOR_CONFIG=...)
# Clients must act as a NON-root user that exists with the same uid inside the chroot (the schedd
# refuses Owner "root"): the client config sets SEC_CLAIMTOBE_USER so that a root client (pytest)
# authenticates as $TEST_USER. Job files must live under $JOBDIR (bind-mounted at the same path) and
# be writable by $TEST_USER (the shadow writes output and logs as the job owner).
set -euo pipefail
# The daemons in the chroot read the chroot's /etc/condor: no client setting may leak in (importing the
# htcondor2 wheel sets CONDOR_CONFIG=/dev/null in the importing process, and its children inherit it).
unset CONDOR_CONFIG
for v in $(env | grep -o '^_CONDOR_[A-Za-z0-9_]*' || true); do unset "$v"; done

SUITE="${SUITE:-sid}"                       # sid -> condor 25.14.1 ; trixie -> 23.9.6
ROOT="${CONDOR_CHROOT:-/tmp/minicondor-$SUITE}"
# the Debian mirror this host already uses (first "URIs:" line of its deb822 sources)
MIRROR="${MIRROR:-$(awk '/^URIs:/ && $2 ~ /\/debian$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null)}"
[ -n "$MIRROR" ] || MIRROR=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
JOBDIR="${JOBDIR:-/tmp/htc-jobs}"
TEST_USER="${TEST_USER:-ctest}"
TEST_UID="${TEST_UID:-2000}"
HOSTSHORT="$(hostname -s)"
SCHEDD_NAME="${SCHEDD_NAME:-ce@$HOSTSHORT}"  # an '@' avoids hostname canonicalisation failures
CLIENT_CONFIG="${CLIENT_CONFIG:-$ROOT.client_config}"
PIDFILE="$ROOT.master.pid"
LOCKFILE="$ROOT.lock"
# what the pilots inside the pool need besides the daemons
PACKAGES="minicondor python3 python3-requests python3-tenacity"

build() {
  command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  if [ ! -x "$ROOT/usr/sbin/condor_master" ] || [ ! -e "$ROOT/usr/lib/python3/dist-packages/tenacity" ]; then
    [ -n "$MIRROR" ] || { echo "no Debian mirror found in /etc/apt sources; set MIRROR=" >&2; return 1; }
    if [ ! -e "$ROOT/.debootstrap-done" ]; then
      if ! debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1; then
        echo "debootstrap $SUITE from $MIRROR failed; last lines of $ROOT.debootstrap.log:" >&2
        tail -n 20 "$ROOT.debootstrap.log" >&2; return 1
      fi
      touch "$ROOT/.debootstrap-done"
    fi
    printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"; chmod +x "$ROOT/usr/sbin/policy-rc.d"
    echo "deb $MIRROR $SUITE main" >"$ROOT/etc/apt/sources.list"
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
    mount_all
    # the mirror's sid Release may look "expired" against this machine's clock
    chroot "$ROOT" /bin/sh -c 'export DEBIAN_FRONTEND=noninteractive;
      apt-get -o Acquire::Check-Valid-Until=false update -qq &&
      apt-get install -y -qq --no-install-recommends '"$PACKAGES"' >/dev/null'
  fi
  cp /etc/hosts "$ROOT/etc/hosts"
  id "$TEST_USER" >/dev/null 2>&1 || useradd -u "$TEST_UID" -m "$TEST_USER"
  chroot "$ROOT" /bin/sh -c "id $TEST_USER >/dev/null 2>&1 || useradd -u $TEST_UID -m $TEST_USER"
  # written whole and renamed: clients of a running pool may read them at any moment
  cat >"$ROOT/etc/condor/config.d/.99-local-test.tmp" <<EOF
# loopback-only personal pool reachable from the host
NETWORK_INTERFACE = 127.0.0.1
CONDOR_HOST = 127.0.0.1
COLLECTOR_HOST = 127.0.0.1:9618
SCHEDD_NAME = $SCHEDD_NAME
# TEST-ONLY security: anyone on loopback may do anything (CLAIMTOBE: host /tmp != chroot /tmp, so FS fails)
SEC_DEFAULT_AUTHENTICATION = OPTIONAL
SEC_DEFAULT_AUTHENTICATION_METHODS = FS, CLAIMTOBE
SEC_CLIENT_AUTHENTICATION_METHODS = FS, CLAIMTOBE
ALLOW_READ = *
ALLOW_WRITE = *
ALLOW_ADMINISTRATOR = *
ALLOW_DAEMON = *
ALLOW_NEGOTIATOR = *
ALLOW_ADVERTISE_MASTER = *
ALLOW_ADVERTISE_SCHEDD = *
ALLOW_ADVERTISE_STARTD = *
ALLOW_CONFIG = *
# chroot root is not a mount point: the starter cannot unshare(CLONE_NEWNS)
MOUNT_UNDER_SCRATCH =
# fast turnaround for tests
SCHEDD_INTERVAL = 2
NEGOTIATOR_INTERVAL = 1
NEGOTIATOR_CYCLE_DELAY = 1
UPDATE_INTERVAL = 2
STARTER_UPDATE_INTERVAL = 2
GRIDMANAGER_JOB_PROBE_INTERVAL = 2
CONDOR_JOB_POLL_INTERVAL = 2
GRIDMANAGER_CONTACT_SCHEDD_DELAY = 1
C_GAHP_CONTACT_SCHEDD_DELAY = 1
NUM_CPUS = ${CONDOR_CPUS:-8}
SINGULARITY = /bin/false
EOF
  mv -f "$ROOT/etc/condor/config.d/.99-local-test.tmp" "$ROOT/etc/condor/config.d/99-local-test"
  cat >"$CLIENT_CONFIG.tmp" <<EOF
COLLECTOR_HOST = 127.0.0.1:9618
NETWORK_INTERFACE = 127.0.0.1
SCHEDD_NAME = $SCHEDD_NAME
SEC_CLIENT_AUTHENTICATION_METHODS = CLAIMTOBE
SEC_DEFAULT_AUTHENTICATION_METHODS = CLAIMTOBE
# TEST-ONLY: a root client (pytest) claims to be the job owner; the schedd refuses Owner root
SEC_CLAIMTOBE_USER = $TEST_USER
# the schedd as this host's own (htcondor2.Schedd() without a name finds it)
SCHEDD_ADDRESS_FILE = $ROOT/var/spool/condor/.schedd_address
EOF
  chmod 644 "$CLIENT_CONFIG.tmp"
  mv -f "$CLIENT_CONFIG.tmp" "$CLIENT_CONFIG"
}

mount_all() {
  mountpoint -q "$ROOT/proc"    || mount -t proc proc "$ROOT/proc"
  mountpoint -q "$ROOT/dev"     || mount --bind /dev "$ROOT/dev"
  mountpoint -q "$ROOT/dev/pts" || mount --bind /dev/pts "$ROOT/dev/pts"
  mkdir -p "$JOBDIR" "$ROOT$JOBDIR"; chmod 1777 "$JOBDIR"
  mountpoint -q "$ROOT$JOBDIR"  || mount --bind "$JOBDIR" "$ROOT$JOBDIR"
}

umount_all() {
  for m in "$ROOT$JOBDIR" "$ROOT/dev/pts" "$ROOT/dev" "$ROOT/proc"; do
    mountpoint -q "$m" && umount "$m" || true
  done
}

start() {
  build
  mount_all
  if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then echo "already running"; return 0; fi
  # SciTokens verification in the daemons fetches the issuer's JWKS with libcurl: trust the CA a test token
  # issuer writes here (scitokens-cpp reads SCITOKEN_CONFIG_TLS_CA_FILE once, at start; HTCondor has no
  # knob for it). A missing file only matters to a daemon verifying a token.
  SCITOKEN_CONFIG_TLS_CA_FILE="$JOBDIR/.token-issuer-ca.pem" \
    nohup chroot "$ROOT" /usr/sbin/condor_master -f >"$ROOT.master.out" 2>&1 9>&- &
  echo $! >"$PIDFILE"          # chroot execs condor_master, so this is the master's pid
  for _ in $(seq 120); do
    if chroot "$ROOT" condor_who -quick 2>/dev/null | grep -q '^IsReady = true' &&
       chroot "$ROOT" condor_status -af Name 2>/dev/null | grep -q slot; then
      echo "HTCondor $(chroot "$ROOT" condor_version | head -1 | awk '{print $2}') pool ready; schedd '$SCHEDD_NAME'"
      echo "client: CONDOR_CONFIG=$CLIENT_CONFIG (run as $TEST_USER, job files under $JOBDIR)"
      return 0
    fi
    sleep 0.5
  done
  echo "pool did not become ready; see $ROOT/var/log/condor" >&2; return 1
}

stop() {
  if [ -s "$PIDFILE" ]; then
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
      kill -QUIT "$pid"            # a fast shutdown: jobs are not vacated gracefully, nobody waits for them
      for _ in $(seq 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$PIDFILE"
  fi
  umount_all
}

status() {
  [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

locked() {
  mkdir -p "$(dirname "$LOCKFILE")"
  exec 9>"$LOCKFILE"
  flock 9
  "$@"
}

case "${1:-start}" in
  start) locked start ;;
  stop) locked stop ;;
  status) status ;;
  env) echo "export CONDOR_CONFIG=$CLIENT_CONFIG" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
