# Runs ON THE HOST as the deploy user: sh -c "$(cat)" setup_facts.sh PM2 PYTHON
#
# What `setup` needs to know, in marked sections (@@signalcraft:NAME), parsed by
# host/setup.parse_setup_facts. Read-only: it never starts PM2's daemon (`pm2 --version` would),
# so PM2's version comes from its package.json.
pm2_cmd=$1
python=$2
sec() { printf '\n@@signalcraft:%s\n' "$1"; }
user=$(id -un)
sec user; echo "$user"
sec group; id -gn
sec home; echo "$HOME"
sec pm2_home; echo "${PM2_HOME:-$HOME/.pm2}"
sec sudo; sudo -n true 2>/dev/null && echo yes
sec apt; command -v apt-get >/dev/null 2>&1 && echo yes
sec packages
for p in nginx logrotate; do
  dpkg-query -W -f='${Package} ${db:Status-Status} ${Version}\n' "$p" 2>/dev/null
done
sec commands
for c in nginx logrotate; do
  { command -v "$c" || ls "/usr/sbin/$c"; } >/dev/null 2>&1 && echo "$c"
done
sec venv; "$python" -c 'import venv, ensurepip' >/dev/null 2>&1 && echo yes
sec node; n=$(command -v node 2>/dev/null) && readlink -f "$n"
sec npm; command -v npm 2>/dev/null
sec pm2; p=$(command -v "$pm2_cmd" 2>/dev/null) && p=$(readlink -f "$p") && echo "$p"
if [ -n "$p" ]; then
  top=$(dirname "$(dirname "$p")")
  sec pm2_version; sed -n 's/^  "version": *"\([^"]*\)".*/\1/p' "$top/package.json" 2>/dev/null | head -n 1
  sec template; cat "$top/lib/templates/init-scripts/systemd.tpl" 2>/dev/null
fi
sec systemd_dir; [ -d /etc/systemd/system ] && echo yes
sec systemd_running; [ -d /run/systemd/system ] && echo yes
sec unit; cat "/etc/systemd/system/pm2-$user.service" 2>/dev/null
sec wants; readlink "/etc/systemd/system/multi-user.target.wants/pm2-$user.service" 2>/dev/null
sec logrotate_conf; cat "/etc/logrotate.d/pm2-$user" 2>/dev/null
true
