"""Weights staged in S3, so an endpoint never reaches the Hugging Face Hub when it starts or scales out.

A model flag (``--clipseg-model`` / ``--inpaint-model``) that names a local folder — or, with ``--stage-weights``, a
Hub id, resolved on the operator's machine with ``huggingface_hub.snapshot_download`` — is uploaded once to
``s3://BUCKET/<prefix>/weights/<role>-<sha12>/`` (the sha256 of its files' names and bytes) and the plan points the
endpoint at that prefix (``RESTYLE_ARTIFACT_S3``; ``code/inference.py`` copies it from S3 at start).  With nothing
left on the Hub the model's environment gets ``HF_HUB_OFFLINE=1``.  A ``<role>-<sha12>.complete`` object next to the
folder marks a finished upload: ``up`` re-uploads only what never completed.

With ``--network-isolation`` the container may fetch nothing, so each role's weights are laid out instead as
*uncompressed model data* (``ModelData``) under ``s3://BUCKET/<prefix>/model-data/<role>-<sha12>/``::

    code/…            model.tar.gz's files (inference.py, the model package, requirements.txt, wheels/)
    <weights>         the folder the role loads, at the root (``model_fn`` loads ``model_dir``)
    looks/<name>/…    the inpaint role's looks (``RESTYLE_LORA=name=looks/name``)

SageMaker copies that prefix to ``/opt/ml/model`` itself (``ModelDataSource``, ``CompressionType=None``).  Its
sha256 covers the code bundle, the weights and the looks, so any change is a new prefix and a new model.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

#: Never staged: VCS data, caches, and the Hub client's own bookkeeping in a local_dir download.
SKIP_PARTS = {".git", "__pycache__", ".cache", ".huggingface"}


class StagingError(ValueError):
    """The weights cannot be staged (a usage error: exit 2)."""


@dataclass(frozen=True)
class StagedWeights:
    role: str
    source: str  # what the flag said
    folder: Path
    digest: str  # sha256 over (relative path, bytes) of every file
    files: tuple[str, ...]  # relative posix paths
    size: int

    def key_prefix(self, s3_prefix: str) -> str:
        return f"{s3_prefix}/weights/{self.role}-{self.digest[:12]}"

    def uri(self, bucket: str, s3_prefix: str) -> str:
        return f"s3://{bucket}/{self.key_prefix(s3_prefix)}/"

    def items(self) -> list[tuple[str, Path | bytes]]:
        """(key relative to the prefix, local file) for every file uploaded."""
        return [(rel, self.folder / rel) for rel in self.files]


@dataclass(frozen=True)
class ModelData:
    """One role's uncompressed model data for a network-isolated endpoint: code, weights and looks together."""

    role: str
    source: str  # what the flags said, for people
    digest: str  # sha256 over the code bundle's sha256 and the weights' and looks' digests
    entries: tuple[tuple[str, Path | bytes], ...] = field(repr=False)

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(rel for rel, _ in self.entries)

    @property
    def size(self) -> int:
        return sum(len(v) if isinstance(v, bytes) else v.stat().st_size for _, v in self.entries)

    def key_prefix(self, s3_prefix: str) -> str:
        return f"{s3_prefix}/model-data/{self.role}-{self.digest[:12]}"

    def uri(self, bucket: str, s3_prefix: str) -> str:
        return f"s3://{bucket}/{self.key_prefix(s3_prefix)}/"

    def items(self) -> list[tuple[str, Path | bytes]]:
        return list(self.entries)

    def write_to(self, folder: Path) -> Path:
        """Lay the files out in ``folder``, as SageMaker does in /opt/ml/model (``deploy local --isolated``)."""
        import shutil

        for rel, value in self.entries:
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(value, bytes):
                target.write_bytes(value)
            else:
                shutil.copyfile(value, target)
        return folder


#: Top-level names in the model data that belong to deploy, not to the weights.
RESERVED_TOPS = ("code", "looks")


