# Copyright 2026 phasebox authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit pbprobe

DESCRIPTION="Checks that setup shares the host's network and IPC and the build does not"
HOMEPAGE="https://example.invalid/pbprobe"
S="${WORKDIR}"

LICENSE="MIT"
SLOT="0"
KEYWORDS="amd64"
RESTRICT="mirror strip"

pkg_setup() {
	pbprobe_shared_network
	pbprobe_shared_ipc
}

src_unpack() {
	printf '#!/bin/sh\necho "hello from @PF@"\n' > pbprobe-hello.in || die
	echo "pbprobe data" > pbprobe.data || die
}

src_compile() {
	pbprobe_private_network
	pbprobe_private_ipc
	sed "s/@PF@/${PF}/" pbprobe-hello.in > pbprobe-hello || die
	chmod +x pbprobe-hello || die
}

src_test() {
	pbprobe_private_network
	pbprobe_private_ipc
	[[ $(./pbprobe-hello) == "hello from ${PF}" ]] || die "pbprobe-hello does not greet"
	pbprobe_start_daemon
}

src_install() {
	dobin pbprobe-hello
	insinto /usr/share/pbprobe
	doins pbprobe.data
}
