#!/usr/bin/env bash
# bench-cluster.sh [ingest] [find]   (default: both)
#
# Ward on PostgreSQL and S3 (#18), side by side with Orthanc and its
# PostgreSQL index plugin on the same PostgreSQL, on this machine:
#
# ingest  C-STORE throughput with 1 and 4 associations (DCMTK storescu,
#         the shared harness ../shared/bench: ingest.sh, its corpus, its
#         RSS/CPU sampling and stored==sent check) into, interleaved in one
#         run (see bench-cluster-peer.sh for each):
#           ward          embedded default (SQLite + files), this disk
#           ward-s3       SQLite + S3 (versitygw, posix, on this disk)
#           ward-pg       PostgreSQL + files
#           ward-pg-s3    one node, PostgreSQL + S3
#           ward2-pg-s3   two nodes behind HAProxy, PostgreSQL + S3
#           orthanc-pg    Orthanc + orthanc-postgresql (index), files
#           orthanc       Orthanc, its default SQLite (the shared target)
#         ward-s3 / ward is the S3 ratio (target >= 0.5); ward-pg-s3 and
#         ward2-pg-s3 against orthanc-pg the 3x target.
# find    C-FIND latency over C-ECHO (internal/cmd/qrbench: one
#         association, RUNS timed exchanges of each, median / p90) on
#         PostgreSQL indexes of SIZES synthetic instances, built by
#         internal/cmd/synthindex --index postgres://… (COPY).
#
# One PostgreSQL cluster (initdb here, run as the postgres user, unix
# socket only, fsync on: durable, as in production) and one versitygw
# serve every target; both are stopped and removed at the end.
#
# Env: CORPUS (/tmp/bench/corpus-2000, made by ../shared/bench/make-corpus.sh
# when missing), REPS (3), TARGETS (all of the above), SIZES
# ("1000000 10000000"), RUNS (200), SHARED_BENCH (/work/shared/bench),
# DATA_PARENT (/work: where the state goes, the same disk for every
# target), PORT_BASE (21200), PG_OPTS (more postgres -c options, e.g.
# "-c synchronous_commit=off" to see what the index's fsync costs), VGW_OPTS
# (more options of versitygw's posix back end, e.g. --data-integrity-etag:
# ETags from the checksum Ward sends instead of an MD5 of every object),
# KEEP=1 keeps the state folder (the
# synthetic indexes take minutes to build).
# Results under $OUT (default /tmp/bench/results/cluster-STAMP): the
# shared harness's ingest/summary.md (printed) and run.log, all that was
# printed, the C-FIND table included. Loopback only.
set -euo pipefail
export WARD_VIEWER_FETCH=off TCP_NODELAY=1
here="$(cd "$(dirname "$0")/.." && pwd)"
shared=${SHARED_BENCH:-/work/shared/bench}
corpus=${CORPUS:-/tmp/bench/corpus-2000}
reps=${REPS:-3}
runs=${RUNS:-200}
sizes=(${SIZES:-1000000 10000000})
targets=(${TARGETS:-ward ward-s3 ward-pg ward-pg-s3 ward2-pg-s3 orthanc-pg orthanc})
export PORT_BASE=${PORT_BASE:-21200}
phases=("$@"); [ ${#phases[@]} -gt 0 ] || phases=(ingest find)
die() { echo "bench-cluster: $*" >&2; exit 1; }
for tool in storescu echoscu psql haproxy Orthanc curl python3 gcc; do
  command -v $tool >/dev/null || die "$tool missing (apt-get install dcmtk postgresql haproxy orthanc orthanc-postgresql curl)"
done
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$pgbin/initdb" ] || die "PostgreSQL server missing (apt-get install postgresql)"
vgw=$(command -v versitygw || echo "$(go env GOPATH)/bin/versitygw")
[ -x "$vgw" ] || die "versitygw missing (scripts/test.sh builds it from test/tools)"
[ "$(id -u)" = 0 ] || die "run as root (initdb and the PostgreSQL server run as the postgres user)"

export CL_STATE=$(mktemp -d "${DATA_PARENT:-/work}/ward-cluster-bench.XXXXXX")
chmod 755 "$CL_STATE"
out=${OUT:-/tmp/bench/results/cluster-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
# Everything printed is kept in $out/run.log too.
exec > >(tee -a "$out/run.log") 2>&1
vgw_pid=
cleanup() {
  for t in "${targets[@]}"; do
    case $t in orthanc) "$shared/peers/orthanc.sh" stop >/dev/null 2>&1 || true ;;
      *) "$here/scripts/bench-cluster-peer.sh" "$t" stop >/dev/null 2>&1 || true ;; esac
  done
  [ -n "${ward_pid:-}" ] && kill "$ward_pid" 2>/dev/null || true
  [ -n "$vgw_pid" ] && kill "$vgw_pid" 2>/dev/null || true
  [ -f "$CL_STATE/pg/data/postmaster.pid" ] && runuser -u postgres -- "$pgbin/pg_ctl" -D "$CL_STATE/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  if [ "${KEEP:-}" = 1 ]; then echo "state kept in $CL_STATE"; else rm -rf "$CL_STATE"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$CL_STATE/bin"
go build -o "$CL_STATE/bin/ward" "$here/cmd/ward"
go build -o "$CL_STATE/bin/qrbench" "$here/internal/cmd/qrbench"
go build -o "$CL_STATE/bin/synthindex" "$here/internal/cmd/synthindex"
export WARD_BIN=$CL_STATE/bin/ward

# PostgreSQL: a cluster of its own, unix socket only.
export PG_SOCK=$CL_STATE/pg/sock PG_PORT=5432
mkdir -p "$PG_SOCK"; chown -R postgres: "$CL_STATE/pg"; chmod 700 "$CL_STATE/pg"
runuser -u postgres -- "$pgbin/initdb" -D "$CL_STATE/pg/data" -U postgres -E UTF8 --no-locale --auth-local=trust --auth-host=reject >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$CL_STATE/pg/data" -l "$CL_STATE/pg/log" -w -t 60 start -o \
  "-k $PG_SOCK -p $PG_PORT -c listen_addresses= -c unix_socket_permissions=0700 -c max_connections=300 -c shared_buffers=2GB -c max_wal_size=16GB -c checkpoint_timeout=30min -c maintenance_work_mem=1GB ${PG_OPTS:-}" >/dev/null
echo "PostgreSQL $("$pgbin/postgres" -V | awk '{print $3}') on $PG_SOCK (fsync on)"

# versitygw on this disk, a bucket for every S3 target.
export S3_DIR=$CL_STATE/s3 S3_BUCKET=bench S3_ENDPOINT=http://127.0.0.1:$((PORT_BASE + 10))
mkdir -p "$S3_DIR"
export AWS_ACCESS_KEY_ID=bench$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
export AWS_SECRET_ACCESS_KEY=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
ROOT_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID ROOT_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
  "$vgw" --port 127.0.0.1:$((PORT_BASE + 10)) --region us-east-1 --quiet posix ${VGW_OPTS:-} "$S3_DIR" >"$CL_STATE/versitygw.log" 2>&1 &
vgw_pid=$!
printf 'user = "%s:%s"\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$CL_STATE/curl.cfg"; chmod 600 "$CL_STATE/curl.cfg"
for i in $(seq 1 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -K "$CL_STATE/curl.cfg" --aws-sigv4 "aws:amz:us-east-1:s3" \
    -H "x-amz-content-sha256: $(printf '' | sha256sum | cut -d' ' -f1)" -X PUT "$S3_ENDPOINT/$S3_BUCKET" || true)
  case $code in 200|409) break ;; esac
  sleep 0.1
done
[ "$code" = 200 ] || [ "$code" = 409 ] || die "versitygw: creating bucket $S3_BUCKET gave HTTP $code"
echo "versitygw at $S3_ENDPOINT, posix on $S3_DIR"

# One target file per kind, for the shared harness.
mkdir -p "$CL_STATE/targets"
tfiles=()
for t in "${targets[@]}"; do
  if [ "$t" = orthanc ]; then tfiles+=(orthanc); continue; fi
  f="$CL_STATE/targets/$t.target"
  case $t in
    ward) p=1 ;; ward-s3) p=2 ;; ward-pg) p=3 ;; ward-pg-s3) p=4 ;; ward2-pg-s3) p=5 ;; orthanc-pg) p=8 ;;
    *) die "unknown target $t" ;;
  esac
  aet=WARD; log=$CL_STATE/$t/server.log
  [ "$t" = orthanc-pg ] && aet=ORTHANC
  [ "$t" = ward2-pg-s3 ] && log=$CL_STATE/$t/node-a.log
  cat >"$f" <<EOF
