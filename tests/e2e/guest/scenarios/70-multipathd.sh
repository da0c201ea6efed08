#!/bin/sh
# e2e-timeout: 300
#
# multipathd on the node (issue #16), as on Ubuntu Server or RHEL, beside the agent's own
# per-volume maps (every other scenario is the multipathd-off variant). multipathd and udevd run
# for real (Debian 12's multipath-tools, find_multipaths greedy: it claims every disk it is not
# told to leave alone; udevd with the storage, dm and multipath rules). On a node multipathd and
# the agent race for a new disk; here the agent's dmsetup is wrapped to run `multipath` before a
# create, so multipathd always wins. Parts:
#  modules   dm_round_robin unloaded: the agent (initiator.multipath on) loads it with modprobe,
#            warns that multipathd runs, and datera-agentctl doctor fails its multipathd check
#  claimed   a shim mount whose disk multipathd claimed first fails saying which map holds it and
#            what to do (the blacklist drop-in), never dmsetup's bare "busy"
#  drop-in   systemd/datera-agent-multipath.conf in /etc/multipath/conf.d and `multipathd
#            reconfigure`: doctor passes, the retried mount works on the agent's map (multipath
#            ran before the create again and left the disk alone), data written, and multipathd
#            refuses the disk (`multipathd add path`)
#  unmount   shim unmount: no map, no session
set -eu
# shellcheck source=SCRIPTDIR/../lib.sh
. /e2e/lib.sh

W=/tmp/e2e-mpd
POD=$W/kubelet/pods/uid-1/volumes/datera~iscsi/pv-mpd
SHIM=$W/plugins/datera~iscsi/iscsi
OPTS='{"volumeID":"vol-mpd","size":"1","kubernetes.io/fsType":"xfs","kubernetes.io/readwrite":"rw","kubernetes.io/pvOrVolumeName":"pv-mpd"}'
AGENT_PID=
SIM_PID=
MPD_PID=

dump_logs() {
  log "---- agent log (tail) ----"
  grep -v "lease\|renew" $W/agent.log 2>/dev/null | tail -n 40 | sed 's/^/  agent| /'
  log "---- multipathd (tail) ----"
  tail -n 25 $W/multipathd.log 2>/dev/null | sed 's/^/  multipathd| /'
  log "---- multipath before the agent's create (tail) ----"
  tail -n 30 $W/multipath-cli.log 2>/dev/null | sed 's/^/  multipath| /'
}
die() {
  dump_logs
  fail "$*"
}
doctor_line() { datera-agentctl --socket $W/agent.sock doctor 2>&1 | grep " multipathd " || true; }
mpath_maps() { dmsetup ls --target multipath | awk '$1 ~ /^mpath/ {print $1}'; }

# --- modules -----------------------------------------------------------------------------------
step_begin modules
mkdir -p $W /etc/multipath/conf.d
cat >/etc/multipath.conf <<'CONF'
defaults {
	user_friendly_names yes
	find_multipaths greedy
}
CONF
/usr/lib/systemd/systemd-udevd --daemon 2>$W/udevd.log || die "udevd did not start"
udevadm trigger --action=add --subsystem-match=block
udevadm settle -t 10 || log "udevadm settle timed out"
multipathd -d -s >$W/multipathd.log 2>&1 &
MPD_PID=$!
wait_until 15 multipathd show daemon || die "multipathd did not start"
rmmod dm_round_robin || die "rmmod dm_round_robin"
[ ! -e /sys/module/dm_round_robin ] || die "dm_round_robin is still loaded"
cat >$W/dmsetup <<WRAP
#!/bin/sh
# The real dmsetup; while $W/claim exists, \`multipath\` runs before a create (udev's role).
if [ -e $W/claim ]; then
  case " \$* " in *" create "*)
    udevadm settle -t 10 # the new disk's uevent through udev's rules first, as on a node
    multipath -v3 >>$W/multipath-cli.log 2>&1 || true ;;
  esac
fi
exec /sbin/dmsetup "\$@"
WRAP
chmod 755 $W/dmsetup
start_lio_sim $W 7721 10.99.0.64/26
single_config $W 7721 9811 "  dmsetup: $W/dmsetup"
start_single_agent $W 9811
wait_until 10 test -x "$SHIM" || die "the driver was not installed at $SHIM"
step_end
[ -e /sys/module/dm_round_robin ] || die "the agent did not load dm_round_robin"
grep -q "loaded kernel module dm_round_robin (modprobe)" $W/agent.log || die "no log line for modprobe"
grep -q "multipathd runs on this node" $W/agent.log || die "the agent did not warn about multipathd"
curl -s --unix-socket $W/agent.sock http://agent/v1/status | grep -q '"multipathd":true' ||
  die "/v1/status does not say multipathd runs"
