#!/bin/sh
# Build ferry's Debian packages from binaries already built (make deb does
# both). Usage:
#
#   deploy/deb/build.sh OUTDIR VERSION DEBARCH=BINARY...
#   deploy/deb/build.sh --debian-version VERSION
#   deploy/deb/build.sh bin "$(git describe --tags --always --dirty)" \
#       armhf=bin/ferry-linux-armv6 arm64=bin/ferry-linux-arm64
#
# writes OUTDIR/ferry_<debversion>_<debarch>.deb for each pair and prints
# its path. VERSION is a `git describe` string, turned into a Debian
# version here (debian_version; --debian-version only prints that).
# DEB_COMPRESS picks dpkg-deb's compressor (default xz; the tests use
# gzip, which is faster), DEB_MAINTAINER the Maintainer field. Only dpkg-deb and the Go toolchain (for
# the bundled modules' license texts) are needed; no root: file owners in
# the package are root:root through --root-owner-group.
#
# Layout, and why:
#   /usr/bin/ferry                       static binary, 0755
#   /etc/ferry/ferry.yaml                conffile, 0640: may hold secrets;
#   /etc/ferry/users                     conffile, 0640; postinst gives
#                                        both to group ferry
#   /lib/systemd/system/ferry.service    deploy/ferry.service
#   /usr/share/doc/ferry/copyright       ours, then every bundled module's
#   DEBIAN/{control,conffiles,md5sums,postinst,prerm,postrm}
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

# debian_version turns `git describe --tags --always --dirty` output into a
# version dpkg accepts and orders correctly:
#   v1.2.3                 -> 1.2.3
#   v1.2.3-4-gabc1234      -> 1.2.3+4.gabc1234     (after 1.2.3, before 1.2.4)
#   v1.2.3-rc1             -> 1.2.3~rc1            (before 1.2.3)
#   abc1234 (no tag yet)   -> 0.0~git20261125141516.abc1234 (by commit time)
#   dev (no git)           -> 0.0~dev
#   any of them -dirty     -> ...+dirty
debian_version() {
	v=${1#v}
	dirty=
	case $v in *-dirty) dirty=+dirty v=${v%-dirty} ;; esac
	if printf '%s\n' "$v" | grep -Eq '^[0-9a-f]{7,40}$'; then
		# A bare abbreviated hash: no tag yet (it may start with a digit).
		when=$(TZ=UTC0 git -C "$top" log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S 2>/dev/null || echo 0)
		v="0.0~git$when.$v"
	elif printf '%s\n' "$v" | grep -Eq '^[0-9]'; then
		v=$(printf '%s\n' "$v" | sed -E 's/-([0-9]+)-g([0-9a-f]+)$/+\1.g\2/; s/-/~/g')
	else
		v="0.0~$(printf '%s\n' "$v" | tr -c 'A-Za-z0-9.+~\n' '.')" # "dev" and such
	fi
	printf '%s%s\n' "$v" "$dirty"
}

