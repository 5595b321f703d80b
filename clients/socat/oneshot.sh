#!/bin/sh
# The naive qemu-ga client: send the request with socat, print the first line that comes
# back.
#
# No sync, no 0xFF, no id check: whatever line arrives first is taken as the reply, stale
# or not, and no reply at all prints nothing and still exits 0, as the bare pipeline does.
#
# The request is fed with stdin held open for TIMEOUT_S seconds. With stdin closed at once
# (`printf ... | socat ...`), socat half-closes the socket, and QEMU's chardev takes a
# half-close for a disconnect: the client gets EOF and never the reply, which is left in
# the channel for the next client. Holding stdin open is the one-liner that works there.
#
# Usage: oneshot.sh SOCKET REQUEST_JSON [TIMEOUT_S]   (TIMEOUT_S defaults to 2)
# As a qga-harness oneshot client:
#   --client 'clients/socat/oneshot.sh {socket} {request} {timeout_s}'
set -u
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: $0 SOCKET REQUEST_JSON [TIMEOUT_S]" >&2
    exit 2
fi
#
# The answer is the first line, so the script ends as soon as it has printed it: the
# held-open stdin and socat are ended then, and a verdict is about the protocol, never
# about the wrapper's sleep. (FIFOs instead of a pipeline, so that the script knows the
# two processes to end.)
dir=$(mktemp -d) || exit 2
trap 'rm -rf "$dir"' EXIT
mkfifo "$dir/in" "$dir/out" || exit 2
{ printf '%s\n' "$2"; exec sleep "${3:-2}"; } >"$dir/in" &
hold=$!
socat -t 2 - "UNIX-CONNECT:$1" <"$dir/in" >"$dir/out" &
conn=$!
head -n 1 <"$dir/out"
kill "$hold" "$conn" 2>/dev/null
wait
exit 0
