# Copyright 2026 phasebox authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

inherit pbprobe

DESCRIPTION="A package whose tests need the host's network (granted in phasebox's config)"
HOMEPAGE="https://example.invalid/pbprobe"
S="${WORKDIR}"

LICENSE="MIT"
SLOT="0"
KEYWORDS="amd64"
RESTRICT="mirror strip"

src_compile() {
	pbprobe_private_network
	pbprobe_private_ipc
}

src_test() {
	pbprobe_shared_network
	pbprobe_private_ipc
}
