# bench/proc.sh: process handling shared by bench/run.sh and bench/shared.sh (sourced, not
# run). Every process started with `start` or `fg` is stopped on exit, whatever ends the
# run; the logs of the last run are copied to $LOGDIR; a watchdog aborts a run that
# overruns $TIMEOUT, so a hung tool cannot hang `make bench`.
#
# The caller sets before sourcing: NAME (its message prefix), TMP (its mktemp directory),
# LOGDIR, TIMEOUT (seconds), PY and B (Debian's python3, the bench directory). It gets:
# start, fg, alive, stop_pid, wait_port, kv, the variables PIDS, LAST, FAILED, and the
# pinning choice (BENCH_PIN): NCPU, PIN, ON_PROXY and ON_LOAD (taskset prefixes or empty).

PIDS=""
WATCHDOG=""
FAILED=0

# stop_pid PID: TERM, up to 5 s, then KILL; reaps it
stop_pid() {
  [ -n "$1" ] || return 0
  if kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$1" 2>/dev/null
  fi
  wait "$1" 2>/dev/null
  forget "$1"
  return 0
}

# forget PID: no longer ours to stop (reaped: its number may be reused)
forget() {
  n=""
  for p in $PIDS; do [ "$p" = "$1" ] || n="$n $p"; done
  PIDS=$n
}

cleanup() {
  trap - EXIT INT TERM
  for p in $PIDS; do stop_pid "$p"; done
  [ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null && wait "$WATCHDOG" 2>/dev/null
  mkdir -p "$LOGDIR"
  rm -f "$LOGDIR/"*
  for f in "$TMP"/*.err "$TMP"/*.out "$TMP"/*.kv "$TMP"/*.yaml "$TMP"/*.conf; do
    [ -f "$f" ] && cp "$f" "$LOGDIR/"
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
# fd 3: the script's stderr, also from inside a function whose output is redirected
exec 3>&2
trap 'echo "$NAME: interrupted" >&3; exit 130' INT TERM

# start NAME CMD...: run in the background, stdout/stderr to $TMP/NAME.out/.err
start() {
  name=$1; shift
  "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  LAST=$!
  PIDS="$LAST $PIDS"
}

# fg CMD...: run CMD and wait for it. In the background with `wait`, because sh runs a
# trap only once the foreground command has finished, while `wait` returns at once.
fg() {
  "$@" &
  FG=$!
  PIDS="$FG $PIDS"
  wait "$FG"
  rc=$?
  forget "$FG"
  return $rc
}

# alive PID NAME: fails (and says so) when the process has gone
alive() {
  if ! kill -0 "$1" 2>/dev/null; then
    wait "$1" 2>/dev/null; rc=$?
    forget "$1"
    echo "$NAME: $2 (pid $1) died, exit status $rc; last lines of its stderr:" >&2
    tail -n 20 "$TMP/$2.err" >&2 2>/dev/null
    FAILED=1
    return 1
  fi
  return 0
}

# wait_port PORT WHAT: up to 10 s for something to listen
wait_port() { "$PY" "$B/util.py" wait-port "$1" 10 || { echo "$NAME: nothing listens on port $1 ($2)" >&2; FAILED=1; return 1; }; }
kv() { printf '%s=%s\n' "$2" "$3" >>"$TMP/$1.kv"; }        # kv FILE KEY VALUE

(
  trap 'kill "$s" 2>/dev/null; exit 0' TERM
  sleep "$TIMEOUT" & s=$!
  wait "$s" && echo "$NAME: still running after ${TIMEOUT}s: aborting" >&3 && kill -TERM $$
) &
WATCHDOG=$!

# Pinning: the proxy under test on CPU 0, the load on CPU 1 (default with >= 2 CPUs).
NCPU=$(nproc 2>/dev/null || echo 1)
PIN=${BENCH_PIN:-}
if [ -z "$PIN" ]; then
  if [ "$NCPU" -ge 2 ] && command -v taskset >/dev/null 2>&1; then PIN=1; else PIN=0; fi
fi
if [ "$PIN" = 1 ]; then
  ON_PROXY="taskset -c 0"; ON_LOAD="taskset -c 1"
else
  ON_PROXY=""; ON_LOAD=""
fi
