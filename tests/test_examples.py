"""Every script in examples/ runs to completion against the local services."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Web apps run until stopped: tests/integrations/test_examples.py drives them (through their
# test clients, a real uvicorn socket and a real Prometheus scrape) instead of running them here.
SERVED_APPS = {"fastapi_app.py", "aiohttp_app.py", "metrics.py"}
EXAMPLES = sorted(
    p for p in (Path(__file__).parent.parent / "examples").glob("*.py") if p.name not in SERVED_APPS
)


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script: Path) -> None:
    """The example exits 0, prints something, and writes nothing to stderr but logs."""
    env = dict(os.environ, PYTHONWARNINGS="error::ResourceWarning", PYTHONDEVMODE="1")
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=script.parent,
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{script.name} printed nothing"
    assert "Traceback" not in result.stderr, result.stderr
    assert "ResourceWarning" not in result.stderr, result.stderr
