"""What should exist on AWS, as plain data.  Pure: no boto3, no clock, no network — tested without AWS.

``build_plan`` turns ``Settings`` (the CLI flags) into a ``Plan``: per endpoint a SageMaker Model, an endpoint config,
the endpoint, its Application Auto Scaling target and policies, its CloudWatch alarms (5xx / failures, ModelLatency,
GPU memory → the ``<prefix>-alarms`` SNS topic), the ``DeploymentConfig`` that rolls an update back when one of
them fires, and (async only) the wake-from-zero alarm; plus S3 lifecycle rules for the async input, output and
failure objects.  Models and endpoint configs are immutable on SageMaker, so their names end in a hash of their
content (``<endpoint>-<8 hex>``): a new tarball, image, instance type or setting gives a new name, which ``up``
creates and then points the endpoint at — nothing is ever edited in place.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from model.loading import IP_ADAPTER_DIR, IP_ADAPTER_ENV
from model.schemas import format_looks, parse_looks

DEFAULT_PREFIX = "restyle"
DEFAULT_CLIPSEG_MODEL = "CIDAS/clipseg-rd64-refined"
DEFAULT_INPAINT_MODEL = "stable-diffusion-v1-5/stable-diffusion-inpainting"
DEFAULT_UPSCALE_MODEL = "stabilityai/stable-diffusion-x4-upscaler"
#: The real-time endpoints' roles (RESTYLE_ROLE), in plan order; each has the flags --<role>-model, -endpoint,
#: -instance-type, -target-invocations and -latency-alarm-s.  An optional role has no endpoint unless its model is
#: given; the async endpoint serves the inpaint role.
REALTIME_ROLES = ("clipseg", "inpaint", "upscale")
OPTIONAL_ROLES = ("upscale",)
DEFAULT_INSTANCE_TYPE = "ml.g5.xlarge"
DEFAULT_TRAIN_INSTANCE_TYPE = "ml.g5.2xlarge"
#: Real-time endpoints start with (and never scale below) this many instances: SageMaker spreads them over AZs.
DEFAULT_MIN_INSTANCES = 2
#: Our own tag on every resource (user --tags come on top); AWS allows 50 per resource.
OWN_TAG = "restyle:endpoint"
MAX_USER_TAGS = 45

VARIANT = "AllTraffic"
NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
TRAINING_PROGRAMS = {"lora": "model/train/lora_inpaint.py", "clipseg": "model/train/clipseg.py"}
MAX_NAME = 63  # SageMaker names: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}
_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
# What --dry-run shows for a missing --bucket / --role-arn / account (the check functions accept them).
PLACEHOLDER_BUCKET = "<bucket>"
PLACEHOLDER_ROLE_ARN = "<role-arn>"
PLACEHOLDER_ACCOUNT = "<account-id>"
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3 general purpose bucket names
_ROLE_ARN_RE = re.compile(r"^arn:aws[-a-z]*:iam::[0-9]{12}:role/[\w+=,.@/-]+$")
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")  # us-east-1, us-gov-west-1, eu-isoe-west-1
RESERVED_HP_PREFIX = "sagemaker_"  # the training toolkit's own hyperparameters (entry point, code, region, ...)
#: In an isolated endpoint's model data, the looks' folder (relative to /opt/ml/model).
ISOLATED_LOOKS = "looks"
#: In an isolated endpoint's model data, the staged IP-Adapter's folder (RESTYLE_IP_ADAPTER, relative to model_dir).
ISOLATED_IP_ADAPTER = IP_ADAPTER_DIR


class PlanError(ValueError):
    """The flags cannot make a valid plan (a usage error: exit 2)."""


@dataclass(frozen=True)
class Settings:
    """Everything ``up``/``status``/``down`` need; the defaults are the CLI's."""

    region: str
    bucket: str
    role_arn: str
    account_id: str
    partition: str = "aws"
    prefix: str = DEFAULT_PREFIX
    clipseg_endpoint: str | None = None
    inpaint_endpoint: str | None = None
    async_endpoint: str | None = None
    upscale_endpoint: str | None = None
    instance_type: str = DEFAULT_INSTANCE_TYPE
    clipseg_instance_type: str | None = None
    inpaint_instance_type: str | None = None
    async_instance_type: str | None = None
    upscale_instance_type: str | None = None
    clipseg_model: str = DEFAULT_CLIPSEG_MODEL
    inpaint_model: str = DEFAULT_INPAINT_MODEL
    upscale_model: str | None = None  # no upscale endpoint unless given
    lora: str | None = None
    #: RESTYLE_IP_ADAPTER of the inpaint endpoints: none, a Hub REF[:subfolder[:weight_name]] or an s3:// prefix
    #: (the CLI puts a staged folder's there); None leaves it unset (the loader's own choice).  Isolated: anything
    #: but none is in the model data, as ISOLATED_IP_ADAPTER.
    ip_adapter: str | None = None
    min_instances: int = DEFAULT_MIN_INSTANCES
    max_instances: int = 4
    async_max_instances: int = 2
    clipseg_target_invocations: float = 300.0
    inpaint_target_invocations: float = 10.0
    upscale_target_invocations: float = 10.0
    async_target_backlog: float = 4.0
    async_max_concurrency: int = 2
    image_uri: str | None = None
    # production defaults and hardening
    clipseg_latency_alarm_s: float = 5.0
    inpaint_latency_alarm_s: float = 45.0
    upscale_latency_alarm_s: float = 60.0
    gpu_memory_alarm: float = 90.0
    data_capture: float = 0.0  # percent of real-time requests captured to S3; 0 = off
    s3_retention_days: int = 7
    network_isolation: bool = False
    vpc_subnets: tuple[str, ...] = ()
    vpc_security_groups: tuple[str, ...] = ()
    kms_key: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    #: --network-isolation: role -> s3://…/ prefix of its uncompressed model data (code/, the weights, looks/),
    #: made by the CLI from local folders (deploy/weights.py ``ModelData``); SageMaker copies it to /opt/ml/model.
    isolated_data: tuple[tuple[str, str], ...] = ()

    def roles(self) -> tuple[str, ...]:
        """The real-time roles this plan deploys (optional ones only when their model is given)."""
        return tuple(r for r in REALTIME_ROLES if r not in OPTIONAL_ROLES or getattr(self, f"{r}_model"))

    def model_of(self, role: str) -> str:
        return getattr(self, f"{role}_model")


