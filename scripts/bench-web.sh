#!/usr/bin/env bash
# bench-web.sh: DICOMweb side by side, Ward against Orthanc with its
# DICOMweb plugin, on the same corpora in one run (issue #16). A benchmark,
# not a test: it prints tables. A measurement that fails (an answer other
# than 200, a wrong number of matches or parts, an archive that does not
# hold what was sent) shows as FAIL with its first error in its cell; the
# script stops only when it cannot set a server up or load a corpus.
#
#   scripts/bench-web.sh [PHASE...]     PHASE: qido scale meta frames stow (default: all)
#
# Every request comes from the same client, internal/cmd/webbench (kept-
# alive connections, Accept and Authorization headers, latency
# percentiles). Ward authenticates with an API token of a user with the
# uploader role (ward user add / ward token issue --scope write); Orthanc
# runs with its REST authentication off and RemoteAccessAllowed false, as
# the shared harness's peers/orthanc.sh starts it (fsync on, Orthanc's
# default StorageAccessOnFind Always, DICOMweb plugin defaults). Both are
# loaded over DIMSE (storescu, TCP_NODELAY=1), listen on 127.0.0.1 only
# (Orthanc through the harness's bind() shim) and are stopped by PID.
#
# Phases (each on both servers unless said):
#   qido    QIDO-RS latency, one request at a time, RUNS requests per
#           query, on the 10k-instance corpus (CORPUS_Q, the shared
#           harness's corpus-q10000: 167 studies, 500 series): study
#           searches by PatientID, PatientName=DOE*, StudyDate range,
#           AccessionNumber, OHIF's study list (limit=100), and the series
#           of one study.
#   scale   QIDO-RS on Ward alone at SCALE_SIZES instances (default 10000
#           and 1000000), synthetic indexes (internal/cmd/synthindex, bulk
#           load, no objects); and on Orthanc at ORTHANC_BIG instances if
#           set (a generated small-profile corpus loaded over DIMSE, ~300
#           instances/s: 100000 takes ~6 min to load).
#   meta    series metadata of a 1,000-instance series (CORPUS_META):
#           cold = the first request after a restart, with the page cache
#           dropped (COLD_RUNS times, median; DROP_CACHES=0 keeps it);
#           warm = META_RUNS requests one at a time after 2 untimed.
#   frames  frames of a 500-instance series of 512x512 16-bit CT, one
#           frame each (CORPUS_FRAMES, series SE02), pulled as
#           multipart/related; type="application/octet-stream" (explicit
#           little endian, as stored: neither server transcodes), every
#           frame once per round, FRAME_ROUNDS rounds (median), with
#           FRAME_CONC parallel requests (default "1 4").
#   stow    STOW-RS against DIMSE ingest of CORPUS_STOW (corpus-2000, mixed
#           sizes) into a fresh archive, STOW_REPS repetitions
#           interleaved: one client (1 storescu association / 1 webbench
#           stream) and 4 (the corpus split by series, bytes balanced, the
#           same 4 lists for storescu and webbench). A STOW request holds
#           one series (20 instances). Wall time from the first client's
#           spawn to the last one's exit; the instance count is checked.
#
# Environment: STATE (default /tmp/ward-bench-web; wiped at the start,
# except the cached 1M synthetic index), WARD_BIN (default: built from this
# tree), BENCH_HARNESS (the shared harness, default ../shared/bench or
# /work/shared/bench), RUNS (200), META_RUNS (20), COLD_RUNS (3),
# FRAME_ROUNDS (3), FRAME_CONC ("1 4"), STOW_REPS (3), SCALE_SIZES,
# ORTHANC_BIG. Corpora are made with the harness's make-corpus.sh when
# missing. Results: $STATE/results.jsonl (one JSON line per measurement)
# and the tables on stdout.
set -euo pipefail
# A benchmark measures the archive: no first-run viewer fetch (npm) beside it.
export WARD_VIEWER_FETCH=off
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
phases=("$@")
[[ ${#phases[@]} -gt 0 ]] || phases=(qido scale meta frames stow)
has() { local p; for p in "${phases[@]}"; do [[ "$p" == "$1" ]] && return 0; done; return 1; }

die() { echo "bench-web: $*" >&2; exit 1; }
log() { echo "bench-web: $(date -u +%H:%M:%S) $*" >&2; }

if [[ -n "${BENCH_HARNESS:-}" ]]; then harness=$BENCH_HARNESS
elif [[ -d "$here/../shared/bench" ]]; then harness=$(cd "$here/../shared/bench" && pwd)
else harness=/work/shared/bench; fi
[[ -x "$harness/peers/orthanc.sh" ]] || die "no shared harness at $harness (set BENCH_HARNESS)"
[[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]] || die "no Orthanc DICOMweb plugin (apt-get install orthanc orthanc-dicomweb)"
for t in storescu curl jq /usr/bin/python3; do command -v "$t" >/dev/null || die "$t missing"; done

state=${STATE:-/tmp/ward-bench-web}
RUNS=${RUNS:-200} META_RUNS=${META_RUNS:-20} COLD_RUNS=${COLD_RUNS:-3}
FRAME_ROUNDS=${FRAME_ROUNDS:-3} FRAME_CONC=${FRAME_CONC:-"1 4"} STOW_REPS=${STOW_REPS:-3}
SCALE_SIZES=${SCALE_SIZES:-"10000 1000000"}
CORPUS_Q=${CORPUS_Q:-/tmp/bench/corpus-q10000}
CORPUS_META=${CORPUS_META:-/tmp/bench/corpus-series1000}
CORPUS_FRAMES=${CORPUS_FRAMES:-/tmp/bench/corpus-series500}
CORPUS_STOW=${CORPUS_STOW:-/tmp/bench/corpus-2000}
W_DICOM=21151 W_HTTP=21152 O_DICOM=21153 O_HTTP=21154 S_DICOM=21156 S_HTTP=21155
export TCP_NODELAY=1 BENCH_TMP=$state ORTHANC_NAME=orthanc-web ORTHANC_DICOM_PORT=$O_DICOM ORTHANC_HTTP_PORT=$O_HTTP ORTHANC_DICOMWEB=1
orthanc=$harness/peers/orthanc.sh
results=$state/results.jsonl
W=http://127.0.0.1:$W_HTTP/dicom-web
O=http://127.0.0.1:$O_HTTP/dicom-web
umask 077

# ---- processes this script started, stopped by PID on any exit
wpid=
ward_stop() {
  if [[ -n "$wpid" ]]; then
    kill -INT "$wpid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$wpid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$wpid" 2>/dev/null || true
    wait "$wpid" 2>/dev/null || true
    wpid=
  fi
}
cleanup() { ward_stop; "$orthanc" stop >/dev/null 2>&1 || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$state"
"$orthanc" stop >/dev/null 2>&1 || true
find "$state" -mindepth 1 -maxdepth 1 ! -name 'synth-*.db' ! -name build -exec rm -rf {} +
mkdir -p "$state/bin" "$state/lists"
: >"$results"

# ---- binaries
log "building ward, webbench and synthindex"
if [[ -n "${WARD_BIN:-}" ]]; then ward=$(readlink -f "$WARD_BIN")
else (cd "$here" && go build -o "$state/bin/ward" ./cmd/ward); ward=$state/bin/ward; fi
(cd "$here" && go build -o "$state/bin/webbench" ./internal/cmd/webbench && go build -o "$state/bin/synthindex" ./internal/cmd/synthindex)
wb=$state/bin/webbench

# ---- corpora
corpus() { # DIR N ARGS...: make it with the harness's generator when missing
  local dir=$1 n=$2; shift 2
  [[ -f "$dir/manifest.tsv" ]] && return 0
  log "making corpus $dir ($n $*)"
  "$harness/make-corpus.sh" "$n" "$dir" "$@" >/dev/null
}
has qido && corpus "$CORPUS_Q" 10000 --seed 7 --profile small
has meta && corpus "$CORPUS_META" 1000 --seed 13 --profile small --per-series 1000
has frames && corpus "$CORPUS_FRAMES" 1000 --seed 2 --per-series 500
has stow && corpus "$CORPUS_STOW" 2000

# ---- Ward
# ward_setup DATA: a fresh data directory with the harness's SCU (echo,
# store) and a user "bench" with the uploader role; its write token goes
# to DATA.token and an Authorization header for curl to DATA.hdr (0600:
# never on a command line).
ward_setup() {
  local data=$1
  rm -rf "$data" "$data.token" "$data.hdr"
  mkdir -p -m 700 "$data"
  "$ward" peer add BENCHSCU --host 127.0.0.1 --allow echo,store --data "$data" >/dev/null
  head -c 24 /dev/urandom | base64 | "$ward" user add bench --role uploader --data "$data" >/dev/null
  "$ward" token issue bench --scope write --ttl 1d --data "$data" >"$data.token" 2>/dev/null
  printf 'Authorization: Bearer %s\n' "$(cat "$data.token")" >"$data.hdr"
}
# ward_start DATA DICOM_PORT HTTP_PORT: serve, and wait for both listeners
# (any HTTP answer will do: the handlers may still be stubs).
ward_start() {
  local data=$1 dport=$2 hport=$3 code
  "$ward" serve --data "$data" --dicom-listen 127.0.0.1:"$dport" --http-listen 127.0.0.1:"$hport" --aet WARD >>"$data.log" 2>&1 &
  wpid=$!
  for _ in $(seq 300); do
    kill -0 "$wpid" 2>/dev/null || { tail -20 "$data.log" >&2; die "ward serve exited"; }
    code=$(curl -s -o /dev/null -w '%{http_code}' -H @"$data.hdr" "http://127.0.0.1:$hport/dicom-web/studies?limit=1" || true)
    if [[ "$code" != 000 ]] && echoscu -aet BENCHSCU -aec WARD 127.0.0.1 "$dport" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  tail -20 "$data.log" >&2; die "ward serve did not answer on $dport/$hport"
}
ward_count() { "$ward" status --json --data "$1" | jq -e '.counts.instances'; }

orthanc_start() { "$orthanc" start >/dev/null || die "orthanc did not start"; }
orthanc_count() { "$orthanc" count; }

# load NAME DICOM_PORT AET DIR: storescu one association (loading is not timed here)
load() {
  local name=$1 port=$2 aet=$3 dir=$4
  timeout 3600 storescu -aet BENCHSCU -aec "$aet" -to 10 -ta 600 -ts 120 +sd +r 127.0.0.1 "$port" "$dir" \
    >"$state/load-$name.log" 2>&1 || { tail -5 "$state/load-$name.log" >&2; die "loading $dir into $name failed"; }
}
# load_both DIR [N]: Ward and Orthanc at once, then check both hold N more.
load_both() {
  local dir=$1 n w0 o0 w1 o1
  n=$(find "$dir" -type f -name '*.dcm' | wc -l)
  w0=$(ward_count "$state/ward") o0=$(orthanc_count)
  log "loading $n instances of $dir into both"
  load ward $W_DICOM WARD "$dir" & local p1=$!
  load orthanc $O_DICOM ORTHANC "$dir" & local p2=$!
  wait $p1 || die "ward load failed"; wait $p2 || die "orthanc load failed"
  w1=$(ward_count "$state/ward") o1=$(orthanc_count)
  [[ $((w1 - w0)) -eq $n ]] || die "ward holds $((w1 - w0)) of $n new instances"
  [[ $((o1 - o0)) -eq $n ]] || die "orthanc holds $((o1 - o0)) of $n new instances"
}

# bench LABEL HDR ARGS...: one webbench run, its JSON appended to results
bench() {
  local label=$1 hdr=$2; shift 2
  local tok=()
  [[ -n "$hdr" ]] && tok=(-token-file "${hdr%.hdr}.token")
  timeout 1800 "$wb" get -label "$label" "${tok[@]}" "$@" >>"$results" || die "$label: webbench failed"
}

# mrow KIND TARGET KEY=VALUE...: a JSON line of the script's own timing
mrow() {
  local kind=$1 target=$2; shift 2
  local a=(--arg label "$kind|$target") kv
  for kv in "$@"; do a+=(--arg "${kv%%=*}" "${kv#*=}"); done
  jq -nc "${a[@]}" '$ARGS.named' >>"$results"
}

hint() { jq -r "$1" "$CORPUS_Q/summary.json"; }

# ---- start the two servers used by qido, meta and frames
if has qido || has meta || has frames; then
  ward_setup "$state/ward"
  ward_start "$state/ward" $W_DICOM $W_HTTP
  "$orthanc" wipe >/dev/null 2>&1 || true
  orthanc_start
fi

# ---- QIDO at 10k, both
if has qido; then
  load_both "$CORPUS_Q/data"
  pid=$(hint .query_hints.patient_id.PatientID); npid=$(hint .query_hints.patient_id.expected_studies)
  nname=$(hint .query_hints.patient_name_wildcard.expected_studies)
  range=$(hint .query_hints.study_date_range.StudyDate); nrange=$(hint .query_hints.study_date_range.expected_studies)
  acc=$(hint .query_hints.accession.AccessionNumber)
  st=$(hint .query_hints.series_in_study.StudyInstanceUID); nse=$(hint .query_hints.series_in_study.expected_series)
  queries=(
    "studies, PatientID exact|studies?PatientID=$pid|$npid"
    "studies, PatientName=DOE*|studies?PatientName=DOE*|$nname"
    "studies, StudyDate one year|studies?StudyDate=$range|$nrange"
    "studies, AccessionNumber exact|studies?AccessionNumber=$acc|1"
    "studies, all, limit=100 (study list)|studies?limit=100|$(jq '[.studies, 100] | min' "$CORPUS_Q/summary.json")"
    "series of one study|studies/$st/series|$nse"
  )
  log "QIDO at 10k: ${#queries[@]} queries x $RUNS requests on each server"
  for q in "${queries[@]}"; do
    IFS='|' read -r name path n <<<"$q"
    bench "qido10k|ward|$name" "$state/ward.hdr" -n "$RUNS" -warmup 5 -expect "$n" "$W/$path"
    bench "qido10k|orthanc|$name" "" -n "$RUNS" -warmup 5 -expect "$n" "$O/$path"
  done
fi

# ---- series metadata of 1,000 instances, cold and warm
if has meta; then
  load_both "$CORPUS_META/data"
  mst=$(awk -F'\t' 'NR == 2 { print $5 }' "$CORPUS_META/manifest.tsv")
  mse=$(awk -F'\t' 'NR == 2 { print $8 }' "$CORPUS_META/manifest.tsv")
  path="studies/$mst/series/$mse/metadata"
  drop() { if [[ "${DROP_CACHES:-1}" == 1 && -w /proc/sys/vm/drop_caches ]]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi; }
  log "series metadata (1,000 instances): $COLD_RUNS cold starts each, then $META_RUNS warm requests"
  for i in $(seq "$COLD_RUNS"); do
    ward_stop; drop; ward_start "$state/ward" $W_DICOM $W_HTTP
    bench "metacold|ward|run $i" "$state/ward.hdr" -n 1 -expect 1000 "$W/$path"
    "$orthanc" stop >/dev/null; drop; orthanc_start
    bench "metacold|orthanc|run $i" "" -n 1 -expect 1000 "$O/$path"
  done
  bench "metawarm|ward|warm" "$state/ward.hdr" -n "$META_RUNS" -warmup 2 -expect 1000 "$W/$path"
  bench "metawarm|orthanc|warm" "" -n "$META_RUNS" -warmup 2 -expect 1000 "$O/$path"
fi

# ---- frames of a 500-instance series
if has frames; then
  fdir=$(find "$CORPUS_FRAMES/data" -type d -name SE02 | head -1)
  [[ -n "$fdir" ]] || die "no SE02 series in $CORPUS_FRAMES"
  load_both "$fdir"
  rel=${fdir#"$CORPUS_FRAMES/"}
  awk -F'\t' -v rel="$rel/" 'index($1, rel) == 1 { print $5 "/series/" $8 "/instances/" $10 "/frames/1" }' "$CORPUS_FRAMES/manifest.tsv" >"$state/lists/frames"
  nf=$(wc -l <"$state/lists/frames")
  [[ "$nf" -eq 500 ]] || die "the frames series has $nf instances, want 500"
  sed "s|^|$W/studies/|" "$state/lists/frames" >"$state/lists/frames-ward"
  sed "s|^|$O/studies/|" "$state/lists/frames" >"$state/lists/frames-orthanc"
  accept='multipart/related; type="application/octet-stream"'
  for c in $FRAME_CONC; do
    log "frames: 500 x $FRAME_ROUNDS rounds, $c at a time"
    bench "frames|ward|$c parallel" "$state/ward.hdr" -urls "$state/lists/frames-ward" -c "$c" -repeat "$FRAME_ROUNDS" -warmup 1 -expect 1 -accept "$accept"
    bench "frames|orthanc|$c parallel" "" -urls "$state/lists/frames-orthanc" -c "$c" -repeat "$FRAME_ROUNDS" -warmup 1 -expect 1 -accept "$accept"
  done
fi

if has qido || has meta || has frames; then
  ward_stop
  "$orthanc" stop >/dev/null
fi

# ---- QIDO at scale: Ward on synthetic indexes (and Orthanc at ORTHANC_BIG)
if has scale; then
  root=1.2.826.0.1.3680043.10.1432.99
  squeries=(
    "studies, PatientID exact|studies?PatientID=PID00000010|2"
    "studies, PatientName=Wilson*|studies?PatientName=Wilson*|-1"
    "studies, StudyDate one quarter|studies?StudyDate=20200101-20200331|-1"
    "studies, StudyInstanceUID exact|studies?StudyInstanceUID=$root.1.42|1"
    "studies, all, limit=100 (study list)|studies?limit=100|-1"
    "series of one study|studies/$root.1.42/series|3"
  )
  for size in $SCALE_SIZES; do
    # cached across runs for the same index code (the schema may change)
    db=$state/synth-$size-$(git -C "$here" log -1 --format=%h -- store 2>/dev/null || echo x).db
    if [[ ! -f "$db" ]]; then
      log "building a synthetic index of $size instances"
      "$state/bin/synthindex" -n "$size" -out "$db.tmp" >/dev/null && mv "$db.tmp" "$db"
    fi
    data=$state/ward-synth
    ward_setup "$data"
    cp "$db" "$data/index.db"
    ward_start "$data" $S_DICOM $S_HTTP
    log "QIDO on Ward's synthetic index of $size: ${#squeries[@]} queries x $RUNS requests"
    for q in "${squeries[@]}"; do
      IFS='|' read -r name path n <<<"$q"
      bench "qidoscale|ward $size|$name" "$data.hdr" -n "$RUNS" -warmup 5 -expect "$n" "http://127.0.0.1:$S_HTTP/dicom-web/$path"
    done
    ward_stop
    rm -rf "$data"
  done
  if [[ -n "${ORTHANC_BIG:-}" ]]; then
    big=/tmp/bench/corpus-q$ORTHANC_BIG
    corpus "$big" "$ORTHANC_BIG" --seed 7 --profile small
    "$orthanc" wipe >/dev/null 2>&1 || true
    orthanc_start
    log "loading $ORTHANC_BIG instances into Orthanc (4 associations)"
    t0=$(date +%s)
    ps=()
    for d in "$big"/data/*; do echo "$d"; done | awk '{ print > ("'"$state"'/lists/big" (NR % 4)) }'
    for i in 0 1 2 3; do
      # shellcheck disable=SC2046
      timeout 7200 storescu -aet BENCHSCU -aec ORTHANC -to 10 -ta 600 -ts 120 +sd +r 127.0.0.1 $O_DICOM $(cat "$state/lists/big$i") >"$state/load-big$i.log" 2>&1 &
      ps+=($!)
    done
    for p in "${ps[@]}"; do wait "$p" || die "loading $big into orthanc failed"; done
    log "loaded $(orthanc_count) instances in $(($(date +%s) - t0)) s"
    h() { jq -r "$1" "$big/summary.json"; }
    bq=(
      "studies, PatientID exact|studies?PatientID=$(h .query_hints.patient_id.PatientID)|$(h .query_hints.patient_id.expected_studies)"
      "studies, PatientName=DOE*|studies?PatientName=DOE*|$(h .query_hints.patient_name_wildcard.expected_studies)"
      "studies, StudyDate one year|studies?StudyDate=$(h .query_hints.study_date_range.StudyDate)|$(h .query_hints.study_date_range.expected_studies)"
      "studies, AccessionNumber exact|studies?AccessionNumber=$(h .query_hints.accession.AccessionNumber)|1"
      "studies, all, limit=100 (study list)|studies?limit=100|$(jq '[.studies, 100] | min' "$big/summary.json")"
    )
    for q in "${bq[@]}"; do
      IFS='|' read -r name path n <<<"$q"
      bench "qidoscale|orthanc $ORTHANC_BIG|$name" "" -n "$RUNS" -warmup 5 -expect "$n" "$O/$path"
    done
    "$orthanc" stop >/dev/null
  fi
fi

# ---- STOW-RS against DIMSE ingest, into fresh archives
if has stow; then
  /usr/bin/python3 - "$harness" "$CORPUS_STOW" "$state/lists" <<'PY'
import sys
sys.path.insert(0, sys.argv[1] + "/lib")
import bench
rows, _ = bench.read_corpus(sys.argv[2])
def write(name, group):
    with open(f"{sys.argv[3]}/{name}", "w") as f:
        f.write("".join(sys.argv[2] + "/" + r["path"] + "\n" for r in group))
write("stow-all", rows)
for i, g in enumerate(bench.split_by_series(rows, 4)):
    write(f"stow-part{i}", g)
PY
  n=$(wc -l <"$state/lists/stow-all")
  bytes=$(jq .bytes "$CORPUS_STOW/summary.json")
  # ingest TARGET HOW JOBS: fresh server, send, time, check, stop
  ingest() {
    local target=$1 how=$2 jobs=$3 lists=() pids=() t0 t1 got rc=0 port aet url hdr=
    if [[ $jobs == 1 ]]; then lists=("$state/lists/stow-all"); else lists=("$state"/lists/stow-part?); fi
    if [[ $target == ward ]]; then
      ward_setup "$state/ward-ingest"; ward_start "$state/ward-ingest" $W_DICOM $W_HTTP
      port=$W_DICOM aet=WARD url=$W/studies hdr=$state/ward-ingest.hdr
    else
      "$orthanc" wipe >/dev/null 2>&1 || true; orthanc_start
      port=$O_DICOM aet=ORTHANC url=$O/studies
    fi
    local tok=(); [[ -n "$hdr" ]] && tok=(-token-file "${hdr%.hdr}.token")
    rm -f "$state"/ingest-*.log
    sync
    t0=$(date +%s.%N)
    for i in "${!lists[@]}"; do
      if [[ $how == dimse ]]; then
        # shellcheck disable=SC2046 # one argument per file
        timeout 1800 storescu -aet BENCHSCU -aec $aet -to 10 -ta 600 -ts 120 127.0.0.1 $port $(cat "${lists[i]}") >"$state/ingest-$i.log" 2>&1 &
      else
        timeout 1800 "$wb" stow -label "stowreq|$target $how $jobs|$i" "${tok[@]}" -list "${lists[i]}" "$url" >>"$state/stow-requests.jsonl" 2>"$state/ingest-$i.log" &
      fi
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    t1=$(date +%s.%N)
    if [[ $target == ward ]]; then ward_stop; got=$(ward_count "$state/ward-ingest"); else got=$(orthanc_count); "$orthanc" stop >/dev/null; fi
    local err=
    if [[ $rc != 0 ]]; then err="a client failed: $(grep -h -m1 -e 'first error' -e '^E:' -e '^F:' "$state"/ingest-*.log | head -1 | cut -c1-200)"
    elif [[ "$got" != "$n" ]]; then err="stored $got of $n"; fi
    mrow "ingest|$target" "$how x$jobs" wall_s="$(echo "$t1 - $t0" | bc -l)" instances="$n" bytes="$bytes" error="$err"
    if [[ -n "$err" ]]; then log "$target $how x$jobs: FAIL: $err"
    else log "$target $how x$jobs: $n instances in $(printf '%.2f' "$(echo "$t1 - $t0" | bc -l)") s"; fi
  }
  for rep in $(seq "$STOW_REPS"); do
    runs=("ward dimse 1" "ward stow 1" "ward dimse 4" "ward stow 4" "orthanc dimse 4" "orthanc stow 4")
    if (( rep % 2 == 0 )); then mapfile -t runs < <(printf '%s\n' "${runs[@]}" | tac); fi
    for r in "${runs[@]}"; do
      # shellcheck disable=SC2086
      ingest $r
    done
  done
fi

# ---- tables
/usr/bin/python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def parts(r):
    p = r["label"].split("|")
    return p[0], p[1], p[2] if len(p) > 2 else ""
def ms(r):
    if r.get("errors"):
        return "FAIL: " + r.get("first_error", "")[:120]
    return f'{r["p50_ms"]:.2f} / {r["p90_ms"]:.2f}'
def ratio(a, b):
    return f"{b / a:.1f}×" if a and b else "–"
out = []
# QIDO at 10k, side by side
q = {}
for r in rows:
    k, t, n = parts(r)
    if k == "qido10k":
        q.setdefault(n, {})[t] = r
if q:
    out += ["### QIDO-RS, 10k instances (median / p90 ms, one request at a time)", "",
            "| query | matches | Ward | Orthanc | Orthanc / Ward (median) |", "|---|---|---|---|---|"]
    for n, d in q.items():
        w, o = d.get("ward"), d.get("orthanc")
        ref = next((r for r in (w, o) if r and not r["errors"]), w or o)
        m = ref["items"] // max(1, ref["requests"])
        ok = w and o and not w["errors"] and not o["errors"]
        out.append(f"| {n} | {m} | {ms(w) if w else '–'} | {ms(o) if o else '–'} | {ratio(w['p50_ms'], o['p50_ms']) if ok else '–'} |")
    out.append("")
s = {}
for r in rows:
    k, t, n = parts(r)
    if k == "qidoscale":
        s.setdefault(n, {})[t] = r
if s:
    targets = sorted({t for d in s.values() for t in d}, key=lambda t: (t.split()[0], int(t.split()[1])))
    out += ["### QIDO-RS at scale (median / p90 ms [matches per answer])", "",
            "| query | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    for n, d in s.items():
        cells = []
        for t in targets:
            r = d.get(t)
            cells.append("–" if r is None else f'{ms(r)} [{r["items"] // max(1, r["requests"])}]')
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    out.append("")
cold = {}
warm = {}
for r in rows:
    k, t, n = parts(r)
    if k == "metacold":
        cold.setdefault(t, []).append(r)
    if k == "metawarm":
        warm[t] = r
if cold or warm:
    out += ["### Series metadata, 1,000 instances (ms)", "",
            "| server | cold (first request after a restart, page cache dropped): median (all) | warm: median / p90 (min–max) | MB per answer |", "|---|---|---|---|"]
    for t in ("ward", "orthanc"):
        c = cold.get(t, [])
        bad = [r for r in c if r["errors"]]
        if bad:
            ctext = "FAIL: " + bad[0].get("first_error", "")[:120]
        elif c:
            ctext = f'{statistics.median(r["p50_ms"] for r in c):.0f} (' + ", ".join(f'{r["p50_ms"]:.0f}' for r in c) + ")"
        else:
            ctext = "–"
        w = warm.get(t)
        wtext = "–" if w is None else ("FAIL: " + w.get("first_error", "")[:120] if w["errors"] else
                                       f'{w["p50_ms"]:.1f} / {w["p90_ms"]:.1f} ({w["min_ms"]:.1f}–{w["max_ms"]:.1f})')
        mb = f'{w["bytes"] / max(1, w["requests"]) / 1e6:.2f}' if w and not w["errors"] else "–"
        out.append(f"| {t} | {ctext} | {wtext} | {mb} |")
    ok = warm.get("ward") and warm.get("orthanc") and not warm["ward"]["errors"] and not warm["orthanc"]["errors"]
    if ok:
        out.append(f'\nwarm Orthanc / Ward: {warm["orthanc"]["p50_ms"] / warm["ward"]["p50_ms"]:.1f}×')
    if cold.get("ward") and cold.get("orthanc") and not any(r["errors"] for r in cold["ward"] + cold["orthanc"]):
        out.append(f'cold Orthanc / Ward: {statistics.median(r["p50_ms"] for r in cold["orthanc"]) / statistics.median(r["p50_ms"] for r in cold["ward"]):.1f}×')
    out.append("")
f = {}
for r in rows:
    k, t, n = parts(r)
    if k == "frames":
        f.setdefault(n, {})[t] = r
if f:
    out += ["### Frames of a 500-instance series, 512×512 16-bit (frames/s: median round (all rounds); latency median / p90 ms)", "",
            "| parallel requests | Ward | Orthanc | Ward / Orthanc |", "|---|---|---|---|"]
    for n, d in f.items():
        cells = []
        for t in ("ward", "orthanc"):
            r = d.get(t)
            if r is None: cells.append("–"); continue
            if r["errors"]: cells.append("FAIL: " + r.get("first_error", "")[:120]); continue
            rounds = r.get("round_items_per_s", [])
            all_ = " (" + ", ".join(f"{x:.0f}" for x in rounds) + ")" if len(rounds) > 1 else ""
            cells.append(f'{r["items_per_s"]:.0f}{all_}; {r["p50_ms"]:.1f} / {r["p90_ms"]:.1f}')
        w, o = d.get("ward"), d.get("orthanc")
        rt = f'{w["items_per_s"] / o["items_per_s"]:.1f}×' if w and o and not w["errors"] and not o["errors"] else "–"
        out.append(f"| {n} | {cells[0]} | {cells[1]} | {rt} |")
    out.append("")
ing = {}
for r in rows:
    k, t, n = parts(r)
    if k == "ingest":
        ing.setdefault((t, n), []).append(r)
if ing:
    out += ["### Ingest of the same corpus into a fresh archive (inst/s and MB/s: median (min–max) of the reps)", "",
            "| server | how | inst/s | MB/s | wall s |", "|---|---|---|---|---|"]
    med = {}
    for (t, n), rs in ing.items():
        bad = [r for r in rs if r.get("error")]
        if bad:
            out.append(f'| {t} | {n} | FAIL: {bad[0]["error"][:120]} | | |')
            continue
        ips = sorted(int(r["instances"]) / float(r["wall_s"]) for r in rs)
        mbs = sorted(int(r["bytes"]) / 1e6 / float(r["wall_s"]) for r in rs)
        walls = sorted(float(r["wall_s"]) for r in rs)
        med[(t, n)] = statistics.median(ips)
        out.append(f"| {t} | {n} | {statistics.median(ips):.0f} ({ips[0]:.0f}–{ips[-1]:.0f}) | {statistics.median(mbs):.0f} ({mbs[0]:.0f}–{mbs[-1]:.0f}) | {statistics.median(walls):.2f} |")
    for j in ("1", "4"):
        a, b = med.get(("ward", f"stow x{j}")), med.get(("ward", f"dimse x{j}"))
        if a and b:
            out.append(f"\nWard STOW / Ward DIMSE, {j} client{'s' if j != '1' else ''}: {a / b:.2f}×")
    out.append("")
print("\n".join(out))
PY
