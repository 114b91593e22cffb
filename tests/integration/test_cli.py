"""The `valetkey` command, driven as a user drives it, against a real broker (`valetkey serve`)."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from typer.testing import CliRunner, Result

from valetkey.cli.app import app

VALETKEY = str(Path(sys.executable).with_name("valetkey"))
_OUR_VARIABLES = (
    "VALETKEY_URL",
    "VALETKEY_API_TOKEN",
    "VALETKEY_TOKEN",
    "VALETKEY_OIDC_TOKEN",
    "VALETKEY_OIDC_TOKEN_FILE",
    "VALETKEY_DATA_DIR",
    "VALETKEY_DATABASE_URL",
    "VALETKEY_KEK",
    "VALETKEY_PUBLIC_URL",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any Valetkey variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _OUR_VARIABLES}
    env.update(extra)
    return env


@dataclass
class BrokerProcess:
    """A `valetkey serve` subprocess on 127.0.0.1 with its own data directory."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"broker-{self.port}.log"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    VALETKEY,
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(),
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the broker exited:\n" + self.log.read_text())
            try:
                if httpx2.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the broker did not become healthy:\n" + self.log.read_text())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def member_token(self) -> str:
        token: str = json.loads((self.data_dir / "cli.json").read_text())["token"]
        return token

    def env(self, **extra: str) -> dict[str, str]:
        """What a user on the broker's machine has: the data directory that holds cli.json."""
        return clean_env(VALETKEY_DATA_DIR=str(self.data_dir), **extra)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path_factory.mktemp("broker") / "data")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path / "data")
    proc.start()
    yield proc
    proc.stop()


