"""``python -m deploy up | status | down | train | local`` — the restyle endpoints on SageMaker.  See docs/deploy.md.

Exit codes: 0 done, 1 an AWS call failed (one line naming the resource and the AWS error code), 2 bad usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

import boto3
from botocore.exceptions import UnknownRegionError

from deploy import package, weights
from deploy.aws import Deployer, DeployError, account_and_partition, changes_as_dicts, resolve_image
from deploy.plan import (
    DEFAULT_CLIPSEG_MODEL,
    DEFAULT_INPAINT_MODEL,
    DEFAULT_INSTANCE_TYPE,
    DEFAULT_MIN_INSTANCES,
    DEFAULT_PREFIX,
    DEFAULT_TRAIN_INSTANCE_TYPE,
    DEFAULT_UPSCALE_MODEL,
    ISOLATED_IP_ADAPTER,
    ISOLATED_LOOKS,
    PLACEHOLDER_ACCOUNT,
    PLACEHOLDER_BUCKET,
    PLACEHOLDER_ROLE_ARN,
    REALTIME_ROLES,
    TRAINING_PROGRAMS,
    PlanError,
    Settings,
    TrainSettings,
    build_plan,
    build_training_jobs,
    check_common,
    check_region,
    instance_types,
    names_for,
    render_plan,
    resource_id,
    sourcedir_key,
    topic_arns,
    validate_settings,
    validate_training,
)
from model.loading import IP_ADAPTER_ENV
from model.schemas import format_looks, parse_looks


class UsageError(ValueError):
    """Exit 2."""


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value


def _id_list(text: str) -> tuple[str, ...]:
    ids = tuple(part.strip() for part in text.split(",") if part.strip())
    if not ids:
        raise argparse.ArgumentTypeError(f"expected comma-separated ids, got {text!r}")
    return ids


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("common")
    g.add_argument("--region", help="AWS region (default: the AWS config / AWS_REGION / AWS_DEFAULT_REGION)")
    g.add_argument("--prefix", default=DEFAULT_PREFIX,
                   help="names every resource (<prefix>-clipseg, ...) and the S3 key prefix (default: %(default)s)")
    g.add_argument("--bucket", default=os.environ.get("RESTYLE_BUCKET"),
                   help="S3 bucket for artifacts, async results and training output (env RESTYLE_BUCKET)")
    g.add_argument("--role-arn", default=os.environ.get("RESTYLE_ROLE_ARN"),
                   help="SageMaker execution role (env RESTYLE_ROLE_ARN)")
    g.add_argument("--dry-run", action="store_true", help="print the plan; make no AWS call at all")
    g.add_argument("--json", action="store_true", help="machine-readable output")

    ep = argparse.ArgumentParser(add_help=False)
    e = ep.add_argument_group("endpoints")
    e.add_argument("--clipseg-endpoint", help="endpoint name (default: <prefix>-clipseg)")
    e.add_argument("--inpaint-endpoint", help="endpoint name (default: <prefix>-inpaint)")
    e.add_argument("--async-endpoint", help="endpoint name (default: <prefix>-inpaint-async)")
    e.add_argument("--upscale-endpoint", help="endpoint name (default: <prefix>-upscale)")
    e.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE,
                   help="instance type of every endpoint (default: %(default)s)")
    e.add_argument("--clipseg-instance-type", help="override --instance-type for the clipseg endpoint")
    e.add_argument("--inpaint-instance-type", help="override --instance-type for the inpaint endpoint")
    e.add_argument("--async-instance-type", help="override --instance-type for the async endpoint")
    e.add_argument("--upscale-instance-type", help="override --instance-type for the upscale endpoint")
    e.add_argument("--clipseg-model", default=DEFAULT_CLIPSEG_MODEL,
                   help="Hub id, local folder (staged to S3 by up) or s3:// URI of a fine-tuned model "
                        "(default: %(default)s)")
    e.add_argument("--inpaint-model", default=DEFAULT_INPAINT_MODEL,
                   help="Hub id, local folder (staged to S3 by up) or s3:// URI of a fine-tuned model "
                        "(default: %(default)s)")
    e.add_argument("--upscale-model", metavar="REF",
                   help="add a real-time <prefix>-upscale endpoint (RESTYLE_ROLE=upscale) serving this Hub id "
                        f"(e.g. {DEFAULT_UPSCALE_MODEL}), local folder (staged to S3 by up) or s3:// URI; off "
                        "unless given")
    e.add_argument("--wheels", metavar="DIR",
                   help="pack every package the image lacks from DIR (python -m deploy wheels --dest DIR) into "
                        "model.tar.gz and install them at start with no network")
    e.add_argument("--stage-weights", action="store_true",
                   help="also download Hub-id models and looks on this machine and stage them in S3, so the "
                        "endpoints never reach the Hub (HF_HUB_OFFLINE=1)")
    e.add_argument("--lora", help="brand looks for the inpaint endpoints: ss27=s3://…,resort=./looks/resort or one "
                                  "Hub id / s3:// URI / local folder (local folders are staged to S3 by up)")
    e.add_argument("--ip-adapter", metavar="SPEC",
                   help="IP-Adapter for reference images (swatches, prints) on the inpaint endpoints: none, a local "
                        "folder (one weights file + image_encoder/, staged to S3 by up) or REF[:subfolder"
                        "[:weight_name]] (a Hub repo: staged with --stage-weights or --network-isolation, only that "
                        f"file and image_encoder/). Default: {weights.DEFAULT_IP_ADAPTER_SPEC}, staged (or fetched "
                        "at start without --stage-weights) when the inpaint weights are staged, SD 1.x and have "
                        "no ip_adapter/ of their own; else the loader's own choice at start")
    e.add_argument("--min-instances", type=int, default=DEFAULT_MIN_INSTANCES,
                   help="real-time endpoints: minimum instances, >= 1; 2 or more lets SageMaker spread them over "
                        "Availability Zones (default: %(default)s)")
    e.add_argument("--max-instances", type=int, default=4,
                   help="real-time endpoints: maximum instances (default: %(default)s)")
    e.add_argument("--async-max-instances", type=int, default=2,
                   help="async endpoint: maximum instances; its minimum is 0 (default: %(default)s)")
    e.add_argument("--clipseg-target-invocations", type=float, default=300.0,
                   help="scale-out target, invocations per instance per minute (default: %(default)s)")
    e.add_argument("--inpaint-target-invocations", type=float, default=10.0,
                   help="scale-out target, invocations per instance per minute (default: %(default)s)")
    e.add_argument("--upscale-target-invocations", type=float, default=10.0,
                   help="scale-out target, invocations per instance per minute (default: %(default)s)")
    e.add_argument("--async-target-backlog", type=float, default=4.0,
                   help="async scale-out target, queued requests per instance (default: %(default)s)")
    e.add_argument("--async-max-concurrency", type=int, default=2,
                   help="async: MaxConcurrentInvocationsPerInstance (default: %(default)s)")
    e.add_argument("--image-uri", help="inference image (default: the Hugging Face PyTorch DLC from the "
                                       "sagemaker SDK)")
    h = ep.add_argument_group("monitoring and hardening")
    h.add_argument("--clipseg-latency-alarm-s", type=float, default=5.0,
                   help="alarm (and roll an update back) when the clipseg p90 ModelLatency exceeds this many "
                        "seconds (default: %(default)s)")
    h.add_argument("--inpaint-latency-alarm-s", type=float, default=45.0,
                   help="the same for the inpaint endpoint (default: %(default)s)")
    h.add_argument("--upscale-latency-alarm-s", type=float, default=60.0,
                   help="the same for the upscale endpoint (default: %(default)s)")
    h.add_argument("--gpu-memory-alarm", type=float, default=90.0,
                   help="alarm when GPUMemoryUtilization exceeds this percentage (default: %(default)s)")
    h.add_argument("--data-capture", type=float, default=0.0, metavar="PERCENT",
                   help="capture this percentage of real-time requests and answers to s3://BUCKET/<prefix>/"
                        "data-capture/ (they hold people's photos; default: %(default)s = off)")
    h.add_argument("--s3-retention-days", type=int, default=7,
                   help="expire async inputs, outputs, failures and data capture after this many days "
                        "(S3 lifecycle rules; default: %(default)s)")
    h.add_argument("--network-isolation", action="store_true",
                   help="run the containers with no network access: each role's code, wheels (--wheels, "
                        "required), weights (local folders, or Hub ids downloaded on this machine) and looks go to "
                        "one uncompressed S3 prefix that SageMaker copies to /opt/ml/model itself")
    h.add_argument("--vpc-subnets", type=_id_list, default=(), metavar="SUBNET,...",
                   help="run the endpoints in these VPC subnets (with --vpc-security-groups)")
    h.add_argument("--vpc-security-groups", type=_id_list, default=(), metavar="SG,...",
                   help="security groups for --vpc-subnets")
    h.add_argument("--kms-key", help="KMS key (id, ARN or alias/NAME) for endpoint volumes, async output, data "
                                     "capture, the SNS topics and the uploaded artifact")
    h.add_argument("--tags", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="tag every resource deploy creates (repeatable)")

    parser = argparse.ArgumentParser(prog="python -m deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", parents=[common, ep], help="create or update everything (idempotent)")
    sub.add_parser("status", parents=[common, ep], help="what exists for each planned resource")
    down = sub.add_parser("down", parents=[common, ep], help="delete everything `up` made (idempotent)")
    down.add_argument("--purge-s3", action="store_true",
                      help="also delete s3://BUCKET/<prefix>/ (except <prefix>/training/)")
    sub.add_parser("policy", help="print a least-privilege IAM policy: --bot, --deploy or --execution "
                                  "(python -m deploy policy --help)")
    sub.add_parser("state", help="create or update the bot's shared DynamoDB table and S3 bucket "
                                 "(python -m deploy state --help)")
    train = sub.add_parser("train", parents=[common], help="launch the LoRA and CLIPSeg training jobs")
    t = train.add_argument_group("training")
    t.add_argument("--lora-data", help=f"s3:// training data for {TRAINING_PROGRAMS['lora']}")
    t.add_argument("--clipseg-data", help=f"s3:// training data for {TRAINING_PROGRAMS['clipseg']}")
    t.add_argument("--train-instance-type", default=DEFAULT_TRAIN_INSTANCE_TYPE, help="(default: %(default)s)")
    t.add_argument("--train-image-uri", help="training image (default: the Hugging Face PyTorch training DLC)")
    t.add_argument("--hp", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="hyperparameter for both jobs (repeatable)")
    t.add_argument("--lora-hp", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="hyperparameter for the LoRA job only (repeatable)")
    t.add_argument("--clipseg-hp", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="hyperparameter for the CLIPSeg job only (repeatable)")
    t.add_argument("--max-runtime", type=int, default=24 * 3600, help="seconds (default: %(default)s)")
    t.add_argument("--volume-size", type=int, default=100, help="GB of training disk (default: %(default)s)")
    wh = sub.add_parser("wheels", help="download the pinned wheels model.tar.gz carries (up --wheels DIR)")
    wh.add_argument("--dest", required=True, help="folder for the wheels (created)")
    wh.add_argument("--python-version", default=package.IMAGE_PYTHON,
                    help="the image's Python (default: %(default)s)")
    wh.add_argument("--platform", action="append", help="wheel platform tag, repeatable (default: manylinux2014 and "
                                                       "manylinux_2_17 … 2_35 x86_64, the image's)")
    wh.add_argument("--dry-run", action="store_true", help="print the pins and the pip command only")
    loc = sub.add_parser("local", help="serve a model.tar.gz on loopback under the Hugging Face toolkit and "
                                       "multi-model-server, as the SageMaker image does (no AWS, no Docker)")
    loc.add_argument("tarball", nargs="?", help="a model.tar.gz (default: pack this checkout's model/ now)")
    loc.add_argument("--role", required=True, choices=list(REALTIME_ROLES), help="RESTYLE_ROLE of the endpoint")
    loc.add_argument("--port", type=int, default=8080, help="loopback port for /ping and /invocations "
                                                            "(default: %(default)s)")
    loc.add_argument("--tiny", metavar="DIR", nargs="?", const=".cache/tiny",
                     help="serve the tiny random checkpoints from DIR (built there if missing)")
    loc.add_argument("--model", help="RESTYLE_MODEL_ID: a local folder (the Hub is off: HF_HUB_OFFLINE=1)")
    loc.add_argument("--lora", help="RESTYLE_LORA for the inpaint role")
    loc.add_argument("--ip-adapter", metavar="SPEC",
                     help="RESTYLE_IP_ADAPTER for --role inpaint: none, or a local folder (one weights file + "
                          "image_encoder/) or DIR:subfolder:weight_name; with --isolated it becomes the model data's "
                          "ip_adapter/, as up --network-isolation stages it")
    loc.add_argument("--isolated", action="store_true",
                     help="serve the uncompressed model data --network-isolation uploads (code/, the --tiny or "
                          "--model weights at the root, looks/) with RESTYLE_MODEL_ID unset: model_fn loads "
                          "/opt/ml/model's stand-in itself")
    loc.add_argument("--toolkit", default=os.environ.get("RESTYLE_TOOLKIT_DIR"),
                     help="a folder the toolkit packages were pip install --target-ed into "
                          "(env RESTYLE_TOOLKIT_DIR; default: the current environment)")
    loc.add_argument("--workdir", help="where the tarball is extracted (default: a new temporary folder)")
    loc.add_argument("--log", help="append the model server's output to this file (default: the terminal)")
    return parser


#: What a dry run plans for when no region is configured anywhere (it says so).
DRY_RUN_REGION = "us-east-1"


def _region(args: argparse.Namespace, session: boto3.Session) -> str:
    """--region, else AWS_REGION (which botocore itself ignores), else AWS_DEFAULT_REGION / the AWS config; checked
    offline against botocore's partitions (no AWS call).  ``args.region_source`` says where it came from."""
    if args.region is not None and not args.region.strip():
        raise UsageError("--region must not be empty (leave it out for the AWS config / AWS_REGION)")
    env_region = os.environ.get("AWS_REGION", "").strip()
    if args.region:
        region, source = args.region, "--region"
    elif env_region:
        region, source = env_region, "AWS_REGION"
    elif session.region_name:
        region = session.region_name
        source = "AWS_DEFAULT_REGION" if os.environ.get("AWS_DEFAULT_REGION") else "the AWS config"
    elif args.dry_run:
        region, source = DRY_RUN_REGION, ("no region is set (--region, AWS_REGION, AWS_DEFAULT_REGION or the AWS "
                                          f"config), so the dry run plans {DRY_RUN_REGION}")
    else:
        raise UsageError("no AWS region: pass --region or set AWS_REGION / AWS_DEFAULT_REGION")
    args.region_source = source
    try:
        check_region(region)
        session.get_partition_for_region(region)
    except (PlanError, UnknownRegionError):
        raise UsageError(f"unknown AWS region {region!r} (from {source}); expected e.g. us-east-1") from None
    return region


