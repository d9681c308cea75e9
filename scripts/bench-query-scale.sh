#!/usr/bin/env bash
# bench-query-scale.sh [SIZE...]   (default: 10000 1000000)
# C-FIND latency of Ward on synthetic indexes of each size (built with
# internal/cmd/synthindex, no blobs), measured with internal/cmd/qrbench
# (one association, N timed C-ECHO and C-FIND exchanges: the server's own
# time, no process start-up), and ingest speed (storescu, one association)
# into the same index, to show whether it falls as the index grows.
# Loopback only. Data under ${BENCH_DIR:-/work}.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
base=$(mktemp -d "${BENCH_DIR:-/work}/ward-qscale.XXXXXX")
corpus=${CORPUS:-/tmp/bench/corpus-2000/data}
port=${WARD_BENCH_PORT:-21118}
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$base"' EXIT
export TCP_NODELAY=1
go build -o "$base/ward" "$here/cmd/ward"
go build -o "$base/qrbench" "$here/internal/cmd/qrbench"
go build -o "$base/synthindex" "$here/internal/cmd/synthindex"
root=1.2.826.0.1.3680043.10.1432.99
queries=(
  "STUDY, PatientID exact|QueryRetrieveLevel=STUDY PatientID=PID00000010 StudyInstanceUID PatientName StudyDate"
  "STUDY, PatientName=Wilson* (prefix wildcard)|QueryRetrieveLevel=STUDY PatientName=Wilson* StudyInstanceUID PatientID"
  "STUDY, StudyDate one quarter|QueryRetrieveLevel=STUDY StudyDate=20200101-20200331 StudyInstanceUID PatientID"
  "STUDY, StudyInstanceUID exact|QueryRetrieveLevel=STUDY StudyInstanceUID=$root.1.42 PatientID"
  "SERIES within a study|QueryRetrieveLevel=SERIES StudyInstanceUID=$root.1.42 SeriesInstanceUID Modality"
)
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10000 1000000)
for size in "${sizes[@]}"; do
  data="$base/data-$size"; mkdir -p "$data"
  s=$(date +%s.%N)
  "$base/synthindex" -n "$size" -out "$data/index.db" >/dev/null
  e=$(date +%s.%N)
  echo "index of $size instances built in $(echo "$e - $s" | bc -l | xargs printf '%.1f') s ($(du -h "$data/index.db" | cut -f1))"
  "$base/ward" serve --data "$data" --dicom-listen 127.0.0.1:$port >"$data/serve.log" 2>&1 &
  pid=$!
  for i in $(seq 1 100); do echoscu -aec WARD 127.0.0.1 $port >/dev/null 2>&1 && break; sleep 0.1; done
  for q in "${queries[@]}"; do
    label=${q%%|*}; args=${q#*|}
    # shellcheck disable=SC2086
    printf '  %-44s %s\n' "$label" "$("$base/qrbench" -aec WARD -n "${RUNS:-200}" 127.0.0.1:$port $args)"
  done
  files=$(find "$corpus" -type f | wc -l)
  s=$(date +%s.%N)
  storescu -aec WARD -aet BENCHSCU +sd +r 127.0.0.1 $port "$corpus" >/dev/null 2>&1
  e=$(date +%s.%N)
  echo "  ingest of $files instances (storescu, 1 association) into this index: $(echo "$files / ($e - $s)" | bc -l | xargs printf '%.0f') inst/s"
  kill -INT $pid; wait $pid || true; pid=
  rm -rf "$data"
done
