#!/bin/sh
# build-image.sh - builds a minimal QEMU guest (kernel + initramfs) for qga-harness from
# installed Debian packages only: linux-image-amd64, busybox-static, qemu-guest-agent, kmod,
# cpio (and xz + readelf, when present, for the faster PVH boot). Nothing is downloaded.
#
# Usage: build-image.sh [-k KVER] [-a AGENT_BINARY] OUTDIR
#   OUTDIR           the cache: everything is written here, and rebuilt only when an input
#                    changed (this script, the kernel version, qemu-ga, busybox, AGENT_BINARY)
#   -k KVER          the kernel version (default: the newest /boot/vmlinuz-*)
#   -a AGENT_BINARY  a static qga-harness binary to add as /usr/bin/qga-harness, so the
#                    guest can run the mock agent instead of qemu-ga (an overlay archive)
# Prints KEY=VALUE lines: kernel=, initrd= (the base image), and with -a, initrd_mock=.
#
# The guest's /init mounts the usual file systems, loads the virtio-serial modules, links
# /dev/virtio-ports/<name> for every named port (there is no udev), then reads the kernel
# command line:
#   qgah.agent=real|mock  which agent serves org.qemu.guest_agent.0 (default real; mock
#                         needs -a: qga-harness guest-agent)
#   qgah.args=A+B         extra qemu-ga arguments, '+' separated
#   qgah.delay=S          seconds before the real agent first starts
#   qgah.restart=S        seconds between the real agent's exit and its restart (default 0)
# The control port org.qga-harness.control.0 takes one command per line (see README.md).
set -eu

KVER=
AGENT_BIN=
while getopts k:a:h opt; do
  case $opt in
    k) KVER=$OPTARG ;;
    a) AGENT_BIN=$OPTARG ;;
    h) sed -n '2,/^set -eu/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# = 1 ] || { echo "usage: build-image.sh [-k KVER] [-a AGENT_BINARY] OUTDIR" >&2; exit 2; }
OUT=$1

fail() { echo "build-image.sh: $*" >&2; exit 1; }

if [ -z "$KVER" ]; then
  KVER=$(ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V | tail -n 1)
  [ -n "$KVER" ] || fail "no kernel in /boot (install linux-image-amd64)"
fi
KERNEL=/boot/vmlinuz-$KVER
[ -r "$KERNEL" ] || fail "$KERNEL is missing or unreadable (install linux-image-amd64)"
[ -d "/lib/modules/$KVER" ] || fail "/lib/modules/$KVER is missing (install linux-image-$KVER)"
QGA=/usr/sbin/qemu-ga
BUSYBOX=/bin/busybox
[ -x "$QGA" ] || fail "$QGA is missing (install qemu-guest-agent)"
[ -x "$BUSYBOX" ] || fail "$BUSYBOX is missing (install busybox-static)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then fail "$BUSYBOX is not static (install busybox-static)"; fi
for tool in cpio gzip modprobe; do
  command -v $tool >/dev/null 2>&1 || fail "$tool is missing (install cpio, gzip and kmod)"
done
if [ -n "$AGENT_BIN" ]; then
  [ -x "$AGENT_BIN" ] || fail "$AGENT_BIN is not an executable file"
  if command -v readelf >/dev/null 2>&1 && readelf -l "$AGENT_BIN" 2>/dev/null | grep -q 'program interpreter'; then
    fail "$AGENT_BIN is dynamically linked; build it static (RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu)"
  fi
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# One build at a time per cache directory.
if command -v flock >/dev/null 2>&1; then exec 9>"$OUT/.lock"; flock 9; fi
INITRD=$OUT/initramfs-$KVER.cpio.gz
STAMP=$OUT/initramfs-$KVER.inputs
SELF=$(readlink -f "$0")

# What the base image is made of: a rebuild happens when any of it changed.
inputs() {
  cksum < "$SELF"
  ls -lL --time-style=+%s "$QGA" "$BUSYBOX" "$KERNEL" "/lib/modules/$KVER/modules.dep" | awk '{print $5, $6, $7}'
}