def role_of(key: str) -> str:
    """The RESTYLE_ROLE an endpoint key serves (the async endpoint serves inpaint)."""
    return "inpaint" if key == "async" else key


@dataclass(frozen=True)
class Names:
    """Resource names derived from the prefix (and per-endpoint overrides)."""

    prefix: str
    endpoints: dict[str, str]  # key (clipseg | inpaint | async | upscale) -> endpoint name
    success_topic: str
    error_topic: str
    alarm: str
    s3_prefix: str  # key prefix in the bucket, no trailing slash
    alarm_topic: str = ""

    def versions(self, endpoint: str) -> re.Pattern[str]:
        """Matches the hashed model / endpoint-config names of ``endpoint`` (and no other endpoint's)."""
        return re.compile(rf"^{re.escape(endpoint)}-[0-9a-f]{{8}}$")

    def monitor_alarms(self) -> list[str]:
        """Every monitoring alarm name ``up`` may create (``down`` deletes those present)."""
        return [f"{e}-{kind}" for e in self.endpoints.values() for kind in MONITOR_KINDS]

    def lifecycle_rule_ids(self) -> list[str]:
        return [f"restyle-{self.prefix}-{folder}" for folder in LIFECYCLE_FOLDERS]


#: Alarm name suffixes: <endpoint>-5xx, -failures (async), -model-latency, -gpu-memory.
MONITOR_KINDS = ("5xx", "failures", "model-latency", "gpu-memory")
#: S3 folders under <prefix>/ that expire after --s3-retention-days.
LIFECYCLE_FOLDERS = ("async-in", "async-out", "async-failures", "data-capture")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    image: str
    environment: dict[str, str]
    execution_role_arn: str
    model_data_url: str | None = None  # model.tar.gz, or
    model_data_source: dict | None = None  # --network-isolation: the uncompressed S3 prefix (ModelDataSource)
    network_isolation: bool = False
    vpc_config: dict | None = None


@dataclass(frozen=True)
class EndpointConfigSpec:
    name: str
    production_variant: dict
    async_inference_config: dict | None = None
    kms_key_id: str | None = None
    data_capture_config: dict | None = None


@dataclass(frozen=True)
class PolicySpec:
    name: str
    policy_type: str  # TargetTrackingScaling | StepScaling
    configuration: dict  # the *ScalingPolicyConfiguration body

    @property
    def config_key(self) -> str:
        return f"{self.policy_type}PolicyConfiguration"


@dataclass(frozen=True)
class ScalingSpec:
    resource_id: str
    min_capacity: int
    max_capacity: int
    policies: tuple[PolicySpec, ...]


@dataclass(frozen=True)
class AlarmSpec:
    """A CloudWatch alarm whose action is the step-scaling policy ``policy_name`` (its ARN is known only later)."""

    name: str
    policy_name: str
    request: dict  # put_metric_alarm arguments, except AlarmName and AlarmActions


@dataclass(frozen=True)
class MonitorSpec:
    """A CloudWatch alarm that notifies the alarm topic (and, for real-time endpoints, rolls an update back)."""

    name: str
    request: dict  # put_metric_alarm arguments, except AlarmName and Tags


@dataclass(frozen=True)
class EndpointPlan:
    key: str  # clipseg | inpaint | async | upscale
    name: str
    mode: str  # real-time | async
    model: ModelSpec
    config: EndpointConfigSpec
    scaling: ScalingSpec
    alarm: AlarmSpec | None = None
    monitors: tuple[MonitorSpec, ...] = ()
    deployment_config: dict | None = None  # CreateEndpoint / UpdateEndpoint DeploymentConfig


