"""Process life: `aggregator serve` (web only) and `aggregator run` (the
daemon: scheduler, fetch workers, publisher, web server), signals, reload,
clean stop (DESIGN §9)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO

from prometheus_client import CONTENT_TYPE_LATEST

from aggregator.config import Config, Settings, load_config
from aggregator.ingest import ParsePool, Poller
from aggregator.logs import log_failure, setup_logging
from aggregator.metrics import Metrics
from aggregator.model import PollReport, utcnow
from aggregator.policy import Timing, after_interval_change
from aggregator.publish import Outputs, Publisher, Snapshot, write_static
from aggregator.scheduler import Dispatcher
from aggregator.store import Store, StoreError, check_database_path, open_store
from aggregator.subscriptions import Subscriptions, interval_notes, load_subscriptions
from aggregator.validation import ConfigError
from aggregator.web import App, SnapshotHolder, WebServer, json_body

log = logging.getLogger(__name__)

# The sources page and OPML show every feed's state, which changes on every
# poll: rebuilt at most this often (seconds) unless stories changed too.
SOURCES_EVERY = 30.0


def serve_only(config: Config, store: Store, refresh_every: float = 2.0) -> None:
    """Serve the outputs of a database another process fills (`aggregator
    poll` from cron, say). A background thread checks the store's change
    counters every couple of seconds and rebuilds what changed; requests
    themselves never touch the database."""
    settings = config.settings
    publisher = Publisher(store, config)
    outputs = Outputs(publisher)
    holder = SnapshotHolder(outputs.refresh(Snapshot()))
    health = lambda: (200, "application/json", json_body({"status": "ok", "mode": "serve", "polling": None}))  # noqa: E731
    app = App(holder, max_age=int(settings.output.max_age), extra={"healthz": health}, search=publisher.search_page)
    server = WebServer(app, settings.http)
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(refresh_every):
            try:
                current = holder.get()
                if outputs.follows or (store.content_version(), store.status_version()) != (
                    current.content_version,
                    current.status_version,
                ):
                    fresh = outputs.refresh(current, sources_every=SOURCES_EVERY)
                    if fresh is not current:
                        holder.set(fresh)
                        log.info("outputs rebuilt (store changed)")
            except Exception:  # keep serving the last good snapshot
                log_failure(log, "could not rebuild the outputs; still serving the previous ones")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    refresher = threading.Thread(target=refresh, name="refresh", daemon=True)
    refresher.start()
    server.start()
    log.info(
        "serving %s on http://%s:%d/ (feeds: %slatest.atom)",
        settings.output.title,
        settings.http.host,
        server.port,
        settings.http.public_base_url,
    )
    stop.wait()
    server.stop()
    refresher.join(timeout=5)
    log.info("stopped")


# --- the daemon -------------------------------------------------------------------------------


class AlreadyRunning(Exception):
    pass


class InstanceLock:
    """One `aggregator run` per database: an exclusive flock on <db>.lock
    (released by the kernel if the process dies, even with kill -9)."""

    def __init__(self, database: Path):
        self.path = database.with_name(database.name + ".lock")
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        try:
            handle = open(self.path, "a+")  # noqa: SIM115 (held open for the life of the lock)
        except OSError as exc:
            raise StoreError(
                f"{self.path}: cannot create the lock file next to the database: "
                f"{exc.strerror or exc}; the database directory must be writable"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            handle.close()
            raise AlreadyRunning(
                f"another `aggregator run` (pid {pid}) is already using {self.path.with_suffix('')}; "
                "stop it first, or point `database:` in config.yaml elsewhere"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def holder(self) -> int | None:
        """The pid holding the lock, or None when nobody does."""
        try:
            handle = open(self.path)  # noqa: SIM115 (closed below) read-only: asking needs no write access
        except FileNotFoundError:
            return None
        except OSError:
            return -1  # cannot tell: say "running" rather than invite a second service
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = handle.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None


class PublishLoop:
    """Republishes after polls, debounced: a burst of feeds finishing within
    ``debounce`` seconds produces one publish. Runs in its own thread."""

    def __init__(
        self, publisher: Publisher, holder: SnapshotHolder, out_dir: Path, debounce: float, metrics: Metrics | None
    ):
        self.publisher = publisher
        self.outputs = Outputs(publisher)
        self.holder = holder
        self.out_dir = out_dir
        self.debounce = debounce
        self.metrics = metrics
        self.last_publish: float | None = None
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publish", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        self._dirty.set()

    def _sources_stale(self) -> bool:
        """The sources page waits at most SOURCES_EVERY seconds behind the feeds' states."""
        snapshot = self.holder.get()
        if snapshot.status_version < 0 or time.monotonic() - self.publisher.sources_built < SOURCES_EVERY:
            return False
        try:
            return self.publisher.store.status_version() != snapshot.status_version
        except Exception:
            return False

    def publish_now(self) -> None:
        previous = self.holder.get()
        snapshot = self.outputs.refresh(previous, sources_every=SOURCES_EVERY)
        if snapshot is previous:
            return
        self.holder.set(snapshot)
        self.last_publish = time.time()
        if self.metrics is not None:
            self.metrics.publishes.inc()
            self.metrics.last_publish.set(self.last_publish)
        try:
            written = write_static(snapshot, self.out_dir)
        except OSError as exc:
            # Disk full, read-only... keep serving from memory; try again next time.
            log.error(
                "could not write the static outputs to %s: %s (still serving the current ones over HTTP)",
                self.out_dir,
                exc,
            )
            return
        if snapshot.content_version != previous.content_version:
            log.info("published: %d documents, %d files changed", len(snapshot.documents), len(written))

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._dirty.wait(timeout=0.5):
                if self._sources_stale() or self.outputs.follows:
                    # Feed states moved since the sources page was drawn, or
                    # (in a cluster) another node may have rendered new outputs.
                    self._dirty.set()
                continue
            if self._stop.wait(self.debounce):  # gather the rest of the burst
                break
            self._dirty.clear()
            try:
                self.publish_now()
            except Exception:
                log_failure(log, "publishing failed; still serving the previous outputs")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._dirty.is_set():
            try:
                self.publish_now()  # what was fetched before the stop is published too
            except Exception:
                log_failure(log, "final publish failed")


