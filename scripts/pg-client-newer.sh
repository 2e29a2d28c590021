#!/usr/bin/env bash
# PostgreSQL 17 client tools (pg_dump, pg_dumpall, pg_restore, psql) on this
# Debian 12 machine, for the tests of the code paths that need client tools
# newer than the server: zstd in directory backups (pg_dump 16+) and a backup
# written by a newer pg_dump than the pg_restore that reads it.
#
# Debian 12 has PostgreSQL 15 only and the PostgreSQL project's own archive is
# not reachable, but Debian 13 (trixie) is, with postgresql-client-17. So:
# debootstrap a minimal trixie tree with that package into the cache folder,
# then copy the four programs into CACHE/bin and point them (patchelf) at
# trixie's dynamic loader and libraries inside the tree: they run on the host
# as ordinary programs (no chroot, no bind mounts: `rm -rf` of the cache
# never walks into the host), and pg_dumpall finds its pg_dump beside it.
#
#   scripts/pg-client-newer.sh          # build once, then only check (about 1 s)
#   DOCTORQ_PG_NEWER_REBUILD=1 ...      # rebuild
#
# CACHE is DOCTORQ_PG_NEWER_DIR, default /var/cache/doctorq/pg-client-17 (the
# path scripts/testbed.py looks in; it exports DOCTORQ_PG17_BIN_DIR=CACHE/bin).
# Cached: CACHE/.inputs holds the hash of this script's inputs; a finished
# build with the same hash whose pg_dump answers 17 is kept.
set -euo pipefail

major=17
suite=trixie
cache=${DOCTORQ_PG_NEWER_DIR:-/var/cache/doctorq/pg-client-$major}
mirror=${DOCTORQ_DEBIAN_NEWER_MIRROR:-http://deb.debian.org/debian}
tools=(pg_dump pg_dumpall pg_restore psql)

log() { printf '[%(%Y-%m-%d %H:%M:%S)T] pg-client-newer: %s\n' -1 "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

inputs_hash=$( { cat "$0"; echo "$suite $mirror $major ${tools[*]}"; } | sha256sum | cut -c1-16)
if [ "${DOCTORQ_PG_NEWER_REBUILD:-0}" != 1 ] && [ "$(cat "$cache/.inputs" 2>/dev/null)" = "$inputs_hash" ] \
  && "$cache/bin/pg_dump" --version 2>/dev/null | grep -q "(PostgreSQL) $major\."; then
  log "$cache/bin is up to date ($("$cache/bin/pg_dump" --version))"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "run as root (debootstrap needs it)"
for tool in debootstrap patchelf; do
  command -v "$tool" >/dev/null || die "$tool is missing: run scripts/setup.sh (it installs both)"
done

# Built beside the cache and renamed into place: an interrupted build never
# leaves a half tree that looks finished.
mkdir -p "$(dirname "$cache")"
work=$(mktemp -d "$cache.build.XXXXXX")
root=$work/root
final_root=$cache/root
# shellcheck source=scripts/debootstrap-lib.sh
. "$(dirname "$0")/debootstrap-lib.sh"
trap 'debootstrap_cleanup "$work" "$root"' EXIT

started=$SECONDS
debootstrap_into "$suite" "$root" "$mirror" "postgresql-client-$major" "$work/debootstrap.log"
# what the programs never read: the downloaded packages, docs, apt's lists
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc \
  "$root"/usr/share/man "$root"/usr/share/locale "$root"/debootstrap

# The interpreter and library path are absolute: they name the tree's final place.
mkdir -p "$work/bin"
for tool in "${tools[@]}"; do
  cp "$root/usr/lib/postgresql/$major/bin/$tool" "$work/bin/$tool"
  patchelf --set-interpreter "$final_root/usr/lib64/ld-linux-x86-64.so.2" \
    --force-rpath --set-rpath "$final_root/usr/lib/x86_64-linux-gnu" "$work/bin/$tool"
done

rm -rf --one-file-system "$cache"
mkdir -p "$cache"
mv "$root" "$final_root"
mv "$work/bin" "$cache/bin"
for tool in "${tools[@]}"; do
  "$cache/bin/$tool" --version | grep -q "(PostgreSQL) $major\." || die "$cache/bin/$tool does not run: $("$cache/bin/$tool" --version 2>&1 | head -n 3)"
done
echo "$inputs_hash" >"$cache/.inputs"
log "built $cache/bin ($("$cache/bin/pg_dump" --version), $(du -sh "$cache" | cut -f1)) in $((SECONDS - started)) s"
