#!/usr/bin/env bash
# Installs what Ward's tests need when it is missing, then runs them.
# Used by the README and by CI (.ci/run). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
command -v gdcmscu >/dev/null 2>&1 || need+=(libgdcm-tools)
/usr/bin/python3 -c 'import pydicom' >/dev/null 2>&1 || need+=(python3-pydicom)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v nmap >/dev/null 2>&1 || need+=(nmap)
# De-identification: PixelMed's library to compare with (its Java driver
# runs from source: javac), dicom3tools' dciodvfy.
test -e /usr/share/java/pixelmed.jar || need+=(pixelmed-apps)
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
# DICOMweb clients nobody here wrote: Orthanc's DICOMweb plugin, and npm
# dicomweb-client under Node (Debian 12's Node 18 will do; 20 is tested).
ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so* /usr/lib/orthanc/libOrthancDicomWeb.so* >/dev/null 2>&1 || need+=(orthanc-dicomweb)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# PostgreSQL for the index backend's tests (test/harness/postgres.go runs a
# throwaway cluster as the postgres user; no system service is started).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# mkfs.ext4: tests of ext4 features run on an image where $TMPDIR is not
# ext4. The power-cut tests mount a FUSE file system with mount(2) as root:
# they need /dev/fuse, not fusermount (no fuse3 package).
{ command -v mkfs.ext4 || test -x /usr/sbin/mkfs.ext4; } >/dev/null 2>&1 || need+=(e2fsprogs)
{ command -v rsyslogd || test -x /usr/sbin/rsyslogd; } >/dev/null 2>&1 && ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1 || need+=(rsyslog rsyslog-gnutls)
# HAProxy: the load balancer's readiness check (test/interop/metrics_test.go)
# and several nodes behind it (test/cluster, test/harness).
{ command -v haproxy || test -x /usr/sbin/haproxy; } >/dev/null 2>&1 || need+=(haproxy)
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # Orthanc's package would start a system service on every interface:
  # keep package scripts from starting services.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi

go version
go mod download
# ORY Hydra, the OpenID provider of the single sign-on test (test/tools/tools.md).
gobin="$(go env GOPATH)/bin"
if ! command -v hydra >/dev/null 2>&1 && [ ! -x "$gobin/hydra" ]; then
  echo "building ORY Hydra for the single sign-on test"
  mkdir -p "$gobin"
  (cd test/tools && go build -tags sqlite,sqlite_omit_load_extension -o "$gobin/hydra" github.com/ory/hydra/v2)
fi
# versitygw, the S3-compatible object store of the S3 blobs tests
# (test/tools/tools.md).
if ! command -v versitygw >/dev/null 2>&1 && [ ! -x "$gobin/versitygw" ]; then
  echo "building versitygw for the S3 tests"
  mkdir -p "$gobin"
  (cd test/tools/s3 && go build -o "$gobin/versitygw" github.com/versity/versitygw/cmd/versitygw)
fi
# dicomweb-client for test/interop, from the lock file; no install scripts
# run (nothing such as a browser is downloaded).
node_dir=test/interop/node
if [ ! -e "$node_dir/node_modules/.package-lock.json" ] || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
  (cd "$node_dir" && npm ci --ignore-scripts --no-audit --no-fund)
fi
test -z "$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
go vet ./...
go test -race -count=1 -timeout 30m ./...
