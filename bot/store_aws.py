"""Thread sessions on DynamoDB + S3, shared by several replicas of the bot (``RESTYLE_STATE=dynamodb://TABLE``,
``RESTYLE_MEDIA=s3://BUCKET/PREFIX``).

One table, keys ``pk``/``sk`` (both strings), typed attributes (maps, lists, numbers; no JSON text):

=====================  ======================  ===================================================================
pk                     sk                      what
=====================  ======================  ===================================================================
``T#<thread>``         ``THREAD``              user, created, original (media key), base_stack (list), context and
                                               settings (maps), ``var_count`` (the last variation number given)
``T#<thread>``         ``TURN#<turn>``         one turn: text, action, intent (map), prompt, base, strength,
                                               garments (list), status, error, reported, owner (replica id)
``T#<thread>``         ``VAR#<number:08d>``    one variation: id, turn, number, seed, path (media key), ``favs``
                                               (string set of ``user<TAB>source`` marks), ``clk_*`` clocks
``T#<thread>``         ``PENDING``             the question restyle is waiting on (``data``: a map)
``T#<thread>``         ``LEASE``               who runs the thread's generation now: owner, token, expires
``T#<thread>``         ``MSG#<channel:ts>``    a posted message showing one of its variations (what forget deletes)
``TURN#<turn>``        ``TURN``                turn id → thread
``V#<variation>``      ``V``                   variation id → thread, number
``M#<channel:ts>``     ``M``                   a posted message → the variation it shows
``E#<event id>``       ``E``                   an event already handled (``ttl``: DynamoDB's TTL deletes it)
``THREADS``            ``<thread>``            every thread: created, ``last_activity`` (the photo, then each
                                               turn's start: ``latest_thread``, ``idle_threads``)
``REPLICAS``           ``<replica id>``        a live replica's heartbeat (``expires``)
``RUNNING``            ``<turn>``              a running turn and its owner
``INTERRUPTED``        ``<turn>``              an interrupted turn not yet reported in its thread
``U#<YYYY-MM-DD>``     ``<at:017.6f>#<id>``    one generation's usage that UTC day: at, user, channel, thread, images,
                                               gpu_s (sorted by time)
``USAGE``              ``DAYS``                ``days``: the UTC days that have usage (a string set)
``LIMITS``             ``<key>``               a limit set from Slack: value (null: unlimited), by, at
``N#<key>``            ``N``                   a one-time note already given (``claim_notice``)
``FORGOTTEN``          ``<thread>``            a deleted thread: at, reason (``retention`` / ``forget``)
=====================  ======================  ===================================================================

Pictures are PNG files: written to a local cache folder, uploaded to S3 *before* the row naming them is written, and
read through the cache (downloaded on a miss), so the engine keeps opening local paths.  Rows hold media keys
relative to the prefix (``threads/<slug>/original.png``); each replica maps them into its own cache.

Numbering: an ``UpdateItem ADD var_count :n`` on the thread item reserves ``n`` numbers atomically, then the variation
rows are put with ``attribute_not_exists`` conditions in one transaction with the turn's ``done``.  Each replica
writes a heartbeat (``REPLICAS``) every few seconds; a turn still ``running`` whose owner's heartbeat has lapsed
(a crashed replica) becomes ``interrupted`` the next time any replica looks, and is reported in its thread by the
replica whose conditional ``mark_reported`` wins.

Team controls (``bot/controls.py``): ``usage_total(since)`` queries the day partitions from ``since``'s UTC day on
(the days ``USAGE/DAYS`` lists) and sums the rows, filtered by user/channel; ``idle_threads`` queries the
``THREADS`` partition and compares ``last_activity`` (no scan, no secondary index: at a team's scale, thousands of
threads, one partition read an hour per replica); ``forget_thread`` deletes the S3 objects under the thread's
folder, its items and pointers, and last the thread item with ``FORGOTTEN`` put in one transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from PIL import Image

from bot.store import EVENT_TTL_S, LeaseTimeout, StateStore, Store, Turn, Variation, _slug, save_png
from model import parallel

log = logging.getLogger(__name__)

#: A lease not renewed for this long is free again (its holder crashed); holders renew it every LEASE_S / 3.
LEASE_S = 60.0
#: A replica whose heartbeat is older than this is gone: its running turns are interrupted.
REPLICA_TTL_S = 30.0
#: DynamoDB transactions take at most 100 items.
_TX_MAX = 100
_SEP = "\t"


class StateUnavailable(ValueError):
    """The table or the bucket is missing or unusable: the bot refuses to start, naming the command that fixes it."""


def parse_state(url: str) -> str:
    """``dynamodb://TABLE`` → TABLE (ValueError naming RESTYLE_STATE otherwise)."""
    if not url.startswith("dynamodb://") or not url[len("dynamodb://"):].strip("/"):
        raise ValueError(f"RESTYLE_STATE must be dynamodb://TABLE (or unset for SQLite under RESTYLE_DATA_DIR), "
                         f"got {url!r}")
    table = url[len("dynamodb://"):].strip("/")
    if "/" in table or not 3 <= len(table) <= 255:
        raise ValueError(f"RESTYLE_STATE: {table!r} is not a DynamoDB table name")
    return table


