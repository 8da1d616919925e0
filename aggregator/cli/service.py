"""`aggregator publish`, `serve`, `run` and `status`: the outputs and the service."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from aggregator.cli import main
from aggregator.cli.common import config_option, fail, load, opened, synced


@main.command()
@config_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write to (default: output.dir from config).",
)
def publish(config_path: Path | None, out_dir: Path | None) -> None:
    """Write the outputs as static files (only files whose bytes changed, atomically)."""
    from aggregator.logs import setup_logging
    from aggregator.publish import Publisher, write_static

    config = load(config_path)
    setup_logging(config.settings.logging.level, config.settings.logging.format)
    target = out_dir or config.output_dir
    with opened(config, readonly=True) as store:
        synced(config, store)
        snapshot = Publisher(store, config).build()
    try:
        written = write_static(snapshot, target)
    except OSError as exc:
        fail(f"{target}: cannot write the outputs: {exc.strerror or exc}", 1)
    click.echo(
        f"Published {len(snapshot.documents)} documents to {target}: {len(written)} changed"
        + (f" ({', '.join(written[:8])}{', ...' if len(written) > 8 else ''})" if written else "")
    )


@main.command()
@config_option
def serve(config_path: Path | None) -> None:
    """Serve the outputs over HTTP (host, port and base_url from config)."""
    from aggregator.logs import setup_logging
    from aggregator.service import serve_only

    config = load(config_path)
    setup_logging(config.settings.logging.level, config.settings.logging.format)
    with opened(config, readonly=True) as store:
        serve_only(config, store)


@main.command()
@config_option
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Override logging.format from config.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Override logging.level.")
def run(config_path: Path | None, log_format: str | None, log_level: str | None) -> None:
    """Run the service: poll on schedule, publish, serve (foreground; logs to stderr)."""
    from aggregator.logs import setup_logging
    from aggregator.service import AlreadyRunning, run_service

    config = load(config_path, quiet=True)
    setup_logging(log_level or config.settings.logging.level, log_format or config.settings.logging.format)
    try:
        code = run_service(config, log_level, log_format)
    except AlreadyRunning as exc:
        fail(str(exc), 1)
    sys.exit(code)


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status(config_path: Path | None, as_json: bool) -> None:
    """Is the service up (exit 0) or not (exit 3); feeds due and failing; last publish."""
    from aggregator.model import FeedStatus, iso, utcnow
    from aggregator.service import InstanceLock

    config = load(config_path, quiet=as_json)
    if not config.is_postgres and not config.database_path.exists():
        if as_json:
            click.echo(json.dumps({"running": False, "pid": None, "database": None}, indent=1))
        else:
            click.echo(f"Service: not running; no database yet at {config.database_path} (run `aggregator run`)")
        sys.exit(3)
    pid = None if config.is_postgres else InstanceLock(config.database_path).holder()
    with opened(config, readonly=True) as store:
        nodes = store.live_nodes()  # a cluster: its running nodes
        if nodes:
            pid = int(nodes[0].split(":")[1]) if nodes[0].split(":")[1].isdigit() else -1
        now = utcnow()
        health = store.feed_health(now)
        failing = [f for f in store.feeds(FeedStatus.ACTIVE) if f.error_count > 0]
        meta = {
            k: store.get_meta(f"service_{k}")
            for k in ("heartbeat_at", "last_dispatch_at", "last_publish_at", "started_at")
        }
        next_due = store.next_due_at()
    info = {
        "running": pid is not None,
        "pid": pid,
        "database": config.database_display,
        "nodes": [n.rsplit(":", 1)[0] for n in nodes],
        **meta,
        "feeds": health,
        "next_poll_at": iso(next_due),
        "failing": [
            {
                "title": f.display_title,
                "url": f.url,
                "error": f.last_error,
                "errors_in_a_row": f.error_count,
                "next_poll_at": iso(f.next_poll_at),
            }
            for f in failing
        ],
    }
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False, indent=1))
    else:
        state = f"running (pid {pid})" if pid is not None else "not running"
        click.echo(
            f"Service: {state}; started {meta['started_at'] or '-'}, last heartbeat {meta['heartbeat_at'] or '-'}"
        )
        click.echo(f"Last dispatch: {meta['last_dispatch_at'] or '-'}; last publish: {meta['last_publish_at'] or '-'}")
        click.echo(
            f"Feeds: {health['active']} active, {health['due']} due now, {health['failing']} failing, "
            f"{health['gone']} gone; next poll {iso(next_due) or '-'}"
        )
        for f in failing:
            click.echo(f"  failing: {f.display_title} <{f.url}>: {f.last_error} ({f.error_count} in a row)")
    if pid is None:
        sys.exit(3)
