#!/bin/sh
# e2e-timeout: 300
#
# Smoke test of the kernel tier itself, with no agent logic yet:
#  1. the project's binaries run in the guest (datera-agent --version, datera-sim --help);
#  2. a LIO target made by hand through configfs: fileio backstore on tmpfs with a known
#     vpd_unit_serial, an explicit node ACL for the initiator, the portal created from netns storA
#     on the VIP;
#  3. open-iscsi discovery + login; the LUN appears as /dev/sdX and its serial (vpd_pg80) equals the
#     vpd_unit_serial set in configfs; wwid/vpd_pg83 are printed as facts;
#  4. mkfs.xfs, mount, checksummed write + read back (caches dropped);
#  5. VIP failover storA -> storB (portal rmdir, VIP move, portal mkdir from storB, gratuitous ARP)
#     under continuous O_DIRECT writes: no I/O error, same session and sdX, data intact; the stall
#     is measured;
#  6. unmount, logout (sdX goes away), LIO teardown.
set -eu
# shellcheck source=SCRIPTDIR/../lib.sh
. /e2e/lib.sh

IQN=iqn.2013-05.com.daterainc:tc:01:sn:e2e0smoke0001
SERIAL=6b1d3c4e-5f60-4a71-8b92-a3b4c5d6e7f8 # a Datera volume uuid is the LUN serial
DEV_CFG=$TARGET_CFG/core/fileio_0/disk0
TPG=$TARGET_CFG/iscsi/$IQN/tpgt_1
PORTAL=$E2E_VIP:3260
MNT=/mnt/vol
INIT_IQN=$(initiator_name)
[ -n "$INIT_IQN" ] || fail "no initiator name"

# --- 1. the project's binaries ---------------------------------------------------------------
step_begin binaries
out=$(datera-agent --version 2>&1) || fail "datera-agent --version: rc=$? $out"
log "datera-agent --version: $out"
case $out in *datera-agent*) ;; *) fail "unexpected datera-agent --version output: $out" ;; esac
out=$(datera-sim --help 2>&1) || fail "datera-sim --help: rc=$? $out"
log "datera-sim --help: $(printf '%s\n' "$out" | head -n 3 | tr '\n' ' ')..."
out=$(datera-flexvolume 2>&1) && rc=0 || rc=$?
log "datera-flexvolume (no args) rc=$rc: $(printf '%s\n' "$out" | head -n 2 | tr '\n' ' ')"
step_end

