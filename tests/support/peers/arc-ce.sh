#!/usr/bin/env bash
# Local, throw-away NorduGrid ARC 6.17 CE (A-REX + REST, fork LRMS) on loopback, no systemd, for
# harvester-cli's ARC backend tests (tests/test_arc.py starts it in a session fixture). Debian 12, root.
# Adapted from the team's shared peer script: extra trusted CA + mapped DN (the PanDA simulator's test
# user, so one proxy talks to both), a test runtime environment, daemons with a clean environment.
#
#   arc-ce.sh install   apt-get the ARC packages (CI installs them from scripts/apt-packages.txt)
#   arc-ce.sh setup     test CA + host/user certs + arc.conf + XML configs under $ARC_CE_BASE
#   arc-ce.sh start     start the two arched daemons (jobs + WS/REST), wait for REST
#   arc-ce.sh proxy     make an RFC proxy with arcproxy -> $ARC_CE_BASE/user/proxy.pem
#   arc-ce.sh check     curl the REST endpoint with the proxy
#   arc-ce.sh stop      stop the daemons started from $ARC_CE_BASE (by pidfile) and leftover payloads
#   arc-ce.sh status
#   arc-ce.sh all       install + setup + start + proxy + check
#   arc-ce.sh purge     stop + rm -rf $ARC_CE_BASE
#
# Knobs (environment):
#   ARC_CE_BASE=/tmp/arcce        everything lives here (certs, config, control/session dirs, logs, pids);
#                                 the job user must be able to traverse to session/ (not under a 0700 dir)
#   ARC_CE_PORT=8443              REST/WS port (https://localhost:$ARC_CE_PORT/arex)
#   ARC_CE_JOBUSER=arcjob         unix account the test DNs are mapped to (created if missing)
#   ARC_CE_TRUST_CA=              a further CA certificate (PEM) to trust, e.g. the PanDA simulator's
#   ARC_CE_TRUST_DN=              a further user DN (/DC=../CN=..) allowed and mapped to the job user
#   ARC_CE_TOKEN_ISSUER=          accept WLCG bearer tokens of this issuer (https URL = its `iss`): the
#                                 [authtokens] block, the otokens handler and an authgroup `tokenusers`
#                                 (iss, aud, the scope below) mapped to the job user. A-REX fetches the
#                                 issuer's discovery document and JWKS itself, over HTTPS verified with
#                                 the CA directory ($B/certificates: ARC_CE_TRUST_CA must sign the issuer).
#   ARC_CE_TOKEN_AUDIENCE=        the `aud` tokens must carry (default: https://localhost:$ARC_CE_PORT)
#   ARC_CE_TOKEN_SCOPE=compute.create  the scope tokens must carry to be in `tokenusers`
#   ARC_CE_INFO_PERIOD=5          infoprovider period in seconds; REST job *status* is only
#                                 refreshed when the infoprovider (CEinfo.pl, ~0.5 s CPU) runs.
#                                 Package default is 60 s.  NB: the XML element
#                                 InfoproviderWakeupPeriod is in units of 0.1 s in 6.17 code
#                                 (WaitOrCancel(period*100 ms)) although a-rex.xsd says seconds.
#   ARC_CE_MODE=direct|pkg        direct: our own XML, arched bound to 127.0.0.1 (default)
#                                 pkg: the packaged /usr/share/arc/arc-arex{,-ws}-start scripts
#                                      (binds 0.0.0.0, fixed 60 s infoprovider period)
#   ARC_CE_LOGLEVEL=INFO          FATAL ERROR WARNING INFO VERBOSE DEBUG
#   ARC_CE_DAEMON_USER=root       non-root: run both arched as this user (direct mode only);
#                                 jobs then run as that same user (ARC_CE_JOBUSER is forced to it)
#
# The enabled runtime environment HARVESTER/TEST exports HARVESTER_TEST_RTE=yes into jobs that ask for it.
set -euo pipefail