def run(
    args: list[str], env: Mapping[str, str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed `valetkey` console script as a subprocess."""
    return subprocess.run(
        [VALETKEY, *args],
        env=dict(env),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def cli(
    args: list[str],
    env: Mapping[str, str],
    monkeypatch: pytest.MonkeyPatch,
    cwd: Path | None = None,
) -> Result:
    """Run the command in-process (same code path as the console script, minus process start-up)."""
    if cwd is not None:
        monkeypatch.chdir(cwd)
    unset: dict[str, str | None] = dict.fromkeys(_OUR_VARIABLES)
    return CliRunner().invoke(app, args, env={**unset, **env}, catch_exceptions=False)


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def make_attached(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch, api_key: str
) -> tuple[str, str]:
    """A project and an api-key connector attached to its development environment."""
    project, name = unique("p-"), unique("k-")
    env = broker.env()
    assert cli(["projects", "create", project], env, monkeypatch).exit_code == 0
    data = json.dumps({"apiKey": api_key})
    assert (
        cli(
            ["connect", "create", "api-key", "--name", name, "--data", data], env, monkeypatch
        ).exit_code
        == 0
    )
    uid = f"api-key/{name}"
    assert (
        cli(
            ["connect", "attach", uid, "--project", project, "-e", "development"], env, monkeypatch
        ).exit_code
        == 0
    )
    return project, uid


def dev_identity(broker: BrokerProcess, project: str) -> str:
    answer = httpx2.post(
        f"{broker.url}/v1/projects/{project}/development-identity",
        json={},
        headers={"Authorization": f"Bearer {broker.member_token}"},
    )
    answer.raise_for_status()
    token: str = answer.json()["token"]
    return token


def jwt_header(token: str) -> dict[str, object]:
    head = token.split(".")[0]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return decoded


def test_happy_path_as_subprocesses(broker: BrokerProcess, tmp_path: Path) -> None:
    """serve, projects create, connect create, attach, link, env pull, connect token: end to end."""
    env = broker.env()
    work = tmp_path / "app"
    work.mkdir()
    project, name, api_key = unique("agent-"), unique("search-"), unique("sk-live-")
    created = run(["projects", "create", project, "--format", "json"], env, work)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["slug"] == project
    (tmp_path / "conf.json").write_text(json.dumps({"apiKey": api_key, "header": "X-Api-Key"}))
    made = run(
        [
            "connect",
            "create",
            "api-key",
            "--name",
            name,
            "--data",
            f"@{tmp_path / 'conf.json'}",
            "--format",
            "json",
        ],
        env,
        work,
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["secretFields"] == ["apiKey"]
    assert api_key not in made.stdout + made.stderr
    uid = f"api-key/{name}"
    attached = run(
        ["connect", "attach", uid, "--project", project, "-e", "development,preview"], env, work
    )
    assert attached.returncode == 0, attached.stderr
    linked = run(["link", "--project", project], env, work)
    assert linked.returncode == 0, linked.stderr
    assert json.loads((work / ".valetkey" / "project.json").read_text()) == {
        "url": broker.url,
        "project": project,
    }
    (work / ".env").write_text(
        "# mine\nDATABASE_URL=postgres://localhost/app\nVALETKEY_TOKEN=stale\n"
    )
    pulled = run(["env", "pull"], env, work)
    assert pulled.returncode == 0, pulled.stderr
    assert str(work / ".env") in pulled.stdout
    assert "expires" in (pulled.stdout + pulled.stderr).lower()

    # The workload: no member credential, no variables, only the .env in its directory.
    token = run(["connect", "token", uid], clean_env(), work)
    assert token.returncode == 0, token.stderr
    assert token.stdout == api_key + "\n"
    assert token.stderr == ""


def test_env_pull_writes_a_private_env_and_keeps_other_lines(
    broker: BrokerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """env pull writes a 0600 .env with the URL and a JWT, replacing stale values; others stay."""
    project, _uid = make_attached(broker, monkeypatch, unique("sk-"))
    env = broker.env()
    assert cli(["link", "--project", project], env, monkeypatch, cwd=tmp_path).exit_code == 0
    original = "# my settings\nexport OTHER=1\nVALETKEY_URL=http://old.invalid\n\nQUOTED='a b'\n"
    (tmp_path / ".env").write_text(original)
    (tmp_path / ".env").chmod(0o644)
    result = cli(["env", "pull", "--ttl", "600", "--format", "json"], env, monkeypatch)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["environment"] == "development"
    written = (tmp_path / ".env").read_text()
    lines = written.splitlines()
    assert lines[:2] == ["# my settings", "export OTHER=1"]
    assert lines[2] == f"VALETKEY_URL={broker.url}"
    assert "QUOTED='a b'" in lines
    values = dict(line.split("=", 1) for line in lines if line.startswith("VALETKEY_"))
    assert values["VALETKEY_PROJECT"] == project
    assert values["VALETKEY_ENVIRONMENT"] == "development"
    assert jwt_header(values["VALETKEY_TOKEN"])["alg"] == "ES256"
    assert values["VALETKEY_TOKEN"] not in result.stdout + result.stderr
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600


def test_json_output_parses(broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every listing command prints machine-readable JSON with --format json."""
    project, uid = make_attached(broker, monkeypatch, unique("sk-"))
    env = broker.env()
    for args, kind in (
        (["projects", "list"], list),
        (["environments", "list", "--project", project], list),
        (["connect", "list", "--project", project], list),
        (["connect", "show", uid], dict),
        (["trust", "list"], list),
        (["tokens", "list"], list),
        (["members", "list"], list),
        (["audit", "--since", "1h", "--limit", "5"], list),
        (["usage"], dict),
    ):
        result = cli([*args, "--format", "json"], env, monkeypatch)
        assert result.exit_code == 0, (args, result.stderr)
        assert isinstance(json.loads(result.stdout), kind), args
    shown = json.loads(cli(["connect", "show", uid, "--format", "json"], env, monkeypatch).stdout)
    assert shown["links"] == [
        {
            "project": project,
            "environments": ["development"],
            "policy": {
                "subjects": ["app"],
                "scopes": None,
                "maxLifetimeSeconds": None,
                "confirmConsent": True,
                "userIssuers": [],
                "resources": [],
                "audiences": [],
                "allowUnknownScope": False,
            },
        }
    ]


def test_member_credential_is_never_printed(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The member credential (cli.json or VALETKEY_API_TOKEN) is used, never printed."""
    secret = broker.member_token
    from_file = cli(["projects", "list"], broker.env(), monkeypatch)
    from_env = cli(
        ["projects", "list", "--format", "json"],
        clean_env(VALETKEY_URL=broker.url, VALETKEY_API_TOKEN=secret),
        monkeypatch,
    )
    for result in (from_file, from_env):
        assert result.exit_code == 0, result.stderr
        assert secret not in result.stdout + result.stderr


def test_missing_credentials_name_both_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without VALETKEY_API_TOKEN and without cli.json, the refusal names both ways to fix it."""
    result = cli(["projects", "list"], clean_env(VALETKEY_DATA_DIR=str(tmp_path)), monkeypatch)
    assert result.exit_code == 1
    assert result.stderr.startswith("error[credentials_not_found]: ")
    assert "VALETKEY_API_TOKEN" in result.stderr
    assert str(tmp_path / "cli.json") in result.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["connect", "show", "api-key/does-not-exist"], "not_found"),
        (
            ["connect", "create", "api-key", "--name", "bad", "--data", '{"apiKey": "sk-SECRET",'],
            "invalid_request",
        ),
        (["connect", "create", "api-key", "--name", "bad", "--data", "[1, 2]"], "invalid_request"),
        (
            [
                "trust",
                "create",
                "--project",
                "PROJECT",
                "-e",
                "production",
                "--issuer",
                "https://token.actions.githubusercontent.com",
                "--audience",
                "valetkey",
            ],
            "invalid_request",
        ),
        (
            [
                "trust",
                "create",
                "--project",
                "PROJECT",
                "-e",
                "production",
                "--issuer",
                "https://token.actions.githubusercontent.com",
                "--audience",
                "valetkey",
                "--claim",
                "repository_id",
            ],
            "invalid_request",
        ),
        (["connect", "show", "not a uid"], "invalid_request"),
        (["projects", "create", "Not_A_Slug"], "invalid_request"),
    ],
)
def test_refusals_print_code_and_exit_1(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch, args: list[str], code: str
) -> None:
    """A refused command prints error[code]: message on stderr, nothing on stdout, and exits 1."""
    project = unique("r-")
    assert cli(["projects", "create", project], broker.env(), monkeypatch).exit_code == 0
    result = cli([a.replace("PROJECT", project) for a in args], broker.env(), monkeypatch)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error[{code}]: "), result.stderr
    assert result.stdout == ""
    assert "sk-SECRET" not in result.stderr