class Service:
    """`aggregator run`: everything in one process."""

    def __init__(self, config: Config, store: Store, subs: Subscriptions):
        self.config = config
        self.store = store
        settings = config.settings
        self.metrics = Metrics()
        polling = settings.polling
        self.poller = Poller(
            store,
            config,
            parser=ParsePool(polling.parse_workers, polling.parse_timeout, polling.parse_recycle),
            metrics=self.metrics,
        )
        self.publisher = Publisher(store, config)
        self.holder = SnapshotHolder(Snapshot())
        self.publish_loop = PublishLoop(
            self.publisher, self.holder, config.output_dir, settings.output.debounce, self.metrics
        )
        self.dispatcher = Dispatcher(
            store,
            self.poller,
            polling.workers,
            polling.per_host,
            polling.dispatch_every,
            self._on_polled,
            self.metrics,
            settings.retention.days,
            settings.retention.batch,
            polling.lease,
        )
        self.subs = subs
        self.poller.set_subscriptions(subs.feeds)
        self.log_level: str | None = None
        self.log_format: str | None = None
        self.app = app = App(
            self.holder,
            max_age=int(settings.output.max_age),
            extra={"healthz": self._healthz, "metrics": self._metrics_body},
            search=lambda text: self.publisher.search_page(text),  # the current publisher, after reloads too
        )
        self.web = WebServer(app, settings.http)
        self.started = time.time()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._subs_errors = subs.errors

    # -- callbacks --

    def _on_polled(self, report: PollReport | None) -> None:
        self.publish_loop.request()

    def _healthz(self) -> tuple[int, str, bytes]:
        last = self.dispatcher.last_dispatch
        alive = polling_is_alive(self.dispatcher.alive, last, time.time(), self.config.settings.polling.dispatch_every)
        database = self.store.unreachable()  # a PostgreSQL server that went away: nothing can be polled
        alive = alive and database is None
        body = {
            "status": "ok" if alive else "unhealthy",
            "database": database or "ok",
            "scheduler_running": self.dispatcher.alive,
            "last_dispatch_at": _stamp(last),
            "last_poll_at": _stamp(self.dispatcher.last_poll),
            "last_publish_at": _stamp(self.publish_loop.last_publish),
            "started_at": _stamp(self.started),
            "in_flight": self.dispatcher.in_flight(),
            "feeds": self.dispatcher.health,
        }
        return (200 if alive else 503), "application/json", json_body(body)

    def _metrics_body(self) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, self.metrics.exposition()

    # -- life --

    def run(self) -> int:
        settings = self.config.settings
        self._install_signals()  # first: a SIGHUP or SIGTERM during start-up must not kill the process
        for error in self._subs_errors:
            log.error("%s", error)
        for note in interval_notes(self.subs.feeds, settings.polling):
            log.warning("%s", note)
        self.store.set_meta({"service_pid": str(os.getpid()), "service_started_at": _stamp(self.started)})
        self.publish_loop.publish_now()
        self.publish_loop.start()
        self.web.start()
        self.dispatcher.start()
        log.info(
            "aggregator running (pid %d, configuration %s): %d active feeds, polling every %gs by default;"
            " serving on http://%s:%d/",
            os.getpid(),
            self.config.path or f"none found: the defaults, in {Path.cwd()}",
            self.store.feed_health(utcnow())["active"],
            settings.polling.interval,
            settings.http.host,
            self.web.port,
        )
        heartbeat_every = 15.0
        next_heartbeat = 0.0
        watch_every = 5.0
        next_watch = time.monotonic() + watch_every
        stamp = self._files_stamp()
        while not self._stop.is_set():
            if time.monotonic() >= next_watch:
                # Edits to config.yaml or feeds/ (`aggregator feeds add`, an
                # editor) apply without a SIGHUP.
                next_watch = time.monotonic() + watch_every
                current = self._files_stamp()
                if current != stamp:
                    log.info("%s or %s changed: reloading", self.config.path or "config.yaml", self.config.feeds_dir)
                    self._reload.set()
            if self._reload.is_set():
                self._reload.clear()
                stamp = self._files_stamp()
                self._do_reload()
            if time.monotonic() >= next_heartbeat:
                self._heartbeat()
                next_heartbeat = time.monotonic() + heartbeat_every
            self._stop.wait(0.2)
        return self._shutdown()

    def _files_stamp(self) -> tuple[tuple[str, int, int], ...]:
        """Names, sizes and mtimes of config.yaml and the subscription files."""
        paths = [self.config.path] if self.config.path else []
        with contextlib.suppress(OSError):
            paths += sorted(
                p for p in self.config.feeds_dir.iterdir() if p.suffix.lower() in (".yaml", ".yml", ".opml", ".xml")
            )
        out = []
        for path in paths:
            try:
                st = path.stat()
                out.append((str(path), st.st_size, st.st_mtime_ns))
            except OSError:
                pass
        return tuple(out)

    def _install_signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            log.info(
                "received %s: stopping (up to %gs for fetches in flight)",
                signal.Signals(signum).name,
                self.config.settings.polling.shutdown_timeout,
            )
            self._stop.set()

        def reload(signum: int, frame: FrameType | None) -> None:
            log.info("received SIGHUP: reloading %s and %s", self.config.path or "config.yaml", self.config.feeds_dir)
            self._reload.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def _heartbeat(self) -> None:
        try:
            self.store.set_meta(
                {
                    "service_heartbeat_at": _stamp(time.time()),
                    "service_last_dispatch_at": _stamp(self.dispatcher.last_dispatch),
                    "service_last_publish_at": _stamp(self.publish_loop.last_publish),
                }
            )
            self.store.heartbeat()
        except Exception:
            log_failure(log, "could not write the heartbeat")

    def _do_reload(self) -> None:
        """SIGHUP or an edited file. Whatever goes wrong, the service keeps
        running on what it had (a reload never kills it)."""
        try:
            self._reload_now()
        except Exception:
            log_failure(log, "reload failed; still running on the previous configuration and subscriptions")

    def _reload_now(self) -> None:
        try:
            config = load_config(self.config.path) if self.config.path else self.config
        except ConfigError as exc:
            log.error("reload: the new configuration is invalid, keeping the old one:\n%s", exc)
            return
        old, new = self.config.settings, config.settings
        restart_only = [
            name
            for name, a, b in (
                ("http", old.http, new.http),
                ("database", old.database, new.database),
                ("feeds_dir", old.feeds_dir, new.feeds_dir),
                ("polling.workers", old.polling.workers, new.polling.workers),
                ("polling.parse_workers", old.polling.parse_workers, new.polling.parse_workers),
                ("polling.parse_timeout", old.polling.parse_timeout, new.polling.parse_timeout),
                ("polling.parse_recycle", old.polling.parse_recycle, new.polling.parse_recycle),
            )
            if a != b
        ]
        if restart_only:
            log.warning("reload: %s changed; that takes effect only after a restart", ", ".join(restart_only))
            config = Config(self._restart_only(old, new), config.path, config.root)
        subs = load_subscriptions(self.config.feeds_dir, previous=self.subs)
        for error in subs.errors:
            log.error("reload: %s", error)
        for note in interval_notes(subs.feeds, new.polling):
            log.warning("reload: %s", note)
        self._apply_settings(config)
        result = self.store.sync_subscriptions(subs.feeds, utcnow(), keep_files=subs.failed_files)
        self.subs = subs
        self.poller.set_subscriptions(subs.feeds)
        moved = self._reschedule(result.rescheduled)
        log.info(
            "reload: %d feeds added, %d removed, %d resumed, %d rescheduled for a new interval",
            len(result.added),
            len(result.removed),
            len(result.reactivated),
            moved,
        )
        self.publish_loop.request()

    @staticmethod
    def _restart_only(old: Settings, new: Settings) -> Settings:
        """The new settings, except those that need a restart: they keep their running values."""
        polling = new.polling.model_copy(
            update={k: getattr(old.polling, k) for k in ("workers", "parse_workers", "parse_timeout", "parse_recycle")}
        )
        return new.model_copy(
            update={"http": old.http, "database": old.database, "feeds_dir": old.feeds_dir, "polling": polling}
        )

    def _apply_settings(self, config: Config) -> None:
        new = config.settings
        self.config = config
        self.poller.reconfigure(config)
        self.dispatcher.reconfigure(
            new.polling.per_host, new.polling.dispatch_every, new.retention.days, new.retention.batch
        )
        self.publish_loop.debounce = new.output.debounce
        self.publish_loop.out_dir = config.output_dir
        self.publisher = Publisher(self.store, config)
        self.publish_loop.publisher = self.publisher
        self.publish_loop.outputs = Outputs(self.publisher)
        self.app.max_age = int(new.output.max_age)
        setup_logging(self.log_level or new.logging.level, self.log_format or new.logging.format)

    def _reschedule(self, feed_ids: list[str]) -> int:
        """A feed's interval changed in feeds/: its next poll follows the new one now."""
        now = utcnow()
        timing = Timing.from_settings(self.config.settings.polling)
        moves = {}
        for feed in self.store.feeds_by_id(feed_ids).values():
            when = after_interval_change(feed, timing, now)
            if when is not None and when != feed.next_poll_at:
                moves[feed.id] = when
        self.store.reschedule(moves)
        return len(moves)

    def _shutdown(self) -> int:
        timeout = self.config.settings.polling.shutdown_timeout
        abandoned = self.dispatcher.stop(timeout)
        if abandoned:
            log.warning("abandoned %d fetch(es) still running after %gs; those feeds stay due", abandoned, timeout)
        self.publish_loop.stop()
        self.web.stop()
        self.poller.close()
        self._heartbeat()
        try:
            self.store.leave()
        except Exception as exc:
            log.warning(
                "could not sign off from the database: %s (other nodes see this one as gone within minutes)", exc
            )
        log.info("stopped cleanly")
        return 0


