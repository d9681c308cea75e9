#!/usr/bin/env bash
# bench-viewer.sh: time to first image of the OHIF viewer in Chromium for a
# 300-slice CT, Ward against Orthanc with its DICOMweb plugin, side by side
# in one run (issue #17). A benchmark, not a test: it prints a table.
#
#   scripts/bench-viewer.sh
#
# The CT: the 512x512 axial series (explicit VR little endian, ~0.5 MB a
# slice) of the shared harness's corpus generator (make-corpus.sh 600
# --seed 2 --per-series 300, series SE02), given a study of its own
# (deterministic new Study, Series and SOP Instance UIDs; InstanceNumber
# and ImagePositionPatient/SliceLocation already increase). It is stored
# with storescu (TCP_NODELAY=1) into Ward (ward serve --loopback-any-ae,
# with the OHIF bundle `ward viewer fetch` brings, or WARD_VIEWER_BUNDLE)
# and into Orthanc (the harness's peers/orthanc.sh: Orthanc 1.10 with
# libOrthancDicomWeb.so at its defaults, REST authentication off, bound to
# loopback by the harness's shim). internal/cmd/viewerbench then drives
# Debian's Chromium through both (same OHIF bundle and configuration, a
# proxy hop each; see its doc comment), ROUNDS rounds of one cold run and
# WARM warm reloads per target, alternating.
#
# Environment: STATE (default /tmp/ward-bench-viewer; the generated corpus
# is kept there between runs, the rest wiped), WARD_BIN (default: built
# from this tree), WARD_VIEWER_BUNDLE (an OHIF dist directory), BENCH_HARNESS
# (default ../shared/bench or /work/shared/bench), ROUNDS (6), WARM (1),
# DIRECT (1: also Ward without the proxy). Results: $STATE/results.jsonl.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "bench-viewer: $*" >&2; exit 1; }
log() { echo "bench-viewer: $(date -u +%H:%M:%S) $*" >&2; }

if [[ -n "${BENCH_HARNESS:-}" ]]; then harness=$BENCH_HARNESS
elif [[ -d "$here/../shared/bench" ]]; then harness=$(cd "$here/../shared/bench" && pwd)
else harness=/work/shared/bench; fi
[[ -x "$harness/peers/orthanc.sh" ]] || die "no shared harness at $harness (set BENCH_HARNESS)"
[[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]] || die "no Orthanc DICOMweb plugin (apt-get install orthanc orthanc-dicomweb)"
for t in storescu echoscu curl jq chromium /usr/bin/python3; do command -v "$t" >/dev/null || die "$t missing"; done

state=${STATE:-/tmp/ward-bench-viewer}
ROUNDS=${ROUNDS:-6} WARM=${WARM:-1} DIRECT=${DIRECT:-1}
W_DICOM=21171 W_HTTP=21172 O_DICOM=21173 O_HTTP=21174
export TCP_NODELAY=1 BENCH_TMP=$state ORTHANC_NAME=orthanc-viewer ORTHANC_DICOM_PORT=$O_DICOM ORTHANC_HTTP_PORT=$O_HTTP ORTHANC_DICOMWEB=1
orthanc=$harness/peers/orthanc.sh
umask 077

