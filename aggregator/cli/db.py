"""`aggregator db ...`: look after the database file."""

from __future__ import annotations

from pathlib import Path

import click

from aggregator.cli import main
from aggregator.cli.common import config_option, fail, load


@main.group()
def db() -> None:
    """Check a database, salvage a damaged one, or copy one between SQLite and PostgreSQL."""


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


@db.command("copy")
@click.option(
    "--from", "source", required=True, metavar="PATH_OR_URL", help="The database to copy (SQLite file or URL)."
)
@click.option("--to", "target", required=True, metavar="PATH_OR_URL", help="An empty database to copy into.")
def db_copy(source: str, target: str) -> None:
    """Move an installation between SQLite and PostgreSQL (either way): feeds, articles, ids, stories."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from aggregator.progress import console
    from aggregator.store import is_postgres_url, open_store
    from aggregator.store.copy import copy_store

    if not is_postgres_url(target) and Path(target).exists() and Path(target).stat().st_size > 0:
        fail(f"{target}: already exists; copy into a new database")
    src = open_store(source, Path.cwd(), readonly=True)
    try:
        dst = open_store(target, Path.cwd())
        try:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console) as bar:
                tasks: dict[str, TaskID] = {}

                def progress(table: str, done: int, total: int) -> None:
                    if table not in tasks:
                        tasks[table] = bar.add_task(table, total=total)
                    bar.update(tasks[table], completed=done)

                copied = copy_store(src, dst, progress)
        finally:
            dst.close()
    finally:
        src.close()
    click.echo("Copied: " + ", ".join(f"{n} {table}" for table, n in copied.items()))
