#!/usr/bin/env bash
# Installs the Debian packages the tests use as real peers (DCMTK, dicom3tools,
# headless Chromium for the status page and the OHIF viewer test, Prometheus for the
# dashboard queries, Orthanc with its DICOMweb plugin as a stand-in PACS, npm to fetch
# the OHIF build, PostgreSQL as a state DB), only when they are missing. Needs root or
# sudo on a fresh machine.
set -euo pipefail
need=()
command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
# DICOMweb for OHIF (tests/test_viewer_ohif.py).
ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so >/dev/null 2>&1 || need+=(orthanc-dicomweb)
# npm fetches the pinned OHIF build (make ohif); any Node with npm will do.
command -v npm >/dev/null 2>&1 || need+=(npm)
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
