#!/usr/bin/env bash
# Install headless Chromium (Debian package) for the book's browser test, if it is missing.
# Idempotent and quiet; needs root or sudo. tests/test_book.py skips the browser test when
# Chromium is absent, except in CI (CI set), where it fails.
set -euo pipefail
for exe in chromium chromium-browser google-chrome; do
  command -v "$exe" >/dev/null 2>&1 && exit 0
done
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[chromium] apt-get not available: install Chromium by hand for the browser test" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"   # never prompt for a password
echo "[chromium] installing the Debian package chromium (once)"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
