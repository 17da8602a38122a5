#!/usr/bin/env python3
"""Conformance of queue/gq_v1.lua with docs/PROTOCOL.md, driven from redis-py only.

Every expectation below is a statement of docs/PROTOCOL.md (the section is named at each test):
replies, state changes, fencing, fan-in once, no partial writes on bad arguments, and no
duplicate claims between concurrent claimers. A private redis-server is started for the module
(tests/integration/redis_server.py) and the library is loaded with FUNCTION LOAD.

Run: python3 -m unittest tests/integration/test_protocol.py   (needs redis-server and redis-py)
"""
import json
import os
import sys
import threading
import time
import unittest

import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from redis_server import RedisServer  # noqa: E402

P = "gq:{judge}:"
SERVER = None


def setUpModule():
    global SERVER
    SERVER = RedisServer()


def tearDownModule():
    SERVER.stop()


def dec(x):
    return x.decode() if isinstance(x, bytes) else x


class Client:
    """The §1 calling convention: FCALL fn 1 <P>seq <P> args..."""

    def __init__(self, r):
        self.r = r

    def __call__(self, fn, *args):
        return [dec(x) for x in self.r.fcall(fn, 1, P + "seq", P, *args)]



def token():
    return os.urandom(16).hex()


def wait_for(cond, timeout=10.0, what="condition"):
    """Polls cond() until it is true, failing after a deadline (never a bare sleep)."""
    t_end = time.time() + timeout
    while not cond():
        if time.time() > t_end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


SWEEP_SUFFIXES = ("", ":res", ":err", ":term", ":labels")  # §9: the keys of a sweep


def shard_payload(i, n=2):
    """A shard payload in §5's format (the worker here never judges it)."""
    return json.dumps({"v": 1, "kind": "judge", "spec": {"kind": "judge", "name": "t"},
                       "samples": [{"i": i * n + k, "question_id": 100 + i * n + k,
                                    "question": "q", "answers": ["a", "b"], "reference": None,
                                    "record": {"idx": i * n + k}} for k in range(n)]})


def result_blob(i, n=2):
    """§5's result blob: "<question_id>\\t<record>\\n" per sample (question_ids descending
    inside the blob, so the merge has to sort)."""
    return "".join(f"{100 + i * n + k}\t{{\"idx\": {i * n + k}, \"pred_text\": \"1 2\"}}\n"
                   for k in reversed(range(n)))


