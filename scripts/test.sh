#!/usr/bin/env bash
# Runs every test, installing what the tests need when it is missing.
# This is the README's test command; CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  echo "== installing: $*"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv python3-pip)
# Relying parties of the OpenID provider's tests (tests/api/oidc_rp.rs).
[ -x /usr/sbin/apache2 ] || need+=(apache2)
[ -e /usr/lib/apache2/modules/mod_auth_openidc.so ] || need+=(libapache2-mod-auth-openidc)
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}"
fi

# The backend examples' dependencies (tests/api/examples.rs runs them), each
# installed again only when its lock file changes.
node_dir=examples/node-express
if ! cmp -s "$node_dir/package-lock.json" "$node_dir/node_modules/.installed-lock.json"; then
  echo "== npm ci ($node_dir)"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$node_dir/package-lock.json" "$node_dir/node_modules/.installed-lock.json"
fi
venv=examples/python-flask/.venv
if ! cmp -s examples/python-flask/requirements.txt "$venv/.installed-requirements.txt"; then
  echo "== pip install -r examples/python-flask/requirements.txt (in $venv)"
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; }
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r examples/python-flask/requirements.txt
  cp examples/python-flask/requirements.txt "$venv/.installed-requirements.txt"
fi

# An independent JOSE library opens the sealed tokens (tests/api/sealing.rs).
if ! python3 -c 'import jwcrypto' >/dev/null 2>&1; then
  echo "== installing: jwcrypto (PyPI)"
  python3 -m pip install --quiet jwcrypto 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages jwcrypto
fi

if [ ! -d tests/rp/openid-client/node_modules/openid-client ]; then
  echo "== npm ci (openid-client relying party)"
  (cd tests/rp/openid-client && npm ci --no-audit --no-fund --silent)
fi

# The shipped nginx recipe must load in a real nginx (with throwaway certificates).
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt_install nginx-light
echo "== nginx -t deploy/nginx.conf"
ngx=$(mktemp -d)
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$ngx/key.pem" -out "$ngx/cert.pem" \
  -days 1 -subj /CN=login.example.com >/dev/null 2>&1
sed -e "s#/etc/ssl/login.example.com.pem#$ngx/cert.pem#; s#/etc/ssl/login.example.com.key#$ngx/key.pem#" \
  deploy/nginx.conf > "$ngx/site.conf"
printf 'pid %s/pid;\nerror_log %s/error.log;\nevents {}\nhttp { access_log off; include %s/site.conf; }\n' \
  "$ngx" "$ngx" "$ngx" > "$ngx/main.conf"
/usr/sbin/nginx -t -q -c "$ngx/main.conf"
rm -rf "$ngx"

# The widget's npm package: its tarball, as it would be published (the
# browser test installs one itself; this checks it packs).
echo "== npm pack (packages/qrlogin-widget)"
mkdir -p target/npm
(cd packages/qrlogin-widget && npm pack --silent --pack-destination ../../target/npm >/dev/null)

echo "== cargo fmt --check"
cargo fmt --all -- --check
# At the root, cargo's default members: the service, its allocator
# (crates/qrlogin-alloc), the load generator (crates/qrlogin-bench) and the
# token verifier (crates/qrlogin-verify). The
# fuzz targets build under cargo-fuzz only (docs/fuzzing.md).
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
# Under CI=true no suite may skip for lack of Redis or a browser.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
CI="${CI:-true}" cargo test --all-targets 2>&1 | tee "$log"
# One closing line for the whole run (the last binary, an example, has no tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f; exit (f > 0) }' "$log"