def _require(args: argparse.Namespace, *flags: str) -> None:
    missing = [f for f in flags if not getattr(args, f.lstrip("-").replace("-", "_"))]
    if missing and not args.dry_run:
        raise UsageError(f"{args.command} needs {' and '.join(missing)} "
                         "(or env RESTYLE_BUCKET / RESTYLE_ROLE_ARN); --dry-run works without them")


def _identity(args: argparse.Namespace, session: boto3.Session, region: str) -> tuple[str, str]:
    """(account id, partition): from STS, or — for --dry-run, which calls nothing — from the role ARN."""
    if not args.dry_run:
        return account_and_partition(session, region)
    parts = (args.role_arn or "").split(":")
    account = parts[4] if len(parts) > 4 and parts[4] else PLACEHOLDER_ACCOUNT
    return account, session.get_partition_for_region(region)


def _settings(args: argparse.Namespace, region: str, account: str, partition: str) -> Settings:
    values = {f.name: getattr(args, f.name) for f in fields(Settings) if hasattr(args, f.name)}
    values.update(region=region, account_id=account, partition=partition,
                  bucket=args.bucket or PLACEHOLDER_BUCKET, role_arn=args.role_arn or PLACEHOLDER_ROLE_ARN)
    if "tags" in values:
        values["tags"] = tuple(values["tags"])
    return Settings(**values)