B=${ARC_CE_BASE:-/tmp/arcce}
PORT=${ARC_CE_PORT:-8443}
JOBUSER=${ARC_CE_JOBUSER:-arcjob}
INFO_PERIOD=${ARC_CE_INFO_PERIOD:-5}
MODE=${ARC_CE_MODE:-direct}
LOGLEVEL=${ARC_CE_LOGLEVEL:-INFO}
DAEMON_USER=${ARC_CE_DAEMON_USER:-root}
TRUST_CA=${ARC_CE_TRUST_CA:-}
TRUST_DN=${ARC_CE_TRUST_DN:-}
TOKEN_ISSUER=${ARC_CE_TOKEN_ISSUER:-}
TOKEN_AUDIENCE=${ARC_CE_TOKEN_AUDIENCE:-https://localhost:${PORT}}
TOKEN_SCOPE=${ARC_CE_TOKEN_SCOPE:-compute.create}
if [ "$DAEMON_USER" != root ]; then JOBUSER=$DAEMON_USER; fi
CAID=localtest
USERNAME_CN=tester
USER_DN="/DC=org/DC=nordugrid/DC=ARC/O=TestCA/CN=${USERNAME_CN}"
URL="https://localhost:${PORT}/arex"

log() { echo "[arc-ce $(date +%T)] $*" >&2; }

do_install() {
    local t0=$SECONDS
    # The postinst of nordugrid-arc-arex tries to start the service and runs
    # `arcctl test-ca init/hostcert` into /etc/grid-security; in containers
    # /usr/sbin/policy-rc.d (exit 101) stops the start attempt.  We do not use
    # /etc/arc.conf nor /etc/grid-security at all.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        nordugrid-arc-arex nordugrid-arc-arcctl nordugrid-arc-arcctl-service \
        nordugrid-arc-client nordugrid-arc-plugins-needed nordugrid-arc-plugins-arcrest \
        nordugrid-arc-plugins-internal python3-nordugrid-arc openssl curl >/dev/null
    log "packages installed in $((SECONDS - t0))s: $(dpkg-query -W -f='${Version}' nordugrid-arc-arex)"
}

do_setup() {
    command -v arched >/dev/null || { log "ARC not installed; run '$0 install'"; exit 1; }
    mkdir -p "$B"/{certs,user,log,run,control,session,tmp}
    chmod 1777 "$B/tmp"   # A-REX tmpdir: validator wants world-writable + sticky
    # --- test CA, host cert (CN=host/localhost, SAN localhost), user cert ---
    if [ ! -f "$B/certs/host-localhost-cert.pem" ]; then
        ( cd "$B/certs"
          arcctl test-ca --ca-id "$CAID" --ca-dir "$B/certificates" init -f
          arcctl test-ca --ca-id "$CAID" --ca-dir "$B/certificates" hostcert -n localhost -f
          # --no-auth: do not touch /etc/grid-security/testCA.allowed-subjects
          arcctl test-ca --ca-id "$CAID" --ca-dir "$B/certificates" usercert -n "$USERNAME_CN" --no-auth -f
        ) >/dev/null
        log "test CA + certs created in $B/certs, CA dir $B/certificates"
    fi
    # --- a further trusted CA (hash links for both OpenSSL hash flavours) ---
    if [ -n "$TRUST_CA" ]; then
        cp "$TRUST_CA" "$B/certificates/trusted-extra.pem"
        local h
        for h in "$(openssl x509 -in "$TRUST_CA" -noout -hash)" "$(openssl x509 -in "$TRUST_CA" -noout -subject_hash_old)"; do
            ln -sf trusted-extra.pem "$B/certificates/$h.0"
        done
        log "trusting CA $(openssl x509 -in "$TRUST_CA" -noout -subject)"
    fi
    # --- local account the grid user is mapped to ---
    if ! id "$JOBUSER" >/dev/null 2>&1; then
        # another CE started at the same moment may create it first
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$JOBUSER" \
            || id "$JOBUSER" >/dev/null
        log "created system user $JOBUSER"
    fi
    # --- arc.conf ---
    cat > "$B/arc.conf" <<EOF
[common]
hostname = localhost
x509_host_key = $B/certs/host-localhost-key.pem
x509_host_cert = $B/certs/host-localhost-cert.pem
x509_cert_dir = $B/certificates

[authgroup:testusers]
subject = $USER_DN
${TRUST_DN:+subject = $TRUST_DN}

$(token_groups)
[mapping]
map_to_user = testusers $JOBUSER:$JOBUSER
${TOKEN_ISSUER:+map_to_user = tokenusers $JOBUSER:$JOBUSER}

[lrms]
lrms = fork

[arex]
controldir = $B/control
sessiondir = $B/session
logfile = $B/log/arex.log
joblog = $B/log/arex-jobs.log
pidfile = $B/run/arex.pid
loglevel = $LOGLEVEL
tmpdir = $B/tmp

[arex/ws]
wsurl = $URL
logfile = $B/log/ws-interface.log
pidfile = $B/run/arex-ws.pid

[arex/ws/jobs]
allowaccess = testusers${TOKEN_ISSUER:+ tokenusers}

[infosys]
logfile = $B/log/infoprovider.log

[infosys/glue2]

[infosys/cluster]

[queue:fork]
EOF
    # A-REX-WS uses \$controldir/dhparam.pem; the packaged start script would
    # otherwise spawn a background `openssl dhparam 4096` (minutes of CPU).
    ( umask 0177; openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048 \
        -out "$B/control/dhparam.pem" )
    # Runtime (pre-processed) configs, as the start scripts make them.
    /usr/lib/arc/arcconfig-parser --config "$B/arc.conf" --runconfig "$B/run/arex.cfg" --save
    /usr/lib/arc/arcconfig-parser --config "$B/arc.conf" --runconfig "$B/run/arex-ws.cfg" --save
    /usr/lib/arc/arc-config-check --config "$B/arc.conf" --skip-warnings
    write_xml
    # --- an enabled runtime environment for tests (A-REX reads controldir/rte/enabled/) ---
    mkdir -p "$B/rte/HARVESTER" "$B/control/rte/enabled/HARVESTER"
    cat > "$B/rte/HARVESTER/TEST" <<'RTE'
# harvester-cli test runtime environment: stage 1 runs in the job's environment before the executable
if [ "x$1" = "x1" ]; then
  export HARVESTER_TEST_RTE=yes
fi
RTE
    ln -sf "$B/rte/HARVESTER/TEST" "$B/control/rte/enabled/HARVESTER/TEST"
    if [ "$DAEMON_USER" != root ]; then
        # everything but the user credentials (arcproxy insists they belong to the caller)
        find "$B" -mindepth 1 -not -path "$B/certs/client-*" -exec chown "$DAEMON_USER:$DAEMON_USER" {} +
        chown "$DAEMON_USER:$DAEMON_USER" "$B"
    fi
    log "config written: $B/arc.conf (REST at $URL, DN '$USER_DN' -> $JOBUSER)"
}

token_groups() {
    # A-REX 6.17 matches tokens in authgroups only: `authtokens = subject issuer audience scope group`
    # ("*" = any). A token outside every group gets 403 like an unknown DN.
    [ -n "$TOKEN_ISSUER" ] || return 0
    printf '[authgroup:tokenusers]\nauthtokens = * %s %s %s *\n\n[authtokens]\n' \
        "$TOKEN_ISSUER" "$TOKEN_AUDIENCE" "$TOKEN_SCOPE"
}

write_xml() {
    local tokens_plugin="" tokens_handler=""
    if [ -n "$TOKEN_ISSUER" ]; then
        # as /usr/share/arc/arc-arex-ws-start does with an [authtokens] block: the otokens handler reads
        # the Authorization header and verifies the JWT before arclegacy matches the authgroups
        tokens_plugin="<Plugins><Name>arcshcotokens</Name></Plugins>"
        tokens_handler='<SecHandler name="otokens.handler" event="incoming"/>'
    fi
    # Same content as /usr/share/arc/arc-arex-start and arc-arex-ws-start
    # generate (6.17), plus: listen on 127.0.0.1 only, faster infoprovider.
    cat > "$B/run/arex.xml" <<EOF
<?xml version="1.0"?>
<ArcConfig xmlns="http://www.nordugrid.org/schemas/ArcConfig/2007"
           xmlns:arex="http://www.nordugrid.org/schemas/a-rex/Config">
  <Server>
    <PidFile>$B/run/arex.pid</PidFile>
    <Logger><File>$B/log/arex.log</File><Level>$LOGLEVEL</Level></Logger>
    <Watchdog>false</Watchdog>
  </Server>
  <ModuleManager><Path>/usr/lib/arc/</Path></ModuleManager>
  <Plugins><Name>arex</Name></Plugins>
  <Chain>
    <Service name="a-rex" id="a-rex">
      <arex:endpoint>$URL</arex:endpoint>
      <arex:gmconfig>$B/run/arex.cfg</arex:gmconfig>
      <arex:InfoproviderWakeupPeriod>$((INFO_PERIOD * 10))</arex:InfoproviderWakeupPeriod>
    </Service>
  </Chain>
</ArcConfig>
EOF
    cat > "$B/run/arex-ws.xml" <<EOF
<?xml version="1.0"?>
<ArcConfig xmlns="http://www.nordugrid.org/schemas/ArcConfig/2007"
           xmlns:tcp="http://www.nordugrid.org/schemas/ArcMCCTCP/2007"
           xmlns:arex="http://www.nordugrid.org/schemas/a-rex/Config">
  <Server>
    <PidFile>$B/run/arex-ws.pid</PidFile>
    <Logger><File>$B/log/ws-interface.log</File><Level>$LOGLEVEL</Level></Logger>
    <Watchdog>false</Watchdog>
  </Server>
  <ModuleManager><Path>/usr/lib/arc/</Path></ModuleManager>
  <Plugins><Name>mcctcp</Name></Plugins>
  <Plugins><Name>mcctls</Name></Plugins>
  <Plugins><Name>mcchttp</Name></Plugins>
  <Plugins><Name>mccsoap</Name></Plugins>
  <Plugins><Name>arex</Name></Plugins>
  <Plugins><Name>identitymap</Name></Plugins>
  <Plugins><Name>arcshc</Name></Plugins>
  <Plugins><Name>arcshclegacy</Name></Plugins>
  $tokens_plugin
  <Chain>
    <Component name="tcp.service" id="tcp">
      <next id="tls"/>
      <tcp:Listen><tcp:Interface>127.0.0.1</tcp:Interface><tcp:Port>$PORT</tcp:Port></tcp:Listen>
    </Component>
    <Component name="tls.service" id="tls">
      <next id="http"/>
      <KeyPath>$B/certs/host-localhost-key.pem</KeyPath>
      <CertificatePath>$B/certs/host-localhost-cert.pem</CertificatePath>
      <CACertificatesDir PolicyGlobus="true">$B/certificates</CACertificatesDir>
      <VOMSProcessing>standard</VOMSProcessing>
      <ClientAuthn>false</ClientAuthn>
      <Ciphers>HIGH:!eNULL:!aNULL</Ciphers>
      <Protocol>TLSv1.2 TLSv1.3</Protocol>
      <Curve>secp521r1</Curve>
      <DHParamFile>$B/control/dhparam.pem</DHParamFile>
    </Component>
    <Component name="http.service" id="http">
      <next id="soap">POST</next>
      <next id="plexer"/>
      $tokens_handler
      <SecHandler name="arclegacy.handler" event="incoming">
        <ConfigFile>$B/run/arex-ws.cfg</ConfigFile>
      </SecHandler>
    </Component>
    <Component name="soap.service" id="soap">
      <next id="plexer"/>
      <ContinueNonSOAP>true</ContinueNonSOAP>
    </Component>
    <Plexer name="plexer.service" id="plexer">
      <next id="a-rex">^/arex</next>
    </Plexer>
    <Service name="a-rex" id="a-rex">
      <SecHandler name="arclegacy.map" event="incoming">
        <ConfigBlock><ConfigFile>$B/run/arex-ws.cfg</ConfigFile><BlockName>mapping</BlockName></ConfigBlock>
      </SecHandler>
      <arex:endpoint>$URL</arex:endpoint>
      <arex:gmconfig>$B/run/arex-ws.cfg</arex:gmconfig>
      <arex:gmrun>none</arex:gmrun>
      <arex:InfosysInterfaceMaxClients>1</arex:InfosysInterfaceMaxClients>
      <arex:JobControlInterfaceMaxClients>100</arex:JobControlInterfaceMaxClients>
      <arex:DataTransferInterfaceMaxClients>100</arex:DataTransferInterfaceMaxClients>
    </Service>
  </Chain>
</ArcConfig>
EOF
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

do_start() {
    [ -f "$B/arc.conf" ] || { log "no $B/arc.conf; run '$0 setup'"; exit 1; }
    if pid_alive "$B/run/arex.pid" || pid_alive "$B/run/arex-ws.pid"; then
        log "already running"; return 0
    fi
    local t0=$SECONDS
    # arched daemonizes itself (double fork) and writes the pidfiles.
    if [ "$MODE" = pkg ]; then
        ( cd "$B/run" && ARC_CONFIG="$B/arc.conf" /usr/share/arc/arc-arex-start )
        ( cd "$B/run" && ARC_CONFIG="$B/arc.conf" /usr/share/arc/arc-arex-ws-start )
    else
        (
          cd "$B/run"
          # A clean environment: jobs inherit the daemons' (no PYTHONPATH, pyenv shims or
          # proxies of whoever started the CE); PATH is what a worker node offers.
          env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root
               ARC_LOCATION=/usr ARC_CONFIG="$B/arc.conf" HOSTNAME=localhost TMPDIR="$B/tmp"
               X509_USER_CERT="$B/certs/host-localhost-cert.pem"
               X509_USER_KEY="$B/certs/host-localhost-key.pem"
               X509_CERT_DIR="$B/certificates" MALLOC_ARENA_MAX=2)
          if [ "$DAEMON_USER" = root ]; then run=(); else run=(runuser -u "$DAEMON_USER" --); fi
          "${env[@]}" "${run[@]}" /usr/sbin/arched -c "$B/run/arex.xml"
          ns=()
          if [ -n "$TOKEN_ISSUER" ]; then
              # A-REX 6.17 fetches the issuer's JWKS with a default client configuration whose CA
              # directory is always /etc/grid-security/certificates (x509_cert_dir and X509_CERT_DIR
              # are ignored there): give the REST daemon a private mount namespace in which that
              # path is this CE's CA directory, instead of touching the host's trust store.
              mkdir -p /etc/grid-security/certificates
              ns=(unshare --mount --propagation private sh -c
                  'mount --bind "$0" /etc/grid-security/certificates && exec "$@"' "$B/certificates")
          fi
          "${ns[@]}" "${env[@]}" "${run[@]}" /usr/sbin/arched -c "$B/run/arex-ws.xml"
        )
    fi
    # wait for the REST endpoint (anonymous request -> 403 means it is up)
    local code=000
    for _ in $(seq 1 100); do
        code=$(curl -sk -o /dev/null -w '%{http_code}' "$URL/rest" || true)
        [ "$code" != 000 ] && break
        sleep 0.2
    done
    [ "$code" != 000 ] || { log "REST endpoint did not come up; see $B/log/"; exit 1; }
    # /rest/1.0/info is served from control/info.xml, written by the first infoprovider run
    for _ in $(seq 1 150); do [ -s "$B/control/info.xml" ] && break; sleep 0.2; done
    log "A-REX up in $((SECONDS - t0))s: jobs pid $(cat "$B/run/arex.pid"), ws pid $(cat "$B/run/arex-ws.pid"), $URL (mode $MODE)"
}

do_proxy() {
    X509_USER_CERT="$B/certs/client-${USERNAME_CN}-cert.pem" \
    X509_USER_KEY="$B/certs/client-${USERNAME_CN}-key.pem" \
    X509_CERT_DIR="$B/certificates" \
        arcproxy -P "$B/user/proxy.pem" -c validityPeriod=12H >/dev/null
    log "proxy: $B/user/proxy.pem"
}

do_check() {
    local c=(curl -sS --cacert "$B/certificates/ARC-TestCA-${CAID}.pem" --cert "$B/user/proxy.pem"
             -H 'Accept: application/json')
    echo "versions: $("${c[@]}" "$URL/rest")"
    echo "jobs:     $("${c[@]}" -w ' (HTTP %{http_code})' "$URL/rest/1.0/jobs")"
    "${c[@]}" -o "$B/run/info.json" "$URL/rest/1.0/info"
    echo "info:     $(head -c 120 "$B/run/info.json")..."
}

stop_one() {
    # echo the pid of a live arched from this pid file after sending it TERM (nothing if none)
    local pf=$1 pid
    pid_alive "$pf" || { rm -f "$pf"; return 0; }
    pid=$(cat "$pf")
    # only stop it if it is really one of our arched processes
    if ! tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "arched"; then
        log "pid $pid in $pf is not arched; not touching it"; return 0
    fi
    kill -TERM "$pid"
    rm -f "$pf"
    echo "$pid"
}

do_stop() {
    # Both daemons asked at once, then 10 s for both together: the test session's end waits for this.
    local pids p
    pids="$(stop_one "$B/run/arex-ws.pid") $(stop_one "$B/run/arex.pid")"
    for _ in $(seq 1 50); do
        local alive=""
        for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
        [ -z "$alive" ] && break
        sleep 0.2
    done
    for p in $pids; do
        if kill -0 "$p" 2>/dev/null; then log "pid $p still alive, SIGKILL"; kill -KILL "$p"; fi
        log "stopped pid $p"
    done
    # Fork-LRMS payloads survive both daemon stop AND a REST/arckill "kill"
    # (cancel-fork-job only kills the watcher subshell).  Kill the processes
    # of $JOBUSER whose environment points into this base dir.
    for p in $(pgrep -u "$JOBUSER" 2>/dev/null || true); do
        grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null && continue   # zombie
        if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -q "^ARC_CONFIG=$B/run/"; then
            kill -TERM "$p" 2>/dev/null && log "killed leftover job process $p"
        fi
    done
}

do_status() {
    for pf in "$B/run/arex.pid" "$B/run/arex-ws.pid"; do
        if pid_alive "$pf"; then echo "$(basename "$pf" .pid): running pid $(cat "$pf")"
        else echo "$(basename "$pf" .pid): stopped"; fi
    done
}

case "${1:-}" in
    install) do_install ;;
    setup)   do_setup ;;
    start)   do_start ;;
    proxy)   do_proxy ;;
    check)   do_check ;;
    stop)    do_stop ;;
    status)  do_status ;;
    all)     do_install; do_setup; do_start; do_proxy; do_check ;;
    purge)   do_stop; rm -rf "$B" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
esac
