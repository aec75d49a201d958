"""Router training throughput in teacher pairs per second: one backbone pass per prompt against one per pair.

Same tiny router, same prompts, same rows per step, one run, at n = 4 and n = 15 teachers:
- `pair-per-row`: the paper's pairwise dataset taken literally, the way a RewardTrainer-style pipeline consumes
  it: one row per (prompt, teacher a, teacher b, label), one backbone pass per row;
- `persyn-hf`: one row per prompt with its reward vector; one backbone pass serves all C(n, 2) pairs of the prompt.

Both run the router's own forward (the explicit pair form and the reward-vector form give the same loss on the same
pairs), then backward and an AdamW step. The ceiling of the ratio is C(n, 2): 6 at n = 4, 105 at n = 15.

```bash
python benchmarks/router_training.py --json benchmarks/router_training.json
```
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import tempfile
import time

import torch

from persyn_hf.router import PersynRouterModel
from persyn_hf.router_trainer import RouterCollator
from persyn_hf.testing.fixtures import DEFAULT_CORPUS, build_causal_lm, build_tokenizer

WORDS = " ".join(DEFAULT_CORPUS).split()


def make_prompts(count: int, seed: int) -> list[str]:
    """Prompts of 20-40 words drawn from the fixture corpus."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(20, 40))) for _ in range(count)]


def interleaved_steps(ways: dict[str, tuple], warmup: int) -> dict[str, float]:
    """Seconds of training steps (forward, backward, AdamW) per way, after `warmup` untimed steps.

    `ways` maps a name to `(router, batches)`. The ways take turns step by step, so that a busy machine slows them
    alike and the ratio stays fair.
    """
    optimizers = {name: torch.optim.AdamW(router.parameters(), lr=1e-5) for name, (router, _) in ways.items()}
    seconds = dict.fromkeys(ways, 0.0)
    for step, batch_per_way in enumerate(zip(*(batches for _, batches in ways.values()))):
        for (name, (router, _)), batch in zip(ways.items(), batch_per_way):
            router.train()
            start = time.perf_counter()
            router(**batch).loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad()
            if step >= warmup:
                seconds[name] += time.perf_counter() - start
    return seconds


def vector_batches(tokenizer, prompts, rewards, batch_size):
    """`persyn-hf`: `batch_size` prompts per step, each with its reward vector."""
    collate = RouterCollator(tokenizer.pad_token_id)
    for start in range(0, len(prompts), batch_size):
        rows = [
            {"input_ids": tokenizer(prompts[i])["input_ids"], "teacher_rewards": rewards[i]}
            for i in range(start, min(start + batch_size, len(prompts)))
        ]
        yield collate(rows)


def pair_batches(tokenizer, prompts, rewards, batch_size, seed: int = 0):
    """`pair-per-row`: `batch_size` (prompt, a, b, label) rows per step, one backbone pass each, the rows shuffled
    as a trainer shuffles a pairwise dataset."""
    collate = RouterCollator(tokenizer.pad_token_id)
    n = len(rewards[0])
    rows = [
        (i, a, b, float(rewards[i][b] > rewards[i][a]))
        for i in range(len(prompts))
        for a, b in itertools.combinations(range(n), 2)
    ]
    random.Random(seed).shuffle(rows)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = collate([{"input_ids": tokenizer(prompts[i])["input_ids"]} for i, *_ in chunk])
        batch["pairs"] = torch.tensor([[j, a, b] for j, (_, a, b, _) in enumerate(chunk)])
        batch["pair_labels"] = torch.tensor([label for *_, label in chunk])
        yield batch


def run(n_teachers: int, steps: int, warmup: int, batch_size: int, backbone: str, tokenizer, seed: int) -> list[dict]:
    teachers = [f"teacher-{i}" for i in range(n_teachers)]
    pairs_per_prompt = math.comb(n_teachers, 2)
    rng = random.Random(seed)
    # persyn-hf: `batch_size` prompts per step; pair-per-row: `batch_size` shuffled pair rows of the same prompts
    prompts = make_prompts(batch_size * (steps + warmup), seed)
    rewards = [[rng.random() for _ in teachers] for _ in prompts]
    ways = {}
    for way in ("pair-per-row", "persyn-hf"):
        torch.manual_seed(seed)
        router, _ = PersynRouterModel.from_backbone(backbone, teachers=teachers)
        make = pair_batches if way == "pair-per-row" else vector_batches
        ways[way] = (router, list(itertools.islice(make(tokenizer, prompts, rewards, batch_size), steps + warmup)))
    seconds = interleaved_steps(ways, warmup)
    results = []
    for way, pairs_per_step in (("pair-per-row", batch_size), ("persyn-hf", batch_size * pairs_per_prompt)):
        results.append(
            {
                "n_teachers": n_teachers,
                "way": way,
                "rows_per_step": batch_size,
                "steps": steps,
                "pairs": pairs_per_step * steps,
                "seconds": round(seconds[way], 4),
                "pairs_per_s": round(pairs_per_step * steps / seconds[way], 2),
            }
        )
    baseline, ours = results
    baseline["speedup"] = 1.0
    ours["speedup"] = round(ours["pairs_per_s"] / baseline["pairs_per_s"], 2)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teachers", type=int, nargs="+", default=[4, 15])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=16, help="Rows per training step, for both ways.")
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--num_hidden_layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=str, default=None, help="Write the results to this JSON file.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as backbone:
        tokenizer = build_tokenizer()
        build_causal_lm(
            tokenizer,
            hidden_size=args.hidden_size,
            num_hidden_layers=args.num_hidden_layers,
            seed=args.seed,
            save_dir=backbone,
        )
        results = [
            row
            for n in args.teachers
            for row in run(n, args.steps, args.warmup, args.batch_size, backbone, tokenizer, args.seed)
        ]

    print(f"{'n':>3} {'way':<13} {'pairs/step':>10} {'seconds':>8} {'pairs/s':>10} {'speedup':>8}")
    for row in results:
        per_step = row["pairs"] // row["steps"]
        print(
            f"{row['n_teachers']:>3} {row['way']:<13} {per_step:>10} {row['seconds']:>8.3f} "
            f"{row['pairs_per_s']:>10.1f} {row['speedup']:>7.1f}x"
        )
    largest = max(args.teachers)
    headline = next(r["speedup"] for r in results if r["n_teachers"] == largest and r["way"] == "persyn-hf")
    print(f"one pass per prompt vs one per pair at n={largest}: {headline:.1f}x (ceiling {math.comb(largest, 2)}x)")
    if args.json:
        report = {
            "benchmark": "router_training",
            "results": results,
            "headline": {
                "metric": f"pairs/s speedup of one pass per prompt over one pass per pair, n={largest} teachers",
                "value": headline,
                "goal": 50,
                "higher_is_better": True,
            },
        }
        with open(args.json, "w") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
