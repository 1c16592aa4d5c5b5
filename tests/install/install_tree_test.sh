#!/usr/bin/env bash
# What `cmake --install BUILD --prefix P` lays down, file by file (docs/install.md):
# exactly the programs gpushare_tool() registered in P/bin, each answering --version
# with the project's version and carrying its man page and bash completion; the shim
# alone in P/lib; the systemd unit pointing at P's broker and config; the example
# config; the docs. Anything else (simgpu, samples, a test program) fails the test.
# Usage: install_tree_test.sh BUILD_DIR SOURCE_DIR VERSION "TOOL;TOOL;..."
set -euo pipefail
build=$1 source=$2 version=$3
IFS=';' read -r -a tools <<<"$4"
prefix=$(mktemp -d /tmp/gpushare-install-XXXXXX)
trap 'rm -rf "$prefix"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >/dev/null

# The tools every build has; 19b/19c's add themselves through gpushare_tool().
for core in gpushare-broker gpushare-smi gpushare-run gpushare-doctor; do
  [[ " ${tools[*]} " == *" $core "* ]] || fail "$core is not a registered tool (gpushare_tool)"
done

expected=$(mktemp)
trap 'rm -rf "$prefix" "$expected"' EXIT
{
  echo etc/gpushare/broker.toml
  echo lib/libgpushare.so
  echo lib/systemd/system/gpushare-broker.service
  for t in "${tools[@]}"; do
    section=1  # daemons are system administration commands (section 8)
    case $t in gpushare-broker | gpushare-manager | gpushare-device-plugin) section=8 ;; esac
    echo "bin/$t"
    echo "share/bash-completion/completions/$t"
    echo "share/man/man$section/$t.$section"
  done
  for doc in "$source"/docs/*.md "$source"/README.md; do echo "share/doc/gpushare/$(basename "$doc")"; done
} | sort >"$expected"
actual=$(cd "$prefix" && find . -type f -o -type l | sed 's|^\./||' | sort)
if ! diff -u "$expected" <(echo "$actual"); then
  fail "the install tree differs from the expected one (- expected, + installed)"
fi

for t in "${tools[@]}"; do
  [[ -x $prefix/bin/$t ]] || fail "bin/$t is not executable"
  out=$("$prefix/bin/$t" --version) || fail "$t --version failed"
  [[ $out == "$t (gpushare) $version" ]] || fail "$t --version printed '$out', expected '$t (gpushare) $version'"
  grep -qF -- '\-\-help' "$prefix"/share/man/man*/"$t".* || fail "the man page of $t does not list --help"
  grep -qx '.SH SYNOPSIS' "$prefix"/share/man/man*/"$t".* || fail "the man page of $t has no SYNOPSIS (a 'usage: $t' line)"
  grep -q "^complete .* $t\$" "$prefix/share/bash-completion/completions/$t" || fail "no completion for $t"
done

readelf -h "$prefix/lib/libgpushare.so" | grep -q 'Type: *DYN' || fail "lib/libgpushare.so is no shared library"
# sd_notify is the broker's alone: the shim, in every client process, does not load libsystemd.
readelf -d "$prefix/bin/gpushare-broker" | grep -q 'NEEDED.*libsystemd' || fail "the broker does not link libsystemd"
if readelf -d "$prefix/lib/libgpushare.so" | grep -q 'NEEDED.*libsystemd'; then fail "libgpushare.so links libsystemd"; fi
unit=$prefix/lib/systemd/system/gpushare-broker.service
grep -qx "ExecStart=$prefix/bin/gpushare-broker --config $prefix/etc/gpushare/broker.toml --socket /run/gpushare/broker.sock" "$unit" ||
  fail "the unit's ExecStart does not name this install's broker and config: $(grep ExecStart= "$unit")"
cmp -s "$source/deploy/config/broker.toml" "$prefix/etc/gpushare/broker.toml" || fail "etc/gpushare/broker.toml is not the example"

# The completions complete: an option, a subcommand, a file after --config, a command after --.
complete_() {  # complete_ TOOL WORD...: what bash offers for the last word
  local tool=$1
  shift
  bash -c 'source "$0"; COMP_WORDS=("${@:1}"); COMP_CWORD=$(($# - 1)); "_${1//-/_}"; echo "${COMPREPLY[*]}"' \
    "$prefix/share/bash-completion/completions/$tool" "$tool" "$@"
}
[[ $(complete_ gpushare-smi --js) == --json ]] || fail "gpushare-smi --js<TAB> offers '$(complete_ gpushare-smi --js)'"
[[ $(complete_ gpushare-smi vg) == vgpu ]] || fail "gpushare-smi vg<TAB> offers '$(complete_ gpushare-smi vg)'"
[[ $(complete_ gpushare-broker --config "$prefix/etc/gpushare/bro") == "$prefix/etc/gpushare/broker.toml" ]] ||
  fail "gpushare-broker --config <TAB> does not complete the file"
[[ " $(complete_ gpushare-run --memory 1GiB -- bas) " == *" bash "* ]] || fail "gpushare-run -- <TAB> does not complete commands"

# gpushare-run finds the shim beside its bin/ (../lib), as it does in the build tree.
out=$(env -u GPUSHARE_LIBRARY "$prefix/bin/gpushare-run" -- sh -c 'echo "$LD_PRELOAD"') || fail "installed gpushare-run failed"
[[ $out == "$prefix/lib/libgpushare.so"* ]] || fail "installed gpushare-run preloads '$out', not $prefix/lib/libgpushare.so"

# An edited config survives a second install (the admin's, not ours).
echo '[limits]' >>"$prefix/etc/gpushare/broker.toml"
cmake --install "$build" --prefix "$prefix" >/dev/null
tail -1 "$prefix/etc/gpushare/broker.toml" | grep -qx '\[limits\]' || fail "a reinstall overwrote the edited config"

echo "install tree: $(echo "$actual" | wc -l) files as expected under $prefix"