def polling_is_alive(scheduler_running: bool, last_dispatch: float | None, now: float, dispatch_every: float) -> bool:
    """Healthy: the scheduler runs and its dispatcher ran recently (a few
    ticks' worth, at least 30 s, so a busy machine is not called dead)."""
    stale_after = max(30.0, dispatch_every * 6)
    return scheduler_running and last_dispatch is not None and now - last_dispatch < stale_after


def _stamp(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _NoLock:
    def acquire(self) -> None:
        return None

    def release(self) -> None:
        return None


def run_service(config: Config, log_level: str | None = None, log_format: str | None = None) -> int:
    """`aggregator run`. Returns the exit code. ``log_level``/``log_format``:
    the command line's, which outlive reloads of the logging settings."""
    if config.is_postgres:
        lock: InstanceLock | _NoLock = _NoLock()  # a cluster: as many nodes as wanted, coordinated by the database
    else:
        check_database_path(config.database_path)  # a clear error before anything is created
        lock = InstanceLock(config.database_path)
    lock.acquire()
    try:
        store = open_store(config.settings.database, config.root)
        try:
            subs = load_subscriptions(config.feeds_dir)
            store.sync_subscriptions(subs.feeds, utcnow(), keep_files=subs.failed_files)
            if released := store.release_orphaned_leases():
                log.info("%d feed(s) held by a poller that died here (killed?) are free to poll again", released)
            service = Service(config, store, subs)
            service.log_level, service.log_format = log_level, log_format
            return service.run()
        finally:
            store.close()
    finally:
        lock.release()
