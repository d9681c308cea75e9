#!/usr/bin/env bash
# bench-get.sh: retrieve time of an archive filled by bench-ab.sh, for A/B
# comparisons (encryption at rest on and off, say):
#
#   scripts/bench-get.sh WARD_BIN STATE [KEYFILE [CORPUS]]
#
# Serves STATE/data (left by `STATE=… scripts/bench-ab.sh`; with KEYFILE
# when it was filled with ENCRYPT=1, whose key is STATE/ward.key) on
# 127.0.0.1:21189, registers GETSCU, and C-GETs every study of CORPUS
# (default /tmp/bench/corpus-2000) with DCMTK getscu, one association per
# study, into a fresh folder each time. Prints the seconds the loop took.
set -euo pipefail
export WARD_VIEWER_FETCH=off TCP_NODELAY=1
bin=$(readlink -f "$1") state=$2 key=${3:-} corpus=${4:-/tmp/bench/corpus-2000}
data=$state/data port=21189
studies=$state/studies.txt
if [[ ! -s "$studies" ]]; then
  /usr/bin/python3 - "$corpus" >"$studies" <<'PY'
import os, sys, pydicom
uids = set()
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        try:
            uids.add(pydicom.dcmread(os.path.join(root, f), stop_before_pixels=True,
                                     specific_tags=["StudyInstanceUID"]).StudyInstanceUID)
        except Exception:
            pass
print("\n".join(sorted(uids)))
PY
fi
"$bin" peer add GETSCU --host 127.0.0.1 --allow echo,find,get --data "$data" >/dev/null 2>&1 || true
extra=()
[[ -n "$key" ]] && extra=(--encryption-key-file "$key")
"$bin" serve --data "$data" --dicom-listen 127.0.0.1:$port --aet WARD --http-listen off "${extra[@]}" >"$state/get-server.log" 2>&1 &
srv=$!
trap 'kill $srv 2>/dev/null; wait $srv 2>/dev/null' EXIT
for _ in $(seq 100); do echoscu -aet GETSCU -aec WARD 127.0.0.1 $port 2>/dev/null && break; sleep 0.1; done
out=$state/getout
t0=$(date +%s.%N)
while read -r s; do
  rm -rf "$out" && mkdir -p "$out"
  getscu -aet GETSCU -aec WARD -S -k QueryRetrieveLevel=STUDY -k StudyInstanceUID="$s" -od "$out" 127.0.0.1 $port
done <"$studies"
t1=$(date +%s.%N)
echo "$t1 - $t0" | bc -l