build_base() {
  ROOT=$OUT/root.tmp
  rm -rf "$ROOT"
  mkdir -p "$ROOT"
  (
  cd "$ROOT"
  mkdir -p usr/bin usr/sbin usr/lib usr/lib64 etc proc sys dev run tmp root var
  ln -s usr/bin bin; ln -s usr/sbin sbin; ln -s usr/lib lib; ln -s usr/lib64 lib64
  ln -s ../run var/run
  chmod 1777 tmp
  cp "$BUSYBOX" usr/bin/busybox
  "$BUSYBOX" --list-full | while read -r p; do
    [ -e "$p" ] || [ -L "$p" ] || ln -s /usr/bin/busybox "$p"
  done
  # qemu-ga, every library ldd lists, and the dynamic loader
  cp "$QGA" usr/sbin/qemu-ga
  ldd "$QGA" | awk '/=>/ && $3 ~ /^\// {print $3} /^[ \t]*\// {print $1}' | sort -u |
  while read -r lib; do
    case $lib in
      /lib64/*|/usr/lib64/*) dest=usr/lib64/$(basename "$lib") ;;
      *) dest=usr/lib/x86_64-linux-gnu/$(basename "$lib") ;;
    esac
    mkdir -p "$(dirname "$dest")"
    cp "$(readlink -f "$lib")" "$dest"
  done
  # virtio-serial over PCI, in dependency order (all =m in Debian's config)
  : > etc/modules.order
  modprobe -S "$KVER" --show-depends -a virtio_pci virtio_console |
  while read -r kind path _rest; do
    [ "$kind" = insmod ] || continue
    mkdir -p ".$(dirname "$path")"
    case $path in
      *.ko) cp "$path" ".$path" ;;
      *.ko.xz) xz -dc "$path" > ".${path%.xz}"; path=${path%.xz} ;;
      *.ko.zst) zstd -qdc "$path" > ".${path%.zst}"; path=${path%.zst} ;;
      *.ko.gz) gzip -dc "$path" > ".${path%.gz}"; path=${path%.gz} ;;
    esac
    grep -qxF "$path" etc/modules.order || echo "$path" >> etc/modules.order
  done
  [ -s etc/modules.order ] || grep -q 'CONFIG_VIRTIO_CONSOLE=y' "/boot/config-$KVER" 2>/dev/null ||
    fail "no virtio_console module for $KVER"
  cp /usr/lib/os-release usr/lib/os-release 2>/dev/null || cp /etc/os-release usr/lib/os-release
  ln -s ../usr/lib/os-release etc/os-release
  echo qga-guest > etc/hostname
  printf 'root:x:0:0:root:/root:/bin/sh\n' > etc/passwd
  printf 'root:x:0:\n' > etc/group
  printf 'root:*:19000:0:99999:7:::\n' > etc/shadow
  chmod 640 etc/shadow

  # qemu-ga runs "/sbin/shutdown -h -P +0 'hypervisor initiated shutdown'" (-r reboot, -H
  # halt) and waits for it to exit 0; busybox has none. Like systemd: exit 0 at once, stop
  # the agent 0.5 s later (no restart), power off 0.5 s after that.
  cat > usr/sbin/shutdown <<'SHUT'
#!/bin/sh
act=poweroff
for a in "$@"; do case $a in -r) act=reboot ;; -H) act=halt ;; -P) act=poweroff ;; esac; done
(
  sleep 0.5
  touch /run/qga.hold
  [ -r /run/qemu-ga.pid ] && kill -TERM "$(cat /run/qemu-ga.pid)"
  sleep 0.5
  sync
  "$act" -f
) </dev/null >/dev/null 2>&1 &
exit 0
SHUT
  chmod 755 usr/sbin/shutdown

  cat > usr/sbin/qgah-control <<'CTL'
#!/bin/sh
# The control port, with the real qemu-ga as the agent: one command per line in, one
# answer per line out ("ok ...", "err ...").
CTL_PORT=$1
pidof_agent() { cat /run/qemu-ga.pid 2>/dev/null; }
# The agent is up once it has its port open.
agent_up() {
  p=$(pidof_agent) && [ -n "$p" ] && ls -l "/proc/$p/fd" 2>/dev/null | grep -q "$AGENT_DEV"
}
agent_gone() { p=$(pidof_agent); [ -z "$p" ] || ! [ -d "/proc/$p" ]; }
wait_for() { i=0; while ! "$@"; do i=$((i + 1)); [ $i -ge 600 ] && return 1; sleep 0.02; done; }
exec 3<>"$CTL_PORT"
say() { echo "$*" >&3; }
wait_for agent_up || [ -e /run/qga.hold ]
say "ready real"
while :; do
  if ! read -r cmd arg <&3; then sleep 0.05; continue; fi
  case $cmd in
    ping) say "ok pong $arg" ;;
    status) if agent_up; then say "ok running $(pidof_agent)"; else say "ok down"; fi ;;
    kill) p=$(pidof_agent); [ -n "$p" ] && kill -KILL "$p"; say "ok killed $p" ;;
    hang) p=$(pidof_agent); [ -n "$p" ] && kill -STOP "$p"; say "ok hung $p" ;;
    resume) p=$(pidof_agent); [ -n "$p" ] && kill -CONT "$p"; say "ok resumed $p" ;;
    stop) touch /run/qga.hold; p=$(pidof_agent); [ -n "$p" ] && kill -CONT "$p" && kill -TERM "$p"
          wait_for agent_gone; say "ok stopped" ;;
    start) rm -f /run/qga.hold; if wait_for agent_up; then say "ok started $(pidof_agent)"; else say "err the agent did not start"; fi ;;
    restart) touch /run/qga.hold; p=$(pidof_agent); [ -n "$p" ] && kill -KILL "$p"
             wait_for agent_gone; rm -f /run/qga.hold
             if wait_for agent_up; then say "ok started $(pidof_agent)"; else say "err the agent did not start"; fi ;;
    restart-delay) echo "$arg" > /run/qga.restart; say "ok restart-delay $arg" ;;
    poweroff) say "ok poweroff"; poweroff -f ;;
    *) say "err unknown command '$cmd'" ;;
  esac
done
CTL
  chmod 755 usr/sbin/qgah-control

  cat > init <<'INIT'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec 0</dev/console 1>/dev/console 2>&1
mount -t tmpfs -o mode=755 tmpfs /run
hostname -F /etc/hostname
log() { echo "[init $(cut -d' ' -f1 /proc/uptime)] $*"; }
agent=real delay=0 restart=0 qargs=
for w in $(cat /proc/cmdline); do
  case $w in
    qgah.agent=*) agent=${w#qgah.agent=} ;;
    qgah.delay=*) delay=${w#qgah.delay=} ;;
    qgah.restart=*) restart=${w#qgah.restart=} ;;
    qgah.args=*) qargs=$(echo "${w#qgah.args=}" | tr + ' ') ;;
  esac
done
while read -r m; do insmod "$m" || log "insmod $m failed"; done < /etc/modules.order
PORT=/dev/virtio-ports/org.qemu.guest_agent.0
CTL=/dev/virtio-ports/org.qga-harness.control.0
# No udev: link /dev/virtio-ports/<name> from /sys/class/virtio-ports/*/name.
i=0
while :; do
  for p in /sys/class/virtio-ports/vport*; do
    [ -r "$p/name" ] || continue
    n=$(cat "$p/name"); [ -n "$n" ] || continue
    mkdir -p /dev/virtio-ports
    [ -e "/dev/virtio-ports/$n" ] || ln -s "../${p##*/}" "/dev/virtio-ports/$n"
  done
  [ -e "$PORT" ] && [ -e "$CTL" ] && break
  i=$((i + 1))
  [ $i -ge 300 ] && { log "timeout waiting for $PORT and $CTL"; break; }
  sleep 0.05
done
export AGENT_DEV=$(readlink "$PORT" | sed 's|.*/||')
if [ "$agent" = mock ] && [ -x /usr/bin/qga-harness ]; then
  log "agent: mock"
  while :; do /usr/bin/qga-harness guest-agent --port "$PORT" --control "$CTL"; log "mock exited rc=$?"; sleep 0.2; done
fi
log "agent: qemu-ga"
echo "$restart" > /run/qga.restart
# The supervisor, like Debian's unit (Restart=always): /run/qga.hold keeps the agent
# stopped; /run/qemu-ga.pid holds the running agent's pid.
(
  [ "$delay" != 0 ] && sleep "$delay"
  while :; do
    if [ -e /run/qga.hold ]; then sleep 0.02; continue; fi
    /usr/sbin/qemu-ga -m virtio-serial -p "$PORT" $qargs &
    echo $! > /run/qemu-ga.pid
    wait $!
    rm -f /run/qemu-ga.pid
    d=$(cat /run/qga.restart)
    [ "$d" != 0 ] && sleep "$d"
  done
) &
while :; do /usr/sbin/qgah-control "$CTL"; sleep 0.2; done
INIT
  chmod 755 init
  if [ "$(id -u)" = 0 ]; then
    mknod -m 600 dev/console c 5 1
    mknod -m 666 dev/null c 1 3
  fi
  find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -6n > "$INITRD.tmp"
  )
  mv "$INITRD.tmp" "$INITRD"
  rm -rf "$ROOT"
}

