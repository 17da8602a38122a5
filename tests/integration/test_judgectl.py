#!/usr/bin/env python3
"""judgectl's Redis commands against a private redis-server, run as users run them.

Oracles: what Redis holds afterwards (read with redis-py as docs/PROTOCOL.md describes the keys),
`judgectl run`'s output file for the same spec (results of a sweep must be byte-identical to it),
`judgectl metrics --pred --labels` (metrics of a sweep must equal it), and the error messages'
file:line and field names. No daemon runs here: where a sweep needs judging, this test is the
worker, committing the records `judgectl run` wrote through the protocol's own calls.

Run: JUDGED_BINDIR=bin python3 -m unittest tests/integration/test_judgectl.py
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from redis_server import ROOT, RedisServer  # noqa: E402

BINDIR = os.environ.get("JUDGED_BINDIR", os.path.join(ROOT, "bin"))
CTL = os.path.join(BINDIR, "judgectl")
FIX = os.path.join(ROOT, "tests", "fixtures")
MODEL = os.path.join(FIX, "stories260K-hf")
PANDALM = os.path.join(FIX, "pandalm", "testset-v1.json")
P = "gq:{judge}:"
SERVER = None


def setUpModule():
    global SERVER
    SERVER = RedisServer(load_library=False)  # judgectl loads it


def tearDownModule():
    SERVER.stop()


def dec(x):
    return x.decode() if isinstance(x, bytes) else x


def slurp(path):
    with open(path, "rb") as f:
        return f.read()


def pandalm_rows(n):
    with open(PANDALM) as f:
        return json.load(f)[:n]


class JudgectlTest(unittest.TestCase):
    def setUp(self):
        self.r = SERVER.client()
        self.r.flushall()
        self.dir = tempfile.mkdtemp(prefix="judged-ctl-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def ctl(self, *args, redis_url=None, timeout=300):
        env = dict(os.environ, JUDGED_REDIS=redis_url or SERVER.url)
        p = subprocess.run([CTL, *args], capture_output=True, env=env, timeout=timeout)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def ok(self, *args):
        rc, out, err = self.ctl(*args)
        self.assertEqual(rc, 0, f"judgectl {' '.join(args)}: {err}")
        return out

    def spec(self, name="job", n=10, shard_size=4, extra="", rows=None):
        rows = rows if rows is not None else pandalm_rows(n)
        inp = os.path.join(self.dir, f"{name}.jsonl")
        with open(inp, "w") as f:
            for row in rows:
                f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
        path = os.path.join(self.dir, f"{name}.yaml")
        with open(path, "w") as f:
            f.write(f"kind: judge\nname: {name}\nmodel: {MODEL}\ninput: {name}.jsonl\n"
                    f"input_format: pandalm\noutput: fast\nmax_new_tokens: 4\n"
                    f"deterministic: true\nshard_size: {shard_size}\nlabels: {PANDALM}\n{extra}")
        return path

    def h(self, key):
        return {dec(k): dec(v) for k, v in self.r.hgetall(P + key).items()}

    def fcall(self, fn, *args):
        return [dec(x) for x in self.r.fcall(fn, 1, P + "seq", P, *args)]

    def assert_nothing_submitted(self):
        self.assertEqual([k for k in self.r.keys("*") if b"sweep" in k or b"job:" in k], [])

    # ---- submit -----------------------------------------------------------------------------

    def test_submit_status_queues(self):
        spec = self.spec(n=10, shard_size=4)
        rc, out, err = self.ctl("submit", spec)
        self.assertEqual(rc, 0, err)
        sid = out.strip()
        self.assertEqual(out, sid + "\n", "stdout holds the sweep id only")
        self.assertRegex(sid, r"^job-\d{8}T\d{6}-[0-9a-f]{6}$")
        sw = self.h(f"sweep:{sid}")
        self.assertEqual((sw["state"], sw["expected"], sw["agg_queue"]), ("sealed", "3", "judge"))
        meta = json.loads(sw["meta"])
        self.assertEqual((meta["name"], meta["n_samples"], meta["shard_size"], meta["mode"]),
                         ("job", 10, 4, "pair"))
        self.assertEqual(meta["spec"]["model"], os.path.realpath(MODEL))
        self.assertEqual(self.r.get(P + f"sweep:{sid}:labels"), slurp(PANDALM))
        # the shard payloads (PROTOCOL.md section 5): 4 + 4 + 2 samples in input order
        rows = pandalm_rows(10)
        seen = []
        for i in range(3):
            job = self.h(f"job:{sid}:{i}")
            self.assertEqual((job["state"], job["queue"], job["sweep"], job["shard"]),
                             ("queued", "judge", sid, str(i)))
            payload = json.loads(job["payload"])
            self.assertEqual((payload["v"], payload["kind"]), (1, "judge"))
            self.assertEqual(payload["spec"], meta["spec"])
            for s in payload["samples"]:
                r = rows[s["i"]]
                self.assertEqual(s["question_id"], r["idx"])
                self.assertEqual(s["answers"], [r["response1"], r["response2"]])
                self.assertEqual(s["record"], r)
                seen.append(s["i"])
        self.assertEqual(seen, list(range(10)))
        out = self.ok("status")
        self.assertRegex(out, rf"{sid}\s+sealed\s+0/0/3\s+10\s")
        out = self.ok("status", sid)
        self.assertIn("0 ok, 0 failed, 0 running, 3 queued, 0 retrying of 3", out)
        st = json.loads(self.ok("status", sid, "--json"))
        self.assertEqual((st["queued"], st["expected"], st["running"]), (3, 3, []))
        out = self.ok("queues")
        self.assertRegex(out, r"judge\s+3\s+no")
        self.assertIn("delayed 0, running (leases) 0, dead 0", out)
        q = json.loads(self.ok("queues", "--json"))
        self.assertEqual(q["queues"], [{"queue": "judge", "ready": 3, "paused": False}])

    def test_submit_options(self):
        spec = self.spec(n=3, shard_size=2)
        out = self.ok("submit", spec, "--id", "opt", "--queue", "urgent", "--priority", "7",
                      "--max-attempts", "5", "--run-budget-s", "60")
        self.assertEqual(out, "opt\n")
        job = self.h("job:opt:1")
        self.assertEqual((job["queue"], job["prio"], job["max_attempts"], job["run_budget_ms"]),
                         ("urgent", "7", "5", "60000"))
        self.assertEqual(self.h("sweep:opt")["agg_queue"], "urgent")
        for bad in (["--id", "a:b"], ["--id", "a b"], ["--priority", "1001"],
                    ["--max-attempts", "0"], ["--queue", "x y"]):
            rc, _, err = self.ctl("submit", spec, *bad)
            self.assertEqual(rc, 2, (bad, err))
        self.assertEqual(self.ctl("submit")[0], 2)

    def test_duplicate_submit_enqueues_nothing(self):
        spec = self.spec(n=6, shard_size=2)
        self.assertEqual(self.ok("submit", spec, "--id", "dup"), "dup\n")
        seq = self.r.get(P + "seq")
        keys = sorted(self.r.keys("*job:*"))
        rc, out, err = self.ctl("submit", spec, "--id", "dup")
        self.assertEqual((rc, out), (0, "dup\n"))
        self.assertIn("already submitted", err)
        self.assertEqual(self.r.get(P + "seq"), seq)
        self.assertEqual(sorted(self.r.keys("*job:*")), keys)
        # the same id with another spec is refused
        other = self.spec(name="other", n=8, shard_size=2)
        rc, _, err = self.ctl("submit", other, "--id", "dup")
        self.assertEqual(rc, 1)
        self.assertIn("different spec", err)

    def test_unsealed_sweep_is_finished_by_a_resubmit(self):
        spec = self.spec(n=6, shard_size=2)
        self.ok("submit", spec, "--id", "half")
        # pretend the first submit died after enqueueing shard 0: rebuild that state
        meta = self.h("sweep:half")["meta"]
        payload0 = self.h("job:half:0")["payload"]
        self.r.flushall()
        self.fcall("gq_sweep_create", "half", 3, "judge", 0, meta)
        self.fcall("gq_enqueue", "half:0", "judge", 0, 0, 3, 0, payload0, "half", 0)
        rc, out, err = self.ctl("submit", spec, "--id", "half")
        self.assertEqual((rc, out), (0, "half\n"), err)
        self.assertIn("(1 shards were already enqueued)", err)
        self.assertEqual(self.h("sweep:half")["state"], "sealed")
        self.assertEqual([self.h(f"job:half:{i}")["state"] for i in range(3)], ["queued"] * 3)

    def test_bad_specs_and_inputs_submit_nothing(self):
        rows = pandalm_rows(5)
        bad = os.path.join(self.dir, "bad.yaml")
        with open(bad, "w") as f:
            f.write(f"kind: judge\nmodel: {MODEL}\ninput: x.jsonl\nswap: sometimes\n")
        rc, out, err = self.ctl("submit", bad)
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("bad.yaml:4:1: field 'swap'", err)
        # a JSONL line that is not an object
        spec = self.spec(name="notobj", rows=[json.dumps(rows[0]), json.dumps(rows[1]), "[1, 2]"])
        rc, _, err = self.ctl("submit", spec)
        self.assertEqual(rc, 1)
        self.assertIn("notobj.jsonl:3", err)
        # a record without a required field
        broken = dict(rows[1])
        del broken["response2"]
        spec = self.spec(name="missing", rows=[rows[0], broken, rows[2]])
        rc, _, err = self.ctl("submit", spec)
        self.assertEqual(rc, 1)
        self.assertIn("missing.jsonl:2", err)
        self.assertIn("response2", err)
        # invalid JSON
        spec = self.spec(name="garbage", rows=[json.dumps(rows[0]), "{nope"])
        rc, _, err = self.ctl("submit", spec)
        self.assertEqual(rc, 1)
        self.assertIn("garbage.jsonl:2", err)
        # unreadable labels
        spec = self.spec(name="nolabels", n=3)
        text = slurp(spec).decode().replace(PANDALM, os.path.join(self.dir, "none.json"))
        with open(spec, "w") as f:
            f.write(text)
        rc, _, err = self.ctl("submit", spec)
        self.assertEqual(rc, 1)
        self.assertIn("field 'labels'", err)
        self.assert_nothing_submitted()

    def test_oversized_payload_names_the_sample(self):
        rows = pandalm_rows(4)
        rows[2] = dict(rows[2], response1="x" * (1536 * 1024))
        spec = self.spec(name="big", rows=rows, shard_size=2)
        rc, _, err = self.ctl("submit", spec, "--max-payload-mib", "1")
        self.assertEqual(rc, 1)
        self.assertIn("big.jsonl:3", err)
        self.assertIn("shard 1", err)
        self.assertIn("big.yaml", err)
        self.assert_nothing_submitted()

    def test_connection_error_names_the_url(self):
        rc, _, err = self.ctl("queues", redis_url="redis://127.0.0.1:1")
        self.assertEqual(rc, 1)
        self.assertIn("redis://127.0.0.1:1", err)
        spec = self.spec(n=2)
        rc, out, err = self.ctl("submit", spec, "--redis", "redis://127.0.0.1:1")
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("redis://127.0.0.1:1", err)

    # ---- operator commands ------------------------------------------------------------------

    def test_pause_resume_cancel_dlq_workers(self):
        spec = self.spec(n=6, shard_size=2)
        self.ok("submit", spec, "--id", "ops")
        self.assertIn("paused", self.ok("pause", "judge"))
        self.assertTrue(self.r.exists(P + "q:judge:paused"))
        self.assertRegex(self.ok("queues"), r"judge\s+3\s+yes")
        self.assertEqual(self.fcall("gq_claim", "w", os.urandom(16).hex(), 60000, "judge"), [])
        self.ok("resume", "judge")
        self.assertFalse(self.r.exists(P + "q:judge:paused"))
        # a running shard: cancel tells it through the heartbeat
        tok = os.urandom(16).hex()
        jid = self.fcall("gq_claim", "w", tok, 60000, "judge")[0]
        self.assertEqual(jid, "ops:0")
        out = self.ok("status", "ops")
        self.assertRegex(out, r"0\s+w\s+progress -")
        out = self.ok("cancel", "ops")
        self.assertIn("2 queued shards cancelled", out)
        self.assertIn("already cancelled", self.ok("cancel", "ops"))
        self.assertEqual(self.fcall("gq_heartbeat", jid, tok, 60000, "", ""), ["ok", "sweep"])
        self.assertEqual(self.h("sweep:ops")["state"], "cancelled")
        rc, _, err = self.ctl("watch", "ops")
        self.assertEqual(rc, 1)
        self.assertIn("sweep ops cancelled", err)
        rc, _, err = self.ctl("results", "ops")
        self.assertEqual(rc, 1)
        self.assertIn("shard 1 failed: cancelled: sweep cancelled", err)
        # single jobs
        self.fcall("gq_enqueue", "single", "judge", 0, 0, 3, 0, "x", "", "")
        self.assertIn("job single cancelled", self.ok("cancel", "single"))
        rc, _, err = self.ctl("cancel", "nothing")
        self.assertEqual(rc, 1)
        self.assertIn("no sweep or job named 'nothing'", err)
        # the dead-letter set
        self.assertEqual(self.ok("dlq", "list").splitlines()[1:], [])
        self.assertEqual(json.loads(self.ok("dlq", "list", "--json")), [])
        self.fcall("gq_enqueue", "poison", "judge", 0, 0, 1, 0, "x", "", "")
        tok = os.urandom(16).hex()
        self.fcall("gq_claim", "w", tok, 60000, "judge")
        self.assertEqual(self.fcall("gq_fail", "poison", tok, "bad input", 0, 0), ["dead"])
        out = self.ok("dlq", "list")
        self.assertRegex(out, r"poison\s+\S+\s+1\s+judge\s+bad input")
        self.assertIn("queued again", self.ok("dlq", "retry", "--all"))
        self.assertEqual(self.h("job:poison")["state"], "queued")
        rc, _, err = self.ctl("dlq", "retry", "poison")
        self.assertEqual(rc, 1)
        self.assertIn("not dead", err)
        self.assertEqual(self.ctl("dlq", "retry")[0], 2)
        # workers
        self.fcall("gq_worker", "host-a", '{"host": "a"}', 60000)
        out = self.ok("workers")
        self.assertRegex(out, r"host-a\s+yes\s+\d+s")
        w = json.loads(self.ok("workers", "--json"))
        self.assertEqual((w[0]["worker"], w[0]["alive"], w[0]["info"]), ("host-a", True, {"host": "a"}))

    def test_schedules(self):
        spec = self.spec(n=5, shard_size=2)
        rc, _, err = self.ctl("schedule", "add", "nightly", "61 2 * * *", spec)
        self.assertEqual(rc, 1)
        self.assertIn("minute", err)
        rc, _, err = self.ctl("schedule", "add", "nightly", "0 2 * *", spec)
        self.assertEqual(rc, 1)
        self.assertIn("five fields", err)
        self.assertEqual(self.r.keys("*sched*"), [])
        out = self.ok("schedule", "add", "nightly", "0 2 * * *", spec, "--priority", "3")
        self.assertIn("schedule nightly", out)
        self.assertIn("T02:00:00Z", out)
        sched = self.h("sched:nightly")
        self.assertEqual((sched["cron"], sched["n_shards"]), ("0 2 * * *", "3"))
        meta = json.loads(sched["meta"])
        self.assertEqual((meta["queue"], meta["priority"], meta["n_samples"]), ("judge", 3, 5))
        self.assertEqual(self.r.hlen(P + "sched:nightly:shards"), 3)
        self.assertEqual(self.r.get(P + "sched:nightly:labels"), slurp(PANDALM))
        rc, _, err = self.ctl("schedule", "add", "nightly", "0 3 * * *", spec)
        self.assertEqual(rc, 1)
        self.assertIn("--replace", err)
        self.ok("schedule", "add", "nightly", "30 3 * * 1-5", spec, "--replace")
        self.assertEqual(self.h("sched:nightly")["cron"], "30 3 * * 1-5")
        out = self.ok("schedule", "list")
        self.assertRegex(out, r"nightly\s+30 3 \* \* 1-5\s+\d{4}-\d\d-\d\dT03:30:00Z\s+judge")
        lst = json.loads(self.ok("schedule", "list", "--json"))
        self.assertEqual(lst[0]["schedule"], "nightly")
        self.assertEqual(self.ok("schedule", "remove", "nightly"), "schedule nightly removed\n")
        self.assertEqual(self.r.keys("*sched*"), [])
        rc, _, err = self.ctl("schedule", "remove", "nightly")
        self.assertEqual(rc, 1)
        self.assertEqual(self.ctl("schedule")[0], 2)

    # ---- retention and purge -----------------------------------------------------------------

    def finish(self, sid, queue="judge"):
        """Be the worker for every shard of `sid` and its aggregate (the records do not matter
        here), so that the sweep is done. Its queue must hold nothing else."""
        n = int(self.h(f"sweep:{sid}")["expected"])
        for _ in range(n + 1):
            tok = os.urandom(16).hex()
            jid = self.fcall("gq_claim", "test-worker", tok, 60000, queue)[0]
            self.assertTrue(jid.startswith(f"{sid}:") or jid.startswith(f"agg:{sid}:"), jid)
            self.assertEqual(self.fcall("gq_complete", jid, tok, "{}"), ["ok"])
        self.assertEqual(self.h(f"sweep:{sid}")["state"], "done")

    def server_ms(self):
        sec, usec = self.r.time()
        return sec * 1000 + usec // 1000

    def test_keep_durations(self):
        spec = self.spec(n=3, shard_size=2)
        for arg, ms in (("30m", 1800000), ("12h", 43200000), ("7d", 604800000),
                        ("2w", 1209600000), ("1500ms", 1500), ("0", 0), ("forever", 0)):
            sid = "keep-" + arg
            self.assertEqual(self.ok("submit", spec, "--id", sid, "--keep", arg), sid + "\n")
            self.assertEqual(self.h(f"sweep:{sid}")["retention_ms"], str(ms), arg)
        self.assertEqual(self.h("sweep:" + self.ok("submit", spec).strip())["retention_ms"], "0")
        self.r.flushall()
        for args, flag in ((["submit", spec, "--keep", "7x"], "--keep"),
                           (["submit", spec, "--keep", "-1d"], "--keep"),
                           (["submit", spec, "--keep", "7"], "--keep"),
                           (["submit", spec, "--keep", "3651d"], "--keep"),
                           (["submit", spec, "--keep", ""], "--keep"),
                           (["schedule", "add", "n", "0 2 * * *", spec, "--keep", "1y"], "--keep"),
                           (["purge", "--finished-before", "soon"], "--finished-before"),
                           (["purge", "--finished-before", "forever"], "--finished-before")):
            rc, out, err = self.ctl(*args)
            self.assertEqual((rc, out), (2, ""), args)
            self.assertIn(f"{flag}: '{args[-1]}' is not a duration", err)
        self.assertEqual(self.r.keys("*sweep*") + self.r.keys("*sched*"), [])

    def test_submit_keep_then_status_shows_when_the_keys_expire(self):
        spec = self.spec(n=3, shard_size=2)
        self.ok("submit", spec, "--id", "kept", "--keep", "2d")
        self.ok("submit", spec, "--id", "forever", "--queue", "other")
        self.assertIn("expires  2d after it finishes\n", self.ok("status", "kept"))
        self.assertIn("expires  never", self.ok("status", "forever"))
        st = json.loads(self.ok("status", "kept", "--json"))
        self.assertEqual((st["retention_ms"], st["expires_ms"]), (172800000, None))
        self.finish("kept")
        expires = int(self.h("sweep:kept")["expires_ms"])
        self.assertEqual(self.r.execute_command("PEXPIRETIME", P + "sweep:kept:res"), expires)
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires // 1000))
        self.assertRegex(self.ok("status", "kept"),
                         rf"\nexpires  {when} \(in 4[78]h; kept 2d once finished\)\n")
        st = json.loads(self.ok("status", "kept", "--json"))
        self.assertEqual((st["retention_ms"], st["expires_ms"]), (172800000, expires))
        self.assertIsNone(json.loads(self.ok("status", "forever", "--json"))["expires_ms"])

    def test_purge(self):
        spec = self.spec(n=3, shard_size=2)
        for sid in ("old", "new", "running"):
            self.ok("submit", spec, "--id", sid, "--queue", sid)  # a queue per sweep
        self.finish("old", "old")
        self.finish("new", "new")
        # old was created three hours ago and finished two hours ago (Redis time; the sweeps zset
        # scores creation times, PROTOCOL.md section 2)
        old_done = self.server_ms() - 7200000
        self.r.hset(P + "sweep:old", mapping={"created_ms": old_done - 3600000,
                                              "finished_ms": old_done})
        self.r.zadd(P + "sweeps", {"old": old_done - 3600000})
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(old_done // 1000))
        # "running" is sealed, one shard claimed
        tok = os.urandom(16).hex()
        self.assertEqual(self.fcall("gq_claim", "w", tok, 60000, "running")[0], "running:0")
        keys = sorted(self.r.keys("*"))
        # --dry-run lists and deletes nothing
        rc, out, err = self.ctl("purge", "--finished-before", "1h", "--dry-run")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, f"would purge old (done, finished {when})\n")
        self.assertIn("1 sweeps would be purged", err)
        self.assertEqual(sorted(self.r.keys("*")), keys)
        # a sweep that is not finished is refused by name
        rc, out, err = self.ctl("purge", "running")
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("sweep running is sealed, not finished", err)
        self.assertIn("--force", err)
        self.assertEqual(sorted(self.r.keys("*")), keys)
        # finished more than an hour ago: old only
        rc, out, err = self.ctl("purge", "--finished-before", "1h")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, f"purged old (done, finished {when}, 3 jobs)\n")
        self.assertEqual([k for k in self.r.keys("*") if b"old" in k], [])
        self.assertEqual(self.r.zrange(P + "sweeps", 0, -1), [b"new", b"running"])
        self.assertEqual(sorted(self.r.keys("*")), [k for k in keys if b"old" not in k])
        self.assertEqual(self.h("sweep:new")["state"], "done")
        self.assertEqual(self.ok("purge", "new"), "purged new (3 jobs)\n")
        self.assertEqual(self.ok("purge", "running", "--force"), "purged running (2 jobs)\n")
        self.assertEqual(self.fcall("gq_heartbeat", "running:0", tok, 60000, "", ""), ["lost"])
        self.assertEqual([k for k in self.r.keys("*") if b"sweep" in k or b"job:" in k], [])
        rc, _, err = self.ctl("purge", "running")
        self.assertEqual(rc, 1)
        self.assertIn("no sweep named 'running'", err)
        for bad in ([], ["a", "--dry-run"], ["--finished-before", "1h", "--force"],
                    ["a", "--finished-before", "1h"], ["a:b"]):
            self.assertEqual(self.ctl("purge", *bad)[0], 2, bad)

    def test_schedule_keep_reaches_each_fired_sweep(self):
        spec = self.spec(n=3, shard_size=2)
        out = self.ok("schedule", "add", "nightly", "0 2 * * *", spec, "--keep", "12h")
        self.assertIn("each sweep kept 12h once finished", out)
        self.assertEqual(self.h("sched:nightly")["retention_ms"], "43200000")
        self.assertRegex(self.ok("schedule", "list"), r"nightly\s.*\s12h\n")
        self.assertEqual(json.loads(self.ok("schedule", "list", "--json"))[0]["retention_ms"],
                         43200000)
        # fire it as judged does (gq_schedule_fire's eight arguments, PROTOCOL.md section 4)
        due = int(self.h("sched:nightly")["last_due_ms"]) + 1
        deadline = time.time() + 10
        while self.server_ms() <= due and time.time() < deadline:
            time.sleep(0.01)
        self.assertEqual(self.fcall("gq_schedule_fire", "nightly", due, "nightly-1", "judge", 0,
                                    3, 0, "judge"), ["ok", "nightly-1"])
        self.assertEqual(self.h("sweep:nightly-1")["retention_ms"], "43200000")
        self.finish("nightly-1")
        st = json.loads(self.ok("status", "nightly-1", "--json"))
        self.assertEqual(st["expires_ms"], int(self.h("sweep:nightly-1")["finished_ms"]) + 43200000)
        # without --keep a schedule keeps its sweeps forever
        self.ok("schedule", "add", "nightly", "0 2 * * *", spec, "--replace")
        self.assertEqual(self.h("sched:nightly")["retention_ms"], "0")
        self.assertRegex(self.ok("schedule", "list"), r"nightly\s.*\sforever\n")

    # ---- results and metrics against judgectl run ------------------------------------------

    def test_results_and_metrics_match_judgectl_run(self):
        spec = self.spec(name="res", n=10, shard_size=4)
        oracle = os.path.join(self.dir, "run.jsonl")
        rc, _, err = self.ctl("run", spec, "--context", "2048", "-o", oracle)
        self.assertEqual(rc, 0, err)
        lines = slurp(oracle).decode().splitlines()
        records = {json.loads(line)["idx"]: line for line in lines}
        self.assertEqual(self.ok("submit", spec, "--id", "res"), "res\n")
        rc, _, err = self.ctl("results", "res")
        self.assertEqual(rc, 1)
        self.assertIn("not complete", err)
        # be the worker: commit each shard's records (PROTOCOL.md section 5's result blob)
        for k in range(3):
            tok = os.urandom(16).hex()
            jid, payload, *_ = self.fcall("gq_claim", "test-worker", tok, 60000, "judge")
            samples = json.loads(payload)["samples"]
            self.fcall("gq_heartbeat", jid, tok, 60000, f"1/{len(samples)}", "")
            if k == 1:
                out = self.ok("status", "res")
                self.assertIn("1 ok, 0 failed, 1 running, 1 queued", out)
                self.assertRegex(out, r"1\s+test-worker\s+progress 1/4")
                rc, out, err = self.ctl("results", "res", "--partial")
                self.assertEqual(rc, 0, err)
                self.assertEqual(len(out.splitlines()), 4)
            blob = "".join(f"{s['question_id']}\t{records[s['question_id']]}\n"
                           for s in reversed(samples))
            self.assertEqual(self.fcall("gq_complete", jid, tok, blob), ["ok"])
        self.assertEqual(self.h("sweep:res")["state"], "aggregating")
        tok = os.urandom(16).hex()
        jid = self.fcall("gq_claim", "test-worker", tok, 60000, "judge")[0]
        self.assertEqual(jid, "agg:res:1")
        self.assertEqual(self.fcall("gq_complete", jid, tok, "{}"), ["ok"])
        rc, _, err = self.ctl("watch", "res")
        self.assertEqual(rc, 0, err)
        self.assertIn("sweep res done: 10/10 samples, 3 shards ok, 0 failed of 3", err)
        # results: byte-identical to judgectl run's file, to stdout and to -o
        rc, out, err = self.ctl("results", "res")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.encode(), slurp(oracle))
        res_path = os.path.join(self.dir, "res.jsonl")
        self.ok("results", "res", "-o", res_path)
        self.assertEqual(slurp(res_path), slurp(oracle))
        # metrics: the same as judgectl metrics on judgectl run's judgments (PandaLM records
        # carry "idx": the file names it question_id, as the result blobs' prefixes do)
        pred = os.path.join(self.dir, "pred.jsonl")
        with open(pred, "w") as f:
            for line in lines:
                rec = json.loads(line)
                f.write(json.dumps({"question_id": rec["idx"], "pred_text": rec["pred_text"]})
                        + "\n")
        for fmt in ([], ["--json"]):
            want = self.ok("metrics", "--pred", pred, "--labels", PANDALM, *fmt)
            self.assertEqual(self.ok("metrics", "res", *fmt), want)
        rc, _, err = self.ctl("metrics", "missing-sweep")
        self.assertEqual(rc, 1)
        self.assertIn("no sweep named 'missing-sweep'", err)


if __name__ == "__main__":
    unittest.main()