@dataclass(frozen=True)
class Plan:
    region: str
    account_id: str
    bucket: str
    artifact_key: str
    artifact_sha256: str
    topics: dict[str, str]  # topic name -> ARN
    endpoints: tuple[EndpointPlan, ...]
    alarm_topic: str = ""  # the name (in ``topics``) of the topic every monitoring alarm notifies
    lifecycle_rules: tuple[dict, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()  # the user's --tags (each resource adds restyle:endpoint)
    kms_key: str | None = None

    @property
    def artifact_url(self) -> str:
        return f"s3://{self.bucket}/{self.artifact_key}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["artifact_url"] = self.artifact_url
        return data


def digest(obj: object, length: int = 8) -> str:
    """Short sha256 of ``obj`` as canonical JSON: the version suffix of models and endpoint configs."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def _check_name(name: str, what: str, room: int = 0) -> str:
    if len(name) > MAX_NAME - room or not _NAME_RE.match(name):
        raise PlanError(
            f"{what} {name!r} must be letters, digits and hyphens, at most {MAX_NAME - room} characters")
    return name


def check_bucket(bucket: str, flag: str = "--bucket") -> str:
    """An S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or
    digit, no "..", not an IP address."""
    if bucket == PLACEHOLDER_BUCKET:
        return bucket
    if bucket.lower().startswith("s3://"):
        raise PlanError(f"{flag} takes the bare bucket name, not an s3:// URI: got {bucket!r}")
    if (not _BUCKET_RE.match(bucket) or ".." in bucket or re.fullmatch(r"[0-9]+(\.[0-9]+){3}", bucket)):
        raise PlanError(f"{flag} {bucket!r} is not an S3 bucket name (3-63 lowercase letters, digits, dots and "
                        "hyphens, starting and ending with a letter or digit)")
    return bucket


def check_role_arn(arn: str) -> str:
    """An IAM role ARN: ``arn:aws:iam::123456789012:role/name`` (any partition, optional path)."""
    if arn != PLACEHOLDER_ROLE_ARN and not _ROLE_ARN_RE.match(arn):
        raise PlanError(f"--role-arn {arn!r} is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)")
    return arn


def check_region(region: str) -> str:
    """The shape of an AWS region name (whether botocore knows it is checked by the CLI)."""
    if not _REGION_RE.match(region):
        raise PlanError(f"region {region!r} is not an AWS region name (e.g. us-east-1)")
    return region


def check_s3_uri(uri: str, flag: str) -> str:
    """An ``s3://BUCKET[/KEY]`` URI names a bucket (the key may be empty: the whole bucket)."""
    if not uri[len("s3://"):].split("/", 1)[0].strip():
        raise PlanError(f"{flag} {uri!r} names no bucket: expected s3://BUCKET/KEY")
    return uri


def _check_not_empty(pairs: list[tuple[str, str | None]]) -> None:
    for flag, value in pairs:
        if value is not None and not value.strip():
            raise PlanError(f"{flag} must not be empty (leave it out for the default)")


def check_common(s: Settings | TrainSettings) -> None:
    """Region, bucket and role: shared by every command (down checks only these)."""
    check_region(s.region)
    check_bucket(s.bucket)
    check_role_arn(s.role_arn)


def endpoint_keys(s: Settings, every: bool = False) -> list[str]:
    """The endpoints planned, in order; ``every`` adds the optional ones (``down`` deletes them when present)."""
    roles = REALTIME_ROLES if every else s.roles()
    return [r for r in roles if r not in OPTIONAL_ROLES] + ["async"] + [r for r in roles if r in OPTIONAL_ROLES]


def names_for(s: Settings, every: bool = False) -> Names:
    _check_name(s.prefix, "--prefix", room=len("-inpaint-async-12345678"))
    keys = endpoint_keys(s, every)
    _check_not_empty([(f"--{k}-endpoint", getattr(s, f"{k}_endpoint")) for k in keys])
    defaults = {"async": f"{s.prefix}-inpaint-async"}
    endpoints = {k: getattr(s, f"{k}_endpoint") or defaults.get(k, f"{s.prefix}-{k}") for k in keys}
    for key, name in endpoints.items():
        _check_name(name, f"endpoint name ({key})", room=9)  # room for "-<8 hex>" version suffixes
    if len(set(endpoints.values())) != len(endpoints):
        raise PlanError(f"the {len(endpoints)} endpoint names must differ, got {sorted(endpoints.values())}")
    return Names(
        prefix=s.prefix,
        endpoints=endpoints,
        success_topic=f"{s.prefix}-async-success",
        error_topic=f"{s.prefix}-async-error",
        alarm=f"{endpoints['async']}-backlog-without-capacity",
        s3_prefix=s.prefix,
        alarm_topic=f"{s.prefix}-alarms",
    )


def topic_arns(names: Names, partition: str, region: str, account_id: str) -> dict[str, str]:
    """The SNS topics, name -> ARN: the two async notification topics and the alarm topic."""
    return {t: f"arn:{partition}:sns:{region}:{account_id}:{t}"
            for t in (names.success_topic, names.error_topic, names.alarm_topic)}


def resource_id(endpoint: str) -> str:
    """The Application Auto Scaling resource id of ``endpoint``'s variant."""
    return f"endpoint/{endpoint}/variant/{VARIANT}"


def hub_refs(role: str, model: str, lora: str | None, ip_adapter: str | None = None) -> list[str]:
    """What an endpoint of ``role`` would fetch from the Hugging Face Hub at start (not s3://)."""
    refs = [model] if not model.startswith("s3://") else []
    if lora and role == "inpaint":
        refs += [ref for ref in parse_looks(lora).values() if not ref.startswith("s3://")]
    if ip_adapter and role == "inpaint" and ip_adapter.lower() != "none" and not ip_adapter.startswith("s3://"):
        refs.append(ip_adapter.split(":")[0])
    return refs


def _environment(role: str, model: str, lora: str | None, *, is_async: bool, isolated: bool = False,
                 ip_adapter: str | None = None) -> dict[str, str]:
    env = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_MODEL_SERVER_WORKERS": "1", "RESTYLE_ROLE": role}
    adapter = ip_adapter if role == "inpaint" else None
    if isolated:  # SageMaker copied code/, the weights, looks/ and ip_adapter/ to /opt/ml/model: model_fn loads it
        if lora and role == "inpaint":
            env["RESTYLE_LORA"] = format_looks({name: f"{ISOLATED_LOOKS}/{name}" for name in parse_looks(lora)})
        if adapter:
            env[IP_ADAPTER_ENV] = "none" if adapter.lower() == "none" else ISOLATED_IP_ADAPTER
        env["HF_HUB_OFFLINE"] = "1"
        if is_async:
            env["SAGEMAKER_MODEL_SERVER_TIMEOUT"] = "900"
        return env
    if model.startswith("s3://"):
        env["RESTYLE_ARTIFACT_S3"] = model  # code/inference.py downloads it; RESTYLE_MODEL_ID stays unset
    else:
        env["RESTYLE_MODEL_ID"] = model
    if lora and role == "inpaint":
        env["RESTYLE_LORA"] = lora
    if adapter:
        env[IP_ADAPTER_ENV] = adapter
    if not hub_refs(role, model, lora, adapter):  # nothing comes from the Hub: never let a library reach for it
        env["HF_HUB_OFFLINE"] = "1"
    if is_async:
        env["SAGEMAKER_MODEL_SERVER_TIMEOUT"] = "900"
    return env


_SUBNET_RE = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_SG_RE = re.compile(r"^sg-[0-9a-f]{8,17}$")
_KMS_RE = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}|alias/[\w/+=,.@-]+"
                     r"|arn:aws[-a-z]*:kms:[a-z0-9-]+:[0-9]{12}:(key/[\w-]+|alias/[\w/+=,.@-]+))$")
