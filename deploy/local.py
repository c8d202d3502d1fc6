"""``python -m deploy local`` — the packed ``model.tar.gz`` served by the stack SageMaker really runs, on loopback.

The Hugging Face inference image starts ``sagemaker_huggingface_inference_toolkit.serving``, which writes a
multi-model-server (MMS) config, starts MMS (a Java frontend) with the toolkit's ``HuggingFaceHandlerService`` and
``/opt/ml/model`` as the one model; MMS runs Python workers that import ``code/inference.py``.  ``serve`` does the
same with the toolkit's own ``start_model_server``, the way SageMaker local mode would without Docker:

* the tarball is extracted to ``<workdir>/model`` and ``SAGEMAKER_BASE_DIR=<workdir>`` points the toolkit at it;
* ``SAGEMAKER_BIND_TO_PORT`` picks the port (``/ping`` and ``/invocations``, like the container contract);
* the MMS config file goes to ``<workdir>`` instead of ``/etc`` and ``code/requirements.txt`` is *not* pip-installed
  (the local environment already has the packages; the image would install them at start);
* MMS listens on 127.0.0.1 only (``MMS_INFERENCE_ADDRESS``) and its worker sockets live in ``<workdir>``
  (``-Djava.io.tmpdir``), so two local servers can run side by side;
* the handler service is the toolkit's own; its workers get the ``is_tf_available`` that transformers 5 dropped
  from the tarball's own ``code/sitecustomize.py`` (as in the image).  Only this launcher process, which imports the
  toolkit before ``code/`` is on the path (in the image it still sees the image's transformers 4 then), patches
  that function itself.

Needs Java 17 (``default-jre-headless``) and ``sagemaker-huggingface-inference-toolkit``, ``sagemaker-inference``,
``multi-model-server`` and ``retrying`` importable (``--toolkit DIR`` adds a folder they were ``pip install
--target``-ed into).  See docs/deploy.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

#: Run in the child: the toolkit's own start-up with the config file moved out of /etc and no pip install.
LAUNCHER = '''\
import os, sys
import transformers.file_utils
if not hasattr(transformers.file_utils, "is_tf_available"):  # this process only: see the module docstring
    transformers.file_utils.is_tf_available = lambda: False
import sagemaker_inference.model_server as model_server
from sagemaker_huggingface_inference_toolkit import mms_model_server

config = os.path.join(os.environ["SAGEMAKER_BASE_DIR"], "sagemaker-mms.properties")
model_server.MMS_CONFIG_FILE = mms_model_server.MMS_CONFIG_FILE = config
mms_model_server.REQUIREMENTS_PATH = os.path.join(os.environ["SAGEMAKER_BASE_DIR"], "no-requirements.txt")
mms_model_server.start_model_server()  # the toolkit's own handler service, as the image's `serve` does
'''

REQUIRED_MODULES = ("sagemaker_huggingface_inference_toolkit", "sagemaker_inference", "mms", "retrying",
                    "pkg_resources")


class LocalError(RuntimeError):
    """Why the toolkit stack cannot start here (one line, for people)."""


@dataclass
class LocalServer:
    process: subprocess.Popen
    port: int
    workdir: Path

    def stop(self, timeout: float = 20.0) -> None:
        """Stop MMS, its Java frontend and its Python workers (one process group)."""
        import signal

        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
            except ProcessLookupError:
                pass
        _kill_group_leftovers(self.process.pid)


def _kill_group_leftovers(pgid: int) -> None:
    import signal

    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def missing_requirements(toolkit: str | None = None) -> str | None:
    """Why the stack cannot run here, or None: Java 17+ on PATH and the toolkit's modules importable."""
    java = shutil.which("java")
    if java is None:
        return ("Java is not installed (the multi-model-server frontend needs Java 17: "
                "apt-get install default-jre-headless)")
    env = _pythonpath_env(toolkit, [])
    probe = subprocess.run([sys.executable, "-c", "import importlib.util, sys; "
                            f"m = [m for m in {REQUIRED_MODULES!r} if importlib.util.find_spec(m) is None]; "
                            "print(', '.join(m), file=sys.stderr); sys.exit(1 if m else 0)"],
                           env=env, capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return (f"missing Python modules {probe.stderr.strip()} (pip install sagemaker-huggingface-inference-toolkit "
                "sagemaker-inference multi-model-server retrying 'setuptools<81', see docs/deploy.md)")
    return None


def _pythonpath_env(toolkit: str | None, extra: list[str]) -> dict[str, str]:
    env = dict(os.environ)
    parts = extra + ([toolkit] if toolkit else []) + [p for p in env.get("PYTHONPATH", "").split(":") if p]
    env["PYTHONPATH"] = ":".join(parts)
    if toolkit and Path(toolkit, "bin").is_dir():  # the multi-model-server script of a --target install
        env["PATH"] = f"{Path(toolkit, 'bin')}:{env.get('PATH', '')}"
    return env


def extract(tarball: bytes | Path, workdir: Path) -> Path:
    """``model.tar.gz`` → ``<workdir>/model`` (what SageMaker puts in /opt/ml/model); a folder (uncompressed model
    data, as ``--network-isolation`` uploads it) is copied there as it is."""
    import io

    model_dir = workdir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    if isinstance(tarball, Path) and tarball.is_dir():
        shutil.copytree(tarball, model_dir)
        if not (model_dir / "code" / "inference.py").exists():
            raise LocalError(f"{tarball} has no code/inference.py: is it the model data of `python -m deploy`?")
        return model_dir
    model_dir.mkdir(parents=True)
    source = io.BytesIO(tarball) if isinstance(tarball, bytes) else open(tarball, "rb")  # noqa: SIM115
    with source, tarfile.open(fileobj=source, mode="r:gz") as tar:
        tar.extractall(model_dir, filter="data")
    if not (model_dir / "code" / "inference.py").exists():
        raise LocalError("the tarball has no code/inference.py: is it a `python -m deploy` model.tar.gz?")
    return model_dir


def serve(tarball: bytes | Path, *, role: str, port: int, workdir: Path, model_id: str | None = None,
          lora: str | None = None, toolkit: str | None = None, log_file: Path | None = None,
          extra_env: dict[str, str] | None = None) -> LocalServer:
    """Start the toolkit stack on ``127.0.0.1:port`` in the background (its own process group)."""
    why = missing_requirements(toolkit)
    if why:
        raise LocalError(why)
    workdir.mkdir(parents=True, exist_ok=True)
    extract(tarball, workdir)
    env = _pythonpath_env(toolkit, [])
    env.update({
        "SAGEMAKER_BASE_DIR": str(workdir),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_PROGRAM": "inference.py",
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "300",
        # MMS reads MMS_* variables over its config file (enable_envvars_config=true): loopback only; and its
        # worker sockets under the workdir (java.io.tmpdir), so two local servers do not share /tmp/.mms.sock.9000
        "MMS_INFERENCE_ADDRESS": f"http://127.0.0.1:{port}",
        "MMS_MANAGEMENT_ADDRESS": f"http://127.0.0.1:{port}",
        "SAGEMAKER_MODEL_SERVER_VMARGS": f"-XX:-UseContainerSupport -Djava.io.tmpdir={workdir}",
        "TMPDIR": str(workdir),  # multi-model-server's pid file: one per local server
        "RESTYLE_ROLE": role,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    })
    for key in ("RESTYLE_MODEL_ID", "RESTYLE_LORA", "RESTYLE_ARTIFACT_S3", "RESTYLE_IP_ADAPTER"):
        env.pop(key, None)
    if model_id:
        env["RESTYLE_MODEL_ID"] = model_id
    if lora:
        env["RESTYLE_LORA"] = lora
    env.update(extra_env or {})
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-c", LAUNCHER], env=env, cwd=workdir,
                               stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return LocalServer(process=process, port=port, workdir=workdir)


def free_port() -> int:
    """A free loopback port below 30000 (multi-model-server 1.1 refuses some in the ephemeral range)."""
    import random
    import socket

    for _ in range(100):
        port = random.randrange(18000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise LocalError("no free loopback port between 18000 and 30000")


def wait_ready(server: LocalServer, timeout: float = 300.0) -> None:
    """Until ``GET /ping`` answers 200 (the model loaded), or ``LocalError``."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise LocalError(f"the model server exited with status {server.process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/ping", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(1.0)
    raise LocalError(f"the model server did not answer /ping with 200 within {timeout:.0f} s")
