#!/usr/bin/env bash
# The demo: migrate, seed, then web server + Celery worker + beat in the background until
# Ctrl-C / SIGTERM.  Logs in var/log/, pids in var/run/.  PORT and PORTAL_VAR_DIR override.
set -euo pipefail
cd "$(dirname "$0")/.."

# Absolute, so that every child process resolves the same directory.
export PORTAL_VAR_DIR="$(realpath -m "${PORTAL_VAR_DIR:-var}")"
VAR=$PORTAL_VAR_DIR
PORT=${PORT:-8000}
BIN=.venv/bin
# The filesystem broker (the default) needs its folders before the first message.
mkdir -p "$VAR"/log "$VAR"/run "$VAR"/broker/{queue,control,results}

alive() { ps -o stat= -p "$1" 2>/dev/null | grep -qv '^Z'; }  # an unreaped child counts as gone

# TERM each service (its own process group), give it 30 s to finish running tasks, then KILL
# what is left of the group (gunicorn workers, Celery pool processes).
stop_services() {
  local pid i left
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do
    left=0; for pid; do alive "$pid" && left=1; done
    ((left)) || break
    sleep 0.5
  done
  for pid; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}

# A previous instance (e.g. its shell was killed) would hold the port and the broker.
prev=()
for f in "$VAR"/run/*.pid; do
  [ -e "$f" ] || continue
  pid=$(<"$f"); rm -f "$f"
  # Only if that pid is still one of ours, not a recycled number.
  if ps -o args= -p "$pid" 2>/dev/null | grep -qE 'gunicorn|celery|emulators.world'; then prev+=("$pid"); fi
done
if ((${#prev[@]})); then echo "Stopping the previous instance (pids ${prev[*]})"; stop_services "${prev[@]}"; fi

# The outside parties (chains, custody, platforms, bank) on loopback, reached by the workers through the
# real adapters. Their endpoints and generated credentials go to a 0600 file the portal reads.
export PORTAL_SECRETS_FILE="$VAR/emulators.json" PORTAL_CHAIN_NETWORK=regtest
rm -f "$PORTAL_SECRETS_FILE"
world_pid=""
if [ "${PORTAL_EMULATORS:-1}" = 1 ]; then
  setsid $BIN/python -m emulators.world --secrets-file "$PORTAL_SECRETS_FILE" --workdir "$VAR/world" \
    --block-time "${PORTAL_BLOCK_TIME:-2}" >>"$VAR/log/world.log" 2>&1 &
  world_pid=$!
  echo $world_pid >"$VAR/run/world.pid"
  # Until the services start (and the full cleanup takes over), a failed step must not orphan it.
  trap 'kill -TERM "$world_pid" 2>/dev/null || true' EXIT
  for ((i = 0; i < 120; i++)); do [ -s "$PORTAL_SECRETS_FILE" ] && break; sleep 0.5; done
  [ -s "$PORTAL_SECRETS_FILE" ] || { echo "The emulators did not start; see $VAR/log/world.log" >&2; exit 1; }
fi

$BIN/python manage.py migrate --noinput
$BIN/python manage.py collectstatic --noinput -v0
# Development signing certificates for the documents (idempotent; after seed_demo, which
# creates the organisations). Its listing goes to a log so the logins stay on screen.
logins=$($BIN/python manage.py seed_demo)  # idempotent; says the demo logins
mkdir -p "$PORTAL_VAR_DIR/log"
$BIN/python manage.py make_dev_pki >"$PORTAL_VAR_DIR/log/pki.log"
echo "$logins"
$BIN/python manage.py demo_live_case

names=() pids=()
start() {  # start NAME COMMAND...
  local name=$1; shift
  # setsid: a process group of its own, so a terminal Ctrl-C reaches only this script, which
  # then stops the services in an orderly way (and can kill a whole group if needed).
  setsid "$@" >>"$VAR/log/$name.log" 2>&1 &
  names+=("$name") pids+=($!)
  echo $! >"$VAR/run/$name.pid"
}
cleanup() {
  local i
  trap - INT TERM EXIT
  echo "Stopping ${names[*]}..."
  stop_services "${pids[@]}"
  wait 2>/dev/null || true
  # Only our own pid files: a newer instance may already have written its own.
  for i in "${!pids[@]}"; do
    [ "$(cat "$VAR/run/${names[$i]}.pid" 2>/dev/null)" != "${pids[$i]}" ] || rm -f "$VAR/run/${names[$i]}.pid"
  done
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

if [ -n "$world_pid" ]; then names+=(world) pids+=("$world_pid"); fi
start web $BIN/gunicorn portal.wsgi --bind "127.0.0.1:$PORT" --workers 2 --access-logfile -
start worker $BIN/celery -A portal worker -l info --concurrency 2
start beat $BIN/celery -A portal beat -l info

echo "Portal: http://127.0.0.1:$PORT/ (admin at /admin/)"
echo "Logs: $VAR/log/{web,worker,beat,world}.log"

# If one service dies the demo is broken: say which, and stop the others (EXIT trap).
wait -n || true
for i in "${!pids[@]}"; do alive "${pids[$i]}" || echo "run.sh: ${names[$i]} exited; see $VAR/log/${names[$i]}.log" >&2; done
exit 1
