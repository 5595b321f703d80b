#!/usr/bin/env python3
"""Correct qemu-ga host clients of four shapes, as session clients for the runner.

Each shape is as correct as its shape allows; where a real client of that shape
has a trait that a hostile guest can exploit, the shape keeps the trait (it is
what the catalogue must catch) and fixes everything else. The wire bytes follow
the real clients:

- ``libvirt``: libvirt's qemu_agent.c. A plain ``guest-sync`` whose id is the
  clock in milliseconds (``virTimeMillisNow``), written as
  ``{"execute":"guest-sync", "arguments":{"id":N}}`` on its own; no 0xFF ever.
  While the sync is pending, a reply whose return is not the id is ignored;
  once synced, the connection stays synced until a timeout (or a protocol
  error), and then the next call syncs first. Commands carry no id; the next
  reply object after the sync is the answer. Lines that arrive while no call is
  pending are dropped, as libvirt's event loop drops them ("Ignoring delayed
  reply").
- ``proxmox``: Proxmox VE's PVE::QMPClient for the agent. ``guest-sync-delimited``
  with the id ``int("$$" . "0" . seq)`` and the command, without an id, in one
  write; everything up to the last 0xFF that two complete lines follow is
  skipped; the first line must return the sync id (a smaller id is an older
  sync and is skipped, another one is an error); the second line is the
  answer. A batch of calls shares one connection (``queue_execute``); any error
  closes it.
- ``per-call``: a fresh connection for every call: 0xFF, then
  ``guest-sync-delimited`` with a random 63-bit id, everything up to the
  0xFF-prefixed reply with that id skipped, then the command without an id
  and the next reply object as its answer; the connection is closed after
  the call.
- ``id-routed``: one 0xFF + ``guest-sync-delimited`` (random 63-bit id) when
  the connection is opened, then every command carries its own random id and
  only the reply with that id answers it; no sync per call, not even after a
  timeout (a late reply is dropped by its id).

All shapes: one total deadline per call (connect, sync and reply), a bounded
line buffer, a reconnect after the connection was lost, and no command sent
twice. A no-reply command (guest-shutdown, guest-suspend-*) is followed by a
marker (a sync, or an id'd guest-ping for the id-routed shape): its answer, or
the channel closing, proves the agent got past the command; silence is a
timeout.

Session contract: one JSON step per stdin line, one answer line per step.

Usage: shapes.py SHAPE SOCKET
"""

import json
import os
import random
import select
import socket
import sys
import time

# The longest line a shape buffers: a guest-exec-status reply with both streams
# at qemu-ga's 16 MiB cap is about 43 MiB of base64.
MAX_LINE = 48 << 20

NO_REPLY = frozenset(
    ["guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"]
)


class Failure(Exception):
    """A failed call, with the session contract's class."""

    def __init__(self, cls, desc):
        super().__init__(desc)
        self.cls = cls
        self.desc = desc


class Lost(Failure):
    """The connection is gone (EOF, reset) or its stream cannot be followed."""

    def __init__(self, desc, cls="Disconnected"):
        super().__init__(cls, desc)


class Retry(Failure):
    """The connection was lost before the command was sent: a new one may be tried."""

    def __init__(self, desc):
        super().__init__("Disconnected", desc)


