# Copyright 2026 phasebox authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

DESCRIPTION="A package whose test phase fails: emerge must fail as usual"
HOMEPAGE="https://example.invalid/pbprobe"
S="${WORKDIR}"

LICENSE="MIT"
SLOT="0"
KEYWORDS="amd64"
RESTRICT="mirror strip"

src_test() {
	einfo "PBPROBE ${PF} ${EBUILD_PHASE}: failing on purpose"
	false || die "pbprobe-fail: the test suite failed on purpose"
}
