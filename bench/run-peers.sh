#!/usr/bin/env bash
# Runs one peer benchmark, installing or building it first if needed, and prints its JSON line.
#
#   bench/run-peers.sh install                        install both peers, run nothing
#   bench/run-peers.sh durably steps RUNS STEPS CONCURRENCY POLL_MS   (SYNC=NORMAL|FULL)
#   bench/run-peers.sh durably latency N POLL_MS|default              (SYNC=NORMAL|FULL)
#   bench/run-peers.sh effectum JOBS CONCURRENCY       (JOURNAL=wal|delete, SYNC=NORMAL|FULL)
#   bench/run-peers.sh durably-pg steps RUNS STEPS CONCURRENCY POLL_MS    (PostgreSQL)
#   bench/run-peers.sh graphile-worker JOBS CONCURRENCY defaults|batched  (PostgreSQL)
#
# The PostgreSQL peers (durably on kysely's PostgresDialect and pg; graphile-worker 0.18.0,
# pinned by their package-lock.json files) run on the server DURABLE_JOBS_PG_URL names
# (default postgres://postgres@127.0.0.1:5432/test), each in a fresh database it drops, and
# print `synchronous_commit` as read from the server.
#
# Each JSON line has the journal mode and synchronous level read from the peer's own connection.
# effectum: JOURNAL=wal (default) puts its file in WAL first and its connections at SYNC;
# JOURNAL=delete is effectum as shipped (its WAL pragma is misspelled: rollback journal).
# The npm packages (@coji/durably 0.15.0, kysely 0.27, better-sqlite3, zod, pinned by
# bench/peers/durably/package-lock.json) go into bench/peers-work/durably/, and the effectum
# program (bench/peers/effectum, not a workspace member) is built into
# bench/peers-work/effectum-target/; git ignores bench/peers-work/. The first install takes a
# few minutes (better-sqlite3 may compile its native module).
#
# Exit status 3: the peer could not be installed or built (the reason is on stderr).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${DURABLE_JOBS_PEERS_DIR:-$here/peers-work}
mkdir -p "$work"

install_durably() {
  local dir=$work/durably
  mkdir -p "$dir"
  cp "$here/peers/durably/package.json" "$here/peers/durably/package-lock.json" \
     "$here/peers/durably/bench.mjs" "$dir/"
  if [ ! -f "$dir/node_modules/@coji/durably/package.json" ] \
     || ! (cd "$dir" && node -e "require('better-sqlite3')(':memory:')" >/dev/null 2>&1); then
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
      echo "run-peers: node and npm are needed for the durably peer" >&2
      exit 3
    fi
    echo "run-peers: installing the durably peer into $dir (a few minutes the first time)" >&2
    if ! (cd "$dir" && { npm ci --no-audit --no-fund >"$dir/install.log" 2>&1 \
          || npm install --no-audit --no-fund >>"$dir/install.log" 2>&1; }); then
      echo "run-peers: npm could not install the durably peer; see $dir/install.log" >&2
      exit 3
    fi
  fi
}

# Installs the npm peer NAME (bench/peers/NAME) into bench/peers-work/NAME. Their packages are
# pure JavaScript: install scripts are skipped (durably's better-sqlite3 is not used on
# PostgreSQL and would compile for minutes).
install_npm_peer() {
  local name=$1 dir=$work/$1
  mkdir -p "$dir"
  cp -p "$here/peers/$name/package.json" "$here/peers/$name/package-lock.json" \
     "$here/peers/$name/bench.mjs" "$dir/"
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
      echo "run-peers: node and npm are needed for the $name peer" >&2
      exit 3
    fi
    echo "run-peers: installing the $name peer into $dir" >&2
    if ! (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts >"$dir/install.log" 2>&1); then
      echo "run-peers: npm could not install the $name peer; see $dir/install.log" >&2
      exit 3
    fi
  fi
}

build_effectum() {
  export CARGO_TARGET_DIR=$work/effectum-target
  if ! cargo build --release --quiet --manifest-path "$here/peers/effectum/Cargo.toml" \
       2>"$work/effectum-build.log"; then
    echo "run-peers: the effectum peer did not build; see $work/effectum-build.log" >&2
    exit 3
  fi
}

peer=${1:-}
shift || true
case "$peer" in
  install)
    install_durably
    build_effectum
    install_npm_peer durably-pg
    install_npm_peer graphile-worker
    ;;
  durably)
    install_durably
    cd "$work/durably" && exec node bench.mjs "$@"
    ;;
  durably-pg|graphile-worker)
    install_npm_peer "$peer"
    cd "$work/$peer" && exec node bench.mjs "$@"
    ;;
  effectum)
    build_effectum
    exec "$CARGO_TARGET_DIR/release/effectum-peer-bench" "$@"
    ;;
  *)
    sed -n '2,25p' "$0" >&2
    exit 2
    ;;
esac
