# shellcheck shell=bash
# debootstrap as build-image.sh (the molecule image) and pg-client-newer.sh
# (the PostgreSQL 17 client tools) run it; sourced, needs log() and die().
#
#   work=$(mktemp -d ...); trap 'debootstrap_cleanup "$work" "$work/root"' EXIT
#   debootstrap_into SUITE ROOT MIRROR PKG,PKG LOGFILE

# Unmount what debootstrap may leave mounted inside ROOT on failure, then remove DIR.
debootstrap_cleanup() {
  local dir=$1 root=$2 m
  for m in proc sys dev/pts dev; do
    if mountpoint -q "$root/$m" 2>/dev/null; then umount -l "$root/$m" || true; fi
  done
  rm -rf --one-file-system "$dir"
}

# A minbase tree of SUITE with the packages INCLUDE in ROOT; on failure the tails of both logs, then die.
debootstrap_into() {
  local suite=$1 root=$2 mirror=$3 include=$4 logfile=$5 started=$SECONDS
  log "debootstrap $suite from $mirror (minbase + ${include//,/ })"
  if ! debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" >"$logfile" 2>&1; then
    tail -n 30 "$logfile" >&2
    [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (log above)"
  fi
  log "debootstrap done in $((SECONDS - started)) s"
}
