# Runs ON THE HOST as the deploy user: sh -c "$(cat)" stop_pid.sh PID TENTHS [OWNER]
#
# Stop a process PM2 does not know (a bare `python app.py &`): SIGTERM, then wait up to TENTHS
# tenths of a second for it to exit, then SIGKILL. A process already gone is not an error.
# With OWNER, a process of any other user is left alone (exit 3): a takeover stops only the
# deploy user's own process, even if its pid was given to another one since the plan was made.
pid=$1
tenths=$2
owner=${3-}
# 0 or 1 would signal the whole process group, or init: never a server to stop.
case $pid in ''|*[!0-9]*|0|1) echo "stop_pid.sh: refusing to stop pid '$pid'" >&2; exit 2 ;; esac
if [ -n "$owner" ]; then
  user=$(stat -c %U /proc/$pid 2>/dev/null) || exit 0
  [ "$user" = "$owner" ] || { echo "stop_pid.sh: pid $pid is $user's, not $owner's: left alone" >&2; exit 3; }
fi
kill -TERM $pid 2>/dev/null || exit 0
i=0; while kill -0 $pid 2>/dev/null && [ $i -lt $tenths ]; do sleep 0.1; i=$((i+1)); done
kill -KILL $pid 2>/dev/null; true