_TAG_RE = re.compile(r"^[\w .:/=+\-@]*$")
GPU_FAMILIES = ("ml.g", "ml.p")  # instance families with NVIDIA GPUs (GPUMemoryUtilization is published)


def check_tags(tags: tuple[tuple[str, str], ...]) -> None:
    keys = [k for k, _ in tags]
    if len(tags) > MAX_USER_TAGS:
        raise PlanError(f"--tags: at most {MAX_USER_TAGS} tags (AWS allows 50 per resource; restyle adds its own)")
    for key, value in tags:
        if not 1 <= len(key) <= 128 or len(value) > 256 or not _TAG_RE.match(key) or not _TAG_RE.match(value):
            raise PlanError(f"--tags {key}={value}: keys are 1-128 and values 0-256 letters, digits, spaces and "
                            "_ . : / = + - @")
        if key.lower().startswith("aws:") or key == OWN_TAG:
            raise PlanError(f"--tags {key}: keys starting with 'aws:' and {OWN_TAG!r} are reserved")
        if keys.count(key) > 1:
            raise PlanError(f"--tags {key}: the key is given twice")


def is_gpu(instance_type: str) -> bool:
    return instance_type.startswith(GPU_FAMILIES)


#: Families with local NVMe instance storage besides the "d" ones (g4dn, p4d, m5d…).  SageMaker refuses an endpoint
#: config KmsKeyId for them; their storage is encrypted by the hardware instead.
_NVME_FAMILIES = {"g5", "g6", "g6e", "p5", "p5e", "p5en", "gr6"}


def has_local_storage(instance_type: str) -> bool:
    family = instance_type.removeprefix("ml.").split(".")[0]
    return family in _NVME_FAMILIES or bool(re.fullmatch(r"[a-z]+[0-9]+[a-z]*d[a-z]*", family))


def _validate_hardening(s: Settings) -> None:
    check_tags(s.tags)
    if bool(s.vpc_subnets) != bool(s.vpc_security_groups):
        raise PlanError("--vpc-subnets and --vpc-security-groups go together (the endpoints join that VPC)")
    for subnet in s.vpc_subnets:
        if not _SUBNET_RE.match(subnet):
            raise PlanError(f"--vpc-subnets: {subnet!r} is not a subnet id (subnet-0123abcd…)")
    for sg in s.vpc_security_groups:
        if not _SG_RE.match(sg):
            raise PlanError(f"--vpc-security-groups: {sg!r} is not a security group id (sg-0123abcd…)")
    if len(s.vpc_subnets) > 16 or len(s.vpc_security_groups) > 5:
        raise PlanError("--vpc-subnets takes at most 16 ids and --vpc-security-groups at most 5")
    if s.kms_key is not None and not _KMS_RE.match(s.kms_key):
        raise PlanError(f"--kms-key {s.kms_key!r} is not a KMS key id, key ARN, alias/NAME or alias ARN")
    for flag, value, hi in [*((f"--{r}-latency-alarm-s", getattr(s, f"{r}_latency_alarm_s"), 3600.0)
                              for r in REALTIME_ROLES),
                            ("--gpu-memory-alarm", s.gpu_memory_alarm, 800.0)]:
        if not math.isfinite(value) or not 0 < value <= hi:
            raise PlanError(f"{flag} must be a number > 0 and <= {hi:g}, got {value}")
    if not math.isfinite(s.data_capture) or not 0 <= s.data_capture <= 100:
        raise PlanError(f"--data-capture is a percentage of requests, 0-100 (0 = off), got {s.data_capture}")
    if not 1 <= s.s3_retention_days <= 3650:
        raise PlanError(f"--s3-retention-days must be 1-3650, got {s.s3_retention_days}")
    if s.network_isolation:  # what deploy cannot put into an isolated endpoint's model data
        remote = [(role, s.model_of(role)) for role in s.roles() if s.model_of(role).startswith("s3://")]
        remote += [("inpaint", ref) for ref in parse_looks(s.lora).values() if ref.startswith("s3://")]
        remote += [("inpaint", s.ip_adapter)] if s.ip_adapter and s.ip_adapter.startswith("s3://") else []
        if remote:
            role, ref = remote[0]
            raise PlanError(f"--network-isolation: the {role} endpoint would fetch {ref} from S3 when it starts, "
                            "which an isolated container cannot, and deploy does not copy s3:// models into its "
                            "model data; download it and pass the local folder instead")