TARGET_NAME=$t
TARGET_HOST=127.0.0.1
TARGET_PORT=$((PORT_BASE + p))
TARGET_AET=$aet
TARGET_CTL="$here/scripts/bench-cluster-peer.sh $t"
TARGET_LOG=$log
TARGET_START_TIMEOUT=180
EOF
  tfiles+=("$f")
done

for phase in "${phases[@]}"; do
  case $phase in
  ingest)
    if [ ! -f "$corpus/summary.json" ]; then
      "$shared/make-corpus.sh" 2000 "$corpus" --force
    fi
    "$shared/check.sh" "${tfiles[@]}"
    "$shared/ingest.sh" "${tfiles[@]}" --corpus "$corpus" --reps "$reps" --out "$out/ingest"
    # The S3 server's own CPU, which the harness does not count (it
    # shares these two cores): the sum over every S3 target's runs.
    ticks=$(awk '{print $14 + $15}' "/proc/$vgw_pid/stat")
    echo "versitygw CPU over the whole ingest phase: $(echo "$ticks / $(getconf CLK_TCK)" | bc -l | xargs printf '%.1f') s (options: ${VGW_OPTS:-none})"
    ;;
  find)
    root=1.2.826.0.1.3680043.10.1432.99
    queries=(
      "STUDY, PatientID exact|1|QueryRetrieveLevel=STUDY PatientID=PID00000010 StudyInstanceUID PatientName StudyDate"
      "STUDY, PatientName=Wilson* (prefix wildcard)|0|QueryRetrieveLevel=STUDY PatientName=Wilson* StudyInstanceUID PatientID"
      "STUDY, StudyDate one day|0|QueryRetrieveLevel=STUDY StudyDate=20200115 StudyInstanceUID PatientID"
      "STUDY, StudyDate one quarter|0|QueryRetrieveLevel=STUDY StudyDate=20200101-20200331 StudyInstanceUID PatientID"
      "STUDY, StudyInstanceUID exact|1|QueryRetrieveLevel=STUDY StudyInstanceUID=$root.1.42 PatientID"
      "SERIES within a study|1|QueryRetrieveLevel=SERIES StudyInstanceUID=$root.1.42 SeriesInstanceUID Modality"
      "IMAGE within a series|0|QueryRetrieveLevel=IMAGE StudyInstanceUID=$root.1.42 SeriesInstanceUID=$root.2.124 SOPInstanceUID"
    )
    port=$((PORT_BASE + 11))
    for size in "${sizes[@]}"; do
      db=synth_$size
      dsn="postgres:///$db?host=$PG_SOCK&port=$PG_PORT&user=postgres&sslmode=disable"
      psql -X -q -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE $db"
      s=$(date +%s.%N)
      "$CL_STATE/bin/synthindex" -n "$size" -index "$dsn" >"$CL_STATE/synth-$size.log" 2>&1 || { tail "$CL_STATE/synth-$size.log" >&2; die "building the $size index failed"; }
      e=$(date +%s.%N)
      dbsize=$(psql -X -At -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres -c "SELECT pg_size_pretty(pg_database_size('$db'))")
      echo "PostgreSQL index of $size instances built in $(echo "$e - $s" | bc -l | xargs printf '%.0f') s ($dbsize)"
      psql -X -q -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d "$db" -c "VACUUM ANALYZE" >/dev/null
      data=$CL_STATE/find-$size; mkdir -p "$data"; chmod 700 "$data"
      # No cap on matches (the default stops at 1000 with A700): a range
      # or prefix query at 10M returns every match, so its cost per match
      # shows; the exact keys and the one-day range are the flat ones.
      printf '[storage]\nindex = "%s"\n[dicom]\nlisten = "127.0.0.1:%d"\n[web]\nlisten = "off"\n[query]\nmax_results = -1\n' "$dsn" $port >"$data/ward.toml"
      chmod 600 "$data/ward.toml"
      "$WARD_BIN" peer add BENCHSCU --host 127.0.0.1 --allow echo,find,bulk-query --data "$data" >/dev/null || die "registering BENCHSCU failed"
      "$WARD_BIN" serve --data "$data" >"$CL_STATE/find-$size.log" 2>&1 &
      ward_pid=$!
      up=
      for i in $(seq 1 300); do echoscu -aet BENCHSCU -aec WARD 127.0.0.1 $port >/dev/null 2>&1 && { up=1; break; }; sleep 0.1; done
      [ -n "$up" ] || { tail -20 "$CL_STATE/find-$size.log" >&2; die "ward serve on the $size index did not answer C-ECHO"; }
      for q in "${queries[@]}"; do
        IFS='|' read -r label must args <<<"$q"
        # shellcheck disable=SC2086
        r=$("$CL_STATE/bin/qrbench" -aet BENCHSCU -aec WARD -n "$runs" 127.0.0.1:$port $args) || die "$label: qrbench failed"
        if [ "$must" = 1 ]; then case "$r" in *" 0 matches") die "$label: no matches (the index or the query is wrong)";; esac; fi
        printf '  %-44s %s\n' "$label" "$r"
      done
      kill -INT $ward_pid; wait $ward_pid || true; ward_pid=
      [ "${KEEP:-}" = 1 ] || psql -X -q -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres -c "DROP DATABASE $db"
    done
    ;;
  *) die "unknown phase $phase (ingest, find)" ;;
  esac
done
echo "results in $out"
