"""The data directory and the SQLite files are private to the broker's user, whatever was there before."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from valetkey.private_paths import InsecureStorage
from valetkey.testing import RunningBroker, running_broker, spawn_broker


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write_some(broker: RunningBroker, name: str = "k") -> None:
    identity = broker.setup_project(
        f"perm-{name}", {f"api-key/{name}": {"apiKey": "sk-perm-0123456789"}}
    )
    answer = httpx2.post(
        f"{broker.url}/v1/connect/token/api-key%2F{name}",
        json={"subject": {"type": "app"}},
        headers={"authorization": f"Bearer {identity}"},
    )
    assert answer.status_code == 200, answer.text
    with broker.admin() as c:
        assert c.get("/v1/audit").status_code == 200  # flushes the audit log: more writes


def _assert_private(data: Path) -> None:
    assert _mode(data) == 0o700
    assert _mode(data / "keys") == 0o700
    files = sorted(data.glob("valetkey.db*"))
    names = {f.name for f in files}
    assert {"valetkey.db", "valetkey.db-wal", "valetkey.db-shm"} <= names, names
    for path in [*files, *(data / "keys").iterdir(), data / "cli.json"]:
        assert _mode(path) & 0o077 == 0, f"{path.name}: {_mode(path):o}"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o000])
def test_an_open_data_directory_is_tightened_and_database_files_are_0600(
    tmp_path: Path, umask: int
) -> None:
    """An existing 0755 (or 0777) data directory becomes 0700; the database, WAL and SHM are 0600."""
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    os.chmod(data, 0o777 & ~umask)
    os.chmod(data / "keys", 0o755)  # noqa: S103 - the open mode under test
    previous = os.umask(umask)
    try:
        with running_broker(data) as broker:
            _write_some(broker)
            _assert_private(data)
    finally:
        os.umask(previous)


def test_database_files_left_readable_by_an_older_run_are_tightened(tmp_path: Path) -> None:
    """A database, WAL and SHM that an earlier version left 0644 are 0600 after the next start."""
    data = tmp_path / "data"
    with running_broker(data) as broker:
        _write_some(broker)
    for path in data.glob("valetkey.db*"):
        os.chmod(path, 0o644)
    os.chmod(data, 0o755)  # noqa: S103 - the open mode under test
    with running_broker(data) as broker:
        _write_some(broker, "again")
        _assert_private(data)


def test_valetkey_serve_keeps_its_files_private(tmp_path: Path) -> None:
    """The real `valetkey serve` process, on a data directory that was 0755, leaves nothing readable."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)  # noqa: S103 - the open mode under test
    running = spawn_broker(data)
    try:
        _write_some(running.handle)
        _assert_private(data)
    finally:
        running.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory to another user")
def test_a_readable_data_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    """A data directory that others can read and that belongs to someone else stops the broker, by name."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)  # noqa: S103 - the open mode under test
    os.chown(data, 65534, 65534)
    refused = pytest.raises(InsecureStorage, match="belongs to another user")
    with refused as caught, running_broker(data):
        pass
    assert str(data) in caught.value.message
    assert _mode(data) == 0o755  # left as it was: not ours to change
    serve = subprocess.run(
        [sys.executable, "-m", "valetkey.cli", "serve", "--data-dir", str(data), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode != 0
    assert "belongs to another user" in serve.stderr + serve.stdout
    assert "Traceback" not in serve.stderr
