"""``python -m deploy``: the pure plan, and up/status/down/train against moto's server with the real boto3 client.

One moto server (``tests.conftest.moto_server``) per module on a free loopback port; every test resets its state and
points boto3 at it through ``AWS_ENDPOINT_URL`` (set with monkeypatch, so nothing leaks).  Moto has no ``UpdateEndpoint``: the update
path is checked up to that call (see ``test_changed_config_creates_a_new_version``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import boto3
import pytest

from deploy import package
from deploy.__main__ import main
from deploy.aws import subset
from deploy.plan import PlanError, Settings, TrainSettings, build_plan, build_training_jobs, render_plan

REGION = "us-east-1"
BUCKET = "restyle-artifacts-bkt"
ROLE = "arn:aws:iam::123456789012:role/restyle-sagemaker"
ITYPE = "ml.g4dn.xlarge"  # moto's instance type list predates ml.g5
BASE = ["--bucket", BUCKET, "--role-arn", ROLE, "--instance-type", ITYPE]
SECRET = "testing"


@pytest.fixture
def aws(moto_url, monkeypatch):
    """Clean moto state, env pointing boto3 at it; returns a dict of clients."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()
    for var in ("AWS_PROFILE", "AWS_REGION", "AWS_SESSION_TOKEN", "RESTYLE_BUCKET", "RESTYLE_ROLE_ARN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    clients = {name: boto3.client(name, region_name=REGION)
               for name in ("sagemaker", "application-autoscaling", "cloudwatch", "sns", "s3")}
    clients["s3"].create_bucket(Bucket=BUCKET)
    return clients


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert SECRET not in out + err  # never print credentials
    return rc, out, err


def up_json(capsys, *extra: str) -> dict:
    rc, out, err = run(capsys, "up", *BASE, "--json", *extra)
    assert rc == 0, err
    return json.loads(out)


