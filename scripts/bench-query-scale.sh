#!/usr/bin/env bash
# bench-query-scale.sh [SIZE...]   (default: 10000 1000000)
# C-FIND latency of Ward on synthetic indexes of each size (built with
# internal/cmd/synthindex, no blobs), measured with internal/cmd/qrbench
# (one association, N timed C-ECHO and C-FIND exchanges: the server's own
# time, no process start-up), and ingest speed (storescu, one association)
# into the same index, to show whether it falls as the index grows.
#
# LOAD=bulk (default) builds each index by bulk SQL in key order, which is
# fast and kind to locality; LOAD=arrival sends the same instances through
# the index's own write path (Insert, one durable transaction each),
# studies shuffled and 8 at a time, as modalities would: slower to build
# (minutes per million), and the honest layout.
#
# Ward is deny-by-default: the harness's SCU (BENCHSCU, for qrbench and
# storescu) is registered with echo, store, find and bulk-query before Ward
# starts. Any measurement that fails stops the script with exit 1.
# Loopback only. Data under ${BENCH_DIR:-/work}.
set -euo pipefail
# A benchmark measures the archive: no first-run viewer fetch (npm) beside it.
export WARD_VIEWER_FETCH=off
here="$(cd "$(dirname "$0")/.." && pwd)"
base=$(mktemp -d "${BENCH_DIR:-/work}/ward-qscale.XXXXXX")
corpus=${CORPUS:-/tmp/bench/corpus-2000/data}
port=${WARD_BENCH_PORT:-21118}
load=${LOAD:-bulk}
aet=BENCHSCU
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$base"' EXIT
die() { echo "bench-query-scale: $*" >&2; exit 1; }
[ -d "$corpus" ] || die "no corpus at $corpus (make one with ../shared/bench/make-corpus.sh, or set CORPUS)"
export TCP_NODELAY=1
go build -o "$base/ward" "$here/cmd/ward"
go build -o "$base/qrbench" "$here/internal/cmd/qrbench"
go build -o "$base/synthindex" "$here/internal/cmd/synthindex"
root=1.2.826.0.1.3680043.10.1432.99
# label|must match (1: an exact key that exists at every size)|keys
queries=(
  "STUDY, PatientID exact|1|QueryRetrieveLevel=STUDY PatientID=PID00000010 StudyInstanceUID PatientName StudyDate"
  "STUDY, PatientName=Wilson* (prefix wildcard)|0|QueryRetrieveLevel=STUDY PatientName=Wilson* StudyInstanceUID PatientID"
  "STUDY, StudyDate one quarter|0|QueryRetrieveLevel=STUDY StudyDate=20200101-20200331 StudyInstanceUID PatientID"
  "STUDY, StudyInstanceUID exact|1|QueryRetrieveLevel=STUDY StudyInstanceUID=$root.1.42 PatientID"
  "SERIES within a study|1|QueryRetrieveLevel=SERIES StudyInstanceUID=$root.1.42 SeriesInstanceUID Modality"
)
instances() { "$base/ward" status --json --data "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["counts"]["instances"])'; }
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10000 1000000)
for size in "${sizes[@]}"; do
  data="$base/data-$size"; mkdir -p "$data"; chmod 700 "$data"
  s=$(date +%s.%N)
  "$base/synthindex" -n "$size" -load "$load" -out "$data/index.db" >/dev/null || die "building the $size index failed"
  e=$(date +%s.%N)
  echo "index of $size instances ($load) built in $(echo "$e - $s" | bc -l | xargs printf '%.1f') s ($(du -h "$data/index.db" | cut -f1))"
  "$base/ward" peer add $aet --host 127.0.0.1 --allow echo,store,find,bulk-query --data "$data" >/dev/null \
    || die "registering $aet failed"
  "$base/ward" serve --data "$data" --dicom-listen 127.0.0.1:$port >"$data/serve.log" 2>&1 &
  pid=$!
  up=
  for i in $(seq 1 100); do echoscu -aet $aet -aec WARD 127.0.0.1 $port >/dev/null 2>&1 && { up=1; break; }; sleep 0.1; done
  [ -n "$up" ] || { tail -20 "$data/serve.log" >&2; die "ward serve did not answer C-ECHO from $aet"; }
  for q in "${queries[@]}"; do
    IFS='|' read -r label must args <<<"$q"
    # shellcheck disable=SC2086
    r=$("$base/qrbench" -aet $aet -aec WARD -n "${RUNS:-200}" 127.0.0.1:$port $args) || die "$label: qrbench failed"
    if [ "$must" = 1 ]; then case "$r" in *" 0 matches") die "$label: no matches (the index or the query is wrong)";; esac; fi
    printf '  %-44s %s\n' "$label" "$r"
  done
  files=$(find "$corpus" -type f ! -name '*.tsv' | wc -l)
  s=$(date +%s.%N)
  storescu -aec WARD -aet $aet +sd +r 127.0.0.1 $port "$corpus" >"$data/storescu.log" 2>&1 || { tail -5 "$data/storescu.log" >&2; die "storescu failed"; }
  e=$(date +%s.%N)
  kill -INT $pid; wait $pid || true; pid=
  got=$(instances "$data") || die "ward status failed"
  [ "$got" -eq $((size + files)) ] || die "index holds $got instances after ingest, want $((size + files))"
  echo "  ingest of $files instances (storescu, 1 association) into this index: $(echo "$files / ($e - $s)" | bc -l | xargs printf '%.0f') inst/s"
  rm -rf "$data"
done
