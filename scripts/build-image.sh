#!/usr/bin/env bash
# Build the molecule base image localhost/doctorq-debian-bookworm:systemd from
# Debian's archive with debootstrap (no container registry is reachable), and
# import it into podman. Also applies the podman host fix this kernel needs.
#
# Cached: the image carries a label with the hash of this script's inputs
# (this file, suite, mirror, package list); when an image with the same hash
# exists, nothing is rebuilt. DOCTORQ_IMAGE_REBUILD=1 forces a rebuild.
#
# The image is a bare Debian server plus what molecule and testinfra need
# (python3, sudo, systemd as PID 1). What the roles install (PostgreSQL
# client, zstd, python3-venv, logrotate) and the PostgreSQL server (the
# scenario's prepare step) stay out of it, so the tests prove that the roles
# install everything they need.
set -euo pipefail

image=${DOCTORQ_IMAGE:-localhost/doctorq-debian-bookworm:systemd}
suite=bookworm
label=org.doctorq.backup.image-inputs
packages=(python3 sudo systemd systemd-sysv dbus cron procps ca-certificates)

log() { printf '[%(%Y-%m-%d %H:%M:%S)T] build-image: %s\n' -1 "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and rootful podman need it)"
for tool in podman debootstrap; do
  command -v "$tool" >/dev/null || die "$tool is missing: run scripts/setup.sh (it installs podman and debootstrap)"
done

# Podman host fix (TESTBED.md): on a cgroup v1/hybrid host crun refuses to
# start containers ("cgroups in hybrid mode not supported") unless the
# hugetlb controller is mounted. Once per boot, idempotent.
podman_host_fix() {
  [ "$(stat -f -c %T /sys/fs/cgroup)" = tmpfs ] || return 0   # pure cgroup v2: nothing to do
  grep -qw '^hugetlb' /proc/cgroups || return 0                 # kernel without the controller
  mountpoint -q /sys/fs/cgroup/hugetlb && return 0
  log "mounting the hugetlb cgroup controller (podman/crun host fix)"
  mkdir -p /sys/fs/cgroup/hugetlb
  mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
}

# The Debian mirror this machine uses (deb822 .sources first, then the
# one-line format), so the image resolves packages exactly like the host.
debian_mirror() {
  local m=""
  if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
    m=$(awk '
      /^[[:space:]]*$/ { if (uri != "" && suites ~ /(^| )'"$suite"'( |$)/) { print uri; exit } uri = ""; suites = ""; next }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { $1 = ""; suites = $0 }
      END { if (uri != "" && suites ~ /(^| )'"$suite"'( |$)/) print uri }
    ' /etc/apt/sources.list.d/*.sources | head -n1)
  fi
  if [ -z "$m" ]; then
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | awk -v s="$suite" '$1 == "deb" && $0 ~ " "s" " { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' | head -n1)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

podman_host_fix

mirror=${DOCTORQ_DEBIAN_MIRROR:-$(debian_mirror)}
inputs_hash=$( { cat "$0"; echo "$suite $mirror ${packages[*]}"; } | sha256sum | cut -c1-16)

if [ "${DOCTORQ_IMAGE_REBUILD:-0}" != 1 ] && podman image exists "$image"; then
  have=$(podman image inspect --format "{{ index .Labels \"$label\" }}" "$image" 2>/dev/null || true)
  if [ "$have" = "$inputs_hash" ]; then
    log "$image is up to date (inputs $inputs_hash)"
    exit 0
  fi
  log "$image is stale (inputs ${have:-none} -> $inputs_hash): rebuilding"
fi

# shellcheck source=scripts/debootstrap-lib.sh
. "$(dirname "$0")/debootstrap-lib.sh"
work=$(mktemp -d /var/tmp/doctorq-image.XXXXXX)
rootfs=$work/rootfs
trap 'debootstrap_cleanup "$work" "$rootfs"' EXIT

started=$SECONDS
debootstrap_into "$suite" "$rootfs" "$mirror" "$(IFS=,; echo "${packages[*]}")" "$work/debootstrap.log"

# apt inside the container: the same mirror (plus security and updates, as a
# real host), no recommends, no docs or man pages (faster installs), and no
# Valid-Until check (this machine's mirror may be a dated snapshot).
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
EOF
security=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
  | grep -v '^[[:space:]]*#' | grep -o 'https\?://[^ ]*debian-security' | head -n1 || true)
[ -n "$security" ] && echo "deb $security $suite-security main" >>"$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/apt.conf.d/90doctorq-testbed" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Check-Valid-Until "false";
Acquire::Languages "none";
Acquire::GzipIndexes "true";
EOF
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90doctorq-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF

# systemd as PID 1 in a container: no getty, no udev, no units that need
# real hardware; a machine-id is generated at first boot.
for unit in getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
  systemd-modules-load.service sys-kernel-debug.mount sys-kernel-tracing.mount \
  systemd-remount-fs.service apt-daily.timer apt-daily-upgrade.timer; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
: >"$rootfs/etc/machine-id"
echo doctorq-molecule >"$rootfs/etc/hostname"

# Shrink: apt lists and caches go (roles use update_cache), logs emptied.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
  "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/debootstrap
mkdir -p "$rootfs/var/lib/apt/lists/partial"

old_id=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
log "importing into podman as $image"
tar --numeric-owner -C "$rootfs" -c . | podman import --quiet \
  --change 'CMD ["/sbin/init"]' \
  --change 'STOPSIGNAL SIGRTMIN+3' \
  --change 'ENV container=podman' \
  --change "LABEL $label=$inputs_hash" \
  - "$image" >/dev/null
# The replaced image is now untagged: drop it unless a container still uses it.
if [ -n "$old_id" ]; then podman rmi "$old_id" >/dev/null 2>&1 || true; fi
log "built $image ($(podman image inspect --format '{{.Size}}' "$image" | numfmt --to=iec), inputs $inputs_hash) in $((SECONDS - started)) s"