def _emit(args: argparse.Namespace, data: object, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def _log(args: argparse.Namespace):
    return (lambda line: print(line, file=sys.stderr)) if args.json else print


def _checked(args: argparse.Namespace, session: boto3.Session, region: str) -> Settings:
    """The settings, checked before any AWS call (so with a placeholder account; the partition is offline data)."""
    settings = _settings(args, region, PLACEHOLDER_ACCOUNT, session.get_partition_for_region(region))
    if args.command == "down":
        check_common(settings)
        names_for(settings, every=True)
    else:
        validate_settings(settings)
    return settings


def _plan(args, session, region):
    """(plan, model bundle, what to upload first).  Model flags naming a local folder (and Hub ids with
    --stage-weights) are hashed here and planned as their s3:// staging prefix; with --network-isolation each role
    becomes one uncompressed model-data prefix instead."""
    roles = _checked(args, session, region).roles()  # usage errors before any AWS call and the slow parts
    account, partition = _identity(args, session, region)
    isolated = getattr(args, "network_isolation", False)
    stage_hub = getattr(args, "stage_weights", False) or isolated  # isolated: Hub ids resolved on this machine
    wheels_dir = getattr(args, "wheels", None)
    if isolated and wheels_dir is None:
        raise UsageError("--network-isolation needs --wheels DIR (python -m deploy wheels --dest DIR): an isolated "
                         "container cannot pip install code/requirements.txt from PyPI at start")
    try:
        staged = weights.plan_staging({r: getattr(args, f"{r}_model") for r in roles}, stage_hub=stage_hub)
        looks = weights.plan_look_staging(args.lora, stage_hub=stage_hub) if "inpaint" in roles else {}
        adapter = weights.plan_ip_adapter(getattr(args, "ip_adapter", None), args.inpaint_model, staged.get("inpaint"),
                                          stage_hub=stage_hub)
    except weights.StagingError as exc:
        raise UsageError(str(exc)) from None
    args.ip_adapter, args.ip_adapter_note = adapter.spec, adapter.note
    bucket = args.bucket or PLACEHOLDER_BUCKET
    if wheels_dir is not None and not os.path.isdir(wheels_dir):
        raise UsageError(f"--wheels {wheels_dir}: no such folder (fill it with python -m deploy wheels --dest DIR)")
    if isolated:
        return _isolated_plan(args, session, region, account, partition, staged, looks, adapter.staged, wheels_dir)
    if adapter.staged is not None:  # like a look: RESTYLE_IP_ADAPTER=s3://…/ (code/inference.py copies it)
        args.ip_adapter = adapter.staged.uri(bucket, args.prefix)
        staged[weights.IP_ADAPTER_ROLE] = adapter.staged
    for role, w in staged.items():
        if role in roles:
            setattr(args, f"{role}_model", w.uri(bucket, args.prefix))
    if looks:
        from model.schemas import format_looks, parse_looks

        refs = parse_looks(args.lora)
        args.lora = format_looks({name: looks[name].uri(bucket, args.prefix) if name in looks else ref
                                  for name, ref in refs.items()})
        staged.update({f"look:{name}": w for name, w in looks.items()})
    settings = _settings(args, region, account, partition)
    bundle = _bundle(wheels_dir)
    return build_plan(settings, artifact_sha256=bundle.sha256, images=_images(args, settings, region)), bundle, staged


def _bundle(wheels_dir: str | None) -> package.Bundle:
    try:
        return package.model_tarball(wheels=Path(wheels_dir) if wheels_dir else None)
    except FileNotFoundError as exc:
        raise UsageError(f"--wheels: {exc}") from None


def _images(args: argparse.Namespace, settings: Settings, region: str) -> dict[str, str]:
    images = {}
    for itype in sorted(set(instance_types(settings).values())):
        image = args.image_uri or resolve_image(region, itype, "inference")
        if image is None:
            raise UsageError(f"the installed sagemaker SDK knows no Hugging Face inference image for {itype} in "
                             f"{region}; pass --image-uri")
        images[itype] = image
    return images


def _isolated_plan(args, session, region, account, partition, staged, looks, adapter, wheels_dir):
    """--network-isolation: one uncompressed model-data prefix per role (code/ + wheels, the weights, looks/,
    ip_adapter/)."""
    bundle = _bundle(wheels_dir)
    bucket = args.bucket or PLACEHOLDER_BUCKET
    data = {}
    try:
        for role, w in staged.items():
            data[role] = weights.model_data(role, bundle.data, bundle.sha256, w,
                                            looks if role == "inpaint" else None,
                                            adapter if role == "inpaint" else None)
    except weights.StagingError as exc:
        raise UsageError(str(exc)) from None
    args.isolated_data = tuple((role, d.uri(bucket, args.prefix)) for role, d in data.items())
    settings = _settings(args, region, account, partition)
    plan = build_plan(settings, artifact_sha256=bundle.sha256, images=_images(args, settings, region))
    return plan, bundle, data


def _staging_text(staged: dict, bucket: str, prefix: str, adapter_note: str | None = None) -> str:
    return "".join(
        f"\n  model data {w.source} -> {w.uri(bucket, prefix)}  ({len(w.files)} files, {w.size / 1e6:.1f} MB: "
        "code/ with wheels, weights, looks/; SageMaker copies it to /opt/ml/model, nothing is fetched at start)"
        if isinstance(w, weights.ModelData) else
        f"\n  weights   {w.source} -> {w.uri(bucket, prefix)}  ({len(w.files)} files, "
        f"{w.size / 1e6:.1f} MB; the endpoint copies it from S3, never from the Hub)"
        for w in staged.values()) + (f"\n  ip-adapter {adapter_note}" if adapter_note else "")


def _report(args, command: str, changes) -> int:
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.action] = counts.get(c.action, 0) + 1
    quiet = {"unchanged", "absent"}
    nothing = all(c.action in quiet for c in changes)
    summary = ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
    verdict = "unchanged — everything already matches the plan" if command == "up" else "nothing to delete"
    text = f"{command}: {verdict} ({summary})" if nothing else f"{command}: {summary}"
    _emit(args, {"command": command, "unchanged": nothing, "counts": counts, "changes": changes_as_dicts(changes)},
          text)
    return 0


