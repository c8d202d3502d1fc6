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
    ip_adapter/…      the inpaint role's IP-Adapter, when ``--ip-adapter`` stages one (``RESTYLE_IP_ADAPTER=ip_adapter``)

SageMaker copies that prefix to ``/opt/ml/model`` itself (``ModelDataSource``, ``CompressionType=None``).  Its
sha256 covers the code bundle, the weights, the looks and the IP-Adapter, so any change is a new prefix and a new
model.

The IP-Adapter (``--ip-adapter``, ``plan_ip_adapter``) is staged like a look: a local folder always, a Hub
``REF[:subfolder[:weight_name]]`` with ``--stage-weights`` / ``--network-isolation`` (only the weights file and
``image_encoder/`` are downloaded), as ``weights/ip-adapter-<sha12>/`` (the weights file at the root next to
``image_encoder/``, the layout ``model.loading`` reads from a folder).  Left out, the loader's default
(``model.loading.DEFAULT_IP_ADAPTER``, SD 1.x) is planned only where the endpoint could not fetch it itself: a staged
SD 1.x inpaint folder without its own ``ip_adapter/``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from model.loading import DEFAULT_IP_ADAPTER, IP_ADAPTER_DIR, IP_ADAPTER_ENV, ip_adapter_source

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
               looks: dict[str, StagedWeights] | None = None, ip_adapter: StagedWeights | None = None) -> ModelData:
    """``code/`` from model.tar.gz's bytes, ``weights`` at the root, ``looks/<name>/`` and ``ip_adapter/``
    (inpaint).  A given ``ip_adapter`` replaces the weights folder's own ``ip_adapter/``, if it has one."""
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
    own_adapter = f"{IP_ADAPTER_DIR}/"
    entries += [(rel, path) for rel, path in weights.items()
                if ip_adapter is None or not rel.startswith(own_adapter)]
    for name, look in sorted(looks.items()):
        entries += [(f"looks/{name}/{rel}", path) for rel, path in look.items()]
    if ip_adapter is not None:
        entries += [(f"{own_adapter}{rel}", path) for rel, path in ip_adapter.items()]
    h = hashlib.sha256(f"code {bundle_sha256}\nweights {weights.digest}\n".encode())
    for name, look in sorted(looks.items()):
        h.update(f"look {name} {look.digest}\n".encode())
    if ip_adapter is not None:  # only then: model data planned without one keeps its prefix
        h.update(f"ip-adapter {ip_adapter.digest}\n".encode())
    source = weights.source + "".join(f", look {n}={w.source}" for n, w in sorted(looks.items()))
    source += f", ip-adapter={ip_adapter.source}" if ip_adapter is not None else ""
    return ModelData(role=role, source=source, digest=h.hexdigest(), entries=tuple(entries))


def is_local(ref: str) -> bool:
    """A flag value that means a folder on this machine (it exists, or it is spelled like a path)."""
    return Path(ref).expanduser().is_dir() or ref.startswith(("/", "./", "../", "~"))


def scan(role: str, source: str, folder: Path, flag: str | None = None,
         keep: Callable[[str], bool] | None = None) -> StagedWeights:
    """Hash ``folder`` (streamed: multi-GB checkpoints are fine); ``keep`` picks files by relative posix path."""
    flag = flag or f"--{role}-model"
    folder = folder.expanduser()
    if not folder.is_dir():
        raise StagingError(f"{flag} {source}: no such folder")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and not SKIP_PARTS.intersection(p.relative_to(folder).parts))
    files = [rel for rel in files if keep is None or keep(rel)]
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