def model_data(role: str, bundle_data: bytes, bundle_sha256: str, weights: StagedWeights,
               looks: dict[str, StagedWeights] | None = None) -> ModelData:
    """``code/`` from model.tar.gz's bytes, ``weights`` at the root and ``looks/<name>/`` (inpaint)."""
    looks = looks or {}
    clash = sorted({rel.split("/", 1)[0] for rel in weights.files} & set(RESERVED_TOPS))
    if clash:
        raise StagingError(f"--{role}-model {weights.source}: the folder has a top-level {clash[0]}/, which the "
                           "isolated model data keeps for deploy's own files")
    entries: list[tuple[str, Path | bytes]] = []
    with tarfile.open(fileobj=io.BytesIO(bundle_data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                entries.append((member.name, tar.extractfile(member).read()))
    entries += weights.items()
    for name, look in sorted(looks.items()):
        entries += [(f"looks/{name}/{rel}", path) for rel, path in look.items()]
    h = hashlib.sha256(f"code {bundle_sha256}\nweights {weights.digest}\n".encode())
    for name, look in sorted(looks.items()):
        h.update(f"look {name} {look.digest}\n".encode())
    source = weights.source + "".join(f", look {n}={w.source}" for n, w in sorted(looks.items()))
    return ModelData(role=role, source=source, digest=h.hexdigest(), entries=tuple(entries))


def is_local(ref: str) -> bool:
    """A flag value that means a folder on this machine (it exists, or it is spelled like a path)."""
    return Path(ref).expanduser().is_dir() or ref.startswith(("/", "./", "../", "~"))


def scan(role: str, source: str, folder: Path, flag: str | None = None) -> StagedWeights:
    """Hash ``folder`` (streamed: multi-GB checkpoints are fine)."""
    flag = flag or f"--{role}-model"
    folder = folder.expanduser()
    if not folder.is_dir():
        raise StagingError(f"{flag} {source}: no such folder")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and not SKIP_PARTS.intersection(p.relative_to(folder).parts))
    if not files:
        raise StagingError(f"{flag} {source}: the folder holds no files")
    h = hashlib.sha256()
    size = 0
    for rel in files:
        h.update(rel.encode() + b"\0")
        with open(folder / rel, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
        h.update(b"\0")
    return StagedWeights(role=role, source=source, folder=folder, digest=h.hexdigest(), files=tuple(files), size=size)


def resolve_hub(role: str, repo_id: str, flag: str | None = None) -> Path:
    """Download ``repo_id`` on this machine (the Hub's cache is reused); its snapshot folder."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        raise StagingError("--stage-weights needs huggingface_hub") from None
    try:
        return Path(snapshot_download(repo_id, token=os.environ.get("HF_TOKEN")))
    except Exception as exc:  # network, auth, unknown repo: one line
        raise StagingError(f"{flag or f'--{role}-model'} {repo_id}: could not download it from the Hub on this machine "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'no detail'})"
                           ) from None


def plan_staging(models: dict[str, str], *, stage_hub: bool) -> dict[str, StagedWeights]:
    """role -> what to stage, for every model flag that is a local folder (and Hub ids with ``stage_hub``)."""
    staged = {}
    for role, ref in models.items():
        if ref.startswith("s3://"):
            continue
        if is_local(ref):
            staged[role] = scan(role, ref, Path(ref))
        elif stage_hub:
            staged[role] = scan(role, ref, resolve_hub(role, ref))
    return staged


def plan_look_staging(lora: str | None, *, stage_hub: bool) -> dict[str, StagedWeights]:
    """look name -> what to stage, for every ``--lora`` look that is a local folder (and Hub ids with
    ``stage_hub``); staged as ``weights/look-<name>-<sha12>/``."""
    from model.schemas import parse_looks

    staged = {}
    for name, ref in parse_looks(lora).items():
        if ref.startswith("s3://"):
            continue
        if is_local(ref):
            staged[name] = scan(f"look-{name}", ref, Path(ref), flag="--lora")
        elif stage_hub:
            staged[name] = scan(f"look-{name}", ref, resolve_hub(f"look-{name}", ref, flag="--lora"), flag="--lora")
    return staged
