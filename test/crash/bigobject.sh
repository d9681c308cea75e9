#!/bin/sh
# bigobject.sh: store one DICOM object with 1 GiB of Pixel Data into a
# `ward serve` child process and print the server's peak RSS (VmHWM) and
# the throughput, for docs/PERFORMANCE.md. Needs about 2 GiB free under
# $TMPDIR (default /tmp). Run from anywhere:
#
#   test/crash/bigobject.sh
#
# TestBigObject also runs with the rest of the suite (go test ./...); this
# script runs it alone. The figures are the lines "1 GiB object stored in ... (N MB/s); ward serve
# VmHWM ... kB" and "stored data set intact" of the output.
set -eu
cd "$(dirname "$0")/../.."
exec go test -run '^TestBigObject$' -count=1 -v -timeout 10m ./test/crash
