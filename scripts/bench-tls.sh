#!/usr/bin/env bash
# bench-tls.sh [CORPUS_DIR]
#
# TLS ingest benchmark: Ward over plain DIMSE vs Ward over DIMSE-over-TLS,
# same build, same server process configuration, same corpus, DCMTK storescu
# as the client, one association ("single") and JOBS parallel associations
# ("parallel4"), repetitions interleaved (plain/TLS order alternates per
# rep). Loopback (127.0.0.1) only.
#
#   scripts/bench-tls.sh /tmp/bench/corpus-2000            # 3 reps
#   REPS=1 scripts/bench-tls.sh /tmp/bench/corpus-500
#
# CORPUS_DIR is a directory made by the harness's generator
# (/work/shared/bench/make-corpus.sh N DIR): its manifest.tsv gives the file
# order and the series used to split the corpus for the parallel runs
# (whole series per job, bytes balanced, like the harness). Without a
# manifest every *.dcm file under the directory is sent in sorted order.
#
# What it does:
#   1. ward pki init + ward pki issue BENCHSCU (CA, server and client
#      certificates) in a scratch directory;
#   2. a configuration file with [dicom] tls_listen / tls_cert / tls_key /
#      tls_client_ca, and two registered peers (ward peer add --config):
#        BENCHSCU    host 127.0.0.1, pinned to its client certificate's
#                    SHA-256 (--cert-fingerprint): the TLS client;
#        $PLAIN_AET  host 127.0.0.1, no certificate: the plain client (a
#                    pinned peer may only call over TLS).
#      Where the current `ward peer add` refuses a flag (--cert-fingerprint,
#      --host without --port, the bulk-query service) the peer is registered
#      without it, and a NOTE line says so;
#   3. for every rep, mode and transport: a fresh data directory, a fresh
#      `ward serve` (plain and TLS listeners both on), C-ECHO over both, then
#      the timed storescu run(s), the stored count (distinct SOP Instance
#      UIDs among the Part 10 files, the harness's count_part10.py), the
#      server's CPU time (utime+stime), and a stop.
#
# Timing: the wall clock of the whole storescu run (all JOBS processes for
# parallel4), as the harness measures it: storescu start-up and its pre-scan
# of the files are included. MB/s is 10^6 bytes of DICOM files per second.
#
# Environment:
#   WARD_BIN   ward binary (default: build the repository's committed HEAD,
#              via git archive, into the scratch dir); WARD_COMMIT labels it
#   PORT       plain DIMSE port (default 21131); TLS_PORT (default 21132)
#   REPS       repetitions (default 3); JOBS parallel storescu (default 4)
#   MODES      "single parallel" (default) or one of them
#   PLAIN_AET  calling AE of the plain runs (default BENCHPLAIN)
#   TLS_PROFILE storescu TLS profile flag (default +px: BCP 195; DCMTK's
#              default +py works too)
#   OUT        results TSV (default SCRATCH/results.tsv); KEEP=1 keeps SCRATCH
#   SERVER_CPUS, CLIENT_CPUS  pin ward serve and the storescu processes to
#              these CPUs (taskset -c LIST, e.g. 0 and 1), so that the
#              client's own TLS work does not compete with Ward's; default
#              no pinning, as the harness
#   PERF=1     also record `perf record -g` of the server in the first TLS
#              parallel run (SCRATCH/perf-*.data) for profiling
set -euo pipefail
# A benchmark measures the archive: no first-run viewer fetch (npm) beside it.
export WARD_VIEWER_FETCH=off
export TCP_NODELAY=1 # DCMTK leaves Nagle on otherwise (harness gotcha 1)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
corpus=$(cd "${1:-/tmp/bench/corpus-2000}" && pwd)
PORT=${PORT:-21131}
TLS_PORT=${TLS_PORT:-21132}
REPS=${REPS:-3}
JOBS=${JOBS:-4}
MODES=${MODES:-single parallel}
PLAIN_AET=${PLAIN_AET:-BENCHPLAIN}
TLS_AET=BENCHSCU
TLS_PROFILE=${TLS_PROFILE:-+px}
COUNT_PY=${COUNT_PY:-/work/shared/bench/lib/count_part10.py}
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3

for p in "$PORT" "$TLS_PORT"; do
  if [[ -n "$(ss -Hltn "sport = :$p")" ]]; then echo "port $p is in use: set PORT / TLS_PORT" >&2; exit 1; fi
done