def resolve_hub(role: str, repo_id: str, flag: str | None = None, allow_patterns: list[str] | None = None) -> Path:
    """Download ``repo_id`` on this machine (the Hub's cache is reused; only ``allow_patterns`` when given); its
    snapshot folder."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        raise StagingError("--stage-weights needs huggingface_hub") from None
    try:
        return Path(snapshot_download(repo_id, token=os.environ.get("HF_TOKEN"), allow_patterns=allow_patterns))
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


# --- the inpaint role's IP-Adapter (reference images: swatches, prints) ----------------------------------------

DEFAULT_IP_ADAPTER_SPEC = ":".join(DEFAULT_IP_ADAPTER)
IP_ADAPTER_ROLE = "ip-adapter"
ENCODER = "image_encoder/"


@dataclass(frozen=True)
class IpAdapterChoice:
    """What the inpaint endpoints get: ``spec`` (RESTYLE_IP_ADAPTER before staging; None: unset, the loader
    chooses), ``staged`` (the folder to upload, or None) and ``note`` (the dry run's words for people)."""

    spec: str | None
    staged: StagedWeights | None
    note: str


def cross_attention_dim(folder: Path) -> int | None:
    """The UNet's ``cross_attention_dim`` of a diffusers checkpoint folder (768: SD 1.x), or None if unknown."""
    import json

    try:
        value = json.loads((folder / "unet" / "config.json").read_text()).get("cross_attention_dim")
        return int(value)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _adapter_folder(spec: str, folder: Path, weight_name: str) -> StagedWeights:
    """``folder``'s ``weight_name`` and ``image_encoder/`` (nothing else), as the adapter's staged folder."""
    flag = f"--ip-adapter {spec}"
    if not folder.is_dir():
        raise StagingError(f"{flag}: no such folder {folder}")
    if not (folder / weight_name).is_file():
        raise StagingError(f"{flag}: {folder} has no {weight_name}")
    if not (folder / ENCODER).is_dir():
        raise StagingError(f"{flag}: {folder} has no {ENCODER} next to {weight_name} (the CLIP image encoder)")
    return scan(IP_ADAPTER_ROLE, spec, folder, flag="--ip-adapter",
                keep=lambda rel: rel == weight_name or rel.startswith(ENCODER))


def resolve_hub_ip_adapter(flag: str, repo_id: str, subfolder: str, weight_name: str) -> Path:
    """Only the weights file and ``image_encoder/`` (its config and safetensors; ``*.bin`` only when it has no
    safetensors) of ``repo_id``; the folder holding them."""
    base = f"{subfolder.strip('/')}/" if subfolder.strip("/") else ""
    patterns = [f"{base}{weight_name}", f"{base}{ENCODER}*.json", f"{base}{ENCODER}*.safetensors"]
    snapshot = resolve_hub(IP_ADAPTER_ROLE, repo_id, flag=flag, allow_patterns=patterns)
    folder = snapshot / base if base else snapshot
    if not any((folder / ENCODER).glob("*.safetensors")):
        resolve_hub(IP_ADAPTER_ROLE, repo_id, flag=flag, allow_patterns=[*patterns, f"{base}{ENCODER}*.bin"])
    return folder


def plan_ip_adapter(spec: str | None, inpaint_model: str, inpaint: StagedWeights | None, *,
                    stage_hub: bool) -> IpAdapterChoice:
    """The inpaint endpoints' IP-Adapter from ``--ip-adapter`` (``spec``) and how their weights are served.

    ``none``: RESTYLE_IP_ADAPTER=none.  A local folder (one weights file + ``image_encoder/``) or a local
    ``REF:subfolder:weight_name``: staged.  A Hub ``REF[:subfolder[:weight_name]]``: staged with ``stage_hub``,
    else fetched by the endpoint at start.  An ``s3://`` prefix: as given.  Left out (None): nothing unless the
    inpaint weights are staged (``inpaint``), have no ``ip_adapter/`` of their own and are SD 1.x — then the
    loader's default, as if given (the endpoint would no longer reach the Hub to fetch it itself).
    """
    given = spec is not None
    if spec is None:
        if inpaint is None:
            where = ("copied from S3: its own ip_adapter/ if it has one, else the default from the Hub"
                     if inpaint_model.startswith("s3://") else "the default from the Hub at start (SD 1.x)")
            return IpAdapterChoice(None, None, f"the loader's choice ({where}); --ip-adapter sets one")
        if any(rel.startswith(f"{IP_ADAPTER_DIR}/") for rel in inpaint.files):
            return IpAdapterChoice(None, None, f"the inpaint folder's own {IP_ADAPTER_DIR}/ ({inpaint.source})")
        dim = cross_attention_dim(inpaint.folder)
        if dim != 768:
            return IpAdapterChoice(None, None, f"none: the default {DEFAULT_IP_ADAPTER_SPEC} fits SD 1.x and the "
                                   f"inpaint UNet's cross_attention_dim is {dim}; --ip-adapter names one that fits")
        spec = DEFAULT_IP_ADAPTER_SPEC
    spec = spec.strip()
    if not spec:
        raise StagingError("--ip-adapter must not be empty (leave it out for the default, or say none)")
    if spec.lower() == "none":
        return IpAdapterChoice("none", None, "none (RESTYLE_IP_ADAPTER=none): a request with a reference image "
                                             "is answered no_reference_support")
    if spec.startswith("s3://"):
        return IpAdapterChoice(spec, None, f"{spec}, copied from S3 at start")
    expanded = str(Path(spec).expanduser()) if spec.startswith("~") else spec
    try:
        source, _ = ip_adapter_source("", expanded)
    except ValueError as exc:
        raise StagingError(str(exc).replace(IP_ADAPTER_ENV, "--ip-adapter")) from None
    ref, subfolder, weight_name = source
    what = spec if given else f"{spec} (the default)"
    if Path(expanded).is_dir():  # a folder holding exactly one weights file (checked by ip_adapter_source)
        staged = _adapter_folder(spec, Path(expanded), weight_name)
    elif is_local(ref):
        staged = _adapter_folder(spec, Path(ref).expanduser() / subfolder, weight_name)
    elif stage_hub:
        flag = "--ip-adapter" if given else "the default IP-Adapter (--ip-adapter none skips it)"
        staged = scan(IP_ADAPTER_ROLE, what, resolve_hub_ip_adapter(flag, ref, subfolder, weight_name),
                      flag="--ip-adapter", keep=lambda rel: rel == weight_name or rel.startswith(ENCODER))
    else:
        return IpAdapterChoice(spec, None, f"{what}, fetched from the Hub at start (--stage-weights stages it)")
    staged = StagedWeights(role=staged.role, source=what, folder=staged.folder, digest=staged.digest,
                           files=staged.files, size=staged.size)
    return IpAdapterChoice(spec, staged, f"{what}: {len(staged.files)} files, {staged.size / 1e6:.1f} MB, staged "
                                         "for the inpaint endpoints (RESTYLE_IP_ADAPTER)")
