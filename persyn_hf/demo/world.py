"""The demo world: graded arithmetic word problems, teachers with different answer styles, a student.

Everything is written by code and trained locally, so the whole method runs offline on a CPU:

- problems of four difficulty levels with a verifiable integer answer and a held-out test split;
- a BPE tokenizer trained on the world's text;
- teachers that differ in size and style (long chain of thought, short chain of thought, terse, and one
  that errs on hard items), each a real causal LM trained with TRL on text in its style;
- a student lightly pretrained on single-step arithmetic facts, so that its log-likelihood of a
  response (learnability) says something about what it can learn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from datasets import Dataset

NAMES = ["Tom", "Ana", "Li", "Sam", "Mia", "Raj", "Eva", "Ben"]
ITEMS = ["apples", "coins", "books", "pens", "cards", "shells"]
# 1: one digit, no carry; 2: one digit, mostly with a carry; 3: two digits plus one; 4: two plus two.
LEVEL_RANGES = {1: ((1, 4), (1, 5)), 2: ((2, 9), (2, 9)), 3: ((10, 99), (1, 9)), 4: ((10, 99), (10, 99))}
STYLES = ("long_cot", "short_cot", "terse", "sloppy")


@dataclass(frozen=True)
class Problem:
    """One addition word problem; `a + b` is the answer."""

    prompt_id: str
    level: int
    a: int
    b: int
    name: str
    item: str

    @property
    def answer(self) -> int:
        return self.a + self.b

    @property
    def prompt(self) -> str:
        return f"{self.name} has {self.a} {self.item}, gets {self.b} more. How many?"


def make_problems(num: int, seed: int, split: str = "train") -> list[Problem]:
    """`num` problems with levels spread evenly, from a random stream seeded by `split` and `seed`.

    Splits draw from different streams; the easiest levels have few distinct sums, so a sum (not its wording)
    can recur across splits, as it would in any arithmetic test set.
    """
    rng = random.Random(f"{split}-{seed}")
    problems = []
    for i in range(num):
        level = 1 + i % len(LEVEL_RANGES)
        (a_lo, a_hi), (b_lo, b_hi) = LEVEL_RANGES[level]
        problems.append(
            Problem(
                prompt_id=f"{split}-{i:05d}",
                level=level,
                a=rng.randint(a_lo, a_hi),
                b=rng.randint(b_lo, b_hi),
                name=rng.choice(NAMES),
                item=rng.choice(ITEMS),
            )
        )
    return problems


def problems_dataset(problems: list[Problem]) -> Dataset:
    """The prompts contract: `prompt_id`, `prompt`, gold `answer`, `source`, plus `level`."""
    return Dataset.from_list(
        [
            {
                "prompt_id": p.prompt_id,
                "prompt": p.prompt,
                "answer": str(p.answer),
                "source": "demo-arithmetic",
                "level": p.level,
            }
            for p in problems
        ]
    )


def _column_steps(a: int, b: int) -> list[str]:
    """Schoolbook addition, one digit column at a time (ones first), with carries."""
    steps, carry = [], 0
    while a or b or carry:
        da, db = a % 10, b % 10
        total = da + db + carry
        steps.append(f"{da}+{db}{'+1' if carry else ''}={total}")
        carry, a, b = total // 10, a // 10, b // 10
    return steps


def respond(problem: Problem, style: str, rng: random.Random) -> str:
    """A response in `style` to `problem`: the text a teacher of that style is trained to write."""
    a, b, answer = problem.a, problem.b, problem.answer
    if style == "long_cot":
        return f"Columns: {', '.join(_column_steps(a, b))}. So {a}+{b}={answer}. The answer is {answer}."
    if style == "short_cot":
        return f"{a}+{b}={answer}. The answer is {answer}."
    if style == "terse":
        return f"The answer is {answer}."
    if style == "sloppy":  # right on easy items, often off by ten on hard ones
        wrong = problem.level >= 3 and rng.random() < 0.6
        given = answer + rng.choice([-10, 10]) if wrong else answer
        return f"{a}+{b} is {given}. The answer is {given}."
    raise ValueError(f"`style` must be one of {list(STYLES)}, got {style!r}")


def pretraining_corpus(num: int, seed: int) -> list[tuple[str, str]]:
    """(question, answer) pairs of single-digit facts, and problems answered with their sum only (unsolved):
    what the student knows before distillation."""
    rng = random.Random(f"pretrain-{seed}")
    pairs = []
    for _ in range(num):
        a, b, carry = rng.randint(0, 9), rng.randint(0, 9), rng.randint(0, 1)
        question = f"{a}+{b}+1" if carry else f"{a}+{b}"
        pairs.append((f"What is {question}?", f"{question}={a + b + carry}."))
    pairs += [(p.prompt, f"{p.a}+{p.b}.") for p in make_problems(num // 2, seed, split="pretrain")]
    return pairs