# --- 2. LIO target ---------------------------------------------------------------------------
step_begin lio-setup
mkdir -p /lio
mount -t tmpfs -o size=600m lio /lio || fail "tmpfs for the backstore"
run truncate -s 512M /lio/disk0.img
run mkdir -p "$DEV_CFG"
echo "fd_dev_name=/lio/disk0.img,fd_dev_size=536870912" >"$DEV_CFG/control" || fail "fileio control"
# The unit serial can only be set while the device has no exports, i.e. before the LUN link.
echo "$SERIAL" >"$DEV_CFG/wwn/vpd_unit_serial" || fail "set vpd_unit_serial"
echo 1 >"$DEV_CFG/enable" || fail "enable fileio backstore"
run mkdir -p "$TPG/lun/lun_0"
run ln -s "$DEV_CFG" "$TPG/lun/lun_0/disk0"
echo 0 >"$TPG/attrib/authentication"
echo 0 >"$TPG/attrib/generate_node_acls"
echo 0 >"$TPG/attrib/demo_mode_write_protect"
run mkdir -p "$TPG/acls/$INIT_IQN/lun_0"
run ln -s "$TPG/lun/lun_0" "$TPG/acls/$INIT_IQN/lun_0/map0"
# LIO listens in the network namespace of the process that creates the portal.
run ip netns exec storA mkdir "$TPG/np/$PORTAL"
echo 1 >"$TPG/enable" || fail "enable tpg"
listen=$(ip netns exec storA ss -Hltn "sport = :3260" | awk '{print $4}' | tr '\n' ' ')
log "storA listens on: $listen"
case $listen in *"$PORTAL"*) ;; *) fail "no LIO listener on $PORTAL in storA" ;; esac
[ -z "$(ss -Hltn "sport = :3260")" ] || fail "the root netns listens on 3260 too"
for f in "$DEV_CFG"/wwn/*; do
  fact "configfs wwn/$(basename "$f"): $(tr '\n' '|' <"$f")"
done
step_end

# --- 3. discovery, login, the LUN and its identity -------------------------------------------
step_begin login
disc=$(/usr/sbin/iscsiadm -m discovery -t st -p "$PORTAL" 2>&1) || fail "discovery: $disc"
log "discovery: $disc"
case $disc in *"$IQN"*) ;; *) fail "discovery did not return $IQN" ;; esac
for kv in node.session.timeo.replacement_timeout=120 'node.conn[0].timeo.noop_out_interval=2' \
  'node.conn[0].timeo.noop_out_timeout=2' node.startup=manual; do
  run /usr/sbin/iscsiadm -m node -T "$IQN" -p "$PORTAL" -o update -n "${kv%%=*}" -v "${kv#*=}"
done
run /usr/sbin/iscsiadm -m node -T "$IQN" -p "$PORTAL" --login
wait_until 10 session_of_target "$IQN" || fail "no session for $IQN after login"
SESSION=$(session_of_target "$IQN")
wait_until 30 blockdev_of_session "$SESSION" || fail "no block device for $SESSION LUN 0"
SD=$(blockdev_of_session "$SESSION")
wait_until 10 test -b "/dev/$SD" || fail "/dev/$SD did not appear"
log "logged in: $SESSION state=$(session_state "$SESSION") -> /dev/$SD"
step_end

step_begin serial
DEVDIR=/sys/block/$SD/device
fact "sysfs $DEVDIR -> $(readlink -f "$DEVDIR")"
for f in vendor model rev wwid; do
  [ -e "$DEVDIR/$f" ] && fact "sysfs $DEVDIR/$f = '$(cat "$DEVDIR/$f")'"
done
fact "sysfs $DEVDIR/vpd_pg80 hex: $(od -An -tx1 -v "$DEVDIR/vpd_pg80" | tr -s ' \n' ' ')"
fact "sysfs $DEVDIR/vpd_pg80 bytes: $(wc -c <"$DEVDIR/vpd_pg80"), page length byte[3] = $(od -An -tu1 -j3 -N1 "$DEVDIR/vpd_pg80" | tr -d ' ')"
fact "sysfs $DEVDIR/vpd_pg83 hex: $(od -An -tx1 -v "$DEVDIR/vpd_pg83" | tr -s ' \n' ' ')"
# Decode the page 0x83 designators: byte0 = protocol id<<4 | code set, byte1 = PIV<<7 |
# association<<4 | type, byte3 = length. code set 1 = binary, 2 = ASCII, 3 = UTF-8.
od -An -tu1 -v "$DEVDIR/vpd_pg83" | tr -s ' \n' '\n' | sed '/^$/d' | awk '
  { b[n++] = $1 }
  END {
    split("lu target-port target-device", assoc, " ")
    split("vendor-specific t10-vendor-id eui-64 naa relative-target-port target-port-group lu-group md5 scsi-name-string", type, " ")
    i = 4
    while (i + 4 <= n) {
      cs = b[i] % 16; proto = int(b[i] / 16); a = int(b[i + 1] / 16) % 4; t = b[i + 1] % 16; len = b[i + 3]
      v = ""
      for (j = i + 4; j < i + 4 + len && j < n; j++) {
        if (cs == 1) v = v sprintf("%02x", b[j])
        else if (b[j] >= 32 && b[j] < 127) v = v sprintf("%c", b[j])
        else if (b[j] != 0) v = v "."
      }
      printf "E2E FACT vpd_pg83 designator: assoc=%s type=%s codeset=%d proto=%d len=%d value=%s\n", assoc[a + 1], type[t + 1], cs, proto, len, v
      i += 4 + len
    }
  }'
for f in /sys/class/iscsi_session/"$SESSION"/targetname /sys/class/iscsi_session/"$SESSION"/tpgt \
  /sys/class/iscsi_session/"$SESSION"/recovery_tmo /sys/class/iscsi_connection/connection*:0/persistent_address \
  /sys/class/iscsi_connection/connection*:0/persistent_port; do
  fact "sysfs $f = $(cat "$f")"
done
fact "sysfs $DEVDIR/state = $(cat "$DEVDIR/state"), timeout = $(cat "$DEVDIR/timeout")"
# The serial: VPD page 0x80 is a 4-byte header, then the serial (LIO adds a NUL; strip it).
pg80=$(tail -c +5 "$DEVDIR/vpd_pg80" | tr -d '\000')
fact "serial from vpd_pg80 = '$pg80'"
cfg_serial=$(sed -n 's/^T10 VPD Unit Serial Number: *//p' "$DEV_CFG/wwn/vpd_unit_serial")
fact "configfs vpd_unit_serial reads back as '$cfg_serial' (set: '$SERIAL')"
[ "$pg80" = "$SERIAL" ] || fail "vpd_pg80 serial '$pg80' != configured '$SERIAL'"
[ "$cfg_serial" = "$SERIAL" ] || fail "configfs vpd_unit_serial '$cfg_serial' != '$SERIAL'"
# LIO's NAA (type 6, IEEE registered extended): "6" + OUI 001405 + the first 25 hex digits of the
# unit serial (non-hex characters such as '-' skipped), so the wwid follows from the volume uuid.
wwid=$(cat "$DEVDIR/wwid")
hex=$(printf '%s' "$SERIAL" | tr -cd '0-9a-fA-F' | tr 'A-F' 'a-f' | cut -c1-25)
want_wwid=naa.6001405$hex
fact "wwid = '$wwid'; expected from the serial: '$want_wwid'"
[ "$wwid" = "$want_wwid" ] || fail "wwid '$wwid' != '$want_wwid' derived from the serial"
step_end