def snapshot(c: dict) -> dict:
    """Everything `up` manages, as described by AWS."""
    sm, aas = c["sagemaker"], c["application-autoscaling"]
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    return {
        "models": sorted((m["ModelName"], str(m["CreationTime"])) for m in sm.list_models()["Models"]),
        "configs": sorted((e["EndpointConfigName"], str(e["CreationTime"]))
                          for e in sm.list_endpoint_configs()["EndpointConfigs"]),
        "endpoints": sorted((e["EndpointName"], sm.describe_endpoint(EndpointName=e["EndpointName"])
                             ["EndpointConfigName"], str(e["CreationTime"])) for e in sm.list_endpoints()["Endpoints"]),
        "targets": sorted((t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets),
        "policies": sorted((p["PolicyName"], p["PolicyARN"]) for p in aas.describe_scaling_policies(
            ServiceNamespace="sagemaker")["ScalingPolicies"]),
        "alarms": sorted((a["AlarmName"], tuple(a["AlarmActions"]), str(a["AlarmConfigurationUpdatedTimestamp"]))
                         for a in c["cloudwatch"].describe_alarms()["MetricAlarms"]),
        "topics": sorted(t["TopicArn"] for t in c["sns"].list_topics()["Topics"]),
        "objects": sorted((o["Key"], o["ETag"], str(o["LastModified"]))
                          for o in c["s3"].list_objects_v2(Bucket=BUCKET).get("Contents", [])),
    }


def empty(snap: dict, keep_objects: bool = False) -> bool:
    return all(not v for k, v in snap.items() if not (keep_objects and k == "objects"))


# --- 1. the plan, without AWS ------------------------------------------------------------------------------------


def settings(**kw) -> Settings:
    base = dict(region=REGION, bucket=BUCKET, role_arn=ROLE, account_id="123456789012")
    return Settings(**{**base, **kw})


def test_plan_is_pure_and_complete():
    images = {ITYPE: "img-gpu", "ml.m5.xlarge": "img-cpu"}
    s = settings(prefix="shop", instance_type=ITYPE, clipseg_instance_type="ml.m5.xlarge", lora="s3://b/lora/",
                 inpaint_model="s3://b/ft/model.tar.gz", min_instances=2, max_instances=5)
    plan = build_plan(s, artifact_sha256="ab" * 32, images=images)
    assert plan == build_plan(s, artifact_sha256="ab" * 32, images=images)  # deterministic
    eps = {e.key: e for e in plan.endpoints}
    assert [e.name for e in plan.endpoints] == ["shop-clipseg", "shop-inpaint", "shop-inpaint-async"]
    assert plan.artifact_url == f"s3://{BUCKET}/shop/model-{'ab' * 6}.tar.gz"
    for e in plan.endpoints:
        assert e.model.name.startswith(e.name + "-") and e.config.name.startswith(e.name + "-")
        assert e.model.model_data_url == plan.artifact_url
        assert e.model.environment["SAGEMAKER_PROGRAM"] == "inference.py"
        assert e.config.production_variant["ModelName"] == e.model.name
        assert e.scaling.resource_id == f"endpoint/{e.name}/variant/AllTraffic"
    # per-endpoint instance type and image, roles and model sources
    assert eps["clipseg"].config.production_variant["InstanceType"] == "ml.m5.xlarge"
    assert eps["clipseg"].model.image == "img-cpu" and eps["inpaint"].model.image == "img-gpu"
    assert eps["clipseg"].model.environment["RESTYLE_MODEL_ID"] == "CIDAS/clipseg-rd64-refined"
    assert "RESTYLE_LORA" not in eps["clipseg"].model.environment
    inp = eps["inpaint"].model.environment
    assert inp["RESTYLE_ROLE"] == "inpaint" and "RESTYLE_MODEL_ID" not in inp
    assert inp["RESTYLE_ARTIFACT_S3"] == "s3://b/ft/model.tar.gz" and inp["RESTYLE_LORA"] == "s3://b/lora/"
    looks = "ss27=s3://b/looks/ss27/,resort=s3://b/looks/resort/"  # several brand looks pass through as they are
    multi = build_plan(settings(instance_type=ITYPE, clipseg_instance_type="ml.m5.xlarge", lora=looks),
                       artifact_sha256="ab" * 32, images=images)
    assert {e.key: e for e in multi.endpoints}["inpaint"].model.environment["RESTYLE_LORA"] == looks
    # capacities: chat endpoints never below 1, async scales to zero
    assert (eps["clipseg"].scaling.min_capacity, eps["clipseg"].scaling.max_capacity) == (2, 5)
    assert eps["inpaint"].scaling.min_capacity == 2
    assert eps["async"].scaling.min_capacity == 0
    assert eps["clipseg"].config.production_variant["InitialInstanceCount"] == 2
    # only the async config is async, and it notifies the two topics
    assert eps["clipseg"].config.async_inference_config is None
    assert eps["inpaint"].config.async_inference_config is None
    out = eps["async"].config.async_inference_config["OutputConfig"]
    assert out["S3OutputPath"] == f"s3://{BUCKET}/shop/async-out/" and out["S3FailurePath"].startswith("s3://")
    assert out["NotificationConfig"] == {"SuccessTopic": "arn:aws:sns:us-east-1:123456789012:shop-async-success",
                                         "ErrorTopic": "arn:aws:sns:us-east-1:123456789012:shop-async-error"}
    assert list(plan.topics.values())[:2] == list(out["NotificationConfig"].values())
    assert list(plan.topics)[2] == plan.alarm_topic == "shop-alarms"
    # scaling policies
    rt = eps["inpaint"].scaling.policies
    assert [(p.policy_type, p.configuration["PredefinedMetricSpecification"]["PredefinedMetricType"]) for p in rt] \
        == [("TargetTrackingScaling", "SageMakerVariantInvocationsPerInstance")]
    backlog, wake = eps["async"].scaling.policies
    metric = backlog.configuration["CustomizedMetricSpecification"]
    assert (metric["MetricName"], metric["Namespace"]) == ("ApproximateBacklogSizePerInstance", "AWS/SageMaker")
    assert metric["Dimensions"] == [{"Name": "EndpointName", "Value": "shop-inpaint-async"}]
    assert wake.policy_type == "StepScaling" and wake.configuration["StepAdjustments"][0]["ScalingAdjustment"] == 1
    assert eps["async"].alarm.policy_name == wake.name
    assert eps["async"].alarm.request["MetricName"] == "HasBacklogWithoutCapacity"
    assert "shop-inpaint-async" in render_plan(plan)
    json.dumps(plan.to_dict())


def test_plan_versions_change_only_with_content():
    images = {ITYPE: "img", "ml.g4dn.2xlarge": "img"}
    a = build_plan(settings(instance_type=ITYPE), artifact_sha256="a" * 64, images=images)
    b = build_plan(settings(instance_type=ITYPE, inpaint_instance_type="ml.g4dn.2xlarge"),
                   artifact_sha256="a" * 64, images=images)
    c = build_plan(settings(instance_type=ITYPE), artifact_sha256="b" * 64, images=images)
    name = lambda p, k, what: getattr(next(e for e in p.endpoints if e.key == k), what).name  # noqa: E731
    assert name(a, "clipseg", "config") == name(b, "clipseg", "config")
    assert name(a, "inpaint", "model") == name(b, "inpaint", "model")
    assert name(a, "inpaint", "config") != name(b, "inpaint", "config")  # new instance type -> new config
    assert all(name(a, k, "model") != name(c, k, "model") for k in ("clipseg", "inpaint", "async"))  # new tarball
    assert all(name(a, k, "config") != name(c, k, "config") for k in ("clipseg", "inpaint", "async"))


@pytest.mark.parametrize("kw", [{"min_instances": 0}, {"max_instances": 0}, {"prefix": "bad_prefix"},
                                {"clipseg_endpoint": "x" * 60}, {"async_endpoint": "restyle-clipseg"},
                                {"lora": "none=s3://b/l/"}, {"lora": "ss27=s3://b/a,ss27=s3://b/b"},
                                # S3 bucket names
                                {"bucket": "My_Bucket!!"}, {"bucket": "s3://mybucket"}, {"bucket": "ab"},
                                {"bucket": "-bucket"}, {"bucket": "bucket."}, {"bucket": "a..b"},
                                {"bucket": "x" * 64}, {"bucket": "192.168.5.4"}, {"bucket": ""},
                                # IAM role ARNs
                                {"role_arn": "not-an-arn"}, {"role_arn": "arn:aws:iam::12345:role/x"},
                                {"role_arn": "arn:aws:iam::123456789012:user/x"}, {"role_arn": ""},
                                # finite positive targets
                                {"clipseg_target_invocations": float("nan")},
                                {"clipseg_target_invocations": float("inf")},
                                {"inpaint_target_invocations": float("nan")},
                                {"inpaint_target_invocations": float("-inf")},
                                {"async_target_backlog": float("inf")}, {"async_target_backlog": 0.0},
                                # s3:// values name a bucket
                                {"clipseg_model": "s3://"}, {"inpaint_model": "s3:///key"}, {"lora": "s3://"},
                                {"lora": "ss27=s3://,resort=s3://b/r/"}, {"lora": ","},
                                # empty strings do not silently mean "the default"
                                {"clipseg_endpoint": ""}, {"inpaint_endpoint": " "}, {"async_endpoint": ""},
                                {"instance_type": ""}, {"clipseg_instance_type": ""},
                                {"inpaint_instance_type": ""}, {"async_instance_type": ""}, {"image_uri": ""},
                                {"region": "mars-1"}, {"region": ""}])
def test_plan_rejects_bad_settings(kw):
    with pytest.raises(PlanError):
        build_plan(settings(**kw), artifact_sha256="a" * 64, images={"ml.g5.xlarge": "img"})


@pytest.mark.parametrize("kw, says", [
    ({"tags": (("aws:x", "1"),)}, "reserved"), ({"tags": (("restyle:endpoint", "x"),)}, "reserved"),
    ({"tags": (("a", "1"), ("a", "2"))}, "given twice"), ({"tags": (("", "1"),)}, "keys are 1-128"),
    ({"tags": (("k", "bad\nvalue"),)}, "keys are 1-128"),
    ({"tags": tuple((f"k{i}", "v") for i in range(46))}, "at most 45 tags"),
    ({"vpc_subnets": ("subnet-0123abcd",)}, "go together"), ({"vpc_security_groups": ("sg-0123abcd",)}, "go together"),
    ({"vpc_subnets": ("sub-1",), "vpc_security_groups": ("sg-0123abcd",)}, "is not a subnet id"),
    ({"vpc_subnets": ("subnet-0123abcd",), "vpc_security_groups": ("0123",)}, "is not a security group id"),
    ({"kms_key": "my key"}, "is not a KMS key"), ({"data_capture": 150.0}, "0-100"),
    ({"data_capture": float("nan")}, "0-100"), ({"s3_retention_days": 0}, "1-3650"),
    ({"inpaint_latency_alarm_s": 0.0}, "--inpaint-latency-alarm-s must be"),
    ({"gpu_memory_alarm": float("inf")}, "--gpu-memory-alarm must be"),
    ({"network_isolation": True}, "would fetch CIDAS/clipseg-rd64-refined when it starts"),
    ({"network_isolation": True, "clipseg_model": "s3://b/c.tar.gz", "inpaint_model": "s3://b/i.tar.gz"},
     "would fetch s3://b/c.tar.gz"),
])
def test_hardening_options_are_checked(kw, says):
    with pytest.raises(PlanError, match=re.escape(says)):
        build_plan(settings(**kw), artifact_sha256="a" * 64, images={"ml.g5.xlarge": "img"})


def test_hub_offline_when_nothing_comes_from_the_hub():
    images = {"ml.g5.xlarge": "img"}
    plan = build_plan(settings(clipseg_model="s3://b/c.tar.gz", inpaint_model="s3://b/i.tar.gz",
                               lora="ss27=s3://b/l/"), artifact_sha256="a" * 64, images=images)
    assert all(e.model.environment["HF_HUB_OFFLINE"] == "1" for e in plan.endpoints)
    plan = build_plan(settings(clipseg_model="s3://b/c.tar.gz", inpaint_model="s3://b/i.tar.gz",
                               lora="ss27=some/hub-lora"), artifact_sha256="a" * 64, images=images)
    env = {e.key: e.model.environment for e in plan.endpoints}
    assert env["clipseg"]["HF_HUB_OFFLINE"] == "1" and "HF_HUB_OFFLINE" not in env["inpaint"]
    # the flags that change a model or config give new versions; the plan text shows them
    plain = build_plan(settings(), artifact_sha256="a" * 64, images=images)
    hard = build_plan(settings(kms_key="alias/k", vpc_subnets=("subnet-0123abcd",),
                               vpc_security_groups=("sg-0123abcd",), data_capture=10.0, tags=(("t", "1"),)),
                      artifact_sha256="a" * 64, images=images)
    for a, b in zip(plain.endpoints, hard.endpoints, strict=True):
        assert a.model.name != b.model.name and a.config.name != b.config.name
    assert all(e.config.kms_key_id is None for e in hard.endpoints)  # ml.g5: local NVMe, no KmsKeyId allowed
    ebs = build_plan(settings(kms_key="alias/k", instance_type="ml.m5.xlarge"), artifact_sha256="a" * 64,
                     images={"ml.m5.xlarge": "img"})
    assert all(e.config.kms_key_id == "alias/k" for e in ebs.endpoints)
    text = render_plan(hard)
    assert "not on ml.g5.xlarge volumes: local NVMe" in text
    assert "kms key   alias/k" in text and "tags      t=1" in text and "capture  10 %" in text
    assert "vpc subnets subnet-0123abcd" in text and "rolled back when an alarm above fires" in text


def test_plan_error_messages_say_what_to_do():
    images = {"ml.g5.xlarge": "img"}
    with pytest.raises(PlanError, match="bare bucket name"):
        build_plan(settings(bucket="s3://mybucket"), artifact_sha256="a" * 64, images=images)
    with pytest.raises(PlanError, match="--role-arn 'not-an-arn' is not an IAM role ARN"):
        build_plan(settings(role_arn="not-an-arn"), artifact_sha256="a" * 64, images=images)
    with pytest.raises(PlanError, match="--clipseg-target-invocations must be a finite number > 0, got nan"):
        build_plan(settings(clipseg_target_invocations=float("nan")), artifact_sha256="a" * 64, images=images)
    with pytest.raises(PlanError, match="--clipseg-model 's3://' names no bucket"):
        build_plan(settings(clipseg_model="s3://"), artifact_sha256="a" * 64, images=images)


def test_plan_accepts_valid_names():
    s = settings(bucket="my.bucket-1", role_arn="arn:aws-us-gov:iam::123456789012:role/service/restyle_x+y=z",
                 region="us-gov-west-1", partition="aws-us-gov", clipseg_model="s3://b", lora="s3://b/x/")
    plan = build_plan(s, artifact_sha256="a" * 64, images={"ml.g5.xlarge": "img"})
    assert plan.artifact_url.startswith("s3://my.bucket-1/restyle/")
    build_plan(settings(bucket="<bucket>", role_arn="<role-arn>"), artifact_sha256="a" * 64,
               images={"ml.g5.xlarge": "img"})  # the --dry-run placeholders


@pytest.mark.parametrize("kw", [{"lora_data": "s3://"}, {"clipseg_data": "s3:///x"}, {"lora_data": "/local/dir"},
                                {"max_runtime": -5}, {"max_runtime": 0}, {"volume_size": 0},
                                {"hyperparameters": {"sagemaker_program": "evil.py"}},
                                {"lora_hyperparameters": {"sagemaker_submit_directory": "s3://evil/x"}},
                                {"clipseg_hyperparameters": {"SageMaker_region": "x"}},
                                {"bucket": "My_Bucket!!"}, {"bucket": "s3://mybucket"}, {"role_arn": "not-an-arn"},
                                {"region": "mars-1"}, {"train_instance_type": ""}, {"prefix": "p" * 40}])
def test_training_rejects_bad_settings(kw):
    s = TrainSettings(**{"region": REGION, "bucket": BUCKET, "role_arn": ROLE, "lora_data": "s3://d/lora/", **kw})
    with pytest.raises(PlanError):
        build_training_jobs(s, sourcedir_sha256="c" * 64, image="img", timestamp="20250101-000000-000")


@pytest.fixture
def offline(monkeypatch):
    """No AWS config, credentials or region from the host, and a dead endpoint: nothing can reach AWS."""
    for var in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN", "RESTYLE_BUCKET", "RESTYLE_ROLE_ARN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")


@pytest.mark.parametrize("argv, message", [
    (["up", "--dry-run", "--region", "mars-1"], "unknown AWS region 'mars-1'"),
    (["down", "--dry-run", "--region", "mars-1"], "unknown AWS region 'mars-1'"),
    (["train", "--dry-run", "--region", "mars-1", "--lora-data", "s3://d/l"], "unknown AWS region 'mars-1'"),
    (["up", "--region", "mars-1", *BASE], "unknown AWS region 'mars-1'"),
    (["up", "--dry-run", "--region", ""], "--region must not be empty"),
    (["up", "--dry-run", "--bucket", "My_Bucket!!"], "is not an S3 bucket name"),
    (["up", "--dry-run", "--bucket", "s3://mybucket"], "bare bucket name"),
    (["down", "--dry-run", "--bucket", "s3://mybucket"], "bare bucket name"),
    (["train", "--dry-run", "--bucket", "s3://mybucket", "--lora-data", "s3://d/l"], "bare bucket name"),
    (["up", "--dry-run", "--role-arn", "not-an-arn"], "not an IAM role ARN"),
    (["up", "--dry-run", "--clipseg-target-invocations", "nan"], "finite number > 0"),
    (["up", "--dry-run", "--inpaint-target-invocations", "inf"], "finite number > 0"),
    (["up", "--dry-run", "--async-target-backlog", "nan"], "finite number > 0"),
    (["up", "--dry-run", "--clipseg-model", "s3://"], "names no bucket"),
    (["train", "--dry-run", "--lora-data", "s3://"], "names no bucket"),
    (["train", "--dry-run", "--lora-data", "s3://d/l", "--max-runtime", "-5"], "--max-runtime must be a positive"),
    (["train", "--dry-run", "--lora-data", "s3://d/l", "--volume-size", "0"], "--volume-size must be a positive"),
    (["train", "--dry-run", "--lora-data", "s3://d/l", "--hp", "sagemaker_program=evil.py"], "sagemaker_*"),
    (["train", "--dry-run", "--lora-data", "s3://d/l", "--lora-hp", "sagemaker_job_name=x"], "sagemaker_*"),
    (["train", "--dry-run", "--lora-data", "s3://d/l", "--train-image-uri", ""], "must not be empty"),
    (["up", "--dry-run", "--clipseg-endpoint", ""], "--clipseg-endpoint must not be empty"),
    (["up", "--dry-run", "--clipseg-instance-type", ""], "--clipseg-instance-type must not be empty"),
    (["down", "--dry-run", "--clipseg-endpoint", ""], "--clipseg-endpoint must not be empty"),
    (["down", "--dry-run", "--purge-s3"], "--purge-s3 needs --bucket"),
    # without --dry-run too, before any AWS call (no credentials and a dead endpoint here)
    (["up", "--region", REGION, *BASE[2:], "--bucket", "s3://mybucket", "--role-arn", ROLE], "bare bucket name"),
    (["status", "--region", REGION, "--bucket", BUCKET, "--role-arn", "not-an-arn"], "not an IAM role ARN"),
    (["down", "--region", REGION, "--bucket", "My_Bucket!!"], "is not an S3 bucket name"),
    (["train", "--region", REGION, "--bucket", BUCKET, "--role-arn", ROLE, "--lora-data", "s3://d/l",
      "--hp", "sagemaker_program=evil.py"], "sagemaker_*"),
])
def test_cli_rejects_bad_flags_before_aws(offline, capsys, argv, message):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_cli_valid_region_works_offline(offline, capsys):
    rc, out, err = run(capsys, "down", "--dry-run", "--region", "eu-west-1", "--purge-s3", "--bucket", BUCKET)
    assert rc == 0, err
    assert "arn:aws:sns:eu-west-1:" in out and f"s3://{BUCKET}/restyle/" in out and "None" not in out


def test_packed_pins_are_the_tested_versions():
    """The tarball's requirements are exactly what this test environment runs: the suite tests the pins together
    (upgrade the environment, and this says which pins to move)."""
    from importlib.metadata import version

    drift = {name: (pinned, version(name)) for name, pinned in package.PINS.items() if version(name) != pinned}
    assert not drift, f"package.PINS differs from the tested environment (pinned, installed): {drift}"
    # and `make setup` installs that environment with exactly these pins as constraints (a newer release on the
    # index must not change what the suite tests)
    constraints = {line.split("==")[0]: line.split("==")[1]
                   for line in (Path(__file__).parents[1] / "constraints.txt").read_text().splitlines()
                   if line and not line.startswith("#")}
    assert constraints == {**package.PINS, **package.TRAINING_PINS}


def test_sitecustomize_gives_the_toolkit_is_tf_available(tmp_path):
    """The image's toolkit imports transformers.file_utils.is_tf_available, gone in transformers 5: the packed
    sitecustomize adds it in a fresh interpreter whose path holds code/ (as the model server's workers' does)."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "sitecustomize.py").write_text(package.SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(code)
    probe = "from transformers.file_utils import is_tf_available, is_torch_available; print(is_tf_available())"
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr[-2000:]


def test_aws_region_is_honoured_and_a_dry_run_says_where_its_region_came_from(offline, capsys, monkeypatch):
    rc, out, err = run(capsys, "up", "--dry-run")
    assert rc == 0, err
    assert "plan: region us-east-1" in out and "no region is set" in out and "plans us-east-1" in out
    monkeypatch.setenv("AWS_REGION", "eu-west-1")  # botocore itself reads only AWS_DEFAULT_REGION
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    rc, out, err = run(capsys, "up", "--dry-run")
    assert rc == 0, err
    assert "plan: region eu-west-1" in out and "(from AWS_REGION)" in out
    monkeypatch.delenv("AWS_REGION")
    rc, out, _ = run(capsys, "down", "--dry-run")
    assert rc == 0 and "arn:aws:sns:us-west-2:" in out and "(from AWS_DEFAULT_REGION)" in out
    rc, out, _ = run(capsys, "up", "--dry-run", "--region", "ap-south-1")
    assert rc == 0 and "plan: region ap-south-1" in out and "(from --region)" in out
    monkeypatch.setenv("AWS_REGION", "mars-1")
    rc, _, err = run(capsys, "up", "--dry-run")
    assert rc == 2 and "unknown AWS region 'mars-1' (from AWS_REGION)" in err


def test_training_jobs_plan():
    s = TrainSettings(region=REGION, bucket=BUCKET, role_arn=ROLE, lora_data="s3://d/lora/",
                      hyperparameters={"steps": "10"}, clipseg_hyperparameters={"lr": "1e-4"})
    (job,) = build_training_jobs(s, sourcedir_sha256="c" * 64, image="img", timestamp="20250101-000000-000")
    assert job["TrainingJobName"] == "restyle-lora-20250101-000000-000"
    assert json.loads(job["HyperParameters"]["sagemaker_program"]) == "model/train/lora_inpaint.py"
    assert json.loads(job["HyperParameters"]["steps"]) == "10" and "lr" not in job["HyperParameters"]
    with pytest.raises(PlanError):
        build_training_jobs(TrainSettings(region=REGION, bucket=BUCKET, role_arn=ROLE), sourcedir_sha256="c",
                            image="img", timestamp="t")


# --- 8. the tarball -----------------------------------------------------------------------------------------------


def test_model_tarball_is_deterministic_and_complete(tmp_path):
    a, b = package.model_tarball(), package.model_tarball()
    assert a.sha256 == b.sha256 and a.data == b.data
    names = a.names()
    assert names == sorted(names)
    assert {"code/inference.py", "code/requirements.txt", "code/model/handlers.py", "code/model/__init__.py"} \
        <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.startswith("code/model/train/") or
                not n.endswith((".py", ".txt"))]
    with tarfile.open(fileobj=io.BytesIO(a.data)) as tar:
        assert {m.mtime for m in tar.getmembers()} == {package.FIXED_MTIME}
        shim = tar.extractfile("code/inference.py").read().decode()
        reqs = tar.extractfile("code/requirements.txt").read().decode().split()
    assert "from model.handlers import transform_fn" in shim and "def model_fn" in shim
    assert "input_fn" not in shim  # the toolkit refuses transform_fn next to input_fn/predict_fn/output_fn
    assert {r.split("==")[0] for r in reqs} >= {"diffusers", "transformers", "peft", "accelerate", "safetensors",
                                               "pydantic", "Pillow", "scipy", "huggingface_hub", "tokenizers"}
    assert all("==" in r for r in reqs)  # every one pinned: no newest-on-the-day at scale-out
    assert "code/sitecustomize.py" in names
    assert not [r for r in reqs if r.startswith("torch")]
    # mtimes and caches in the source tree do not change the bytes
    copy = tmp_path / "repo"
    (copy / "model").mkdir(parents=True)
    for src in (package.REPO_ROOT / "model").rglob("*.py"):
        dst = copy / src.relative_to(package.REPO_ROOT)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
        os.utime(dst, (1e9, 1e9))
    (copy / "model" / "__pycache__").mkdir(exist_ok=True)
    (copy / "model" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    assert package.model_tarball(copy).sha256 == a.sha256
    src = package.sourcedir_tarball(copy).names()
    assert {"requirements.txt", "model/__init__.py"} <= set(src) and "code/inference.py" not in src


# --- 5. --dry-run ---------------------------------------------------------------------------------------------------


def test_dry_run_creates_nothing_and_calls_nothing(aws, capsys, monkeypatch):
    before = snapshot(aws)
    rc, out, _ = run(capsys, "up", *BASE, "--dry-run", "--json")
    assert rc == 0
    plan = json.loads(out)["plan"]
    assert [e["name"] for e in plan["endpoints"]] == ["restyle-clipseg", "restyle-inpaint", "restyle-inpaint-async"]
    assert run(capsys, "down", "--dry-run", "--purge-s3", "--bucket", BUCKET)[0] == 0
    assert run(capsys, "train", "--bucket", BUCKET, "--role-arn", ROLE, "--dry-run", "--lora-data", "s3://d/l", "--clipseg-data", "s3://d/c")[0] == 0
    assert snapshot(aws) == before
    assert aws["sagemaker"].list_training_jobs()["TrainingJobSummaries"] == []
    assert empty(before, keep_objects=True) and before["objects"] == []
    # no AWS call at all: with no credentials and a dead endpoint, dry runs still work (no bucket/role needed)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    rc, out, _ = run(capsys, "up", "--dry-run")
    assert rc == 0 and "restyle-inpaint-async" in out and "dry run" in out
    rc, out, _ = run(capsys, "down", "--dry-run", "--purge-s3", "--bucket", BUCKET)
    assert rc == 0 and "restyle-inpaint-async" in out and "dry run" in out
    rc, out, _ = run(capsys, "train", "--dry-run", "--lora-data", "s3://d/l")
    assert rc == 0 and "restyle-lora-" in out and "dry run" in out


def test_usage_errors_exit_2(aws, capsys):
    rc, _, err = run(capsys, "up", "--instance-type", ITYPE)
    assert rc == 2 and "--bucket" in err and "--role-arn" in err
    rc, _, err = run(capsys, "train", "--bucket", BUCKET, "--lora-data", "s3://d/l")
    assert rc == 2 and "--role-arn" in err
    rc, _, err = run(capsys, "up", *BASE, "--min-instances", "0")
    assert rc == 2 and "never scale to zero" in err
    assert snapshot(aws)["models"] == []


# --- 2, 3. up creates everything; a second up changes nothing --------------------------------------------------------


def test_up_creates_everything_then_is_unchanged(aws, capsys):
    report = up_json(capsys)
    assert not report["unchanged"] and report["counts"]["created"] > 0
    sm, aas = aws["sagemaker"], aws["application-autoscaling"]

    models = sm.list_models()["Models"]
    assert len(models) == 3
    for m in models:
        container = sm.describe_model(ModelName=m["ModelName"])["PrimaryContainer"]
        assert "huggingface-pytorch-inference" in container["Image"]  # from the sagemaker SDK
        assert container["ModelDataUrl"].startswith(f"s3://{BUCKET}/restyle/model-")
        assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
        assert container["Environment"]["RESTYLE_ROLE"] in ("clipseg", "inpaint")

    configs = [sm.describe_endpoint_config(EndpointConfigName=c["EndpointConfigName"])
               for c in sm.list_endpoint_configs()["EndpointConfigs"]]
    assert len(configs) == 3
    asyncs = [c for c in configs if c.get("AsyncInferenceConfig")]
    assert len(asyncs) == 1 and asyncs[0]["EndpointConfigName"].startswith("restyle-inpaint-async-")
    notify = asyncs[0]["AsyncInferenceConfig"]["OutputConfig"]["NotificationConfig"]
    topics = sorted(t["TopicArn"] for t in aws["sns"].list_topics()["Topics"])
    assert {t.rsplit(":", 1)[1] for t in topics} == {"restyle-async-success", "restyle-async-error", "restyle-alarms"}
    assert sorted(notify.values()) == [t for t in topics if "async" in t]
    assert asyncs[0]["AsyncInferenceConfig"]["ClientConfig"]["MaxConcurrentInvocationsPerInstance"] == 2

    endpoints = {e["EndpointName"]: sm.describe_endpoint(EndpointName=e["EndpointName"])
                 for e in sm.list_endpoints()["Endpoints"]}
    assert set(endpoints) == {"restyle-clipseg", "restyle-inpaint", "restyle-inpaint-async"}
    assert all(e["EndpointStatus"] == "InService" for e in endpoints.values())

    targets = {t["ResourceId"]: t for t in aas.describe_scalable_targets(ServiceNamespace="sagemaker")
               ["ScalableTargets"]}
    assert {k: (t["MinCapacity"], t["MaxCapacity"]) for k, t in targets.items()} == {
        "endpoint/restyle-clipseg/variant/AllTraffic": (2, 4),  # two instances: spread over AZs
        "endpoint/restyle-inpaint/variant/AllTraffic": (2, 4),
        "endpoint/restyle-inpaint-async/variant/AllTraffic": (0, 2)}
    policies = {p["PolicyName"]: p for p in aas.describe_scaling_policies(ServiceNamespace="sagemaker")
                ["ScalingPolicies"]}
    assert {k: p["PolicyType"] for k, p in policies.items()} == {
        "restyle-clipseg-invocations": "TargetTrackingScaling",
        "restyle-inpaint-invocations": "TargetTrackingScaling",
        "restyle-inpaint-async-backlog": "TargetTrackingScaling",
        "restyle-inpaint-async-wake-from-zero": "StepScaling"}
    custom = policies["restyle-inpaint-async-backlog"]["TargetTrackingScalingPolicyConfiguration"]
    assert custom["CustomizedMetricSpecification"]["MetricName"] == "ApproximateBacklogSizePerInstance"
    alarms = {a["AlarmName"]: a for a in aws["cloudwatch"].describe_alarms()["MetricAlarms"]}
    alarm = alarms.pop("restyle-inpaint-async-backlog-without-capacity")
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["AlarmActions"] == [policies["restyle-inpaint-async-wake-from-zero"]["PolicyARN"]]
    assert alarm["Dimensions"] == [{"Name": "EndpointName", "Value": "restyle-inpaint-async"}]
    # monitoring: 5xx and p90 latency on the chat endpoints, failures on the async one, GPU memory on GPU types;
    # every one notifies the alarm topic
    alarm_topic = next(t for t in topics if t.endswith(":restyle-alarms"))
    assert {n: a["MetricName"] for n, a in alarms.items()} == {
        "restyle-clipseg-5xx": "Invocation5XXErrors", "restyle-clipseg-model-latency": "ModelLatency",
        "restyle-clipseg-gpu-memory": "GPUMemoryUtilization",
        "restyle-inpaint-5xx": "Invocation5XXErrors", "restyle-inpaint-model-latency": "ModelLatency",
        "restyle-inpaint-gpu-memory": "GPUMemoryUtilization",
        "restyle-inpaint-async-failures": "InvocationFailures", "restyle-inpaint-async-gpu-memory": "GPUMemoryUtilization"}
    assert all(a["AlarmActions"] == [alarm_topic] for a in alarms.values())
    latency = alarms["restyle-inpaint-model-latency"]
    assert latency["ExtendedStatistic"] == "p90" and latency["Threshold"] == 45_000_000  # microseconds
    assert alarms["restyle-clipseg-model-latency"]["Threshold"] == 5_000_000
    assert alarms["restyle-inpaint-gpu-memory"]["Namespace"] == "/aws/sagemaker/Endpoints"
    assert {"Name": "VariantName", "Value": "AllTraffic"} in alarms["restyle-inpaint-5xx"]["Dimensions"]
    # async inputs, outputs, failures and data capture expire
    rules = {r["ID"]: r for r in aws["s3"].get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]}
    assert {r["Filter"]["Prefix"]: r["Expiration"]["Days"] for r in rules.values()} == {
        "restyle/async-in/": 7, "restyle/async-out/": 7, "restyle/async-failures/": 7, "restyle/data-capture/": 7}
    # nothing is fetched from the Hub here (the default models are Hub ids): HF_HUB_OFFLINE is set only when
    # nothing is
    assert all("HF_HUB_OFFLINE" not in sm.describe_model(ModelName=m["ModelName"])["PrimaryContainer"]["Environment"]
               for m in models)

    bundle = package.model_tarball()
    obj = aws["s3"].get_object(Bucket=BUCKET, Key=f"restyle/model-{bundle.sha12}.tar.gz")["Body"].read()
    assert obj == bundle.data

    # 3. a second up changes nothing, and says so
    before = snapshot(aws)
    again = up_json(capsys)
    assert again["unchanged"] is True and set(again["counts"]) == {"unchanged"}
    assert snapshot(aws) == before
    rc, out, _ = run(capsys, "up", *BASE)
    assert rc == 0 and "up: unchanged" in out
    assert snapshot(aws) == before


# --- 4. resumable ---------------------------------------------------------------------------------------------------


def test_up_resumes_and_recreates_only_what_is_missing(aws, capsys):
    up_json(capsys)
    sm = aws["sagemaker"]
    config = sm.describe_endpoint(EndpointName="restyle-inpaint")["EndpointConfigName"]
    sm.delete_endpoint_config(EndpointConfigName=config)
    sm.delete_endpoint(EndpointName="restyle-clipseg")
    aws["cloudwatch"].delete_alarms(AlarmNames=["restyle-inpaint-async-backlog-without-capacity"])

    rc, out, _ = run(capsys, "status", *BASE, "--json")
    rows = {(r["kind"], r["name"]): r["state"] for r in json.loads(out)["resources"]}
    assert rc == 0 and rows[("endpoint", "restyle-clipseg")] == "missing"
    assert rows[("endpoint config", config)] == "missing" and rows[("endpoint", "restyle-inpaint")] == "InService"
    assert rows[("alarm", "restyle-inpaint-async-backlog-without-capacity")] == "missing"

    before = snapshot(aws)
    report = up_json(capsys)
    created = {(c["kind"], c["name"]) for c in report["changes"] if c["action"] != "unchanged"}
    assert created == {("endpoint config", config), ("endpoint", "restyle-clipseg"),
                       ("alarm", "restyle-inpaint-async-backlog-without-capacity")}
    after = snapshot(aws)
    for key in ("models", "targets", "policies", "topics", "objects"):
        assert after[key] == before[key], key
    rc, out, _ = run(capsys, "status", *BASE, "--json")
    assert {r["state"] for r in json.loads(out)["resources"]} <= {"exists", "InService", "INSUFFICIENT_DATA", "OK"}


def test_status_and_down_need_only_what_they_use(aws, capsys):
    """status reads endpoints by name: no --bucket or --role-arn needed (with them it also compares versions)."""
    up_json(capsys)
    rc, out, err = run(capsys, "status", "--instance-type", ITYPE, "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["compared_with_plan"] is False
    rows = {(r["kind"], r["name"]): r for r in report["resources"]}
    assert rows[("endpoint", "restyle-inpaint")]["state"] == "InService"
    assert rows[("endpoint", "restyle-inpaint")]["detail"].startswith("serving restyle-inpaint-")
    assert not any(kind in ("model", "endpoint config", "artifact") for kind, _ in rows)
    rc, out, _ = run(capsys, "status", "--instance-type", ITYPE)
    assert rc == 0 and "not compared with the plan" in out
    rc, out, err = run(capsys, "down")  # no bucket, no role: deletes everything but the S3 objects
    assert rc == 0, err
    assert aws["sagemaker"].list_endpoints()["Endpoints"] == []


HARDENED = ["--tags", "team=styling", "--tags", "cost-center=42", "--kms-key", "alias/restyle",
            "--vpc-subnets", "subnet-0123abcd,subnet-4567ef01", "--vpc-security-groups", "sg-0a1b2c3d",
            "--data-capture", "5", "--s3-retention-days", "3"]


def test_up_with_hardening_options(aws, capsys):
    """--tags on every resource, --kms-key, VPC, data capture and retention reach AWS as asked."""
    # a rule of the bucket's owner that is not ours survives up and down
    aws["s3"].put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [
        {"ID": "theirs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30}}]})
    report = up_json(capsys, *HARDENED)
    assert report["counts"]["created"] > 0
    sm = aws["sagemaker"]
    want_tags = {"team": "styling", "cost-center": "42"}

    def tags(arn: str) -> dict:
        return {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}

    for m in sm.list_models()["Models"]:
        d = sm.describe_model(ModelName=m["ModelName"])
        assert d["VpcConfig"] == {"Subnets": ["subnet-0123abcd", "subnet-4567ef01"], "SecurityGroupIds": ["sg-0a1b2c3d"]}
        assert want_tags.items() <= tags(d["ModelArn"]).items()
    for c in sm.list_endpoint_configs()["EndpointConfigs"]:
        d = sm.describe_endpoint_config(EndpointConfigName=c["EndpointConfigName"])
        # ml.g4dn has local NVMe storage: SageMaker refuses a KmsKeyId for its volumes (the hardware encrypts it)
        assert "KmsKeyId" not in d and want_tags.items() <= tags(d["EndpointConfigArn"]).items()
        if d.get("AsyncInferenceConfig"):
            assert d["AsyncInferenceConfig"]["OutputConfig"]["KmsKeyId"] == "alias/restyle"
            assert not d.get("DataCaptureConfig")
        else:
            capture = d["DataCaptureConfig"]
            assert capture["InitialSamplingPercentage"] == 5 and capture["KmsKeyId"] == "alias/restyle"
            assert capture["DestinationS3Uri"] == f"s3://{BUCKET}/restyle/data-capture/"
    for e in sm.list_endpoints()["Endpoints"]:
        assert want_tags.items() <= tags(e["EndpointArn"]).items()
    sns = aws["sns"]
    for t in sns.list_topics()["Topics"]:
        assert sns.get_topic_attributes(TopicArn=t["TopicArn"])["Attributes"]["KmsMasterKeyId"] == "alias/restyle"
        assert want_tags.items() <= {x["Key"]: x["Value"] for x in sns.list_tags_for_resource(
            ResourceArn=t["TopicArn"])["Tags"]}.items()
    cw = aws["cloudwatch"]
    for a in cw.describe_alarms()["MetricAlarms"]:
        assert want_tags.items() <= {x["Key"]: x["Value"] for x in cw.list_tags_for_resource(
            ResourceARN=a["AlarmArn"])["Tags"]}.items()
    key = next(o["Key"] for o in aws["s3"].list_objects_v2(Bucket=BUCKET)["Contents"] if o["Key"].endswith(".tar.gz"))
    head = aws["s3"].head_object(Bucket=BUCKET, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert {t["Key"]: t["Value"] for t in aws["s3"].get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]} == want_tags
    rules = {r["ID"]: r for r in aws["s3"].get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]}
    assert "theirs" in rules and rules["restyle-restyle-async-in"]["Expiration"]["Days"] == 3
    # a second up with the same flags changes nothing
    assert up_json(capsys, *HARDENED)["unchanged"] is True
    # down removes our rules and keeps theirs
    rc, _, err = run(capsys, "down", "--bucket", BUCKET)
    assert rc == 0, err
    assert [r["ID"] for r in aws["s3"].get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]] == ["theirs"]
    assert aws["cloudwatch"].describe_alarms()["MetricAlarms"] == []


def test_updates_roll_back_on_the_endpoint_alarms(aws, capsys, monkeypatch):
    """A changed config is rolled out blue/green with automatic rollback on the endpoint's own alarms.  Moto has
    no UpdateEndpoint, so the request is read where boto3 sends it (a before-parameter-build hook on the real client)."""
    import boto3 as boto3_mod

    up_json(capsys)
    sent: list[dict] = []
    real_client = boto3_mod.Session.client

    def client(self, name, *a, **kw):
        c = real_client(self, name, *a, **kw)
        if name == "sagemaker":
            c.meta.events.register("before-parameter-build.sagemaker.UpdateEndpoint",
                                   lambda params, **_: sent.append(params))
        return c

    monkeypatch.setattr(boto3_mod.Session, "client", client)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    run(capsys, "up", *BASE, "--inpaint-instance-type", "ml.g4dn.2xlarge")
    assert sent and sent[0]["EndpointName"] == "restyle-inpaint"
    deployment = sent[0]["DeploymentConfig"]
    assert deployment["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"
    assert [a["AlarmName"] for a in deployment["AutoRollbackConfiguration"]["Alarms"]] == [
        "restyle-inpaint-5xx", "restyle-inpaint-model-latency", "restyle-inpaint-gpu-memory"]
    existing = {a["AlarmName"] for a in aws["cloudwatch"].describe_alarms()["MetricAlarms"]}
    assert {a["AlarmName"] for a in deployment["AutoRollbackConfiguration"]["Alarms"]} <= existing


def test_changed_config_creates_a_new_version(aws, capsys, monkeypatch):
    """A new instance type -> a new hashed endpoint config next to the old one, then UpdateEndpoint.

    Moto does not implement UpdateEndpoint (HTTP 500), so this also shows how an AWS failure is reported."""
    up_json(capsys)
    sm = aws["sagemaker"]
    old = sm.describe_endpoint(EndpointName="restyle-inpaint")["EndpointConfigName"]
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    rc, out, err = run(capsys, "up", *BASE, "--inpaint-instance-type", "ml.g4dn.2xlarge")
    configs = {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]}
    new = {c for c in configs if c.startswith("restyle-inpaint-") and not c.startswith("restyle-inpaint-async")}
    assert old in new and len(new) == 2  # the old version is untouched
    (created,) = new - {old}
    assert sm.describe_endpoint_config(EndpointConfigName=created)["ProductionVariants"][0]["InstanceType"] \
        == "ml.g4dn.2xlarge"
    assert f"created    endpoint config  {created}" in out
    if rc == 0:  # a moto that implements UpdateEndpoint
        assert sm.describe_endpoint(EndpointName="restyle-inpaint")["EndpointConfigName"] == created
    else:
        assert rc == 1 and err.startswith("error: endpoint restyle-inpaint: ") and err.count("\n") == 1


def test_aws_errors_are_one_line_exit_1(aws, capsys):
    rc, out, err = run(capsys, "up", "--bucket", "no-such-bucket-here", "--role-arn", ROLE, "--instance-type", ITYPE)
    assert rc == 1
    assert err.startswith("error: artifact s3://no-such-bucket-here/restyle/model-") and "NoSuchBucket" in err
    assert err.count("\n") == 1 and SECRET not in err


# --- 6. train ------------------------------------------------------------------------------------------------------


def test_train_launches_two_jobs(aws, capsys):
    rc, out, err = run(capsys, "train", "--bucket", BUCKET, "--role-arn", ROLE, "--json",
                       "--lora-data", f"s3://{BUCKET}/data/lora/", "--clipseg-data", f"s3://{BUCKET}/data/clipseg/",
                       "--hp", "epochs=3", "--lora-hp", "rank=8", "--clipseg-hp", "lr=0.0001")
    assert rc == 0, err
    sm = aws["sagemaker"]
    names = {j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]}
    assert names == set(json.loads(out)["jobs"]) and len(names) == 2
    jobs = {n.split("-")[1]: sm.describe_training_job(TrainingJobName=n) for n in names}
    assert set(jobs) == {"lora", "clipseg"}
    for kind, program, data, own, other in [("lora", "model/train/lora_inpaint.py", "lora", "rank", "lr"),
                                            ("clipseg", "model/train/clipseg.py", "clipseg", "lr", "rank")]:
        job = jobs[kind]
        hps = {k: json.loads(v) for k, v in job["HyperParameters"].items()}
        assert hps["sagemaker_program"] == program and hps["epochs"] == "3" and own in hps and other not in hps
        assert hps["sagemaker_submit_directory"].startswith(f"s3://{BUCKET}/restyle/training/code/sourcedir-")
        (channel,) = job["InputDataConfig"]
        assert channel["ChannelName"] == "train"
        assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/data/{data}/"
        assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/restyle/training/"
        assert job["ResourceConfig"]["InstanceType"] == "ml.g5.2xlarge"
        assert "huggingface-pytorch-training" in job["AlgorithmSpecification"]["TrainingImage"]
    key = json.loads(jobs["lora"]["HyperParameters"]["sagemaker_submit_directory"]).split(f"{BUCKET}/", 1)[1]
    body = aws["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert {"requirements.txt", "model/__init__.py"} <= set(tar.getnames())


# --- 7. down --------------------------------------------------------------------------------------------------------


def test_down_leaves_nothing_and_is_idempotent(aws, capsys):
    up_json(capsys)
    sm = aws["sagemaker"]
    # an older version of a config (as left by an update) and an unrelated model that must survive
    image = sm.describe_model(ModelName=sm.list_models()["Models"][0]["ModelName"])["PrimaryContainer"]["Image"]
    for name in ("restyle-clipseg-00000000", "restyle-clipseg-keepme"):
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": image})
    sm.create_endpoint_config(EndpointConfigName="restyle-clipseg-11111111", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "restyle-clipseg-00000000", "InstanceType": ITYPE,
         "InitialInstanceCount": 1}])

    rc, out, err = run(capsys, "down", "--json")
    assert rc == 0, err
    snap = snapshot(aws)
    assert snap["models"] == [("restyle-clipseg-keepme", snap["models"][0][1])]
    snap["models"] = []
    assert empty(snap, keep_objects=True) and snap["objects"]  # the tarball stays without --purge-s3
    assert aws["application-autoscaling"].describe_scaling_policies(ServiceNamespace="sagemaker")[
        "ScalingPolicies"] == []

    rc, out, _ = run(capsys, "down", "--purge-s3", "--bucket", BUCKET)
    assert rc == 0 and "s3 objects" in out
    assert aws["s3"].list_objects_v2(Bucket=BUCKET, Prefix="restyle/").get("Contents", []) == []
    rc, out, _ = run(capsys, "down", "--purge-s3", "--bucket", BUCKET)
    assert rc == 0 and "down: nothing to delete" in out


def test_subset_ignores_aws_defaults():
    assert subset({"a": 1, "b": [{"c": 0}]}, {"a": 1.0, "b": [{"c": 0.0, "d": 2}], "e": 3})
    assert not subset({"a": 1}, {"a": 2}) and not subset({"b": [1]}, {"b": [1, 2]})


# --- 9. the packed code serves requests with the tiny checkpoints ----------------------------------------------------

SERVE = r"""
import base64, io, json, os, sys
import inference, model
assert os.path.realpath(model.__file__).startswith(os.path.realpath(sys.argv[1])), model.__file__
request = json.loads(sys.stdin.read())
# the toolkit refuses transform_fn next to input_fn/predict_fn/output_fn: the shim exports only these two
assert not any(hasattr(inference, f) for f in ("input_fn", "predict_fn", "output_fn"))
loaded = inference.model_fn(sys.argv[1])
try:
    out = inference.transform_fn(loaded, json.dumps(request), "application/json", "application/json")
except Exception as exc:  # what the toolkit does with it: a 400 whose message is str(exc)
    out = json.dumps({"toolkit_400": str(exc)}).encode()
sys.stdout.write(out.decode())
"""


def _png_b64(img) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.slow
def test_packed_inference_serves_tiny_checkpoints(tiny_dir, tmp_path):
    from PIL import Image

    with tarfile.open(fileobj=io.BytesIO(package.model_tarball().data)) as tar:
        tar.extractall(tmp_path, filter="data")
    code = tmp_path / "code"
    photo = Image.new("RGB", (64, 64), (200, 60, 60))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 32, 48, 60))
    inpaint = {"image": _png_b64(photo), "mask": _png_b64(mask), "prompt": "a red skirt", "num_images": 1, "steps": 2}
    looks = ",".join(f"{n}={Path(tiny_dir) / 'looks' / n}" for n in ("studio", "resort"))
    cases = [("clipseg", {"image": _png_b64(photo), "prompts": ["skirt"]}, "masks", {}),
             ("inpaint", inpaint, "images", {}),
             ("inpaint", {**inpaint, "look": "resort"}, "images", {"RESTYLE_LORA": looks}),  # brand looks
             ("inpaint", {**inpaint, "look": "nope"}, "toolkit_400", {"RESTYLE_LORA": looks}),
             ("upscale", {"image": _png_b64(photo.resize((16, 16))), "steps": 2, "seed": 1}, "image", {})]
    for role, request, field, extra_env in cases:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTYLE_", "PYTHON"))}
        env.update(PYTHONPATH=str(code), RESTYLE_ROLE=role, RESTYLE_MODEL_ID=str(Path(tiny_dir) / role),
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra_env)
        proc = subprocess.run([sys.executable, "-c", SERVE, str(tmp_path)], input=json.dumps(request), env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        response = json.loads(proc.stdout)
        if field == "toolkit_400":  # our JSON error body is the exception's text
            err = json.loads(response[field])["error"]
            assert err["code"] == "unknown_look" and err["retryable"] is False, err
            continue
        if role == "upscale":  # the x4 upscaler: one picture, 4x the request's region
            assert (response["width"], response["height"], response["seed"]) == (64, 64, 1), response
            continue
        assert len(response[field]) == 1, response
        assert response.get("look") == request.get("look")


# --- weights staged in S3: endpoints that never reach the Hub ------------------------------------------------------

STAGED_SERVE = r"""
import json, os, sys
import inference
loaded = inference.model_fn(sys.argv[1])  # RESTYLE_ARTIFACT_S3 -> copied from (moto's) S3; the Hub is off
request = json.loads(sys.stdin.read())
sys.stdout.write(inference.transform_fn(loaded, json.dumps(request), "application/json", "application/json").decode())
"""


@pytest.mark.slow
def test_local_weights_are_staged_once_and_served_without_the_hub(aws, capsys, tiny_dir, tmp_path, moto_url):
    from PIL import Image

    clipseg = str(Path(tiny_dir) / "clipseg")
    rc, out, err = run(capsys, "up", *BASE, "--dry-run", "--clipseg-model", clipseg)
    assert rc == 0, err
    assert f"weights   {clipseg} -> s3://{BUCKET}/restyle/weights/clipseg-" in out and "HF_HUB_OFFLINE=1" in out
    assert aws["s3"].list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0  # a dry run uploads nothing

    report = up_json(capsys, "--clipseg-model", clipseg)
    (staged,) = [c for c in report["changes"] if c["kind"] == "weights"]
    assert staged["action"] == "created" and staged["name"].startswith(f"s3://{BUCKET}/restyle/weights/clipseg-")
    prefix = staged["name"].split(f"{BUCKET}/", 1)[1]
    keys = {o["Key"] for o in aws["s3"].list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
    assert f"{prefix}config.json" in keys
    sm = aws["sagemaker"]
    envs = {m["ModelName"]: sm.describe_model(ModelName=m["ModelName"])["PrimaryContainer"]["Environment"]
            for m in sm.list_models()["Models"]}
    (env,) = [e for e in envs.values() if e["RESTYLE_ROLE"] == "clipseg"]
    assert env["RESTYLE_ARTIFACT_S3"] == staged["name"] and env["HF_HUB_OFFLINE"] == "1"
    assert "RESTYLE_MODEL_ID" not in env
    again = up_json(capsys, "--clipseg-model", clipseg)
    assert again["unchanged"] is True  # same files, same digest: nothing uploaded again

    # the packed code starts from those S3 objects with the Hub switched off, and answers
    with tarfile.open(fileobj=io.BytesIO(package.model_tarball().data)) as tar:
        tar.extractall(tmp_path, filter="data")
    photo, buf = Image.new("RGB", (64, 64), (200, 60, 60)), io.BytesIO()
    photo.save(buf, "PNG")
    request = {"image": base64.b64encode(buf.getvalue()).decode(), "prompts": ["skirt"]}
    child = {k: v for k, v in os.environ.items() if not k.startswith(("RESTYLE_", "PYTHON"))}
    child.update(PYTHONPATH=str(tmp_path / "code"), RESTYLE_ROLE="clipseg", RESTYLE_ARTIFACT_S3=staged["name"],
                 HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TMPDIR=str(tmp_path), AWS_ENDPOINT_URL=moto_url)
    proc = subprocess.run([sys.executable, "-c", STAGED_SERVE, str(tmp_path)], input=json.dumps(request), env=child,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(json.loads(proc.stdout)["masks"]) == 1


def test_local_looks_are_staged_too(aws, capsys, tiny_dir):
    studio = str(Path(tiny_dir) / "looks" / "studio")
    report = up_json(capsys, "--lora", f"studio={studio},resort=s3://{BUCKET}/looks/resort/")
    (staged,) = [c for c in report["changes"] if c["kind"] == "weights"]
    assert staged["name"].startswith(f"s3://{BUCKET}/restyle/weights/look-studio-") and studio in staged["detail"]
    sm = aws["sagemaker"]
    envs = [sm.describe_model(ModelName=m["ModelName"])["PrimaryContainer"]["Environment"]
            for m in sm.list_models()["Models"]]
    loras = {e["RESTYLE_LORA"] for e in envs if "RESTYLE_LORA" in e}
    assert loras == {f"studio={staged['name']},resort=s3://{BUCKET}/looks/resort/"}  # the s3:// look as given


def test_staging_refuses_what_it_cannot_stage(offline, capsys, tmp_path):
    rc, _, err = run(capsys, "up", "--dry-run", "--inpaint-model", str(tmp_path / "missing"))
    assert rc == 2 and "--inpaint-model" in err and "no such folder" in err
    rc, _, err = run(capsys, "up", "--dry-run", "--clipseg-model", str(tmp_path))
    assert rc == 2 and "holds no files" in err
    rc, _, err = run(capsys, "up", "--dry-run", "--lora", f"ss27={tmp_path / 'nope'}")
    assert rc == 2 and err.startswith("error: --lora ") and "no such folder" in err
    rc, _, err = run(capsys, "up", "--dry-run", "--wheels", str(tmp_path / "nope"))
    assert rc == 2 and "--wheels" in err and "no such folder" in err
    rc, _, err = run(capsys, "up", "--dry-run", "--wheels", str(tmp_path))  # empty: names what is missing
    assert rc == 2 and "lacks the wheels of accelerate==1.15.0" in err and "python -m deploy wheels" in err
    rc, out, _ = run(capsys, "wheels", "--dest", str(tmp_path / "w"), "--dry-run")
    assert rc == 0 and "--python-version 3.12" in out and "transformers==5.24.0" in out and "torch" not in out


# --- 10. the packed model under the serving stack SageMaker really runs ------------------------------------------

def _free_port() -> int:
    from deploy.local import free_port

    return free_port()


@pytest.fixture(scope="module")
def toolkit(tiny_dir, tmp_path_factory):
    """``python -m deploy local``'s stack for both roles: the packed tarball under the Hugging Face toolkit and
    multi-model-server (Java) on loopback.  Skipped with the reason where Java or the toolkit is missing; a failure
    under CI=true."""
    from deploy import local

    where = os.environ.get("RESTYLE_TOOLKIT_DIR")
    why = local.missing_requirements(where)
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the toolkit stack cannot run: {why}")
        pytest.skip(f"the toolkit stack cannot run here: {why}")
    tarball = package.model_tarball().data
    looks = ",".join(f"{n}={Path(tiny_dir) / 'looks' / n}" for n in ("studio", "resort"))
    servers = {}
    try:
        for role in ("clipseg", "inpaint"):
            work = tmp_path_factory.mktemp(f"local-{role}")
            servers[role] = local.serve(tarball, role=role, port=_free_port(), workdir=work, toolkit=where,
                                        model_id=str(Path(tiny_dir) / role), lora=looks if role == "inpaint" else None,
                                        log_file=work / "server.log")
        for server in servers.values():
            local.wait_ready(server, timeout=300)
        yield {role: s.port for role, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()


def _invoke(port: int, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    import urllib.error

    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.slow
def test_toolkit_stack_serves_the_packed_model(toolkit):
    from tests.test_model_serve import inpaint_body, segment_body

    for port in toolkit.values():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=30) as resp:
            assert resp.status == 200
    status, body = _invoke(toolkit["clipseg"], json.dumps(segment_body()).encode())
    assert status == 200, body[:500]
    assert json.loads(body)["prompts"] == ["skirt", "dress"]
    status, body = _invoke(toolkit["inpaint"], json.dumps(inpaint_body(look="resort")).encode())
    assert status == 200, body[:500]
    answer = json.loads(body)
    assert len(answer["images"]) == 1 and answer["look"] == "resort"


def _toolkit_cases():
    from tests.test_model_serve import BAD, Bad, inpaint_body

    # the container's answers only: a body over 6 MB or an unknown endpoint never reaches a container (SageMaker
    # answers those itself), and a body that is not UTF-8 is decoded by the toolkit itself before our code runs (its own error text); this
    # inpaint endpoint serves the tiny looks, so its unknown look is another name
    cases = [c for c in BAD if c.runtime_error == "ModelError" and c.id not in ("not-utf8", "unknown-look")]
    return cases + [Bad("unknown-look", "inpaint", inpaint_body(look="gala"), 400, "unknown_look",
                        "serves 'studio', 'resort' and 'none'")]


@pytest.mark.slow
@pytest.mark.parametrize("case", _toolkit_cases(), ids=[c.id for c in _toolkit_cases()])
def test_toolkit_stack_answers_hostile_input_with_our_json(toolkit, case):
    """The toolkit answers 400 for everything; inside its wrapper is our body, with the code the bot acts on."""
    from bot.backends import find_error_body, model_error

    raw = case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
    status, body = _invoke(toolkit[case.role], raw, case.headers)
    assert status == 400, body[:300]
    text = body.decode()
    assert "Traceback" not in text and 'File "' not in text
    err = find_error_body(text)
    assert err is not None, text[:300]
    assert (err["code"], err["retryable"]) == (case.code, False) and case.fragment in err["message"]
    assert model_error({"OriginalMessage": text}, 400) == (case.code, err["message"], False)


def test_local_usage_errors(capsys):
    assert main(["local", "--role", "clipseg", "--port", "0", "--tiny"]) == 2
    assert "--port must be 1-65535" in capsys.readouterr().err
    assert main(["local", "--role", "clipseg", "--lora", "x=/y", "--tiny"]) == 2
    assert "--lora is for --role inpaint" in capsys.readouterr().err
    assert main(["local", "/no/such/model.tar.gz", "--role", "inpaint"]) == 2
    assert "no such model.tar.gz" in capsys.readouterr().err
    assert main(["local", "--role", "clipseg", "--ip-adapter", "none", "--tiny"]) == 2
    assert "--ip-adapter is for --role inpaint" in capsys.readouterr().err
    assert main(["local", "--role", "inpaint", "--ip-adapter", "h94/IP-Adapter", "--tiny"]) == 2
    assert "deploy local takes none or a local folder" in capsys.readouterr().err


# --- 11. pinned wheels inside model.tar.gz, installed with no network -------------------------------------------

def _image_like_env(root: Path) -> Path:
    """A fresh virtual environment that, like the inference image, already has torch (and only torch's own
    dependencies): this environment's copies, linked in through a .pth file.  Returns its python."""
    from importlib.metadata import distribution

    from packaging.requirements import Requirement

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    python = root / "venv" / "bin" / "python"
    shared = root / "image-site"
    shared.mkdir()
    seen, todo = set(), ["torch"]
    while todo:
        dist = distribution(todo.pop())
        name = dist.metadata["Name"].lower()
        if name in seen:
            continue
        seen.add(name)
        todo += [Requirement(r).name for r in dist.requires or []
                 if Requirement(r).marker is None or Requirement(r).marker.evaluate({"extra": ""})]
        site = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            if not (shared / top).exists() and (site / top).exists():
                (shared / top).symlink_to(site / top)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "image.pth").write_text(str(shared) + "\n")
    return python


