"""Operating the bot: /healthz readiness, the SIGTERM drain, the hardened HTTP server, secrets from AWS Secrets
Manager, and the IAM policies ``python -m deploy policy`` prints.

The drain is shown end to end: ``python -m bot slack --http`` in a subprocess, the Slack emulator on loopback, and
the models behind the SageMaker Runtime API (a loopback ``model.serve`` on tiny checkpoints) reached through a gate
this test opens or keeps shut, so a turn is provably in flight when SIGTERM arrives.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bot import health as H
from bot import slack_app
from bot.backends import Backend
from bot.engine import Engine
from bot.health import Health, TrackedJobs
from bot.http_server import HttpServer, wsgi_app
from bot.settings import Settings
from bot.store import Store
from tests.conftest import make_photo, to_bytes
from tests.slack_emulator import BOT_TOKEN, SIGNING_SECRET, SignedClient, SlackEmulator, file_share, message

ROOT = Path(__file__).resolve().parents[1]
CH = "C0OPERATE"
PHOTO = to_bytes(make_photo(160, 240), "JPEG", quality=95)


def get(url: str, timeout: float = 10.0) -> tuple[int, dict, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}"), dict(r.headers)
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, (json.loads(body) if body.startswith(b"{") else {"text": body.decode()}), dict(exc.headers)


# -- /healthz in process ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def bot_server(tmp_path, **overrides):
    """The Bolt app on the production HTTP server (waitress via Bolt's WSGI adapter), readiness wired in; no
    models (nothing here generates)."""
    emu = SlackEmulator().start()
    settings = Settings.from_env({}, data_dir=tmp_path, backend="sagemaker", slack_bot_token=BOT_TOKEN,
                                 slack_signing_secret=SIGNING_SECRET, slack_api_url=emu.api_url, queue_size=4,
                                 **overrides)
    engine = Engine(Store(settings.data_dir), Backend(), settings)
    jobs = TrackedJobs(settings.job_workers, settings.job_queue)
    app = slack_app.build_app(engine, settings, jobs=jobs)
    health = Health(store=engine.store, jobs=jobs, capacity=settings.job_queue, sizing=settings.job_sizing)
    app.use(health.middleware)
    server = slack_app.serve_http(app, "127.0.0.1", 0, health=health)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        yield base, SignedClient(base + slack_app.EVENTS_PATH), health, engine
    finally:
        server.shutdown()
        server.server_close()
        jobs.shutdown()
        emu.stop()
        with contextlib.suppress(Exception):
            engine.store.close()


def test_healthz_reports_store_queue_and_slack_contact_and_503_when_not_ready(tmp_path):
    with bot_server(tmp_path) as (base, slack, health, engine):
        status, body, headers = get(base + "/healthz")
        assert status == 200 and body["ready"] is True and body["reasons"] == []
        assert body["store"] == "ok" and body["mode"] == "http" and body["draining"] is False
        # RESTYLE_QUEUE=4 set, RESTYLE_WORKERS auto: the SageMaker backend's pool, capped by the queue
        assert body["queue"] == {"pending": 0, "workers": 4, "capacity": 4,
                                 "sizing": "auto (sagemaker backend), partly set"}
        assert body["slack"]["last_contact_s_ago"] is None  # Slack has not reached this app yet
        assert headers["Content-Type"] == "application/json"

        assert slack.event(message(CH, "just chatting")).status == 200  # a verified delivery is contact
        _, body, _ = get(base + "/healthz")
        assert 0 <= body["slack"]["last_contact_s_ago"] < 5

        # an unsigned request is not contact (Bolt refuses it before any middleware)
        before = health._last_contact
        assert slack.event(message(CH, "forged"), signature="v0=" + "0" * 64).status == 401
        assert health._last_contact == before

        engine.store.close()  # the store stops answering: not ready
        status, body, _ = get(base + "/healthz")
        assert status == 503 and body["ready"] is False
        assert body["store"].startswith("error:") and any(r.startswith("store:") for r in body["reasons"])


def test_draining_answers_503_to_health_and_to_slack_so_it_redelivers_elsewhere(tmp_path):
    with bot_server(tmp_path) as (base, slack, health, engine):
        health.begin_drain()
        status, body, _ = get(base + "/healthz")
        assert status == 503 and body["draining"] is True and "draining: shutting down" in body["reasons"]
        resp = slack.event(message(CH, "hello?"))
        assert resp.status == 503 and resp.headers.get("Retry-After") == "1"
        # a slash command is not retried by Slack: it is still answered while draining
        resp = slack.command("help", channel=CH)
        assert resp.status == 200 and "batch" in resp.body


def test_socket_mode_health_port_follows_the_connection():
    """Socket Mode serves only /healthz (``--health-port``): 503 while the WebSocket is down."""
    state = {"up": False}
    health = Health(mode="socket", connected=lambda: state["up"])
    server = HttpServer(wsgi_app(health), "127.0.0.1", 0)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        status, body, _ = get(base + "/healthz")
        assert status == 503 and body["slack"]["connected"] is False
        assert "slack: the Socket Mode connection is down" in body["reasons"]
        state["up"] = True
        status, body, _ = get(base + "/healthz")
        assert status == 200 and body["slack"]["connected"] is True and body["mode"] == "socket"
        assert get(base + "/slack/events")[0] == 404  # no Events API on the health port
    finally:
        server.shutdown()
        server.server_close()


def test_settings_for_operating_are_checked():
    with pytest.raises(ValueError, match="RESTYLE_DRAIN_S"):
        Settings.from_env({"RESTYLE_DRAIN_S": "-1", "RESTYLE_BACKEND": "sagemaker"})
    with pytest.raises(ValueError, match="RESTYLE_HEALTH_PORT"):
        Settings.from_env({"RESTYLE_HEALTH_PORT": "70000", "RESTYLE_BACKEND": "sagemaker"})
    s = Settings.from_env({"RESTYLE_DRAIN_S": "2.5", "RESTYLE_HEALTH_PORT": "8081", "RESTYLE_BACKEND": "sagemaker"})
    assert (s.drain_s, s.health_port) == (2.5, 8081)
    assert Settings().drain_s == 30.0


# -- SIGTERM end to end --------------------------------------------------------------------------------------------
class GatedRuntime:
    """A SageMaker Runtime in front of a loopback ``model.serve``: inpainting calls wait until ``gate`` opens."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.gate = threading.Event()
        self.closed = False  # held calls are then answered 503, never run (no model work left at exit)
        self.inpaint_calls = 0
        self.entered = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if "inpaint" in self.path:
                    outer.inpaint_calls += 1
                    outer.entered.set()
                    outer.gate.wait(120)
                    if outer.closed:
                        self.send_response(503)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                req = urllib.request.Request(outer.upstream + self.path, data=body, method="POST",
                                             headers={k: v for k, v in self.headers.items()
                                                      if k.lower() in ("content-type", "accept")})
                try:
                    with urllib.request.urlopen(req, timeout=120) as r:
                        status, data, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
                except urllib.error.HTTPError as exc:
                    status, data, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "")
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.closed = True
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def model_runtime(tiny_dir):
    from model.serve import ModelServer, start

    server = ModelServer({"clipseg": str(tiny_dir / "clipseg"), "inpaint": str(tiny_dir / "inpaint")})
    httpd = start(server, port=0)
    assert server.ready.wait(120), server.load_error
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@contextlib.contextmanager
def bot_process(tmp_path, runtime_url: str, emu: SlackEmulator, *,
                args: tuple[str, ...] = ("--http", "--port", "0"),
                serving: str = r"serving the Slack Events API on http://127\.0\.0\.1:(\d+)", **env):
    """``python -m bot slack --http --port 0 --backend sagemaker`` (or ``args``) with the models behind
    ``runtime_url``; yields the process and the base URL of the port the ``serving`` line names."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "RESTYLE_DATA_DIR": str(tmp_path / "data"),
                "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": emu.api_url,
                "RESTYLE_SAGEMAKER_ENDPOINT_URL": runtime_url, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "RESTYLE_STEPS": "2",
                "RESTYLE_NUM_IMAGES": "2", "RESTYLE_RETRIES": "0", "RESTYLE_WORKERS": "1",
                "RESTYLE_TEST_LOOPBACK_FILES": "1", **env}  # the emulator serves files over loopback http
    proc = subprocess.Popen([sys.executable, "-m", "bot", "slack", *args, "--backend",
                             "sagemaker", "--log-level", "WARNING"], env=full_env, cwd=ROOT,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    port: list[int] = []
    ready = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if m := re.search(serving, line):
                port.append(int(m.group(1)))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(60) and port, "the bot did not start:\n" + "".join(lines)
        proc.log = lines  # type: ignore[attr-defined]
        yield proc, f"http://127.0.0.1:{port[0]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _thread_texts(emu: SlackEmulator, root: str) -> list[str]:
    return [m["text"] for m in emu.thread_messages(CH, root)]


def test_sigterm_lets_the_running_turn_finish_then_exits_0(tmp_path, model_runtime):
    emu = SlackEmulator().start()
    gated = GatedRuntime(model_runtime)
    try:
        with bot_process(tmp_path, gated.url, emu, RESTYLE_DRAIN_S="60") as (proc, base):
            slack = SignedClient(base + slack_app.EVENTS_PATH)
            root = "1700000000.000100"
            f = emu.host_file(PHOTO, "look.jpg", "image/jpeg")
            assert slack.event(file_share(CH, [f], ts=root, text="make the skirt a red floral maxi")).status == 200
            assert gated.entered.wait(60), "no inpainting call arrived:\n" + "".join(proc.log)
            status, body, _ = get(base + "/healthz")
            assert status == 200 and body["queue"]["pending"] == 1

            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            while get(base + "/healthz")[0] != 503:  # draining: not ready, but still answering
                assert time.monotonic() < deadline, "healthz never turned 503"
                time.sleep(0.1)
            assert slack.event(message(CH, "another request")).status == 503
            assert proc.poll() is None  # still draining: the turn is in flight

            gated.gate.set()  # the endpoint answers: the turn completes within the drain bound
            assert proc.wait(60) == 0, "".join(proc.log)
        variations = [m for m in emu.thread_messages(CH, root) if any(b.get("type") == "actions"
                                                                       for b in m.get("blocks") or [])]
        assert len(variations) == 2, _thread_texts(emu, root)
        assert not any("interrupted" in t for t in _thread_texts(emu, root))
    finally:
        gated.close()
        emu.stop()


def test_sigterm_past_the_drain_bound_tells_the_threads_and_exits_0(tmp_path, model_runtime):
    emu = SlackEmulator().start()
    gated = GatedRuntime(model_runtime)
    try:
        with bot_process(tmp_path, gated.url, emu, RESTYLE_DRAIN_S="1") as (proc, base):
            slack = SignedClient(base + slack_app.EVENTS_PATH)
            running, queued = "1700000000.000200", "1700000000.000300"
            for root, prompt in ((running, "make the skirt a red floral maxi"), (queued, "make the top denim")):
                f = emu.host_file(PHOTO, "look.jpg", "image/jpeg")
                assert slack.event(file_share(CH, [f], ts=root, text=prompt)).status == 200
                if root == running:
                    assert gated.entered.wait(60), "no inpainting call arrived:\n" + "".join(proc.log)
            # the second request waits behind the first (one worker)
            emu.wait_until(lambda: any("Queued" in t for t in _thread_texts(emu, queued)), 30, what="queued")
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, "".join(proc.log)
            assert time.monotonic() - t0 < 15
        # the running turn's status message became the notice, naming what was asked; the queued one's too
        texts = _thread_texts(emu, running)
        assert any(t == H.DRAIN_INTERRUPTED.format(text="make the skirt a red floral maxi") for t in texts), texts
        assert not any(t.startswith("Working on it") for t in texts)
        assert H.DRAIN_NOT_STARTED in _thread_texts(emu, queued)
        updates = [b["text"] for b in emu.bodies("chat.update")]
        assert H.DRAIN_NOT_STARTED in updates and any("interrupted by a restart" in u for u in updates)

        # a restart does not tell the thread a second time
        emu2_before = len(emu.bodies("chat.postMessage"))
        with bot_process(tmp_path, gated.url, emu, RESTYLE_DRAIN_S="5") as (proc, base):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, "".join(proc.log)
        assert not any("interrupted" in b.get("text", "") for b in emu.bodies("chat.postMessage")[emu2_before:])
    finally:
        gated.close()
        emu.stop()


# -- the container -------------------------------------------------------------------------------------------------
def test_health_probe_is_the_containers_healthcheck():
    """``python -m bot.health PORT``: 0 when ready, 1 when 503 or nothing listens."""
    state = {"up": True}
    health = Health(mode="socket", connected=lambda: state["up"])
    server = HttpServer(wsgi_app(health), "127.0.0.1", 0)
    server.start()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    probe = [sys.executable, "-m", "bot.health", str(server.port)]
    try:
        assert subprocess.run(probe, env=env, capture_output=True, timeout=30).returncode == 0
        state["up"] = False
        r = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "Socket Mode connection is down" in r.stderr
    finally:
        server.shutdown()
        server.server_close()
    r = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "no answer" in r.stderr


def test_dockerfile_is_lean_non_root_and_checks_health():
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert froms and all(ln.split()[1] == "python:3.11-slim" for ln in froms)
    install = next(ln for ln in lines if "pip install" in ln)
    assert re.search(r"pip install \.(\s|$)", install), install  # no extras: no torch in the image
    user = [ln for ln in lines if ln.startswith("USER ")][-1].split()[1]
    assert user.split(":")[0] not in ("root", "0")
    assert any(ln.startswith("HEALTHCHECK") and "bot.health" in ln for ln in lines)
    assert [ln for ln in lines if ln.startswith("ENTRYPOINT")][-1].startswith('ENTRYPOINT ["restyle", "slack"')
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {"!bot/", "!model/", "!deploy/", "!pyproject.toml"} <= set(ignore)


# -- tokens from AWS Secrets Manager -----------------------------------------------------------------------------
@pytest.fixture
def secrets(monkeypatch):
    from moto import mock_aws

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION":
                 "eu-west-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        import boto3

        yield boto3.client("secretsmanager", region_name="eu-west-1")


def test_slack_tokens_come_from_a_json_secret_and_set_variables_win(secrets):
    from bot.settings import with_slack_secret

    secrets.create_secret(Name="restyle/slack", SecretString=json.dumps({
        "SLACK_BOT_TOKEN": "xoxb-from-secret", "SLACK_APP_TOKEN": "xapp-from-secret",
        "SLACK_SIGNING_SECRET": "signing-from-secret"}))
    s = Settings.from_env({"RESTYLE_SLACK_SECRET_ID": "restyle/slack", "RESTYLE_BACKEND": "sagemaker"})
    got = with_slack_secret(s)
    assert (got.slack_bot_token, got.slack_app_token, got.slack_signing_secret) == (
        "xoxb-from-secret", "xapp-from-secret", "signing-from-secret")
    s = Settings.from_env({"RESTYLE_SLACK_SECRET_ID": "restyle/slack", "SLACK_BOT_TOKEN": "xoxb-env",
                           "RESTYLE_BACKEND": "sagemaker"})
    assert with_slack_secret(s).slack_bot_token == "xoxb-env"
    assert "from-secret" not in json.dumps(with_slack_secret(s).redacted())

    secrets.create_secret(Name="restyle/lower", SecretString=json.dumps({"bot_token": "xoxb-l", "app_token": "xapp-l"}))
    got = with_slack_secret(Settings(slack_secret_id="restyle/lower"))
    assert (got.slack_bot_token, got.slack_app_token, got.slack_signing_secret) == ("xoxb-l", "xapp-l", None)
    assert with_slack_secret(Settings()) == Settings()  # no secret id: no AWS call, nothing changes


def test_unusable_secrets_are_one_clear_line(secrets, tmp_path, capsys):
    from bot.settings import SecretError, with_slack_secret

    with pytest.raises(SecretError, match=r"cannot read the secret 'restyle/missing' \(ResourceNotFoundException"):
        with_slack_secret(Settings(slack_secret_id="restyle/missing"))
    secrets.create_secret(Name="restyle/text", SecretString="xoxb-not-json")
    with pytest.raises(SecretError, match="must be a JSON object"):
        with_slack_secret(Settings(slack_secret_id="restyle/text"))
    secrets.create_secret(Name="restyle/other", SecretString=json.dumps({"password": "x"}))
    with pytest.raises(SecretError, match="has none of SLACK_BOT_TOKEN"):
        with_slack_secret(Settings(slack_secret_id="restyle/other"))
    # through the command: exit 2, one line, before anything starts
    settings = Settings.from_env({}, data_dir=tmp_path, backend="sagemaker", slack_secret_id="restyle/missing")
    assert slack_app.main([], settings) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("restyle: RESTYLE_SLACK_SECRET_ID: cannot read the secret")


# -- IAM policies ----------------------------------------------------------------------------------------------------
def _policy(capsys, *argv: str) -> dict:
    from deploy.__main__ import main

    assert main(["policy", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def _grants(doc: dict) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for st in doc["Statement"]:
        assert st["Effect"] == "Allow"
        res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        for action in st["Action"]:
            assert "*" not in action, f"wildcard action {action}"
            out.setdefault(action, set()).update(res)
    return out


def test_bot_policy_is_least_privilege(capsys):
    acct = "123456789012"
    doc = _policy(capsys, "--bot", "--account", acct, "--region", "eu-west-1", "--bucket", "my-bucket",
                  "--secret-id", "restyle/slack")
    g = _grants(doc)
    ep = f"arn:aws:sagemaker:eu-west-1:{acct}:endpoint/"
    # the optional upscale endpoint too (python -m deploy up --upscale-model): a missing endpoint grants nothing
    assert g["sagemaker:InvokeEndpoint"] == {ep + "restyle-clipseg", ep + "restyle-inpaint", ep + "restyle-upscale"}
    assert g["sagemaker:InvokeEndpointAsync"] == {ep + "restyle-inpaint-async"}
    assert g["s3:PutObject"] == {"arn:aws:s3:::my-bucket/restyle/async-in/*"}
    assert g["s3:GetObject"] == {"arn:aws:s3:::my-bucket/restyle/async-out/*",
                                 "arn:aws:s3:::my-bucket/restyle/async-failures/*"}
    assert g["secretsmanager:GetSecretValue"] == {f"arn:aws:secretsmanager:eu-west-1:{acct}:secret:restyle/slack-??????"}
    assert set(g) == {"sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointAsync", "s3:PutObject", "s3:GetObject",
                      "secretsmanager:GetSecretValue"}
    assert all("*" != r for res in g.values() for r in res)
    # shared state, when named
    g = _grants(_policy(capsys, "--bot", "--table", "restyle-state", "--media", "s3://media/restyle"))
    assert "arn:aws:dynamodb:*:*:table/restyle-state" in g["dynamodb:PutItem"]
    assert g["s3:DeleteObject"] == {"arn:aws:s3:::media/restyle/*"}
    assert "iam:PassRole" not in g and "sagemaker:CreateEndpoint" not in g


def test_deploy_and_execution_policies(capsys):
    role = "arn:aws:iam::123456789012:role/restyle-sagemaker"
    g = _grants(_policy(capsys, "--deploy", "--bucket", "bkt", "--role-arn", role, "--prefix", "shop"))
    assert g["iam:PassRole"] == {role}
    assert "arn:aws:sagemaker:*:*:endpoint/shop-inpaint-async" in g["sagemaker:CreateEndpoint"]
    assert "arn:aws:sagemaker:*:*:endpoint/shop-upscale" in g["sagemaker:CreateEndpoint"]
    assert "arn:aws:cloudwatch:*:*:alarm:shop-upscale-*" in g["cloudwatch:PutMetricAlarm"]
    assert g["s3:PutObject"] == {"arn:aws:s3:::bkt/shop/*"}
    assert {"sagemaker:CreateModel", "sagemaker:CreateEndpointConfig", "sagemaker:CreateTrainingJob",
            "application-autoscaling:PutScalingPolicy", "cloudwatch:PutMetricAlarm", "sns:CreateTopic",
            "sts:GetCallerIdentity"} <= set(g)
    assert "sagemaker:InvokeEndpoint" not in g
    g = _grants(_policy(capsys, "--execution", "--bucket", "bkt", "--model-bucket", "weights"))
    assert "arn:aws:s3:::bkt/restyle/async-in/*" in g["s3:GetObject"]  # the bot's async inputs
    assert "arn:aws:s3:::weights/*" in g["s3:GetObject"]
    assert g["s3:PutObject"] == {f"arn:aws:s3:::bkt/restyle/{d}/*" for d in ("async-out", "async-failures", "training")}
    assert "sns:Publish" in g and "ecr:BatchGetImage" in g


def test_policies_are_valid_iam_documents(capsys, secrets):
    """moto's IAM validates a policy document's grammar on create_policy (as IAM does)."""
    import boto3

    iam = boto3.client("iam", region_name="us-east-1")
    for i, argv in enumerate((["--bot", "--bucket", "bkt", "--secret-id", "sec", "--table", "tbl", "--media", "s3://med/p"],
                              ["--deploy", "--bucket", "bkt"], ["--execution", "--bucket", "bkt"])):
        doc = _policy(capsys, *argv, "--account", "123456789012", "--region", "eu-west-1")
        iam.create_policy(PolicyName=f"restyle-{i}", PolicyDocument=json.dumps(doc))


@pytest.mark.parametrize("argv, why", [
    (["--bot", "--account", "12345"], "--account must be a 12-digit account id"),
    (["--deploy"], "--deploy needs --bucket"),
    (["--bot", "--media", "media/x"], "--media must be s3://BUCKET/PREFIX"),
    (["--execution", "--bucket", "Bad_Bucket"], "is not an S3 bucket name"),
])
def test_policy_usage_errors_are_one_line(capsys, argv, why):
    from deploy.__main__ import main

    assert main(["policy", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and why in err[0]


# -- the HTTP server -------------------------------------------------------------------------------------------------
def _raw_request(port: int, head: bytes, body_chunks: list[bytes], timeout: float = 10.0) -> bytes:
    """Send ``head`` and ``body_chunks`` on a raw socket, stop sending at the first error, return what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed: it stopped reading
                break
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                data += chunk
        return data


