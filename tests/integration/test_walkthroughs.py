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
from tests.integration.consent_support import authorization_code_tokens
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


#: A snippet no test can run marks itself so, on the line before its fence (rare; each says why).
NOT_RUN = re.compile(r"^<!-- not run: .+ -->$")
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def snippets(document: Path) -> list[tuple[str, str, bool]]:
    """``(language, text, marked not run)`` of every ``python`` and ``sh`` block of ``document``."""
    found: list[tuple[str, str, bool]] = []
    language, lines, marked, previous = None, [], False, ""
    for line in document.read_text().splitlines():
        if language is None and line.startswith("```"):
            language, lines, marked = line[3:].strip(), [], bool(NOT_RUN.match(previous))
        elif language is not None and line.startswith("```"):
            if language in ("python", "sh"):
                found.append((language, "\n".join(lines), marked))
            language = None
        elif language is not None:
            lines.append(line)
        previous = line
    return found


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
    #: Every block run, to check that no snippet of the docs is left out.
    ran: list[str] = field(default_factory=list)

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
        self.ran.append(block)
        if language == "python":
            printed = self.python(block)
            if 'print(valetkey.get_token("oauth/acme", user="alice"))' in block:
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
    broker_log = home / "broker.log"
    with open(broker_log, "wb") as log:
        broker = subprocess.Popen(
            [
                str(BIN / "valetkey"),
                "serve",
                "--allow-private-networks",  # as make serve runs it
                "--port",  # not the default: the demo server must follow (cli.json)
                str(broker_port),
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    demo: subprocess.Popen[bytes] | None = None
    try:
        url = f"http://127.0.0.1:{broker_port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx2.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                time.sleep(0.05)
        demo_log = home / "demo.log"
        with open(demo_log, "wb") as log:
            # `make demo-oauth`: it registers the callback of the broker the CLI finds, no flag.
            demo = subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / "demo_oauth_server.py"), "--port", str(demo_port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        _wait_for(demo_log, "Ctrl-C stops it", demo)
        assert f"{url}/v1/connect/callback" in demo_log.read_text()
        assert "Unsupported runtime" not in demo_log.read_text()  # the peer supports Node >= 18
        work = home / "app"
        work.mkdir()
        peer = OidcProviderPeer(f"http://127.0.0.1:{demo_port}", demo, demo_log)  # type: ignore[arg-type]
        staged = Stage(url, demo_port, peer, work, env)
        for language, block in code_blocks(ROOT / "README.md", lambda h: h == "Quick start"):
            staged.run(language, block)
        yield staged
    finally:
        _stop(broker)
        if demo is not None:
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


def test_user_consent_doc_sdk_import_and_revoke_snippets_work_as_written(stage: Stage) -> None:
    """The rest of docs/user-consent.md, in order: the SDK pattern (it starts a new consent for a
    user who refused the last one), importing tokens, and revoking them."""
    blocks = code_blocks(ROOT / "docs" / "user-consent.md", lambda h: not h.startswith("Walkthrough"))
    intro, before, sdk, imported, revoke = [b for lang, b in blocks if lang in ("python", "sh")]
    stage.run("python", intro)
    stage.run("sh", before)  # make demo-oauth: the demo server runs already

    # A user whose device consent was refused: the SDK pattern starts a new consent for them.
    started = stage.python(
        "import valetkey.sync as valetkey\n"
        "s = valetkey.start_authorization('oauth/acme', user='bob', device_code=True)\n"
        "print(s.device_code)"
    )
    _deny_device(stage.demo, started[0])
    stage.run("python", sdk)
    session = stage.python(
        sdk + "\n\nsession: dict = {}\n"
        "assert calendar_token('bob', session) is None\n"
        "print(session['consent_url'], session['valetkey_request'])\n"
        "print(calendar_token('alice', {}))\n"
    )
    assert session[0].startswith(stage.demo.authorization_url + "?"), session
    assert stage.demo.introspect(session[2], DEMO_CLIENT, DEMO_SECRET)["sub"] == "alice"

    # Tokens alice already has elsewhere, in the two files the import names.
    tokens = authorization_code_tokens(
        stage.demo,
        client_id=DEMO_CLIENT,
        client_secret=DEMO_SECRET,
        redirect_uri=f"{stage.broker_url}/v1/connect/callback",
    )
    (stage.work / "access.txt").write_text(tokens["access_token"])
    (stage.work / "refresh.txt").write_text(tokens["refresh_token"])
    stage.run("sh", imported)
    # The imported grant replaces the earlier one at once: its token is served, not the old one.
    now = stage.python(intro + "\nprint(token)")
    assert now[0] == tokens["access_token"]
    assert stage.demo.introspect(now[0], DEMO_CLIENT, DEMO_SECRET)["sub"] == "alice"

    stage.run("sh", revoke)
    gone = stage.python(
        "import valetkey.sync as valetkey\nfrom valetkey import UserAuthorizationRequired\n"
        "try:\n    valetkey.get_token('oauth/acme', user='alice')\n"
        "except UserAuthorizationRequired as exc:\n    print(exc.code)"
    )
    assert gone == ["user_authorization_required"]


def test_configuration_doc_cli_snippet_works_as_written(stage: Stage) -> None:
    """docs/configuration.md's CLI block runs verbatim here too (test_cli.py checks its output)."""
    blocks = code_blocks(ROOT / "docs" / "configuration.md", lambda h: h == "The CLI")
    assert [lang for lang, _ in blocks] == ["sh"]
    for language, block in blocks:
        stage.run(language, block)


def test_every_python_and_shell_snippet_of_the_docs_is_run(stage: Stage) -> None:
    """No ``python`` or ``sh`` block of the README or docs/ escapes these tests unless it is marked
    ``<!-- not run: why -->``, and the markings stay rare."""
    marked, missed = [], []
    for document in DOCUMENTS:
        for _language, block, not_run in snippets(document):
            where = f"{document.name}: {block.splitlines()[0] if block else ''}"
            if not_run:
                marked.append(where)
            elif block not in stage.ran:
                missed.append(where)
    assert not missed, f"snippets no test runs (run them, or mark them <!-- not run: why -->): {missed}"
    assert len(marked) <= 3, marked


def _deny_device(peer: OidcProviderPeer, user_code: str) -> None:
    """Press [ Abort ] on the demo server's device page."""
    with httpx2.Client() as browser:
        page = browser.get(f"{peer.issuer}/device")
        xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text)
        assert xsrf is not None, page.text
        browser.post(
            f"{peer.issuer}/device",
            data={"xsrf": xsrf.group(1), "user_code": user_code, "abort": "yes"},
        )
