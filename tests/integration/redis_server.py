"""A private redis-server for one test module: loopback, a free port (or $JUDGED_TEST_REDIS_PORT),
a temporary directory, no persistence; stopped (and the directory removed) by stop()."""
import os
import shutil
import socket
import subprocess
import tempfile
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LUA = os.path.join(ROOT, "queue", "gq_v1.lua")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, load_library=True):
        self.dir = tempfile.mkdtemp(prefix="judged-it-")
        env_port = os.environ.get("JUDGED_TEST_REDIS_PORT")
        self.port = int(env_port) if env_port else free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", os.path.join(self.dir, "log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}"
        self.r = redis.Redis(host="127.0.0.1", port=self.port)
        t_end = time.time() + 10
        while True:
            try:
                self.r.ping()
                break
            except redis.ConnectionError:
                if time.time() > t_end or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)
        if load_library:
            with open(LUA) as f:
                self.r.function_load(f.read())

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
