#!/bin/sh
# Entry point of the backupverify image: gives the current user a passwd
# entry if it has none, then runs backupverify with the container's arguments.
#
# initdb and postgres look their own user up (getpwuid) and refuse to run when
# it has no passwd entry. The image's user 10001 has one, but OpenShift, and
# `docker run --user N`, run the container as a UID that /etc/passwd does not
# know, and the embedded scratch cluster runs as that same UID. As the
# official postgres image does, nss_wrapper (https://cwrap.org/nss_wrapper.html)
# then serves a passwd and a group file of our own to PostgreSQL's programs,
# preloaded through LD_PRELOAD; backupverify itself is a static Go binary and
# looks no user up.
set -eu

uid="$(id -u)"
if ! getent passwd "$uid" >/dev/null 2>&1; then
	wrapper=""
	for so in /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so /lib/*/libnss_wrapper.so; do
		if [ -s "$so" ]; then
			wrapper="$so"
			break
		fi
	done
	if [ -z "$wrapper" ]; then
		echo "docker-entrypoint: UID $uid has no passwd entry and libnss_wrapper.so is not installed: embedded scratch drills will fail (initdb needs a user name)" >&2
	elif ! nss="$(mktemp -d "${TMPDIR:-/tmp}/nss_wrapper.XXXXXX")"; then
		echo "docker-entrypoint: UID $uid has no passwd entry and ${TMPDIR:-/tmp} is not writable: embedded scratch drills will fail (initdb needs a user name)" >&2
	else
		gid="$(id -g)"
		NSS_WRAPPER_PASSWD="$nss/passwd"
		NSS_WRAPPER_GROUP="$nss/group"
		# Everyone else keeps their entries; the name backupverify moves to this UID.
		grep -v '^backupverify:' /etc/passwd >"$NSS_WRAPPER_PASSWD" || true
		printf 'backupverify:x:%s:%s:backupverify:%s:/usr/sbin/nologin\n' \
			"$uid" "$gid" "${HOME:-/var/lib/backupverify}" >>"$NSS_WRAPPER_PASSWD"
		cat /etc/group >"$NSS_WRAPPER_GROUP"
		if ! getent group "$gid" >/dev/null 2>&1; then
			printf 'backupverify-%s:x:%s:\n' "$gid" "$gid" >>"$NSS_WRAPPER_GROUP"
		fi
		export LD_PRELOAD="$wrapper${LD_PRELOAD:+ $LD_PRELOAD}" NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
	fi
fi

exec backupverify "$@"
