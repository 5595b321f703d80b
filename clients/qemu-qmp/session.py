#!/usr/bin/env python3
"""qga-harness session adapter for the PyPI package `qemu.qmp`.

It drives `qemu.qmp.legacy.QEMUMonitorProtocol` exactly as QEMU's own
`qemu-ga-client` tool (python/qemu/utils/qemu_ga_client.py) does, so that the
harness judges the library the way that tool's users meet it:

- connect with `negotiate=False` (qemu-ga sends no greeting);
- before every command except guest-ping: `settimeout(T)`, `guest-ping`
  (a timeout there is "Agent seems not alive"), then `guest-sync` with a
  random 32-bit id, repeated until the returned int equals the id;
- the command itself through `cmd()`, under the same sticky timeout;
- guest-shutdown and guest-suspend-*: a timeout counts as success, as the
  tool's `shutdown()` and `suspend()` do.

The released package does not ship `qemu.utils.qemu_ga_client`, so the tool's
sequence is reproduced here call for call. Nothing the library does wrong is
corrected: its exceptions are only translated into the session contract.

Session contract (one JSON line per step on stdin, one answer line on stdout):
  in:  {"id": N, "execute": NAME, "arguments": {...}, "timeout_ms": T}
  out: {"id": N, "return": V}
       {"id": N, "error": {"class": C, "desc": D}}
Client-side failures use the classes Timeout, Disconnected and Protocol; an
agent's error keeps its own class.

Usage: session.py SOCKET
"""

import asyncio
import json
import random
import sys
from typing import Any, Dict, Optional, Tuple

from qemu.qmp import ConnectError, ExecInterruptedError, ExecuteError, StateError
from qemu.qmp.error import ProtocolError
from qemu.qmp.legacy import QEMUMonitorProtocol

# The tool treats a timeout of these as success: they send nothing on success.
NO_REPLY_COMMANDS = frozenset(
    ["guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"]
)


class ClientFailure(Exception):
    """A failure to report with one of the session contract's classes."""

    def __init__(self, error_class: str, desc: str):
        super().__init__(desc)
        self.error_class = error_class
        self.desc = desc


def describe(err: BaseException) -> str:
    text = str(err).strip()
    name = type(err).__name__
    return f"{name}: {text}" if text else name


