# shellcheck shell=bash
# The users the suites need, made only inside the suites' own namespaces and
# containers, never on the host. Sourced by tests/rig/bare and tests/rig/container.sh.
#
#   rig_users_append PASSWD GROUP [HOME]   add them to copies of /etc/passwd and
#                                          /etc/group (HOME: pbtest's, default /home/pbtest)

# The lingering unprivileged user the suites run phases as.
RIG_USER=pbtest
RIG_UID=4242
# portage's FEATURES=userpriv user, with Gentoo's uid and gid.
RIG_PORTAGE_UID=250

rig_users_append() {
	local passwd=$1 group=$2 home=${3:-/home/$RIG_USER}
	grep -q "^$RIG_USER:" "$passwd" || echo "$RIG_USER:x:$RIG_UID:$RIG_UID::$home:/bin/sh" >>"$passwd"
	grep -q "^$RIG_USER:" "$group" || echo "$RIG_USER:x:$RIG_UID:" >>"$group"
	grep -q "^portage:" "$passwd" ||
		echo "portage:x:$RIG_PORTAGE_UID:$RIG_PORTAGE_UID:portage:/var/empty:/usr/sbin/nologin" >>"$passwd"
	grep -q "^portage:" "$group" || echo "portage:x:$RIG_PORTAGE_UID:" >>"$group"
}