def test_an_oversized_unsigned_post_is_refused_413_without_reading_it(tmp_path):
    from bot.http_server import MAX_BODY_BYTES

    with bot_server(tmp_path) as (base, slack, health, engine):
        port = int(base.rsplit(":", 1)[1])
        # 50 MB announced, 64 kB sent: the answer comes from the headers alone
        head = (b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Type: application/json\r\n"
                b"Content-Length: 52428800\r\n\r\n")
        t0 = time.monotonic()
        answer = _raw_request(port, head, [b"x" * 65536])
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert time.monotonic() - t0 < 5
        # chunked, no length: cut off once past the cap
        head = (b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % 65536 + b"y" * 65536 + b"\r\n"
        answer = _raw_request(port, head, [chunk] * (2 * MAX_BODY_BYTES // 65536 + 8))
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        # a normal signed event still gets through, and Bolt still refuses a forged one
        assert slack.event(message(CH, "still here")).status == 200
        assert slack.event(message(CH, "forged"), signature="v0=" + "0" * 64).status == 401
        assert get(base + "/healthz")[0] == 200


def test_idle_and_trickling_connections_time_out():
    server = HttpServer(wsgi_app(Health()), "127.0.0.1", 0, timeout_s=1)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
            sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: bot\r\n")  # ... and never the rest
            t0 = time.monotonic()
            assert sock.recv(1024) == b""  # closed by the server
            assert time.monotonic() - t0 < 10
    finally:
        server.shutdown()
        server.server_close()


def test_a_burst_of_signed_events_is_acked_without_a_reset(tmp_path):
    """200 signed events from 20 threads at once: every one answered 200, no connection refused or reset (the
    standard library's listen backlog of 5 dropped some of these)."""
    from concurrent.futures import ThreadPoolExecutor

    with bot_server(tmp_path) as (base, slack, health, engine):
        def one(i: int) -> int:
            return slack.event(message(CH, f"chatter {i}"), timeout=30).status

        with ThreadPoolExecutor(20) as pool:
            statuses = list(pool.map(one, range(200)))
        assert statuses == [200] * 200


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_the_bots_memory_stays_flat_under_a_50_mb_unsigned_post(tmp_path):
    emu = SlackEmulator().start()
    try:
        with bot_process(tmp_path, "http://127.0.0.1:9", emu) as (proc, base):
            port = int(base.rsplit(":", 1)[1])
            assert get(base + "/healthz")[0] == 200
            before = _peak_rss_kb(proc.pid)
            size = 50 * 1024 * 1024
            head = (b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % size)
            answer = _raw_request(port, head, [b"z" * (1024 * 1024)] * 50)
            assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
            assert get(base + "/healthz")[0] == 200
            grew_mb = (_peak_rss_kb(proc.pid) - before) / 1024
            assert grew_mb < 10, f"peak RSS grew {grew_mb:.1f} MB"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    finally:
        emu.stop()


def test_socket_mode_with_a_rejected_app_token_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    emu = SlackEmulator().start()
    try:
        settings = Settings.from_env({}, data_dir=tmp_path, backend="sagemaker", slack_bot_token=BOT_TOKEN,
                                     slack_app_token="xapp-1-A0RESTYLE-wrong", slack_api_url=emu.api_url)
        assert slack_app.main(["--health-port", "0"], settings) == 2
    finally:
        emu.stop()
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("restyle: ") and "serving" not in ln
           and "connecting" not in ln]
    assert err == ["restyle: SLACK_APP_TOKEN was rejected by Slack (not_authed)"]


# -- Socket Mode end to end ------------------------------------------------------------------------------------------
class SocketModeSlack(SlackEmulator):
    """The Slack emulator plus ``apps.connections.open`` and a loopback WebSocket that speaks Socket Mode: a
    ``hello`` on connect, pongs for pings, envelopes out, acks in."""

    def __init__(self) -> None:
        super().__init__()
        self._ws = socket.create_server(("127.0.0.1", 0))
        self.ws_port = self._ws.getsockname()[1]
        self.acks: list[str] = []
        self.connections = 0
        self.closed = threading.Event()
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def api(self, method: str, args: dict, authorized: bool) -> dict:
        if method == "apps.connections.open":  # authorised by the app-level token, not the bot token
            return {"ok": True, "url": f"ws://127.0.0.1:{self.ws_port}/link/?ticket=t"}
        return super().api(method, args, authorized)

    def stop(self) -> None:
        self._ws.close()
        super().stop()

    @staticmethod
    def _exactly(sock: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def _frame(self, opcode: int, data: bytes) -> None:
        n = len(data)
        head = bytes([0x80 | opcode]) + (bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big")
                                         if n < 65536 else bytes([127]) + n.to_bytes(8, "big"))
        with self._send_lock:
            assert self._sock is not None
            self._sock.sendall(head + data)

    def _accept(self) -> None:
        import base64
        import hashlib

        while True:
            try:
                sock, _ = self._ws.accept()
            except OSError:
                return
            request = b""
            while b"\r\n\r\n" not in request:
                request += sock.recv(4096)
            key = re.search(rb"Sec-WebSocket-Key: *(\S+)", request, re.IGNORECASE).group(1)
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            self._sock = sock
            self.connections += 1
            self._frame(0x1, json.dumps({"type": "hello", "num_connections": 1}).encode())
            threading.Thread(target=self._read, args=(sock,), daemon=True).start()

    def _read(self, sock: socket.socket) -> None:
        try:
            while True:
                b0, b1 = self._exactly(sock, 2)
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(self._exactly(sock, 2), "big")
                elif n == 127:
                    n = int.from_bytes(self._exactly(sock, 8), "big")
                mask = self._exactly(sock, 4) if b1 & 0x80 else b"\0\0\0\0"
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(self._exactly(sock, n)))
                opcode = b0 & 0x0F
                if opcode == 0x9:
                    self._frame(0xA, data)
                elif opcode == 0x1:
                    with self._lock:
                        self.acks.append(json.loads(data).get("envelope_id"))
                        self._lock.notify_all()
                elif opcode == 0x8:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            sock.close()
            self.closed.set()

    def deliver(self, event: dict, event_id: str) -> str:
        """Send one Events API envelope over the socket; returns its envelope id."""
        from tests.slack_emulator import event_callback

        envelope = f"env-{event_id}"
        self._frame(0x1, json.dumps({"envelope_id": envelope, "type": "events_api", "accepts_response_payload":
                                     False, "retry_attempt": 0, "retry_reason": "",
                                     "payload": event_callback(event, event_id)}).encode())
        return envelope


def test_socket_mode_serves_health_answers_events_and_stops_on_sigterm(tmp_path):
    from bot import messages as T

    emu = SocketModeSlack().start()
    try:
        with bot_process(tmp_path, "http://127.0.0.1:9", emu, args=("--health-port", "0"),
                         serving=r"serving health on http://127\.0\.0\.1:(\d+)/healthz",
                         SLACK_APP_TOKEN="xapp-1-A0RESTYLE-socket") as (proc, base):
            deadline = time.monotonic() + 30
            while True:  # ready once the WebSocket is up
                status, body, _ = get(base + "/healthz")
                if status == 200:
                    break
                assert time.monotonic() < deadline, body
                time.sleep(0.1)
            assert body["mode"] == "socket" and body["slack"]["connected"] is True
            assert emu.connections == 1

            envelope = emu.deliver(message("D0DM", "help", channel_type="im"), "Ev0SOCKET1")
            emu.wait_until(lambda: envelope in emu.acks, 30, what="the envelope's ack")
            emu.wait_until(lambda: any(b.get("channel") == "D0DM" and b.get("text") == T.HELP
                                       for b in emu.bodies("chat.postMessage")), 30, what="the help reply")
            _, body, _ = get(base + "/healthz")
            assert body["slack"]["last_contact_s_ago"] < 30

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, "".join(proc.log)
            assert emu.closed.wait(10)  # it let go of its connection
    finally:
        emu.stop()
