"""The shared state (issue #11 item 3): the same behaviour from SQLite + files and from DynamoDB + S3 (moto's server),
with two store instances standing for two replicas of the bot on one state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import boto3
import pytest

from bot.engine import Engine
from bot.events import Answer, Message, Photo, Question, Variations
from bot.settings import Settings
from bot.store import LeaseTimeout, StateStore, Store
from tests.conftest import make_photo, to_bytes
from tests.fake_backend import FakeBackend

REGION = "us-east-1"
TABLE = "restyle-state-test"
BUCKET = "restyle-media-test"
PREFIX = "state"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def aws(moto_url, monkeypatch):
    """A clean moto, the environment pointing boto3 at it."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()
    for var in ("AWS_PROFILE", "AWS_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    env = {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def state(aws, capsys):
    """The table and bucket, made the way an operator makes them."""
    from deploy.__main__ import main

    assert main(["state", "--table", TABLE, "--bucket", BUCKET, "--prefix", PREFIX]) == 0
    capsys.readouterr()
    return aws


def dynamo(tmp_path: Path, name: str, **kw):
    from bot.store_aws import DynamoStore

    return DynamoStore(TABLE, BUCKET, PREFIX, tmp_path / name / "cache", **kw)


@pytest.fixture(params=["sqlite", "dynamo"])
def replicas(request, tmp_path):
    """``replicas(n)``: n store instances on one state (one SQLite folder, or one table + bucket)."""
    made: list = []
    if request.param == "dynamo":
        request.getfixturevalue("state")

    def make(n: int = 2, **kw) -> list[StateStore]:
        for i in range(n):
            made.append(Store(tmp_path / "data") if request.param == "sqlite"
                        else dynamo(tmp_path, f"replica{len(made) + i}", **kw))
        return made[-n:]

    make.kind = request.param  # type: ignore[attr-defined]
    yield make
    for s in made:
        s.close()


def new_thread(store: StateStore, thread: str = "t:1") -> str:
    store.create_thread(thread, "U1", make_photo(32, 32))
    return thread


def finish(store: StateStore, thread: str, n: int = 2):
    turn = store.start_turn(thread, "U1", "red dress", "edit", {"garments": ["dress"], "weight": 0.5}, "a red dress",
                            "", store.original(thread), 0.9, ["dress"])
    return turn, store.finish_turn(turn, thread, [(i, make_photo(32, 32, seed=i)) for i in range(n)],
                                   {"garments": ["dress"]}, {"made_with": {"steps": 4, "guidance": 7.5}})


# -- the same behaviour from both stores -----------------------------------------------------------------------------
def test_a_thread_made_on_one_replica_is_whole_on_the_other(replicas):
    a, b = replicas(2)
    thread = new_thread(a)
    turn, made = finish(a, thread)
    assert b.has_thread(thread) and not b.has_thread("t:none")
    assert b.latest_thread("t:") == thread and b.latest_thread("x:") is None
    assert b.original(thread).read_bytes() == a.original(thread).read_bytes()
    v = b.variation_by_number(thread, 2)
    assert v is not None and v.id == made[1].id and v.path.read_bytes() == made[1].path.read_bytes()
    assert b.variation(made[0].id).number == 1 and b.variation("nope") is None
    assert [x.number for x in b.variations(thread, turn)] == [1, 2]
    t = b.turn(turn)
    assert (t.status, t.strength, t.garments) == ("done", 0.9, ["dress"])
    assert t.intent == {"garments": ["dress"], "weight": 0.5, "made_with": {"steps": 4, "guidance": 7.5}}
    assert b.last_turn(thread).id == turn and b.last_turn(thread, "running") is None
    assert b.variation_by_path(thread, b.variation(made[1].id).path).id == made[1].id
    assert b.context(thread) == {"garments": ["dress"]}
    b.set_context(thread, {"garments": ["skirt"], "attributes": ["long"]})
    assert a.context(thread) == {"garments": ["skirt"], "attributes": ["long"]}
    assert a.update_settings(thread, {"steps": 12, "guidance": 5.5}) == {"steps": 12, "guidance": 5.5}
    assert b.update_settings(thread, {"look": "brand"}) == {"steps": 12, "guidance": 5.5, "look": "brand"}
    # the base stack: "use #2" on one replica is what the other edits from
    a.push_base(thread, made[1].id)
    path, base = b.base(thread)
    assert base.id == made[1].id and path.read_bytes() == made[1].path.read_bytes()
    assert b.pop_base(thread) == made[1].id and a.pop_base(thread) is None
    a.push_base(thread, made[0].id)
    assert b.clear_base(thread) is True and a.clear_base(thread) is False
    assert a.base(thread)[1] is None
    # messages → variations
    a.link_message("C1:17.5", made[0].id)
    assert b.variation_for_message("C1:17.5") == made[0].id and b.variation_for_message("C1:0") is None


def test_numbering_is_unique_and_contiguous_across_replicas(replicas):
    """Two replicas, each with three workers, finishing turns in one thread at once: 1…N, no gap, no duplicate."""
    stores = replicas(2)
    thread = new_thread(stores[0])
    errors: list[BaseException] = []
    numbers: list[int] = []
    lock = threading.Lock()

    def work(store: StateStore) -> None:
        try:
            for _ in range(3):
                _, made = finish(store, thread, n=2)
                with lock:
                    numbers.extend(v.number for v in made)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(s,)) for s in stores for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors, errors
    assert sorted(numbers) == list(range(1, 37))
    assert [v.number for v in stores[1].variations(thread)] == list(range(1, 37))


