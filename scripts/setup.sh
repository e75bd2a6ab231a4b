#!/usr/bin/env bash
# Idempotent setup: the project's virtual environment and a Pulumi CLI of the pinned version.
# A second run only checks stamps and links, so it takes seconds.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
venv="$root/.venv"
python=${PYTHON:-python3}

step() { printf '==> %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

# The Pulumi CLI must match the Python SDK pinned in pyproject.toml (the Automation API checks it).
pulumi_version=$(sed -n 's/^ *"pulumi==\([0-9.]*\)",$/\1/p' pyproject.toml)
[ -n "$pulumi_version" ] || die "no pulumi==X.Y.Z pin found in pyproject.toml"
cache=${SMOOTH_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smooth-deploy}
tools="$cache/pulumi-v$pulumi_version/bin"

# 1. Virtual environment, reinstalled only when pyproject.toml changes.
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11 or newer is needed"
stamp="$venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  step "creating .venv and installing the project (pyproject.toml changed or first run)"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  log="$venv/pip-install.log"
  if ! { "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
         "$venv/bin/python" -m pip install --disable-pip-version-check -e '.[dev]'; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "installing the project failed (whole log: $log)"
  fi
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi

# 2. The Pulumi CLI: one already installed the usual way if it is new enough, else our build.
version_of() { "$1" version 2>/dev/null | sed 's/^v//'; }
newer_or_equal() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
ambient=$(PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$venv/bin" | paste -sd:) command -v pulumi || true)
if [ -n "$ambient" ] && newer_or_equal "$(version_of "$ambient")" "$pulumi_version"; then
  step "using the Pulumi CLI on PATH: $ambient ($(version_of "$ambient"))"
  cli="$ambient"
else
  cli="$tools/pulumi"
  if [ ! -x "$cli" ] || [ "$(version_of "$cli")" != "$pulumi_version" ]; then
    command -v go >/dev/null || die "no Pulumi CLI $pulumi_version on PATH and no Go toolchain to build one"
    step "building the Pulumi CLI v$pulumi_version from its Go module (first time only, several minutes)"
    build="$cache/build/pulumi-cli-v$pulumi_version"
    mkdir -p "$build" "$tools"
    cp tools/pulumi-cli/go.mod tools/pulumi-cli/go.sum tools/pulumi-cli/tools.go "$build/"
    (cd "$build" && GOFLAGS=-mod=mod go build -o "$tools/pulumi" \
      -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$pulumi_version" \
      github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)
    # The Python SDK's helper scripts ship in the sdk/v3 Go module; the engine looks for
    # them beside the CLI or on PATH.
    sdk=$(cd "$build" && go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)
    install -m 0755 "$sdk/python/dist/pulumi-resource-pulumi-python" "$tools/"
    install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$tools/"
  fi
fi
[ "$(version_of "$cli")" != "" ] || die "the Pulumi CLI at $cli does not run"
if [ "$cli" = "$tools/pulumi" ]; then
  # Pulumi's Go language host is not served by the module proxy we can reach, so our build
  # gets the project's own (zdd/langhost.py). The engine looks beside the CLI first; the
  # interpreter is the one of the project running it (PULUMI_PYTHON_CMD, else python3 on PATH).
  cat > "$tools/pulumi-language-python" <<'HOST'
#!/bin/sh
exec "${PULUMI_PYTHON_CMD:-python3}" -m zdd.langhost "$@"
HOST
  chmod 0755 "$tools/pulumi-language-python"
fi
ln -sfn "$cli" "$venv/bin/pulumi"
for helper in pulumi-resource-pulumi-python pulumi-language-python-exec; do
  if [ -x "$tools/$helper" ]; then ln -sfn "$tools/$helper" "$venv/bin/$helper"; fi
done
# 3. The sample site's releases (apps/sample/app.yaml): one folder per version, as a build makes.
"$venv/bin/python" -m sampleapp releases apps/sample/releases
# The project's own bytecode, written now: a deployment starts a dozen Python processes (the
# language host, the provider, the site's servers), and where PYTHONDONTWRITEBYTECODE is set (the
# image this project is tested on sets it) each would compile every module it imports.
"$venv/bin/python" -m compileall -q -j 0 zdd infra policies sampleapp tests \
  $(find apps -path '*/releases' -prune -o -name '*.py' -print) >/dev/null
# 4. HAProxy, the local target's front door (2.4 or newer), and wrk for the benchmark's front
# door figures: the ones installed, else the Debian packages when we are root with apt-get.
apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
  export DEBIAN_FRONTEND=noninteractive
  # Another apt-get (an unattended upgrade on a new machine) may hold the lock: wait for it.
  local wait=(-o DPkg::Lock::Timeout=600)
  apt-get "${wait[@]}" install -y -qq "$1" >/dev/null 2>&1 ||
    { apt-get "${wait[@]}" update -qq >/dev/null 2>&1 &&
      apt-get "${wait[@]}" install -y -qq "$1" >/dev/null 2>&1; }
}
# Debian installs it in /usr/sbin, which a user's PATH may lack (infra/local/haproxy.py looks there too).
haproxy_version() {
  PATH="$PATH:/usr/local/sbin:/usr/sbin" haproxy -v 2>/dev/null |
    sed -n 's/^HAProxy version \([0-9][0-9.]*\).*/\1/p'
}
if ! newer_or_equal "$(haproxy_version)" 2.4; then
  step "installing HAProxy (Debian package haproxy) for the local front door"
  apt_install haproxy && newer_or_equal "$(haproxy_version)" 2.4 ||
    die "the local front door needs HAProxy 2.4 or newer: install it (Debian/Ubuntu: sudo apt-get install haproxy)"
fi
if ! command -v wrk >/dev/null; then
  if apt_install wrk; then step "installed wrk (Debian package) for make bench"
  else step "no wrk: make bench skips its front door figures (Debian/Ubuntu: sudo apt-get install wrk)"; fi
fi
# 5. PostgreSQL for sites whose app spec asks for it (database: {engine: postgresql}): the
# server's programs only; zdd/postgres.py runs one cluster per stack, never the package's own.
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && ! command -v postgres >/dev/null; then
  if apt_install postgresql; then step "installed PostgreSQL (Debian package postgresql)"
  else step "no PostgreSQL: stacks on it are refused (Debian/Ubuntu: sudo apt-get install postgresql)"; fi
fi
step "ready: pulumi $(version_of "$cli"), HAProxy $(haproxy_version), $("$venv/bin/python" --version)"
