"""Process life: `aggregator serve` (web only) and `aggregator run` (the
daemon: scheduler, fetch workers, publisher, web server), signals, reload,
clean stop (DESIGN §9)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from aggregator.config import Config
from aggregator.publish import Publisher
from aggregator.store import Store
from aggregator.web import App, SnapshotHolder, WebServer, json_body

log = logging.getLogger(__name__)


class _StopRequested(Exception):
    pass


def serve_only(config: Config, store: Store, refresh_every: float = 2.0) -> None:
    """Serve the outputs of a database another process fills (`aggregator
    poll` from cron, say). A background thread checks the store's change
    counters every couple of seconds and rebuilds what changed; requests
    themselves never touch the database."""
    settings = config.settings
    publisher = Publisher(store, config)
    holder = SnapshotHolder(publisher.build())
    health = lambda: (200, "application/json", json_body({"status": "ok", "mode": "serve", "polling": None}))  # noqa: E731
    app = App(holder, max_age=int(settings.output.max_age), extra={"healthz": health})
    server = WebServer(app, settings.http.host, settings.http.port, settings.http.threads)
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(refresh_every):
            try:
                current = holder.get()
                if (store.content_version(), store.status_version()) != (current.content_version, current.status_version):
                    holder.set(publisher.build(current))
                    log.info("outputs rebuilt (store changed)")
            except Exception:  # keep serving the last good snapshot
                log.exception("could not rebuild the outputs; still serving the previous ones")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    refresher = threading.Thread(target=refresh, name="refresh", daemon=True)
    refresher.start()
    server.start()
    log.info("serving %s on http://%s:%d/ (feeds: %slatest.atom)", settings.output.title, settings.http.host,
             server.port, settings.http.public_base_url)
    stop.wait()
    server.stop()
    refresher.join(timeout=5)
    log.info("stopped")
