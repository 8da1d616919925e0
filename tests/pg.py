"""A throwaway PostgreSQL for the tests: found or started, never the machine's own.

`AGGREGATOR_TEST_POSTGRES` (a libpq URL to a server the tests may create and
drop databases on) wins. Otherwise the server programs of the machine
(`pg_config --bindir`, or Debian's /usr/lib/postgresql/<version>/bin) start
a cluster in a temporary directory, listening on a Unix socket only, as the
`postgres` user when the tests run as root (PostgreSQL refuses to run as
root); it is stopped when the tests end. Each test gets a database of its
own, copied from a template that already holds the schema (fast).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def server_bindir() -> Path | None:
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        candidate = Path(out.stdout.strip())
        if out.returncode == 0 and (candidate / "initdb").exists():
            return candidate
    except (OSError, subprocess.SubprocessError):
        pass
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                      if p.parent.parent.name.isdigit() else 0)  # fmt: skip
    return versions[-1].parent if versions else None


class PgCluster:
    """A PostgreSQL server of our own in a temporary directory."""

    def __init__(self) -> None:
        self.external = os.environ.get("AGGREGATOR_TEST_POSTGRES")
        self.root: Path | None = None
        self.bindir: Path | None = None
        self._user: str | None = None
        self._counter = 0
        if self.external:
            return
        bindir = server_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server programs found (install Debian's postgresql package)")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="aggregator-pg-"))
        os.chmod(self.root, 0o755)
        if os.geteuid() == 0:
            self._user = "postgres"
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        data, socket_dir = self.root / "data", self.root
        self._run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                   "--locale=C.UTF-8", "-N"])  # fmt: skip
        options = f"-k {socket_dir} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.root / "server.log"),
                   "-w", "-t", "60", "start"])  # fmt: skip
        self.socket_dir = socket_dir

    def _run(self, argv: list[str]) -> None:
        if self._user:
            argv = ["runuser", "-u", self._user, "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")

    def url(self, database: str = "postgres") -> str:
        if self.external:
            base = self.external.rsplit("/", 1)[0] if "?" not in self.external else self.external.split("?")[0].rsplit("/", 1)[0]
            query = "?" + self.external.split("?", 1)[1] if "?" in self.external else ""
            return f"{base}/{database}{query}"
        return f"postgresql:///{database}?host={self.socket_dir}&user=postgres"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    def template(self) -> str:
        """A database holding the current schema, to copy per test."""
        name = "aggregator_template"
        self.admin(f"DROP DATABASE IF EXISTS {name}")
        self.admin(f"CREATE DATABASE {name}")
        from aggregator.store.postgres import PostgresStore

        PostgresStore(self.url(name)).close()
        return name

    def new_database(self, template: str | None = None) -> str:
        self._counter += 1
        name = f"t_{os.getpid()}_{self._counter}"
        self.admin(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        return self.url(name)

    def stop(self) -> None:
        if self.root is None or self.bindir is None:
            return
        try:
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"])
        except (RuntimeError, subprocess.SubprocessError):
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def wait_ready(url: str, seconds: float = 30) -> None:
    import psycopg

    end = time.monotonic() + seconds
    while True:
        try:
            psycopg.connect(url).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
