#!/bin/sh
# The naive qemu-ga client: send the request, print the first line that comes back.
#
# No sync, no 0xFF, no id check, no deadline of its own beyond socat's: `-t 2` keeps
# reading for 2 s after the request is written, then gives up. Whatever line arrives
# first is taken as the reply, stale or not; no reply at all prints nothing and still
# exits 0, as the bare pipeline does.
#
# Usage: oneshot.sh SOCKET REQUEST_JSON
# As a qga-harness oneshot client: --client 'clients/socat/oneshot.sh {socket} {request}'
# (the same pipeline as an inline template:
#  --client 'printf "%s\n" {request} | socat -t 2 - UNIX-CONNECT:{socket} | head -n 1')
set -u
if [ $# -ne 2 ]; then
    echo "usage: $0 SOCKET REQUEST_JSON" >&2
    exit 2
fi
printf '%s\n' "$2" | socat -t 2 - "UNIX-CONNECT:$1" | head -n 1