# The PVH boot (an uncompressed ELF vmlinux with XEN_ELFNOTE_PHYS32_ENTRY) skips the
# in-guest decompressor, which is slow under TCG: about 3 s to the first reply instead of 6.
VMLINUX=$OUT/vmlinux-$KVER
pvh_kernel() {
  command -v xz >/dev/null 2>&1 && command -v readelf >/dev/null 2>&1 || return 1
  if ! [ -s "$VMLINUX" ] || [ "$KERNEL" -nt "$VMLINUX" ]; then
    off=$(LC_ALL=C grep -obUaP '\xfd\x37\x7a\x58\x5a\x00' "$KERNEL" 2>/dev/null | head -n 1 | cut -d: -f1)
    [ -n "$off" ] || return 1
    tail -c +$((off + 1)) "$KERNEL" | xz -dc --single-stream > "$VMLINUX.tmp" 2>/dev/null || { rm -f "$VMLINUX.tmp"; return 1; }
    mv "$VMLINUX.tmp" "$VMLINUX"
  fi
  readelf -n "$VMLINUX" 2>/dev/null | grep -q 'type: (0x00000012)'
}

if ! [ -s "$INITRD" ] || ! [ -s "$STAMP" ] || [ "$(inputs)" != "$(cat "$STAMP")" ]; then
  build_base
  inputs > "$STAMP"
