"""Learnability scorer throughput (Eq. 1): persyn-hf's batched scorer against the naive loop and the ceiling.

Same tiny student, same conversations, one run:
- `naive`: one example at a time, full forward, log-softmax over every position, mean over the response tokens;
- `persyn-hf`: `learnability_scores` (length-bucketed left-padded batches, logits for the response window only);
- `ceiling`: a forward pass alone over the same tokens packed without padding (no log-probabilities at all).

```bash
python benchmarks/learnability.py --json benchmarks/learnability.json
```
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from persyn_hf.learnability import encode_response, learnability_scores
from persyn_hf.testing.fixtures import DEFAULT_CORPUS, build_tokenizer

WORDS = " ".join(DEFAULT_CORPUS).split()


def make_examples(count: int, seed: int) -> tuple[list[list[dict]], list[str]]:
    """Prompts of 5-40 words and responses of 10-120 words, drawn from the fixture corpus."""
    rng = random.Random(seed)
    prompts = [[{"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(5, 40)))}] for _ in range(count)]
    responses = [" ".join(rng.choices(WORDS, k=rng.randint(10, 120))) for _ in range(count)]
    return prompts, responses


def naive_learnability(model, tokenizer, messages, responses) -> list[float]:
    scores = []
    for prompt, response in zip(messages, responses):
        ids, first = encode_response(tokenizer, prompt, response)
        input_ids = torch.tensor([ids])
        with torch.inference_mode():
            logps = model(input_ids).logits[0, :-1].log_softmax(-1).gather(-1, input_ids[0, 1:, None])[:, 0]
        scores.append(logps[first - 1 :].mean().item())
    return scores


def packed_forward(model, sequences: list[list[int]], row_tokens: int) -> None:
    """Forward passes over `sequences` packed into rows of at most `row_tokens` tokens, positions restarting."""
    rows, row, positions = [], [], []
    for ids in sequences:
        if row and len(row) + len(ids) > row_tokens:
            rows.append((row, positions))
            row, positions = [], []
        row, positions = row + ids, positions + list(range(len(ids)))
    rows.append((row, positions))
    with torch.inference_mode():
        for ids, position_ids in rows:
            model(input_ids=torch.tensor([ids]), position_ids=torch.tensor([position_ids]))


def tiny_student(vocab_size: int, hidden_size: int, num_hidden_layers: int, seed: int):
    """A tiny Qwen2 student whose output layer has a real-model vocabulary: the tokenizer uses only its first ids,
    but the lm_head and log-softmax cost what they cost for a real student (151,936 ids for Qwen2.5)."""
    config = AutoConfig.for_model(
        "qwen2",
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=4096,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--vocab_size", type=int, default=32768)
    parser.add_argument("--ceiling_row_tokens", type=int, default=1024)
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--num_hidden_layers", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_tokens_per_batch", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=str, default=None, help="Write the results to this JSON file.")
    args = parser.parse_args()

    tokenizer = build_tokenizer()
    model = tiny_student(args.vocab_size, args.hidden_size, args.num_hidden_layers, args.seed)
    messages, responses = make_examples(args.examples, args.seed)
    sequences = [encode_response(tokenizer, m, r)[0] for m, r in zip(messages, responses)]
    tokens = sum(len(ids) for ids in sequences)
    learnability_scores(model, tokenizer, messages[:8], responses[:8], show_progress=False)  # warm-up

    naive_s, naive = timed(lambda: naive_learnability(model, tokenizer, messages, responses))
    batched_s, batched = timed(
        lambda: learnability_scores(
            model, tokenizer, messages, responses, args.batch_size, args.max_tokens_per_batch, show_progress=False
        )
    )
    ceiling_s, _ = timed(lambda: packed_forward(model, sequences, args.ceiling_row_tokens))
    max_error = max(abs(a - b) for a, b in zip(naive, batched))

    results = [
        {"configuration": "naive per-example loop", "seconds": naive_s, "tokens_per_s": tokens / naive_s},
        {"configuration": "persyn-hf learnability_scores", "seconds": batched_s, "tokens_per_s": tokens / batched_s},
        {"configuration": "ceiling: packed forward only", "seconds": ceiling_s, "tokens_per_s": tokens / ceiling_s},
    ]
    vs_naive, vs_ceiling = naive_s / batched_s, ceiling_s / batched_s
    print(
        f"{args.examples} conversations, {tokens} tokens, student {args.hidden_size}x{args.num_hidden_layers}, vocab {args.vocab_size}"
    )
    print(f"{'configuration':<32}{'seconds':>10}{'tokens/s':>12}")
    for row in results:
        print(f"{row['configuration']:<32}{row['seconds']:>10.2f}{row['tokens_per_s']:>12.0f}")
    print(f"speed-up vs naive: {vs_naive:.2f}x (goal >= 5); fraction of ceiling: {vs_ceiling:.2f} (goal >= 0.7)")
    print(f"max |batched - naive|: {max_error:.2e}")
    if args.json:
        report = {
            "benchmark": "learnability",
            "results": results
            + [{"ratio_vs_naive": vs_naive, "fraction_of_ceiling": vs_ceiling, "max_abs_error": max_error}],
            "headline": {
                "metric": "speed-up vs naive per-example loop",
                "value": vs_naive,
                "goal": 5.0,
                "higher_is_better": True,
            },
        }
        with open(args.json, "w") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
