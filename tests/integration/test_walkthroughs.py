"""The README's quick start and user-consent walk-throughs, and docs/user-consent.md's, run as written.

The commands are read from the documents' code blocks and run with bash against a real broker
(`valetkey serve`, as `make serve` runs it) and the demo OAuth server (`make demo-oauth`,
scripts/demo_oauth_server.py). Only three things differ from a person following along: the two
ports are free ones instead of 9400 and 8787, the browser and the device approval are driven
through the demo server's sign-in pages, and the request id and verifier that `authorize` printed
replace the `authz_…` and `…` placeholders of `confirm`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from tests.peers.oidc import OidcProviderPeer

from valetkey.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEMO_CLIENT, DEMO_SECRET = "demo-client", "demo-secret"
_OURS = re.compile(r"^(VALETKEY_|ACTIONS_ID_TOKEN_)")


def code_blocks(document: Path, heading: Callable[[str], bool]) -> list[tuple[str, str]]:
    """``(language, text)`` of each fenced block under a ``## `` heading that ``heading`` accepts."""
    blocks: list[tuple[str, str]] = []
    current, language, lines = "", None, []
    for line in document.read_text().splitlines():
        if language is None and line.startswith("## "):
            current = line[3:].strip()
        elif language is None and line.startswith("```"):
            language, lines = line[3:].strip(), []
        elif language is not None and line.startswith("```"):
            if heading(current):
                blocks.append((language, "\n".join(lines)))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def shell_commands(block: str) -> list[str]:
    """The commands of a ``sh`` block: comments dropped, quoted and ``\\``-continued lines joined."""
    commands, pending = [], ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending = f"{pending}\n{line}" if pending else line
        if pending.count("'") % 2 == 0 and not pending.endswith("\\"):
            commands.append(re.sub(r"\s+#.*$", "", pending) if "'" not in pending else pending)
            pending = ""
    assert not pending, f"unterminated command: {pending}"
    return commands


@dataclass
class Stage:
    """A broker, the demo OAuth server, and a working directory, as the quick start sets them up."""

    broker_url: str
    demo_port: int
    demo: OidcProviderPeer
    work: Path
    env: dict[str, str]
    consent: dict[str, str] = field(default_factory=dict)

    def localize(self, command: str) -> str:
        return command.replace("127.0.0.1:9400", f"127.0.0.1:{self.demo_port}")

    def bash(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["bash", "-c", self.localize(command)],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"$ {command}\n{done.stdout}\n{done.stderr}"
        return done

    def python(self, source: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", source],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{source}\n{done.stdout}\n{done.stderr}"
        return done.stdout.split()

    def run(self, language: str, block: str) -> None:
        if language == "python":
            printed = self.python(block)
            if 'user="alice"' in block:
                assert len(printed) == 1
                info = self.demo.introspect(printed[0], DEMO_CLIENT, DEMO_SECRET)
                assert info["active"] is True, info
                assert info["sub"] == "alice", info
            return
        if language != "sh":
            return
        for command in shell_commands(block):
            if command.startswith(("source .venv/bin/activate", "make demo-oauth")):
                continue  # the test's PATH has the virtualenv; the demo server runs already
            if command.startswith("valetkey connect authorize") and "--device" in command:
                self.device(command)
            elif command.startswith("valetkey connect authorize"):
                self.browser(command)
            elif command.startswith("valetkey connect confirm"):
                filled = re.sub(
                    r"--request \S+ --verifier \S+",
                    f"--request {self.consent['request']} --verifier {self.consent['verifier']}",
                    command,
                )
                assert filled != command
                assert "completed" in self.bash(filled).stdout
            else:
                self.bash(command)

    def browser(self, command: str) -> None:
        """Run ``authorize``, then be the user's browser: sign in, approve, come back."""
        printed = dict(_fields(self.bash(command).stdout))
        back = self.demo.authorize(printed["url"], login="alice")
        assert back.startswith(f"{self.broker_url}/v1/connect/callback?"), back
        landed = httpx2.get(back, follow_redirects=False)
        assert landed.status_code == 303, landed.text
        assert landed.headers["location"].startswith(
            "http://localhost:3000/connected?valetkey_request="
        )
        assert "valetkey_status=confirm" in landed.headers["location"]
        self.consent = {"request": printed["request"], "verifier": printed["verifier"]}

    def device(self, command: str) -> None:
        """Run ``authorize --device --wait``; approve the code it shows as the user would."""
        process = subprocess.Popen(
            ["bash", "-c", self.localize(command)],
            cwd=self.work,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            seen: list[str] = []
            for line in process.stdout:
                seen.append(line)
                if line.startswith("user code:"):
                    self.demo.approve_device(line.split(":", 1)[1].strip(), login="alice")
                    break
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, "".join(seen) + out + err
        assert "connected: alice authorized oauth/acme" in out


def _fields(text: str) -> Iterator[tuple[str, str]]:
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and value.strip():
            yield name.strip(), value.strip()


def _wait_for(path: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared:\n{path.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    """`make demo-oauth`, `make serve`, then the README's quick start, run as written."""
    home = tmp_path_factory.mktemp("walkthrough")
    demo_port, broker_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not _OURS.match(k)}
    env.update(VALETKEY_DATA_DIR=str(home / "data"), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    demo_log = home / "demo.log"
    with open(demo_log, "wb") as log:
        demo = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "scripts" / "demo_oauth_server.py"),
                "--port",
                str(demo_port),
                "--redirect-uri",
                f"http://127.0.0.1:{broker_port}/v1/connect/callback",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    broker_log = home / "broker.log"
    with open(broker_log, "wb") as log:
        broker = subprocess.Popen(
            [
                str(BIN / "valetkey"),
                "serve",
                "--allow-private-networks",  # as make serve runs it
                "--port",
                str(broker_port),
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        _wait_for(demo_log, "Ctrl-C stops it", demo)
        url = f"http://127.0.0.1:{broker_port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx2.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                time.sleep(0.05)
        work = home / "app"
        work.mkdir()
        peer = OidcProviderPeer(f"http://127.0.0.1:{demo_port}", demo, demo_log)  # type: ignore[arg-type]
        staged = Stage(url, demo_port, peer, work, env)
        for language, block in code_blocks(ROOT / "README.md", lambda h: h == "Quick start"):
            staged.run(language, block)
        yield staged
    finally:
        _stop(broker)
        _stop(demo)


def test_readme_acting_for_a_user_works_as_written(stage: Stage) -> None:
    """The README's browser consent, confirm, device-code consent and get_token(user=...) work verbatim."""
    blocks = code_blocks(ROOT / "README.md", lambda h: h == "Acting for a user")
    assert [lang for lang, _ in blocks] == ["sh", "sh", "sh", "sh", "python"]
    for language, block in blocks:
        stage.run(language, block)


def test_user_consent_doc_walkthroughs_work_as_written(stage: Stage) -> None:
    """docs/user-consent.md's two walk-throughs (browser with confirm; headless device code) work verbatim."""
    blocks = code_blocks(ROOT / "docs" / "user-consent.md", lambda h: h.startswith("Walkthrough"))
    assert sum(1 for lang, _ in blocks if lang == "sh") == 5
    for language, block in blocks:
        stage.run(language, block)
