# Copyright 2026 phasebox authors
# Distributed under the terms of the GNU General Public License v2

# @ECLASS: pbprobe.eclass
# @BLURB: checks of what a phase sees of the host's network and IPC
# @DESCRIPTION:
# tests/portage/emerge-probe listens on the host's 127.0.0.1 and creates a SysV shm
# segment on the host, and names them in make.conf (PBPROBE_PORT, PBPROBE_SHMID).
# Each check dies with a clear message when it fails, and prints a "PBPROBE <PF> <phase>"
# line when it passes: the test looks for that line to know that the check ran.
# Only bash builtins, /proc and iproute2's `ip`.

# @FUNCTION: pbprobe_mark
# @USAGE: <text>
# @DESCRIPTION: Print a marker line for the test, with the package, phase and user id.
pbprobe_mark() {
	einfo "PBPROBE ${PF} ${EBUILD_PHASE} uid=${EUID}: $*"
}

_pbprobe_reaches_listener() {
	[[ -n ${PBPROBE_PORT} ]] || die "PBPROBE_PORT is not set in make.conf"
	( exec 3<>"/dev/tcp/127.0.0.1/${PBPROBE_PORT}" ) 2>/dev/null
}

_pbprobe_sees_shm() {
	[[ -n ${PBPROBE_SHMID} ]] || die "PBPROBE_SHMID is not set in make.conf"
	local id
	while read -r _ id _; do
		[[ ${id} == "${PBPROBE_SHMID}" ]] && return 0
	done < /proc/sysvipc/shm
	return 1
}

# @FUNCTION: pbprobe_shared_network
# @DESCRIPTION: Die unless the host's listener on 127.0.0.1 answers.
pbprobe_shared_network() {
	_pbprobe_reaches_listener ||
		die "${EBUILD_PHASE}: cannot reach the host's listener on 127.0.0.1:${PBPROBE_PORT}, but this phase must share the host's network"
	pbprobe_mark "shared network: reached the host's listener on 127.0.0.1:${PBPROBE_PORT}"
}

# @FUNCTION: pbprobe_shared_ipc
# @DESCRIPTION: Die unless the host's SysV shm segment is visible.
pbprobe_shared_ipc() {
	_pbprobe_sees_shm ||
		die "${EBUILD_PHASE}: cannot see the host's SysV shm segment ${PBPROBE_SHMID}, but this phase must share the host's IPC"
	pbprobe_mark "shared IPC: sees the host's shm segment ${PBPROBE_SHMID}"
}

# @FUNCTION: pbprobe_private_network
# @DESCRIPTION:
# Die unless the phase has a network of its own as portage's network-sandbox makes it:
# the host's listener unreachable, only lo, with 127.0.0.1/8, ::1, 10.0.0.1/8 and
# fd::1/8, and the hostname localhost.
pbprobe_private_network() {
	if _pbprobe_reaches_listener; then
		die "${EBUILD_PHASE}: reached the host's listener on 127.0.0.1:${PBPROBE_PORT}: the network is not private"
	fi
	local name rest links=()
	{
		read -r && read -r # two header lines
		while read -r name rest; do links+=("${name%:}"); done
	} < /proc/net/dev
	[[ ${links[*]} == lo ]] ||
		die "${EBUILD_PHASE}: the network interfaces are '${links[*]}', expected only lo"
	local addrs address
	addrs=$(ip -o addr show dev lo) || die "${EBUILD_PHASE}: ip -o addr show dev lo failed"
	for address in "inet 127.0.0.1/8" "inet 10.0.0.1/8" "inet6 ::1/128" "inet6 fd::1/8"; do
		[[ ${addrs} == *" ${address} "* ]] ||
			die "${EBUILD_PHASE}: lo has no ${address}; it has: ${addrs}"
	done
	local hostname
	read -r hostname < /proc/sys/kernel/hostname
	[[ ${hostname} == localhost ]] ||
		die "${EBUILD_PHASE}: the hostname is '${hostname}', expected localhost"
	pbprobe_mark "private network: only lo with 127.0.0.1/8 ::1 10.0.0.1/8 fd::1/8, hostname localhost, the host's listener unreachable"
}

# @FUNCTION: pbprobe_private_ipc
# @DESCRIPTION: Die if the host's SysV shm segment is visible.
pbprobe_private_ipc() {
	if _pbprobe_sees_shm; then
		die "${EBUILD_PHASE}: sees the host's SysV shm segment ${PBPROBE_SHMID}: IPC is not private"
	fi
	pbprobe_mark "private IPC: the host's shm segment ${PBPROBE_SHMID} is invisible"
}

# @FUNCTION: pbprobe_start_daemon
# @DESCRIPTION:
# Leave a process behind, as a test suite's forgotten server would: a copy of sleep
# named pbprobe-daemon. Returns once it runs under that name.
pbprobe_start_daemon() {
	cp /bin/sleep "${T}/pbprobe-daemon" || die "cannot copy /bin/sleep"
	"${T}/pbprobe-daemon" 3600 < /dev/null > /dev/null 2>&1 &
	local pid=$! comm=
	while [[ ${comm} != pbprobe-daemon ]]; do
		read -r comm < "/proc/${pid}/comm" || die "pbprobe-daemon (pid ${pid}) did not start"
	done
	pbprobe_mark "left pbprobe-daemon (pid ${pid}) running"
}
