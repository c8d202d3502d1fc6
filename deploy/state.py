"""``python -m deploy state --table T --bucket B [--prefix P] [--region R]`` — the shared state of several bot
replicas: a DynamoDB table (keys ``pk``/``sk``, on-demand, TTL on ``ttl``) and the S3 bucket for the pictures (no
public access, encrypted at rest, unfinished multipart uploads cleaned up under the prefix).  Idempotent: run it
again and it changes only what differs.  Then point every replica at it::

    RESTYLE_STATE=dynamodb://T  RESTYLE_MEDIA=s3://B/P

Exit codes: 0 done, 1 an AWS call failed (one line naming the resource and the AWS error code), 2 bad usage.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

DEFAULT_PREFIX = "restyle-state"
#: The bucket lifecycle rule this command owns (other rules on the bucket are left as they are).
RULE_ID = "restyle-state-{prefix}"
_TABLE_RE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class StateError(RuntimeError):
    """An AWS call failed: exit 1."""


def _code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "") or type(exc).__name__


def ensure_table(ddb: Any, table: str, wait_s: float = 300.0) -> list[str]:
    """Create ``table`` (pk/sk strings, on-demand) or bring an existing one to on-demand; TTL on ``ttl``."""
    from botocore.exceptions import ClientError

    changes = []
    try:
        desc = ddb.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        if _code(exc) != "ResourceNotFoundException":
            raise StateError(f"table {table}: {_code(exc)}: {exc}") from None
        ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                               {"AttributeName": "sk", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                    {"AttributeName": "sk", "KeyType": "RANGE"}],
                         Tags=[{"Key": "restyle", "Value": "state"}])
        changes.append(f"created table {table} (on-demand, keys pk/sk)")
        desc = ddb.describe_table(TableName=table)["Table"]
    keys = {k["AttributeName"]: k["KeyType"] for k in desc.get("KeySchema", [])}
    if keys != {"pk": "HASH", "sk": "RANGE"}:
        raise StateError(f"table {table}: its keys are {keys}, not pk (HASH) / sk (RANGE): not a restyle state "
                         f"table; choose another --table")
    deadline = time.monotonic() + wait_s
    while desc.get("TableStatus") not in ("ACTIVE", None):
        if time.monotonic() > deadline:
            raise StateError(f"table {table}: still {desc.get('TableStatus')} after {wait_s:.0f} s")
        time.sleep(2)
        desc = ddb.describe_table(TableName=table)["Table"]
    if (desc.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED") != "PAY_PER_REQUEST" \
            and not any("created" in c for c in changes):
        ddb.update_table(TableName=table, BillingMode="PAY_PER_REQUEST")
        changes.append(f"table {table}: billing → on-demand")
    ttl = ddb.describe_time_to_live(TableName=table).get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING") or ttl.get("AttributeName") != "ttl":
        ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
        changes.append(f"table {table}: TTL on the ttl attribute")
    return changes


def ensure_bucket(s3: Any, bucket: str, prefix: str, region: str) -> list[str]:
    """Create ``bucket`` if missing; block public access, default encryption, and a lifecycle rule for ``prefix``
    (abort multipart uploads left unfinished for a day) merged into the bucket's other rules."""
    from botocore.exceptions import ClientError

    changes = []
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise StateError(f"bucket {bucket}: {_code(exc)} (owned by another account, or no access)") from None
        args: dict = {"Bucket": bucket}
        if region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**args)
        changes.append(f"created bucket {bucket} in {region}")
    block = {k: True for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")}
    try:
        current = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    except ClientError:
        current = {}
    if current != block:
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block)
        changes.append(f"bucket {bucket}: public access blocked")
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    except ClientError:
        rules = []
    if not rules:
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [
            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        changes.append(f"bucket {bucket}: default encryption (SSE-S3)")
    rule_id = RULE_ID.format(prefix=prefix or "all")
    ours = {"ID": rule_id, "Status": "Enabled", "Filter": {"Prefix": f"{prefix}/" if prefix else ""},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}
    try:
        existing = s3.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except ClientError:
        existing = []
    mine = next((r for r in existing if r.get("ID") == rule_id), None)
    if mine is None or any(mine.get(k) != v for k, v in ours.items()):
        others = [r for r in existing if r.get("ID") != rule_id]
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [*others, ours]})
        changes.append(f"bucket {bucket}: lifecycle rule {rule_id}")
    return changes


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m deploy state", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", required=True, help="DynamoDB table name (RESTYLE_STATE=dynamodb://TABLE)")
    ap.add_argument("--bucket", required=True, help="S3 bucket for the pictures (RESTYLE_MEDIA=s3://BUCKET/PREFIX)")
    ap.add_argument("--prefix", default=DEFAULT_PREFIX, help="S3 key prefix of the pictures (default: %(default)s)")
    ap.add_argument("--region", help="AWS region (default: the AWS config / AWS_REGION / AWS_DEFAULT_REGION)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    prefix = args.prefix.strip("/")
    if not _TABLE_RE.match(args.table):
        print(f"error: --table {args.table!r}: 3-255 letters, digits, '_', '-' or '.'", file=sys.stderr)
        return 2
    if not _BUCKET_RE.match(args.bucket):
        print(f"error: --bucket {args.bucket!r}: 3-63 lowercase letters, digits, '.' or '-'", file=sys.stderr)
        return 2
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        session = boto3.session.Session(region_name=args.region)
        region = session.region_name
        if not region:
            print("error: no AWS region: pass --region or set AWS_REGION", file=sys.stderr)
            return 2
        changes = ensure_table(session.client("dynamodb"), args.table)
        changes += ensure_bucket(session.client("s3"), args.bucket, prefix, region)
    except StateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        print(f"error: {_code(exc)}: {exc}", file=sys.stderr)
        return 1
    for line in changes:
        print(line)
    if not changes:
        print(f"state: unchanged — table {args.table} and bucket {args.bucket} already match")
    media = f"s3://{args.bucket}/{prefix}" if prefix else f"s3://{args.bucket}"
    print(f"point every replica at it: RESTYLE_STATE=dynamodb://{args.table} RESTYLE_MEDIA={media}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
