# Runs ON THE HOST as root, from the root helper (signalcraft-root site-install, which checked every argument):
#   sh install_site.sh SITE LINK PARKED DEFAULT_LINK PORT BACKUP MODE TEST_CMD   (the new site on stdin)
#
# Put the new site in place, enable it (LINK; empty: none), and keep it only if TEST_CMD passes.
# The previous file is kept as SITE.signalcraft-prev (BACKUP=backup) or only for the test
# (BACKUP=replace). With PORT (not '-'), our site is the default server there: the stock default
# site at DEFAULT_LINK, if it is the default server on PORT, is disabled and its link target kept
# in PARKED. On a failed test everything is put back and Nginx's words go to stderr: exit 65. An
# existing SITE that does not start with our header is left alone (exit 66) unless MODE=takeover.
set -u
site=$1 link=$2 parked=$3 default_link=$4 port=$5 backup=$6 mode=$7 test_cmd=$8
header='# Rendered by signalcraft-deploy.'
if [ "$backup" = backup ]; then prev="$site.signalcraft-prev"; else prev="$site.signalcraft-tmpprev"; fi
mkdir -p "$(dirname "$site")"
if [ "$mode" != takeover ] && [ -s "$site" ]; then
  case "$(head -n 1 "$site")" in "$header"*) ;; *) exit 66;; esac
fi
if [ -e "$site" ]; then cp -p "$site" "$prev"; had=1; else had=0; fi
umask 077 && cat > "$site.signalcraft-tmp" && chmod 0644 "$site.signalcraft-tmp" && mv -f "$site.signalcraft-tmp" "$site"
linked=0; [ -n "$link" ] && [ ! -e "$link" ] && ln -s "$site" "$link" && linked=1
parked_now=0
if [ "$port" != - ] && [ -L "$default_link" ] && grep -Eq "listen\s+([^;]*:)?$port\s[^;]*default_server" "$default_link"; then
  # noclobber: never written through a symlink the deploy user left in its own folder
  rm -f "$parked" && (set -C; readlink "$default_link" > "$parked") && rm -f "$default_link" && parked_now=1
fi
# shellcheck disable=SC2086  # TEST_CMD is one of the fixed commands (the helper checked it): split into words, no shell
if ! out=$($test_cmd 2>&1); then
  if [ $had = 1 ]; then mv -f "$prev" "$site"; else rm -f "$site"; fi
  [ $linked = 1 ] && rm -f "$link"
  [ $parked_now = 1 ] && ln -s "$(cat "$parked")" "$default_link" && rm -f "$parked"
  printf '%s\n' "$out" >&2; exit 65
fi
exit 0
