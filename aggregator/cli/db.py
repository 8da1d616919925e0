"""`aggregator db ...`: look after the database file."""

from __future__ import annotations

from pathlib import Path

import click

from aggregator.cli import main
from aggregator.cli.common import config_option, fail, load


@main.group()
def db() -> None:
    """Check a database, or salvage a damaged one."""


@db.command("check")
@config_option
def db_check(config_path: Path | None) -> None:
    """SQLite's integrity check of the database (exit 1 when it finds damage)."""
    from aggregator.store.recover import check

    config = load(config_path)
    path = config.database_path
    if not path.exists():
        fail(f"{path}: no such database", 1)
    problems = check(path)
    if problems == ["ok"]:
        click.echo(f"{path}: ok")
        return
    click.echo(f"{path}: damaged:", err=True)
    for line in problems:
        click.echo(f"  {line}", err=True)
    click.echo(
        "Restore a backup, or salvage what can be read: aggregator db recover --out NEW.db "
        "(then point 'database' in config.yaml at it).",
        err=True,
    )
    raise SystemExit(1)


@db.command("recover")
@config_option
@click.option(
    "--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="New database file."
)
def db_recover(config_path: Path | None, out_path: Path) -> None:
    """Copy every readable row of a damaged database into a new one (stop the service first)."""
    from aggregator.store.recover import recover

    config = load(config_path)
    source = config.database_path
    if not source.exists():
        fail(f"{source}: no such database", 1)

    def progress(table: str, rows: int) -> None:
        if rows % 20000 < 2000:
            click.echo(f"  {table}: {rows} rows", err=True)

    report = recover(source, out_path, progress)
    for table, copied in report.copied.items():
        lost = report.lost.get(table, 0)
        click.echo(f"{table}: {copied} rows recovered" + (f", {lost} unreadable and lost" if lost else ""))
    click.echo(f"deleted entries remembered: {report.tombstones}")
    click.echo(f"Done: {out_path}. Point 'database' in config.yaml at it, then start the service.")
