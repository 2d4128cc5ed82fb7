# Runs ON THE HOST as root, from the root helper (signalcraft-root site-restore, which checked every argument
# and the parked link target): sh restore_site.sh SITE BACKUP LINK PARKED DEFAULT_LINK TEST_CMD
#
# Put the previous Nginx site back (rollback): BACKUP over SITE if there is one; else (after a
# first deploy) remove SITE and its LINK (may be empty: none) and re-enable the stock default
# site whose link target install_site parked in PARKED. Then run TEST_CMD (NGINX_TEST_CMD, one of
# the fixed commands, split into words: no shell) and exit with its status.
site=$1
backup=$2
link=$3
parked=$4
default_link=$5
test_cmd=$6
if [ -e "$backup" ]; then cp -p "$backup" "$site"
else rm -f "$site" ${link:+"$link"}
  if [ -e "$parked" ]; then ln -sfn "$(cat "$parked")" "$default_link" && rm -f "$parked"; fi
fi
# shellcheck disable=SC2086
$test_cmd
