# Runs ON THE HOST as root, for the deploy user USER (an admin's `setup`):
#   sudo -n env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin sh -c "$(cat)" setup_facts.sh PM2 PYTHON USER
#
# What `setup` needs to know, in marked sections (@@signalcraft:NAME), parsed by
# host/setup.parse_setup_facts. Read-only, and it runs no program of USER's as root: Node.js, npm and
# PM2 are looked up on root's fixed PATH above (never the user's ~/.bashrc or PATH), and each real
# path comes with the owner and mode of the file and of every folder above it (`owners_*`: "uid mode
# path" lines), which setup checks before it names the path in a unit root installs. PYTHON runs as
# USER (runuser). PM2's daemon is never started (`pm2 --version` would), so its version comes from
# its package.json. APP is the apps' own account (APP_USER; USER's own name when the apps run as USER): its
# passwd entry, whether its password is locked, its groups, what sudo allows it, its boot unit (and whether systemd
# runs it), its log rotation, and root's record of USER's app users.
pm2_cmd=$1
python=$2
user=$3
app=${4:-$3}
sec() { printf '\n@@signalcraft:%s\n' "$1"; }
owners() {  # the file and every folder above it, up to /
  f=$1
  while :; do
    stat -c '%u %a %n' "$f" 2>/dev/null || echo "? ? $f"
    [ "$f" = / ] && break
    f=$(dirname "$f")
  done
}
sec root; [ "$(id -u)" = 0 ] && echo yes
entry=$(getent passwd "$user" 2>/dev/null)
[ -n "$entry" ] || exit 0
home=$(printf '%s\n' "$entry" | cut -d: -f6)
sec user; echo "$user"
sec group; id -gn "$user"
sec home; echo "$home"
sec pm2_home; echo "${home%/}/.pm2"
sec apt; command -v apt-get >/dev/null 2>&1 && echo yes
sec packages
for p in nginx logrotate; do
  dpkg-query -W -f='${Package} ${db:Status-Status} ${Version}\n' "$p" 2>/dev/null
done
sec commands
for c in nginx logrotate; do
  { command -v "$c" || ls "/usr/sbin/$c"; } >/dev/null 2>&1 && echo "$c"
done
sec venv; (cd / && runuser -u "$user" -- "$python" -c 'import venv, ensurepip') >/dev/null 2>&1 && echo yes
sec node; n=$(command -v node 2>/dev/null) && n=$(readlink -f "$n") && echo "$n"
[ -n "$n" ] && { sec owners_node; owners "$n"; }
sec npm; command -v npm 2>/dev/null
sec pm2; p=$(command -v "$pm2_cmd" 2>/dev/null) && p=$(readlink -f "$p") && echo "$p"
if [ -n "$p" ]; then
  sec owners_pm2; owners "$p"
  sec pm2_version; sed -n 's/^  "version": *"\([^"]*\)".*/\1/p' "$(dirname "$(dirname "$p")")/package.json" 2>/dev/null | head -n 1
fi
sec systemd_dir; [ -d /etc/systemd/system ] && echo yes
sec systemd_running; [ -d /run/systemd/system ] && echo yes
sec unit; cat "/etc/systemd/system/pm2-$user.service" 2>/dev/null
sec wants; readlink "/etc/systemd/system/multi-user.target.wants/pm2-$user.service" 2>/dev/null
sec logrotate_conf; cat "/etc/logrotate.d/pm2-$user" 2>/dev/null
sec user_groups; id -Gn "$user"
sec acl; command -v setfacl >/dev/null 2>&1 && echo yes
# NGINX_DRAIN_SECONDS: setup's main-context file, and a worker_shutdown_timeout of nginx.conf's own
sec nginx_drain; cat /etc/nginx/modules-enabled/99-signalcraft-drain.conf 2>/dev/null
sec nginx_conf_drain; grep -s '^[[:space:]]*worker_shutdown_timeout' /etc/nginx/nginx.conf | head -n 1
sec app_records; cat "/var/lib/signalcraft-deploy/app-users/$user.json" 2>/dev/null
# Every other deploy user's record, one per line: an apps' account serves one deploy user only.
sec other_app_records; for f in /var/lib/signalcraft-deploy/app-users/*.json; do
  [ -f "$f" ] && [ "$f" != "/var/lib/signalcraft-deploy/app-users/$user.json" ] && { tr -d '\n' < "$f"; echo; }; done; true
[ "$app" = "$user" ] && exit 0
sec app_entry; getent passwd "$app" 2>/dev/null
if getent passwd "$app" >/dev/null 2>&1; then
  sec app_password; passwd -S "$app" 2>/dev/null | cut -d' ' -f2
  sec app_groups; id -Gn "$app"
  sec app_sudo; sudo -n -l -U "$app" 2>&1 | tail -n 1
fi
sec app_unit; cat "/etc/systemd/system/pm2-$app.service" 2>/dev/null
sec app_wants; readlink "/etc/systemd/system/multi-user.target.wants/pm2-$app.service" 2>/dev/null
sec app_logrotate_conf; cat "/etc/logrotate.d/pm2-$app" 2>/dev/null
# Whether systemd runs APP's PM2 (its unit active), and whether a PM2 daemon of APP runs at all (one a deploy
# started over SSH before the unit was: systemd cannot take it over, the next boot does). From /proc only.
sec app_active; [ -d /run/systemd/system ] && systemctl is-active "pm2-$app.service" 2>/dev/null
sec app_daemon; pgrep -u "$app" -f '^PM2 v[^ ]*: God Daemon' 2>/dev/null | head -n 1
true