if [ "${1:-}" = --debian-version ] && [ $# -eq 2 ]; then
	debian_version "$2"
	exit 0
fi
if [ $# -lt 3 ]; then
	sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
fi
out=$1
version=$2
shift 2

debver=$(debian_version "$version")
if ! printf '%s\n' "$debver" | grep -Eq '^[0-9][A-Za-z0-9.+~]*$'; then
	echo "build.sh: cannot make a Debian version of $version (got $debver)" >&2
	exit 1
fi

# Reproducible packages: file times and dpkg-deb's archive times are the
# commit's time unless the caller set SOURCE_DATE_EPOCH.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

go=${GO:-go}
modcache=$("$go" env GOMODCACHE)
goroot=$("$go" env GOROOT)

# licenses BINARY prints, after the static copyright text, the Go license
# and every module `go version -m` says is linked into BINARY, with its
# LICENSE, COPYING and NOTICE files. A module without any is an error: it
# would be shipped without the notice its license asks for.
licenses() {
	cat "$here/copyright"
	echo
	# A "=>" line replaces the "dep" line before it; a replacement by a
	# directory of this repository (third_party/) keeps the module's name
	# and version, and adds the directory, where its license is.
	"$go" version -m "$1" | awk '
		$1 == "dep" { m[++n] = $2 " " $3 }
		$1 == "=>" && $2 ~ /^\.\.?\// { m[n] = m[n] " " $2; next }
		$1 == "=>" { m[n] = $2 " " $3 }
		END { for (i = 1; i <= n; i++) print m[i] }' >"$tmp/mods"
	echo " Go $("$go" version -m "$1" | awk 'NR == 1 { print $2 }') (runtime and standard library)"
	sed 's/^/ /' "$tmp/mods"
	echo
	echo "-------- Go: $goroot/LICENSE"
	cat "$goroot/LICENSE"
	while read -r path ver local; do
		if [ -n "$local" ]; then
			dir="$top/$local"
		else
			# The module cache escapes capitals: DataDog -> !data!dog.
			dir="$modcache/$(printf '%s' "$path" | sed 's/[A-Z]/!&/g' | tr '[:upper:]' '[:lower:]')@$ver"
		fi
		found=
		for f in "$dir"/LICENSE* "$dir"/LICENCE* "$dir"/COPYING* "$dir"/NOTICE*; do
			[ -f "$f" ] || continue
			found=1
			echo
			echo "-------- $path $ver: $(basename "$f")"
			cat "$f"
		done
		if [ -z "$found" ]; then
			echo "build.sh: no license file for $path $ver in $dir (go mod download $path@$ver?)" >&2
			return 1
		fi
	done <"$tmp/mods"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"

for pair in "$@"; do
	arch=${pair%%=*}
	bin=${pair#*=}
	if [ "$arch" = "$pair" ] || [ ! -f "$bin" ]; then
		echo "build.sh: want DEBARCH=BINARY with an existing binary, got $pair" >&2
		exit 2
	fi
	root="$tmp/ferry_${debver}_$arch"
	rm -rf "$root"
	mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/etc/ferry" "$root/lib/systemd/system" "$root/usr/share/doc/ferry"
	install -m 0755 "$bin" "$root/usr/bin/ferry"
	install -m 0640 "$here/ferry.yaml" "$root/etc/ferry/ferry.yaml"
	install -m 0640 "$here/users" "$root/etc/ferry/users"
	install -m 0644 "$top/deploy/ferry.service" "$root/lib/systemd/system/ferry.service"
	licenses "$bin" >"$root/usr/share/doc/ferry/copyright"
	chmod 0644 "$root/usr/share/doc/ferry/copyright"
	for s in postinst prerm postrm; do
		install -m 0755 "$here/$s" "$root/DEBIAN/$s"
	done
	printf '%s\n' /etc/ferry/ferry.yaml /etc/ferry/users >"$root/DEBIAN/conffiles"
	(cd "$root" && find usr lib -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
	size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
	cat >"$root/DEBIAN/control" <<CONTROL
Package: ferry
Version: $debver
Architecture: $arch
Maintainer: ${DEB_MAINTAINER:-ferry maintainers <maintainers@ferry.invalid>}
Installed-Size: $size
Depends: passwd
Section: net
Priority: optional
Homepage: https://github.com/ferrygw/ferry
Description: IoT edge event gateway: local MQTT broker, durable buffer, cloud uplink
 ferry runs on the board, between the sensors and the cloud: an embedded
 MQTT broker for local sensors, a durable store-and-forward log (bbolt)
 and an uplink to a cloud MQTT broker (AWS IoT Core, Azure IoT Hub, EMQX,
 HiveMQ, Mosquitto). An event a sensor was told is safe reaches the
 cloud, in order, across outages, kill -9 and power loss. It also reads
 I2C, 1-Wire and GPIO sensors wired to the board and runs rules pipelines
 (filters, windows, detectors) on the way.
 .
 The service runs as the system user ferry, sandboxed by systemd, with
 its config in /etc/ferry and its data in /var/lib/ferry.
CONTROL
	chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
	find "$root" -type d -exec chmod 0755 {} +
	find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	deb="$out/ferry_${debver}_$arch.deb"
	dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" --build "$root" "$deb" >/dev/null
	echo "$deb"
done