class Session:
    """One long-lived library connection, reopened only after the library lost it.

    The tool opens a new connection on every run; a session that keeps the
    connection while it works and opens a new one once the library has dropped
    it is the closest long-lived equivalent.
    """

    def __init__(self, address: str):
        self.address = address
        self.qga: Optional[QEMUMonitorProtocol] = None

    def connect(self) -> QEMUMonitorProtocol:
        if self.qga is not None:
            return self.qga
        qga = QEMUMonitorProtocol(self.address)
        try:
            qga.connect(negotiate=False)
        except ConnectError as err:
            raise ClientFailure("Disconnected", describe(err)) from err
        except Exception as err:  # pylint: disable=broad-except
            # connect() ends with `assert self.runstate == Runstate.RUNNING`
            # (protocol.py L425), but the reader it has just started may already
            # have failed on the first line the agent sent: the AssertionError
            # escapes unwrapped. close() then raises the reader's own exception.
            self.qga = qga
            raise interrupted(err, self.drop(), "connect") from err
        self.qga = qga
        return qga

    def drop(self) -> Optional[BaseException]:
        """Closes the connection; returns the root cause the library re-raises, if any.

        `ExecInterruptedError` says only "Disconnected": the library keeps the
        reader's real exception and raises it from `close()` (its documented
        way to learn why the connection ended).
        """
        qga, self.qga = self.qga, None
        if qga is None:
            return None
        try:
            qga.close()
        except BaseException as err:  # pylint: disable=broad-except
            return err
        return None

    def call(self, qga: QEMUMonitorProtocol, name: str, arguments: Dict[str, Any]) -> Any:
        """`cmd()` as the tool's `__getattr__` wrapper calls it: keyword arguments."""
        return qga.cmd(name, **arguments)

    def sync(self, qga: QEMUMonitorProtocol, timeout: float) -> None:
        """The tool's `QemuGuestAgentClient.sync()`: ping, then the random-id loop."""
        qga.settimeout(timeout)
        try:
            self.call(qga, "guest-ping", {})
        except asyncio.TimeoutError as err:
            raise ClientFailure("Timeout", "Agent seems not alive") from err
        uid = random.randint(0, (1 << 32) - 1)
        # No bound on the iterations: the tool has none.
        while True:
            ret = self.call(qga, "guest-sync", {"id": uid})
            if isinstance(ret, int) and int(ret) == uid:
                break

    def step(self, name: str, arguments: Dict[str, Any], timeout: float) -> Any:
        qga = self.connect()
        try:
            if name != "guest-ping":
                self.sync(qga, timeout)
            qga.settimeout(timeout)
            if name in NO_REPLY_COMMANDS:
                try:
                    self.call(qga, name, arguments)
                except asyncio.TimeoutError:
                    pass
                return {}
            return self.call(qga, name, arguments)
        except ClientFailure:
            raise
        except asyncio.TimeoutError as err:
            raise ClientFailure("Timeout", f"no reply within {timeout:g} s ({describe(err)})") from err
        except ExecuteError as err:
            raise ClientFailure(err.error_class, err.error.error.desc) from err
        except (ExecInterruptedError, StateError) as err:
            # The reader failed during the call (ExecInterruptedError) or before it
            # began (StateError: "QMPClient is disconnecting").
            raise interrupted(err, self.drop()) from err
        except ProtocolError as err:
            # A routed reply that the library could not read (BadReplyError):
            # the connection survives it.
            raise ClientFailure("Protocol", describe(err)) from err


def interrupted(
    err: BaseException, cause: Optional[BaseException], during: str = "call"
) -> ClientFailure:
    """Classifies an interrupted call by the reader's root cause."""
    if cause is None:
        return ClientFailure("Disconnected", f"{during}: {describe(err)}")
    text = f"{during}: {describe(err)}; cause: {describe(cause)}"
    # ProtocolError: a line the library would not accept (an id-less error,
    # undecodable JSON, a non-object); ValueError: asyncio's readline limit.
    if isinstance(cause, (ProtocolError, ValueError)):
        return ClientFailure("Protocol", text)
    return ClientFailure("Disconnected", text)


def parse_step(line: str) -> Tuple[Any, str, Dict[str, Any], float]:
    step = json.loads(line)
    if not isinstance(step, dict):
        raise ValueError("a step must be a JSON object")
    name = step.get("execute")
    if not isinstance(name, str):
        raise ValueError("a step needs a string 'execute'")
    arguments = step.get("arguments", {})
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ValueError("'arguments' must be an object")
    timeout_ms = step.get("timeout_ms", 3000)
    if not isinstance(timeout_ms, (int, float)) or timeout_ms < 0:
        raise ValueError("'timeout_ms' must be a non-negative number")
    return step.get("id"), name, arguments, timeout_ms / 1000.0


def answer(obj: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    if len(sys.argv) != 2:
        sys.stderr.write("usage: session.py SOCKET\n")
        return 2
    session = Session(sys.argv[1])
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            step_id, name, arguments, timeout = parse_step(line)
        except ValueError as err:
            answer({"id": None, "error": {"class": "Protocol", "desc": f"bad step line: {err}"}})
            continue
        try:
            value = session.step(name, arguments, timeout)
        except ClientFailure as failure:
            answer({"id": step_id, "error": {"class": failure.error_class, "desc": failure.desc}})
            continue
        except Exception as err:  # pylint: disable=broad-except
            # Whatever else the library raises at its caller (a KeyError from a
            # reply's shape, a TypeError): the call failed inside the client.
            answer({"id": step_id, "error": {"class": "Protocol", "desc": describe(err)}})
            continue
        answer({"id": step_id, "return": value})
    session.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