def _session(args: argparse.Namespace) -> tuple[boto3.Session, str]:
    """A session in the region ``_region`` picks (AWS_REGION included), and that region."""
    region = _region(args, boto3.Session(region_name=args.region))
    return boto3.Session(region_name=region), region


def _where(args: argparse.Namespace, region: str) -> str:
    source = getattr(args, "region_source", "--region")
    return f"region {region} ({source})" if source.startswith("no region") else f"region {region} (from {source})"


def cmd_up(args: argparse.Namespace) -> int:
    _require(args, "--bucket", "--role-arn")
    session, region = _session(args)
    plan, bundle, staged = _plan(args, session, region)
    if args.dry_run:
        _emit(args, {"dry_run": True, "region_source": args.region_source, "plan": plan.to_dict(),
                     "weights": {r: {"source": w.source, "uri": w.uri(plan.bucket, args.prefix), "files": len(w.files),
                                     "bytes": w.size} for r, w in staged.items()},
                     "ip_adapter": {"spec": args.ip_adapter, "note": args.ip_adapter_note}},
              render_plan(plan) + _staging_text(staged, plan.bucket, args.prefix, args.ip_adapter_note)
              + f"\n(dry run: nothing created; {_where(args, region)})")
        return 0
    log = _log(args)
    log(f"up: {len(plan.endpoints)} endpoints in {region} (prefix {args.prefix})")
    changes = Deployer(session, region, log).up(plan, bundle, staged=list(staged.values()), s3_prefix=args.prefix)
    return _report(args, "up", changes)


