#!/usr/bin/env bash
# Runs every test, installing what the tests need when it is missing.
# This is the README's test command; CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

# An independent JOSE library opens the sealed tokens (tests/api/sealing.rs).
if ! python3 -c 'import jwcrypto' >/dev/null 2>&1; then
  echo "== installing: jwcrypto (PyPI)"
  python3 -m pip install --quiet jwcrypto 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages jwcrypto
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
# Under CI=true no suite may skip for lack of Redis or a browser.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
CI="${CI:-true}" cargo test --all-targets 2>&1 | tee "$log"
# One closing line for the whole run (the last binary, an example, has no tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f; exit (f > 0) }' "$log"
