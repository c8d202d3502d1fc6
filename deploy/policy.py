"""``python -m deploy policy --bot | --deploy | --execution`` — least-privilege IAM policies, printed as JSON.

* ``--bot``: the bot's task role (ECS task role, App Runner instance role …): invoke the endpoints (the optional
  ``<prefix>-upscale`` included), the async
  batch objects on S3, the Slack secret in Secrets Manager, and — when given — the shared-state table and media
  prefix.
* ``--deploy``: whoever runs ``python -m deploy up | status | down | train``.
* ``--execution``: the SageMaker execution role the endpoints and training jobs run as (``--role-arn``).

Made offline (no AWS call): ARNs are built from ``--partition``/``--region``/``--account`` (``*`` where not given)
and the same names ``python -m deploy up`` uses (``--prefix``, endpoint overrides).  Exit 2 with one line on bad
usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

DEFAULT_PREFIX = "restyle"
#: Where the bot puts async batch inputs (bot/backends.py): fixed, independent of --prefix.
ASYNC_INPUT_PREFIX = "restyle/async-in"
ACCOUNT = re.compile(r"\d{12}|\*")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class PolicyError(ValueError):
    """Bad usage: one line for stderr."""


def _statement(sid: str, actions: list[str], resources: list[str] | str, **condition) -> dict:
    st: dict = {"Sid": sid, "Effect": "Allow", "Action": sorted(actions),
                "Resource": resources if isinstance(resources, str) else list(resources)}
    if condition:
        st["Condition"] = condition["condition"]
    return st


def _doc(statements: list[dict]) -> dict:
    return {"Version": "2012-10-17", "Statement": statements}


class Arns:
    def __init__(self, partition: str, region: str, account: str) -> None:
        self.p, self.r, self.a = partition, region, account

    def endpoint(self, name: str) -> str:
        return f"arn:{self.p}:sagemaker:{self.r}:{self.a}:endpoint/{name.lower()}"

    def sm(self, kind: str, name: str) -> str:
        return f"arn:{self.p}:sagemaker:{self.r}:{self.a}:{kind}/{name.lower()}"

    def s3(self, bucket: str, key: str = "") -> str:
        return f"arn:{self.p}:s3:::{bucket}" + (f"/{key}" if key else "")

    def secret(self, secret_id: str) -> str:
        if secret_id.startswith("arn:"):
            return secret_id
        # Secrets Manager appends "-" and 6 random characters to a secret's name in its ARN
        return f"arn:{self.p}:secretsmanager:{self.r}:{self.a}:secret:{secret_id}-??????"

    def table(self, name: str) -> str:
        return f"arn:{self.p}:dynamodb:{self.r}:{self.a}:table/{name}"

    def topic(self, name: str) -> str:
        return f"arn:{self.p}:sns:{self.r}:{self.a}:{name}"


#: The real-time endpoint keys the bot invokes (the optional upscale one included: a name that does not exist
#: grants nothing), and the async one.
REALTIME = ("clipseg", "inpaint", "upscale")


def endpoints(args: argparse.Namespace) -> dict[str, str]:
    defaults = {"async": f"{args.prefix}-inpaint-async"}
    return {k: getattr(args, f"{k}_endpoint") or defaults.get(k, f"{args.prefix}-{k}") for k in (*REALTIME, "async")}


def _s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise PolicyError(f"--media must be s3://BUCKET/PREFIX, got {uri!r}")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not BUCKET.fullmatch(bucket):
        raise PolicyError(f"--media: {bucket!r} is not an S3 bucket name")
    return bucket, prefix.strip("/")


def bot_policy(args: argparse.Namespace, arn: Arns) -> dict:
    eps = endpoints(args)
    sts = [
        _statement("InvokeRealtimeEndpoints", ["sagemaker:InvokeEndpoint"],
                   [arn.endpoint(eps[k]) for k in REALTIME]),
        _statement("InvokeAsyncEndpoint", ["sagemaker:InvokeEndpointAsync"], [arn.endpoint(eps["async"])]),
    ]
    if args.bucket:
        sts += [
            _statement("WriteAsyncInputs", ["s3:PutObject"], [arn.s3(args.bucket, f"{ASYNC_INPUT_PREFIX}/*")]),
            _statement("ReadAsyncResults", ["s3:GetObject"],
                       [arn.s3(args.bucket, f"{args.prefix}/async-out/*"),
                        arn.s3(args.bucket, f"{args.prefix}/async-failures/*")]),
        ]
    if args.secret_id:
        sts.append(_statement("ReadSlackSecret", ["secretsmanager:GetSecretValue"], [arn.secret(args.secret_id)]))
    if args.table:
        sts.append(_statement("SharedStateTable", [
            "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query",
            "dynamodb:ConditionCheckItem", "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem",
            "dynamodb:TransactGetItems", "dynamodb:TransactWriteItems", "dynamodb:DescribeTable"],
            [arn.table(args.table), arn.table(args.table) + "/index/*"]))
    if args.media:
        bucket, prefix = _s3_uri(args.media)
        objects = f"{prefix}/*" if prefix else "*"
        sts.append(_statement("SharedMedia", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                              [arn.s3(bucket, objects)]))
        sts.append(_statement("ListSharedMedia", ["s3:ListBucket"], [arn.s3(bucket)],
                              condition={"StringLike": {"s3:prefix": [objects]}}))
    return _doc(sts)


def deploy_policy(args: argparse.Namespace, arn: Arns) -> dict:
    if not args.bucket:
        raise PolicyError("--deploy needs --bucket (the artifacts bucket of `python -m deploy up`)")
    eps = endpoints(args)
    versions = [arn.sm(kind, f"{name}-*") for name in eps.values() for kind in ("model", "endpoint-config")]
    role = args.role_arn or f"arn:{arn.p}:iam::{arn.a}:role/*"
    return _doc([
        _statement("Endpoints", [
            "sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint", "sagemaker:DeleteEndpoint",
            "sagemaker:DescribeEndpoint", "sagemaker:AddTags", "sagemaker:ListTags"],
            [arn.endpoint(name) for name in eps.values()] + versions),
        _statement("ModelsAndConfigs", [
            "sagemaker:CreateModel", "sagemaker:DescribeModel", "sagemaker:DeleteModel",
            "sagemaker:CreateEndpointConfig", "sagemaker:DescribeEndpointConfig", "sagemaker:DeleteEndpointConfig"],
            versions),
        _statement("ListVersions", ["sagemaker:ListModels", "sagemaker:ListEndpointConfigs"], "*"),
        _statement("Training", ["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:AddTags"],
                   [arn.sm("training-job", f"{args.prefix}-*")]),
        _statement("PassExecutionRole", ["iam:PassRole"], [role],
                   condition={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
        _statement("AutoScaling", [
            "application-autoscaling:RegisterScalableTarget", "application-autoscaling:DeregisterScalableTarget",
            "application-autoscaling:DescribeScalableTargets", "application-autoscaling:PutScalingPolicy",
            "application-autoscaling:DeleteScalingPolicy", "application-autoscaling:DescribeScalingPolicies"], "*"),
        _statement("AutoScalingServiceRole", ["iam:CreateServiceLinkedRole"],
                   [f"arn:{arn.p}:iam::{arn.a}:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
                    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"],
                   condition={"StringLike": {"iam:AWSServiceName": "sagemaker.application-autoscaling.amazonaws.com"}}),
        _statement("AsyncAlarm", ["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"],
                   [f"arn:{arn.p}:cloudwatch:{arn.r}:{arn.a}:alarm:{name}-*" for name in eps.values()]),
        _statement("DescribeAlarms", ["cloudwatch:DescribeAlarms"], "*"),
        _statement("AsyncTopics", ["sns:CreateTopic", "sns:GetTopicAttributes", "sns:DeleteTopic"],
                   [arn.topic(f"{args.prefix}-async-success"), arn.topic(f"{args.prefix}-async-error")]),
        _statement("Artifacts", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                   [arn.s3(args.bucket, f"{args.prefix}/*")]),
        _statement("ListArtifacts", ["s3:ListBucket"], [arn.s3(args.bucket)],
                   condition={"StringLike": {"s3:prefix": [f"{args.prefix}/*"]}}),
        _statement("WhoAmI", ["sts:GetCallerIdentity"], "*"),
    ])


def execution_policy(args: argparse.Namespace, arn: Arns) -> dict:
    if not args.bucket:
        raise PolicyError("--execution needs --bucket (the artifacts bucket of `python -m deploy up`)")
    return _doc([
        _statement("PullImages", ["ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                                  "ecr:BatchCheckLayerAvailability"], "*"),
        _statement("Logs", ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                            "logs:DescribeLogStreams"],
                   [f"arn:{arn.p}:logs:{arn.r}:{arn.a}:log-group:/aws/sagemaker/*"]),
        _statement("Metrics", ["cloudwatch:PutMetricData"], "*"),
        _statement("ReadModelsAndInputs", ["s3:GetObject"],
                   [arn.s3(args.bucket, f"{args.prefix}/*"), arn.s3(args.bucket, f"{ASYNC_INPUT_PREFIX}/*")]
                   + [arn.s3(b, "*") for b in args.model_bucket]),
        _statement("WriteResults", ["s3:PutObject"],
                   [arn.s3(args.bucket, f"{args.prefix}/{d}/*") for d in ("async-out", "async-failures",
                                                                           "training")]),
        _statement("ListBucket", ["s3:ListBucket"], [arn.s3(args.bucket)] + [arn.s3(b) for b in args.model_bucket]),
        _statement("AsyncNotifications", ["sns:Publish"],
                   [arn.topic(f"{args.prefix}-async-success"), arn.topic(f"{args.prefix}-async-error")]),
    ])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m deploy policy", description=__doc__.splitlines()[0])
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--bot", action="store_true", help="the bot's task role")
    which.add_argument("--deploy", action="store_true", help="the role that runs python -m deploy")
    which.add_argument("--execution", action="store_true", help="the SageMaker execution role (--role-arn of up)")
    ap.add_argument("--partition", default="aws")
    ap.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "*")
    ap.add_argument("--account", default="*", help="12-digit account id (default *)")
    ap.add_argument("--prefix", default=DEFAULT_PREFIX, help="as given to python -m deploy up (default restyle)")
    ap.add_argument("--bucket", default=os.environ.get("RESTYLE_BUCKET"),
                    help="the deploy bucket (env RESTYLE_BUCKET); --bot: RESTYLE_ASYNC_BUCKET")
    ap.add_argument("--role-arn", default=os.environ.get("RESTYLE_ROLE_ARN"),
                    help="--deploy: the execution role it may pass (default: any role in the account)")
    ap.add_argument("--clipseg-endpoint")
    ap.add_argument("--inpaint-endpoint")
    ap.add_argument("--async-endpoint")
    ap.add_argument("--upscale-endpoint")
    ap.add_argument("--secret-id", default=os.environ.get("RESTYLE_SLACK_SECRET_ID"),
                    help="--bot: the Slack secret's name or ARN (env RESTYLE_SLACK_SECRET_ID)")
    ap.add_argument("--table", help="--bot: the DynamoDB state table")
    ap.add_argument("--media", help="--bot: s3://BUCKET/PREFIX of shared media")
    ap.add_argument("--model-bucket", action="append", default=[],
                    help="--execution: another bucket holding s3:// models or looks (repeatable)")
    return ap


def make_policy(argv: list[str]) -> dict:
    args = build_parser().parse_args(argv)
    if not ACCOUNT.fullmatch(args.account):
        raise PolicyError(f"--account must be a 12-digit account id, got {args.account!r}")
    if not NAME.fullmatch(args.prefix):
        raise PolicyError(f"--prefix must be letters, digits and hyphens, got {args.prefix!r}")
    for flag, bucket in (("--bucket", args.bucket), *(("--model-bucket", b) for b in args.model_bucket)):
        if bucket and not BUCKET.fullmatch(bucket):
            raise PolicyError(f"{flag}: {bucket!r} is not an S3 bucket name")
    arn = Arns(args.partition, args.region, args.account)
    if args.bot:
        return bot_policy(args, arn)
    if args.deploy:
        return deploy_policy(args, arn)
    return execution_policy(args, arn)


def main(argv: list[str] | None = None) -> int:
    try:
        doc = make_policy(sys.argv[1:] if argv is None else argv)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=2))
    return 0