# ---- processes this script started, stopped by PID on any exit
wpid=
cleanup() {
  if [[ -n "$wpid" ]]; then
    kill -INT "$wpid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$wpid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$wpid" 2>/dev/null || true
  fi
  "$orthanc" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$state"
"$orthanc" stop >/dev/null 2>&1 || true
find "$state" -mindepth 1 -maxdepth 1 ! -name 'corpus-src' ! -name ct300 ! -name ct300.study-uid -exec rm -rf {} +
mkdir -p "$state/bin"

log "building ward and viewerbench"
if [[ -n "${WARD_BIN:-}" ]]; then ward=$(readlink -f "$WARD_BIN")
else (cd "$here" && go build -o "$state/bin/ward" ./cmd/ward); ward=$state/bin/ward; fi
(cd "$here" && go build -o "$state/bin/viewerbench" ./internal/cmd/viewerbench)

# ---- the CT: 300 slices of 512x512 in a study of their own
if [[ ! -f "$state/ct300.study-uid" ]]; then
  log "making the 300-slice CT"
  [[ -f "$state/corpus-src/manifest.tsv" ]] || "$harness/make-corpus.sh" 600 "$state/corpus-src" --seed 2 --per-series 300 >/dev/null
  rm -rf "$state/ct300"
  /usr/bin/python3 - "$state/corpus-src" "$state/ct300" <<'PY'
import glob, os, sys
import pydicom
from pydicom.uid import generate_uid
src, out = sys.argv[1], sys.argv[2]
files = sorted(glob.glob(os.path.join(src, "data", "*", "ST01", "SE02", "*.dcm")))
assert len(files) == 300, len(files)
os.makedirs(out, mode=0o700)
root = "1.2.826.0.1.3680043.8.498."
study = generate_uid(root, ["ward-bench-viewer", "study"])
series = generate_uid(root, ["ward-bench-viewer", "series"])
for i, f in enumerate(files):
    ds = pydicom.dcmread(f)
    assert ds.Modality == "CT" and ds.Rows == 512, f
    sop = generate_uid(root, ["ward-bench-viewer", "sop", str(i)])
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.StudyDescription, ds.SeriesDescription = "CT 300 SLICES (VIEWER BENCH)", "AXIAL 300"
    ds.save_as(os.path.join(out, "IM%04d.dcm" % (i + 1)), write_like_original=False)
with open(out + ".study-uid", "w") as fh:
    fh.write(study + "\n")
PY
fi
study=$(cat "$state/ct300.study-uid")
slices=$(find "$state/ct300" -name '*.dcm' | wc -l)

# ---- Ward with the viewer and a viewer user
data=$state/ward
mkdir -p -m 700 "$data"
if [[ -n "${WARD_VIEWER_BUNDLE:-}" ]]; then
  printf '[web]\nviewer = "%s"\n' "$WARD_VIEWER_BUNDLE" >"$data/ward.toml"
else
  log "ward viewer fetch"
  "$ward" viewer fetch --data "$data" >"$state/viewer-fetch.log" 2>&1 || { cat "$state/viewer-fetch.log" >&2; die "ward viewer fetch failed (set WARD_VIEWER_BUNDLE)"; }
fi
head -c 18 /dev/urandom | base64 >"$state/passcode"
"$ward" user add bench --role viewer --data "$data" <"$state/passcode" >/dev/null
"$ward" serve --data "$data" --loopback-any-ae --dicom-listen 127.0.0.1:$W_DICOM --http-listen 127.0.0.1:$W_HTTP >"$state/ward.log" 2>&1 &
wpid=$!
for _ in $(seq 300); do
  kill -0 "$wpid" 2>/dev/null || { tail -20 "$state/ward.log" >&2; die "ward serve exited"; }
  grep -q "serving the OHIF viewer" "$state/ward.log" && echoscu -aec WARD 127.0.0.1 $W_DICOM >/dev/null 2>&1 && break
  sleep 0.1
done
grep -q "serving the OHIF viewer" "$state/ward.log" || die "ward serves no viewer (see $state/ward.log)"

log "starting Orthanc"
"$orthanc" start >/dev/null || die "orthanc did not start"

log "storing $slices slices into both"
storescu -aet BENCHSCU -aec WARD -to 10 -ta 600 +sd 127.0.0.1 $W_DICOM "$state/ct300" >"$state/load-ward.log" 2>&1 || die "storing into ward failed"
storescu -aet BENCHSCU -aec ORTHANC -to 10 -ta 600 +sd 127.0.0.1 $O_DICOM "$state/ct300" >"$state/load-orthanc.log" 2>&1 || die "storing into orthanc failed"
n=$("$orthanc" count) && [[ "$n" -eq "$slices" ]] || die "orthanc holds $n instances, want $slices"

versions() {
  echo "OHIF @ohif/app $(jq -r '.dependencies["@ohif/app"]' "$here/viewer/package.json")"
  chromium --version 2>/dev/null | head -1
  echo "Orthanc $(curl -sf http://127.0.0.1:$O_HTTP/system | jq -r .Version), DICOMweb plugin $(curl -sf http://127.0.0.1:$O_HTTP/plugins/dicom-web | jq -r .Version)"
  echo "ward $(cd "$here" && git rev-parse --short HEAD)"
  echo "load: $(uptime)"
}
versions | tee "$state/versions.txt" >&2

# The series metadata as the viewer asks for it, straight from each server
# with curl, as a browser asks (gzip accepted): what it weighs on the wire
# and how long each server takes to send it.
"$ward" token issue bench --data "$data" --ttl 1h 2>/dev/null | { printf 'Authorization: Bearer '; cat; } >"$state/token.hdr"
series=$(curl -sf "http://127.0.0.1:$O_HTTP/dicom-web/studies/$study/series" | jq -r '.[0]["0020000E"].Value[0]')
meta() { # NAME URL [curl args]: five requests
  local i
  for i in 1 2 3 4 5; do
    curl -sf -o /dev/null -H 'Accept: application/dicom+json' -H 'Accept-Encoding: gzip, deflate, br' "${@:3}" \
      -w "$1 metadata: HTTP %{http_code}, %{size_download} bytes, %{time_total} s\n" "$2" || echo "$1 metadata: failed"
  done
}
{
  meta ward "http://127.0.0.1:$W_HTTP/dicom-web/studies/$study/series/$series/metadata" -H @"$state/token.hdr"
  meta orthanc "http://127.0.0.1:$O_HTTP/dicom-web/studies/$study/series/$series/metadata"
} | tee "$state/metadata.txt" >&2

log "measuring: $ROUNDS rounds, $WARM warm reload(s) each"
direct=()
[[ "$DIRECT" == 1 ]] && direct=(-direct)
"$state/bin/viewerbench" -ward http://127.0.0.1:$W_HTTP -orthanc http://127.0.0.1:$O_HTTP -study "$study" \
  -user bench -passcode-file "$state/passcode" -rounds "$ROUNDS" -warm "$WARM" -slices "$slices" \
  -out "$state/results.jsonl" "${direct[@]}"
echo "load after: $(uptime)" >&2
