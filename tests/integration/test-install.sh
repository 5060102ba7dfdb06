#!/usr/bin/env bash
# `meson install` lays out blockd, blockctl, the man pages, the nbdkit plugins
# (under the prefix), the systemd units and the bash completion; an optimized
# build installed under a fresh prefix has no sanitizer runtime, real nbdkit
# serves data from its installed plugins, and systemd-analyze accepts its units.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_tool meson ninja nbdkit nbdinfo nbdcopy readelf systemd-analyze
: "${BUILD_DIR:?}" "${SOURCE_DIR:?}"
PLUGINS="file memory null"

# option BUILD NAME: the value of meson option NAME in build directory BUILD.
option() {
    meson introspect --buildoptions "$1" |
        "$PYTHON" -c 'import json, sys
print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == sys.argv[1]))' "$2"
}

# check_tree ROOT PREFIX BUILD: everything is where it belongs under ROOT
# (DESTDIR, or empty for a real install) for a build configured with PREFIX.
check_tree() {
    local root=$1 prefix=$2 build=$3 libdir sbindir bindir mandir datadir f
    libdir=$(option "$build" libdir) sbindir=$(option "$build" sbindir)
    bindir=$(option "$build" bindir) mandir=$(option "$build" mandir)
    datadir=$(option "$build" datadir)
    [[ $libdir == /* ]] || libdir=$prefix/$libdir
    [[ $mandir == /* ]] || mandir=$prefix/$mandir
    [[ $datadir == /* ]] || datadir=$prefix/$datadir
    PLUGINDIR=$root$libdir/nbdkit/plugins
    UNITDIR=$root$prefix/lib/systemd/system
    for f in "$root$prefix/$sbindir/blockd" "$root$prefix/$bindir/blockctl"; do
        [[ -x $f ]] || fail "not installed: $f"
    done
    for f in "$mandir/man8/blockd.8" "$mandir/man1/blockctl.1" \
             "$datadir/bash-completion/completions/blockctl"; do
        [[ -s $root$f ]] || fail "not installed: $root$f"
    done
    for f in $PLUGINS; do
        [[ -f $PLUGINDIR/nbdkit-blockd-$f-plugin.so ]] ||
            fail "plugin $f is not in $PLUGINDIR: $(find "$root" -name '*.so')"
    done
    for f in blockd.service blockd.socket; do
        [[ -s $UNITDIR/$f ]] || fail "not installed: $UNITDIR/$f"
    done
    grep -qx "ExecStart=$prefix/$sbindir/blockd \$BLOCKD_ARGS" "$UNITDIR/blockd.service" ||
        fail "ExecStart does not follow the prefix $prefix: $(grep ExecStart "$UNITDIR/blockd.service")"
    grep -qx 'Type=notify' "$UNITDIR/blockd.service" || fail "blockd.service is not Type=notify"
}

# 1. The test build, staged with --destdir: its prefix (default /usr/local),
#    never the system's nbdkit directory.
prefix=$(option "$BUILD_DIR" prefix)
meson install -C "$BUILD_DIR" --no-rebuild --destdir "$TMP/dest" >"$TMP/install.log" 2>&1 ||
    fail "meson install --destdir failed: $(tail -n 20 "$TMP/install.log")"
check_tree "$TMP/dest" "$prefix" "$BUILD_DIR"
if [[ -z $(option "$BUILD_DIR" nbdkit_plugindir) ]]; then
    [[ $PLUGINDIR == "$TMP/dest$prefix"/* ]] || fail "plugins not under the prefix: $PLUGINDIR"
fi
bash -c "source /usr/share/bash-completion/bash_completion 2>/dev/null || true
         source '$TMP/dest$prefix/$(option "$BUILD_DIR" datadir)/bash-completion/completions/blockctl'
         complete -p blockctl" | grep -q _blockctl || fail "the completion does not register for blockctl"

# 2. The default build (plain `meson setup`: optimized, no sanitizers),
#    installed under a fresh prefix; only the installed targets are built.
build=$TMP/b root=$TMP/root
meson setup "$build" "$SOURCE_DIR" --prefix="$root" >"$TMP/setup.log" 2>&1 ||
    fail "meson setup failed: $(tail -n 20 "$TMP/setup.log")"
[[ $(option "$build" buildtype) == release && $(option "$build" b_sanitize) == none ]] ||
    fail "the default build is $(option "$build" buildtype), sanitizers: $(option "$build" b_sanitize)"
mapfile -t targets < <(meson introspect --targets "$build" | "$PYTHON" -c 'import json, os, sys
b = sys.argv[1]
for t in json.load(sys.stdin):
    if t["installed"]:
        for f in t["filename"]:
            print(os.path.relpath(f, b))' "$build")
[[ ${#targets[@]} -ge 5 ]] || fail "installed targets: ${targets[*]}"
ninja -C "$build" "${targets[@]}" >"$TMP/ninja.log" 2>&1 || fail "ninja failed: $(tail -n 30 "$TMP/ninja.log")"
meson install -C "$build" --no-rebuild >"$TMP/install2.log" 2>&1 ||
    fail "meson install failed: $(tail -n 20 "$TMP/install2.log")"
check_tree "" "$root" "$build"
[[ $PLUGINDIR == "$root"/* ]] || fail "plugins not under the prefix: $PLUGINDIR"
for f in "$root/sbin/blockd" "$root/bin/blockctl" "$PLUGINDIR"/*.so; do
    ! readelf -d "$f" | grep -qE 'lib(a|ub|t)san' || fail "$f links a sanitizer runtime"
done
"$root/sbin/blockd" --version | grep -q '^blockd ' || fail "installed blockd --version"

# Real nbdkit (no LD_PRELOAD) loads the installed plugins and serves data.
# (--run's $uri is nbdkit's; the file names come through the environment.)
export RAND=$TMP/rand
make_random_file "$RAND" 2
# shellcheck disable=SC2016
nbdkit -U - "$PLUGINDIR/nbdkit-blockd-memory-plugin.so" size=8M \
    --run 'nbdcopy "$RAND" "$uri" && nbdcopy "$uri" "$RAND.back"' 2>"$TMP/nbdkit.err" ||
    fail "nbdkit with the installed memory plugin: $(cat "$TMP/nbdkit.err")"
cmp <(head -c 2097152 "$TMP/rand.back") "$TMP/rand" || fail "memory plugin read back other data"
[[ $(stat -c %s "$TMP/rand.back") == 8388608 ]] || fail "memory plugin size"
# shellcheck disable=SC2016
nbdkit -r -U - "$PLUGINDIR/nbdkit-blockd-file-plugin.so" file="$TMP/rand" \
    --run 'nbdcopy "$uri" "$RAND.file"' 2>"$TMP/nbdkit.err" ||
    fail "nbdkit with the installed file plugin: $(cat "$TMP/nbdkit.err")"
cmp "$TMP/rand.file" "$TMP/rand" || fail "file plugin served other data"
# shellcheck disable=SC2016
[[ $(nbdkit -U - "$PLUGINDIR/nbdkit-blockd-null-plugin.so" size=1G --run 'nbdinfo --size "$uri"') == 1073741824 ]] ||
    fail "nbdkit with the installed null plugin"

# The installed units: systemd-analyze verify resolves ExecStart (the
# installed blockd) and, where man is installed, Documentation= man pages.
man_check=--man=no
if command -v man >/dev/null; then
    man_check=--man=yes
    export MANPATH=$root/share/man
fi
st=0
systemd-analyze verify "$man_check" "$UNITDIR/blockd.socket" "$UNITDIR/blockd.service" \
    >"$TMP/verify.log" 2>&1 || st=$?
[[ $st -eq 0 && ! -s $TMP/verify.log ]] ||
    fail "systemd-analyze verify (exit $st): $(cat "$TMP/verify.log")"
echo PASS
