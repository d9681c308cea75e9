#!/usr/bin/env bash
# bench-ab.sh: a quick ingest measurement of one ward binary, for A/B
# comparisons of two builds run alternately (the side-by-side harness in
# ../shared/bench is the reference; this skips its peers and bookkeeping).
#
#   scripts/bench-ab.sh WARD_BIN [CORPUS [JOBS]]
#
# Starts `WARD_BIN serve` on 127.0.0.1:21199 with a fresh data directory
# (the previous one is deleted first, as the harness does), registers
# BENCHSCU, sends CORPUS (default /tmp/bench/corpus-2000, made by
# ../shared/bench/make-corpus.sh) over JOBS storescu associations (default
# 4; the harness's split, whole series per association) and prints wall
# time, instances/s, the CPU seconds of the server and of the storescu
# clients, and the machine's idle CPU seconds during the run. PERF=1
# records `perf record -a -g` into $STATE/perf.data. State lives in $STATE
# (default /tmp/ward-bench-ab).
#
# SCRAPE=1 (Ward only) turns on the metrics listener on 127.0.0.1:21196 and
# scrapes /metrics every second during the run, as Prometheus would (the
# metrics are recorded either way; this adds what serving them costs).
#
# WARD_BIN `storescp` measures DCMTK storescp instead (the harness's
# peers/storescp.sh, one process per association: its CPU includes the
# children it reaped), with the same lists and clients, for the same
# figures of the reference.
set -euo pipefail
# A benchmark measures the archive: no first-run viewer fetch (npm) beside it.
export WARD_VIEWER_FETCH=off
bin=$1
[[ "$bin" == storescp ]] || bin=$(readlink -f "$1")
corpus=${2:-/tmp/bench/corpus-2000}
jobs=${3:-4}
state=${STATE:-/tmp/ward-bench-ab}
bench=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../shared/bench" && pwd)
mkdir -p "$state"
rm -f "$state"/list*
python3 - "$bench" "$corpus" "$jobs" "$state" <<'PY'
import sys
sys.path.insert(0, sys.argv[1] + "/lib")
import bench
rows, _ = bench.read_corpus(sys.argv[2])
parts = int(sys.argv[3])
groups = [rows] if parts == 1 else bench.split_by_series(rows, parts)
for i, g in enumerate(groups):
    with open(f"{sys.argv[4]}/list{i}", "w") as f:
        f.write("\n".join(r["path"] for r in g) + "\n")
PY
data=$state/data
rm -rf "$data" && mkdir -p -m 700 "$data"
port=21199 aec=WARD
if [[ "$bin" == storescp ]]; then
  port=21197 aec=STORESCP
  export STORESCP_PORT=$port BENCH_TMP=$state/peer TCP_NODELAY=1
  "$bench/peers/storescp.sh" stop >/dev/null 2>&1 || true
  "$bench/peers/storescp.sh" wipe >/dev/null
  "$bench/peers/storescp.sh" start >/dev/null
  server=$("$bench/peers/storescp.sh" pid)
  trap '"$bench/peers/storescp.sh" stop >/dev/null 2>&1' EXIT
else
  "$bin" peer add BENCHSCU --host 127.0.0.1 --allow echo,store --data "$data" >/dev/null
  extra=()
  [[ -n "${SCRAPE:-}" ]] && extra=(--metrics-listen 127.0.0.1:21196)
  if [[ -n "${ENCRYPT:-}" ]]; then
    rm -f "$state/ward.key" && "$bin" key init "$state/ward.key" >/dev/null
    extra+=(--encryption-key-file "$state/ward.key")
  fi
  "$bin" serve --data "$data" --dicom-listen 127.0.0.1:$port --aet WARD "${extra[@]}" >"$state/server.log" 2>&1 &
  server=$!
  scraper=
  if [[ -n "${SCRAPE:-}" ]]; then
    (while sleep 1; do curl -s -o /dev/null http://127.0.0.1:21196/metrics; done) &
    scraper=$!
  fi
  trap 'kill $server $scraper 2>/dev/null; wait $server 2>/dev/null' EXIT
fi
for _ in $(seq 100); do
  TCP_NODELAY=1 echoscu -aet BENCHSCU -aec $aec 127.0.0.1 $port 2>/dev/null && break
  sleep 0.1
done
cd "$corpus"
perf_pid=
if [[ -n "${PERF:-}" ]]; then
  perf record -F 2000 -a -g -o "$state/perf.data" 2>/dev/null &
  perf_pid=$!
  sleep 0.5
fi
# utime + stime, and the reaped children's (storescp's associations).
cpu() { awk '{print $14 + $15 + $16 + $17}' "/proc/$server/stat"; }
idle() { awk '/^cpu /{print $5 + $6}' /proc/stat; }
# The storescu clients' CPU: bash `times` (children reaped so far), run in
# this shell, not in a $(...) subshell, which has no children of its own.
snap() { times >"$state/times.$1"; }
secs() { awk 'NR == 2 { split($1 " " $2, t, /[ms ]+/); print t[1] * 60 + t[2] + t[3] * 60 + t[4] }' "$state/times.$1"; }
snap 0
c0=$(cpu) i0=$(idle) t0=$(date +%s.%N)
pids=()
for ((i = 0; i < jobs; i++)); do
  # shellcheck disable=SC2046 # one argument per file
  TCP_NODELAY=1 storescu -aet BENCHSCU -aec $aec -to 10 -ta 600 -ts 120 127.0.0.1 $port $(cat "$state/list$i") &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
t1=$(date +%s.%N) c1=$(cpu) i1=$(idle)
if [[ "$bin" == storescp ]]; then
  # Let storescp reap its last children, whose CPU then counts.
  sleep 0.3
  c1=$(cpu)
fi
snap 1
k0=$(secs 0) k1=$(secs 1)
[[ -n "$perf_pid" ]] && { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
n=$(wc -l < <(cat "$state"/list*))
awk -v t0="$t0" -v t1="$t1" -v n="$n" -v c="$((c1 - c0))" -v i="$((i1 - i0))" -v k="$k0 $k1" -v hz="$(getconf CLK_TCK)" \
  'BEGIN { w = t1 - t0; split(k, kk, " ")
    printf "wall %.2f s  %.1f inst/s  server CPU %.2f s  client CPU %.2f s  idle CPU %.2f s\n", w, n / w, c / hz, kk[2] - kk[1], i / hz }'
exit $rc
