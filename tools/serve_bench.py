#!/usr/bin/env python3
"""Benchmark `gpt2 serve` as vLLM's benchmark_serving does: C concurrent streaming clients,
each sending fixed-length prompts back to back; reports req/s, output tok/s, TTFT, TPOT and ITL
(median, p99). Standard library only.

    tools/serve_bench.py --gpt2 target/release/gpt2 --model target/bench-models/124M-random \
        [--dtype f32] [--threads 2] [--clients 1 4 16] [--requests 32] [--prompt-tokens 32] [--new-tokens 128]

Each completion is greedy with `ignore_eos`, so every request generates exactly --new-tokens.
TTFT: request sent → first text chunk. ITL: between text chunks. TPOT: (last − first chunk) /
(tokens − 1) per request.
"""

import argparse
import http.client
import json
import platform
import statistics
import subprocess
import threading
import time


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def one_request(host, port, prompt_ids, new_tokens):
    body = json.dumps({"prompt": prompt_ids, "max_tokens": new_tokens, "temperature": 0,
                       "ignore_eos": True, "stream": True})
    conn = http.client.HTTPConnection(host, port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    times = []
    buf = b""
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            data = event.removeprefix(b"data: ")
            if data == b"[DONE]":
                continue
            obj = json.loads(data)
            if obj.get("choices") and obj["choices"][0].get("text"):
                times.append(time.perf_counter())
    conn.close()
    return t0, times


def percentile(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")


def run_level(host, port, clients, requests, prompt_tokens, new_tokens):
    results = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker(c):
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            prompt = [(i * 7919 + j * 104729 + 11) % 50000 for j in range(prompt_tokens)]
            r = one_request(host, port, prompt, new_tokens)
            with lock:
                results.append(r)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ttft = [ts[0] - t0 for t0, ts in results if ts]
    itl = [b - a for _, ts in results for a, b in zip(ts, ts[1:])]
    tpot = [(ts[-1] - ts[0]) / (len(ts) - 1) for _, ts in results if len(ts) > 1]
    tokens = sum(len(ts) for _, ts in results)
    return {
        "clients": clients, "requests": len(results), "req_s": len(results) / wall,
        "out_tok_s": tokens / wall,
        "ttft_med": statistics.median(ttft), "ttft_p99": percentile(ttft, 99),
        "tpot_med": statistics.median(tpot), "tpot_p99": percentile(tpot, 99),
        "itl_med": statistics.median(itl), "itl_p99": percentile(itl, 99),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpt2", default="target/release/gpt2")
    ap.add_argument("--model", required=True)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    a = ap.parse_args()
    cmd = [a.gpt2, "serve", "-m", a.model, "--port", "0", "--threads", a.threads, "--parallel", "16"]
    if a.dtype:
        cmd += ["--dtype", a.dtype]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        addr = proc.stdout.readline().strip().removeprefix("listening on http://")
        host, port = addr.rsplit(":", 1)
        while True:
            try:
                c = http.client.HTTPConnection(host, int(port), timeout=5)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        one_request(host, int(port), [1] * a.prompt_tokens, 4)  # warm-up
        print(f"# {cpu_model()}; {a.model} {a.dtype or 'default dtype'}, {a.threads} threads, "
              f"{a.prompt_tokens}-token prompts, {a.new_tokens} new tokens")
        print("| clients | req/s | out tok/s | TTFT med / p99 (ms) | TPOT med / p99 (ms) | ITL med / p99 (ms) |")
        print("|---|---|---|---|---|---|")
        for clients in a.clients:
            n = max(a.requests, clients)
            r = run_level(host, int(port), clients, n, a.prompt_tokens, a.new_tokens)
            print(f"| {clients} | {r['req_s']:.2f} | {r['out_tok_s']:.1f} | "
                  f"{r['ttft_med']*1e3:.0f} / {r['ttft_p99']*1e3:.0f} | "
                  f"{r['tpot_med']*1e3:.1f} / {r['tpot_p99']*1e3:.1f} | "
                  f"{r['itl_med']*1e3:.1f} / {r['itl_p99']*1e3:.1f} |", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
