# Runs ON THE HOST as root: sh -c "$(cat)" reload_nginx.sh RELOAD_CMD WAIT_SECONDS
#
# Reload Nginx gracefully and wait until the old worker processes have finished and gone.
# `nginx -s reload` only signals the master: for a moment the old workers still take new
# requests and send them to the old upstream. A handover must not stop that upstream until they
# are gone, so the reload counts as done only then (bounded by WAIT_SECONDS).
# RELOAD_CMD is NGINX_RELOAD_CMD, a plain command (settings allow only words of [A-Za-z0-9_./ =-]),
# run as the shell would run it written here.
reload_cmd=$1
wait_seconds=$2
old=$(pgrep -f '^nginx: worker process' | tr '\n' ' ')
eval "$reload_cmd" || exit $?
i=0; while [ $i -lt $((wait_seconds * 50)) ]; do
  alive=0; for p in $old; do kill -0 $p 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break; sleep 0.02; i=$((i+1))
done
