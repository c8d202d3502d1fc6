"""Thin boto3 wrappers: compare a ``Plan`` with what exists (describe_*/list_*) and create only what is missing.

Every AWS failure becomes a one-line ``DeployError`` naming the resource and the AWS error code.  Credentials come
from boto3's standard chain and ``AWS_ENDPOINT_URL`` is honoured by boto3 itself; nothing here handles either.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
    WaiterError,
)

from deploy.package import Bundle
from deploy.plan import (
    DIMENSION,
    NAMESPACE,
    OWN_TAG,
    EndpointPlan,
    MonitorSpec,
    Names,
    Plan,
    PolicySpec,
    resource_id,
)

#: ``image_uris.retrieve("huggingface", ...)`` combinations, newest first; the first one the installed SDK knows wins.
INFERENCE_IMAGES = [("4.51.3", "pytorch2.6.0", "py312"), ("4.49.0", "pytorch2.6.0", "py312"),
                    ("4.48.0", "pytorch2.3.0", "py311"), ("4.37.0", "pytorch2.1.0", "py310")]
TRAINING_IMAGES = [("4.56.2", "pytorch2.8.0", "py312"), ("4.49.0", "pytorch2.5.1", "py311"),
                   ("4.36.0", "pytorch2.1.0", "py310")]
_ENDPOINT_BUSY = {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"}
_NOT_FOUND = {"NotFound", "NoSuchKey", "404", "ResourceNotFound", "ResourceNotFoundException", "NoSuchEntity",
              "NoSuchLifecycleConfiguration"}
_WAIT = {"Delay": 30, "MaxAttempts": 120}  # up to an hour: endpoints that download SD weights take minutes


class DeployError(RuntimeError):
    """An AWS call failed; the message is one line and safe to print."""


def _redact(text: str) -> str:
    text = re.sub(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b", "<access-key-id>", text)
    text = re.sub(r"<[^>]*>", " ", text)  # an HTML error page from a proxy or emulator
    return " ".join(text.split())[:300]


@contextlib.contextmanager
def aws(kind: str, name: str) -> Iterator[None]:
    """Turn boto3/botocore failures into ``DeployError("<kind> <name>: <Code>: <message>")``."""
    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        raise DeployError(f"{kind} {name}: {code}: {_redact(str(err.get('Message', '')))}") from None
    except (NoCredentialsError, PartialCredentialsError):
        raise DeployError(f"{kind} {name}: NoCredentials: no AWS credentials found in the standard chain "
                          "(environment, ~/.aws, SSO, instance role)") from None
    except WaiterError as exc:
        last = exc.last_response or {}
        reason = last.get("FailureReason") or last.get("Error", {}).get("Code")
        raise DeployError(f"{kind} {name}: WaiterError: {_redact(str(reason or exc))}") from None
    except BotoCoreError as exc:
        raise DeployError(f"{kind} {name}: {type(exc).__name__}: {_redact(str(exc))}") from None


def _not_found(exc: ClientError) -> bool:
    err = exc.response.get("Error", {})
    code, message = str(err.get("Code", "")), str(err.get("Message", ""))
    return code in _NOT_FOUND or (code == "ValidationException" and "Could not find" in message)


def _describe(fn: Callable[..., dict], **kwargs) -> dict | None:
    """``fn(**kwargs)``, or None when AWS says the resource does not exist."""
    try:
        return fn(**kwargs)
    except ClientError as exc:
        if _not_found(exc):
            return None
        raise


def subset(want: object, have: object) -> bool:
    """True when every key/value of ``want`` is in ``have`` (AWS adds defaults to what it describes)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(subset(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list | tuple):
        return (isinstance(have, list | tuple) and len(want) == len(have)
                and all(subset(a, b) for a, b in zip(want, have, strict=True)))
    if isinstance(want, int | float) and not isinstance(want, bool) and isinstance(have, int | float):
        return float(want) == float(have)
    return want == have


@dataclass(frozen=True)
class Change:
    action: str  # created | updated | recreated | unchanged | deleted | absent | would-delete
    kind: str
    name: str
    detail: str = ""

    def line(self) -> str:
        return f"  {self.action:<10} {self.kind:<16} {self.name}" + (f"  ({self.detail})" if self.detail else "")


def account_and_partition(session: boto3.Session, region: str) -> tuple[str, str]:
    with aws("caller identity", "sts"):
        account = session.client("sts", region_name=region).get_caller_identity()["Account"]
    return account, session.get_partition_for_region(region)


def resolve_image(region: str, instance_type: str, scope: str) -> str | None:
    """The Hugging Face PyTorch DLC for ``scope`` (inference | training), or None if the SDK knows none."""
    try:
        from sagemaker.core import image_uris  # sagemaker SDK v3
    except ImportError:
        try:
            from sagemaker import image_uris  # v2
        except ImportError:
            return None
    for version, base, py in INFERENCE_IMAGES if scope == "inference" else TRAINING_IMAGES:
        try:
            return image_uris.retrieve("huggingface", region, version=version, base_framework_version=base,
                                       py_version=py, instance_type=instance_type, image_scope=scope)
        except (ValueError, KeyError, TypeError):
            continue
    return None


class Deployer:
    def __init__(self, session: boto3.Session, region: str, log: Callable[[str], None] = print) -> None:
        self.sm = session.client("sagemaker", region_name=region)
        self.aas = session.client("application-autoscaling", region_name=region)
        self.cw = session.client("cloudwatch", region_name=region)
        self.sns = session.client("sns", region_name=region)
        self.s3 = session.client("s3", region_name=region)
        self.log = log
        self.changes: list[Change] = []
        self.tags: tuple[tuple[str, str], ...] = ()  # the user's --tags, set by ``up``

    def _tag_list(self, endpoint: str | None = None) -> list[dict]:
        own = [{"Key": OWN_TAG, "Value": endpoint}] if endpoint else []
        return own + [{"Key": k, "Value": v} for k, v in self.tags]

    def _record(self, action: str, kind: str, name: str, detail: str = "") -> None:
        change = Change(action, kind, name, detail)
        self.changes.append(change)
        self.log(change.line())

    # --- up ---------------------------------------------------------------------------------------------------

    def up(self, plan: Plan, artifact: Bundle, staged: list | None = None, s3_prefix: str = "") -> list[Change]:
        self.changes = []
        self.tags = plan.tags
        for w in staged or []:
            self.stage_weights(plan.bucket, w.key_prefix(s3_prefix), w, plan.kms_key)
        self.put_object(plan.bucket, plan.artifact_key, artifact, "artifact", kms_key=plan.kms_key)
        self._lifecycle(plan.bucket, list(plan.lifecycle_rules))
        for name, arn in plan.topics.items():
            self._topic(name, arn, plan.kms_key)
        for ep in plan.endpoints:  # before the endpoints: an update rolls back on them
            for monitor in ep.monitors:
                self._monitor(ep, monitor)
        for ep in plan.endpoints:
            self._model(ep)
            self._config(ep)
        for ep in plan.endpoints:
            self._endpoint(ep)
        for ep in plan.endpoints:
            self._wait_in_service(ep.name)
        for ep in plan.endpoints:
            arns = self._scaling(ep)
            if ep.alarm:
                self._alarm(ep, arns[ep.alarm.policy_name])
        return self.changes

    def put_object(self, bucket: str, key: str, bundle: Bundle, kind: str, kms_key: str | None = None) -> None:
        url = f"s3://{bucket}/{key}"
        extra: dict = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key} if kms_key else {}
        if self.tags:
            from urllib.parse import urlencode

            extra["Tagging"] = urlencode(list(self.tags))
        with aws(kind, url):
            if _describe(self.s3.head_object, Bucket=bucket, Key=key) is not None:
                self._record("unchanged", kind, url)
                return
            self.s3.put_object(Bucket=bucket, Key=key, Body=bundle.data, ContentType="application/gzip",
                               Metadata={"sha256": bundle.sha256}, **extra)
        self._record("created", kind, url, f"{len(bundle.data)} bytes")

    def stage_weights(self, bucket: str, key_prefix: str, w, kms_key: str | None = None) -> None:
        """Upload staged weights or an isolated endpoint's model data (``w.items()``: relative key -> local file or
        bytes) under ``key_prefix/`` once; ``key_prefix.complete`` (outside the prefix) marks it done."""
        kind = "model data" if "/model-data/" in f"/{key_prefix}" else "weights"
        url = f"s3://{bucket}/{key_prefix}/"
        marker = f"{key_prefix}.complete"
        extra: dict = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key} if kms_key else {}
        if self.tags:
            from urllib.parse import urlencode

            extra["Tagging"] = urlencode(list(self.tags))
        with aws(kind, url):
            if _describe(self.s3.head_object, Bucket=bucket, Key=marker) is not None:
                self._record("unchanged", kind, url, w.source)
                return
            for rel, value in w.items():
                if isinstance(value, bytes):
                    self.s3.put_object(Bucket=bucket, Key=f"{key_prefix}/{rel}", Body=value, **extra)
                else:
                    self.s3.upload_file(str(value), bucket, f"{key_prefix}/{rel}", ExtraArgs=dict(extra))
            self.s3.put_object(Bucket=bucket, Key=marker, Body=f"{w.digest}\n".encode(), **extra)
        self._record("created", kind, url, f"{w.source}: {len(w.files)} files, {w.size / 1e6:.1f} MB")

    def _lifecycle(self, bucket: str, rules: list[dict]) -> None:
        """Our expiry rules merged into the bucket's lifecycle configuration (other rules are kept)."""
        if not rules:
            return
        ours = {r["ID"] for r in rules}
        name = f"s3://{bucket} ({', '.join(r['Filter']['Prefix'] for r in rules)})"
        with aws("s3 lifecycle", name):
            current = self._lifecycle_rules(bucket)
            mine = sorted((r for r in current if r.get("ID") in ours), key=lambda r: r["ID"])
            if subset(sorted(rules, key=lambda r: r["ID"]), mine):
                self._record("unchanged", "s3 lifecycle", name)
                return
            others = [r for r in current if r.get("ID") not in ours]
            self.s3.put_bucket_lifecycle_configuration(Bucket=bucket,
                                                       LifecycleConfiguration={"Rules": others + rules})
        self._record("updated" if mine else "created", "s3 lifecycle", name,
                     f"expire after {rules[0]['Expiration']['Days']} days")

    def _lifecycle_rules(self, bucket: str) -> list[dict]:
        found = _describe(self.s3.get_bucket_lifecycle_configuration, Bucket=bucket)
        return list((found or {}).get("Rules", []))

    def _topic(self, name: str, arn: str, kms_key: str | None = None) -> None:
        with aws("sns topic", name):
            found = _describe(self.sns.get_topic_attributes, TopicArn=arn)
            if found is not None:
                if kms_key and found.get("Attributes", {}).get("KmsMasterKeyId") != kms_key:
                    self.sns.set_topic_attributes(TopicArn=arn, AttributeName="KmsMasterKeyId",
                                                  AttributeValue=kms_key)
                    self._record("updated", "sns topic", name, "encrypted with --kms-key")
                    return
                self._record("unchanged", "sns topic", name)
                return
            extra: dict = {"Attributes": {"KmsMasterKeyId": kms_key}} if kms_key else {}
            if self.tags:
                extra["Tags"] = self._tag_list()
            got = self.sns.create_topic(Name=name, **extra)["TopicArn"]
        if got != arn:
            raise DeployError(f"sns topic {name}: ArnMismatch: created {got}, the plan expected {arn}")
        self._record("created", "sns topic", name)

    def _monitor(self, ep: EndpointPlan, monitor: MonitorSpec) -> None:
        want = {"AlarmName": monitor.name, **monitor.request}
        with aws("alarm", monitor.name):
            found = self.cw.describe_alarms(AlarmNames=[monitor.name])["MetricAlarms"]
            if found and subset(want, found[0]):
                self._record("unchanged", "alarm", monitor.name)
                return
            self.cw.put_metric_alarm(**want, Tags=self._tag_list(ep.name))
        self._record("updated" if found else "created", "alarm", monitor.name, monitor.request["MetricName"])

    def _model(self, ep: EndpointPlan) -> None:
        m = ep.model
        with aws("model", m.name):
            if _describe(self.sm.describe_model, ModelName=m.name) is not None:
                self._record("unchanged", "model", m.name)
                return
            extra: dict = {"EnableNetworkIsolation": True} if m.network_isolation else {}
            if m.vpc_config:
                extra["VpcConfig"] = m.vpc_config
            container: dict = {"Image": m.image, "Environment": m.environment}
            if m.model_data_source:
                container["ModelDataSource"] = m.model_data_source
            else:
                container["ModelDataUrl"] = m.model_data_url
            self.sm.create_model(ModelName=m.name, ExecutionRoleArn=m.execution_role_arn,
                                 PrimaryContainer=container, Tags=self._tag_list(ep.name), **extra)
        self._record("created", "model", m.name)

    def _config(self, ep: EndpointPlan) -> None:
        c = ep.config
        with aws("endpoint config", c.name):
            if _describe(self.sm.describe_endpoint_config, EndpointConfigName=c.name) is not None:
                self._record("unchanged", "endpoint config", c.name)
                return
            extra: dict = {"AsyncInferenceConfig": c.async_inference_config} if c.async_inference_config else {}
            if c.kms_key_id:
                extra["KmsKeyId"] = c.kms_key_id
            if c.data_capture_config:
                extra["DataCaptureConfig"] = c.data_capture_config
            self.sm.create_endpoint_config(EndpointConfigName=c.name, ProductionVariants=[c.production_variant],
                                           Tags=self._tag_list(ep.name), **extra)
        self._record("created", "endpoint config", c.name)

    def _endpoint(self, ep: EndpointPlan) -> None:
        with aws("endpoint", ep.name):
            current = _describe(self.sm.describe_endpoint, EndpointName=ep.name)
            if current and current["EndpointStatus"] in _ENDPOINT_BUSY - {"Deleting"}:
                self._wait_in_service(ep.name, tolerate_failure=True)
                current = _describe(self.sm.describe_endpoint, EndpointName=ep.name)
            recreated = False
            if current and current["EndpointStatus"] in ("Failed", "Deleting"):
                if current["EndpointStatus"] == "Failed":
                    self.log(f"  endpoint {ep.name} is Failed ({current.get('FailureReason', '?')}): recreating")
                    self.sm.delete_endpoint(EndpointName=ep.name)
                self.sm.get_waiter("endpoint_deleted").wait(EndpointName=ep.name, WaiterConfig=_WAIT)
                current, recreated = None, True
            deployment = {"DeploymentConfig": ep.deployment_config} if ep.deployment_config else {}
            if current is None:
                self.sm.create_endpoint(EndpointName=ep.name, EndpointConfigName=ep.config.name,
                                        Tags=self._tag_list(ep.name), **deployment)
                self._record("recreated" if recreated else "created", "endpoint", ep.name, ep.config.name)
                return
            if current["EndpointConfigName"] == ep.config.name:
                self._record("unchanged", "endpoint", ep.name, ep.config.name)
                return
            # Application Auto Scaling refuses an update that changes the instance type of a scaled variant:
            # release the variant first (up re-registers it below, once the endpoint is InService again).
            old = _describe(self.sm.describe_endpoint_config, EndpointConfigName=current["EndpointConfigName"])
            old_type = ((old or {}).get("ProductionVariants") or [{}])[0].get("InstanceType")
            if old_type != ep.config.production_variant["InstanceType"]:
                self._release_scaling(ep.scaling.resource_id)
            # blue/green with automatic rollback when one of the endpoint's alarms fires during the update
            self.sm.update_endpoint(EndpointName=ep.name, EndpointConfigName=ep.config.name, **deployment)
        self._record("updated", "endpoint", ep.name, f"{current['EndpointConfigName']} -> {ep.config.name}")

    def _wait_in_service(self, name: str, tolerate_failure: bool = False) -> None:
        with aws("endpoint", name):
            status = self.sm.describe_endpoint(EndpointName=name)["EndpointStatus"]
            if status == "InService":
                return
            self.log(f"  waiting for endpoint {name} ({status}) to be InService; this takes minutes ...")
            try:
                self.sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=_WAIT)
            except WaiterError:
                if not tolerate_failure:
                    raise

    def _targets(self, rid: str) -> list[dict]:
        return self.aas.describe_scalable_targets(ServiceNamespace=NAMESPACE, ResourceIds=[rid],
                                                  ScalableDimension=DIMENSION)["ScalableTargets"]

    def _policies(self, rid: str) -> dict[str, dict]:
        """The scaling policies of ``rid``, name -> description."""
        return {p["PolicyName"]: p for p in self.aas.describe_scaling_policies(
            ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION)["ScalingPolicies"]
            if p["ResourceId"] == rid}

    def _release_scaling(self, rid: str) -> tuple[list[str], bool]:
        """Delete ``rid``'s scaling policies and deregister its target; returns (policies deleted, target existed)."""
        policies = list(self._policies(rid))
        for name in policies:
            self.aas.delete_scaling_policy(PolicyName=name, ServiceNamespace=NAMESPACE, ResourceId=rid,
                                           ScalableDimension=DIMENSION)
        target = bool(self._targets(rid))
        if target:
            self.aas.deregister_scalable_target(ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION)
        return policies, target

    def _scaling(self, ep: EndpointPlan) -> dict[str, str]:
        """Register the scalable target and put its policies; returns policy name -> ARN."""
        sc = ep.scaling
        with aws("scalable target", sc.resource_id):
            targets = self._targets(sc.resource_id)
            if targets and (targets[0]["MinCapacity"], targets[0]["MaxCapacity"]) == (sc.min_capacity,
                                                                                      sc.max_capacity):
                self._record("unchanged", "scalable target", sc.resource_id)
            else:
                tags = {"Tags": {t["Key"]: t["Value"] for t in self._tag_list(ep.name)}} if not targets else {}
                self.aas.register_scalable_target(ServiceNamespace=NAMESPACE, ResourceId=sc.resource_id,
                                                  ScalableDimension=DIMENSION, MinCapacity=sc.min_capacity,
                                                  MaxCapacity=sc.max_capacity, **tags)
                self._record("updated" if targets else "created", "scalable target", sc.resource_id,
                             f"{sc.min_capacity}..{sc.max_capacity}")
            existing = self._policies(sc.resource_id)
        arns = {}
        for spec in sc.policies:
            arns[spec.name] = self._policy(sc.resource_id, spec, existing.get(spec.name))
        return arns

    def _policy(self, resource_id: str, spec: PolicySpec, current: dict | None) -> str:
        if current and current["PolicyType"] == spec.policy_type and subset(spec.configuration,
                                                                            current.get(spec.config_key)):
            self._record("unchanged", "scaling policy", spec.name)
            return current["PolicyARN"]
        with aws("scaling policy", spec.name):
            arn = self.aas.put_scaling_policy(
                PolicyName=spec.name, ServiceNamespace=NAMESPACE, ResourceId=resource_id,
                ScalableDimension=DIMENSION, PolicyType=spec.policy_type,
                **{spec.config_key: spec.configuration})["PolicyARN"]
        self._record("updated" if current else "created", "scaling policy", spec.name)
        return arn

    def _alarm(self, ep: EndpointPlan, policy_arn: str) -> None:
        alarm = ep.alarm
        want = {"AlarmName": alarm.name, "AlarmActions": [policy_arn], **alarm.request}
        with aws("alarm", alarm.name):
            found = self.cw.describe_alarms(AlarmNames=[alarm.name])["MetricAlarms"]
            if found and subset(want, found[0]):
                self._record("unchanged", "alarm", alarm.name)
                return
            self.cw.put_metric_alarm(**want, Tags=self._tag_list(ep.name))
        self._record("updated" if found else "created", "alarm", alarm.name)

    # --- status -----------------------------------------------------------------------------------------------

    def status(self, plan: Plan, compare: bool = True) -> list[dict]:
        """One row per planned resource.  ``compare=False`` (no --bucket / --role-arn, so the versioned names are
        unknown): the artifact, models and configs are not looked up, and an endpoint shows the config it serves."""
        rows: list[dict] = []

        def row(kind: str, name: str, state: str, detail: str = "") -> None:
            rows.append({"kind": kind, "name": name, "state": state, "detail": detail})

        if compare:
            with aws("artifact", plan.artifact_url):
                head = _describe(self.s3.head_object, Bucket=plan.bucket, Key=plan.artifact_key)
            row("artifact", plan.artifact_url, "exists" if head else "missing")
        for name, arn in plan.topics.items():
            with aws("sns topic", name):
                row("sns topic", name, "exists" if _describe(self.sns.get_topic_attributes, TopicArn=arn)
                    else "missing")
        for ep in plan.endpoints:
            with aws("endpoint", ep.name):
                if compare:
                    model = _describe(self.sm.describe_model, ModelName=ep.model.name)
                    config = _describe(self.sm.describe_endpoint_config, EndpointConfigName=ep.config.name)
                endpoint = _describe(self.sm.describe_endpoint, EndpointName=ep.name)
            if compare:
                row("model", ep.model.name, "exists" if model else "missing")
                row("endpoint config", ep.config.name, "exists" if config else "missing")
            if endpoint is None:
                row("endpoint", ep.name, "missing")
            else:
                cur = endpoint["EndpointConfigName"]
                if not compare:
                    state, detail = endpoint["EndpointStatus"], f"serving {cur}"
                elif cur == ep.config.name:
                    state, detail = endpoint["EndpointStatus"], cur
                else:
                    state, detail = "outdated", f"serving {cur}, planned {ep.config.name}"
                if endpoint.get("FailureReason"):
                    detail += f"; {endpoint['FailureReason']}"
                variants = endpoint.get("ProductionVariants") or [{}]
                if "CurrentInstanceCount" in variants[0]:
                    detail += f"; {variants[0]['CurrentInstanceCount']} instance(s)"
                row("endpoint", ep.name, state, detail)
            rid = ep.scaling.resource_id
            with aws("scalable target", rid):
                targets = self._targets(rid)
                policies = self._policies(rid)
            if targets:
                t = targets[0]
                ok = (t["MinCapacity"], t["MaxCapacity"]) == (ep.scaling.min_capacity, ep.scaling.max_capacity)
                row("scalable target", rid, "exists" if ok else "differs", f"{t['MinCapacity']}..{t['MaxCapacity']}")
            else:
                row("scalable target", rid, "missing")
            for spec in ep.scaling.policies:
                p = policies.get(spec.name)
                state = "missing" if p is None else (
                    "exists" if subset(spec.configuration, p.get(spec.config_key)) else "differs")
                row("scaling policy", spec.name, state)
            alarms = ([ep.alarm.name] if ep.alarm else []) + [m.name for m in ep.monitors]
            if alarms:
                with aws("alarm", alarms[0]):
                    found = {a["AlarmName"]: a for a in self.cw.describe_alarms(AlarmNames=alarms)["MetricAlarms"]}
                for name in alarms:
                    row("alarm", name, found[name].get("StateValue", "exists") if name in found else "missing")
        if compare and plan.lifecycle_rules:
            with aws("s3 lifecycle", f"s3://{plan.bucket}"):
                have = {r.get("ID"): r for r in self._lifecycle_rules(plan.bucket)}
            for rule in plan.lifecycle_rules:
                state = "missing" if rule["ID"] not in have else ("exists" if subset(rule, have[rule["ID"]])
                                                                  else "differs")
                row("s3 lifecycle", f"s3://{plan.bucket}/{rule['Filter']['Prefix']}", state)
        return rows

    # --- down -------------------------------------------------------------------------------------------------

    def down(self, names: Names, topic_arns: dict[str, str], bucket: str | None, purge_s3: bool) -> list[Change]:
        self.changes = []
        with aws("alarm", names.alarm):
            if self.cw.describe_alarms(AlarmNames=[names.alarm])["MetricAlarms"]:
                self.cw.delete_alarms(AlarmNames=[names.alarm])
                self._record("deleted", "alarm", names.alarm)
            else:
                self._record("absent", "alarm", names.alarm)
        monitors = names.monitor_alarms()
        with aws("alarm", f"{names.prefix} monitoring alarms"):
            present = [a["AlarmName"] for a in self.cw.describe_alarms(AlarmNames=monitors)["MetricAlarms"]]
            if present:
                self.cw.delete_alarms(AlarmNames=present)
        for name in present:
            self._record("deleted", "alarm", name)
        for endpoint in names.endpoints.values():
            rid = resource_id(endpoint)
            with aws("scalable target", rid):
                policies, target = self._release_scaling(rid)
            for name in policies:
                self._record("deleted", "scaling policy", name)
            self._record("deleted" if target else "absent", "scalable target", rid)
        for endpoint in names.endpoints.values():
            with aws("endpoint", endpoint):
                if _describe(self.sm.describe_endpoint, EndpointName=endpoint) is not None:
                    self.sm.delete_endpoint(EndpointName=endpoint)
                    self._record("deleted", "endpoint", endpoint)
                else:
                    self._record("absent", "endpoint", endpoint)
        for endpoint in names.endpoints.values():
            versions = names.versions(endpoint)
            with aws("endpoint config", f"{endpoint}-*"):
                for page in self.sm.get_paginator("list_endpoint_configs").paginate(NameContains=endpoint):
                    for c in page["EndpointConfigs"]:
                        if versions.match(c["EndpointConfigName"]):
                            self.sm.delete_endpoint_config(EndpointConfigName=c["EndpointConfigName"])
                            self._record("deleted", "endpoint config", c["EndpointConfigName"])
            with aws("model", f"{endpoint}-*"):
                for page in self.sm.get_paginator("list_models").paginate(NameContains=endpoint):
                    for m in page["Models"]:
                        if versions.match(m["ModelName"]):
                            self.sm.delete_model(ModelName=m["ModelName"])
                            self._record("deleted", "model", m["ModelName"])
        for name, arn in topic_arns.items():
            with aws("sns topic", name):
                if _describe(self.sns.get_topic_attributes, TopicArn=arn) is not None:
                    self.sns.delete_topic(TopicArn=arn)
                    self._record("deleted", "sns topic", name)
                else:
                    self._record("absent", "sns topic", name)
        if bucket:
            self._drop_lifecycle(bucket, set(names.lifecycle_rule_ids()))
        if purge_s3 and bucket:
            self._purge(bucket, names.s3_prefix)
        return self.changes

    def _drop_lifecycle(self, bucket: str, ours: set[str]) -> None:
        """Remove our expiry rules from the bucket's lifecycle configuration; other rules stay."""
        with aws("s3 lifecycle", f"s3://{bucket}"):
            current = self._lifecycle_rules(bucket)
            others = [r for r in current if r.get("ID") not in ours]
            if len(others) == len(current):
                self._record("absent", "s3 lifecycle", f"s3://{bucket}")
                return
            if others:
                self.s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": others})
            else:
                self.s3.delete_bucket_lifecycle(Bucket=bucket)
        self._record("deleted", "s3 lifecycle", f"s3://{bucket}", f"{len(current) - len(others)} rule(s)")

    def _purge(self, bucket: str, s3_prefix: str) -> None:
        """Delete ``s3://bucket/<prefix>/`` except ``<prefix>/training/`` (training outputs are kept)."""
        keep = f"{s3_prefix}/training/"
        with aws("s3 objects", f"s3://{bucket}/{s3_prefix}/"):
            keys = [o["Key"] for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{s3_prefix}/") for o in page.get("Contents", [])
                if not o["Key"].startswith(keep)]
            for i in range(0, len(keys), 1000):
                self.s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                              "Quiet": True})
        self._record("deleted" if keys else "absent", "s3 objects", f"s3://{bucket}/{s3_prefix}/",
                     f"{len(keys)} object(s); {keep} kept")

    # --- train ------------------------------------------------------------------------------------------------

    def train(self, jobs: list[dict]) -> list[Change]:
        for job in jobs:
            with aws("training job", job["TrainingJobName"]):
                self.sm.create_training_job(**job)
            self._record("created", "training job", job["TrainingJobName"],
                         job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"])
        return self.changes


def changes_as_dicts(changes: list[Change]) -> list[dict]:
    return [asdict(c) for c in changes]
