#!/usr/bin/env bash
# `make deb`: kamailio-mqueue-rs_<version>+kamailio<kamailio version>_<arch>.deb
# for the Kamailio the module was built against, with plain dpkg-deb and
# the files in debian/. It diverts the kamailio package's mqueue.so to
# mqueue-c.so and installs ours in its place (debian/preinst, postrm).
#
# The kamailio version is the dpkg version of the package that owns
# KAMAILIO_BIN (default /usr/sbin/kamailio); KAMAILIO_DEB_VERSION sets it
# for a Kamailio that dpkg does not know. MODDIR is where the module goes
# (default Debian's module directory).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
module=${1:-build/mqueue.so}
[ -f "$module" ] || { echo "deb: $module missing: run make build" >&2; exit 1; }

bin=${KAMAILIO_BIN:-/usr/sbin/kamailio}
kver=${KAMAILIO_DEB_VERSION:-}
if [ -z "$kver" ]; then
  owner=$(dpkg-query -S "$(readlink -f "$bin")" 2>/dev/null | cut -d: -f1 | head -n 1 || true)
  [ -n "$owner" ] || { echo "deb: $bin belongs to no Debian package: set KAMAILIO_DEB_VERSION" >&2; exit 1; }
  kver=$(dpkg-query -W -f='${Version}' "$owner")
fi
ours=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
version="$ours+kamailio$kver"
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
moddir=${MODDIR:-/usr/lib/$multiarch/kamailio/modules}
doc=/usr/share/doc/kamailio-mqueue-rs

stage=$(mktemp -d "$here/build/deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
install -d "$root/DEBIAN" "$root$moddir" "$root$doc/examples" "$root$doc/schema"
install -m 0644 "$module" "$root$moddir/mqueue.so"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root$moddir/mqueue.so"
install -m 0644 README.md "$root$doc/README.md"
install -m 0644 cfg/kamailio.cfg "$root$doc/examples/kamailio.cfg"
install -m 0644 docs/schema/* "$root$doc/schema/"
install -m 0644 debian/copyright "$root$doc/copyright"
sed -e "s|@VERSION@|$version|g" -e "s|@KAMAILIO_VERSION@|$kver|g" debian/changelog \
  | gzip -9n > "$root$doc/changelog.Debian.gz"
chmod 0644 "$root$doc/changelog.Debian.gz"
gzip -9n "$root$doc/README.md"

# Shared libraries the module needs (libc, libgcc), as dpkg-shlibdeps sees them.
mkdir -p "$stage/debian"
printf 'Source: kamailio-mqueue-rs\n\nPackage: kamailio-mqueue-rs\nArchitecture: any\n' > "$stage/debian/control"
shlibs=$(cd "$stage" && dpkg-shlibdeps -O -e"root$moddir/mqueue.so" --ignore-missing-info 2>/dev/null \
  | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || shlibs="libc6"
rm -rf "$stage/debian"

size=$(du -k -s "$root" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@SIZE@|$size|" \
    -e "s|@KAMAILIO_DEP@|kamailio (= $kver)|" -e "s|@SHLIBS@|$shlibs|" debian/control.in > "$root/DEBIAN/control"
for s in preinst postrm; do
  sed -e "s|@MODDIR@|$moddir|g" -e '/#DEBHELPER#/d' "debian/$s" > "$root/DEBIAN/$s"
  chmod 0755 "$root/DEBIAN/$s"
done
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control"
find "$root" -type d -exec chmod 0755 {} +
out="build/kamailio-mqueue-rs_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
