"""``benchmark.py serve``: load on the REST model server (``mlflow models serve``), N requests
from C concurrent clients on loopback; p50/p99 latency and requests/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import save


def add_parser(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("serve", help="REST load: concurrent requests to mlflow models serve")
    v.add_argument("--tracking-uri", default=None, help="default: train a fresh synthetic model")
    v.add_argument("--model", default="models:/recmf/latest")
    v.add_argument("--requests", type=int, default=2000)
    v.add_argument("--clients", type=int, default=32)
    v.add_argument("--workers", type=int, default=2, help="server worker processes")
    v.add_argument("--workdir", default=".recmf/benchmark")
    v.add_argument("--out", default=None)


def run(args: argparse.Namespace) -> int:
    """Load on the REST model server: N requests from C concurrent clients on loopback."""
    import os
    import signal
    import socket
    import subprocess
    import threading
    import urllib.request

    work = Path(args.workdir).resolve() / "serve"
    work.mkdir(parents=True, exist_ok=True)
    uri = args.tracking_uri or f"sqlite:///{work / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    if not args.tracking_uri:  # a fresh model on the synthetic data set, in its own schema
        from recmf import cli, pipeline
        from recmf.config import compose_settings

        # registered as models:/recmf/latest in the benchmark's own tracking store
        overrides = [f"logger.tracking_uri={uri}", "db.schema=bench_serve"]
        overrides.append("registered_model=recmf")
        cfg = compose_settings("train", overrides)
        cli.run(lambda: pipeline.train(cfg))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_cli), "models", "serve", "-m", args.model, "--env-manager", "local"]
    cmd += ["-h", "127.0.0.1", "-p", str(port), "--workers", str(args.workers)]
    server = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    users = [f"U{i}" for i in range(1, 201)] + ["NOBODY"]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        body = {"dataframe_split": {"columns": ["user_id"], "data": [[users[i % len(users)]]]}}
        body["params"] = {"k": 10}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                rows = json.loads(response.read())["predictions"]
                ok = response.status == 200 and len(rows) == 10
        except OSError as exc:
            ok, rows = False, str(exc)
        with lock:
            latencies.append(time.perf_counter() - t0)
            if not ok:
                errors.append(str(rows)[:200])

    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    print("the model server did not start", file=sys.stderr)
                    return 1
                time.sleep(0.5)
        for i in range(args.clients):  # warm every worker's store connection
            call(i)
        latencies.clear()
        counter = iter(range(args.requests))
        counter_lock = threading.Lock()

        def client() -> None:
            while True:
                with counter_lock:
                    i = next(counter, None)
                if i is None:
                    return
                call(i)

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    lat = np.array(latencies) * 1000
    result = {
        "requests": args.requests,
        "clients": args.clients,
        "workers": args.workers,
        "errors": len(errors),
        "error_examples": errors[:3],
        "seconds": wall,
        "requests_per_s": args.requests / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "cpu_count": os.cpu_count(),
    }
    print(
        f"{args.requests} requests from {args.clients} clients ({args.workers} server workers): "
        f"{len(errors)} errors, {result['requests_per_s']:.0f} requests/s, "
        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
    )
    save(args, "serve.json", result)
    return 1 if errors else 0
