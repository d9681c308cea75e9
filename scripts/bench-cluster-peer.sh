#!/usr/bin/env bash
# bench-cluster-peer.sh KIND start|stop|pid|count|wipe
# The control verbs of the targets scripts/bench-cluster.sh measures with
# ../shared/bench (its target contract: start returns once C-ECHO answers
# on loopback; stop by recorded PID; pid; count; wipe while stopped).
#
# KIND:
#   ward         ward serve, the embedded default (SQLite + files)
#   ward-s3      SQLite index, objects in S3 (versitygw on the same disk)
#   ward-pg      PostgreSQL index, files on disk
#   ward-pg-s3   one node, PostgreSQL + S3
#   ward2-pg-s3  two nodes, PostgreSQL + S3, behind HAProxy (TCP mode,
#                leastconn); pid is a launcher whose children are both
#                nodes and HAProxy (their RSS and CPU are summed)
#   orthanc-pg   Orthanc 1.10 with its PostgreSQL index plugin
#                (orthanc-postgresql 4.0), storage area on disk
#
# Environment (set by bench-cluster.sh): WARD_BIN, CL_STATE (state
# folder), PG_SOCK and PG_PORT (the PostgreSQL cluster's unix socket),
# S3_ENDPOINT, S3_BUCKET, S3_DIR (versitygw's posix folder),
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, PORT_BASE; BENCH_DIR and
# BENCH_TMP, BENCH_SCU_AET, BENCH_SINK_AET, BENCH_SINK_PORT (the shared
# harness).
set -uo pipefail
kind=${1:?kind}; verb=${2:?verb}
: "${CL_STATE:?run through bench-cluster.sh}" "${BENCH_DIR:?}"
source "$BENCH_DIR/peers/common.sh"
base=${PORT_BASE:-21200}
scu=${BENCH_SCU_AET:-BENCHSCU}
sink=${BENCH_SINK_AET:-BENCHSINK}
sinkport=${BENCH_SINK_PORT:-21120}
st="$CL_STATE/$kind"
pidfile="$st/server.pid"
export WARD_VIEWER_FETCH=off
psql_() { psql -X -q -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
pgdsn() { echo "postgres:///$1?host=$PG_SOCK&port=$PG_PORT&user=postgres&sslmode=disable"; }
s3url() { echo "s3://$S3_BUCKET/$1?endpoint=$S3_ENDPOINT&region=us-east-1"; }

case $kind in
  ward)        port=$((base + 1)); nodes=1; index=;              blobs= ;;
  ward-s3)     port=$((base + 2)); nodes=1; index=;              blobs=$(s3url ward-s3) ;;
  ward-pg)     port=$((base + 3)); nodes=1; index=$(pgdsn ward_pg); blobs= ;;
  ward-pg-s3)  port=$((base + 4)); nodes=1; index=$(pgdsn ward_pg_s3); blobs=$(s3url ward-pg-s3) ;;
  ward2-pg-s3) port=$((base + 5)); nodes=2; index=$(pgdsn ward2); blobs=$(s3url ward2-pg-s3) ;;
  orthanc-pg)  port=$((base + 8)); http=$((base + 9)) ;;
  *) die "unknown kind $kind" ;;
esac
db=
case $kind in ward-pg) db=ward_pg ;; ward-pg-s3) db=ward_pg_s3 ;; ward2-pg-s3) db=ward2 ;; orthanc-pg) db=orthanc ;; esac

# ward_conf DIR NODE DICOMPORT WEBPORT: the node's ward.toml
ward_conf() {
  mkdir -p "$1"; chmod 700 "$1"
  {
    echo "node_id = \"$2\""
    echo "[storage]"
    [ -n "$index" ] && echo "index = \"$index\""
    [ -n "$blobs" ] && echo "blobs = \"$blobs\""
    echo "[dicom]"; echo "listen = \"127.0.0.1:$3\""
    echo "[web]"; echo "listen = \"127.0.0.1:$4\""
  } >"$1/ward.toml"
  chmod 600 "$1/ward.toml"
}

# the harness's SCU and its C-MOVE sink, registered before ward serve
# starts (in the shared index for a PostgreSQL index, so once for both
# nodes)
ward_peers() {
  "$WARD_BIN" peer add "$sink" --host 127.0.0.1 --port "$sinkport" --allow move-destination --data "$1" >/dev/null 2>&1 || true
  "$WARD_BIN" peer add "$scu" --host 127.0.0.1 --allow echo,store,find,move,get,bulk-query --data "$1" >/dev/null \
    || "$WARD_BIN" peer list --data "$1" 2>/dev/null | grep -q "$scu" || die "registering $scu failed"
}

haproxy_cfg() {
  cat <<EOF
global
    maxconn 512
defaults
    mode tcp
    timeout connect 2s
    timeout client 10m
    timeout server 10m
    retries 3
    option redispatch
frontend dimse
    bind 127.0.0.1:$port
    default_backend ward
backend ward
    balance leastconn
    server node-a 127.0.0.1:$((base + 6)) check inter 1s
    server node-b 127.0.0.1:$((base + 7)) check inter 1s
EOF
}

