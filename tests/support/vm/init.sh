#!/dmb/bin/busybox sh
# /init of the book's test guests (tests/support/vm/): mount the kernel's
# file systems, load the virtio and 9p modules, mount the host's shared
# folders read-only at the same paths, then serve commands on the
# virtio-serial port named dmb.cmd. The protocol is in channel.rs.
/dmb/bin/busybox mount -t proc proc /proc
/dmb/bin/busybox --install -s /dmb/bin
export PATH=/dmb/bin:/usr/sbin:/usr/bin HOME=/root
say() { echo "dmb-init: $*"; }

mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm /sys/fs/cgroup
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup || say "no cgroup2"

# Built from each module's depends= by the xtask: dependencies first.
for m in $(cat /dmb/modules.order); do
    insmod "/dmb/modules/$m.ko" || say "insmod $m failed"
done

# The host passes dmb_shares=TAG:/path,TAG:/path on the kernel command line.
for share in $(echo "$dmb_shares" | tr , ' '); do
    tag=${share%%:*}
    dir=${share#*:}
    mkdir -p "$dir"
    mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose "$tag" "$dir" ||
        say "cannot mount $tag on $dir"
done

port=
tries=0
while [ -z "$port" ] && [ $tries -lt 100 ]; do
    for n in /sys/class/virtio-ports/*/name; do
        if [ -r "$n" ] && [ "$(cat "$n")" = dmb.cmd ]; then
            p=/dev/$(basename "$(dirname "$n")")
            [ -c "$p" ] && port=$p
        fi
    done
    [ -z "$port" ] && sleep 0.1
    tries=$((tries + 1))
done
if [ -z "$port" ]; then
    say "no virtio-serial port named dmb.cmd"
    exec sh
fi
say "serving commands on $port"

# RUN ID SECONDS HEX: runs the hex-encoded script with sh in its own session
# (so a timeout kills all it started), stdin from /dev/null, and answers
# OUT ID N + N bytes, ERR ID N + N bytes, END ID STATUS, where STATUS is the
# exit status, `timeout` (killed by the watchdog) or `killed` (the script's
# shell died without one, e.g. by the OOM killer).
run_one() {
    d=/tmp/.dmb/$1
    mkdir -p "$d"
    echo "$3" | xxd -r -p > "$d/cmd"
    setsid sh -c 'sh "$1/cmd" > "$1/out" 2> "$1/err" < /dev/null; echo $? > "$1/rc"' sh "$d" &
    pid=$!
    setsid sh -c "sleep $2; touch '$d/timedout'; kill -KILL -$pid" > /dev/null 2>&1 &
    dog=$!
    wait $pid
    kill -KILL -$dog 2> /dev/null
    if [ -e "$d/rc" ]; then
        status=$(cat "$d/rc")
    elif [ -e "$d/timedout" ]; then
        status=timeout
    else
        status=killed
    fi
    echo "OUT $1 $(wc -c < "$d/out")" >&3
    cat "$d/out" >&3
    echo "ERR $1 $(wc -c < "$d/err")" >&3
    cat "$d/err" >&3
    echo "END $1 $status" >&3
    rm -rf "$d"
}

exec 3<> "$port"
while :; do
    # EOF: the host side is not connected (yet, or any more).
    if ! read -r verb id secs arg <&3; then
        sleep 0.2
        continue
    fi
    case $verb in
        PING) echo "READY $id $(uname -r)" >&3 ;;
        RUN) run_one "$id" "$secs" "$arg" ;;
        *) echo "BAD $id" >&3 ;;
    esac
done