def compact(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def random_id():
    return random.getrandbits(63) | (1 << 62)


class Conn:
    """One socket with a line buffer; every read is bounded by a deadline."""

    def __init__(self, path, deadline):
        # A refused or missing socket (a unix-listen agent restarting) is retried every
        # 20 ms until the call's deadline, as PVE::QMPClient retries its connect.
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                self.sock.connect(path)
                break
            except socket.timeout as err:
                self.sock.close()
                raise Failure("Timeout", f"connect: {err}") from err
            except OSError as err:
                self.sock.close()
                if deadline - time.monotonic() <= 0.02:
                    raise Failure("Disconnected", f"connect: {err}") from err
                time.sleep(0.02)
        self.sock.setblocking(False)
        self.buf = bytearray()
        # Where the search for the next newline resumes.
        self.scanned = 0

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        except OSError as err:
            raise Lost(f"write: {err}") from err
        finally:
            self.sock.setblocking(False)

    def fill(self, deadline):
        """Reads what the socket has, waiting until `deadline`; False on timeout."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        readable, _, _ = select.select([self.sock], [], [], left)
        if not readable:
            return False
        try:
            chunk = self.sock.recv(1 << 20)
        except BlockingIOError:
            return True
        except OSError as err:
            raise Lost(f"read: {err}") from err
        if not chunk:
            raise Lost("the agent closed the connection")
        self.buf += chunk
        return True

    def take_line(self):
        """The next complete line in the buffer (without its newline), or None."""
        end = self.buf.find(b"\n", self.scanned)
        if end < 0:
            self.scanned = len(self.buf)
            if len(self.buf) > MAX_LINE:
                raise Lost(f"a line longer than {MAX_LINE} bytes", "Protocol")
            return None
        line = bytes(self.buf[:end])
        del self.buf[: end + 1]
        self.scanned = 0
        return line

    def read_line(self, deadline):
        """The next line, or None when `deadline` passes first."""
        while True:
            line = self.take_line()
            if line is not None:
                return line
            if not self.fill(deadline):
                return None

    def drop_pending(self):
        """Drops the complete lines the socket holds now (what arrived between calls)."""
        while True:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                break
            try:
                chunk = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError as err:
                raise Lost(f"read: {err}") from err
            if not chunk:
                raise Lost("the agent closed the connection")
            self.buf += chunk
        end = self.buf.rfind(b"\n")
        if end >= 0:
            del self.buf[: end + 1]
        self.scanned = 0


def parse(line):
    """A line as JSON, or None when it is not JSON (garbage, bad UTF-8, too deep).

    Leading 0xFF bytes are framing (qemu-ga prefixes a guest-sync-delimited reply
    with one), not part of the JSON.
    """
    try:
        return json.loads(line.lstrip(b"\xff").decode("utf-8"))
    except (ValueError, RecursionError):
        return None


def is_reply(obj):
    return isinstance(obj, dict) and ("return" in obj or "error" in obj)


def answer_of(obj):
    """A reply object as the call's result, or a Failure."""
    if "error" in obj:
        if "return" in obj:
            raise Failure("Protocol", "a reply with both return and error")
        error = obj["error"]
        if not isinstance(error, dict) or not isinstance(error.get("class"), str):
            raise Failure("Protocol", f"a malformed error member: {json.dumps(error)[:200]}")
        desc = error.get("desc")
        raise Failure(error["class"], desc if isinstance(desc, str) else "")
    return obj["return"]


def same_integer(returned, sent):
    return isinstance(returned, int) and not isinstance(returned, bool) and returned == sent


class Shape:
    """What every shape shares: the connection's life and the per-call deadline."""

    def __init__(self, path):
        self.path = path
        self.conn = None

    def drop(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def connection(self, deadline):
        if self.conn is None:
            self.conn = Conn(self.path, deadline)
            self.opened(deadline)
        return self.conn

    def opened(self, deadline):
        """Called once a new connection is open."""

    def step(self, name, arguments, timeout_s):
        deadline = time.monotonic() + timeout_s
        try:
            return self.call(name, arguments, deadline)
        except Lost:
            self.drop()
            raise

    def call(self, name, arguments, deadline):
        raise NotImplementedError

    def timeout(self, what):
        return Failure("Timeout", f"no {what} before the call's deadline")


class Libvirt(Shape):
    def __init__(self, path):
        super().__init__(path)
        self.in_sync = False

    def opened(self, deadline):
        self.in_sync = False

    def sync(self, conn, deadline):
        # qemuAgentGuestSync: garbage on the first sync is expected (a previous
        # session's partial line); it ends that sync and a second one is sent.
        first = True
        sid = self.send_sync(conn)
        while True:
            line = conn.read_line(deadline)
            if line is None:
                raise self.timeout("reply to guest-sync")
            obj = parse(line)
            if obj is None and first:
                first = False
                sid = self.send_sync(conn)
                continue
            # Events, errors and other returns are not this sync's reply.
            if is_reply(obj) and same_integer(obj.get("return"), sid):
                self.in_sync = True
                return

    @staticmethod
    def send_sync(conn):
        sid = int(time.time() * 1000)
        conn.send(b'{"execute":"guest-sync", "arguments":{"id":%d}}\n' % sid)
        return sid

    def next_reply(self, conn, deadline):
        while True:
            line = conn.read_line(deadline)
            if line is None:
                return None
            obj = parse(line)
            if isinstance(obj, dict) and "event" in obj:
                continue
            if not is_reply(obj):
                self.in_sync = False
                raise Failure("Protocol", f"not a reply: {line[:200]!r}")
            return obj

    def call(self, name, arguments, deadline):
        conn = self.connection(deadline)
        try:
            conn.drop_pending()
        except Lost:
            # Closed while idle (the agent's end of a unix-listen socket): reconnect.
            self.drop()
            conn = self.connection(deadline)
        if not self.in_sync:
            self.sync(conn, deadline)
        request = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        if name in NO_REPLY:
            marker = int(time.time() * 1000) + 1
            conn.send(compact(request) + b"\n")
            conn.send(b'{"execute":"guest-sync", "arguments":{"id":%d}}\n' % marker)
            try:
                obj = self.next_reply(conn, deadline)
            except Lost:
                return {}
            if obj is None:
                self.in_sync = False
                raise self.timeout("sign of life after " + name)
            if same_integer(obj.get("return"), marker):
                return {}
            return answer_of(obj)
        conn.send(compact(request) + b"\n")
        obj = self.next_reply(conn, deadline)
        if obj is None:
            self.in_sync = False
            raise self.timeout("reply")
        return answer_of(obj)


class Proxmox(Shape):
    def __init__(self, path):
        super().__init__(path)
        self.seq = 0

    def next_id(self):
        self.seq += 1
        return int(f"{os.getpid()}0{self.seq}")

    @staticmethod
    def split_at_last_ff(buf):
        """PVE's `^.*\\xff(LINE\\nLINE)\\n(.*)$`: the last 0xFF two complete lines follow."""
        end = len(buf)
        while True:
            ff = buf.rfind(b"\xff", 0, end)
            if ff < 0:
                return None
            first = buf.find(b"\n", ff + 1)
            second = buf.find(b"\n", first + 1) if first >= 0 else -1
            if second >= 0:
                return bytes(buf[ff + 1 : first]), bytes(buf[first + 1 : second]), second + 1
            end = ff

    def sync_state(self, line, sid):
        """'ok', 'older' (a previous sync's reply) or raises for another id."""
        obj = parse(line)
        returned = obj.get("return") if isinstance(obj, dict) else None
        # Perl compares the id as a number: 850201.0 is 850201; a string is not an id here.
        if isinstance(returned, bool) or not isinstance(returned, (int, float)):
            raise Failure("Protocol", f"sync reply without the id: {line[:200]!r}")
        if returned < sid:
            return "older"
        if returned != sid:
            raise Failure("Protocol", f"got wrong command id {returned} (expected {sid})")
        return "ok"

    def call(self, name, arguments, deadline):
        try:
            return self.exchange(name, arguments, deadline)
        except Failure:
            # Any error closes the connection (check_queue closes it on error).
            self.drop()
            raise

    def exchange(self, name, arguments, deadline):
        conn = self.connection(deadline)
        sid = self.next_id()
        request = {"execute": name, "arguments": arguments or {}}
        data = compact({"execute": "guest-sync-delimited", "arguments": {"id": sid}}) + b"\n"
        data += compact(request) + b"\n"
        marker = None
        if name in NO_REPLY:
            marker = self.next_id()
            data += compact({"execute": "guest-sync-delimited", "arguments": {"id": marker}}) + b"\n"
        conn.send(data)
        if marker is not None:
            return self.no_reply(conn, sid, marker, deadline)
        # Where the buffer may hold a newline not yet looked at (a 22 MiB line is not
        # searched again for every piece of it).
        fresh = 0
        while True:
            found = None
            if conn.buf.find(b"\n", fresh) >= 0:
                found = self.split_at_last_ff(conn.buf)
            fresh = len(conn.buf)
            if found is not None:
                fresh = 0
                sync_line, answer_line, used = found
                del conn.buf[:used]
                conn.scanned = 0
                if self.sync_state(sync_line, sid) == "older":
                    continue
                obj = parse(answer_line)
                if not is_reply(obj):
                    raise Failure("Protocol", f"not a reply: {answer_line[:200]!r}")
                return answer_of(obj)
            if len(conn.buf) > MAX_LINE:
                raise Lost(f"more than {MAX_LINE} bytes without an answer", "Protocol")
            if not conn.fill(deadline):
                raise self.timeout("reply")

    def no_reply(self, conn, sid, marker, deadline):
        """The command's sync, then its error or the marker's sync reply (or EOF)."""
        synced = False
        while True:
            try:
                line = conn.read_line(deadline)
            except Lost:
                if synced:
                    return {}
                raise
            if line is None:
                raise self.timeout("sign of life")
            if b"\xff" in line:
                obj = parse(line[line.rindex(b"\xff") + 1 :])
                returned = obj.get("return") if isinstance(obj, dict) else None
                if same_integer(returned, sid):
                    synced = True
                elif synced and same_integer(returned, marker):
                    return {}
                continue
            if synced:
                obj = parse(line)
                if is_reply(obj):
                    return answer_of(obj)


class PerCall(Shape):
    def call(self, name, arguments, deadline):
        while True:
            conn = Conn(self.path, deadline)
            try:
                return self.exchange(conn, name, arguments, deadline)
            except Retry:
                # Lost before the command went out (a unix-listen agent that died with
                # the connection in its backlog): nothing was sent twice, so try again.
                continue
            finally:
                conn.close()

    @staticmethod
    def sync(conn, deadline):
        sid = random_id()
        conn.send(
            b"\xff" + compact({"execute": "guest-sync-delimited", "arguments": {"id": sid}}) + b"\n"
        )
        while True:
            line = conn.read_line(deadline)
            if line is None:
                raise Failure("Timeout", "no reply to guest-sync-delimited before the deadline")
            if b"\xff" not in line:
                continue
            obj = parse(line[line.rindex(b"\xff") + 1 :])
            if is_reply(obj) and same_integer(obj.get("return"), sid):
                return

    @staticmethod
    def next_reply(conn, deadline):
        while True:
            line = conn.read_line(deadline)
            if line is None:
                return None
            obj = parse(line)
            if isinstance(obj, dict) and "event" in obj:
                continue
            if not is_reply(obj):
                raise Failure("Protocol", f"not a reply: {line[:200]!r}")
            return obj

    def exchange(self, conn, name, arguments, deadline):
        try:
            self.sync(conn, deadline)
        except Lost as lost:
            if time.monotonic() < deadline:
                raise Retry(lost.desc) from lost
            raise
        request = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        if name in NO_REPLY:
            marker = random_id()
            conn.send(
                compact(request)
                + b"\n"
                + compact({"execute": "guest-sync", "arguments": {"id": marker}})
                + b"\n"
            )
            try:
                obj = self.next_reply(conn, deadline)
            except Lost:
                return {}
            if obj is None:
                raise Failure("Timeout", f"no sign of life after {name} before the deadline")
            if same_integer(obj.get("return"), marker):
                return {}
            return answer_of(obj)
        conn.send(compact(request) + b"\n")
        obj = self.next_reply(conn, deadline)
        if obj is None:
            raise Failure("Timeout", "no reply before the deadline")
        return answer_of(obj)


class IdRouted(Shape):
    def opened(self, deadline):
        PerCall.sync(self.conn, deadline)

    def connection(self, deadline):
        try:
            return super().connection(deadline)
        except Failure:
            # A connection whose sync failed is not kept: the next call starts over.
            self.drop()
            raise

    @staticmethod
    def wait_for(conn, ids, deadline):
        """The reply carrying one of `ids`; None at the deadline."""
        while True:
            line = conn.read_line(deadline)
            if line is None:
                return None
            obj = parse(line)
            if isinstance(obj, dict) and obj.get("id") in ids and not isinstance(obj.get("id"), bool):
                return obj

    def call(self, name, arguments, deadline):
        conn = self.connection(deadline)
        cid = random_id()
        request = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        request["id"] = cid
        data = compact(request) + b"\n"
        marker = None
        if name in NO_REPLY:
            marker = random_id()
            data += compact({"execute": "guest-ping", "id": marker}) + b"\n"
        conn.send(data)
        try:
            obj = self.wait_for(conn, {cid} if marker is None else {cid, marker}, deadline)
        except Lost:
            if marker is not None:
                return {}
            raise
        if obj is None:
            # Whatever partial line is buffered may never be completed (an agent that
            # died mid-reply): drop it, so the next reply starts a clean line.
            conn.buf.clear()
            conn.scanned = 0
            raise Failure("Timeout", "no reply with the command's id before the deadline")
        if marker is not None and obj.get("id") == marker:
            return {}
        if not is_reply(obj):
            raise Failure("Protocol", "a reply with the command's id but neither return nor error")
        return answer_of(obj)


SHAPES = {"libvirt": Libvirt, "proxmox": Proxmox, "per-call": PerCall, "id-routed": IdRouted}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in SHAPES:
        sys.stderr.write(f"usage: shapes.py {'|'.join(SHAPES)} SOCKET\n")
        return 2
    shape = SHAPES[sys.argv[1]](sys.argv[2])
    for text in sys.stdin:
        if not text.strip():
            continue
        step = json.loads(text)
        try:
            value = shape.step(
                step["execute"], step.get("arguments") or {}, step.get("timeout_ms", 3000) / 1000.0
            )
            out = {"id": step.get("id"), "return": value}
        except Failure as failure:
            out = {"id": step.get("id"), "error": {"class": failure.cls, "desc": failure.desc}}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    shape.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
