"""Several copies of one server, each a forked process serving the socket the supervisor bound.

`canhbao web --workers N` uses it: one process is one core (the GIL), so a machine with several
cores answers more with several processes on the same port. The kernel hands each connection to
one of the processes waiting on the shared socket. The supervisor only watches: a process that
dies is replaced (after a pause if it died young, so that a process that cannot start does not
spin), and SIGTERM or SIGINT stops every process, letting the requests in progress finish.

Fork, not spawn: the children start at once with what the parent already imported, and share
its memory pages. The parent must therefore hold no thread and no database connection when it
forks (the caller disposes of its engine first).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

STOPPING = (signal.SIGTERM, signal.SIGINT)
WATCHED = {signal.SIGCHLD, *STOPPING}
YOUNG = 1.0  # seconds: a child that dies younger than this is restarted only after a pause as long
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


class Supervisor:
    """`count` children running `serve()` (which returns when the child should exit); see the module doc."""

    def __init__(self, count: int, serve: Callable[[], None], grace: float = 10.0) -> None:
        self.count, self.serve, self.grace = count, serve, grace
        self.children: dict[int, float] = {}
        """Live children: pid → when it started (monotonic)."""

    def run(self) -> None:
        """Start the children and keep them running until SIGTERM or SIGINT; return once every one has ended."""
        signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)  # taken one at a time by sigtimedwait below
        try:
            for _ in range(self.count):
                self._start()
            while (received := signal.sigtimedwait(WATCHED, 1.0)) is None or received.si_signo not in STOPPING:
                self._replace_dead()
            self._stop()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)

    def _start(self) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: serve, and never return into the parent's code
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, WATCHED)
                _die_with(parent)
                self.serve()
                code = 0
            except BaseException:
                log.exception("web.process_failed", pid=os.getpid())
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.children[pid] = time.monotonic()
        log.info("web.process_started", pid=pid)

    def _replace_dead(self) -> None:
        for pid, status, lived in self._reaped():
            log.error("web.process_died", pid=pid, exit_code=os.waitstatus_to_exitcode(status), seconds=round(lived, 1))
            if lived < YOUNG:
                time.sleep(YOUNG)
            self._start()

    def _reaped(self) -> list[tuple[int, int, float]]:
        """(pid, wait status, seconds it lived) of every child that has ended since last asked, forgotten."""
        ended = []
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if (started := self.children.pop(pid, None)) is not None:
                ended.append((pid, status, time.monotonic() - started))
        return ended

    def _stop(self) -> None:
        """SIGTERM to every child, SIGKILL to those still there after `grace` seconds; all reaped."""
        for pid in self.children:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while self.children and time.monotonic() < deadline:
            self._reaped()
            time.sleep(0.05)
        for pid in self.children:
            log.error("web.process_killed", pid=pid)
            _signal(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self.children.clear()


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already ended, not reaped yet
        os.kill(pid, signum)


def _die_with(parent: int) -> None:
    """Have the kernel SIGTERM this child if the supervisor dies (even by SIGKILL): no orphan keeps the port."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(0)