def _check_isolated(s: Settings) -> dict[str, str]:
    """role -> its model data prefix; every role an isolated plan deploys must have one."""
    data = dict(s.isolated_data)
    for role in s.roles():
        if role not in data:
            refs = [s.model_of(role)] + ([r for r in parse_looks(s.lora).values()] if role == "inpaint" else [])
            ref = next((r for r in refs if not r.startswith("s3://")), refs[0])
            raise PlanError(f"--network-isolation: the {role} endpoint would fetch {ref} when it starts, which an "
                            "isolated container cannot; give the weights as a local folder or a Hub id that "
                            "python -m deploy up resolves on this machine (docs/deploy.md)")
        uri = data[role]
        if not (uri.startswith("s3://") and uri.endswith("/")):
            raise PlanError(f"model data of {role} must be an s3://BUCKET/PREFIX/ ending in '/', got {uri!r}")
    return data


def _validate(s: Settings) -> None:
    check_common(s)
    _check_not_empty([("--instance-type", s.instance_type), ("--image-uri", s.image_uri),
                      *((f"--{k}-instance-type", getattr(s, f"{k}_instance_type"))
                        for k in (*REALTIME_ROLES, "async"))])
    if s.min_instances < 1:
        raise PlanError("--min-instances must be >= 1: the real-time endpoints never scale to zero")
    if s.max_instances < s.min_instances:
        raise PlanError("--max-instances must be >= --min-instances")
    if s.async_max_instances < 1:
        raise PlanError("--async-max-instances must be >= 1")
    if s.async_max_concurrency < 1:
        raise PlanError("--async-max-concurrency must be >= 1")
    for flag, value in [*((f"--{r}-target-invocations", getattr(s, f"{r}_target_invocations"))
                          for r in REALTIME_ROLES),
                        ("--async-target-backlog", s.async_target_backlog)]:
        if not math.isfinite(value) or value <= 0:
            raise PlanError(f"{flag} must be a finite number > 0, got {value}")
    for flag, value in [*((f"--{r}-model", s.model_of(r)) for r in REALTIME_ROLES), ("--lora", s.lora),
                        ("--ip-adapter", s.ip_adapter)]:
        if value is not None and not value.strip():
            if flag == "--ip-adapter":
                raise PlanError("--ip-adapter must not be empty (leave it out for the default, or say none)")
            raise PlanError(f"{flag} must be a Hub id or an s3:// URI, got {value!r}")
        if flag != "--lora" and value and value.startswith("s3://"):
            check_s3_uri(value, flag)
    if s.lora:  # brand looks, checked here rather than when an endpoint fails to start
        try:
            looks = parse_looks(s.lora)
        except ValueError as exc:
            raise PlanError(f"--lora: {exc}") from None
        if not looks:
            raise PlanError(f"--lora {s.lora!r} names no look")
        for ref in looks.values():
            if ref.startswith("s3://"):
                check_s3_uri(ref, "--lora")
    _validate_hardening(s)


def validate_settings(s: Settings) -> None:
    """Every check ``build_plan`` makes, without building anything (the CLI runs it before the slow parts)."""
    _validate(s)
    names_for(s)


def instance_types(s: Settings) -> dict[str, str]:
    """endpoint key -> instance type, for the endpoints the plan deploys."""
    return {k: getattr(s, f"{k}_instance_type") or s.instance_type for k in endpoint_keys(s)}


def artifact_key(s3_prefix: str, sha256: str) -> str:
    return f"{s3_prefix}/model-{sha256[:12]}.tar.gz"