line=$(doctor_line)
fact "modules doctor: $line"
case $line in FAIL*) ;; *) die "doctor did not fail multipathd without the blacklist: '$line'" ;; esac
check modules

# --- claimed -----------------------------------------------------------------------------------
step_begin claimed
touch $W/claim
mkdir -p "$POD"
out=$("$SHIM" mount "$POD" "$OPTS" 2>&1) || true
step_end
fact "claimed maps: $(dmsetup ls | tr '\n' ' ') holders: $(ls /sys/block/sd*/holders 2>/dev/null | tr '\n' ' ')"
grep "map \|held by" $W/agent.log | tail -n 5 | sed 's/^/  agent| /'
case $out in *'"Success"'*) die "the mount succeeded on a disk multipathd holds: $out" ;; esac
fact "claimed reply: $(printf '%s' "$out" | cut -c1-400)"
case $out in *"held by multipathd's map mpath"*"datera-agent.conf"*) ;; *) die "the reply does not say multipathd holds the disk: $out" ;; esac
# The agent's rollback logged the session out; multipathd dropped its map with the disk.
grep -q "addmap" $W/multipathd.log || die "multipathd made no map: $(tail -n 5 $W/multipathd.log)"
dmsetup ls | grep -q '^datera-' && die "a datera map was left: $(dmsetup ls)"
[ -z "$(ls /sys/class/iscsi_session 2>/dev/null)" ] || die "the failed mount left a session"
check claimed

# --- drop-in -----------------------------------------------------------------------------------
step_begin drop-in
cp /e2e/datera-agent-multipath.conf /etc/multipath/conf.d/datera-agent.conf
multipathd reconfigure >/dev/null || die "multipathd reconfigure"
# The unused map the failed mount left (its disk is logged out): flushed, as the message says.
for m in $(mpath_maps); do multipath -f "$m" >/dev/null 2>&1 || true; done
wait_until 10 sh -c "[ -z \"\$(dmsetup ls --target multipath | awk '\$1 ~ /^mpath/')\" ]" ||
  die "multipathd's map stays: $(dmsetup ls)"
shim_ok "the mount after the drop-in" mount "$POD" "$OPTS"
step_end
grep -qs " $POD " /proc/mounts || die "the pod dir is not a mount point"
staged=$(awk -v t="$W/state/staging/vol-mpd" '$2 == t { print $1 }' /proc/mounts)
MAP=$(dmsetup ls | awk '/^datera-/ {print $1}')
[ -n "$MAP" ] || die "no datera map"
[ -z "$(mpath_maps)" ] || die "multipathd made a map although blacklisted: $(mpath_maps)"
grep -q "blacklist" $W/multipath-cli.log 2>/dev/null || log "multipath said nothing of the blacklist (-v0)"
SD=$(blockdev_of_session "$(ls /sys/class/iscsi_session)") || die "no session disk"
add=$(multipathd add path "$SD" 2>&1 || true)
fact "drop-in staging=$staged map=$MAP 'multipathd add path $SD': $add"
[ -z "$(mpath_maps)" ] || die "multipathd took $SD after 'add path': $(mpath_maps)"
dd if=/dev/urandom of="$POD/data.bin" bs=1M count=4 2>/dev/null || die "writing into the pod dir"
sync
line=$(doctor_line)
fact "drop-in doctor: $line"
case $line in PASS*) ;; *) die "doctor does not pass multipathd with the drop-in: '$line'" ;; esac
check drop-in

# --- unmount -----------------------------------------------------------------------------------
step_begin unmount
shim_ok "shim unmount" unmount "$POD"
step_end
dmsetup ls | grep -q '^datera-' && die "the map stays after unmount: $(dmsetup ls)"
[ -z "$(ls /sys/class/iscsi_session 2>/dev/null)" ] || die "a session stays after unmount"
check unmount

kill "$AGENT_PID" "$SIM_PID" "$MPD_PID" 2>/dev/null || true
udevadm control --exit 2>/dev/null || true
wait 2>/dev/null || true
rm -rf /etc/multipath.conf /etc/multipath
