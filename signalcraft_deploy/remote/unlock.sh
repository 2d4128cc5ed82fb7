# Runs ON THE HOST: sh -c "$(cat)" unlock.sh STATE_DIR FORCE
#
# Who holds the deploy lock, and (FORCE=1) breaking it. Prints one of:
#   FREE                      no deploy holds the lock and no record is left
#   STALE / <lock.json>       the flock is free but a record was left (a deploy that died); FORCE removes it
#   HELD / <lock.json> / PID <pid>   a deploy holds the flock; with FORCE then one of:
#     BROKEN                  its lock holder (a process running this tool's lock script) was stopped
#     NOTOURS <pid>           lock.pid does not name this tool's lock holder: nothing is killed (exit 4)
# Only a process whose command line carries the lock script's marker and whose working directory
# is this state folder is ever signalled: a pid left in lock.pid after a reboot may be anyone's.
d=$1
force=$2
cd "$d" 2>/dev/null || { echo FREE; exit 0; }
if flock -n lock true 2>/dev/null; then
    if [ -s lock.json ]; then
        echo STALE; cat lock.json; echo
        if [ "$force" = 1 ]; then rm -f lock.json lock.pid; fi
    else
        echo FREE
    fi
    exit 0
fi
pid=$(cat lock.pid 2>/dev/null)
echo HELD; cat lock.json 2>/dev/null; echo; echo "PID ${pid:-?}"
[ "$force" = 1 ] || exit 0
case $pid in ''|*[!0-9]*|0|1) echo "NOTOURS ${pid:-none}"; exit 4 ;; esac
if ! tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'signalcraft-deploy-lock' \
        || [ "$(readlink "/proc/$pid/cwd")" != "$(pwd -P)" ]; then
    echo "NOTOURS $pid"; exit 4
fi
pkill -P "$pid"; kill "$pid" 2>/dev/null
i=0
until flock -n lock true 2>/dev/null || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done
rm -f lock.json lock.pid
echo BROKEN
