"""Teacher-client throughput: how close persyn-hf's synthesis engine gets to what a teacher endpoint can serve.

A TGI-protocol server (`persyn_hf.testing.server`, in its own process, no model) answers every request after a
fixed service latency, so with c requests in flight it serves at most c / latency requests per second. One run:
- `sequential`: the naive way, one blocking `InferenceClient.chat_completion` call after another;
- `bare-aiohttp`: no engine at all, just c coroutines posting the same request with one `aiohttp` session: the
  most any client in one process gets from this server on this machine (server and client share its cores);
- `persyn-hf`: `synthesize` (pool, retries, durable results store, output dataset) with `max_concurrency` c,
  through the `openai` backend (chat) and the `tgi` backend (`/generate`, prompts rendered by a chat template
  here), over the default HTTP client (`aiohttp`) and over `huggingface_hub.AsyncInferenceClient`.

Besides throughput, each row gives the client's CPU time per request, which does not depend on how busy the
machine is. Headline: throughput as a fraction of capacity (c / latency) at c = 64, `openai` backend, default client.

```bash
python benchmarks/client_throughput.py --json benchmarks/client_throughput.json
```
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

from datasets import Dataset
from huggingface_hub import InferenceClient

from persyn_hf.generate import SynthesisConfig, synthesize
from persyn_hf.teachers import TeacherSpec
from persyn_hf.teachers.spec import HTTP_CLIENTS
from persyn_hf.testing.fixtures import build_tokenizer

GOAL = 0.9


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "persyn_hf.testing.server", "--latency_ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    return server, server.stdout.readline().strip()


def prompts(count: int) -> Dataset:
    return Dataset.from_dict(
        {"prompt_id": list(range(count)), "prompt": [f"What is {i} + {i}?" for i in range(count)]}
    )


def sequential(url: str, count: int) -> float:
    """Seconds for `count` blocking requests, one after the other."""
    client = InferenceClient(base_url=url, api_key="EMPTY", timeout=30)
    start = time.perf_counter()
    for i in range(count):
        client.chat_completion([{"role": "user", "content": f"What is {i} + {i}?"}], model="bench", max_tokens=16)
    return time.perf_counter() - start


def bare_aiohttp(url: str, concurrency: int, count: int) -> float:
    """Seconds for `count` chat requests from `concurrency` coroutines sharing one `aiohttp` session."""
    import asyncio

    import aiohttp

    payload = {"model": "bench", "messages": [{"role": "user", "content": "What is 1 + 1?"}], "max_tokens": 16}

    async def run() -> float:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout
        ) as session:
            remaining = iter(range(count))

            async def worker():
                for _ in remaining:
                    async with session.post(f"{url}/v1/chat/completions", json=payload) as response:
                        await response.json()

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - start

    return asyncio.run(run())


def engine(url: str, backend: str, http_client: str, concurrency: int, count: int, tokenizer_dir: str) -> float:
    """Seconds for `synthesize` to get `count` answers with `concurrency` requests in flight."""
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
        data = prompts(count)
        start = time.perf_counter()
        generations, _ = synthesize(data, [spec], config)
        elapsed = time.perf_counter() - start
    assert len(generations) == count
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency_ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--rounds", type=int, default=20, help="Requests per run = rounds x concurrency.")
    parser.add_argument("--json", default=None, help="Write the results here.")
    args = parser.parse_args()

    latency = args.latency_ms / 1000
    server, url = start_server(args.latency_ms)
    tokenizer_dir = tempfile.mkdtemp()
    build_tokenizer(save_dir=tokenizer_dir)
    try:
        for http_client in HTTP_CLIENTS:  # warm-up: imports, first connections
            engine(url, "openai", http_client, 4, 16, tokenizer_dir)
        count = args.rounds
        cpu = time.process_time()
        seconds = sequential(url, count)
        cpu_ms = (time.process_time() - cpu) / count * 1000
        base = count / seconds
        results = [
            {"method": "sequential", "backend": "openai", "http_client": "huggingface_hub", "concurrency": 1,
             "requests": count, "seconds": seconds, "throughput": base, "capacity": 1 / latency,
             "fraction_of_capacity": base * latency, "vs_sequential": 1.0, "client_cpu_ms_per_request": cpu_ms}
        ]  # fmt: skip
        for concurrency in args.concurrency:
            count = args.rounds * concurrency
            cpu = time.process_time()
            seconds = bare_aiohttp(url, concurrency, count)
            cpu_ms = (time.process_time() - cpu) / count * 1000
            results.append(
                {"method": "bare-aiohttp", "backend": "openai", "http_client": "aiohttp", "concurrency": concurrency,
                 "requests": count, "seconds": seconds, "throughput": count / seconds,
                 "capacity": concurrency / latency, "fraction_of_capacity": count / seconds * latency / concurrency,
                 "vs_sequential": count / seconds / base, "client_cpu_ms_per_request": cpu_ms}
            )  # fmt: skip
        for backend, http_client in (("openai", "aiohttp"), ("tgi", "aiohttp"), ("openai", "huggingface_hub")):
            for concurrency in args.concurrency:
                count = args.rounds * concurrency
                cpu = time.process_time()
                seconds = engine(url, backend, http_client, concurrency, count, tokenizer_dir)
                cpu_ms = (time.process_time() - cpu) / count * 1000
                throughput = count / seconds
                results.append(
                    {"method": "persyn-hf", "backend": backend, "http_client": http_client, "concurrency": concurrency,
                     "requests": count, "seconds": seconds, "throughput": throughput, "capacity": concurrency / latency,
                     "fraction_of_capacity": throughput * latency / concurrency, "vs_sequential": throughput / base,
                     "client_cpu_ms_per_request": cpu_ms}
                )  # fmt: skip
    finally:
        server.terminate()
        server.wait()

    print(f"Server: fixed {args.latency_ms:g} ms service latency, no model; capacity = concurrency / latency.\n")
    print(f"{'method':<13}{'backend':<8}{'client':<16}{'c':>4}{'requests':>10}{'seconds':>9}{'req/s':>9}"
          f"{'capacity':>10}{'of capacity':>13}{'vs sequential':>15}{'CPU ms/req':>12}")  # fmt: skip
    for r in results:
        print(
            f"{r['method']:<13}{r['backend']:<8}{r['http_client']:<16}{r['concurrency']:>4}{r['requests']:>10}"
            f"{r['seconds']:>9.2f}{r['throughput']:>9.1f}{r['capacity']:>10.0f}{r['fraction_of_capacity']:>13.2f}"
            f"{r['vs_sequential']:>14.1f}x{r['client_cpu_ms_per_request']:>12.2f}"
        )
    top = max(args.concurrency)
    headline = next(
        r for r in results
        if (r["method"], r["backend"], r["http_client"], r["concurrency"]) == ("persyn-hf", "openai", "aiohttp", top)
    )  # fmt: skip
    ceiling = next(r for r in results if r["method"] == "bare-aiohttp" and r["concurrency"] == top)
    print(
        f"\nHeadline: {headline['fraction_of_capacity']:.2f} of capacity at c = {top} (goal >= {GOAL}); a bare aiohttp "
        f"loop with no engine gets {ceiling['fraction_of_capacity']:.2f} here (the engine reaches "
        f"{headline['throughput'] / ceiling['throughput']:.2f} of it)."
    )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(
                {
                    "benchmark": "client_throughput",
                    "results": results,
                    "headline": {
                        "metric": f"throughput / capacity (c / latency) at c = {top}, openai backend, aiohttp client",
                        "value": headline["fraction_of_capacity"],
                        "goal": GOAL,
                        "higher_is_better": True,
                    },
                },
                file,
                indent=2,
            )


if __name__ == "__main__":
    main()
