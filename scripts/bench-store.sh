#!/usr/bin/env bash
# bench-store.sh CORPUS_DIR [DATA_PARENT]
# ward store --parallel 4 into ward serve, set against this disk's own
# fsynced write rate (dd oflag=dsync) measured in the same run, on the same
# filesystem. Loopback only. Prints one line per measurement.
set -euo pipefail
# A benchmark measures the archive: no first-run viewer fetch (npm) beside it.
export WARD_VIEWER_FETCH=off
corpus=${1:?usage: bench-store.sh CORPUS_DIR [DATA_PARENT]}
parent=${2:-/work}
here="$(cd "$(dirname "$0")/.." && pwd)"
tmp=$(mktemp -d "$parent/ward-bench.XXXXXX")
trap '[ -n "${pid:-}" ] && kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT
go build -o "$tmp/ward" "$here/cmd/ward"
port=${WARD_BENCH_PORT:-21117}
bytes=$(du -sb --apparent-size "$corpus" | cut -f1)

# 1. the disk: 1 MiB and 256 KiB blocks, each write synchronous
for spec in "1M 512" "256K 2048"; do
  set -- $spec
  out=$(dd if=/dev/zero of="$tmp/dd.bin" bs=$1 count=$2 oflag=dsync 2>&1 | tail -1)
  echo "dd bs=$1 oflag=dsync: $out"
  rm -f "$tmp/dd.bin"
done

# 2. ward store --parallel N into a fresh ward serve each time
pid=
for par in 1 4; do
  rm -rf "$tmp/data"
  # deny by default: the sender must be a registered peer allowed to store
  "$tmp/ward" peer add BENCHSTORE --host 127.0.0.1 --allow echo,store --data "$tmp/data" >/dev/null
  "$tmp/ward" serve --data "$tmp/data" --dicom-listen 127.0.0.1:$port >"$tmp/serve.log" 2>&1 &
  pid=$!
  for i in $(seq 1 100); do "$tmp/ward" echo --aec WARD --aet BENCHSTORE 127.0.0.1:$port >/dev/null 2>&1 && break; sleep 0.1; done
  start=$(date +%s.%N)
  "$tmp/ward" store --quiet --aec WARD --aet BENCHSTORE --parallel $par 127.0.0.1:$port "$corpus" | head -1
  end=$(date +%s.%N)
  echo "ward store --parallel $par: $(echo "$bytes / ($end - $start) / 1000000" | bc -l | xargs printf '%.1f') MB/s over $(echo "$end - $start" | bc -l | xargs printf '%.2f') s (corpus $((bytes / 1000000)) MB)"
  kill -INT $pid; wait $pid || true
done
