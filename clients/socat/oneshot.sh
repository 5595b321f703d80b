#!/bin/sh
# The naive qemu-ga client: send the request, print the first line that comes back.
#
# No sync, no 0xFF, no id check, no deadline of its own beyond socat's: `-t 2` keeps
# reading for 2 s after the request is written, then gives up. Whatever line arrives
# first is taken as the reply, stale or not.
#
# Usage: oneshot.sh SOCKET REQUEST_JSON
# As a qga-harness oneshot client: --client 'clients/socat/oneshot.sh {socket} {request}'
set -u
if [ $# -ne 2 ]; then
    echo "usage: $0 SOCKET REQUEST_JSON" >&2
    exit 2
fi
reply=$(printf '%s\n' "$2" | socat -t 2 - "UNIX-CONNECT:$1" | head -n 1)
if [ -z "$reply" ]; then
    echo "no reply" >&2
    exit 1
fi
printf '%s\n' "$reply"
