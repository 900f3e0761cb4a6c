"""Processes we start die with us, SIGKILL included.

Prefect starts its ephemeral API (uvicorn on loopback) as a child process and stops it from
an `atexit` hook, which never runs when the parent is killed: the server then listens forever.
`ApiServerTiedToUs` is Prefect's own ephemeral server with a lifeline: a small watchdog process
that blocks reading a pipe only we hold the write end of. However we end, the kernel closes
that pipe, the read returns, and the watchdog stops the server. A pipe works from any thread,
unlike `PR_SET_PDEATHSIG` (which fires when the *thread* that forked exits), so it does not
matter which of Prefect's threads first asks for a client, and it needs no code in the child.

`install_api_server()` registers it where Prefect looks for its ephemeral server, so every
flow run in this process (CLI or library) gets it without Prefect code being changed.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

from prefect.server.api.server import SubprocessASGIServer

logger = logging.getLogger(__name__)

# The watchdog: remember the target's start time (so a recycled pid is never hit), wait for
# EOF on stdin, then SIGTERM the target and SIGKILL it if it lingers.
_WATCHDOG = r"""
import os, signal, sys, time
pid = int(sys.argv[1])
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; outlive it
def started():
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None
birth = started()
sys.stdin.buffer.read()
for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
    if birth is None or started() != birth:
        break
    os.kill(pid, sig)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and started() == birth:
        time.sleep(0.05)
"""


class Lifeline:
    """A watchdog that stops `pid` as soon as this process ends (see the module docstring)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def release(self) -> None:
        """Close the pipe as dying would, and reap the watchdog once it has done its job."""
        if self.watchdog.stdin is not None and not self.watchdog.stdin.closed:
            self.watchdog.stdin.close()
        try:
            self.watchdog.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.watchdog.kill()
            self.watchdog.wait()


class ApiServerTiedToUs(SubprocessASGIServer):
    """Prefect's ephemeral API server, stopped by a lifeline if we die before `stop()`."""

    lifeline: Lifeline | None = None

    def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
        process = super()._run_uvicorn_command()
        if self.lifeline is not None:  # a retry on another port replaces the process
            self.lifeline.release()
        self.lifeline = Lifeline(process.pid)
        return process

    def stop(self) -> None:
        super().stop()
        if self.lifeline is not None:
            self.lifeline.release()
            self.lifeline = None
        install_api_server()  # a later flow in this process gets a tied server again


def install_api_server() -> None:
    """Make Prefect's ephemeral API (started on a flow's first client) one tied to us."""
    existing = SubprocessASGIServer._instances.get(None)
    if existing is None or (not isinstance(existing, ApiServerTiedToUs) and not existing.running):
        SubprocessASGIServer._instances.pop(None, None)
        ApiServerTiedToUs()  # registers itself as the instance for "any port"
    elif not isinstance(existing, ApiServerTiedToUs):
        logger.warning("Prefect's ephemeral API already runs untied to this process")