def test_an_event_is_claimed_once_across_replicas(replicas):
    a, b = replicas(2)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.claim_event("Ev1"))) for s in (a, b) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert b.claim_event("Ev2") is True and a.claim_event("Ev2") is False


def test_a_pending_question_is_taken_once(replicas):
    a, b = replicas(2)
    thread = new_thread(a)
    a.set_pending(thread, {"id": "q1", "user": "U1", "text": "make it red", "batch": False})
    assert b.pending(thread)["text"] == "make it red"
    assert b.take_pending(thread, "q0") is None  # another question: left alone
    got = []
    threads = [threading.Thread(target=lambda s=s: got.append(s.take_pending(thread, "q1"))) for s in (a, b) * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [g for g in got if g] == [{"id": "q1", "user": "U1", "text": "make it red", "batch": False}]
    assert a.pending(thread) is None
    b.set_pending(thread, {"id": "q2"})
    a.set_pending(thread, None)
    assert b.pending(thread) is None and b.take_pending(thread) is None


def test_favourites_keep_sources_apart_and_order_events(replicas):
    a, b = replicas(2)
    thread = new_thread(a)
    _, made = finish(a, thread, n=3)
    vid = made[1].id
    assert a.set_favorite(vid, "U1", True, "heart", at=10.0) is True
    assert b.set_favorite(vid, "U1", True, "star", at=11.0) is True
    assert b.set_favorite(vid, "U1", False, "heart", at=12.0) is True  # the star is still on
    assert a.set_favorite(vid, "U1", True, "heart", at=11.5) is None  # older than the removal: ignored
    assert [v.number for v in b.favorites(thread)] == [2] and b.variation(vid).favorite
    assert a.set_favorite(made[0].id, "U2", True) is True
    assert a.set_favorite(made[0].id, "U2", False) is False  # words, no source: every mark of U2's goes
    assert b.set_favorite(vid, "U1", False) is False
    assert b.favorites(thread) == [] and not a.variation(vid).favorite


def test_lease_is_exclusive_across_replicas(replicas):
    a, b = replicas(2)
    inside: list[str] = []
    overlaps: list[str] = []

    def run(store: StateStore, name: str) -> None:
        for _ in range(3):
            with store.lease("t:busy"):
                if inside:
                    overlaps.append(name)
                inside.append(name)
                time.sleep(0.03)
                inside.remove(name)

    threads = [threading.Thread(target=run, args=(s, n)) for s, n in ((a, "a"), (b, "b"), (a, "a2"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert overlaps == []
    with a.lease("t:busy"):
        with pytest.raises(LeaseTimeout):
            with b.lease("t:busy", timeout=0.2):
                pass
        with b.lease("t:other", timeout=1):  # another thread is free
            pass
    with b.lease("t:busy", timeout=1):  # released on exit
        pass


# -- team controls (bot/controls.py) on both stores -----------------------------------------------------------------
DAY = 1795996800.0  # 2026-11-30 00:00:00 UTC


def test_usage_totals_by_user_channel_and_day(replicas):
    """Quotas read these totals: a row at midnight counts for the new day, one a second before for the old one."""
    a, b = replicas(2)
    a.record_usage("U1", "C1", "slack:C1:1", 2, 1.5, at=DAY - 1)  # 2026-11-29 23:59:59
    a.record_usage("U1", "C1", "slack:C1:1", 3, 2.0, at=DAY)
    b.record_usage("U2", "C1", "slack:C1:2", 4, 2.5, at=DAY + 3600)
    a.record_usage("U1", "C2", "slack:C2:1", 1, 0.25, at=DAY + 86400 + 10)  # the next day
    assert b.usage_total(DAY) == (8, pytest.approx(4.75))
    assert b.usage_total(DAY, user="U1") == (4, pytest.approx(2.25))
    assert b.usage_total(DAY, channel="C1") == (7, pytest.approx(4.5))
    assert b.usage_total(DAY, user="U1", channel="C1") == (3, pytest.approx(2.0))
    assert b.usage_total(DAY + 1e-3) == (5, pytest.approx(2.75))  # just after midnight: the midnight row is out
    assert b.usage_total(DAY - 1) == b.usage_total(0) == (10, pytest.approx(6.25))
    assert b.usage_total(DAY + 86400) == (1, pytest.approx(0.25))
    assert b.usage_total(DAY, user="U9") == (0, 0.0) and b.usage_total(DAY + 10 * 86400) == (0, 0.0)
    rows = a.usage_rows(DAY)
    assert [(r["at"], r["user"], r["channel"], r["thread"], r["images"]) for r in rows] == [
        (DAY, "U1", "C1", "slack:C1:1", 3), (DAY + 3600, "U2", "C1", "slack:C1:2", 4),
        (DAY + 86410, "U1", "C2", "slack:C2:1", 1)]
    assert [r["gpu_s"] for r in rows] == pytest.approx([2.0, 2.5, 0.25])
    b.record_usage("U1", "C1", "slack:C1:1", 2, 1.0)  # now
    assert a.usage_total(time.time() - 60, user="U1") == (2, pytest.approx(1.0))
    if replicas.kind == "dynamo":  # one partition per UTC day
        ddb = boto3.client("dynamodb", region_name=REGION)
        count = {day: len(ddb.query(TableName=TABLE, KeyConditionExpression="pk = :p",
                                    ExpressionAttributeValues={":p": {"S": f"U#{day}"}})["Items"])
                 for day in ("2026-11-29", "2026-11-30", "2026-12-01")}
        assert count == {"2026-11-29": 1, "2026-11-30": 2, "2026-12-01": 1}


def test_limits_set_on_one_replica_are_read_on_the_other(replicas):
    a, b = replicas(2)
    assert a.limits() == {}
    a.set_limit("user_daily_images", "5", "U0BOSS")
    b.set_limit("daily_gpu_seconds", None, "U0BOSS")  # none: unlimited
    assert b.limits() == {"user_daily_images": "5", "daily_gpu_seconds": None}
    b.set_limit("user_daily_images", "7", "U0BOSS")
    assert a.limits() == {"user_daily_images": "7", "daily_gpu_seconds": None}


def test_a_notice_is_claimed_once_across_replicas(replicas):
    a, b = replicas(2)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.claim_notice("channel-note:C1:U1")))
               for s in (a, b) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert b.claim_notice("channel-note:C1:U2") is True and a.claim_notice("channel-note:C1:U2") is False


def test_idle_threads(replicas):
    a, b = replicas(2)
    old, busy, term = new_thread(a, "slack:C1:1.0"), new_thread(a, "slack:C1:2.0"), new_thread(b, "term:1")
    time.sleep(0.02)
    cut = time.time()
    time.sleep(0.02)
    b.start_turn(busy, "U1", "make it red", "edit", {}, "", "", b.original(busy), 1.0, ["dress"])  # after the cut
    assert b.idle_threads(cut, prefix="slack:") == [old]
    assert sorted(a.idle_threads(cut)) == [old, term]
    assert sorted(a.idle_threads(time.time() + 1, prefix="slack:")) == [old, busy]
    assert a.idle_threads(cut - 10) == []  # nothing was created that early
    if replicas.kind == "dynamo":  # a thread item from before last_activity: its turns are read instead
        boto3.client("dynamodb", region_name=REGION).update_item(
            TableName=TABLE, Key={"pk": {"S": "THREADS"}, "sk": {"S": busy}}, UpdateExpression="REMOVE last_activity")
        assert b.idle_threads(cut, prefix="slack:") == [old]
    a.forget_thread(old, "retention")
    assert b.idle_threads(cut, prefix="slack:") == []


def _scan(pattern: str) -> list[dict]:
    """Every item of the table that mentions ``pattern`` anywhere (keys or attributes)."""
    ddb = boto3.client("dynamodb", region_name=REGION)
    items = [i for page in ddb.get_paginator("scan").paginate(TableName=TABLE) for i in page["Items"]]
    return [i for i in items if pattern in repr(i)]


def test_forget_thread_removes_everything_and_says_why(replicas):
    a, b = replicas(2)
    thread, keep = new_thread(a, "slack:C1:9.9"), new_thread(a, "slack:C1:1.1")
    turn, made = finish(a, thread)
    _, kept = finish(a, keep)
    running = a.start_turn(thread, "U1", "now blue", "edit", {}, "", "", a.original(thread), 1.0, ["dress"])
    a.set_favorite(made[0].id, "U1", True, "heart", at=1.0)
    a.link_message("C1:9.95", made[0].id)
    a.set_pending(thread, {"id": "q1"})
    a.record_usage("U1", "C1", thread, 2, 1.0)
    paths = [a.original(thread)] + [v.path for v in made] + [b.variation(made[1].id).path]
    assert all(p.exists() for p in paths)
    assert b.forget_thread(thread, "forget") is True
    assert b.forget_thread(thread, "forget") is False and b.forget_thread("t:none", "forget") is False
    for s in (a, b):
        assert not s.has_thread(thread) and s.thread_owner(thread) is None and s.forgotten(thread) == "forget"
        assert s.variation(made[0].id) is None and s.variation_for_message("C1:9.95") is None
        assert s.turn(turn) is None and s.turn(running) is None and s.pending(thread) is None
        assert s.variations(thread) == [] and s.favorites(thread) == []
        assert s.latest_thread("slack:C1:9") is None and s.forgotten(keep) is None
        assert [v.number for v in s.variations(keep)] == [1, 2] and s.thread_owner(keep) == "U1"
    assert not b.thread_dir(thread).exists()
    assert a.usage_total(0, user="U1") == (2, pytest.approx(1.0))  # usage is kept: it counts toward quotas
    if replicas.kind == "dynamo":
        s3 = boto3.client("s3", region_name=REGION)
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/threads/")["Contents"]]
        assert listed and not any("9.9" in k for k in listed) and all("1.1" in k for k in listed)
        left = [i for needle in (thread, turn, running, made[0].id, made[1].id, "C1:9.95") for i in _scan(needle)]
        assert all(i["pk"]["S"] == "FORGOTTEN" or i["pk"]["S"].startswith("U#") for i in left), left
        assert a.thread_dir(thread).exists()  # the other replica's cache: cleared by its next retention sweep
        a.idle_threads(0.0)
        assert not a.thread_dir(thread).exists()
        race = new_thread(a, "slack:C1:7.7")  # two replicas' retention sweeps at once: one of them deleted it
        won: list[bool] = []
        workers = [threading.Thread(target=lambda s=s: won.append(s.forget_thread(race, "retention")))
                   for s in (a, b) * 2]
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
        assert sorted(won) == [False] * 3 + [True] and b.forgotten(race) == "retention"
    # a photo shared again in that thread starts over
    new_thread(b, thread)
    assert [v.number for v in finish(b, thread)[1]] == [1, 2] and a.forgotten(thread) == "forget"


def test_an_interrupted_turn_is_told_by_one_replica(replicas, tmp_path):
    """Two replicas find one interrupted turn at once: the claim (``mark_reported``) lets one of them tell it."""
    a, b = replicas(2)
    thread = new_thread(a, "slack:C1:5.5")
    (dead,) = replicas(1)
    turn = dead.start_turn(thread, "U1", "make it gold", "edit", {}, "", "", dead.original(thread), 1.0, ["dress"])
    if replicas.kind == "sqlite":
        dead.mark_interrupted()
    else:
        dead.close()  # gone: its running turn is interrupted for the others
    settings = Settings.from_env({"RESTYLE_BACKEND": "sagemaker"}, data_dir=tmp_path)
    engines = [Engine(s, FakeBackend(), settings) for s in (a, b) * 2]
    told: list = []
    workers = [threading.Thread(target=lambda e=e: told.extend(e.pending_notices("slack:"))) for e in engines]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert [(t, "make it gold" in x.text) for t, x in told] == [(thread, True)]
    assert a.unreported_interruptions() == [] and b.turn(turn).status == "interrupted"
    assert a.mark_reported(turn) is False


# -- DynamoDB only ---------------------------------------------------------------------------------------------------
def test_a_crashed_replicas_lease_expires_and_a_live_one_is_renewed(state, tmp_path):
    a = dynamo(tmp_path, "a", lease_s=0.6, replica_ttl_s=0.6)
    b = dynamo(tmp_path, "b", lease_s=0.6, replica_ttl_s=0.6)
    try:
        with a.lease("t:1"):
            time.sleep(1.0)  # longer than the lease: a's heartbeat keeps renewing it
            with pytest.raises(LeaseTimeout):
                with b.lease("t:1", timeout=0.3):
                    pass
            a.close(graceful=False)  # a "dies": no more renewals
            t0 = time.monotonic()
            with b.lease("t:1", timeout=3):
                waited = time.monotonic() - t0
        assert waited < 1.5
    finally:
        b.close()


def test_a_missing_table_refuses_to_start_naming_the_command(aws, tmp_path):
    from bot.engine import build_engine
    from bot.store_aws import StateUnavailable

    settings = Settings.from_env({"RESTYLE_STATE": "dynamodb://nope", "RESTYLE_MEDIA": "s3://bkt/p",
                                  "RESTYLE_BACKEND": "sagemaker"}, data_dir=tmp_path)
    with pytest.raises(StateUnavailable) as err:
        build_engine(settings, FakeBackend())
    assert "python -m deploy state --table nope --bucket bkt --prefix p" in str(err.value)
    assert "\n" not in str(err.value)


def test_settings_name_the_variable_on_bad_urls(tmp_path):
    for env, words in (({"RESTYLE_STATE": "redis://x", "RESTYLE_MEDIA": "s3://b"}, "RESTYLE_STATE must be"),
                       ({"RESTYLE_STATE": "dynamodb://tbl"}, "needs RESTYLE_MEDIA"),
                       ({"RESTYLE_STATE": "dynamodb://tbl", "RESTYLE_MEDIA": "/tmp/x"}, "RESTYLE_MEDIA must be"),
                       ({"RESTYLE_MEDIA": "s3://b/p"}, "only with RESTYLE_STATE")):
        with pytest.raises(ValueError, match=words):
            Settings.from_env({"RESTYLE_BACKEND": "sagemaker", **env}, data_dir=tmp_path)
    s = Settings.from_env({"RESTYLE_BACKEND": "sagemaker", "RESTYLE_STATE": "dynamodb://tbl",
                           "RESTYLE_MEDIA": "s3://b/p/"}, data_dir=tmp_path)
    assert (s.state, s.media) == ("dynamodb://tbl", "s3://b/p/")


def test_deploy_state_is_idempotent_and_keeps_other_lifecycle_rules(aws, capsys):
    from deploy.__main__ import main

    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [
        {"ID": "theirs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 7}}]})
    assert main(["state", "--table", TABLE, "--bucket", BUCKET, "--prefix", PREFIX]) == 0
    out = capsys.readouterr().out
    assert f"created table {TABLE}" in out and "created bucket" not in out
    assert f"RESTYLE_STATE=dynamodb://{TABLE} RESTYLE_MEDIA=s3://{BUCKET}/{PREFIX}" in out
    ddb = boto3.client("dynamodb", region_name=REGION)
    desc = ddb.describe_table(TableName=TABLE)["Table"]
    assert desc["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert ddb.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]}
    assert set(rules) == {"theirs", f"restyle-state-{PREFIX}"}
    assert rules[f"restyle-state-{PREFIX}"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert main(["state", "--table", TABLE, "--bucket", BUCKET, "--prefix", PREFIX]) == 0
    assert "state: unchanged" in capsys.readouterr().out
    # a table of someone else's shape is refused, not altered
    ddb.create_table(TableName="other", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    assert main(["state", "--table", "other", "--bucket", BUCKET]) == 1
    assert "not a restyle state table" in capsys.readouterr().err
    assert main(["state", "--table", "x", "--bucket", BUCKET]) == 2


def test_a_conversation_continues_on_the_other_replica(state, tmp_path):
    """Replica 1 gets the photo and the first request; replica 2 answers the follow-ups in the same thread (and
    does not say "Share a photo first"); numbering and favourites carry over; a retried event is handled once."""
    from bot.store_aws import DynamoStore

    settings = Settings.from_env({"RESTYLE_BACKEND": "sagemaker"}, data_dir=tmp_path)
    engines = [Engine(dynamo(tmp_path, f"r{i}"), FakeBackend(), settings) for i in (1, 2)]
    try:
        assert all(isinstance(e.store, DynamoStore) for e in engines)
        one, two = engines
        thread = "slack:C1:100.1"
        one.handle(Photo(thread=thread, user="U1", image=to_bytes(make_photo()), filename="p.png"))
        first = one.handle(Message(thread=thread, user="U1", text="make the dress red"))
        assert isinstance(first[-1], Variations), first
        n1 = [i.number for i in first[-1].items]
        follow = two.handle(Message(thread=thread, user="U1", text="now in velvet"))
        assert isinstance(follow[-1], Variations), follow
        n2 = [i.number for i in follow[-1].items]
        assert n1 + n2 == list(range(1, len(n1) + len(n2) + 1))
        assert all(i.path.exists() for i in follow[-1].items)
        assert two.backend.inpaint_calls and "velvet" in two.backend.prompts[-1]
        assert "red" in two.backend.prompts[-1]  # the look carried over from replica 1's turn
        fav = two.handle(Message(thread=thread, user="U1", text=f"I love #{n1[0]}"))
        assert [v.number for v in one.store.favorites(thread)] == [n1[0]], fav
        # "use #2" on one replica, "undo" on the other
        one.handle(Message(thread=thread, user="U1", text=f"use #{n2[0]}"))
        assert two.store.base(thread)[1].number == n2[0]
        undone = two.handle(Message(thread=thread, user="U1", text="undo"))
        assert one.store.base(thread)[1] is None, undone
        # a question asked by one replica, answered (once) through the other
        asked = one.handle(Message(thread=thread, user="U1", text="hmm maybe velvet?"))
        question = next(r for r in asked if isinstance(r, Question))
        calls = len(two.backend.inpaint_calls)
        assert isinstance(two.handle(Answer(thread, "U1", question.id, True))[-1], Variations)
        assert len(two.backend.inpaint_calls) == calls + 1
        assert not any(isinstance(r, Variations) for r in one.handle(Answer(thread, "U1", question.id, True)))
        assert one.store.claim_event("Ev-9") and not two.store.claim_event("Ev-9")
    finally:
        for e in engines:
            e.store.close()


def test_a_swatch_shared_on_one_replica_is_used_on_the_other(state, tmp_path):
    """The swatch lives in S3: replica 2 paints after the swatch replica 1 was given, and "a bit less like the
    swatch" on replica 1 finds the one replica 2's turn used (fetched into its own picture cache)."""
    from bot.events import Swatch

    settings = Settings.from_env({"RESTYLE_BACKEND": "sagemaker"}, data_dir=tmp_path, num_images=2)
    engines = [Engine(dynamo(tmp_path, f"s{i}"), FakeBackend(), settings) for i in (1, 2)]
    try:
        one, two = engines
        thread = "slack:C1:200.1"
        one.handle(Photo(thread=thread, user="U1", image=to_bytes(make_photo()), filename="p.png"))
        one.handle(Swatch(thread, "U1", to_bytes(make_photo(48, 48, seed=3)), "print.png"))
        assert isinstance(two.handle(Message(thread, "U1", "use this print on the skirt"))[-1], Variations)
        assert two.backend.inpaint_calls[-1].reference is not None
        for cached in two.store.thread_dir(thread).glob("swatch-*.png"):  # replica 2 is another machine
            cached.unlink()
        assert isinstance(one.handle(Message(thread, "U1", "a bit less like the swatch"))[-1], Variations)
        made = one.backend.inpaint_calls[-1]
        assert made.reference is not None and made.reference_scale == 0.4
        assert made.reference.tobytes() == two.backend.inpaint_calls[-1].reference.tobytes()
    finally:
        for e in engines:
            e.store.close()


CRASH = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from bot.store_aws import DynamoStore
    s = DynamoStore(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), lease_s=1.0, replica_ttl_s=1.0)
    s.start_turn("t:crash", "U1", "make it gold", "edit", {}, "gold", "", s.original("t:crash"), 1.0, ["dress"])
    with s.lease("t:crash"):
        print("running", flush=True)
        time.sleep(60)
""")


def test_a_killed_replicas_turn_is_reported_by_another(state, tmp_path):
    """kill -9 in the middle of a turn: another replica (already running, or started after) reports it once, and
    the thread's lease is free again; a live replica's running turn is left alone."""
    a = dynamo(tmp_path, "a")
    try:
        thread = new_thread(a, "t:crash")
        live = a.start_turn(thread, "U1", "still working", "edit", {}, "", "", a.original(thread), 1.0, ["dress"])
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-c", CRASH, TABLE, BUCKET, PREFIX, str(tmp_path / "crash")],
                                stdout=subprocess.PIPE, env=env, cwd=ROOT)
        try:
            assert proc.stdout.readline().strip() == b"running"
            assert a.unreported_interruptions(thread) == []  # its owner is alive
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        time.sleep(1.2)  # its heartbeat lapses
        notices = a.unreported_interruptions(thread)
        assert [t.text for t in notices] == ["make it gold"]
        assert a.turn(live).status == "running"  # a's own turn: still running
        b = dynamo(tmp_path, "b")
        try:
            assert [t.text for t in b.unreported_interruptions()] == ["make it gold"]
            b.mark_reported(notices[0].id)
            assert a.unreported_interruptions() == [] and b.turn(notices[0].id).status == "interrupted"
            with b.lease(thread, timeout=3):  # the dead replica's lease expired
                pass
        finally:
            b.close()
    finally:
        a.close()


def test_a_serving_replica_reports_a_killed_replicas_turn_without_a_restart(state, tmp_path, monkeypatch, capsys):
    """The serve loop looks for interrupted turns every NOTICES_EVERY_S: a replica that dies after this one started
    has its thread told by this one, once, without anything restarting or anyone writing in the thread."""
    from bot import health, slack_app
    from tests.slack_emulator import BOT_TOKEN, SIGNING_SECRET, SlackEmulator

    emu = SlackEmulator().start()
    settings = Settings.from_env({"RESTYLE_BACKEND": "sagemaker"}, data_dir=tmp_path, slack_bot_token=BOT_TOKEN,
                                 slack_signing_secret=SIGNING_SECRET, slack_api_url=emu.api_url)
    thread = "slack:C0DESIGN:1700000000.000100"
    dying = dynamo(tmp_path, "dying")
    new_thread(dying, thread)
    dying.start_turn(thread, "U1", "make it gold", "edit", {}, "", "", dying.original(thread), 1.0, ["dress"])
    handlers: dict = {}
    monkeypatch.setattr(signal, "signal", lambda sig, handler: handlers.setdefault(sig, handler))
    monkeypatch.setattr(health, "NOTICES_EVERY_S", 0.3)
    engine = Engine(dynamo(tmp_path, "serving"), FakeBackend(), settings)
    done: list[int] = []
    server = threading.Thread(target=lambda: done.append(health.run(
        engine, settings, slack_app.build_client(settings), http=True, port=0)), daemon=True)
    server.start()

    def told() -> list[str]:
        return [b["text"] for b in emu.bodies("chat.postMessage") if "make it gold" in b.get("text", "")]

    try:
        deadline = time.monotonic() + 30
        while "serving the Slack Events API" not in capsys.readouterr().err:  # started: its start-up look is done
            assert time.monotonic() < deadline and server.is_alive(), "the bot did not start"
            time.sleep(0.05)
        assert told() == []  # the turn's replica was alive at start-up
        dying.close()  # it dies: its running turn is interrupted for the others
        emu.wait_until(lambda: told(), 10, what="the interrupted turn told in its thread")
        time.sleep(1.0)  # more rounds of the loop: told once
        assert len(told()) == 1 and emu.bodies("chat.postMessage")[-1]["thread_ts"] == "1700000000.000100"
    finally:
        handlers[signal.SIGTERM](signal.SIGTERM, None)
        server.join(30)
        dying.close()
        emu.stop()
    assert done == [0]


def test_two_slack_replicas_alternate_on_one_thread(state, tmp_path):
    """Two Bolt apps (two replicas) on one DynamoDB + S3 state and one Slack: events alternate between them, the
    thread continues across them, numbering has no gap or duplicate, and an event Slack retries to the *other*
    replica is handled once."""
    from bot import slack_app
    from tests.slack_emulator import (
        BOT_TOKEN,
        SIGNING_SECRET,
        SignedClient,
        SlackEmulator,
        file_share,
        message,
    )

    emu = SlackEmulator().start()
    settings = Settings.from_env({"RESTYLE_BACKEND": "sagemaker"}, data_dir=tmp_path, num_images=2,
                                 slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                                 slack_api_url=emu.api_url, test_loopback_files=True)  # the emulator's http files
    fakes, bots, servers, clients = [], [], [], []
    try:
        for i in (1, 2):
            fakes.append(FakeBackend())
            engine = Engine(dynamo(tmp_path, f"slack{i}"), fakes[-1], settings)
            app = slack_app.build_app(engine, settings)
            server = slack_app.serve_http(app, "127.0.0.1", 0)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
            bots.append(app.restyle)  # type: ignore[attr-defined]
            clients.append(SignedClient(f"http://127.0.0.1:{server.server_address[1]}{slack_app.EVENTS_PATH}",
                                        SIGNING_SECRET))
        ch = "C0DESIGN"
        f = emu.host_file(to_bytes(make_photo(96, 128), "JPEG", quality=95), "look.jpg", "image/jpeg")
        ev = file_share(ch, [f], text="make the skirt blue")
        root = ev["ts"]
        assert clients[0].event(ev, event_id="Ev0SHARE").status == 200
        assert clients[1].event(ev, event_id="Ev0SHARE", retry_num=1).status == 200  # the retry: other replica

        def variations(n: int) -> list[dict]:
            return emu.wait_until(lambda: (ms := [m for m in emu.thread_messages(ch, root) if m["text"].startswith("#")
                                                  and m["blocks"]]) and len(ms) >= n and ms, 30,
                                  what=f"{n} variation messages")

        variations(2)
        for i, text in enumerate(("now in velvet", "make the skirt red", "make the skirt green")):
            assert bots[0].jobs.join(timeout=30) and bots[1].jobs.join(timeout=30)
            # Slack's event ids are unique across the workspace (each test client would count from 1 on its own)
            assert clients[(i + 1) % 2].event(message(ch, text, thread_ts=root), event_id=f"Ev0MSG{i}").status == 200
            variations(4 + 2 * i)
        assert bots[0].jobs.join(timeout=30) and bots[1].jobs.join(timeout=30)
        numbers = sorted(int(m["text"].split()[0].lstrip("#")) for m in emu.thread_messages(ch, root)
                         if m["text"].startswith("#") and m["blocks"])
        assert numbers == list(range(1, 9))
        assert len(fakes[0].inpaint_calls) + len(fakes[1].inpaint_calls) == 4  # the retried share ran once
        # which replica ran the share is a race (each claims the event after acking it); both ran turns of the thread
        assert all(f.inpaint_calls for f in fakes)
        assert not any("Share a photo" in m["text"] for m in emu.thread_messages(ch, root))
    finally:
        for bot in bots:
            bot.jobs.join(timeout=30)
            bot.jobs.shutdown()
            bot.store.close()
        for server in servers:
            server.shutdown()
            server.server_close()
        emu.stop()