case $verb in
  start)
    mkdir -p "$st"
    pid_alive "$(read_pidfile "$pidfile")" && die "already running"
    if [ "$kind" = orthanc-pg ]; then
      psql_ -tc "SELECT 1 FROM pg_database WHERE datname='orthanc'" | grep -q 1 || psql_ -c "CREATE DATABASE orthanc"
      mkdir -p "$st/storage" "$st/tmp"
      plugin=/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so
      [ -e "$plugin" ] || die "orthanc-postgresql not installed ($plugin)"
      # As the shared orthanc peer (DicomThreadsCount 4, fsync of each
      # file, StorageAccessOnFind Always), the index in PostgreSQL with a
      # pool of 4 connections (one per DICOM thread), files on this disk.
      cat >"$st/orthanc.json" <<EOF
{
  "Name": "bench-orthanc-pg", "StorageDirectory": "$st/storage", "IndexDirectory": "$st/index",
  "TemporaryDirectory": "$st/tmp", "StorageCompression": false, "Plugins": ["$plugin"],
  "PostgreSQL": { "EnableIndex": true, "EnableStorage": false,
    "ConnectionUri": "postgresql:///orthanc?host=$PG_SOCK&port=$PG_PORT&user=postgres",
    "Lock": false, "EnableSsl": false, "IndexConnectionsCount": 4,
    "MaximumConnectionRetries": 10, "ConnectionRetryInterval": 1 },
  "HttpServerEnabled": true, "HttpPort": $http, "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "WebDavEnabled": false, "OrthancExplorerEnabled": false,
  "DicomServerEnabled": true, "DicomAet": "ORTHANC", "DicomPort": $port, "DicomCheckCalledAet": false,
  "DicomThreadsCount": 4, "MaximumPduLength": 16384,
  "DicomAlwaysAllowEcho": true, "DicomAlwaysAllowStore": true, "DicomAlwaysAllowFind": false,
  "DicomAlwaysAllowGet": false, "DicomAlwaysAllowMove": false, "DicomCheckModalityHost": false,
  "DicomModalities": { "benchscu": {"AET": "$scu", "Host": "127.0.0.1", "Port": $sinkport},
                       "benchsink": {"AET": "$sink", "Host": "127.0.0.1", "Port": $sinkport} },
  "StorageAccessOnFind": "Always", "SyncStorageArea": true, "SaveJobs": false, "SynchronousCMove": true,
  "ConcurrentJobs": 2, "StableAge": 60, "LimitFindResults": 0, "LimitFindInstances": 0, "OverwriteInstances": false
}
EOF
      start_daemon "$pidfile" "$st/server.log" Orthanc "$st/orthanc.json"
      wait_echo ORTHANC "$port" 120 "$(read_pidfile "$pidfile")" || { tail -20 "$st/server.log" >&2; "$0" "$kind" stop; exit 1; }
      assert_loopback_only "$port" "$http" || { "$0" "$kind" stop; die "refusing non-loopback listener"; }
      exit 0
    fi
    if [ -n "$db" ]; then
      psql_ -tc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1 || psql_ -c "CREATE DATABASE $db"
    fi
    if [ "$nodes" = 1 ]; then
      ward_conf "$st/data" "$kind" "$port" $((port + 20))
      ward_peers "$st/data"
      start_daemon "$pidfile" "$st/server.log" "$WARD_BIN" serve --data "$st/data"
    else
      ward_conf "$st/a" node-a $((base + 6)) $((base + 26))
      ward_conf "$st/b" node-b $((base + 7)) $((base + 27))
      ward_peers "$st/a"
      haproxy_cfg >"$st/haproxy.cfg"
      haproxy -c -q -f "$st/haproxy.cfg" || die "haproxy configuration refused"
      # One launcher process whose children are the two nodes and
      # HAProxy: the harness samples its tree, and stop ends the group.
      cat >"$st/launch.sh" <<EOF
#!/bin/bash
"$WARD_BIN" serve --data "$st/a" >>"$st/node-a.log" 2>&1 &
"$WARD_BIN" serve --data "$st/b" >>"$st/node-b.log" 2>&1 &
haproxy -db -f "$st/haproxy.cfg" >>"$st/haproxy.log" 2>&1 &
wait
EOF
      chmod 700 "$st/launch.sh"
      start_daemon "$pidfile" "$st/server.log" "$st/launch.sh"
      wait_echo WARD $((base + 6)) 120 "$(read_pidfile "$pidfile")" || { tail -5 "$st"/node-*.log >&2; "$0" "$kind" stop; exit 1; }
      wait_echo WARD $((base + 7)) 60 "$(read_pidfile "$pidfile")" || { tail -5 "$st"/node-*.log >&2; "$0" "$kind" stop; exit 1; }
      assert_loopback_only $((base + 6)) $((base + 7)) || { "$0" "$kind" stop; die "refusing non-loopback listener"; }
    fi
    wait_echo WARD "$port" 120 "$(read_pidfile "$pidfile")" || { tail -20 "$st/server.log" >&2; "$0" "$kind" stop; exit 1; }
    assert_loopback_only "$port" || { "$0" "$kind" stop; die "refusing non-loopback listener"; }
    ;;
  stop)
    stop_pidfile "$pidfile" ;;
  pid)
    pid=$(read_pidfile "$pidfile"); pid_alive "$pid" && echo "$pid" || exit 1 ;;
  count)
    if [ "$kind" = orthanc-pg ]; then
      curl -sf "http://127.0.0.1:$http/statistics" | python3 -c 'import json,sys; print(json.load(sys.stdin)["CountInstances"])'
    else
      d="$st/data"; [ "$nodes" = 2 ] && d="$st/a"
      "$WARD_BIN" status --json --data "$d" | python3 -c 'import json,sys; print(json.load(sys.stdin)["counts"]["instances"])'
    fi ;;
  wipe)
    pid_alive "$(read_pidfile "$pidfile")" && die "stop it first"
    if [ -n "$db" ]; then psql_ -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"; fi
    case $kind in *s3) rm -rf "${S3_DIR:?}/$S3_BUCKET/$kind" ;; esac
    rm -rf "$st" ;;
  *) die "usage: $0 KIND start|stop|pid|count|wipe" ;;
esac
