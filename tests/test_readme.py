"""The README's set-up commands are the ones CI runs."""

from __future__ import annotations


from tests.conftest import REPO


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    block = lines[lines.index("```sh") + 1: lines.index("```")]
    assert lines.index("```sh") <= 3 and len(block) == 2
    service, tests = block
    assert "pip install ." in service and service.endswith("aggregator run")
    assert "pip install '.[test]'" in tests and "pytest" in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_readme_documents_every_command() -> None:
    from click.testing import CliRunner

    from aggregator.cli import main

    text = (REPO / "README.md").read_text()
    for name, command in main.commands.items():
        subcommands = getattr(command, "commands", None)
        for full in ([f"{name} {sub}" for sub in subcommands] if subcommands else [name]):
            assert f"aggregator {full}" in text, full
    assert CliRunner().invoke(main, ["--help"]).exit_code == 0
    assert "### `aggregator articles --json`" in text


def test_the_commands_table_names_every_option_of_its_command() -> None:
    """The README's row for a command mentions each of its options (as
    `--help` lists them), so the table cannot fall behind the code."""
    import click

    from aggregator.cli import main

    lines = (REPO / "README.md").read_text().splitlines()

    def leaves(command: click.Command, path: list[str]) -> list[tuple[str, click.Command]]:
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            return [(" ".join(path), command)]
        return [leaf for name, sub in subcommands.items() for leaf in leaves(sub, [*path, name])]

    missing = []
    for name, command in leaves(main, []):
        rows = [line for line in lines if line.startswith(f"| `aggregator {name}")]
        assert len(rows) == 1, f"one row for aggregator {name} in the commands table"
        options = [o for p in command.params if isinstance(p, click.Option) for o in p.opts if o.startswith("--")]
        missing += [f"{name} {o}" for o in options if o not in ("--help", "--config") and o not in rows[0]]
    assert not missing, missing