def test_remove_while_attached_is_refused_with_a_hint(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """connect remove refuses an attached connector (with a remedy); --disconnect-all removes it."""
    _project, uid = make_attached(broker, monkeypatch, unique("sk-"))
    refused = cli(["connect", "remove", uid, "--yes"], broker.env(), monkeypatch)
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error[connector_linked]: ")
    assert "--disconnect-all" in refused.stderr
    removed = cli(
        ["connect", "remove", uid, "--disconnect-all", "--yes", "--format", "json"],
        broker.env(),
        monkeypatch,
    )
    assert removed.exit_code == 0, removed.stderr
    assert json.loads(removed.stdout) == {"uid": uid, "removed": True, "detached": 1}
    gone = cli(["connect", "show", uid], broker.env(), monkeypatch)
    assert gone.stderr.startswith("error[not_found]: ")


def test_usage_errors_exit_2(broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing required option or a contradictory pair is a usage error (exit 2)."""
    assert cli(["connect", "attach", "api-key/x"], broker.env(), monkeypatch).exit_code == 2
    both = cli(
        ["connect", "revoke-tokens", "api-key/x", "--my-tokens", "--all-tokens"],
        broker.env(),
        monkeypatch,
    )
    assert both.exit_code == 2


def test_connect_token_uses_the_workload_identity(
    broker: BrokerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """connect token presents VALETKEY_TOKEN, prints only the token; refusals keep stdout empty."""
    api_key = unique("sk-")
    project, uid = make_attached(broker, monkeypatch, api_key)
    workload = clean_env(VALETKEY_URL=broker.url, VALETKEY_TOKEN=dev_identity(broker, project))
    result = cli(["connect", "token", uid, "-n"], workload, monkeypatch, cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == api_key
    refused = cli(["connect", "token", uid, "--scopes", "read"], workload, monkeypatch)
    assert refused.exit_code == 1
    assert refused.stdout == ""
    assert refused.stderr.startswith("error[scope_not_allowed]: ")
    missing = cli(["connect", "token", uid], clean_env(), monkeypatch)
    assert missing.stderr.startswith("error[identity_not_found]: ")
    assert "valetkey env pull" in missing.stderr


def test_revoke_tokens_reports_the_counts(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """revoke-tokens --my-tokens (workload) and --all-tokens (member) print the five counts."""
    project, uid = make_attached(broker, monkeypatch, unique("sk-"))
    workload = clean_env(VALETKEY_URL=broker.url, VALETKEY_TOKEN=dev_identity(broker, project))
    assert cli(["connect", "token", uid], workload, monkeypatch).exit_code == 0
    mine = cli(
        ["connect", "revoke-tokens", uid, "--my-tokens", "--format", "json"], workload, monkeypatch
    )
    assert mine.exit_code == 0, mine.stderr
    assert json.loads(mine.stdout) == {
        "tokensFound": 1,
        "deleted": 1,
        "providerRevoked": 0,
        "providerSkipped": 1,
        "providerFailed": 0,
    }
    assert cli(["connect", "token", uid], workload, monkeypatch).exit_code == 0
    every = cli(["connect", "revoke-tokens", uid, "--all-tokens", "-y"], broker.env(), monkeypatch)
    assert every.exit_code == 0, every.stderr
    for name in ("tokensFound", "deleted", "providerRevoked", "providerSkipped", "providerFailed"):
        assert name in every.stdout


def test_access_token_is_shown_once(broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """tokens create shows the token once with a warning; list never shows it; revoke marks it."""
    project = unique("t-")
    env = broker.env()
    assert cli(["projects", "create", project], env, monkeypatch).exit_code == 0
    made = cli(
        [
            "tokens",
            "create",
            "--project",
            project,
            "-e",
            "production",
            "--expires-in",
            "3600",
            "--format",
            "json",
        ],
        env,
        monkeypatch,
    )
    assert made.exit_code == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["token"].startswith("vk_at_")
    assert "will not be shown again" in made.stderr
    listed = cli(["tokens", "list", "--project", project, "--format", "json"], env, monkeypatch)
    assert created["token"] not in listed.stdout
    assert [t["id"] for t in json.loads(listed.stdout)] == [created["id"]]
    assert cli(["tokens", "revoke", created["id"]], env, monkeypatch).exit_code == 0
    again = json.loads(
        cli(["tokens", "list", "--project", project, "--format", "json"], env, monkeypatch).stdout
    )
    assert again[0]["revokedAt"] is not None


def test_trust_binding_round_trip(broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """trust create with claims, trust list, trust delete."""
    project = unique("tr-")
    env = broker.env()
    assert cli(["projects", "create", project], env, monkeypatch).exit_code == 0
    made = cli(
        [
            "trust",
            "create",
            "--project",
            project,
            "-e",
            "production",
            "--issuer",
            "https://token.actions.githubusercontent.com",
            "--audience",
            "valetkey",
            "--claim",
            "repository_id=123",
            "--claim",
            "ref=refs/heads/*",
            "--algorithm",
            "RS256",
            "--format",
            "json",
        ],
        env,
        monkeypatch,
    )
    assert made.exit_code == 0, made.stderr
    binding = json.loads(made.stdout)
    assert binding["claims"] == {"repository_id": "123", "ref": "refs/heads/*"}
    assert binding["algorithms"] == ["RS256"]
    listed = json.loads(
        cli(["trust", "list", "--project", project, "--format", "json"], env, monkeypatch).stdout
    )
    assert [b["id"] for b in listed] == [binding["id"]]
    assert cli(["trust", "delete", binding["id"]], env, monkeypatch).exit_code == 0
    assert (
        json.loads(
            cli(
                ["trust", "list", "--project", project, "--format", "json"], env, monkeypatch
            ).stdout
        )
        == []
    )


def test_members_create_prints_the_credential_once(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """members create prints a working credential once; a viewer's credential cannot write."""
    name = unique("viewer-")
    made = cli(
        ["members", "create", name, "--role", "viewer", "--format", "json"],
        broker.env(),
        monkeypatch,
    )
    assert made.exit_code == 0, made.stderr
    credential = json.loads(made.stdout)["credential"]
    as_viewer = clean_env(VALETKEY_URL=broker.url, VALETKEY_API_TOKEN=credential)
    assert cli(["projects", "list"], as_viewer, monkeypatch).exit_code == 0
    refused = cli(["projects", "create", unique("v-")], as_viewer, monkeypatch)
    assert refused.stderr.startswith("error[forbidden]: ")
    listed = cli(["members", "list", "--format", "json"], broker.env(), monkeypatch).stdout
    assert credential not in listed


def test_members_revoke_asks_first_then_ends_the_credential(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """members revoke NAME asks for confirmation (no: nothing changes), and with --yes or a yes,
    revokes: the member's credential is refused at once and the last owner is refused."""
    env = broker.env()
    name = unique("leaver-")
    made = cli(["members", "create", name, "--expires-in", "3600", "--format", "json"], env, monkeypatch)
    assert made.exit_code == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["expiresAt"] is not None
    as_member = clean_env(VALETKEY_URL=broker.url, VALETKEY_API_TOKEN=created["credential"])
    assert cli(["projects", "list"], as_member, monkeypatch).exit_code == 0
    listed = json.loads(cli(["members", "list", "--format", "json"], env, monkeypatch).stdout)
    assert next(m for m in listed if m["name"] == name)["lastUsedAt"] is not None

    declined = CliRunner().invoke(
        app, ["members", "revoke", name], env={**dict.fromkeys(_OUR_VARIABLES), **env}, input="n\n"
    )
    assert declined.exit_code == 1
    assert cli(["projects", "list"], as_member, monkeypatch).exit_code == 0
    by_id = CliRunner().invoke(
        app,
        ["members", "revoke", created["id"]],
        env={**dict.fromkeys(_OUR_VARIABLES), **env},
        input="y\n",
    )
    assert by_id.exit_code == 0, by_id.stderr
    refused = cli(["projects", "list"], as_member, monkeypatch)
    assert refused.stderr.startswith("error[invalid_identity]: ")
    assert cli(["members", "revoke", name, "--yes"], env, monkeypatch).stderr.startswith(
        "error[not_found]: "
    )
    last = cli(["members", "revoke", "owner", "--yes"], env, monkeypatch)
    assert last.stderr.startswith("error[last_owner]: "), last.stderr


def test_members_rotate_rewrites_the_local_credential(
    own_broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """members rotate with the local credential writes the new one to cli.json (0600, not printed);
    with VALETKEY_API_TOKEN it prints the new one once. The old one is refused either way."""
    env = own_broker.env()
    old = own_broker.member_token
    rotated = cli(["members", "rotate"], env, monkeypatch)
    assert rotated.exit_code == 0, rotated.stderr
    new = own_broker.member_token
    assert new != old
    assert new not in rotated.stdout + rotated.stderr
    assert stat.S_IMODE((own_broker.data_dir / "cli.json").stat().st_mode) == 0o600
    assert json.loads((own_broker.data_dir / "cli.json").read_text())["url"] == own_broker.url
    assert cli(["projects", "list"], env, monkeypatch).exit_code == 0
    as_old = clean_env(VALETKEY_URL=own_broker.url, VALETKEY_API_TOKEN=old)
    assert cli(["projects", "list"], as_old, monkeypatch).stderr.startswith("error[invalid_identity]: ")

    as_new = clean_env(VALETKEY_URL=own_broker.url, VALETKEY_API_TOKEN=new)
    printed = cli(["members", "rotate", "--expires-in", "600", "--format", "json"], as_new, monkeypatch)
    assert printed.exit_code == 0, printed.stderr
    shown = json.loads(printed.stdout)
    assert shown["credential"].startswith("vk_pt_")
    assert shown["expiresAt"] is not None
    assert own_broker.member_token == new  # cli.json untouched: that credential was not used
    assert cli(["projects", "list"], as_new, monkeypatch).stderr.startswith("error[invalid_identity]: ")


def test_secret_is_not_in_the_sqlite_files(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planted apiKey is not in plaintext in valetkey.db or its -wal file, yet is served."""
    api_key = "sk-plant-" + secrets.token_hex(16)
    project, uid = make_attached(broker, monkeypatch, api_key)
    workload = clean_env(VALETKEY_URL=broker.url, VALETKEY_TOKEN=dev_identity(broker, project))
    assert cli(["connect", "token", uid], workload, monkeypatch).stdout == api_key + "\n"
    db = broker.data_dir / "valetkey.db"
    files = [p for p in (db, db.with_name("valetkey.db-wal")) if p.exists()]
    assert db in files
    assert any(p.stat().st_size > 0 for p in files)
    for path in files:
        raw = path.read_bytes()
        assert api_key.encode() not in raw, path
        assert api_key.encode("utf-16-le") not in raw, path


def test_serve_refuses_a_bad_database_url_cleanly(tmp_path: Path) -> None:
    """serve with a bad or unreachable --database-url prints error[code], no traceback, exit 1."""
    for url, code in (
        ("mysql://db/app", "invalid_request"),
        (f"postgresql://nobody@127.0.0.1:{free_port()}/x", "database_unreachable"),
    ):
        result = run(
            ["serve", "--data-dir", str(tmp_path / "d"), "--database-url", url, "--port", "0"],
            clean_env(),
            tmp_path,
        )
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(f"error[{code}]: "), result.stderr
        assert "Traceback" not in result.stderr


def test_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """--version prints the package version."""
    result = cli(["--version"], {}, monkeypatch)
    assert result.exit_code == 0
    assert result.stdout.startswith("valetkey ")


def _key_ids(data_dir: Path) -> tuple[str, list[str]]:
    doc = json.loads((data_dir / "keys" / "kek.json").read_text())
    return doc["active"], [k["id"] for k in doc["keys"]]


def test_keys_rotate_while_the_broker_runs(
    own_broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """keys rotate re-wraps every secret under a new KEK and retires the old one.

    Tokens keep working, before and after a broker restart.
    """
    api_key = unique("sk-rot-")
    project, uid = make_attached(own_broker, monkeypatch, api_key)
    workload = clean_env(
        VALETKEY_URL=own_broker.url, VALETKEY_TOKEN=dev_identity(own_broker, project)
    )
    result = cli(["connect", "token", uid], workload, monkeypatch)
    assert result.stderr == ""  # today: error[...] from the broker (unknown_kek after the restart)
    assert result.stdout == api_key + "\n"
    old_active, _ = _key_ids(own_broker.data_dir)

    rotated = cli(
        ["keys", "rotate", "--data-dir", str(own_broker.data_dir), "--format", "json"],
        clean_env(),
        monkeypatch,
    )
    assert rotated.exit_code == 0, rotated.stderr
    report = json.loads(rotated.stdout)
    assert report["activeKek"] != old_active
    assert report["retired"] == [old_active]
    assert report["rewrapped"]["connectors"] >= 1
    assert "re-wrapped" in rotated.stderr
    assert _key_ids(own_broker.data_dir) == (report["activeKek"], [report["activeKek"]])

    revoked = cli(["connect", "revoke-tokens", uid, "--all-tokens", "-y"], own_broker.env(), monkeypatch)
    assert revoked.exit_code == 0, revoked.stderr
    assert cli(["connect", "token", uid], workload, monkeypatch).stdout == api_key + "\n"
    own_broker.stop()
    own_broker.start()
    assert cli(["connect", "token", uid], workload, monkeypatch).stdout == api_key + "\n"
    audit = cli(
        ["audit", "--action", "keys.rotate", "--format", "json"], own_broker.env(), monkeypatch
    )
    assert json.loads(audit.stdout)[0]["details"]["activeKek"] == report["activeKek"]


def test_records_written_after_rotation_survive_a_restart(
    own_broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connector created via the running broker just after keys rotate decrypts after restart."""
    env = own_broker.env()
    assert cli(["projects", "list"], env, monkeypatch).exit_code == 0
    assert (
        cli(
            ["keys", "rotate", "--data-dir", str(own_broker.data_dir)], clean_env(), monkeypatch
        ).exit_code
        == 0
    )
    api_key = unique("sk-after-")
    project, uid = make_attached(own_broker, monkeypatch, api_key)
    own_broker.stop()
    own_broker.start()
    workload = clean_env(
        VALETKEY_URL=own_broker.url, VALETKEY_TOKEN=dev_identity(own_broker, project)
    )
    result = cli(["connect", "token", uid], workload, monkeypatch)
    assert result.stderr == ""  # today: error[...] from the broker (unknown_kek after the restart)
    assert result.stdout == api_key + "\n"


def test_create_asks_for_a_missing_secret_on_a_terminal_and_reads_stdin(
    broker: BrokerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """connect create asks for a secret field left out of --data with hidden input (never echoed)
    when stdin is a terminal; --data @- reads the JSON from stdin; the broker stores both."""
    env = {**dict.fromkeys(_OUR_VARIABLES), **broker.env()}
    typed, piped = unique("sk-typed-"), unique("sk-piped-")
    monkeypatch.setattr("valetkey.cli.prompts.interactive", lambda: True)
    asked = CliRunner().invoke(
        app,
        ["connect", "create", "api-key", "--name", unique("p-"), "--data", '{"header": "X-Key"}'],
        env=env,
        input=typed + "\n",
    )
    assert asked.exit_code == 0, asked.stderr
    assert "apiKey (the key, hidden):" in asked.stderr
    assert typed not in asked.stdout + asked.stderr
    monkeypatch.setattr("valetkey.cli.prompts.interactive", lambda: False)
    name = unique("s-")
    from_stdin = CliRunner().invoke(
        app,
        ["connect", "create", "api-key", "--name", name, "--data", "@-", "--format", "json"],
        env=env,
        input=json.dumps({"apiKey": piped}),
    )
    assert from_stdin.exit_code == 0, from_stdin.stderr
    assert json.loads(from_stdin.stdout)["secretFields"] == ["apiKey"]
    assert piped not in from_stdin.stdout + from_stdin.stderr
    # Without a terminal nothing is asked: the broker names the missing field.
    bare = cli(["connect", "create", "api-key", "--name", unique("b-")], broker.env(), monkeypatch)
    assert bare.stderr.startswith("error[invalid_request]: apiKey is required"), bare.stderr


def test_refusals_point_at_the_fix(broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown connector, unknown environment, a service with no type, an existing connector and
    a misspelt field each say what to do; with --format json the same, as JSON on stderr."""
    env = broker.env()
    project, uid = make_attached(broker, monkeypatch, unique("sk-"))
    missing = cli(["connect", "show", "api-key/nope"], env, monkeypatch)
    assert missing.stderr == (
        "error[not_found]: no connector api-key/nope\n"
        "  hint: `valetkey connect list` (GET /v1/connectors) lists the connectors.\n"
    )
    no_env = cli(["connect", "attach", uid, "-p", project, "-e", "dev"], env, monkeypatch)
    assert no_env.stderr == (
        f"error[not_found]: project {project} has no environment dev; "
        "its environments: development, preview, production\n"
        f"  hint: `valetkey environments create dev --project {project}` adds one.\n"
    )
    service = cli(["connect", "create", "github", "--name", "x"], env, monkeypatch)
    assert service.stderr == (
        "error[invalid_request]: no connector type is implied by service 'github': name the type "
        "(one of api-key, oauth)\n"
        "  hint: With the CLI: `valetkey connect create github --type oauth --name NAME "
        '--data …`; over the API: "type" in the body.\n'
    )
    name = uid.split("/")[1]
    exists = cli(
        ["connect", "create", "api-key", "--name", name, "--data", '{"apiKey": "k"}'],
        env,
        monkeypatch,
    )
    assert exists.stderr == (
        f"error[conflict]: connector {uid} exists\n"
        f"  hint: To change its configuration: `valetkey connect update {uid} --data …` "
        f"(PATCH /v1/connectors/{uid}).\n"
    )
    typo = cli(
        ["connect", "create", "oauth", "--name", unique("o-"), "--format", "json", "--data",
         '{"tokenURL": "https://a.example/t", "clientId": "c", "clientSecret": "s"}'],
        env,
        monkeypatch,
    )
    assert typo.exit_code == 1
    error = json.loads(typo.stderr)["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith(
        "unknown configuration field 'tokenURL' (did you mean 'tokenUrl'?); known fields: "
    )
    assert (error["field"], error["suggestion"]) == ("tokenURL", "tokenUrl")
    assert error["hint"] == "Rename 'tokenURL' to 'tokenUrl'."


def test_ids_links_merge_and_confirmations(
    broker: BrokerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connector id (con_…) works where a uid does; attach, detach and token default to the
    linked project; update merges (naming what changed) unless --replace."""
    env = broker.env()
    project, name, api_key = unique("l-"), unique("m-"), unique("sk-")
    assert cli(["projects", "create", project], env, monkeypatch).exit_code == 0
    made = cli(
        ["connect", "create", "api-key", "--name", name, "--format", "json", "--data",
         json.dumps({"apiKey": api_key, "description": "first"})],
        env,
        monkeypatch,
    )
    connector_id, uid = json.loads(made.stdout)["id"], f"api-key/{name}"
    assert connector_id.startswith("con_")
    shown = json.loads(cli(["connect", "show", connector_id, "--format", "json"], env, monkeypatch).stdout)
    assert shown["uid"] == uid
    assert cli(["link", "--project", project], env, monkeypatch, cwd=tmp_path).exit_code == 0
    attached = cli(["connect", "attach", connector_id, "-e", "development", "--format", "json"], env, monkeypatch)
    assert attached.exit_code == 0, attached.stderr
    assert json.loads(attached.stdout)["project"] == project

    # No .env here: connect token asks for a development identity of the linked project.
    token = cli(["connect", "token", uid, "--format", "json"], env, monkeypatch)
    assert token.exit_code == 0, token.stderr
    answer = json.loads(token.stdout)
    assert answer["token"] == api_key
    assert answer["connector"] == {"id": connector_id, "uid": uid, "type": "api-key"}
    assert cli(["connect", "token", uid], env, monkeypatch).stdout == api_key + "\n"
    assert cli(["connect", "token", connector_id], env, monkeypatch).stdout == api_key + "\n"

    merged = cli(["connect", "update", connector_id, "--data", '{"header": "X-Key"}'], env, monkeypatch)
    assert merged.exit_code == 0, merged.stderr
    assert "changed: header" in merged.stderr
    data = json.loads(cli(["connect", "show", uid, "--format", "json"], env, monkeypatch).stdout)["data"]
    assert data == {"header": "X-Key", "description": "first"}
    replaced = cli(["connect", "update", uid, "--replace", "--data", '{"header": "X-Other"}'], env, monkeypatch)
    assert "changed: header; removed: description" in replaced.stderr
    data = json.loads(cli(["connect", "show", uid, "--format", "json"], env, monkeypatch).stdout)["data"]
    assert data == {"header": "X-Other"}
    assert cli(["connect", "token", uid], env, monkeypatch).stdout == api_key + "\n"  # secret kept

    refused = cli(["connect", "detach", connector_id], env, monkeypatch)
    assert refused.stderr.startswith("error[confirmation_required]: ")
    detached = cli(["connect", "detach", connector_id, "--yes", "--format", "json"], env, monkeypatch)
    assert json.loads(detached.stdout)["connector"] == uid
    removed = cli(["connect", "rm", connector_id, "-y", "--format", "json"], env, monkeypatch)
    assert json.loads(removed.stdout) == {"uid": uid, "removed": True, "detached": 0}


def test_usage_keys_are_camel_case(broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """valetkey usage --format json gives the management wire's camelCase metric names."""
    project, uid = make_attached(broker, monkeypatch, unique("sk-"))
    workload = clean_env(VALETKEY_URL=broker.url, VALETKEY_TOKEN=dev_identity(broker, project))
    assert cli(["connect", "token", uid], workload, monkeypatch).exit_code == 0
    counters = json.loads(cli(["usage", "--format", "json"], broker.env(), monkeypatch).stdout)
    assert counters["counters"], counters
    assert all(re.fullmatch(r"[a-z]+([A-Z][a-z0-9]*)*", name) for name in counters["counters"])


def test_configuration_docs_cli_snippet_runs_as_written(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    """docs/configuration.md's CLI block (--data @-, update merge, ls, rm --yes) runs verbatim."""
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    section = doc.split("## The CLI", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    env = broker.env(PATH=f"{Path(VALETKEY).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "sk-from-a-pipe" not in done.stdout + done.stderr
    assert "changed: header" in done.stderr
    assert re.search(r"removed\s*│\s*yes", done.stdout), done.stdout