# --- 4. xfs ----------------------------------------------------------------------------------
step_begin xfs
run /usr/sbin/mkfs.xfs -f -q "/dev/$SD"
fact "blkid /dev/$SD: $(/usr/sbin/blkid "/dev/$SD")"
mkdir -p "$MNT"
run mount -t xfs "/dev/$SD" "$MNT"
dd if=/dev/urandom of=/tmp/payload bs=1M count=8 status=none || fail "make payload"
want=$(sha256sum </tmp/payload | cut -d' ' -f1)
run cp /tmp/payload "$MNT/payload"
run sync
echo 3 >/proc/sys/vm/drop_caches
got=$(sha256sum <"$MNT/payload" | cut -d' ' -f1)
[ "$want" = "$got" ] || fail "payload checksum $got != $want"
log "8 MiB payload written and read back, sha256 $got"
step_end

# --- 5. VIP failover under writes ------------------------------------------------------------
step_begin failover
NBLK=64 # 64 x 64 KiB = 4 MiB, rewritten round-robin
dd if=/dev/urandom of=/tmp/src.bin bs=65536 count=$NBLK status=none || fail "make write source"
dd if=/tmp/src.bin of="$MNT/stream" bs=65536 oflag=direct status=none || fail "initial stream write"
rm -f /run/e2e/stop-writer /tmp/writer.log /tmp/writer.err
writer() {
  i=0
  while [ ! -e /run/e2e/stop-writer ]; do
    k=$((i % NBLK))
    now_cs
    s=$NOW_CS
    if dd if=/tmp/src.bin of="$MNT/stream" bs=65536 count=1 skip=$k seek=$k oflag=direct \
      conv=notrunc status=none 2>>/tmp/writer.err; then rc=0; else rc=$?; fi
    now_cs
    echo "$i $s $NOW_CS $rc" >>/tmp/writer.log
    i=$((i + 1))
  done
}
writer &
WRITER=$!
sleep 2
nbefore=$(wc -l </tmp/writer.log)
log "writer running ($nbefore writes in 2 s); moving the VIP storA -> storB"
now_cs
TF0=$NOW_CS
mark() { # $1 = label: prints the time since the previous mark
  now_cs
  log "  $1 $(cs_fmt $((NOW_CS - _mark)))s"
  _mark=$NOW_CS
}
_mark=$TF0
rmdir "$TPG/np/$PORTAL" || fail "rmdir portal"
mark "portal rmdir (storA)"
ip -n storA addr del "$E2E_VIP/$E2E_PREFIX" dev eth0 || fail "VIP del on storA"
mark "VIP del (storA)"
ip -n storB addr add "$E2E_VIP/$E2E_PREFIX" dev eth0 || fail "VIP add on storB"
mark "VIP add (storB)"
ip netns exec storB mkdir "$TPG/np/$PORTAL" || fail "portal mkdir from storB"
mark "portal mkdir (storB)"
# arping sends at once but lingers about 1 s; it runs in the background so TF1 is the send time.
ip netns exec storB arping -q -U -c 1 -I eth0 -s "$E2E_VIP" "$E2E_VIP" &
ARPING=$!
mark "gratuitous ARP sent (storB)"
TF1=$NOW_CS
log "VIP moved in $(cs_fmt $((TF1 - TF0)))s"
# Recovered = session LOGGED_IN again and a write that started after the move completed OK.
resumed() {
  session_logged_in "$SESSION" &&
    awk -v t="$TF1" '$2 >= t && $4 == 0 { ok = 1 } END { exit !ok }' /tmp/writer.log
}
wait_until 120 resumed || {
  touch /run/e2e/stop-writer
  dmesg | grep -E 'connection|session|iSCSI|sd ' | tail -n 20
  fail "I/O did not resume within 120 s of the VIP move (session state $(session_state "$SESSION"))"
}
now_cs
TREC=$NOW_CS
wait "$ARPING" || fail "arping -U failed"
sleep 2
touch /run/e2e/stop-writer
wait "$WRITER" || true
nwrites=$(wc -l </tmp/writer.log)
nerr=$(awk '$4 != 0' /tmp/writer.log | wc -l)
[ "$nerr" = 0 ] || fail "$nerr of $nwrites writes failed: $(head -n 3 /tmp/writer.err | tr '\n' ' ')"
[ ! -s /tmp/writer.err ] || fail "writer stderr: $(head -n 3 /tmp/writer.err | tr '\n' ' ')"
# Longest single write (the one in flight across the move) and longest gap between completions.
stall=$(awk 'BEGIN { m = 0 } { d = $3 - $2; if (d > m) m = d } END { print m }' /tmp/writer.log)
gap=$(awk 'BEGIN { m = 0 } NR > 1 { d = $3 - prev; if (d > m) m = d } { prev = $3 } END { print m }' /tmp/writer.log)
typical=$(awk 'NR <= 20 { s += $3 - $2; n++ } END { if (n) printf "%d", s / n; else print 0 }' /tmp/writer.log)
SD2=$(blockdev_of_session "$SESSION" || echo none)
[ "$SD2" = "$SD" ] || fail "LUN moved from $SD to $SD2"
[ "$(session_of_target "$IQN")" = "$SESSION" ] || fail "a new session replaced $SESSION"
est=$(ip netns exec storB ss -Htn state established "sport = :3260" | awk '{print $3 " <- " $4}' | tr '\n' ' ')
[ -n "$est" ] || fail "no established iSCSI connection in storB"
fact "failover: VIP move took $(cs_fmt $((TF1 - TF0)))s; I/O resumed $(cs_fmt $((TREC - TF0)))s after the move began, $(cs_fmt $((TREC - TF1)))s after the gratuitous ARP"
fact "failover: longest single O_DIRECT 64 KiB write (stall) = $(cs_fmt "$stall")s; longest gap between completions = $(cs_fmt "$gap")s; typical write = $(cs_fmt "$typical")s; $nwrites writes, 0 errors"
fact "failover: session $SESSION kept, /dev/$SD kept, storB connection: $est"
# the kernel's lines since the move began (dmesg timestamps are uptime seconds too)
dmesg | awk -v t="$TF0" '{ s = $0; sub(/^\[ */, "", s); if (s + 0 >= t / 100) print }' | tail -n 15 |
  while IFS= read -r l; do fact "dmesg: $l"; done
