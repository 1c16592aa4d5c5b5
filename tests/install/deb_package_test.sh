#!/usr/bin/env bash
# The .deb (CPack, deploy/CMakeLists.txt) installs and removes cleanly.
#   scratch (ctest): dpkg --root into an empty folder, maintainer scripts run outside
#     it (--force-script-chrootless, $DPKG_ROOT set: they must leave the host alone);
#     the Depends are checked against the host's packages instead (--force-depends).
#   system (.ci/run, as root on a throwaway Debian machine, with or without systemd):
#     dpkg -i for real; the installed broker answers --version from /usr/bin.
# Both: the package's files are what the install tree test expects under /usr and /etc,
# the unit points at /usr/bin and /etc, `dpkg -r` leaves only the conffile
# (/etc/gpushare/broker.toml), and `dpkg -P` leaves nothing of the package.
# Usage: deb_package_test.sh scratch|system BUILD_DIR VERSION
set -euo pipefail
mode=$1 build=$2 version=$3
work=$(mktemp -d /tmp/gpushare-deb-XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

(cd "$build" && cpack -G DEB -B "$work/out" >"$work/cpack.log" 2>&1) || { cat "$work/cpack.log"; fail "cpack -G DEB failed"; }
deb=$(ls "$work"/out/gpushare_"$version"_*.deb) || fail "no gpushare_${version}_*.deb in $(ls "$work/out")"
[[ $(dpkg-deb -f "$deb" Package) == gpushare && $(dpkg-deb -f "$deb" Version) == "$version" ]] ||
  fail "control: Package/Version are $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/gpushare/broker.toml ||
  fail "/etc/gpushare/broker.toml is not a conffile"

# Every dependency dpkg-shlibdeps found names a package this (build) host has installed.
depends=$(dpkg-deb -f "$deb" Depends)
for dep in libsystemd0 libc6; do [[ $depends == *"$dep"* ]] || fail "Depends lacks $dep: $depends"; done
IFS=',' read -r -a deps <<<"$depends"
for d in "${deps[@]}"; do
  name=$(echo "$d" | sed -E 's/^ *([^ (]+).*/\1/')
  dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q 'install ok installed' || fail "Depends names $name, not installed here"
done

# The package's files, against the same list the install tree test checks.
files=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\./||' | sort)
for f in usr/bin/gpushare-broker usr/bin/gpushare-smi usr/bin/gpushare-run usr/bin/gpushare-doctor usr/lib/libgpushare.so \
         usr/lib/systemd/system/gpushare-broker.service etc/gpushare/broker.toml usr/share/man/man8/gpushare-broker.8 \
         usr/share/bash-completion/completions/gpushare-smi usr/share/doc/gpushare/install.md; do
  grep -qx "$f" <<<"$files" || fail "the package lacks $f"
done
stray=$(grep -vE '^(usr/bin|usr/lib|usr/share/(man|bash-completion|doc)|etc/gpushare)/' <<<"$files" || true)
[[ -z $stray ]] || fail "files outside the product's folders: $stray"
grep -qE "(^|/)(libcuda|libnvidia-ml|libamdhip64)[.]so" <<<"$files" && fail "simgpu's libraries are in the package"

if [[ $mode == scratch ]]; then
  root=$work/root
  mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/log"
  touch "$root/var/lib/dpkg/status"
  dpkg_() { dpkg --root="$root" --force-script-chrootless --force-depends --force-not-root "$@"; }
elif [[ $mode == system ]]; then
  [[ $(id -u) == 0 ]] || fail "system mode installs for real: run it as root"
  dpkg-query -W gpushare >/dev/null 2>&1 && fail "gpushare is already installed here; system mode needs a machine without it"
  root=""
  dpkg_() { dpkg "$@"; }
else
  fail "mode must be scratch or system, not $mode"
fi

dpkg_ -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i failed"; }
for f in $files; do [[ -e $root/$f ]] || fail "dpkg -i did not install /$f"; done
grep -qx 'ExecStart=/usr/bin/gpushare-broker --config /etc/gpushare/broker.toml --socket /run/gpushare/broker.sock' \
  "$root/usr/lib/systemd/system/gpushare-broker.service" || fail "the packaged unit does not run /usr/bin/gpushare-broker with /etc's config"
if [[ $mode == system ]]; then
  [[ $(/usr/bin/gpushare-broker --version) == "gpushare-broker (gpushare) $version" ]] || fail "/usr/bin/gpushare-broker --version"
fi

dpkg_ -r gpushare >>"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -r failed"; }
for f in $files; do
  if [[ $f == etc/gpushare/broker.toml ]]; then
    [[ -e $root/$f ]] || fail "dpkg -r removed the conffile /$f (it is kept until purge)"
  else
    [[ ! -e $root/$f ]] || fail "dpkg -r left /$f"
  fi
done
dpkg_ -P gpushare >>"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -P failed"; }
for f in $files; do [[ ! -e $root/$f ]] || fail "dpkg -P left /$f"; done
for d in etc/gpushare usr/share/doc/gpushare; do [[ ! -e $root/$d ]] || fail "dpkg -P left /$d"; done
if [[ $mode == scratch ]]; then
  left=$(cd "$root" && find . -mindepth 1 -not -path './var/lib/dpkg*' -not -path './var/log*' -type f)
  [[ -z $left ]] || fail "files left in the scratch root after purge: $left"
fi
echo "deb ($mode): $(basename "$deb"), $(wc -l <<<"$files") files, installed, removed (conffile kept), purged clean"
