"""Teacher-client throughput: how close persyn-hf's synthesis engine gets to a bare HTTP loop on the same server.

A TGI- and OpenAI-protocol server (`persyn_hf.testing.server`, in its own process, no model) answers every request
after a fixed service latency, so with c requests in flight it serves at most c / latency requests per second. One
run measures, on the same server:
- `sequential`: the naive way, one blocking `InferenceClient.chat_completion` call after another;
- `bare-aiohttp`: no engine at all, just c coroutines posting the same request with one `aiohttp` session: the
  most any client in one process gets from this server on this machine (server and client share its cores);
- `persyn-hf`: `synthesize` (pool, retries, circuit breaker, durable results store, output dataset) with
  `max_concurrency` c, through the `openai` backend (chat) and the `tgi` backend (`/generate`, prompts rendered by a
  chat template here), over the default HTTP client (`aiohttp`) and over `huggingface_hub.AsyncInferenceClient`.

At c = 64 the server answers in bursts, and each burst waits for the client to handle the previous one: client
CPU per request is throughput there, even on an idle machine. The bare loop and persyn-hf (`openai`, `aiohttp`)
run `--repeats` times, interleaved, so that both see the same machine; each row reports medians. Headline: persyn-hf's
throughput as a fraction of the bare loop's at the highest concurrency, the median over the interleaved pairs.
The load average before and after says how quiet the machine was.

```bash
python benchmarks/client_throughput.py --json benchmarks/client_throughput.json
```
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from datasets import Dataset
from huggingface_hub import InferenceClient

from persyn_hf.generate import SynthesisConfig, synthesize
from persyn_hf.teachers import TeacherSpec
from persyn_hf.testing.fixtures import build_tokenizer

GOAL = 0.95  # of the bare loop's throughput
HEADLINE = ("persyn-hf", "openai", "aiohttp")
VARIANTS = (HEADLINE, ("persyn-hf", "tgi", "aiohttp"), ("persyn-hf", "openai", "huggingface_hub"))


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "persyn_hf.testing.server", "--latency_ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    return server, server.stdout.readline().strip()


@functools.cache
def prompts(count: int) -> Dataset:
    return Dataset.from_dict(
        {"prompt_id": list(range(count)), "prompt": [f"What is {i} + {i}?" for i in range(count)]}
    )


def sequential(url: str, concurrency: int, count: int, tokenizer_dir: str) -> None:
    """`count` blocking requests, one after the other."""
    client = InferenceClient(base_url=url, api_key="EMPTY", timeout=30)
    for i in range(count):
        client.chat_completion([{"role": "user", "content": f"What is {i} + {i}?"}], model="bench", max_tokens=16)


def bare_aiohttp(url: str, concurrency: int, count: int, tokenizer_dir: str) -> None:
    """`count` chat requests from `concurrency` coroutines sharing one `aiohttp` session."""
    import aiohttp

    payload = {"model": "bench", "messages": [{"role": "user", "content": "What is 1 + 1?"}], "max_tokens": 16}

    async def run() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
            remaining = iter(range(count))

            async def worker():
                for _ in remaining:
                    async with session.post(f"{url}/v1/chat/completions", json=payload) as response:
                        await response.json()

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    asyncio.run(run())


def engine(backend: str, http_client: str):
    """A runner of `synthesize` getting `count` answers with `concurrency` requests in flight (the prompts dataset,
    its input, is built before the clock starts)."""

    def run(url: str, concurrency: int, count: int, tokenizer_dir: str) -> None:
        spec = TeacherSpec(
            name="bench",
            model_id="bench",
            family="bench",
            size_b=1,
            backend=backend,
            base_url=url,
            generation={"max_new_tokens": 16},
            max_concurrency=concurrency,
            backend_args={"http_client": http_client, **({"tokenizer": tokenizer_dir} if backend == "tgi" else {})},
        )
        with tempfile.TemporaryDirectory() as results:
            config = SynthesisConfig(max_concurrency=concurrency, results_dir=results, disable_tqdm=True)
            generations, _ = synthesize(prompts(count), [spec], config)
        assert len(generations) == count

    return run


def measure(runner, url: str, concurrency: int, count: int, tokenizer_dir: str) -> tuple[float, float]:
    """(requests per second, client CPU milliseconds per request) of one run."""
    cpu, start = time.process_time(), time.perf_counter()
    runner(url, concurrency, count, tokenizer_dir)
    seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    return count / seconds, cpu_s / count * 1000


def row(method, backend, http_client, concurrency, count, runs, latency, bare=None) -> dict:
    """One table row from `runs` [(req/s, CPU ms/req), ...]: medians, and the ratios to the bare loop's `bare` runs
    (the median ratio of the interleaved pairs when there are as many runs, else the ratio to the bare median)."""
    throughput = statistics.median(run[0] for run in runs)
    result = {
        "method": method, "backend": backend, "http_client": http_client, "concurrency": concurrency,
        "requests": count, "runs": len(runs), "throughput": throughput, "capacity": concurrency / latency,
        "fraction_of_capacity": throughput * latency / concurrency,
        "client_cpu_ms_per_request": statistics.median(run[1] for run in runs),
    }  # fmt: skip
    if bare is not None:
        pairs = (
            zip(runs, bare)
            if len(runs) == len(bare)
            else [(run, [statistics.median(b) for b in zip(*bare)]) for run in runs]
        )
        pairs = list(pairs)
        result["vs_bare"] = statistics.median(mine[0] / theirs[0] for mine, theirs in pairs)
        result["cpu_vs_bare"] = statistics.median(mine[1] / theirs[1] for mine, theirs in pairs)
    return result


def load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency_ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--rounds", type=int, default=40, help="Requests per run = rounds x concurrency.")
    parser.add_argument("--repeats", type=int, default=5, help="Interleaved runs of the bare loop and persyn-hf.")
    parser.add_argument("--json", default=None, help="Write the results here.")
    args = parser.parse_args()

    latency = args.latency_ms / 1000
    machine = {"cpus": os.cpu_count(), "load_average_before": load()}
    server, url = start_server(args.latency_ms)
    scratch = tempfile.TemporaryDirectory(prefix="persyn-bench-")
    tokenizer_dir = scratch.name
    build_tokenizer(save_dir=tokenizer_dir)
    results = []
    try:
        for _, backend, http_client in VARIANTS:  # warm-up: imports, first connections
            engine(backend, http_client)(url, 4, 16, tokenizer_dir)
        runs = [measure(sequential, url, 1, args.rounds, tokenizer_dir)]
        results.append(row("sequential", "openai", "huggingface_hub", 1, args.rounds, runs, latency))
        for concurrency in args.concurrency:
            count = args.rounds * concurrency
            prompts(count)  # built once, before any clock starts
            bare, headline = [], []
            for _ in range(args.repeats):
                bare.append(measure(bare_aiohttp, url, concurrency, count, tokenizer_dir))
                headline.append(measure(engine(*HEADLINE[1:]), url, concurrency, count, tokenizer_dir))
            results.append(row("bare-aiohttp", "openai", "aiohttp", concurrency, count, bare, latency))
            results.append(row(*HEADLINE, concurrency, count, headline, latency, bare))
            for method, backend, http_client in VARIANTS[1:]:
                runs = [measure(engine(backend, http_client), url, concurrency, count, tokenizer_dir)]
                results.append(row(method, backend, http_client, concurrency, count, runs, latency, bare))
    finally:
        server.terminate()
        server.wait()
        scratch.cleanup()
    machine["load_average_after"] = load()
    for r in results:  # the naive way: one blocking call after another
        r["vs_sequential"] = r["throughput"] / results[0]["throughput"]

    print(f"Server: fixed {args.latency_ms:g} ms service latency, no model; capacity = concurrency / latency.")
    print(f"Machine: {machine['cpus']} CPUs; load average (1, 5, 15 min) {machine['load_average_before']} before, "
          f"{machine['load_average_after']} after.\n")  # fmt: skip
    print(f"{'method':<13}{'backend':<8}{'client':<16}{'c':>4}{'requests':>10}{'runs':>5}{'req/s':>9}{'capacity':>10}"
          f"{'of capacity':>13}{'vs seq':>8}{'vs bare':>9}{'CPU ms/req':>12}{'CPU vs bare':>13}")  # fmt: skip
    for r in results:
        vs_bare = f"{r['vs_bare']:.2f}" if "vs_bare" in r else "-"
        cpu_vs_bare = f"{r['cpu_vs_bare']:.2f}" if "cpu_vs_bare" in r else "-"
        print(
            f"{r['method']:<13}{r['backend']:<8}{r['http_client']:<16}{r['concurrency']:>4}{r['requests']:>10}"
            f"{r['runs']:>5}{r['throughput']:>9.1f}{r['capacity']:>10.0f}{r['fraction_of_capacity']:>13.2f}"
            f"{r['vs_sequential']:>8.1f}{vs_bare:>9}{r['client_cpu_ms_per_request']:>12.3f}{cpu_vs_bare:>13}"
        )
    top = max(args.concurrency)
    headline = next(r for r in results if (r["method"], r["backend"], r["http_client"]) == HEADLINE and
                    r["concurrency"] == top)  # fmt: skip
    print(
        f"\nHeadline: persyn-hf reaches {headline['vs_bare']:.2f} of the bare aiohttp loop's throughput at c = {top} "
        f"(goal >= {GOAL}; median of {args.repeats} interleaved pairs), {headline['fraction_of_capacity']:.2f} of "
        f"capacity, at {headline['cpu_vs_bare']:.2f}x its client CPU per request."
    )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(
                {
                    "benchmark": "client_throughput",
                    "machine": machine,
                    "results": results,
                    "headline": {
                        "metric": f"persyn-hf throughput / bare aiohttp loop throughput at c = {top} (openai backend, "
                        "aiohttp client; median of interleaved pairs)",
                        "value": headline["vs_bare"],
                        "goal": GOAL,
                        "higher_is_better": True,
                    },
                },
                file,
                indent=2,
            )


if __name__ == "__main__":
    main()