@pytest.mark.slow
def test_packed_wheels_install_with_no_network(tmp_path, capsys):
    """`deploy wheels` fetches the tested versions once (PyPI); the tarball then carries them and its
    requirements.txt installs them with no index at all, into an environment that has only torch — as the
    toolkit's `pip install -r code/requirements.txt` does at every start of the image."""
    wheels = tmp_path / "wheels"
    here = f"{sys.version_info.major}.{sys.version_info.minor}"  # this machine's Python; the image's is 3.12
    rc = main(["wheels", "--dest", str(wheels), "--python-version", here])
    _, err = capsys.readouterr()
    if rc != 0:
        pytest.skip(f"PyPI is not reachable here to fetch the wheels once: {err.strip()}")
    bundle = package.model_tarball(wheels=wheels)
    with tarfile.open(fileobj=io.BytesIO(bundle.data)) as tar:
        tar.extractall(tmp_path / "model", filter="data")
    code = tmp_path / "model" / "code"
    reqs = (code / "requirements.txt").read_text().splitlines()
    assert reqs[:2] == ["--no-index", "--find-links wheels"] and "transformers==5.24.0" in reqs
    assert not any(n.startswith("torch") for n in os.listdir(code / "wheels"))
    python = _image_like_env(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL="http://127.0.0.1:9/simple",  # no index could answer
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--disable-pip-version-check",
                           "-r", str(code / "requirements.txt")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    probe = ("import importlib.metadata as m, diffusers, transformers, peft, accelerate, torch; "
             "print(m.version('diffusers'), m.version('transformers'), m.version('huggingface_hub'))")
    out = subprocess.run([str(python), "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["0.42.1", "5.24.0", "2.4.0"]


# --- 12. --network-isolation: uncompressed model data, nothing fetched at start; the optional upscale endpoint ----

def _isolated_settings(**kw) -> Settings:
    data = (("clipseg", f"s3://{BUCKET}/restyle/model-data/clipseg-0123456789ab/"),
            ("inpaint", f"s3://{BUCKET}/restyle/model-data/inpaint-0123456789ab/"))
    return settings(**{"network_isolation": True, "isolated_data": data, "lora": "studio=./looks/studio", **kw})


def test_isolated_plan_serves_model_data_and_fetches_nothing():
    plan = build_plan(_isolated_settings(), artifact_sha256="a" * 64, images={"ml.g5.xlarge": "img"})
    assert [e.key for e in plan.endpoints] == ["clipseg", "inpaint", "async"]
    for e in plan.endpoints:
        role = "clipseg" if e.key == "clipseg" else "inpaint"
        assert e.model.model_data_url is None and e.model.network_isolation is True
        assert e.model.model_data_source == {"S3DataSource": {
            "S3Uri": f"s3://{BUCKET}/restyle/model-data/{role}-0123456789ab/", "S3DataType": "S3Prefix",
            "CompressionType": "None"}}
        env = e.model.environment
        assert env["HF_HUB_OFFLINE"] == "1" and env["RESTYLE_ROLE"] == role
        assert not {"RESTYLE_MODEL_ID", "RESTYLE_ARTIFACT_S3"} & set(env)  # model_fn loads /opt/ml/model
        assert env.get("RESTYLE_LORA") == ("studio=looks/studio" if role == "inpaint" else None)
    assert "data     s3://" in render_plan(plan) and "CompressionType" not in render_plan(plan)
    # new model data (code, weights or looks changed) is a new prefix, so a new model name
    other = _isolated_settings(isolated_data=(("clipseg", f"s3://{BUCKET}/restyle/model-data/clipseg-ffff/"),
                                              ("inpaint", f"s3://{BUCKET}/restyle/model-data/inpaint-0123456789ab/")))
    again = build_plan(other, artifact_sha256="a" * 64, images={"ml.g5.xlarge": "img"})
    assert again.endpoints[0].model.name != plan.endpoints[0].model.name
    assert again.endpoints[1].model.name == plan.endpoints[1].model.name
    # a role without model data, or an s3:// model deploy cannot copy, is refused with what to do
    with pytest.raises(PlanError, match="give the weights as a local folder or a Hub id"):
        build_plan(_isolated_settings(upscale_model="stabilityai/stable-diffusion-x4-upscaler"),
                   artifact_sha256="a" * 64, images={"ml.g5.xlarge": "img"})
    with pytest.raises(PlanError, match="download it and pass the local folder"):
        build_plan(_isolated_settings(lora="studio=s3://b/looks/studio/"), artifact_sha256="a" * 64,
                   images={"ml.g5.xlarge": "img"})


def test_upscale_endpoint_only_when_its_model_is_given():
    images = {"ml.g5.xlarge": "img", "ml.g5.2xlarge": "img2"}
    plain = build_plan(settings(), artifact_sha256="a" * 64, images=images)
    assert [e.key for e in plain.endpoints] == ["clipseg", "inpaint", "async"]
    plan = build_plan(settings(upscale_model="stabilityai/stable-diffusion-x4-upscaler",
                               upscale_instance_type="ml.g5.2xlarge", upscale_target_invocations=3.0,
                               upscale_latency_alarm_s=90.0), artifact_sha256="a" * 64, images=images)
    up = plan.endpoints[-1]
    assert (up.key, up.name, up.mode) == ("upscale", "restyle-upscale", "real-time")
    assert up.model.environment["RESTYLE_ROLE"] == "upscale"
    assert up.model.environment["RESTYLE_MODEL_ID"] == "stabilityai/stable-diffusion-x4-upscaler"
    assert up.config.production_variant["InstanceType"] == "ml.g5.2xlarge"
    assert up.scaling.min_capacity == 2 and up.scaling.policies[0].configuration["TargetValue"] == 3.0
    latency = next(m for m in up.monitors if m.name == "restyle-upscale-model-latency")
    assert latency.request["Threshold"] == 90.0 * 1_000_000
    assert {m.name for m in up.monitors} == {"restyle-upscale-5xx", "restyle-upscale-model-latency",
                                             "restyle-upscale-gpu-memory"}
    assert up.deployment_config["AutoRollbackConfiguration"]["Alarms"]
    # the other endpoints are exactly what they were without it
    assert [e.model.name for e in plan.endpoints[:3]] == [e.model.name for e in plain.endpoints]
    with pytest.raises(PlanError, match="--upscale-latency-alarm-s must be"):
        build_plan(settings(upscale_model="x/y", upscale_latency_alarm_s=-1.0), artifact_sha256="a" * 64,
                   images=images)
    with pytest.raises(PlanError, match="endpoint names must differ"):
        build_plan(settings(upscale_model="x/y", upscale_endpoint="restyle-clipseg"), artifact_sha256="a" * 64,
                   images=images)


def _stand_in_wheels(folder: Path) -> Path:
    """Empty files named as `deploy wheels` would fetch them: enough for packing (nothing installs them here)."""
    folder.mkdir()
    for name, version in package.closure().items():
        (folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_bytes(b"stand-in")
    return folder


def _recording_create_model(monkeypatch) -> list[dict]:
    """The CreateModel requests the deployer sends (moto keeps no EnableNetworkIsolation of its own)."""
    from deploy import aws as deploy_aws

    sent: list[dict] = []
    original = deploy_aws.Deployer.__init__

    def init(self, *a, **kw):
        original(self, *a, **kw)
        self.sm.meta.events.register("provide-client-params.sagemaker.CreateModel",
                                     lambda params, **_: sent.append(json.loads(json.dumps(params))))

    monkeypatch.setattr(deploy_aws.Deployer, "__init__", init)
    return sent


def test_up_network_isolated_with_upscale(aws, capsys, tiny_dir, tmp_path, monkeypatch):
    """--network-isolation: each role's code, wheels, weights and looks under one content-addressed S3 prefix that
    SageMaker serves (ModelDataSource), in the VPC, tagged, encrypted; the third endpoint with a stand-in model."""
    sent = _recording_create_model(monkeypatch)
    wheels = _stand_in_wheels(tmp_path / "wheels")
    upscale = tmp_path / "upscaler"  # a stand-in folder: the deploy tests do not run the model
    upscale.mkdir()
    (upscale / "model_index.json").write_text('{"_class_name": "StableDiffusionUpscalePipeline"}')
    tiny = Path(tiny_dir)
    flags = ["--network-isolation", "--wheels", str(wheels), *HARDENED,
             "--clipseg-model", str(tiny / "clipseg"), "--inpaint-model", str(tiny / "inpaint"),
             "--lora", f"studio={tiny / 'looks' / 'studio'}", "--upscale-model", str(upscale)]
    rc, out, err = run(capsys, "up", *BASE, "--dry-run", *flags)
    assert rc == 0, err
    assert "model data" in out and "data     s3://" in out and "isolated" in out and "restyle-upscale" in out
    assert aws["s3"].list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0  # a dry run uploads nothing

    report = up_json(capsys, *flags)
    data = {c["name"] for c in report["changes"] if c["kind"] == "model data"}
    assert len(data) == 3  # clipseg, inpaint (shared by the async endpoint), upscale
    s3 = aws["s3"]
    for uri in data:
        prefix = uri.split(f"{BUCKET}/", 1)[1]
        keys = {o["Key"][len(prefix):] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
        assert {"code/inference.py", "code/requirements.txt", "code/model/handlers.py"} <= keys
        assert any(k.startswith("code/wheels/transformers-5.24.0") for k in keys)
        assert (s3.head_object(Bucket=BUCKET, Key=prefix + "code/inference.py")["ServerSideEncryption"]
                == "aws:kms")
        if "/inpaint-" in prefix:
            assert "model_index.json" in keys and any(k.startswith("looks/studio/") for k in keys)
        if "/clipseg-" in prefix:
            assert "config.json" in keys and not any(k.startswith("looks/") for k in keys)
    requirements = s3.get_object(Bucket=BUCKET, Key=next(iter(data)).split(f"{BUCKET}/", 1)[1]
                                 + "code/requirements.txt")["Body"].read().decode().splitlines()
    assert requirements[:2] == ["--no-index", "--find-links wheels"]  # installed offline at start
    assert len(sent) == 4
    for req in sent:
        container = req["PrimaryContainer"]
        assert req["EnableNetworkIsolation"] is True and "ModelDataUrl" not in container
        assert req["VpcConfig"]["Subnets"] == ["subnet-0123abcd", "subnet-4567ef01"]
        assert {"Key": "team", "Value": "styling"} in req["Tags"]
        source = container["ModelDataSource"]["S3DataSource"]
        assert source["S3DataType"] == "S3Prefix" and source["CompressionType"] == "None"
        assert source["S3Uri"] in data
        env = container["Environment"]
        assert env["HF_HUB_OFFLINE"] == "1"
        assert not {"RESTYLE_MODEL_ID", "RESTYLE_ARTIFACT_S3"} & set(env)  # nothing fetched by our code at start
    sm = aws["sagemaker"]
    described = [sm.describe_model(ModelName=m["ModelName"])["PrimaryContainer"] for m in sm.list_models()["Models"]]
    assert all(c["ModelDataSource"]["S3DataSource"]["CompressionType"] == "None" for c in described)  # moto kept it
    names = {e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]}
    assert "restyle-upscale" in names and len(names) == 4
    assert up_json(capsys, *flags)["unchanged"] is True
    rc, _, err = run(capsys, "down", "--bucket", BUCKET)  # no --upscale-model needed to delete it
    assert rc == 0, err
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []


def test_isolation_refuses_only_what_it_cannot_serve(offline, capsys, tmp_path):
    rc, _, err = run(capsys, "up", "--dry-run", "--network-isolation")
    assert rc == 2 and "needs --wheels DIR" in err
    rc, _, err = run(capsys, "up", "--dry-run", "--network-isolation", "--wheels", str(tmp_path),
                     "--clipseg-model", "s3://bkt/clipseg.tar.gz")
    assert rc == 2 and "download it and pass the local folder" in err


@pytest.mark.slow
def test_toolkit_serves_isolated_model_data(tiny_dir, tmp_path):
    """`deploy local --isolated`'s layout: code/ and the weights in one folder (as SageMaker copies the model data
    to /opt/ml/model), RESTYLE_MODEL_ID unset, the Hub off: the toolkit stack loads model_dir and answers."""
    from deploy import local, weights
    from tests.test_model_serve import segment_body

    where = os.environ.get("RESTYLE_TOOLKIT_DIR")
    why = local.missing_requirements(where)
    if why:
        pytest.skip(f"the toolkit stack cannot run here: {why}")
    bundle = package.model_tarball()
    folder = Path(tiny_dir) / "clipseg"
    data = weights.model_data("clipseg", bundle.data, bundle.sha256, weights.scan("clipseg", str(folder), folder))
    laid = data.write_to(tmp_path / "model-data")
    assert (laid / "code" / "inference.py").is_file() and (laid / "config.json").is_file()
    server = local.serve(laid, role="clipseg", port=_free_port(), workdir=tmp_path / "work", toolkit=where,
                         log_file=tmp_path / "server.log")
    try:
        local.wait_ready(server, timeout=300)
        status, body = _invoke(server.port, json.dumps(segment_body()).encode())
        assert status == 200, body[:500]
        assert json.loads(body)["prompts"] == ["skirt", "dress"]
    finally:
        server.stop()


# --- 13. the inpaint endpoints' IP-Adapter (reference images): staged like a look ---------------------------------

IP_ENV = "RESTYLE_IP_ADAPTER"


def _stand_in_checkpoint(folder: Path, cross_attention_dim: int) -> Path:
    """A diffusers inpainting folder as far as deploy reads one (the deploy tests do not run it)."""
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionInpaintPipeline"}')
    (folder / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": cross_attention_dim}))
    return folder


def _adapter_copy(tiny_dir, dest: Path) -> Path:
    """The tiny checkpoint's IP-Adapter (one weights file + image_encoder/) as a folder of its own."""
    import shutil

    return Path(shutil.copytree(Path(tiny_dir) / "inpaint" / "ip_adapter", dest))


def _dry_envs(capsys, *flags: str) -> tuple[dict, dict]:
    rc, out, err = run(capsys, "up", "--dry-run", "--json", *flags)
    assert rc == 0, err
    report = json.loads(out)
    return {e["key"]: e["model"]["environment"] for e in report["plan"]["endpoints"]}, report


def test_plan_passes_the_ip_adapter_to_both_inpaint_endpoints():
    images = {"ml.g5.xlarge": "img"}
    uri = f"s3://{BUCKET}/restyle/weights/ip-adapter-0123456789ab/"
    plain = build_plan(settings(), artifact_sha256="a" * 64, images=images)
    plan = build_plan(settings(ip_adapter=uri), artifact_sha256="a" * 64, images=images)
    env = {e.key: e.model.environment for e in plan.endpoints}
    assert env["inpaint"][IP_ENV] == env["async"][IP_ENV] == uri and IP_ENV not in env["clipseg"]
    names = {e.key: e.model.name for e in plain.endpoints}
    assert {e.key for e in plan.endpoints if e.model.name != names[e.key]} == {"inpaint", "async"}
    other = build_plan(settings(ip_adapter=uri.replace("0123", "4567")), artifact_sha256="a" * 64, images=images)
    assert other.endpoints[1].model.name != plan.endpoints[1].model.name  # another adapter: another model
    # an s3:// adapter keeps an endpoint off the Hub; a Hub one is fetched at start, so the Hub stays on
    off = dict(clipseg_model="s3://b/c.tar.gz", inpaint_model="s3://b/i.tar.gz")
    plan = build_plan(settings(**off, ip_adapter=uri), artifact_sha256="a" * 64, images=images)
    assert all(e.model.environment["HF_HUB_OFFLINE"] == "1" for e in plan.endpoints)
    plan = build_plan(settings(**off, ip_adapter="h94/IP-Adapter"), artifact_sha256="a" * 64, images=images)
    env = {e.key: e.model.environment for e in plan.endpoints}
    assert env["clipseg"]["HF_HUB_OFFLINE"] == "1" and "HF_HUB_OFFLINE" not in env["inpaint"]
    # isolated: the adapter is the model data's ip_adapter/, relative to model_dir
    for given, expected in (("./adapter", "ip_adapter"), ("none", "none")):
        plan = build_plan(_isolated_settings(ip_adapter=given), artifact_sha256="a" * 64, images=images)
        env = {e.key: e.model.environment for e in plan.endpoints}
        assert env["inpaint"][IP_ENV] == env["async"][IP_ENV] == expected and IP_ENV not in env["clipseg"]
    with pytest.raises(PlanError, match="download it and pass the local folder"):
        build_plan(_isolated_settings(ip_adapter=uri), artifact_sha256="a" * 64, images=images)
    with pytest.raises(PlanError, match="--ip-adapter must not be empty"):
        build_plan(settings(ip_adapter=" "), artifact_sha256="a" * 64, images=images)


def test_default_ip_adapter_only_where_the_endpoint_cannot_fetch_it(offline, capsys, tiny_dir, tmp_path):
    sd1 = _stand_in_checkpoint(tmp_path / "sd1", 768)
    sdxl = _stand_in_checkpoint(tmp_path / "sdxl", 2048)
    # inpaint weights from the Hub at start: the loader's own default works there, nothing is set
    env, report = _dry_envs(capsys)
    assert IP_ENV not in env["inpaint"] and "HF_HUB_OFFLINE" not in env["inpaint"]
    assert "the loader's choice" in report["ip_adapter"]["note"]
    # a staged folder with its own ip_adapter/ (the tiny one): that one, and the Hub stays off
    env, report = _dry_envs(capsys, "--inpaint-model", str(Path(tiny_dir) / "inpaint"))
    assert IP_ENV not in env["inpaint"] and env["inpaint"]["HF_HUB_OFFLINE"] == "1"
    assert "own ip_adapter/" in report["ip_adapter"]["note"] and "ip-adapter" not in report["weights"]
    # a staged SD 1.x folder without one: the loader's default, fetched at start (the Hub is no longer off)
    env, _ = _dry_envs(capsys, "--inpaint-model", str(sd1))
    default = "h94/IP-Adapter:models:ip-adapter_sd15.safetensors"
    assert env["inpaint"][IP_ENV] == env["async"][IP_ENV] == default and "HF_HUB_OFFLINE" not in env["inpaint"]
    # not SD 1.x: the default does not fit, nothing is planned and the dry run says why
    env, report = _dry_envs(capsys, "--inpaint-model", str(sdxl))
    assert IP_ENV not in env["inpaint"] and "cross_attention_dim is 2048" in report["ip_adapter"]["note"]
    # none: reference images refused, on both inpaint endpoints
    env, _ = _dry_envs(capsys, "--inpaint-model", str(sd1), "--ip-adapter", "none")
    assert env["inpaint"][IP_ENV] == env["async"][IP_ENV] == "none" and env["inpaint"]["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize("flags, message", [
    # with --stage-weights the default is downloaded on this machine: here there is no network, one line
    (["--inpaint-model", "{sd1}", "--stage-weights"],
     "the default IP-Adapter (--ip-adapter none skips it) h94/IP-Adapter: could not download it from the Hub"),
    (["--ip-adapter", "h94/IP-Adapter", "--stage-weights"], "--ip-adapter h94/IP-Adapter: could not download it"),
    (["--ip-adapter", "some/adapter:sdxl_models", "--network-isolation", "--wheels", "{tmp}", "--clipseg-model", "{sd1}"],
     "--ip-adapter some/adapter: could not download it from the Hub"),
    (["--ip-adapter", "{tmp}"], "--ip-adapter: {tmp} must hold exactly one IP-Adapter weights file"),
    (["--ip-adapter", "{noenc}"], "has no image_encoder/ next to w.safetensors"),
    (["--ip-adapter", "./no/such:models"], "no such folder"),
    (["--ip-adapter", "a:b:c:d"], "--ip-adapter must be 'none', a folder or REF[:subfolder[:weight_name]]"),
    (["--ip-adapter", ""], "--ip-adapter must not be empty"),
    (["--ip-adapter", "s3://b/adapter/", "--network-isolation", "--wheels", "{tmp}", "--clipseg-model", "{sd1}"],
     "would fetch s3://b/adapter/ from S3"),
])
def test_ip_adapter_errors_are_one_line(offline, capsys, tmp_path, flags, message):
    sd1 = _stand_in_checkpoint(tmp_path / "sd1", 768)
    (tmp_path / "noenc").mkdir()
    (tmp_path / "noenc" / "w.safetensors").write_bytes(b"x")
    fill = {"{sd1}": str(sd1), "{tmp}": str(tmp_path), "{noenc}": str(tmp_path / "noenc")}
    flags = [fill.get(f, f) for f in flags]
    for key, value in fill.items():
        message = message.replace(key, value)
    rc, out, err = run(capsys, "up", "--dry-run", "--clipseg-model", "s3://b/c.tar.gz",
                       "--inpaint-model", str(sd1), *flags)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_local_ip_adapter_is_staged_once_like_a_look(aws, capsys, tiny_dir, tmp_path):
    adapter = _adapter_copy(tiny_dir, tmp_path / "adapter")
    (adapter / "README.md").write_text("not part of the adapter")  # only the weights and image_encoder/ go
    rc, out, err = run(capsys, "up", *BASE, "--dry-run", "--ip-adapter", str(adapter))
    assert rc == 0, err
    assert f"weights   {adapter} -> s3://{BUCKET}/restyle/weights/ip-adapter-" in out
    assert f"{IP_ENV}=s3://{BUCKET}/restyle/weights/ip-adapter-" in out and "ip-adapter " in out
    assert aws["s3"].list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0  # a dry run uploads nothing

    report = up_json(capsys, "--ip-adapter", str(adapter))
    (staged,) = [c for c in report["changes"] if c["kind"] == "weights"]
    assert staged["action"] == "created" and staged["name"].startswith(f"s3://{BUCKET}/restyle/weights/ip-adapter-")
    prefix = staged["name"].split(f"{BUCKET}/", 1)[1]
    keys = {o["Key"][len(prefix):] for o in aws["s3"].list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
    assert "ip-adapter.safetensors" in keys and "image_encoder/config.json" in keys and "README.md" not in keys
    sm = aws["sagemaker"]
    envs = [sm.describe_model(ModelName=m["ModelName"])["PrimaryContainer"]["Environment"]
            for m in sm.list_models()["Models"]]
    assert sorted(e["RESTYLE_ROLE"] for e in envs if e.get(IP_ENV) == staged["name"]) == ["inpaint", "inpaint"]
    assert all(IP_ENV not in e for e in envs if e["RESTYLE_ROLE"] == "clipseg")
    assert up_json(capsys, "--ip-adapter", str(adapter))["unchanged"] is True  # same bytes: nothing again


def test_isolated_model_data_carries_the_staged_ip_adapter(offline, capsys, tiny_dir, tmp_path):
    from deploy import weights

    tiny = Path(tiny_dir)
    adapter = _adapter_copy(tiny_dir, tmp_path / "adapter")
    (adapter / "ip-adapter.safetensors").write_bytes(b"another adapter")  # tell it from the folder's own
    wheels = _stand_in_wheels(tmp_path / "wheels")
    bundle = package.model_tarball(wheels=wheels)  # what the isolated plan below packs
    inpaint = weights.scan("inpaint", str(tiny / "inpaint"), tiny / "inpaint")
    choice = weights.plan_ip_adapter(str(adapter), str(tiny / "inpaint"), inpaint, stage_hub=False)
    own = dict(weights.model_data("inpaint", bundle.data, bundle.sha256, inpaint).entries)
    data = weights.model_data("inpaint", bundle.data, bundle.sha256, inpaint, ip_adapter=choice.staged)
    entries = dict(data.entries)
    assert entries["ip_adapter/ip-adapter.safetensors"] == adapter / "ip-adapter.safetensors"  # replaced, not both
    assert sorted(k for k in entries if k.startswith("ip_adapter/")) == sorted(k for k in own
                                                                                if k.startswith("ip_adapter/"))
    assert data.digest != weights.model_data("inpaint", bundle.data, bundle.sha256, inpaint).digest
    flags = ["--network-isolation", "--wheels", str(wheels), "--clipseg-model", str(tiny / "clipseg"),
             "--inpaint-model", str(tiny / "inpaint")]
    env, report = _dry_envs(capsys, *flags, "--ip-adapter", str(adapter))
    assert env["inpaint"][IP_ENV] == env["async"][IP_ENV] == "ip_adapter" and IP_ENV not in env["clipseg"]
    assert f"ip-adapter={adapter}" in report["weights"]["inpaint"]["source"]
    assert report["weights"]["inpaint"]["uri"].endswith(f"/inpaint-{data.digest[:12]}/")  # the same model data
    env, _ = _dry_envs(capsys, *flags)  # the folder's own ip_adapter/ is used as it is
    assert IP_ENV not in env["inpaint"]


@pytest.mark.slow
def test_staged_ip_adapter_answers_a_reference_with_the_hub_off(aws, capsys, tiny_dir, tmp_path, moto_url):
    """The environment `up` gives the inpaint endpoint (weights and adapter copied from S3, HF_HUB_OFFLINE=1) makes
    the packed code load the staged adapter and answer a request that carries a reference image."""
    import shutil

    from PIL import Image

    from tests.conftest import b64
    from tests.test_model_serve import inpaint_body

    weights_copy = Path(shutil.copytree(Path(tiny_dir) / "inpaint", tmp_path / "inpaint",
                                        ignore=shutil.ignore_patterns("ip_adapter")))  # no adapter of its own
    adapter = _adapter_copy(tiny_dir, tmp_path / "adapter")
    up_json(capsys, "--inpaint-model", str(weights_copy), "--ip-adapter", str(adapter))
    sm = aws["sagemaker"]
    (env,) = [sm.describe_model(ModelName=m["ModelName"])["PrimaryContainer"]["Environment"]
              for m in sm.list_models()["Models"] if m["ModelName"].startswith("restyle-inpaint-")
              and "async" not in m["ModelName"]]
    assert env["HF_HUB_OFFLINE"] == "1" and env[IP_ENV].startswith(f"s3://{BUCKET}/restyle/weights/ip-adapter-")
    with tarfile.open(fileobj=io.BytesIO(package.model_tarball().data)) as tar:
        tar.extractall(tmp_path / "model", filter="data")
    child = {k: v for k, v in os.environ.items() if not k.startswith(("RESTYLE_", "PYTHON"))}
    child.update(env, PYTHONPATH=str(tmp_path / "model" / "code"), TRANSFORMERS_OFFLINE="1", TMPDIR=str(tmp_path),
                 AWS_ENDPOINT_URL=moto_url)
    request = inpaint_body(reference=b64(Image.new("RGB", (48, 48), (30, 90, 200))), reference_scale=0.8)
    proc = subprocess.run([sys.executable, "-c", STAGED_SERVE, str(tmp_path / "model")], input=json.dumps(request),
                          env=child, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(json.loads(proc.stdout)["images"]) == 1


@pytest.mark.slow
def test_toolkit_answers_a_reference_from_isolated_model_data_with_a_staged_adapter(tiny_dir, tmp_path):
    """`deploy local --isolated --ip-adapter DIR`: the layout `up --network-isolation` uploads (the adapter as the
    model data's ip_adapter/, RESTYLE_IP_ADAPTER=ip_adapter, the Hub off) under the toolkit and multi-model-server
    answers a request with a reference image with 200."""
    import shutil
    import signal
    import time

    from PIL import Image

    from deploy import local
    from tests.conftest import b64
    from tests.test_model_serve import inpaint_body

    where = os.environ.get("RESTYLE_TOOLKIT_DIR")
    why = local.missing_requirements(where)
    if why:
        pytest.skip(f"the toolkit stack cannot run here: {why}")
    weights_copy = shutil.copytree(Path(tiny_dir) / "inpaint", tmp_path / "inpaint",
                                   ignore=shutil.ignore_patterns("ip_adapter"))  # only the staged adapter can serve
    adapter = _adapter_copy(tiny_dir, tmp_path / "adapter")
    port = _free_port()
    cli = subprocess.Popen([sys.executable, "-m", "deploy", "local", "--role", "inpaint", "--isolated", "--model",
                            str(weights_copy), "--ip-adapter", str(adapter), "--port", str(port), "--toolkit", where or "",
                            "--workdir", str(tmp_path / "work"), "--log", str(tmp_path / "server.log")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert cli.poll() is None, cli.stdout.read()[-2000:]
            assert time.monotonic() < deadline, "no /ping 200 within 300 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(1.0)
        served = tmp_path / "work" / "model"
        assert (served / "ip_adapter" / "ip-adapter.safetensors").read_bytes() == (
            adapter / "ip-adapter.safetensors").read_bytes()
        request = inpaint_body(reference=b64(Image.new("RGB", (48, 48), (30, 90, 200))), reference_scale=0.8)
        status, body = _invoke(port, json.dumps(request).encode())
        assert status == 200, body[:500]
        assert len(json.loads(body)["images"]) == 1
    finally:
        cli.send_signal(signal.SIGTERM)  # the CLI stops multi-model-server and its workers
        cli.wait(60)
