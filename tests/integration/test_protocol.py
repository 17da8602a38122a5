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

    def submit(self, sid, n, agg_queue="judge", seal=True, max_attempts=3, labels=None):
        """§6: create, enqueue every shard (pipelined), seal."""
        meta = json.dumps({"name": sid, "n_samples": 2 * n, "shard_size": 2})
        args = [sid, n, agg_queue, 0, meta] + ([labels] if labels is not None else [])
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