def build_plan(s: Settings, *, artifact_sha256: str, images: Mapping[str, str]) -> Plan:
    """The desired state.  ``images`` maps each instance type to its inference image URI."""
    _validate(s)
    names = names_for(s)
    types = instance_types(s)
    key = artifact_key(names.s3_prefix, artifact_sha256)
    data_url = f"s3://{s.bucket}/{key}"
    topics = topic_arns(names, s.partition, s.region, s.account_id)
    isolated = _check_isolated(s) if s.network_isolation else {}
    endpoints = []
    for ep_key, endpoint in names.endpoints.items():
        is_async = ep_key == "async"
        role = role_of(ep_key)
        content = {
            "image": s.image_uri or images[types[ep_key]],
            "model_data_url": data_url,
            "environment": _environment(role, s.model_of(role), s.lora, is_async=is_async,
                                        isolated=bool(isolated), ip_adapter=s.ip_adapter),
            "execution_role_arn": s.role_arn,
        }
        if isolated:  # uncompressed: SageMaker copies the prefix to /opt/ml/model, nothing is fetched by our code
            del content["model_data_url"]
            content["model_data_source"] = {"S3DataSource": {
                "S3Uri": isolated[role], "S3DataType": "S3Prefix", "CompressionType": "None"}}
        # only when set, so the names of models planned without them stay what they were
        if s.network_isolation:
            content["network_isolation"] = True
        if s.vpc_subnets:
            content["vpc_config"] = {"Subnets": list(s.vpc_subnets), "SecurityGroupIds": list(s.vpc_security_groups)}
        model = ModelSpec(name=f"{endpoint}-{digest(content)}", **content)

        variant = {
            "VariantName": VARIANT,
            "ModelName": model.name,
            "InstanceType": types[ep_key],
            "InitialInstanceCount": 1 if is_async else s.min_instances,  # >= 2: spread over AZs
            "ContainerStartupHealthCheckTimeoutInSeconds": 900,  # SD weights download at start
        }
        async_config = None
        if is_async:
            async_config = {
                "OutputConfig": {
                    "S3OutputPath": f"s3://{s.bucket}/{names.s3_prefix}/async-out/",
                    "S3FailurePath": f"s3://{s.bucket}/{names.s3_prefix}/async-failures/",
                    "NotificationConfig": {"SuccessTopic": topics[names.success_topic],
                                           "ErrorTopic": topics[names.error_topic]},
                },
                "ClientConfig": {"MaxConcurrentInvocationsPerInstance": s.async_max_concurrency},
            }
            if s.kms_key:
                async_config["OutputConfig"]["KmsKeyId"] = s.kms_key
        config_content: dict = {"production_variant": variant, "async_inference_config": async_config}
        if s.kms_key and not has_local_storage(types[ep_key]):  # NVMe types: refused by SageMaker, and moot
            config_content["kms_key_id"] = s.kms_key
        if s.data_capture and not is_async:
            capture = {
                "EnableCapture": True,
                "InitialSamplingPercentage": int(math.ceil(s.data_capture)),
                "DestinationS3Uri": f"s3://{s.bucket}/{names.s3_prefix}/data-capture/",
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
            }
            if s.kms_key:
                capture["KmsKeyId"] = s.kms_key
            config_content["data_capture_config"] = capture
        config = EndpointConfigSpec(name=f"{endpoint}-{digest(config_content)}", **config_content)
        monitors = _monitors(s, ep_key, endpoint, types[ep_key], topics[names.alarm_topic])
        deployment = None
        if not is_async:  # blue/green updates that roll back when a monitoring alarm fires
            deployment = {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 300},
                    "TerminationWaitInSeconds": 300,
                    "MaximumExecutionTimeoutInSeconds": 3600,
                },
                "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": m.name} for m in monitors]},
            }

        rid = resource_id(endpoint)
        alarm = None
        if is_async:
            policies = (
                PolicySpec(f"{endpoint}-backlog", "TargetTrackingScaling", {
                    "TargetValue": float(s.async_target_backlog),
                    "CustomizedMetricSpecification": {
                        "MetricName": "ApproximateBacklogSizePerInstance",
                        "Namespace": "AWS/SageMaker",
                        "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
                        "Statistic": "Average",
                    },
                    "ScaleInCooldown": 600,
                    "ScaleOutCooldown": 300,
                }),
                PolicySpec(f"{endpoint}-wake-from-zero", "StepScaling", {
                    "AdjustmentType": "ChangeInCapacity",
                    "MetricAggregationType": "Average",
                    "Cooldown": 300,
                    "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
                }),
            )
            scaling = ScalingSpec(rid, 0, s.async_max_instances, policies)
            alarm = AlarmSpec(name=names.alarm, policy_name=policies[1].name, request={
                "AlarmDescription": f"{endpoint} has queued requests but no instance: scale out from zero",
                "MetricName": "HasBacklogWithoutCapacity",
                "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
                "Statistic": "Average",
                "Period": 60,
                "EvaluationPeriods": 2,
                "DatapointsToAlarm": 2,
                "Threshold": 1.0,
                "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                "TreatMissingData": "missing",
            })
        else:
            target = getattr(s, f"{ep_key}_target_invocations")
            policies = (
                PolicySpec(f"{endpoint}-invocations", "TargetTrackingScaling", {
                    "TargetValue": float(target),
                    "PredefinedMetricSpecification": {
                        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                    "ScaleInCooldown": 300,
                    "ScaleOutCooldown": 60,
                }),
            )
            scaling = ScalingSpec(rid, s.min_instances, s.max_instances, policies)
        endpoints.append(EndpointPlan(key=ep_key, name=endpoint, mode="async" if is_async else "real-time",
                                      model=model, config=config, scaling=scaling, alarm=alarm,
                                      monitors=monitors, deployment_config=deployment))
    rules = tuple({"ID": rule_id, "Filter": {"Prefix": f"{names.s3_prefix}/{folder}/"}, "Status": "Enabled",
                   "Expiration": {"Days": s.s3_retention_days},
                   "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}
                  for rule_id, folder in zip(names.lifecycle_rule_ids(), LIFECYCLE_FOLDERS, strict=True))
    return Plan(region=s.region, account_id=s.account_id, bucket=s.bucket, artifact_key=key,
                artifact_sha256=artifact_sha256, topics=topics, endpoints=tuple(endpoints),
                alarm_topic=names.alarm_topic, lifecycle_rules=rules, tags=tuple(s.tags), kms_key=s.kms_key)


def _monitors(s: Settings, key: str, endpoint: str, instance_type: str, topic_arn: str) -> tuple[MonitorSpec, ...]:
    """5xx (real-time) or failed invocations (async), ModelLatency p90 (real-time), GPU memory (GPU types)."""
    dims = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": VARIANT}]
    common = {"Period": 60, "ActionsEnabled": True, "AlarmActions": [topic_arn], "OKActions": [topic_arn],
              "TreatMissingData": "notBreaching"}
    out = []
    if key == "async":
        out.append(MonitorSpec(f"{endpoint}-failures", {
            **common, "AlarmDescription": f"{endpoint}: async invocations are failing",
            "Namespace": "AWS/SageMaker", "MetricName": "InvocationFailures",
            "Dimensions": [{"Name": "EndpointName", "Value": endpoint}], "Statistic": "Sum",
            "EvaluationPeriods": 5, "DatapointsToAlarm": 3, "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold"}))
    else:
        limit_s = getattr(s, f"{key}_latency_alarm_s")
        out.append(MonitorSpec(f"{endpoint}-5xx", {
            **common, "AlarmDescription": f"{endpoint}: the model answers 5xx",
            "Namespace": "AWS/SageMaker", "MetricName": "Invocation5XXErrors", "Dimensions": dims,
            "Statistic": "Sum", "EvaluationPeriods": 3, "DatapointsToAlarm": 2, "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold"}))
        out.append(MonitorSpec(f"{endpoint}-model-latency", {
            **common, "AlarmDescription": f"{endpoint}: p90 model latency over {limit_s:g} s",
            "Namespace": "AWS/SageMaker", "MetricName": "ModelLatency", "Dimensions": dims,
            "ExtendedStatistic": "p90", "EvaluationPeriods": 5, "DatapointsToAlarm": 3,
            "Threshold": float(limit_s * 1_000_000), "ComparisonOperator": "GreaterThanThreshold"}))  # microseconds
    if is_gpu(instance_type):
        out.append(MonitorSpec(f"{endpoint}-gpu-memory", {
            **common, "AlarmDescription": f"{endpoint}: GPU memory over {s.gpu_memory_alarm:g} %",
            "Namespace": "/aws/sagemaker/Endpoints", "MetricName": "GPUMemoryUtilization", "Dimensions": dims,
            "Statistic": "Maximum", "EvaluationPeriods": 5, "DatapointsToAlarm": 3,
            "Threshold": float(s.gpu_memory_alarm), "ComparisonOperator": "GreaterThanThreshold"}))
    return tuple(out)


def render_plan(plan: Plan) -> str:
    """The plan as readable text (``--dry-run`` without ``--json``)."""
    lines = [f"plan: region {plan.region}, account {plan.account_id}",
             f"  artifact  {plan.artifact_url}  (sha256 {plan.artifact_sha256[:12]})",
             f"  topics    {', '.join(plan.topics)}"]
    for ep in plan.endpoints:
        v = ep.config.production_variant
        lines.append(f"  endpoint  {ep.name}  [{ep.mode}, {v['InstanceType']}, "
                     f"{ep.scaling.min_capacity}..{ep.scaling.max_capacity} instances]")
        env = " ".join(f"{k}={val}" for k, val in sorted(ep.model.environment.items())
                       if k.startswith(("RESTYLE", "HF_")))
        lines.append(f"    model    {ep.model.name}  {env}")
        if ep.model.model_data_source:
            lines.append(f"    data     {ep.model.model_data_source['S3DataSource']['S3Uri']}  (uncompressed: "
                         "code/, weights, looks/, ip_adapter/ copied to /opt/ml/model by SageMaker)")
        if ep.model.network_isolation or ep.model.vpc_config:
            vpc = ep.model.vpc_config
            lines.append("    network  " + ", ".join(filter(None, [
                "isolated" if ep.model.network_isolation else "",
                f"vpc subnets {','.join(vpc['Subnets'])} groups {','.join(vpc['SecurityGroupIds'])}" if vpc else ""])))
        lines.append(f"    config   {ep.config.name}")
        if ep.config.async_inference_config:
            out = ep.config.async_inference_config["OutputConfig"]
            lines.append(f"    async    output {out['S3OutputPath']}  failures {out['S3FailurePath']}")
        for p in ep.scaling.policies:
            c = p.configuration
            what = ((c.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType")
                    or (c.get("CustomizedMetricSpecification") or {}).get("MetricName"))
            detail = f"target {c['TargetValue']:g} {what}" if what else "+1 instance when the alarm fires"
            lines.append(f"    policy   {p.name}  {p.policy_type}: {detail}")
        if ep.alarm:
            lines.append(f"    alarm    {ep.alarm.name}  {ep.alarm.request['MetricName']} >= 1 -> "
                         f"{ep.alarm.policy_name}")
        for m in ep.monitors:
            lines.append(f"    alarm    {m.name}  {m.request['MetricName']} -> {plan.alarm_topic}")
        if ep.deployment_config:
            lines.append("    updates  blue/green, rolled back when an alarm above fires")
        if ep.config.data_capture_config:
            c = ep.config.data_capture_config
            lines.append(f"    capture  {c['InitialSamplingPercentage']} % of requests -> {c['DestinationS3Uri']}")
    for rule in plan.lifecycle_rules:
        lines.append(f"  expire    s3://{plan.bucket}/{rule['Filter']['Prefix']} after {rule['Expiration']['Days']} days")
    if plan.kms_key:
        nvme = sorted({e.config.production_variant["InstanceType"] for e in plan.endpoints
                       if not e.config.kms_key_id})
        lines.append(f"  kms key   {plan.kms_key} (endpoint volumes, async output, data capture, SNS, artifact)"
                     + (f"; not on {', '.join(nvme)} volumes: local NVMe, encrypted by the hardware" if nvme else ""))
    if plan.tags:
        lines.append("  tags      " + ", ".join(f"{k}={v}" for k, v in plan.tags))
    lines.append(f"  image     {plan.endpoints[0].model.image}")
    return "\n".join(lines)


# --- training ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSettings:
    region: str
    bucket: str
    role_arn: str
    prefix: str = DEFAULT_PREFIX
    lora_data: str | None = None
    clipseg_data: str | None = None
    train_instance_type: str = DEFAULT_TRAIN_INSTANCE_TYPE
    hyperparameters: dict[str, str] = field(default_factory=dict)
    lora_hyperparameters: dict[str, str] = field(default_factory=dict)
    clipseg_hyperparameters: dict[str, str] = field(default_factory=dict)
    max_runtime: int = 24 * 3600
    volume_size: int = 100


def sourcedir_key(s3_prefix: str, sha256: str) -> str:
    return f"{s3_prefix}/training/code/sourcedir-{sha256[:12]}.tar.gz"


def validate_training(s: TrainSettings) -> None:
    """Every check ``build_training_jobs`` makes on its settings."""
    check_common(s)
    _check_name(s.prefix, "--prefix", room=len("-clipseg-20250101-000000-000"))
    data = {"lora": s.lora_data, "clipseg": s.clipseg_data}
    if not any(data.values()):
        raise PlanError("train needs --lora-data s3://... and/or --clipseg-data s3://...")
    for kind, uri in data.items():
        if uri is not None and not uri.startswith("s3://"):
            raise PlanError(f"--{kind}-data must be an s3:// URI, got {uri!r}")
        if uri is not None:
            check_s3_uri(uri, f"--{kind}-data")
    _check_not_empty([("--train-instance-type", s.train_instance_type)])
    for flag, value in [("--max-runtime", s.max_runtime), ("--volume-size", s.volume_size)]:
        if value < 1:
            raise PlanError(f"{flag} must be a positive integer, got {value}")
    for flag, hps in [("--hp", s.hyperparameters), ("--lora-hp", s.lora_hyperparameters),
                      ("--clipseg-hp", s.clipseg_hyperparameters)]:
        reserved = sorted(k for k in hps if k.lower().startswith(RESERVED_HP_PREFIX))
        if reserved:
            raise PlanError(f"{flag} {reserved[0]}: {RESERVED_HP_PREFIX}* hyperparameters are set by train "
                            "itself (entry point, code, region, job name) and cannot be overridden")


def build_training_jobs(s: TrainSettings, *, sourcedir_sha256: str, image: str, timestamp: str) -> list[dict]:
    """``create_training_job`` requests, one per data set given.  ``timestamp`` (e.g. 20250101-120000) makes the
    job names unique."""
    validate_training(s)
    data = {"lora": s.lora_data, "clipseg": s.clipseg_data}
    code_url = f"s3://{s.bucket}/{sourcedir_key(s.prefix, sourcedir_sha256)}"
    jobs = []
    for kind, uri in data.items():
        if uri is None:
            continue
        name = _check_name(f"{s.prefix}-{kind}-{timestamp}", "training job name")
        extra = s.lora_hyperparameters if kind == "lora" else s.clipseg_hyperparameters
        hps = {
            "sagemaker_program": TRAINING_PROGRAMS[kind],
            "sagemaker_submit_directory": code_url,
            "sagemaker_region": s.region,
            "sagemaker_container_log_level": "20",
            "sagemaker_job_name": name,
            **s.hyperparameters,
            **extra,
        }
        jobs.append({
            "TrainingJobName": name,
            # The SageMaker SDK's convention, which the training toolkit decodes: every value JSON-encoded.
            "HyperParameters": {k: json.dumps(v) for k, v in hps.items()},
            "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
            "RoleArn": s.role_arn,
            "InputDataConfig": [{
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                                "S3DataDistributionType": "FullyReplicated"}},
            }],
            "OutputDataConfig": {"S3OutputPath": f"s3://{s.bucket}/{s.prefix}/training/"},
            "ResourceConfig": {"InstanceType": s.train_instance_type, "InstanceCount": 1,
                               "VolumeSizeInGB": s.volume_size},
            "StoppingCondition": {"MaxRuntimeInSeconds": s.max_runtime},
            # The entry point is model/train/<x>.py; put the code root on the path so `import model` works.
            "Environment": {"PYTHONPATH": "/opt/ml/code"},
            "Tags": [{"Key": "restyle:prefix", "Value": s.prefix}, {"Key": "restyle:job", "Value": kind}],
        })
    return jobs