grep -E 'conn|recovery|session|Kernel reported' /run/e2e/iscsid.log 2>/dev/null | tail -n 10 |
  while IFS= read -r l; do fact "iscsid: $l"; done
! dmesg | grep -qE 'I/O error|blk_update_request|metadata I/O|xfs_do_force_shutdown' || fail "kernel logged I/O errors"
echo 3 >/proc/sys/vm/drop_caches
cmp /tmp/src.bin "$MNT/stream" || fail "stream data differs after failover"
got=$(sha256sum <"$MNT/payload" | cut -d' ' -f1)
[ "$want" = "$got" ] || fail "payload checksum after failover $got != $want"
log "data intact after failover"
step_end

# --- 6. logout and teardown ------------------------------------------------------------------
step_begin logout
run umount "$MNT"
run /usr/sbin/iscsiadm -m node -T "$IQN" -p "$PORTAL" --logout
wait_until 10 sh -c "! test -e /sys/block/$SD" || fail "/sys/block/$SD still present after logout"
run /usr/sbin/iscsiadm -m node -T "$IQN" -p "$PORTAL" -o delete
/usr/sbin/iscsiadm -m session >/dev/null 2>&1 && rc=0 || rc=$?
[ "$rc" = 21 ] || fail "iscsiadm -m session rc=$rc after logout (want 21, no sessions)"
lio_teardown
[ ! -e "$TARGET_CFG/iscsi/$IQN" ] || fail "LIO target still present after teardown"
[ ! -e "$DEV_CFG" ] || fail "LIO backstore still present after teardown"
vip_move storB storA || fail "VIP back to storA"
umount /lio
step_end
