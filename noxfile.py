"""Development sessions: ``nox -s tests``, ``lint``, ``typecheck``, ``docs``, ``examples``, ``bench``."""

from __future__ import annotations

import nox

nox.needs_version = ">=2024.4.15"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _install(session: nox.Session, *groups: str, extras: str = "all") -> None:
    session.install("--upgrade", "pip")
    deps: list[str] = []
    for group in groups:
        deps.extend(nox.project.dependency_groups(PYPROJECT, group))
    session.install("-e", f".[{extras}]", *deps)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (real PostgreSQL and MariaDB on loopback; see docs/testing.md)."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "examples", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src and tests."""
    _install(session, "typecheck")
    session.run("mypy", *session.posargs)


@nox.session
def examples(session: nox.Session) -> None:
    """Run every example against the local services."""
    _install(session, "test")
    session.run("pytest", "tests/test_examples.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (strict: a docstring or nav warning fails the build)."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "docs"))
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite: poolkit side by side with its peers (``-- --quick`` for a smoke run)."""
    _install(session, "bench")
    session.run("python", "benchmarks/run.py", *session.posargs)
