"""The public API: exports, documentation, module names."""

from __future__ import annotations

import inspect

import poolkit
import poolkit.errors
import poolkit.testing


def test_all_lists_exactly_the_public_names() -> None:
    """poolkit.__all__ is a tuple of every public name the package defines, and only those."""
    assert isinstance(poolkit.__all__, tuple)
    public = {name for name in vars(poolkit) if not name.startswith("_")}
    public -= {"annotations", "errors", "testing"}
    public = {n for n in public if not inspect.ismodule(getattr(poolkit, n))}
    assert public == set(poolkit.__all__) - {"__version__"}


def test_every_public_name_is_documented() -> None:
    """Every exported class and function has a docstring, and so do public methods."""
    for name in poolkit.__all__:
        obj = getattr(poolkit, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"poolkit.{name} has no docstring"
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not callable(member):
                    continue
                assert inspect.getdoc(member), f"poolkit.{name}.{attr} has no docstring"


def test_public_classes_show_the_public_module() -> None:
    """Exported classes report ``poolkit`` as their module (reprs and docs show the public path)."""
    for name in ("Pool", "PoolConfig", "PoolStats", "KeyedPool", "PoolTimeout", "Connector"):
        assert getattr(poolkit, name).__module__ == "poolkit"


def test_error_hierarchy() -> None:
    """Errors derive from PoolError and the builtins generic handlers expect."""
    assert issubclass(poolkit.PoolTimeout, TimeoutError)
    assert issubclass(poolkit.PoolUsageError, RuntimeError)
    assert issubclass(poolkit.ConfigError, ValueError)
    assert issubclass(poolkit.AuthenticationError, poolkit.ConnectError)
    assert issubclass(poolkit.TLSError, poolkit.ConnectError)
    for name in poolkit.errors.__all__:
        cls = getattr(poolkit.errors, name)
        assert issubclass(cls, poolkit.PoolError)
        assert inspect.getdoc(cls)
        assert getattr(poolkit, name) is cls


def test_testing_module_exports() -> None:
    """poolkit.testing exports its helpers with docstrings."""
    for name in poolkit.testing.__all__:
        obj = getattr(poolkit.testing, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name


def test_core_imports_no_driver() -> None:
    """Importing poolkit pulls in no driver or framework (the core needs no third party)."""
    import subprocess
    import sys

    code = (
        "import sys, poolkit, poolkit.testing; "
        "bad = [m for m in ('asyncpg','aiomysql','aiohttp','websockets','fastapi',"
        "'prometheus_client','opentelemetry') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