class ProtocolTest(unittest.TestCase):
    def setUp(self):
        self.r = SERVER.client()
        self.r.flushall()  # functions survive FLUSHALL
        self.f = Client(self.r)

    def h(self, key):
        return {dec(k): dec(v) for k, v in self.r.hgetall(P + key).items()}

    def events(self, ev=None):
        out = []
        for _, fields in self.r.xrange(P + "events"):
            e = {dec(k): dec(v) for k, v in fields.items()}
            if ev is None or e["ev"] == ev:
                out.append(e)
        return out

    def submit(self, sid, n, agg_queue="judge", seal=True, max_attempts=3, labels=None,
               retention_ms=None):
        """§6: create, enqueue every shard (pipelined), seal. With retention_ms, §4's optional
        trailing argument (labels "" when there are none)."""
        meta = json.dumps({"name": sid, "n_samples": 2 * n, "shard_size": 2})
        args = [sid, n, agg_queue, 0, meta] + ([labels] if labels is not None else [])
        if retention_ms is not None:
            args += ([] if labels is not None else [""]) + [retention_ms]
        self.assertEqual(self.f("gq_sweep_create", *args), ["ok", "open"])
        pipe = self.r.pipeline(transaction=False)
        for i in range(n):
            pipe.fcall("gq_enqueue", 1, P + "seq", P, f"{sid}:{i}", "judge", 0, 0, max_attempts,
                       0, shard_payload(i), sid, i)
        self.assertEqual([[dec(x) for x in rep] for rep in pipe.execute()],
                         [["ok", "queued"]] * n)
        if seal:
            return self.f("gq_sweep_seal", sid)
        return None

    def claim(self, wid="w1", lease=60000, queues=("judge",), tok=None):
        tok = tok or token()
        rep = self.f("gq_claim", wid, tok, lease, *queues)
        return (rep, tok)

    # ---- §6 and §7: a sweep end to end ----------------------------------------------------------

    def test_sweep_end_to_end(self):
        self.assertEqual(self.submit("s1", 3, labels=b'{"question_id": 100, "label": 1}\n'),
                         ["ok", "pending"])
        self.assertEqual(self.r.get(P + "sweep:s1:labels"), b'{"question_id": 100, "label": 1}\n')
        self.assertEqual(self.f("gq_stats")[1:], ["1", "judge", "3", "0", "0", "0", "0"])
        done_lines = []
        for i in range(3):
            (jid, payload, attempts, ckpt, queue, sweep, shard), tok = self.claim()
            self.assertEqual((jid, attempts, ckpt, queue, sweep, shard),
                             (f"s1:{i}", "1", "", "judge", "s1", str(i)))  # FIFO order
            self.assertEqual(json.loads(payload), json.loads(shard_payload(i)))
            job = self.h(f"job:{jid}")
            self.assertEqual((job["state"], job["token"], job["owner"]), ("running", tok, "w1"))
            self.assertIsNotNone(self.r.zscore(P + "leases", jid))
            self.assertEqual(self.f("gq_heartbeat", jid, tok, 60000, "1/2", ""), ["ok", ""])
            self.assertEqual(self.h(f"job:{jid}")["progress"], "1/2")
            self.assertEqual(self.f("gq_complete", jid, tok, result_blob(i)), ["ok"])
            # a replayed commit (lost reply) is a dup and counts nothing twice
            self.assertEqual(self.f("gq_complete", jid, tok, result_blob(i)), ["dup"])
            self.assertEqual(self.f("gq_heartbeat", jid, tok, 60000, "", ""), ["lost"])
            done_lines += result_blob(i).splitlines()
            self.assertEqual(self.h(f"job:{jid}")["state"], "succeeded")
            self.assertGreater(self.r.ttl(P + f"job:{jid}"), 6 * 86400)  # §9: 7 days
        sw = self.h("sweep:s1")
        self.assertEqual((sw["state"], sw["ok"], sw["failed"], sw["agg_job"]),
                         ("aggregating", "3", "0", "agg:s1:1"))
        self.assertEqual(self.r.bitcount(P + "sweep:s1:term"), 3)
        self.assertEqual(len(self.events("sweep_ready")), 1)
        # §5: the aggregate job
        (jid, payload, *_), tok = self.claim()
        self.assertEqual(jid, "agg:s1:1")
        self.assertEqual(json.loads(payload), {"kind": "aggregate", "sweep": "s1"})
        self.assertEqual(self.f("gq_complete", jid, tok, '{"metrics": {}}'), ["ok"])
        sw = self.h("sweep:s1")
        self.assertEqual((sw["state"], sw["agg"]), ("done", '{"metrics": {}}'))
        self.assertEqual(self.claim()[0], [])
        # §6: merging the results
        lines = []
        for _, blob in self.r.hscan_iter(P + "sweep:s1:res"):
            for line in blob.decode().splitlines():
                qid, record = line.split("\t", 1)
                lines.append((int(qid), record))
        lines.sort()
        self.assertEqual([q for q, _ in lines], list(range(100, 106)))
        self.assertEqual(sorted(done_lines), sorted(f"{q}\t{rec}" for q, rec in lines))
        # replays of the producer steps change nothing (§6)
        seq = self.r.get(P + "seq")
        self.assertEqual(self.f("gq_sweep_create", "s1", 3, "judge", 0, "{}"), ["dup", "done"])
        self.assertEqual(self.f("gq_enqueue", "s1:0", "judge", 0, 0, 3, 0, "x", "s1", 0),
                         ["dup", "succeeded"])
        self.assertEqual(self.f("gq_sweep_seal", "s1"), ["dup", "done"])
        self.assertEqual(self.r.get(P + "seq"), seq)

    def test_enqueue_into_a_sealed_sweep_is_closed(self):
        self.submit("c1", 2)
        self.f("gq_sweep_create", "c2", 3, "judge", 0, "{}")
        self.f("gq_sweep_seal", "c2")
        self.assertEqual(self.f("gq_enqueue", "c2:0", "judge", 0, 0, 3, 0, "x", "c2", 0),
                         ["closed", "sealed"])

    def test_priority_and_delay(self):
        self.assertEqual(self.f("gq_enqueue", "low", "q", 0, 0, 3, 0, "x", "", ""),
                         ["ok", "queued"])
        self.assertEqual(self.f("gq_enqueue", "high", "q", 5, 0, 3, 0, "x", "", ""),
                         ["ok", "queued"])
        self.assertEqual(self.f("gq_enqueue", "later", "q", 9, 300, 3, 0, "x", "", ""),
                         ["ok", "delayed"])
        self.assertEqual(self.claim(queues=("q",))[0][0], "high")
        self.assertEqual(self.claim(queues=("q",))[0][0], "low")
        self.assertEqual(self.claim(queues=("q",))[0], [])
        time.sleep(0.4)
        self.assertEqual(self.claim(queues=("q",))[0][0], "later")

    # ---- §7: fencing ----------------------------------------------------------------------------

    def test_stale_token_is_lost_after_reap(self):
        self.submit("z", 1)
        (jid, *_), old = self.claim(lease=200)
        time.sleep(0.35)
        self.assertEqual(self.f("gq_reap", 100, 5, 0), ["ok", "1", "0"])
        self.assertEqual(self.h(f"job:{jid}")["stalls"], "1")
        self.assertEqual(self.f("gq_heartbeat", jid, old, 60000, "", ""), ["lost"])
        self.assertEqual(self.f("gq_complete", jid, old, result_blob(0)), ["lost"])
        self.assertEqual(self.f("gq_fail", jid, old, "x", 1, 0), ["lost"])
        self.assertEqual(self.f("gq_release", jid, old, "", 3), ["lost"])
        self.assertEqual(self.f("gq_token_lookup", old), [""])
        (jid2, _, attempts, *_), new = self.claim()
        self.assertEqual((jid2, attempts), (jid, "2"))
        self.assertEqual(self.f("gq_complete", jid, old, result_blob(0)), ["lost"])
        self.assertEqual(self.f("gq_complete", jid, new, result_blob(0)), ["ok"])
        self.assertEqual(self.h("sweep:z")["ok"], "1")
        self.assertEqual(self.r.hlen(P + "sweep:z:res"), 1)

    def test_token_reuse_refused_and_adopt(self):
        self.submit("t", 2)
        rep, tok = self.claim()
        self.assertEqual(self.f("gq_token_lookup", tok), [rep[0]])
        self.assertEqual(self.f("gq_adopt", tok), rep)
        self.assertEqual(self.f("gq_adopt", token()), [])
        with self.assertRaisesRegex(redis.ResponseError, "^gq: token: already used"):
            self.claim(tok=tok)

    def test_fail_retry_dead_and_dlq_retry(self):
        self.submit("d", 2, max_attempts=2)
        (jid, *_), tok = self.claim()
        rep = self.f("gq_fail", jid, tok, "boom", 1, 0)
        self.assertEqual(rep[0], "retry")
        self.assertEqual(self.h(f"job:{jid}")["state"], "delayed")
        (jid2, _, attempts, *_), tok = self.claim()  # the delayed job is due: promoted, first
        self.assertEqual((jid2, attempts), (jid, "2"))
        self.assertEqual(self.f("gq_fail", jid, tok, "boom again", 1, 0), ["dead"])
        job = self.h(f"job:{jid}")
        self.assertEqual((job["state"], job["error"]), ("dead", "boom again"))
        self.assertIsNotNone(self.r.zscore(P + "dead", jid))
        self.assertEqual(self.r.ttl(P + f"job:{jid}"), -1)  # §9: dead jobs stay
        self.assertEqual(self.h("sweep:d")["failed"], "1")
        self.assertEqual(self.h("sweep:d:err"), {"0": "dead: boom again"})
        # the other shard succeeds: every shard has an outcome, fan-in fires
        (jid_b, *_), tok_b = self.claim()
        self.f("gq_complete", jid_b, tok_b, result_blob(1))
        self.assertEqual(self.h("sweep:d")["state"], "aggregating")
        self.assertEqual(self.f("gq_dlq_retry", jid), ["refused", "sweep aggregating; retry when done"])
        (ajid, *_), atok = self.claim()
        self.f("gq_complete", ajid, atok, "{}")
        self.assertEqual(self.h("sweep:d")["state"], "done")
        # dlq retry: the failed outcome is cleared and the sweep reopened
        self.assertEqual(self.f("gq_dlq_retry", jid), ["ok"])
        self.assertEqual(self.f("gq_dlq_retry", jid), ["dup", "queued"])
        sw = self.h("sweep:d")
        self.assertEqual((sw["state"], sw["failed"]), ("sealed", "0"))
        self.assertFalse(self.r.getbit(P + "sweep:d:term", 0))
        self.assertEqual(self.h("sweep:d:err"), {})
        self.assertIsNone(self.r.zscore(P + "dead", jid))
        (jid3, _, attempts, *_), tok = self.claim()
        self.assertEqual((jid3, attempts), (jid, "1"))
        self.assertEqual(self.f("gq_complete", jid, tok, result_blob(0)), ["ok"])
        sw = self.h("sweep:d")
        self.assertEqual((sw["state"], sw["ok"], sw["agg_job"]), ("aggregating", "2", "agg:d:2"))

    def test_release_returns_the_checkpoint(self):
        self.submit("rl", 2)
        (jid, *_), tok = self.claim()
        self.assertEqual(self.f("gq_heartbeat", jid, tok, 60000, "1/2", "ck-1"), ["ok", ""])
        self.assertEqual(self.f("gq_release", jid, tok, "ck-2", 1), ["ok"])
        job = self.h(f"job:{jid}")
        self.assertEqual((job["state"], job["interrupts"], job["attempts"]), ("queued", "1", "0"))
        (jid2, _, attempts, ckpt, *_), tok = self.claim()  # the front of its queue
        self.assertEqual((jid2, attempts, ckpt), (jid, "1", "ck-2"))
        self.assertEqual(self.f("gq_release", jid, tok, "", 1), ["dead"])
        self.assertEqual(self.h(f"job:{jid}")["error"], "interrupted-too-often")

    def test_lease_expiry_past_max_stalls_is_dead(self):
        self.submit("p", 1)
        (jid, *_), _ = self.claim(lease=100)
        time.sleep(0.2)
        self.assertEqual(self.f("gq_reap", 100, 0, 0), ["ok", "1", "0"])
        job = self.h(f"job:{jid}")
        self.assertEqual((job["state"], job["error"]), ("dead", "lease-expired-too-often"))
        self.assertEqual(self.h("sweep:p")["state"], "aggregating")  # its only shard failed

    def test_run_budget(self):
        self.assertEqual(self.f("gq_enqueue", "b", "q", 0, 0, 3, 150, "x", "", ""),
                         ["ok", "queued"])
        (jid, *_), tok = self.claim(queues=("q",))
        time.sleep(0.25)
        self.assertEqual(self.f("gq_reap", 100, 5, 0), ["ok", "0", "1"])
        self.assertEqual(self.f("gq_heartbeat", jid, tok, 60000, "", ""), ["ok", "timeout"])
        self.assertEqual(self.f("gq_cancelled", jid, tok), ["ok", "dead"])
        self.assertEqual(self.h("job:b")["error"], "run-budget-exceeded")

    # ---- §3: fan-in exactly once ----------------------------------------------------------------

    def test_fanin_when_every_shard_finishes_before_seal(self):
        self.assertIsNone(self.submit("early", 3, seal=False))
        for _ in range(3):
            (jid, *_), tok = self.claim()
            self.assertEqual(self.f("gq_complete", jid, tok, "1\t{}\n"), ["ok"])
        self.assertEqual(self.h("sweep:early")["state"], "open")
        self.assertFalse(self.r.exists(P + "job:agg:early:1"))
        self.assertEqual(self.f("gq_sweep_seal", "early"), ["ok", "fanin"])
        self.assertEqual(self.f("gq_sweep_seal", "early"), ["dup", "aggregating"])
        self.assertEqual(self.h("job:agg:early:1")["state"], "queued")
        self.assertEqual(len(self.events("sweep_ready")), 1)
        self.assertEqual([e["jid"] for e in self.events("enqueued")].count("agg:early:1"), 1)

    def test_fanin_once_under_concurrent_commits(self):
        n = 24
        self.submit("cc", n)
        claims = [self.claim() for _ in range(n)]

        def commit(c):
            (jid, *_), tok = c
            Client(SERVER.client())("gq_complete", jid, tok, "1\t{}\n")

        threads = [threading.Thread(target=commit, args=(c,)) for c in claims]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(self.h("sweep:cc")["ok"], str(n))
        self.assertEqual(len(self.events("sweep_ready")), 1)
        self.assertEqual([k for k in self.r.scan_iter(P + "job:agg:*")], [P.encode() + b"job:agg:cc:1"])

    def test_no_aggregate_queue_means_done_at_fanin(self):
        self.submit("na", 1, agg_queue="")
        (jid, *_), tok = self.claim()
        self.f("gq_complete", jid, tok, "1\t{}\n")
        self.assertEqual(self.h("sweep:na")["state"], "done")
        self.assertEqual(list(self.r.scan_iter(P + "job:agg:*")), [])

    # ---- §4: cancellation -----------------------------------------------------------------------

    def test_cancel_single_jobs(self):
        self.f("gq_enqueue", "a", "q", 0, 0, 3, 0, "x", "", "")
        self.f("gq_enqueue", "b", "q", 0, 0, 3, 0, "x", "", "")
        self.assertEqual(self.f("gq_cancel", "a"), ["ok", "cancelled"])
        self.assertEqual(self.f("gq_cancel", "a"), ["dup", "cancelled"])
        (jid, *_), tok = self.claim(queues=("q",))
        self.assertEqual(jid, "b")
        p = self.r.pubsub()
        p.subscribe(P + "cancel")
        p.get_message(timeout=1)
        self.assertEqual(self.f("gq_cancel", "b"), ["ok", "cancelling"])
        msg = p.get_message(timeout=2)
        self.assertEqual(dec(msg["data"]), "b")
        p.close()
        self.assertEqual(self.f("gq_heartbeat", "b", tok, 60000, "", ""), ["ok", "1"])
        self.assertEqual(self.f("gq_cancelled", "b", tok), ["ok", "cancelled"])
        self.assertEqual(self.h("job:b")["state"], "cancelled")
        self.assertEqual(self.claim(queues=("q",))[0], [])
        with self.assertRaisesRegex(redis.ResponseError, "^gq: job nope does not exist"):
            self.f("gq_cancel", "nope")

    def test_cancel_a_sweep(self):
        self.submit("cs", 4)
        (jid, *_), tok = self.claim()
        self.assertEqual(self.f("gq_sweep_cancel", "cs"), ["ok", "3"])
        self.assertEqual(self.f("gq_sweep_cancel", "cs"), ["dup", "cancelled"])
        self.assertEqual(self.f("gq_heartbeat", jid, tok, 60000, "", ""), ["ok", "sweep"])
        self.assertEqual(self.f("gq_cancelled", jid, tok), ["ok", "cancelled"])
        sw = self.h("sweep:cs")
        self.assertEqual((sw["state"], sw["ok"], sw["failed"]), ("cancelled", "0", "4"))
        self.assertEqual(set(self.h("sweep:cs:err").values()), {"cancelled: sweep cancelled"})
        self.assertEqual(self.claim()[0], [])
        self.assertEqual(list(self.r.scan_iter(P + "job:agg:*")), [])

    # ---- §4: pause / resume ---------------------------------------------------------------------

    def test_pause_resume(self):
        self.submit("pr", 1)
        self.assertEqual(self.f("gq_pause", "judge", 1), ["ok"])
        self.assertEqual(self.f("gq_stats")[2:5], ["judge", "1", "1"])
        self.assertEqual(self.claim()[0], [])
        self.assertEqual(self.claim(queues=("other", "judge"))[0], [])
        self.assertEqual(self.f("gq_pause", "judge", 0), ["ok"])
        self.assertEqual(self.f("gq_stats")[2:5], ["judge", "1", "0"])
        self.assertEqual(self.claim()[0][0], "pr:0")

    def test_worker_registration_and_stats(self):
        rep = self.f("gq_worker", "host-1", '{"host": "h"}', 5000)
        self.assertEqual(rep[0], "ok")
        self.assertEqual(self.h("worker:host-1")["info"], '{"host": "h"}')
        self.assertLessEqual(self.r.pttl(P + "worker:host-1"), 5000)
        self.assertIsNotNone(self.r.zscore(P + "workers", "host-1"))
        self.assertEqual(self.f("gq_version"), ["1"])
        self.assertEqual(
            [dec(x) for x in self.r.fcall_ro("gq_version", 1, P + "seq", P)], ["1"])

    # ---- §4: schedules --------------------------------------------------------------------------

    def test_schedule_set_fire_remove(self):
        with self.assertRaisesRegex(redis.ResponseError, "^gq: store the 2 shard payloads"):
            self.f("gq_schedule_set", "nightly", "0 2 * * *", "{}", 2)
        self.r.hset(P + "sched:nightly:shards", mapping={"0": shard_payload(0),
                                                          "1": shard_payload(1)})
        self.assertEqual(self.f("gq_schedule_set", "nightly", "0 2 * * *", '{"queue": "judge"}', 2),
                         ["ok"])
        last = int(self.h("sched:nightly")["last_due_ms"])
        self.assertEqual(self.f("gq_schedule_fire", "nightly", last, "n-1", "judge", 0, 3, 0,
                                "judge"), ["dup"])  # not after the last due time
        due = last + 1
        time.sleep(0.01)
        self.assertEqual(self.f("gq_schedule_fire", "nightly", due, "n-1", "judge", 0, 3, 0,
                                "judge"), ["ok", "n-1"])
        self.assertEqual(self.f("gq_schedule_fire", "nightly", due, "n-2", "judge", 0, 3, 0,
                                "judge"), ["dup"])
        sw = self.h("sweep:n-1")
        self.assertEqual((sw["state"], sw["expected"], sw["schedule"], sw["meta"]),
                         ("sealed", "2", "nightly", '{"queue": "judge"}'))
        self.assertEqual(self.h("job:n-1:1")["payload"], shard_payload(1))
        self.assertEqual(self.f("gq_schedule_remove", "nightly"), ["ok"])
        self.assertEqual(self.f("gq_schedule_remove", "nightly"), ["dup"])
        self.assertFalse(self.r.exists(P + "sched:nightly", P + "sched:nightly:shards"))

    # ---- §3, §4, §9: sweep retention and purge --------------------------------------------------

    def now_ms(self):
        sec, usec = self.r.time()
        return sec * 1000 + usec // 1000

    def expiretime(self, key):
        """PEXPIRETIME: the absolute ms a key expires at; -1 without a ttl, -2 without the key."""
        return self.r.execute_command("PEXPIRETIME", P + key)

    def sweep_keys(self, sid):
        return [f"sweep:{sid}{suffix}" for suffix in SWEEP_SUFFIXES]

    def expiring(self):
        return {dec(m): int(s) for m, s in self.r.zrange(P + "expiring", 0, -1, withscores=True)}

    def zmembers(self, key):
        return {dec(m) for m in self.r.zrange(P + key, 0, -1)}

    def snapshot(self):
        return {k: self.r.dump(k) for k in self.r.scan_iter("*")}

    def run_shards(self, sid, dead=(), n=None):
        """Be the worker for every ready shard of `sid` (claimed in FIFO order): shards in `dead`
        fail for good, the others commit their result blob."""
        n = n if n is not None else int(self.h(f"sweep:{sid}")["expected"])
        for _ in range(n):
            (jid, *_), tok = self.claim()
            i = int(jid.split(":")[1])
            if i in dead:
                self.assertEqual(self.f("gq_fail", jid, tok, "poison", 0, 0), ["dead"])
            else:
                self.assertEqual(self.f("gq_complete", jid, tok, result_blob(i)), ["ok"])

    def test_retention_expires_every_sweep_key_when_done(self):
        self.submit("keep", 1, agg_queue="")  # no retention: kept forever
        self.run_shards("keep")
        self.assertEqual(self.h("sweep:keep")["retention_ms"], "0")
        self.assertEqual(self.submit("ret", 3, max_attempts=1, labels=b"labels\n",
                                     retention_ms=3600000), ["ok", "pending"])
        self.assertEqual(self.h("sweep:ret")["retention_ms"], "3600000")
        self.run_shards("ret", dead={0})
        # aggregating is not final: nothing expires yet
        self.assertEqual(self.h("sweep:ret")["state"], "aggregating")
        self.assertNotIn("expires_ms", self.h("sweep:ret"))
        for key in self.sweep_keys("ret") + ["job:ret:0"]:
            self.assertEqual(self.r.pttl(P + key), -1, key)
        self.assertEqual(self.expiring(), {})
        (ajid, *_), atok = self.claim()
        before = self.now_ms()
        self.assertEqual(self.f("gq_complete", ajid, atok, "{}"), ["ok"])
        after = self.now_ms()
        sw = self.h("sweep:ret")
        self.assertEqual(sw["state"], "done")
        expires = int(sw["expires_ms"])
        self.assertTrue(before + 3600000 <= expires <= after + 3600000, (before, expires, after))
        # every key of the sweep, and its dead shard, expires then
        for key in self.sweep_keys("ret") + ["job:ret:0"]:
            self.assertEqual(self.expiretime(key), expires, key)
        self.assertEqual(self.expiring(), {"ret": expires, "ret:0": expires})
        self.assertEqual([e["jid"] for e in self.events("sweep_expiring")], ["ret"])
        # succeeded jobs keep their week; the other sweep and the zsets have no ttl
        self.assertGreater(self.r.ttl(P + "job:ret:1"), 6 * 86400)
        for key in ("sweep:keep", "sweep:keep:res", "sweep:keep:term", "sweeps", "dead",
                    "expiring"):
            self.assertEqual(self.r.pttl(P + key), -1, key)
        self.assertEqual(self.zmembers("sweeps"), {"keep", "ret"})

    def test_retention_starts_at_fanin_without_aggregate_and_when_the_aggregate_dies(self):
        self.submit("nq", 1, agg_queue="", retention_ms=5000)
        self.run_shards("nq")
        expires = int(self.h("sweep:nq")["expires_ms"])
        self.assertEqual([self.expiretime(k) for k in self.sweep_keys("nq")],
                         [expires, expires, -2, expires, -2])  # no :err, no :labels
        self.submit("ad", 1, retention_ms=5000)
        self.run_shards("ad")
        (ajid, *_), atok = self.claim()
        self.assertEqual(self.f("gq_fail", ajid, atok, "no labels", 0, 0), ["dead"])
        sw = self.h("sweep:ad")
        self.assertEqual((sw["state"], sw["agg_error"]), ("done", "dead: no labels"))
        expires = int(sw["expires_ms"])
        self.assertEqual(self.expiretime("sweep:ad"), expires)
        self.assertEqual(self.expiretime("job:agg:ad:1"), expires)  # the dead aggregate job
        self.assertEqual(self.expiring()["agg:ad:1"], expires)

    def test_retention_of_a_cancelled_sweep_starts_when_its_last_shard_stops(self):
        self.submit("cr", 3, retention_ms=60000)
        (jid, *_), tok = self.claim()
        self.assertEqual(self.f("gq_sweep_cancel", "cr"), ["ok", "2"])
        self.assertEqual(self.h("sweep:cr")["state"], "cancelled")
        self.assertNotIn("expires_ms", self.h("sweep:cr"))  # shard 0 still runs
        for key in ("sweep:cr", "sweep:cr:err", "sweep:cr:term"):
            self.assertEqual(self.r.pttl(P + key), -1, key)
        self.assertEqual(self.f("gq_heartbeat", jid, tok, 60000, "", ""), ["ok", "sweep"])
        before = self.now_ms()
        self.assertEqual(self.f("gq_cancelled", jid, tok), ["ok", "cancelled"])
        expires = int(self.h("sweep:cr")["expires_ms"])
        self.assertTrue(before + 60000 <= expires <= self.now_ms() + 60000)
        self.assertEqual([self.expiretime(k) for k in self.sweep_keys("cr")],
                         [expires, -2, expires, expires, -2])
        # an open sweep cancelled before its client enqueued every shard: the missing ones are
        # `unsent`, and with nothing running it is final at once. A single job whose id looks
        # like shard 3 is no shard of it and stays queued.
        self.assertEqual(self.f("gq_enqueue", "co:3", "other", 0, 0, 3, 0, "x", "", ""),
                         ["ok", "queued"])
        self.assertEqual(self.f("gq_sweep_create", "co", 4, "judge", 0, "{}", "", 60000),
                         ["ok", "open"])
        for i in (0, 2):
            self.f("gq_enqueue", f"co:{i}", "judge", 0, 0, 3, 0, shard_payload(i), "co", i)
        self.assertEqual(self.f("gq_sweep_cancel", "co"), ["ok", "2"])
        sw = self.h("sweep:co")
        self.assertEqual((sw["state"], sw["failed"], sw["unsent"]), ("cancelled", "2", "2"))
        self.assertEqual(self.expiretime("sweep:co"), int(sw["expires_ms"]))
        self.assertEqual(self.h("job:co:3")["state"], "queued")
        self.assertEqual(self.f("gq_enqueue", "co:1", "judge", 0, 0, 3, 0, "x", "co", 1),
                         ["closed", "cancelled"])

    def test_dlq_retry_of_a_dead_aggregate_stores_agg(self):
        """PROTOCOL.md §10: a retried dead aggregate reopens its sweep to aggregating, and its
        commit stores `agg` and ends the sweep done; a second death records agg_error again."""
        self.submit("ag", 1, retention_ms=60000)
        self.run_shards("ag")
        (ajid, *_), atok = self.claim()
        self.assertEqual(self.f("gq_fail", ajid, atok, "no labels", 0, 0), ["dead"])
        self.assertEqual(self.h("sweep:ag")["agg_error"], "dead: no labels")
        self.assertEqual(self.f("gq_dlq_retry", ajid), ["ok"])
        sw = self.h("sweep:ag")
        self.assertEqual(sw["state"], "aggregating")
        for field in ("agg_error", "finished_ms", "expires_ms"):
            self.assertNotIn(field, sw)
        self.assertEqual(self.r.pttl(P + "sweep:ag"), -1)
        (ajid2, *_), atok2 = self.claim()
        self.assertEqual(ajid2, ajid)
        self.assertEqual(self.f("gq_fail", ajid2, atok2, "still no labels", 0, 0), ["dead"])
        sw = self.h("sweep:ag")
        self.assertEqual((sw["state"], sw["agg_error"]), ("done", "dead: still no labels"))
        self.assertEqual(self.f("gq_dlq_retry", ajid), ["ok"])
        (ajid3, *_), atok3 = self.claim()
        self.assertEqual(self.f("gq_complete", ajid3, atok3, '{"agreement": 1}'), ["ok"])
        sw = self.h("sweep:ag")
        self.assertEqual((sw["state"], sw["agg"]), ("done", '{"agreement": 1}'))
        self.assertNotIn("agg_error", sw)
        self.assertIn("expires_ms", sw)

    def test_dlq_retry_keeps_a_retained_sweep_again(self):
        self.submit("rr", 3, max_attempts=1, labels=b"l\n", retention_ms=60000)
        self.run_shards("rr", dead={0, 1})
        (ajid, *_), atok = self.claim()
        self.f("gq_complete", ajid, atok, "{}")
        expires = int(self.h("sweep:rr")["expires_ms"])
        self.assertEqual(self.expiring(), {"rr": expires, "rr:0": expires, "rr:1": expires})
        self.assertEqual(self.f("gq_dlq_retry", "rr:0"), ["ok"])
        sw = self.h("sweep:rr")
        self.assertEqual(sw["state"], "sealed")
        self.assertNotIn("expires_ms", sw)
        for key in self.sweep_keys("rr") + ["job:rr:0", "job:rr:1"]:
            self.assertEqual(self.r.pttl(P + key), -1, key)  # the other dead shard too
        self.assertEqual(self.expiring(), {})
        # it runs again; at its next final state the retention starts over
        self.run_shards("rr", n=1)
        (ajid, *_), atok = self.claim()
        self.assertEqual(ajid, "agg:rr:2")
        self.f("gq_complete", ajid, atok, "{}")
        again = int(self.h("sweep:rr")["expires_ms"])
        self.assertGreaterEqual(again, expires)
        self.assertEqual(self.expiretime("sweep:rr:res"), again)
        self.assertEqual(self.expiring(), {"rr": again, "rr:1": again})

    def test_expired_sweeps_vanish_and_reap_drops_their_zset_entries(self):
        self.submit("keep", 1, agg_queue="", max_attempts=1)
        self.run_shards("keep", dead={0})
        for sid in ("x1", "x2", "x3"):
            self.submit(sid, 2, agg_queue="", max_attempts=1, labels=b"l\n", retention_ms=200)
            self.run_shards(sid, dead={0})
            self.assertEqual(self.h(f"sweep:{sid}")["state"], "done")
        doomed = [P + k for sid in ("x1", "x2", "x3")
                  for k in self.sweep_keys(sid) + [f"job:{sid}:0"]]
        self.assertEqual(self.r.exists(*doomed), 18)
        n_keys = self.r.dbsize()
        # Redis deletes them itself (active expiry; DBSIZE does not touch the keys)
        wait_for(lambda: self.r.dbsize() == n_keys - 18, what="the retained keys to expire")
        self.assertEqual(self.r.exists(*doomed), 0)
        # the zset entries cannot expire: they stay until gq_reap drops them, `limit` at a time
        self.assertEqual(self.zmembers("sweeps"), {"keep", "x1", "x2", "x3"})
        self.assertEqual(self.zmembers("dead"), {"keep:0", "x1:0", "x2:0", "x3:0"})
        self.assertEqual(self.f("gq_reap", 2, 5, 0), ["ok", "0", "0"])
        self.assertEqual(self.zmembers("sweeps"), {"keep", "x2", "x3"})
        self.assertEqual(self.zmembers("dead"), {"keep:0", "x2:0", "x3:0"})
        self.assertEqual(len(self.expiring()), 4)
        self.assertEqual(self.f("gq_reap", 100, 5, 0), ["ok", "0", "0"])
        self.assertEqual(self.zmembers("sweeps"), {"keep"})
        self.assertEqual(self.zmembers("dead"), {"keep:0"})
        self.assertFalse(self.r.exists(P + "expiring"))
        self.assertEqual(self.h("sweep:keep")["state"], "done")
        self.assertEqual(self.h("job:keep:0")["state"], "dead")

    def test_purge_deletes_exactly_the_sweeps_keys(self):
        # a dead single job, a done sweep with a retention and a dead shard, a running sweep, and
        # an open sweep cancelled with a look-alike single job in place of its shard 1
        self.f("gq_enqueue", "lonely", "other", 0, 0, 1, 0, "x", "", "")
        (jid, *_), tok = self.claim(queues=("other",))
        self.f("gq_fail", jid, tok, "bad", 0, 0)
        self.submit("pa", 3, max_attempts=1, labels=b"l\n", retention_ms=3600000)
        self.run_shards("pa", dead={0})
        (ajid, *_), atok = self.claim()
        self.f("gq_complete", ajid, atok, "{}")
        self.submit("pb", 2)
        (jid_b, *_), tok_b = self.claim()
        self.f("gq_enqueue", "pc:1", "other", 0, 0, 3, 0, "x", "", "")
        self.f("gq_sweep_create", "pc", 2, "judge", 0, "{}")
        self.f("gq_enqueue", "pc:0", "judge", 0, 0, 3, 0, shard_payload(0), "pc", 0)
        self.f("gq_sweep_cancel", "pc")
        before = self.snapshot()
        self.assertEqual(self.f("gq_sweep_purge", "pa"), ["ok", "4"])
        after = self.snapshot()
        gone = {(P + k).encode() for k in self.sweep_keys("pa") +
                ["job:pa:0", "job:pa:1", "job:pa:2", "job:agg:pa:1", "expiring"]}
        self.assertEqual(set(after), set(before) - gone)
        self.assertEqual({k for k in after if after[k] != before[k]},
                         {(P + k).encode() for k in ("events", "sweeps", "dead")})
        self.assertEqual(self.zmembers("sweeps"), {"pb", "pc"})
        self.assertEqual(self.zmembers("dead"), {"lonely"})
        self.assertEqual(self.events("sweep_purged")[-1]["jobs"], "4")
        # not final: refused, nothing changes
        self.assertEqual(self.f("gq_sweep_purge", "pb"), ["refused", "sealed"])
        self.assertEqual(self.f("gq_sweep_purge", "pb", 0), ["refused", "sealed"])
        self.f("gq_sweep_cancel", "pb")
        cancelled = self.snapshot()
        self.assertEqual(self.f("gq_sweep_purge", "pb"), ["refused", "cancelled"])  # still runs
        self.assertEqual(self.snapshot(), cancelled)
        # a cancelled sweep with every shard terminal: its shard goes, the single job stays
        self.assertEqual(self.f("gq_sweep_purge", "pc"), ["ok", "1"])
        self.assertFalse(self.r.exists(P + "job:pc:0", *[P + k for k in self.sweep_keys("pc")]))
        self.assertEqual(self.h("job:pc:1")["state"], "queued")
        # force: the running shard's token goes, its worker is lost
        self.assertTrue(self.r.exists(P + f"tok:{tok_b}"))
        self.assertEqual(self.f("gq_sweep_purge", "pb", 1), ["ok", "2"])
        self.assertEqual([k for k in self.r.scan_iter("*") if b"pb" in k], [])
        self.assertEqual(self.f("gq_heartbeat", jid_b, tok_b, 60000, "", ""), ["lost"])
        self.assertEqual(self.f("gq_complete", jid_b, tok_b, result_blob(0)), ["lost"])
        self.assertEqual(self.f("gq_sweep_purge", "pb"), ["dup"])
        self.assertEqual(self.zmembers("sweeps"), set())
        self.assertEqual(sorted(dec(k)[len(P):] for k in self.r.scan_iter("*")),
                         ["dead", "events", "job:lonely", "job:pc:1", "q:other:ready", "queues",
                          "seq"])

    def test_shards_of_a_sweep_that_is_gone_are_cancelled(self):
        self.submit("g", 3, max_attempts=1)
        (j0, *_), t0 = self.claim()
        self.f("gq_fail", j0, t0, "poison", 0, 0)
        (j1, *_), t1 = self.claim()
        self.r.delete(*[P + k for k in self.sweep_keys("g")])  # what a forced purge leaves
        self.assertEqual(self.claim()[0], [])
        job = self.h("job:g:2")
        self.assertEqual((job["state"], job["error"]), ("cancelled", "sweep gone"))
        self.assertEqual(self.f("gq_heartbeat", j1, t1, 60000, "", ""), ["ok", "sweep"])
        self.assertEqual(self.f("gq_complete", j1, t1, result_blob(1)), ["dup"])
        self.assertEqual(self.f("gq_dlq_retry", j0), ["refused", "sweep gone"])
        self.assertEqual([k for k in self.r.scan_iter(P + "sweep:*")], [])

    def test_schedule_retention_goes_to_each_fired_sweep(self):
        self.r.hset(P + "sched:n:shards", mapping={"0": shard_payload(0)})
        self.assertEqual(self.f("gq_schedule_set", "n", "0 2 * * *", "{}", 1), ["ok"])
        self.assertEqual(self.h("sched:n")["retention_ms"], "0")
        self.assertEqual(self.f("gq_schedule_set", "n", "0 2 * * *", "{}", 1, 5000), ["ok"])
        self.assertEqual(self.h("sched:n")["retention_ms"], "5000")
        due = int(self.h("sched:n")["last_due_ms"]) + 1
        wait_for(lambda: self.now_ms() > due)
        self.assertEqual(self.f("gq_schedule_fire", "n", due, "n-1", "judge", 0, 3, 0, ""),
                         ["ok", "n-1"])
        self.assertEqual(self.h("sweep:n-1")["retention_ms"], "5000")
        self.run_shards("n-1")
        sw = self.h("sweep:n-1")
        self.assertEqual(sw["state"], "done")
        self.assertEqual(self.expiretime("sweep:n-1"), int(sw["expires_ms"]))

    # ---- §1: bad arguments change nothing -------------------------------------------------------

    def dump_all(self):
        return {k: (self.r.dump(k), self.r.type(k)) for k in self.r.keys("*")}

    def test_bad_arguments_are_refused_without_writes(self):
        self.submit("bad", 2)
        (jid, *_), tok = self.claim()
        self.r.hset(P + "sched:s:shards", "0", "x")
        before = self.dump_all()
        cases = [
            ("gq_enqueue", "j", "q", "x", 0, 3, 0, "p", "", ""),
            ("gq_enqueue", "j", "q", 1001, 0, 3, 0, "p", "", ""),
            ("gq_enqueue", "j k", "q", 0, 0, 3, 0, "p", "", ""),
            ("gq_enqueue", "j", "q", 0, -1, 3, 0, "p", "", ""),
            ("gq_enqueue", "j", "q", 0, 0, 0, 0, "p", "", ""),
            ("gq_enqueue", "j", "q", 0, 0, 3, 0, "p", "nosweep", 0),
            ("gq_enqueue", "bad:9", "q", 0, 0, 3, 0, "p", "bad", 9),
            ("gq_enqueue", "bad:x", "q", 0, 0, 3, 0, "p", "bad", "x"),
            ("gq_enqueue", "j", "q", 0, 0, 3, 0),
            ("gq_sweep_create", "a:b", 2, "judge", 0, "{}"),
            ("gq_sweep_create", "ab", 0, "judge", 0, "{}"),
            ("gq_sweep_create", "ab", 2, "bad queue", 0, "{}"),
            ("gq_sweep_create", "ab", 2, "judge", 2000, "{}"),
            ("gq_sweep_create", "ab", 2, "judge", 0, "{}", "", "x"),
            ("gq_sweep_create", "ab", 2, "judge", 0, "{}", "", -1),
            ("gq_sweep_create", "ab", 2, "judge", 0, "{}", "", 315360000001),
            ("gq_sweep_purge", "a:b"),
            ("gq_sweep_purge", "bad", 2),
            ("gq_sweep_purge", "bad", "yes"),
            ("gq_sweep_seal", "missing"),
            ("gq_claim", "w", "abc", 60000, "judge"),
            ("gq_claim", "w", token().upper(), 60000, "judge"),
            ("gq_claim", "w", token(), 5, "judge"),
            ("gq_claim", "w w", token(), 60000, "judge"),
            ("gq_heartbeat", jid, tok, 1, "", ""),
            ("gq_heartbeat", jid, tok, 60000, "x" * 5000, ""),
            ("gq_fail", jid, tok, "e", 1, -5),
            ("gq_release", jid, tok, "", -1),
            ("gq_cancel", "missing"),
            ("gq_sweep_cancel", "missing"),
            ("gq_dlq_retry", "missing"),
            ("gq_reap", 0, 1, 0),
            ("gq_worker", "w", "{}", 1),
            ("gq_pause", "bad queue", 1),
            ("gq_schedule_set", "s", "0 2 * * *", "{}", 2),
            ("gq_schedule_set", "a:b", "0 2 * * *", "{}", 1),
            ("gq_schedule_set", "s", "*", "{}", 1),
            ("gq_schedule_set", "s", "0 2 * * *", "{}", 1, "7d"),
            ("gq_schedule_set", "s", "0 2 * * *", "{}", 1, -1),
            ("gq_schedule_fire", "missing", 1, "x", "judge", 0, 3, 0, "judge"),
            ("gq_schedule_fire", "s", "x", "x", "judge", 0, 3, 0, "judge"),
        ]
        for fn, *args in cases:
            with self.subTest(fn=fn, args=args):
                with self.assertRaises(redis.ResponseError) as cm:
                    self.f(fn, *args)
                # redis-py drops the "ERR " of "ERR gq: ..."
                self.assertTrue(str(cm.exception).startswith("gq: "), str(cm.exception))
        # the routing key must be <P>seq and ARGV[1] the prefix
        for keys, prefix in (([P + "x"], P), ([P + "seq"], "gq:{judge}"), (["seq"], "")):
            with self.assertRaisesRegex(redis.ResponseError, "^gq: KEYS"):
                self.r.fcall("gq_stats", 1, *keys, prefix)
        # refusals and replays change nothing either (§4: gq_sweep_purge)
        self.assertEqual(self.f("gq_sweep_purge", "bad"), ["refused", "sealed"])
        self.assertEqual(self.f("gq_sweep_purge", "missing", 1), ["dup"])
        self.assertEqual(self.dump_all(), before)

    # ---- §7: no duplicate claims ----------------------------------------------------------------

    def test_concurrent_claimers_never_share_a_job(self):
        n_jobs, n_threads = 500, 16
        pipe = self.r.pipeline(transaction=False)
        for i in range(n_jobs):
            pipe.fcall("gq_enqueue", 1, P + "seq", P, f"job-{i}", "many", 0, 0, 3, 0, "x", "", "")
        pipe.execute()
        got = [[] for _ in range(n_threads)]

        def claimer(k):
            c = Client(SERVER.client())
            while True:
                tok = token()
                rep = c("gq_claim", f"w{k}", tok, 60000, "many")
                if not rep:
                    return
                got[k].append((rep[0], tok))

        threads = [threading.Thread(target=claimer, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        claims = [c for g in got for c in g]
        self.assertEqual(len(claims), n_jobs)
        self.assertEqual(len({jid for jid, _ in claims}), n_jobs)
        self.assertGreater(sum(1 for g in got if g), 1)  # really concurrent
        for jid, tok in claims[:50]:
            self.assertEqual(self.h(f"job:{jid}")["token"], tok)


if __name__ == "__main__":
    unittest.main()
