# Sourced by bench/run and bench/profile: installs what the 100-golfer benchmark needs besides
# DynamoDB Local (scripts/dynamodb-local.sh): Debian packages (wrk; perf for the profile) and
# matplotlib, pinned, into .tools/venv-bench.
MATPLOTLIB_VERSION="3.11.2"

# ensure_deb COMMAND PACKAGE: installs the Debian package when the command is missing.
ensure_deb() {
  command -v "$1" >/dev/null && return 0
  echo "installing $1 (Debian package $2)" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq "$2" >/dev/null 2>&1 || { $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq "$2" >/dev/null; }
}

ensure_bench_venv() {
  if [ ! -x .tools/venv-bench/bin/python ] || ! .tools/venv-bench/bin/python -c 'import matplotlib' 2>/dev/null; then
    echo "installing matplotlib into .tools/venv-bench" >&2
    python3 -m venv .tools/venv-bench
    .tools/venv-bench/bin/pip install --quiet "matplotlib==$MATPLOTLIB_VERSION"
  fi
}
