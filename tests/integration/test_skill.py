"""skills/valetkey/SKILL.md, the coding agents' guide, run as written: every ``sh`` block with bash,
in order, in a fresh app directory with no broker running, then every ``python`` block."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from valetkey.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
SKILL = ROOT / "skills" / "valetkey" / "SKILL.md"
BIN = Path(sys.executable).parent


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", SKILL.read_text(), re.M | re.S)


def _stop_broker(data: Path) -> None:
    """The broker the skill started (its pid is in the data directory's lock file)."""
    lock = data / "broker.lock"
    if not lock.exists() or not lock.read_text().strip():
        return
    pid = int(lock.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def test_the_skill_sets_up_an_app_as_written(tmp_path: Path) -> None:
    """From nothing: the skill starts a broker, links the app, creates and attaches a connector
    (the secret from a variable), and its Python gets the token; running it again changes nothing."""
    app, data = tmp_path / "app", tmp_path / "data"
    app.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VALETKEY_", "ACTIONS_ID_TOKEN_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        VALETKEY_DATA_DIR=str(data),
        VALETKEY_URL=f"http://127.0.0.1:{free_port()}",  # not the default port: nothing else runs there
        SEARCH_API_KEY="sk-skill-test-123",
    )
    script = "set -euo pipefail\n" + "\n".join(_blocks("sh"))
    assert script.count("valetkey ") >= 6
    try:
        for _round in (1, 2):
            done = subprocess.run(
                ["bash", "-c", script], cwd=app, env=env, capture_output=True, text=True,
                timeout=180, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            assert "sk-skill-test-123" not in done.stdout + done.stderr
        assert (app / ".env").is_file()
        (python,) = _blocks("python")
        ran = subprocess.run(
            [sys.executable, "-c", python], cwd=app, env=env, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert ran.stdout.strip() == f"got a key of {len('sk-skill-test-123')} characters"
    finally:
        _stop_broker(data)
