#!/usr/bin/env bash
# Installs the Debian packages the tests use as real peers (DCMTK, dicom3tools,
# headless Chromium for the status page, Prometheus for the dashboard queries, Orthanc
# as a stand-in PACS, PostgreSQL as a state DB), only when they are missing. Needs root
# or sudo on a fresh machine.
set -euo pipefail
need=()
command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# PostgreSQL server (tests/reliability/test_storage_faults.py runs a private cluster).
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "installing system packages: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