fi
BOOT_KERNEL=$KERNEL
if pvh_kernel; then BOOT_KERNEL=$VMLINUX; fi
echo "kernel=$BOOT_KERNEL"
echo "initrd=$INITRD"

if [ -n "$AGENT_BIN" ]; then
  # The mock's image: the base archive followed by an overlay with the static binary (the
  # kernel unpacks concatenated archives in order).
  MOCK=$OUT/initramfs-$KVER-mock.cpio.gz
  MSTAMP=$OUT/initramfs-$KVER-mock.inputs
  mine() { cat "$STAMP"; cksum < "$AGENT_BIN"; }
  if ! [ -s "$MOCK" ] || ! [ -s "$MSTAMP" ] || [ "$(mine)" != "$(cat "$MSTAMP")" ]; then
    D=$OUT/overlay.tmp
    rm -rf "$D"; mkdir -p "$D/usr/bin"
    cp "$AGENT_BIN" "$D/usr/bin/qga-harness"
    chmod 755 "$D/usr/bin/qga-harness"
    (cd "$D" && printf 'usr\nusr/bin\nusr/bin/qga-harness\n' | cpio --quiet -o -H newc -R 0:0 | gzip -1n) > "$OUT/overlay.cpio.gz"
    cat "$INITRD" "$OUT/overlay.cpio.gz" > "$MOCK.tmp"
    mv "$MOCK.tmp" "$MOCK"
    rm -rf "$D" "$OUT/overlay.cpio.gz"
    mine > "$MSTAMP"
  fi
  echo "initrd_mock=$MOCK"
fi