def parse_media(url: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` → (BUCKET, PREFIX without slashes at either end; may be empty)."""
    if not url.startswith("s3://") or not url[len("s3://"):].split("/", 1)[0]:
        raise ValueError(f"RESTYLE_MEDIA must be s3://BUCKET/PREFIX, got {url!r}")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    return bucket, prefix.strip("/")


def _ddb(value: Any) -> Any:
    """Python → what boto3's TypeSerializer takes (floats as Decimal, tuples as lists)."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int, Decimal, bytes)):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {str(k): _ddb(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_ddb(v) for v in value]
    if isinstance(value, set):
        return {_ddb(v) for v in value}
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store a {type(value).__name__} in DynamoDB")


def _py(value: Any) -> Any:
    """What TypeDeserializer gives → plain Python (Decimal → int or float)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    if isinstance(value, dict):
        return {k: _py(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_py(v) for v in value]
    if isinstance(value, set):
        return {_py(v) for v in value}
    return value


class DynamoStore(StateStore):
    """``StateStore`` on one DynamoDB table and an S3 prefix; any number of replicas share it."""

    def __init__(self, table: str, bucket: str, prefix: str, cache_dir: Path, *, region: str | None = None,
                 lease_s: float = LEASE_S, replica_ttl_s: float = REPLICA_TTL_S, session: Any = None,
                 check: bool = True) -> None:
        import boto3
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
        from botocore.config import Config

        self.table, self.bucket, self.prefix = table, bucket, prefix.strip("/")
        self.root = Path(cache_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        session = session or boto3.session.Session(region_name=region)
        cfg = Config(retries={"max_attempts": 8, "mode": "adaptive"}, max_pool_connections=32)
        self._ddb = session.client("dynamodb", config=cfg)  # AWS_ENDPOINT_URL is honoured by boto3 itself
        self._s3 = session.client("s3", config=cfg)
        self._ser, self._de = TypeSerializer(), TypeDeserializer()
        self.lease_s, self.replica_ttl_s = float(lease_s), float(replica_ttl_s)
        self.replica = f"{os.uname().nodename[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._held: dict[str, str] = {}  # thread → lease token
        self._held_lock = threading.Lock()
        self._turn_threads: dict[str, str] = {}  # turn → thread (never changes)
        self._stop = threading.Event()
        if check:
            self._check()
        self._beat()
        self._heart = threading.Thread(target=self._heartbeat, name="restyle-state-heartbeat", daemon=True)
        self._heart.start()

    @classmethod
    def from_settings(cls, settings: Any) -> DynamoStore:
        bucket, prefix = parse_media(settings.media or "")
        return cls(parse_state(settings.state), bucket, prefix, Path(settings.data_dir) / "cache")

    def _hint(self) -> str:
        prefix = f" --prefix {self.prefix}" if self.prefix else ""
        return f"python -m deploy state --table {self.table} --bucket {self.bucket}{prefix}"

    def _check(self) -> None:
        """Refuse to start on a missing table or bucket, with one line naming the command that creates them."""
        from botocore.exceptions import ClientError

        try:
            desc = self._ddb.describe_table(TableName=self.table)["Table"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                raise StateUnavailable(f"RESTYLE_STATE: the DynamoDB table {self.table!r} does not exist; create it "
                                       f"with `{self._hint()}`") from None
            raise StateUnavailable(f"RESTYLE_STATE: cannot read the DynamoDB table {self.table!r} ({code}: "
                                   f"{exc})") from None
        keys = {k["AttributeName"]: k["KeyType"] for k in desc.get("KeySchema", [])}
        if keys != {"pk": "HASH", "sk": "RANGE"}:
            raise StateUnavailable(f"RESTYLE_STATE: the table {self.table!r} has keys {keys}, not pk/sk; it is not "
                                   f"a restyle table (`{self._hint()}` creates one under a new name)")
        try:  # a listing under the prefix: what the task role's policy allows (`deploy policy --bot --media`)
            self._s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "", MaxKeys=1)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise StateUnavailable(f"RESTYLE_MEDIA: cannot use the bucket {self.bucket!r} ({code}); create it with "
                                   f"`{self._hint()}`") from None

    # -- low-level ---------------------------------------------------------------------------------------------------
    def _key(self, pk: str, sk: str) -> dict:
        return {"pk": {"S": pk}, "sk": {"S": sk}}

    def _enc(self, item: dict) -> dict:
        return {k: self._ser.serialize(_ddb(v)) for k, v in item.items()}

    def _dec(self, item: dict | None) -> dict | None:
        return None if item is None else {k: _py(self._de.deserialize(v)) for k, v in item.items()}

    def _values(self, values: dict) -> dict:
        return {k: self._ser.serialize(_ddb(v)) for k, v in values.items()}

    def _get(self, pk: str, sk: str, consistent: bool = True) -> dict | None:
        res = self._ddb.get_item(TableName=self.table, Key=self._key(pk, sk), ConsistentRead=consistent)
        return self._dec(res.get("Item"))

    def _put(self, item: dict, **kw) -> None:
        self._do("put_item", TableName=self.table, Item=self._enc(item), **kw)

    def _query(self, pk: str, begins: str | None = None, *, sk_from: str | None = None, **kw) -> list[dict]:
        """Every item of partition ``pk`` (pages followed), its sort key starting with ``begins`` or, with
        ``sk_from``, at least that."""
        cond, values = "pk = :pk", {":pk": pk}
        if begins:
            cond += " AND begins_with(sk, :b)"
            values[":b"] = begins
        elif sk_from is not None:
            cond += " AND sk >= :f"
            values[":f"] = sk_from
        out, start = [], None
        while True:
            args = {"TableName": self.table, "KeyConditionExpression": cond, "ConsistentRead": True,
                    "ExpressionAttributeValues": self._values(values), **kw}
            if start:
                args["ExclusiveStartKey"] = start
            res = self._ddb.query(**args)
            out += [self._dec(i) for i in res.get("Items", [])]
            start = res.get("LastEvaluatedKey")
            if not start:
                return out

    def _update(self, pk: str, sk: str, expr: str, values: dict | None = None, names: dict | None = None,
                **kw) -> dict | None:
        args: dict = {"TableName": self.table, "Key": self._key(pk, sk), "UpdateExpression": expr, **kw}
        if values:
            args["ExpressionAttributeValues"] = self._values(values)
        if names:
            args["ExpressionAttributeNames"] = names
        return self._dec(self._do("update_item", **args).get("Attributes"))

    def _do(self, op: str, **args) -> dict:
        """One write; retried while DynamoDB refuses it for a transaction in flight on the same item
        (``TransactionConflictException``: nothing was applied)."""
        for attempt in range(8):
            try:
                return getattr(self._ddb, op)(**args)
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                if code != "TransactionConflictException" or attempt == 7:
                    raise
                time.sleep(min(0.5, 0.02 * 2 ** attempt))
        raise AssertionError("unreachable")

    def _transact(self, items: list[dict]) -> None:
        for i in range(0, len(items), _TX_MAX):
            self._tx_write(items[i:i + _TX_MAX])

    def _tx_write(self, items: list[dict], attempts: int = 8) -> None:
        """One transaction, retried while DynamoDB cancels it only for a conflict with another write in flight
        (``TransactionConflict``, throttling): nothing was applied then.  A failed condition is raised at once."""
        for attempt in range(attempts):
            try:
                self._ddb.transact_write_items(TransactItems=items)
                return
            except Exception as exc:
                reasons = {r.get("Code") for r in getattr(exc, "response", {}).get("CancellationReasons", [])}
                transient = reasons and reasons <= {None, "None", "TransactionConflict", "ThrottlingError"} \
                    and reasons - {None, "None"}
                if not transient or attempt == attempts - 1:
                    raise
                time.sleep(min(0.5, 0.02 * 2 ** attempt))

    @staticmethod
    def _failed(exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return code in ("ConditionalCheckFailedException", "TransactionCanceledException")

    def ping(self) -> None:
        """One real read (for /healthz)."""
        self._get("REPLICAS", self.replica, consistent=False)

    # -- media ---------------------------------------------------------------------------------------------------
    def _s3_key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _rel(self, path: Path | str) -> str:
        """A local picture path → what rows hold: its media key under the cache, else the absolute path."""
        p = Path(path)
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return str(p)

    def _local(self, ref: str) -> Path:
        """What a row holds → a local path that exists (downloaded into the cache on a miss)."""
        if os.path.isabs(ref):
            return Path(ref)
        path = self.root / ref
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
            self._s3.download_file(self.bucket, self._s3_key(ref), str(tmp))
            os.replace(tmp, path)
        return path

    def _save(self, img: Image.Image, path: Path) -> str:
        """Save locally, upload, return the media key (the row naming it is written only after this returns)."""
        save_png(img, path)
        rel = self._rel(path)
        self._s3.upload_file(str(path), self.bucket, self._s3_key(rel), ExtraArgs={"ContentType": "image/png"})
        return rel

    def thread_dir(self, thread: str) -> Path:
        return self.root / "threads" / _slug(thread)

    # -- replicas, leases ----------------------------------------------------------------------------------------
    def _beat(self) -> None:
        now = time.time()
        self._put({"pk": "REPLICAS", "sk": self.replica, "expires": now + self.replica_ttl_s,
                   "ttl": int(now + self.replica_ttl_s + 86400)})

    def _heartbeat(self) -> None:
        every = max(0.05, min(self.replica_ttl_s, self.lease_s) / 3)
        while not self._stop.wait(every):
            try:
                self._beat()
                with self._held_lock:
                    held = dict(self._held)
                for thread, token in held.items():
                    self._renew(thread, token)
            except Exception:  # a blip: the next beat tries again (expiry is several beats away)
                log.warning("state heartbeat failed", exc_info=True)

    def _renew(self, thread: str, token: str) -> None:
        now = time.time()
        try:
            self._update(f"T#{thread}", "LEASE", "SET expires = :e, #t = :ttl",
                         {":e": now + self.lease_s, ":ttl": int(now + self.lease_s + 3600), ":tok": token},
                         {"#t": "ttl"}, ConditionExpression="lease_token = :tok")
        except Exception as exc:
            if not self._failed(exc):
                raise
            log.warning("lost the lease on thread %s (it expired and another replica took it)", thread)

    def _live_replicas(self) -> set[str]:
        now = time.time()
        return {r["sk"] for r in self._query("REPLICAS") if float(r.get("expires", 0)) > now}

    @contextlib.contextmanager
    def lease(self, thread: str, timeout: float | None = None) -> Iterator[None]:
        """A conditional put of ``T#thread / LEASE`` (free, or expired), renewed by the heartbeat while held and
        deleted on exit; a crashed holder's lease expires after ``lease_s``."""
        token = f"{self.replica}/{uuid.uuid4().hex[:8]}"
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.02
        while True:
            now = time.time()
            try:
                self._put({"pk": f"T#{thread}", "sk": "LEASE", "owner": self.replica, "lease_token": token,
                           "expires": now + self.lease_s, "ttl": int(now + self.lease_s + 3600)},
                          ConditionExpression="attribute_not_exists(pk) OR expires < :now",
                          ExpressionAttributeValues=self._values({":now": now}))
                break
            except Exception as exc:
                if not self._failed(exc):
                    raise
            if deadline is not None and time.monotonic() >= deadline:
                raise LeaseTimeout(f"thread {thread!r} is busy on another replica")
            time.sleep(delay)
            delay = min(0.5, delay * 2)
        with self._held_lock:
            self._held[thread] = token
        try:
            yield
        finally:
            with self._held_lock:
                self._held.pop(thread, None)
            try:
                self._do("delete_item", TableName=self.table, Key=self._key(f"T#{thread}", "LEASE"),
                                      ConditionExpression="lease_token = :tok",
                                      ExpressionAttributeValues=self._values({":tok": token}))
            except Exception as exc:
                if not self._failed(exc):
                    log.warning("could not release the lease on %s: %s", thread, exc)

    def close(self, graceful: bool = True) -> None:
        """Stop the heartbeat; ``graceful``: say so at once (this replica's running turns become interrupted for the
        others now, not after its heartbeat lapses)."""
        self._stop.set()
        if graceful:
            with contextlib.suppress(Exception):
                self._do("delete_item", TableName=self.table, Key=self._key("REPLICAS", self.replica))

    # -- threads -------------------------------------------------------------------------------------------------
    def _thread(self, thread: str) -> dict:
        item = self._get(f"T#{thread}", "THREAD")
        if item is None:
            raise KeyError(f"no thread {thread!r}")
        return item

    def create_thread(self, thread: str, user: str, image: Image.Image) -> Path:
        path = self.thread_dir(thread) / "original.png"
        rel = self._save(image, path)
        now = time.time()
        # the counter survives a re-created thread (numbers never repeat in a thread)
        self._update(f"T#{thread}", "THREAD",
                     "SET created = :c, #u = :u, original = :o, base_stack = :e, context = :m, settings = :m, "
                     "var_count = if_not_exists(var_count, :z), thread_id = :t",
                     {":c": now, ":u": user, ":o": rel, ":e": [], ":m": {}, ":z": 0, ":t": thread}, {"#u": "user"})
        self._put({"pk": "THREADS", "sk": thread, "created": now, "last_activity": now})
        return path

    def has_thread(self, thread: str) -> bool:
        res = self._ddb.get_item(TableName=self.table, Key=self._key(f"T#{thread}", "THREAD"),
                                 ProjectionExpression="pk", ConsistentRead=True)
        return "Item" in res

    def latest_thread(self, prefix: str) -> str | None:
        rows = self._query("THREADS", prefix or None)
        return max(rows, key=lambda r: r["created"])["sk"] if rows else None

    def original(self, thread: str) -> Path:
        return self._local(self._thread(thread)["original"])

    def set_swatch(self, thread: str, user: str, image: Image.Image) -> Path:
        path = self.thread_dir(thread) / f"swatch-{uuid.uuid4().hex[:8]}.png"
        rel = self._save(image, path)  # in S3 before the thread names it
        self._update(f"T#{thread}", "THREAD", "SET swatch = :s, swatch_user = :u", {":s": rel, ":u": user})
        return path

    def swatch(self, thread: str, name: str | None = None) -> Path | None:
        rel = self._rel(self.thread_dir(thread) / Path(name).name) if name is not None else \
            self._thread(thread).get("swatch")
        if not rel:
            return None
        from botocore.exceptions import ClientError

        try:
            return self._local(rel)  # another replica's swatch: fetched from S3 into this one's cache
        except ClientError:
            return None

    def base(self, thread: str) -> tuple[Path, Variation | None]:
        stack = self._thread(thread).get("base_stack") or []
        if stack:
            v = self.variation(stack[-1])
            if v is not None:
                return v.path, v
        return self.original(thread), None

    def push_base(self, thread: str, variation_id: str) -> None:
        self._update(f"T#{thread}", "THREAD", "SET base_stack = list_append(if_not_exists(base_stack, :e), :v)",
                     {":e": [], ":v": [variation_id]})

    def _swap_stack(self, thread: str, change) -> tuple[list, list]:
        """Optimistic read-modify-write of the base stack: (old, new)."""
        while True:
            old = self._thread(thread).get("base_stack") or []
            new = change(list(old))
            if new == old:
                return old, new
            try:
                self._update(f"T#{thread}", "THREAD", "SET base_stack = :n", {":n": new, ":o": old},
                             ConditionExpression="base_stack = :o")
                return old, new
            except Exception as exc:
                if not self._failed(exc):
                    raise

    def pop_base(self, thread: str) -> str | None:
        old, _ = self._swap_stack(thread, lambda s: s[:-1])
        return old[-1] if old else None

    def clear_base(self, thread: str) -> bool:
        old, _ = self._swap_stack(thread, lambda s: [])
        return bool(old)

    def context(self, thread: str) -> dict:
        return self._thread(thread).get("context") or {}

    def set_context(self, thread: str, context: dict) -> None:
        self._update(f"T#{thread}", "THREAD", "SET context = :c", {":c": context})

    def pending(self, thread: str) -> dict | None:
        item = self._get(f"T#{thread}", "PENDING")
        return item["data"] if item else None

    def set_pending(self, thread: str, data: dict | None) -> None:
        if data is None:
            self._do("delete_item", TableName=self.table, Key=self._key(f"T#{thread}", "PENDING"))
        else:
            self._put({"pk": f"T#{thread}", "sk": "PENDING", "data": data, "at": time.time()})

    def take_pending(self, thread: str, question: str | None = None) -> dict | None:
        """A conditional delete returning what it deleted: of two replicas taking one question, one gets it."""
        cond, values = "attribute_exists(pk)", {}
        names = None
        if question is not None:
            cond += " AND #d.#id = :q"
            values[":q"] = question
            names = {"#d": "data", "#id": "id"}
        args: dict = {"TableName": self.table, "Key": self._key(f"T#{thread}", "PENDING"),
                      "ConditionExpression": cond, "ReturnValues": "ALL_OLD"}
        if values:
            args["ExpressionAttributeValues"] = self._values(values)
        if names:
            args["ExpressionAttributeNames"] = names
        try:
            res = self._do("delete_item", **args)
        except Exception as exc:
            if self._failed(exc):
                return None
            raise
        item = self._dec(res.get("Attributes"))
        return item["data"] if item else None

    def settings(self, thread: str) -> dict:
        return self._thread(thread).get("settings") or {}

    def update_settings(self, thread: str, values: dict) -> dict:
        if not values:
            return self.settings(thread)
        names = {f"#k{i}": k for i, k in enumerate(values)}
        sets = ", ".join(f"settings.#k{i} = :v{i}" for i in range(len(values)))
        item = self._update(f"T#{thread}", "THREAD", f"SET {sets}",
                            {f":v{i}": v for i, v in enumerate(values.values())}, {**names},
                            ReturnValues="ALL_NEW")
        return (item or {}).get("settings") or {}

    # -- turns ---------------------------------------------------------------------------------------------------
    def start_turn(self, thread: str, user: str, text: str, action: str, intent: dict, prompt: str,
                   negative_prompt: str, base: Path, strength: float, garments: list[str]) -> str:
        turn = uuid.uuid4().hex[:12]
        now = time.time()
        self._transact([
            {"Put": {"TableName": self.table, "Item": self._enc({
                "pk": f"T#{thread}", "sk": f"TURN#{turn}", "turn": turn, "thread": thread, "created": now,
                "user": user, "text": text, "action": action, "intent": intent, "prompt": prompt,
                "negative_prompt": negative_prompt, "base": self._rel(base), "strength": float(strength),
                "garments": list(garments), "status": "running", "error": None, "reported": False,
                "owner": self.replica})}},
            {"Put": {"TableName": self.table, "Item": self._enc({"pk": f"TURN#{turn}", "sk": "TURN",
                                                                 "thread": thread})}},
            {"Put": {"TableName": self.table, "Item": self._enc({"pk": "RUNNING", "sk": turn, "thread": thread,
                                                                 "owner": self.replica, "created": now})}},
            {"Update": {"TableName": self.table, "Key": self._key("THREADS", thread),  # for retention
                        "UpdateExpression": "SET last_activity = :n, created = if_not_exists(created, :n)",
                        "ExpressionAttributeValues": self._values({":n": now})}},
        ])
        self._turn_threads[turn] = thread
        return turn

    def _thread_of_turn(self, turn: str) -> str | None:
        if turn not in self._turn_threads:
            item = self._get(f"TURN#{turn}", "TURN")
            if item is None:
                return None
            self._turn_threads[turn] = item["thread"]
        return self._turn_threads[turn]

    def finish_turn(self, turn: str, thread: str, images: list[tuple[int, Image.Image]], context: dict,
                    intent_update: dict | None = None) -> list[Variation]:
        folder = self.thread_dir(thread) / "variations"
        named = [(uuid.uuid4().hex[:12], seed, img) for seed, img in images]
        # PNG encoding and the uploads release the GIL: side by side
        rels = parallel.map_all(lambda n: self._save(n[2], folder / f"{turn}-{n[0]}.png"), named)
        out: list[Variation] = []
        items: list[dict] = []
        if named:
            last = self._update(f"T#{thread}", "THREAD", "ADD var_count :n", {":n": len(named)},
                                ConditionExpression="attribute_exists(pk)", ReturnValues="UPDATED_NEW")
            first = int(last["var_count"]) - len(named) + 1  # type: ignore[index]
            now = time.time()
            for i, ((vid, seed, _), rel) in enumerate(zip(named, rels, strict=True)):
                number = first + i
                items.append({"Put": {"TableName": self.table, "ConditionExpression": "attribute_not_exists(pk)",
                                      "Item": self._enc({"pk": f"T#{thread}", "sk": f"VAR#{number:08d}", "id": vid,
                                                         "thread": thread, "turn": turn, "number": number,
                                                         "seed": int(seed), "path": rel, "created": now})}})
                items.append({"Put": {"TableName": self.table, "ConditionExpression": "attribute_not_exists(pk)",
                                      "Item": self._enc({"pk": f"V#{vid}", "sk": "V", "thread": thread,
                                                         "number": number})}})
                out.append(Variation(vid, thread, turn, number, int(seed), self.root / rel))
        names, values = {"#s": "status"}, {":done": "done"}
        expr = "SET #s = :done"
        for i, (k, v) in enumerate((intent_update or {}).items()):
            names[f"#i{i}"] = k
            values[f":i{i}"] = v
            expr += f", intent.#i{i} = :i{i}"
        final = [
            {"Update": {"TableName": self.table, "Key": self._key(f"T#{thread}", f"TURN#{turn}"),
                        "UpdateExpression": expr, "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": self._values(values)}},
            {"Update": {"TableName": self.table, "Key": self._key(f"T#{thread}", "THREAD"),
                        "UpdateExpression": "SET context = :c", "ExpressionAttributeValues": self._values(
                            {":c": context})}},
            {"Delete": {"TableName": self.table, "Key": self._key("RUNNING", turn)}},
            {"Delete": {"TableName": self.table, "Key": self._key("INTERRUPTED", turn)}},
        ]
        # one transaction when it fits (nearly always: 4 variations are 8 items), else the rows first, then done
        room = _TX_MAX - len(final)
        head, tail = (items[:-room], items[-room:]) if len(items) > room else ([], items)
        self._transact(head)
        self._tx_write(tail + final)
        return out

    def fail_turn(self, turn: str, error: str) -> None:
        thread = self._thread_of_turn(turn)
        if thread is None:
            return
        self._transact([
            {"Update": {"TableName": self.table, "Key": self._key(f"T#{thread}", f"TURN#{turn}"),
                        "UpdateExpression": "SET #s = :f, #e = :e, reported = :t",
                        "ExpressionAttributeNames": {"#s": "status", "#e": "error"},
                        "ExpressionAttributeValues": self._values({":f": "failed", ":e": error, ":t": True})}},
            {"Delete": {"TableName": self.table, "Key": self._key("RUNNING", turn)}},
            {"Delete": {"TableName": self.table, "Key": self._key("INTERRUPTED", turn)}},
        ])

    def _turn_of(self, item: dict) -> Turn:
        base = item.get("base") or ""
        if base and not os.path.isabs(base):
            with contextlib.suppress(Exception):  # a base the bucket lost: the engine says so when it opens it
                self._local(base)
            base = str(self.root / base)
        return Turn(item["turn"], item["thread"], item.get("text") or "", item.get("action") or "",
                    item.get("intent") or {}, item.get("prompt") or "", item.get("negative_prompt") or "", base,
                    float(item.get("strength") or 0.0), list(item.get("garments") or []), item["status"],
                    item.get("error"))

    def turn(self, turn: str) -> Turn | None:
        thread = self._thread_of_turn(turn)
        item = self._get(f"T#{thread}", f"TURN#{turn}") if thread is not None else None
        return self._turn_of(item) if item else None

    def last_turn(self, thread: str, status: str = "done") -> Turn | None:
        rows = [r for r in self._query(f"T#{thread}", "TURN#") if r.get("status") == status]
        return self._turn_of(max(rows, key=lambda r: r["created"])) if rows else None

    def _sweep(self, thread: str | None = None) -> int:
        """Running turns whose owner's heartbeat has lapsed become interrupted (queued for a notice unless already
        told, e.g. by a draining replica); how many."""
        running = [r for r in self._query("RUNNING") if thread is None or r.get("thread") == thread]
        if not running:
            return 0
        live = self._live_replicas() | {self.replica}
        n = 0
        for r in running:
            if r.get("owner") in live:
                continue
            turn, t = r["sk"], r["thread"]
            item = self._get(f"T#{t}", f"TURN#{turn}")
            ops: list[dict] = [{"Delete": {"TableName": self.table, "Key": self._key("RUNNING", turn),
                                           "ConditionExpression": "attribute_exists(pk)"}}]
            if item is not None and item.get("status") == "running":
                reported = bool(item.get("reported"))
                ops.append({"Update": {
                    "TableName": self.table, "Key": self._key(f"T#{t}", f"TURN#{turn}"),
                    "UpdateExpression": "SET #s = :i", "ConditionExpression": "#s = :r AND reported = :rep",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": self._values({":i": "interrupted", ":r": "running",
                                                               ":rep": reported})}})
                if not reported:
                    ops.append({"Put": {"TableName": self.table, "Item": self._enc({
                        "pk": "INTERRUPTED", "sk": turn, "thread": t, "created": item.get("created", 0)})}})
            try:
                self._tx_write(ops)
                n += len(ops) > 1
            except Exception as exc:  # another replica swept it first, or it just finished
                if not self._failed(exc):
                    raise
        return n

    def mark_interrupted(self) -> int:
        """Turns left running by replicas that are gone (not by live ones: they are still working)."""
        return self._sweep()

    def unreported_interruptions(self, thread: str | None = None) -> list[Turn]:
        self._sweep(thread)
        rows = [r for r in self._query("INTERRUPTED") if thread is None or r.get("thread") == thread]
        turns = [t for r in sorted(rows, key=lambda r: r.get("created", 0)) if (t := self.turn(r["sk"]))]
        return [t for t in turns if t.status == "interrupted"]

    def mark_reported(self, turn: str) -> bool:
        """A conditional update (``reported`` still false) with the ``INTERRUPTED`` row's delete: of two replicas
        reporting one turn, one gets True and posts the notice."""
        thread = self._thread_of_turn(turn)
        if thread is None:
            return False
        try:
            self._tx_write([
                {"Update": {"TableName": self.table, "Key": self._key(f"T#{thread}", f"TURN#{turn}"),
                            "UpdateExpression": "SET reported = :t",
                            "ConditionExpression": "attribute_exists(pk) AND (attribute_not_exists(reported) "
                                                   "OR reported <> :t)",
                            "ExpressionAttributeValues": self._values({":t": True})}},
                {"Delete": {"TableName": self.table, "Key": self._key("INTERRUPTED", turn)}},
            ])
            return True
        except Exception as exc:
            if self._failed(exc):
                return False
            raise

    # -- variations and favourites -------------------------------------------------------------------------------
    def _variation(self, item: dict | None) -> Variation | None:
        if item is None:
            return None
        return Variation(item["id"], item["thread"], item["turn"], int(item["number"]), int(item.get("seed") or 0),
                         self._local(item["path"]), bool(item.get("favs")))

    def _variation_key(self, variation_id: str) -> tuple[str, str] | None:
        ptr = self._get(f"V#{variation_id}", "V")
        return None if ptr is None else (f"T#{ptr['thread']}", f"VAR#{int(ptr['number']):08d}")

    def variation(self, variation_id: str) -> Variation | None:
        key = self._variation_key(variation_id)
        return self._variation(self._get(*key)) if key else None

    def variation_by_number(self, thread: str, number: int) -> Variation | None:
        if not 0 < number < 10**8:
            return None
        return self._variation(self._get(f"T#{thread}", f"VAR#{number:08d}"))

    def variation_by_path(self, thread: str, path: Path | str) -> Variation | None:
        rel = self._rel(path)
        return next((self._variation(r) for r in self._query(f"T#{thread}", "VAR#") if r.get("path") == rel), None)

    def variations(self, thread: str, turn: str | None = None) -> list[Variation]:
        rows = [r for r in self._query(f"T#{thread}", "VAR#") if turn is None or r.get("turn") == turn]
        return [v for r in rows if (v := self._variation(r))]

    def set_favorite(self, variation_id: str, user: str, on: bool, source: str = "",
                     at: float | None = None) -> bool | None:
        """Marks are a string set on the variation (``user<TAB>source``); the clock of each mark is an attribute
        compared and set in the same UpdateItem, so out-of-order events resolve the same on every replica."""
        key = self._variation_key(variation_id)
        if key is None:
            return False
        mark = f"{user}{_SEP}{source}"
        if on or source:
            marks = {mark}
        else:  # unmark without a source: every mark this person made
            item = self._get(*key) or {}
            marks = {m for m in item.get("favs") or set() if m.split(_SEP, 1)[0] == user}
        parts, names, values = [], {}, {}
        cond = None
        if at is not None:
            names["#c"] = "clk_" + hashlib.sha1(mark.encode()).hexdigest()[:16]
            values[":at"] = float(at)
            parts.append("SET #c = :at")
            cond = "attribute_not_exists(#c) OR #c <= :at"
        if marks:
            values[":m"] = marks
            parts.append(("ADD" if on else "DELETE") + " favs :m")
        if not parts:
            item = self._get(*key) or {}
        else:
            args: dict = {"ReturnValues": "ALL_NEW"}
            if cond:
                args["ConditionExpression"] = cond
            try:
                item = self._update(*key, " ".join(parts), values, names or None, **args) or {}
            except Exception as exc:
                if self._failed(exc):
                    return None
                raise
        return any(m.split(_SEP, 1)[0] == user for m in item.get("favs") or set())

    def favorites(self, thread: str) -> list[Variation]:
        return [v for r in self._query(f"T#{thread}", "VAR#") if r.get("favs") and (v := self._variation(r))]

    # -- adapter helpers -----------------------------------------------------------------------------------------
    def link_message(self, key: str, variation_id: str) -> None:
        """The ``M#`` pointer, and its key in the variation's thread (what ``forget_thread`` deletes by)."""
        ptr = self._get(f"V#{variation_id}", "V")
        if ptr is not None:
            self._put({"pk": f"T#{ptr['thread']}", "sk": f"MSG#{key}", "key": key, "variation": variation_id})
        self._put({"pk": f"M#{key}", "sk": "M", "variation": variation_id})

    def variation_for_message(self, key: str) -> str | None:
        item = self._get(f"M#{key}", "M")
        return item["variation"] if item else None

    def claim_event(self, event_id: str) -> bool:
        """A conditional put: the first replica to see ``event_id`` wins; DynamoDB's TTL forgets it after
        EVENT_TTL_S (an expired row not yet deleted counts as gone)."""
        now = time.time()
        try:
            self._put({"pk": f"E#{event_id}", "sk": "E", "at": now, "ttl": int(now + EVENT_TTL_S)},
                      ConditionExpression="attribute_not_exists(pk) OR #t < :now",
                      ExpressionAttributeNames={"#t": "ttl"}, ExpressionAttributeValues=self._values({":now": now}))
            return True
        except Exception as exc:
            if self._failed(exc):
                return False
            raise

    # -- team controls (bot/controls.py) -------------------------------------------------------------------------
    @staticmethod
    def _day(at: float) -> str:
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")

    def record_usage(self, user: str, channel: str, thread: str, images: int, gpu_s: float,
                     at: float | None = None) -> None:
        """One generation: the day is added to ``USAGE/DAYS`` first (an idempotent ``ADD``), then its row is put
        in that UTC day's partition, sorted by time."""
        at = time.time() if at is None else float(at)
        day = self._day(at)
        self._update("USAGE", "DAYS", "ADD days :d", {":d": {day}})
        self._put({"pk": f"U#{day}", "sk": f"{at:017.6f}#{uuid.uuid4().hex[:8]}", "at": at, "user": user,
                   "channel": channel, "thread": thread, "images": int(images), "gpu_s": float(gpu_s)})

    def _usage(self, since: float) -> list[dict]:
        """Every usage row at or after ``since``: a query of each day partition from ``since``'s day on (the days
        ``USAGE/DAYS`` lists: a day nothing was generated on costs nothing, and no row is missed however old
        ``since`` is or whatever time a row was recorded at)."""
        item = self._get("USAGE", "DAYS") or {}
        first = self._day(since) if since > 0 else ""
        rows: list[dict] = []
        for day in sorted(d for d in item.get("days") or set() if d >= first):
            rows += self._query(f"U#{day}", sk_from=f"{max(since, 0.0):017.6f}" if day == first else None)
        return [r for r in rows if float(r["at"]) >= since]

    def usage_total(self, since: float, *, user: str | None = None, channel: str | None = None) -> tuple[int, float]:
        """(pictures, GPU seconds) since ``since`` (Unix time), for one user and/or channel, or everyone."""
        rows = [r for r in self._usage(since) if (user is None or r.get("user") == user)
                and (channel is None or r.get("channel") == channel)]
        return sum(int(r.get("images") or 0) for r in rows), float(sum(float(r.get("gpu_s") or 0) for r in rows))

    def usage_rows(self, since: float) -> list[dict]:
        """Every generation since ``since``, oldest first: dicts with the SQLite columns' names."""
        rows = sorted(self._usage(since), key=lambda r: (float(r["at"]), r["sk"]))
        return [{"at": float(r["at"]), "user": r.get("user", ""), "channel": r.get("channel", ""),
                 "thread": r.get("thread", ""), "images": int(r.get("images") or 0),
                 "gpu_s": float(r.get("gpu_s") or 0)} for r in rows]

    def limits(self) -> dict[str, str | None]:
        """Limits set from Slack (``LIMITS/<key>``): key → value (None: unlimited)."""
        return {r["sk"]: r.get("value") for r in self._query("LIMITS")}

    def set_limit(self, key: str, value: str | None, by: str) -> None:
        self._put({"pk": "LIMITS", "sk": key, "value": value, "by": by, "at": time.time()})

    def claim_notice(self, key: str) -> bool:
        """A conditional put of ``N#<key>``: True for the first claimer on any replica, ever."""
        try:
            self._put({"pk": f"N#{key}", "sk": "N", "at": time.time()}, ConditionExpression="attribute_not_exists(pk)")
            return True
        except Exception as exc:
            if self._failed(exc):
                return False
            raise

    def thread_owner(self, thread: str) -> str | None:
        item = self._get(f"T#{thread}", "THREAD")
        return item.get("user") if item else None

    def idle_threads(self, before: float, prefix: str = "") -> list[str]:
        """Threads (ids starting with ``prefix``) with no photo or turn since ``before``: a query of the
        ``THREADS`` partition, whose items carry ``last_activity`` (the photo's time, then each turn's start, set
        by ``start_turn``; like SQLite, a turn counts from when it started).  No scan and no index: the partition
        already lists every thread.  Also deletes this replica's cached pictures of threads another replica
        forgot (``/restyle forget``, retention) — each replica's retention sweep clears its own cache."""
        out = []
        for r in self._query("THREADS", prefix or None):
            last = r.get("last_activity")
            if last is None:  # a thread from before last_activity: its newest turn says
                last = max([float(r["created"])] + [float(t["created"]) for t in self._query(f"T#{r['sk']}", "TURN#")
                                                     if "created" in t])
            if float(r["created"]) < before and float(last) < before:
                out.append(r["sk"])
        for r in self._query("FORGOTTEN"):
            if self.thread_dir(r["sk"]).exists() and not self.has_thread(r["sk"]):
                shutil.rmtree(self.thread_dir(r["sk"]), ignore_errors=True)
        return out

    def forget_thread(self, thread: str, reason: str) -> bool:
        """Delete everything of ``thread``: its pictures in S3 and in this replica's cache, its items and the
        pointers to them (turns, variations, posted messages, running/interrupted rows), then — last, in one
        transaction — the thread item, its ``THREADS`` entry, and ``FORGOTTEN/<thread>`` with ``reason``.  A crash
        half-way leaves the thread item, so the next ``forget_thread`` finishes the job.  Usage rows are kept
        (they count toward quotas), as in SQLite; a held lease expires by itself.  False when there was no such
        thread, or another replica deleted it first."""
        if not self.has_thread(thread):
            return False
        folder = self._s3_key(f"threads/{_slug(thread)}/")
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):
            self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                                "Quiet": True})
        shutil.rmtree(self.thread_dir(thread), ignore_errors=True)
        dead: list[tuple[str, str]] = []
        for item in self._query(f"T#{thread}"):
            sk = item["sk"]
            if sk in ("THREAD", "LEASE"):
                continue
            dead.append((f"T#{thread}", sk))
            if sk.startswith("TURN#"):
                turn = sk[len("TURN#"):]
                dead += [(f"TURN#{turn}", "TURN"), ("RUNNING", turn), ("INTERRUPTED", turn)]
                self._turn_threads.pop(turn, None)
            elif sk.startswith("VAR#") and item.get("id"):
                dead.append((f"V#{item['id']}", "V"))
            elif sk.startswith("MSG#"):
                dead.append((f"M#{sk[len('MSG#'):]}", "M"))
        self._transact([{"Delete": {"TableName": self.table, "Key": self._key(*k)}} for k in dead])
        try:  # conditional: of two replicas sweeping one thread at once, one says it deleted it
            self._tx_write([
                {"Delete": {"TableName": self.table, "Key": self._key(f"T#{thread}", "THREAD"),
                            "ConditionExpression": "attribute_exists(pk)"}},
                {"Delete": {"TableName": self.table, "Key": self._key("THREADS", thread)}},
                {"Put": {"TableName": self.table, "Item": self._enc({"pk": "FORGOTTEN", "sk": thread,
                                                                     "at": time.time(), "reason": reason})}},
            ])
        except Exception as exc:
            if self._failed(exc):
                return False
            raise
        return True

    def forgotten(self, thread: str) -> str | None:
        """Why ``thread``'s data was deleted (``retention``, ``forget``), or None."""
        item = self._get("FORGOTTEN", thread)
        return item["reason"] if item else None


def open_store(settings: Any) -> StateStore:
    """The store ``settings`` name: SQLite + files under ``data_dir`` by default, DynamoDB + S3 with RESTYLE_STATE."""
    if getattr(settings, "state", None):
        return DynamoStore.from_settings(settings)
    return Store(settings.data_dir)