scratch=$(mktemp -d /tmp/ward-tls-bench.XXXXXX)
OUT=${OUT:-$scratch/results.tsv}
pid=
perfpid=
cleanup() {
  if [[ -n "$perfpid" ]]; then kill -INT "$perfpid" 2>/dev/null || true; wait "$perfpid" 2>/dev/null || true; fi
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$scratch"; else echo "kept $scratch" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -n "${WARD_BIN:-}" ]]; then
  ward=$WARD_BIN
  commit="${WARD_COMMIT:-? (WARD_BIN given; repository HEAD is $(git -C "$here" rev-parse --short HEAD 2>/dev/null))}"
else
  # the committed HEAD, not whatever is being edited in the working tree
  commit=$(git -C "$here" rev-parse --short HEAD)
  mkdir -p "$scratch/src"
  git -C "$here" archive "$commit" | tar -x -C "$scratch/src"
  (cd "$scratch/src" && go build -o "$scratch/ward" ./cmd/ward)
  ward=$scratch/ward
fi

# 1. PKI
pkidata=$scratch/pki-data
"$ward" pki init --data "$pkidata" >/dev/null
"$ward" pki issue "$TLS_AET" --data "$pkidata" >/dev/null
pki=$pkidata/pki
ca=$pki/ca.crt
ccert=$pki/peers/$TLS_AET.crt
ckey=$pki/peers/$TLS_AET.key
fp=$(openssl x509 -in "$ccert" -outform DER | sha256sum | cut -d' ' -f1)

# 2. configuration and peers
cfg=$scratch/ward.toml
cat >"$cfg" <<EOF
[dicom]
tls_listen    = "127.0.0.1:$TLS_PORT"
tls_cert      = "$pki/server.crt"
tls_key       = "$pki/server.key"
tls_client_ca = "$ca"
EOF
notes=()
# register AET [--cert-fingerprint FP]: the most specific form this ward accepts
register() {
  local aet=$1 fpargs=("${@:2}") hostargs allow out try tried=()
  for fpa in yes no; do
    [[ $fpa == no || ${#fpargs[@]} -gt 0 ]] || continue
    for hostargs in "--host 127.0.0.1" "--network 127.0.0.1/32" ""; do
      for allow in echo,store; do
        try=("$ward" peer add "$aet" $hostargs --allow "$allow" --config "$cfg")
        [[ $fpa == yes ]] && try+=("${fpargs[@]}")
        if out=$("${try[@]}" 2>&1); then
          [[ $fpa == no && ${#fpargs[@]} -gt 0 ]] && notes+=("NOTE: $aet registered WITHOUT its certificate fingerprint (${fpargs[1]}): this ward peer add refused ${fpargs[0]}")
          [[ $hostargs != "--host 127.0.0.1" ]] && notes+=("NOTE: $aet registered without --host 127.0.0.1: this ward peer add refused it")
          notes+=("peer: ${try[*]:1}")
          return 0
        fi
        tried+=("${try[*]:1}: $(echo "$out" | tail -1)")
      done
    done
  done
  printf 'cannot register %s:\n' "$aet" >&2; printf '  %s\n' "${tried[@]}" >&2
  return 1
}
register "$TLS_AET" --cert-fingerprint "$fp"
register "$PLAIN_AET"

# the file lists: all, and JOBS parts of whole series balanced by bytes
lists=$scratch/lists
mkdir -p "$lists"
counts=$("$PY" - "$corpus" "$lists" "$JOBS" <<'EOF'
import os, sys
corpus, out, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = []  # (path, bytes, series)
man = os.path.join(corpus, "manifest.tsv")
if os.path.exists(man):
    with open(man) as f:
        hdr = f.readline().rstrip("\n").split("\t")
        ip, ib, isr = hdr.index("path"), hdr.index("bytes"), hdr.index("SeriesInstanceUID")
        for line in f:
            c = line.rstrip("\n").split("\t")
            rows.append((os.path.join(corpus, c[ip]), int(c[ib]), c[isr]))
else:
    for root, _, files in sorted(os.walk(corpus)):
        for fn in sorted(files):
            if fn.endswith(".dcm"):
                p = os.path.join(root, fn)
                rows.append((p, os.path.getsize(p), root))
series, order = {}, []
for r in rows:
    if r[2] not in series:
        series[r[2]] = []
        order.append(r[2])
    series[r[2]].append(r)
parts, load = [[] for _ in range(jobs)], [0] * jobs
for s in sorted(order, key=lambda s: -sum(r[1] for r in series[s])):
    i = load.index(min(load))
    parts[i].append(s)
    load[i] += sum(r[1] for r in series[s])
def write(name, paths):
    with open(os.path.join(out, name), "w") as f:
        f.write("\n".join(paths) + "\n")
write("all", [r[0] for r in rows])
for i, ss in enumerate(parts):
    keep = set(ss)
    write("part%d" % i, [r[0] for r in rows if r[2] in keep])
print(len(rows), sum(r[1] for r in rows))
EOF
)
read -r nfiles nbytes <<<"$counts"

tlsargs=(+tls "$ckey" "$ccert" +cf "$ca" "$TLS_PROFILE")
common=(-to 10 -ta 600 -ts 120)

start_server() { # DATA LOG
  ${SERVER_CPUS:+taskset -c "$SERVER_CPUS"} "$ward" serve --config "$cfg" --data "$1" --dicom-listen "127.0.0.1:$PORT" --aet WARD >"$2" 2>&1 &
  pid=$!
  local i
  for i in $(seq 1 150); do
    if echoscu -to 2 -ta 5 -aet "$PLAIN_AET" -aec WARD 127.0.0.1 "$PORT" >/dev/null 2>&1 &&
       echoscu -to 2 -ta 5 -aet "$TLS_AET" -aec WARD "${tlsargs[@]}" 127.0.0.1 "$TLS_PORT" >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "ward serve died:" >&2; tail -5 "$2" >&2; return 1; }
    sleep 0.2
  done
  echo "ward serve did not answer C-ECHO on $PORT and TLS $TLS_PORT in 30 s:" >&2; tail -5 "$2" >&2
  echoscu -aet "$TLS_AET" -aec WARD "${tlsargs[@]}" 127.0.0.1 "$TLS_PORT" >&2 || true
  return 1
}
stop_server() {
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=
}
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$pid/stat"; }

# run MODE TRANSPORT REP: one measured run, appends a line to $OUT
run() {
  local mode=$1 tr=$2 rep=$3 data=$scratch/data log=$scratch/serve-$mode-$tr-$rep.log
  local port aet extra=() nparts i rcs cpu0 cpu1 t
  rm -rf "$data"
  start_server "$data" "$log"
  if [[ $tr == tls ]]; then port=$TLS_PORT; aet=$TLS_AET; extra=("${tlsargs[@]}"); else port=$PORT; aet=$PLAIN_AET; fi
  if [[ $mode == single ]]; then nparts=1; else nparts=$JOBS; fi
  if [[ "${PERF:-0}" == 1 && $mode != single && ! -e $scratch/perf-$tr.data ]]; then
    perf record -q -g -F 499 -p "$pid" -o "$scratch/perf-$tr.data" >/dev/null 2>&1 & perfpid=$!
    sleep 0.3
  fi
  cpu0=$(server_cpu)
  local TIMEFORMAT='%R %U %S'
  t=$( { time (
      for ((i = 0; i < nparts; i++)); do
        if [[ $nparts == 1 ]]; then list=$lists/all; else list=$lists/part$i; fi
        mapfile -t files <"$list"
        ${CLIENT_CPUS:+taskset -c "$CLIENT_CPUS"} storescu -aet "$aet" -aec WARD "${common[@]}" "${extra[@]}" 127.0.0.1 "$port" "${files[@]}" \
          >"$scratch/storescu-$mode-$tr-$rep-$i.log" 2>&1 &
      done
      rcs=0
      for ((i = 0; i < nparts; i++)); do wait -n || rcs=$?; done
      exit $rcs
    ) ; } 2>&1 ) || true
  cpu1=$(server_cpu)
  if [[ -n "$perfpid" ]]; then kill -INT "$perfpid" 2>/dev/null || true; wait "$perfpid" 2>/dev/null || true; perfpid=; fi
  local rc=0 errs
  errs=$(cat "$scratch"/storescu-"$mode-$tr-$rep"-*.log | grep -E '^(E|F):' | sort -u | head -3 | tr '\n' ' ' || true)
  stop_server
  local stored
  stored=$("$PY" "$COUNT_PY" "$data")
  read -r wall ucpu scpu <<<"$t"
  local status=ok
  [[ $stored == "$nfiles" ]] || status="FAIL stored $stored/$nfiles ${errs}"
  printf '%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%.2f\t%s\t%s\n' "$rep" "$mode" "$tr" "$nfiles" "$nbytes" "$stored" "$wall" \
    "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b-a}')" "$(awk -v u="$ucpu" -v s="$scpu" 'BEGIN{print u+s}')" \
    "$(awk -v n="$stored" -v w="$wall" 'BEGIN{printf "%.1f", n/w}')" "$status" >>"$OUT"
  tail -1 "$OUT" | awk -F'\t' '{printf "rep %s %-9s %-5s wall %6.2f s  %7.1f inst/s  %6.1f MB/s  stored %s/%s  server CPU %s s  client CPU %s s  %s\n", $1, ($2=="single"?"single":"parallel'"$JOBS"'"), $3, $7, $10, $5/$7/1e6, $6, $4, $8, $9, $11}'
}

echo "# bench-tls.sh $(date -u +%FT%TZ) ward $commit ($ward)"
echo "# corpus $corpus: $nfiles files, $(awk -v b="$nbytes" 'BEGIN{printf "%.1f", b/1e6}') MB; reps $REPS; modes $MODES; jobs $JOBS; TLS: storescu ${tlsargs[*]} (client certificate SHA-256 $fp)"
echo "# uptime:$(uptime)"
[[ -n "${SERVER_CPUS:-}${CLIENT_CPUS:-}" ]] && echo "# pinned: ward serve on CPUs ${SERVER_CPUS:-any}, storescu on CPUs ${CLIENT_CPUS:-any}"
printf '%s\n' "${notes[@]}" | sed 's/^/# /'
printf 'rep\tmode\ttransport\tfiles\tbytes\tstored\twall_s\tserver_cpu_s\tclient_cpu_s\tinst_s\tstatus\n' >"$OUT"
for ((rep = 1; rep <= REPS; rep++)); do
  for mode in $MODES; do
    if ((rep % 2)); then order="plain tls"; else order="tls plain"; fi
    for tr in $order; do run "$mode" "$tr" "$rep"; done
  done
done
echo "# uptime:$(uptime)"

# summary: median (min-max) per mode and transport, and TLS/plain
"$PY" - "$OUT" "$JOBS" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
jobs = sys.argv[2]
def fmt(v, d=1):
    f = "%%.%df" % d
    return (f + " (" + f + "-" + f + ")") % (statistics.median(v), min(v), max(v)) if v else "-"
print("\n| mode | transport | inst/s | MB/s | wall s | server CPU s | client CPU s | stored/sent | TLS/plain (inst/s medians) |")
print("|---|---|---|---|---|---|---|---|---|")
for mode in ("single", "parallel"):
    med = {}
    for tr in ("plain", "tls"):
        rs = [r for r in rows if r["mode"] == mode and r["transport"] == tr]
        if not rs:
            continue
        ok = [r for r in rs if r["status"] == "ok"]
        ips = [float(r["inst_s"]) for r in ok]
        mbs = [int(r["bytes"]) / float(r["wall_s"]) / 1e6 for r in ok]
        wall = [float(r["wall_s"]) for r in ok]
        cpu = [float(r["server_cpu_s"]) for r in ok]
        cpi = [float(r["client_cpu_s"]) for r in ok]
        med[tr] = statistics.median(ips) if ips else None
        stored = "%d/%d runs %s/%s" % (len(ok), len(rs), rs[0]["stored"], rs[0]["files"]) if len({(r["stored"], r["files"]) for r in rs}) == 1 else ", ".join("%s/%s" % (r["stored"], r["files"]) for r in rs)
        ratio = ""
        if tr == "tls" and med.get("plain") and med.get("tls"):
            ratio = "**%.0f %%**" % (100 * med["tls"] / med["plain"])
        fails = [r["status"] for r in rs if r["status"] != "ok"]
        print("| %s | %s | %s | %s | %s | %s | %s | %s%s | %s |" % (
            "single" if mode == "single" else "parallel" + jobs, tr, fmt(ips), fmt(mbs), fmt(wall, 2), fmt(cpu, 2), fmt(cpi, 2),
            stored, (" FAIL: " + "; ".join(fails)) if fails else "", ratio))
# Per-rep ratios: the plain and TLS runs of one rep are adjacent in time,
# so on a noisy machine the median of these is steadier than the ratio of
# the medians. CPU ratio: plain over TLS of (server + client) CPU seconds,
# what the throughput ratio would be if the 2 cores were the only limit.
print()
for mode in ("single", "parallel"):
    rr, cr = [], []
    for rep in sorted({r["rep"] for r in rows}, key=int):
        sel = lambda tr: [r for r in rows if r["rep"] == rep and r["mode"] == mode and r["transport"] == tr and r["status"] == "ok"]
        p, t = sel("plain"), sel("tls")
        if p and t:
            rr.append(float(t[0]["inst_s"]) / float(p[0]["inst_s"]))
            cpu = lambda r: float(r["server_cpu_s"]) + float(r["client_cpu_s"])
            cr.append(cpu(p[0]) / cpu(t[0]))
    if rr:
        print("%-9s TLS/plain inst/s per rep: %s; median %.0f %%.  CPU ratio per rep: %s; median %.0f %%" % (
            "single" if mode == "single" else "parallel" + jobs,
            " ".join("%.0f%%" % (100 * x) for x in rr), 100 * statistics.median(rr),
            " ".join("%.0f%%" % (100 * x) for x in cr), 100 * statistics.median(cr)))
EOF
echo "results: $OUT"
