# shellcheck shell=bash
# Boot a real systemd in systemd-nspawn from this machine's own /usr (nothing is
# downloaded), and run commands inside it. Sourced by tests/run and bench/run.
#
#   rig_boot            boot; sets RIG_DIR (container root) and RIG_PID (its PID 1)
#   rig_exec CMD...     run CMD as root inside the container
#   rig_exec_user CMD...  run CMD as the lingering test user inside the container
#   rig_stop            power off and clean up (installed as an EXIT trap by rig_boot)

RIG_NAME=phasebox-rig-$$
RIG_CHECKOUT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/rig/users.sh
source "$RIG_CHECKOUT/tests/rig/users.sh"

rig_log() { printf 'rig: %s\n' "$*" >&2; }

# Wait for a condition, re-checking every 50 ms, failing after $1 seconds.
rig_wait() {
	local deadline=$((SECONDS + $1)) what=$2
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			rig_log "timed out waiting for: $what"
			return 1
		fi
		sleep 0.05
	done
}

rig_boot() {
	command -v systemd-nspawn >/dev/null || { rig_log "systemd-nspawn is missing (apt-get install systemd-container)"; return 1; }
	RIG_DIR=$(mktemp -d /var/tmp/phasebox-rig.XXXXXX)
	chmod 0755 "$RIG_DIR" # it becomes the container's /: services drop privileges
	mkdir -p "$RIG_DIR"/{usr,dev,proc,sys,run,tmp,root,var,opt/phasebox}
	cp -a /etc "$RIG_DIR/etc"
	: >"$RIG_DIR/etc/machine-id"
	local l
	for l in bin sbin lib lib64; do ln -s "usr/$l" "$RIG_DIR/$l"; done
	# Services this machine happens to have enabled that a test systemd doesn't need.
	for l in postgresql.service postgresql@.service e2scrub_reap.service systemd-timesyncd.service \
		apt-daily.timer apt-daily-upgrade.timer man-db.timer; do
		ln -sf /dev/null "$RIG_DIR/etc/systemd/system/$l"
	done
	mount --bind /usr "$RIG_DIR/usr"
	mount -o remount,bind,ro "$RIG_DIR/usr"
	trap rig_stop EXIT
	# --private-network gives the container CAP_NET_ADMIN, which PrivateNetwork= needs
	# to bring lo up; --register=no/--keep-unit because the host has no systemd.
	# The checkout is visible read-only at the same path (tests read dbus-interfaces/).
	systemd-nspawn -D "$RIG_DIR" --register=no --keep-unit --private-network -M "$RIG_NAME" \
		--bind-ro="$RIG_CHECKOUT" --console=read-only -b >"$RIG_DIR.log" 2>&1 &
	RIG_NSPAWN=$!
	rig_wait 30 "the container's systemd" rig_find_pid1
	RIG_PID=$(rig_find_pid1)
	rig_wait 30 "systemd's control socket" rig_exec test -S /run/systemd/private
	# is-system-running --wait returns when boot is over; degraded is fine here.
	local state
	state=$(timeout 60 nsenter -t "$RIG_PID" -m -u -i -n -p -C systemctl is-system-running --wait 2>&1 || true)
	case $state in
	running | degraded) rig_log "systemd $(rig_exec systemctl --version | head -1 | cut -d' ' -f2) booted ($state) as PID $RIG_PID" ;;
	*)
		rig_log "boot failed (state: $state); console log:"
		tail -30 "$RIG_DIR.log" >&2
		return 1
		;;
	esac
	# The container's network has only lo: add a link with addresses of its own, so
	# "only lo inside" and "the host's other addresses are unreachable" are real tests.
	rig_exec ip link add pbrig0 type veth peer name pbrig1
	rig_exec ip link set pbrig0 up
	rig_exec ip addr add 198.51.100.1/24 dev pbrig0
	rig_exec ip -6 addr add 2001:db8::1/64 dev pbrig0 nodad
	# The users go into the container's own copy of /etc, never the host's.
	rig_exec useradd -u "$RIG_UID" -U "$RIG_USER"
	rig_exec useradd --system -u "$RIG_PORTAGE_UID" -U -d /var/empty -M -s /usr/sbin/nologin portage
	rig_exec install -d -o "$RIG_UID" -g "$RIG_UID" -m 0755 "/home/$RIG_USER"
	rig_exec loginctl enable-linger "$RIG_USER"
	rig_wait 30 "the user manager's bus" rig_exec test -S "/run/user/$RIG_UID/bus"
}

rig_find_pid1() {
	local pid
	pid=$(pgrep -P "$RIG_NSPAWN" -x systemd) || return 1
	[[ -n $pid ]] && echo "$pid"
}

rig_exec() {
	nsenter -t "$RIG_PID" -m -u -i -n -p -C -- "$@"
}

rig_exec_user() {
	rig_exec setpriv --reuid="$RIG_UID" --regid="$RIG_UID" --init-groups -- \
		env HOME="/home/$RIG_USER" USER="$RIG_USER" XDG_RUNTIME_DIR="/run/user/$RIG_UID" \
		DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/$RIG_UID/bus" "$@"
}

# Copy files into the container's /opt/phasebox (readable by the test user).
rig_install() {
	install -m 0755 "$@" "$RIG_DIR/opt/phasebox/"
}

rig_stop() {
	[[ -n ${RIG_NSPAWN:-} ]] || return 0
	if kill -0 "$RIG_NSPAWN" 2>/dev/null; then
		rig_exec systemctl poweroff >/dev/null 2>&1 || true
		timeout 20 tail --pid="$RIG_NSPAWN" -f /dev/null || kill -9 "$RIG_NSPAWN" 2>/dev/null || true
	fi
	wait "$RIG_NSPAWN" 2>/dev/null || true
	umount "$RIG_DIR/usr" 2>/dev/null || umount -l "$RIG_DIR/usr" 2>/dev/null || true
	if ! mountpoint -q "$RIG_DIR/usr"; then rm -rf "$RIG_DIR" "$RIG_DIR.log"; fi
	RIG_NSPAWN=
}