def cmd_status(args: argparse.Namespace) -> int:
    """Needs only what it reads: the endpoint names (prefix / overrides) and the region.  With --bucket and
    --role-arn it also compares against the plan (artifact, model and config versions); without, it reports what
    exists under those names."""
    session, region = _session(args)
    plan, _, _ = _plan(args, session, region)
    compare = bool(args.bucket and args.role_arn)
    if args.dry_run:
        _emit(args, {"dry_run": True, "region_source": args.region_source, "plan": plan.to_dict()},
              render_plan(plan) + f"\n(dry run; {_where(args, region)})")
        return 0
    rows = Deployer(session, region, _log(args)).status(plan, compare=compare)
    text = "\n".join(f"  {r['state']:<18} {r['kind']:<16} {r['name']}" + (f"  ({r['detail']})" if r["detail"]
                                                                          else "") for r in rows)
    note = "" if compare else ("\n  (without --bucket and --role-arn the artifact, model and config versions are "
                               "not compared with the plan)")
    _emit(args, {"region": region, "compared_with_plan": compare, "resources": rows},
          f"status ({region}):\n{text}{note}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    if args.purge_s3 and not args.bucket:  # even with --dry-run: there is nothing to show without it
        raise UsageError("down --purge-s3 needs --bucket (or env RESTYLE_BUCKET)")
    session, region = _session(args)
    _checked(args, session, region)  # usage errors before any AWS call
    account, partition = _identity(args, session, region)
    names = names_for(_settings(args, region, account, partition), every=True)  # optional endpoints too
    topics = topic_arns(names, partition, region, account)
    if args.dry_run:
        targets = {
            "alarm": names.alarm,
            "monitoring_alarms (if present)": names.monitor_alarms(),
            "scaling": [resource_id(e) for e in names.endpoints.values()],
            "endpoints": list(names.endpoints.values()),
            "endpoint_configs_and_models": [f"{e}-<8 hex>" for e in names.endpoints.values()],
            "sns_topics": list(topics.values()),
            "s3": f"s3://{args.bucket}/{names.s3_prefix}/ (not {names.s3_prefix}/training/)" if args.purge_s3
            else None,
            "s3_lifecycle_rules": names.lifecycle_rule_ids() if args.bucket else None,
        }
        text = "down would delete (if present):\n" + "\n".join(f"  {k}: {v}" for k, v in targets.items() if v)
        _emit(args, {"dry_run": True, "region_source": args.region_source, "would_delete": targets},
              text + f"\n(dry run: nothing deleted; {_where(args, region)})")
        return 0
    changes = Deployer(session, region, _log(args)).down(names, topics, args.bucket, args.purge_s3)
    return _report(args, "down", changes)


def cmd_train(args: argparse.Namespace) -> int:
    _require(args, "--bucket", "--role-arn")
    session, region = _session(args)
    settings = TrainSettings(
        region=region, bucket=args.bucket or PLACEHOLDER_BUCKET, role_arn=args.role_arn or PLACEHOLDER_ROLE_ARN,
        prefix=args.prefix, lora_data=args.lora_data, clipseg_data=args.clipseg_data,
        train_instance_type=args.train_instance_type,
        hyperparameters=dict(args.hp), lora_hyperparameters=dict(args.lora_hp),
        clipseg_hyperparameters=dict(args.clipseg_hp), max_runtime=args.max_runtime, volume_size=args.volume_size)
    if not (args.lora_data or args.clipseg_data):
        raise UsageError("train needs --lora-data s3://... and/or --clipseg-data s3://...")
    if args.train_image_uri is not None and not args.train_image_uri.strip():
        raise UsageError("--train-image-uri must not be empty (leave it out for the default)")
    validate_training(settings)  # usage errors before the slow parts
    image = args.train_image_uri or resolve_image(region, args.train_instance_type, "training")
    if image is None:
        raise UsageError(f"the installed sagemaker SDK knows no Hugging Face training image for "
                         f"{args.train_instance_type} in {region}; pass --train-image-uri")
    bundle = package.sourcedir_tarball()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-%f")[:-3]
    jobs = build_training_jobs(settings, sourcedir_sha256=bundle.sha256, image=image, timestamp=stamp)
    if args.dry_run:
        text = "\n".join(
            f"  {j['TrainingJobName']}  {json.loads(j['HyperParameters']['sagemaker_program'])}  "
            f"data {j['InputDataConfig'][0]['DataSource']['S3DataSource']['S3Uri']}  "
            f"{j['ResourceConfig']['InstanceType']}" for j in jobs)
        _emit(args, {"dry_run": True, "jobs": jobs},
              f"train would launch:\n{text}\n  image {image}\n(dry run: nothing created; {_where(args, region)})")
        return 0
    deployer = Deployer(session, region, _log(args))
    deployer.put_object(args.bucket, sourcedir_key(args.prefix, bundle.sha256), bundle, "sourcedir")
    changes = deployer.train(jobs)
    _emit(args, {"command": "train", "jobs": [j["TrainingJobName"] for j in jobs],
                 "changes": changes_as_dicts(changes)},
          "train: launched " + ", ".join(j["TrainingJobName"] for j in jobs)
          + f"\n  follow: aws sagemaker describe-training-job --training-job-name {jobs[0]['TrainingJobName']}")
    return 0


def cmd_wheels(args: argparse.Namespace) -> int:
    """``pip download`` of exactly the tested versions, for the image's platform, without their dependencies
    (the closure is computed here; torch and its CUDA stack come with the image)."""
    import subprocess

    try:
        needed = package.closure()
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", args.dest,
           "--python-version", args.python_version, "--implementation", "cp",
           *[f"--platform={tag}" for tag in (args.platform or package.IMAGE_PLATFORMS)],
           *[f"{n}=={v}" for n, v in needed.items()]]
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    Path(args.dest).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or ["pip failed"]
        print(f"error: pip download failed: {last[0][:300]}", file=sys.stderr)
        return 1
    missing = package.missing_wheels(Path(args.dest), needed)
    if missing:
        print(f"error: {args.dest} still lacks {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"wheels: {len(needed)} pinned wheels for CPython {args.python_version} in {args.dest}")
    return 0


def cmd_local(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from deploy import local

    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be 1-65535, got {args.port}")
    if args.tarball and not Path(args.tarball).is_file():
        raise UsageError(f"no such model.tar.gz: {args.tarball}")
    if args.tiny and args.model:
        raise UsageError("give --tiny or --model, not both")
    if args.lora and args.role != "inpaint":
        raise UsageError("--lora is for --role inpaint")
    if args.ip_adapter is not None and args.role != "inpaint":
        raise UsageError("--ip-adapter is for --role inpaint")
    adapter, adapter_env = _local_ip_adapter(args.ip_adapter)
    model_id, lora = args.model, args.lora
    if args.tiny:
        from model.tiny import TINY_LOOKS, build_tiny

        root = build_tiny(args.tiny)
        model_id = str(Path(root, args.role).resolve())
        if args.role == "inpaint" and not lora:
            lora = ",".join(f"{n}={Path(root, 'looks', n).resolve()}" for n in TINY_LOOKS)
    if model_id is None and args.tarball is None:
        raise UsageError("give --tiny, --model FOLDER, or a model.tar.gz that holds its weights")
    tarball = Path(args.tarball) if args.tarball else package.model_tarball().data
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="restyle-local-"))
    if args.isolated:  # the layout --network-isolation uploads, served as SageMaker would copy it
        if model_id is None:
            raise UsageError("--isolated needs --tiny or --model FOLDER (the weights laid out next to code/)")
        data = _local_model_data(args.role, tarball, model_id, lora, adapter)
        tarball = data.write_to(workdir / "model-data")
        model_id = None
        lora = format_looks({n: f"{ISOLATED_LOOKS}/{n}" for n in parse_looks(lora)}) if lora else None
        adapter_env = ISOLATED_IP_ADAPTER if adapter is not None else adapter_env
    try:
        server = local.serve(tarball, role=args.role, port=args.port, workdir=workdir, model_id=model_id, lora=lora,
                             toolkit=args.toolkit, log_file=Path(args.log) if args.log else None,
                             extra_env={IP_ADAPTER_ENV: adapter_env} if adapter_env else None)
    except local.LocalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    def _terminate(signo, frame) -> None:  # `kill PID` stops MMS and its workers too
        raise KeyboardInterrupt

    import signal

    signal.signal(signal.SIGTERM, _terminate)
    try:
        local.wait_ready(server)
        print(f"serving {args.role} on http://127.0.0.1:{args.port} (/ping, /invocations) under the Hugging Face "
              "toolkit and multi-model-server; Ctrl-C stops", flush=True)
        server.process.wait()
        return server.process.returncode or 0
    except local.LocalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def _local_ip_adapter(spec: str | None) -> tuple[weights.StagedWeights | None, str | None]:
    """``deploy local --ip-adapter``: (what --isolated lays out as ip_adapter/, RESTYLE_IP_ADAPTER otherwise)."""
    if spec is None:
        return None, None
    try:
        choice = weights.plan_ip_adapter(spec, "", None, stage_hub=False)
    except weights.StagingError as exc:
        raise UsageError(str(exc)) from None
    if choice.spec == "none":
        return None, "none"
    if choice.staged is None:
        raise UsageError(f"--ip-adapter {spec}: deploy local takes none or a local folder (the Hub is off)")
    ref, sep, rest = spec.partition(":")
    return choice.staged, str(Path(ref).expanduser().resolve()) + sep + rest


def _local_model_data(role: str, tarball: bytes | Path, folder: str, lora: str | None,
                      adapter: weights.StagedWeights | None = None) -> weights.ModelData:
    data = tarball if isinstance(tarball, bytes) else Path(tarball).read_bytes()
    try:
        looks = {n: weights.scan(f"look-{n}", ref, Path(ref), flag="--lora") for n, ref in parse_looks(lora).items()}
        return weights.model_data(role, data, hashlib.sha256(data).hexdigest(),
                                  weights.scan(role, folder, Path(folder), flag="--model"), looks, adapter)
    except weights.StagingError as exc:
        raise UsageError(str(exc)) from None


COMMANDS = {"up": cmd_up, "status": cmd_status, "down": cmd_down, "train": cmd_train, "local": cmd_local,
            "wheels": cmd_wheels}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["policy"]:  # IAM policies, printed offline: deploy/policy.py
        from deploy.policy import main as policy_main

        return policy_main(argv[1:])
    if argv[:1] == ["state"]:  # the bot's shared DynamoDB table + S3 bucket: deploy/state.py
        from deploy.state import main as state_main

        return state_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UsageError, PlanError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
