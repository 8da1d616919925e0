"""Running `aggregator run` as a real subprocess in tests."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import psutil

from tests.conftest import Workspace, free_port

FAST_POLLING = {
    "interval": "3s", "min_interval": "2s", "max_interval": "40s", "jitter": 0, "adaptive": False,
    "dispatch_every": "0.25s", "timeout": "5s", "deadline": "8s", "shutdown_timeout": "5s", "parse_workers": 1,
}


# Every daemon a test started; conftest kills those still running when the test ends.
STARTED: list["Daemon"] = []


class Daemon:
    def __init__(self, ws: Workspace, new_session: bool = False, env: dict[str, str] | None = None, **polling: object):
        """``new_session``: the daemon leads a process group of its own, so that
        its processes (parser workers, the forkserver) are known by group id
        (see ``group``) rather than by what they are called. ``env``: more
        environment variables for it."""
        self.ws = ws
        self.new_session = new_session
        self.env = env or {}
        self.port = free_port()
        ws.write_config(http={"port": self.port, "base_url": f"http://127.0.0.1:{self.port}/"},
                        polling={**FAST_POLLING, **polling}, output={"debounce": "0.3s", "dir": "public"})
        self.log_path = ws.root / f"daemon-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> "Daemon":
        STARTED.append(self)  # killed after the test by conftest's leftover_daemons, whatever happens
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "aggregator", "run", "--config", str(self.ws.config_path)],
                                     stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                                     start_new_session=self.new_session)
        log.close()
        if wait:
            self.wait_until(lambda: self.get("/healthz")[0] == 200, 30, "the daemon to become healthy")
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            body = response.read()
            conn.close()
            return response.status, body
        except OSError:
            return 0, b""

    def health(self) -> dict[str, Any]:
        """/healthz as JSON ({} when it does not answer)."""
        status, body = self.get("/healthz")
        return json.loads(body) if status in (200, 503) and body else {}

    def last_dispatch(self) -> float:
        """When the dispatcher last ran (time.time(), from /metrics); 0 before its first tick."""
        match = re.search(rb"^aggregator_last_dispatch_timestamp_seconds (\S+)$", self.get("/metrics")[1], re.M)
        return float(match.group(1)) if match else 0.0

    def wait_for_dispatch_after(self, moment: float, seconds: float = 10) -> None:
        """Until the dispatcher has run at a time (time.time()) after ``moment``:
        whatever was due by then has been handed to a worker."""
        self.wait_until(lambda: self.last_dispatch() > moment, seconds, f"a dispatcher tick after {moment:.1f}")

    def group(self) -> list[psutil.Process]:
        """The live processes of the daemon's process group (``new_session``):
        itself and every process it started, however they are named."""
        assert self.new_session and self.proc is not None
        members = []
        for process in psutil.process_iter(["status"]):
            try:
                if os.getpgid(process.pid) == self.proc.pid and process.info["status"] != psutil.STATUS_ZOMBIE:
                    members.append(process)
            except (ProcessLookupError, psutil.Error):
                continue  # gone meanwhile
        return members

    def wait_until(self, condition: Callable[[], bool], seconds: float, what: str) -> float:
        """Wait for condition; returns how long it took."""
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited ({self.proc.returncode}) while waiting for {what}:\n{self.log[-3000:]}")
            if condition():
                return time.monotonic() - started
            time.sleep(0.1)  # the polling interval of the condition
        raise AssertionError(f"timed out after {seconds}s waiting for {what}\n{self.log[-3000:]}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"the daemon did not stop within {timeout}s\n{self.log[-3000:]}")
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


def write_feeds(path: Path, urls: list[str]) -> None:
    import yaml

    path.write_text(yaml.safe_dump({"feeds": [{"url": u} for u in urls]}))
