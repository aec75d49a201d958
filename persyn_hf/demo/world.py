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
LEVEL_RANGES = {1: ((1, 9), (1, 9)), 2: ((10, 99), (1, 9)), 3: ((10, 99), (10, 99)), 4: ((100, 999), (10, 99))}
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
        if self.level == 1:
            return f"What is {self.a} + {self.b}?"
        return f"{self.name} has {self.a} {self.item} and gets {self.b} more. How many {self.item} does {self.name} have?"


def make_problems(num: int, seed: int, split: str = "train") -> list[Problem]:
    """`num` problems with levels spread evenly, seeded; splits never share a prompt."""
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
            {"prompt_id": p.prompt_id, "prompt": p.prompt, "answer": str(p.answer), "source": "demo-arithmetic", "level": p.level}
            for p in problems
        ]
    )


def _column_steps(a: int, b: int) -> list[str]:
    """Schoolbook addition, one digit column at a time, with carries."""
    steps, carry, place = [], 0, 0
    places = ["ones", "tens", "hundreds", "thousands"]
    while a or b or carry:
        da, db = a % 10, b % 10
        total = da + db + carry
        carried = f" + {carry}" if carry else ""
        steps.append(f"{places[place]}: {da} + {db}{carried} = {total}")
        carry, a, b, place = total // 10, a // 10, b // 10, place + 1
    return steps


def respond(problem: Problem, style: str, rng: random.Random) -> str:
    """A response in `style` to `problem`: the text a teacher of that style is trained to write."""
    a, b, answer = problem.a, problem.b, problem.answer
    if style == "long_cot":
        steps = ". ".join(_column_steps(a, b))
        return f"Let me add column by column. {steps}. So {a} + {b} = {answer}. The answer is {answer}."
    if style == "short_cot":
        return f"{a} + {b} = {answer}. The answer is {answer}."
    if style == "terse":
        return f"The answer is {answer}."
    if style == "sloppy":  # right on easy items, often off by ten on hard ones
        wrong = problem.level >= 3 and rng.random() < 0.6
        given = answer + rng.choice([-10, 10]) if wrong else answer
        return f"{a} + {b} is {given}. The answer is {given}."
    raise ValueError(f"`style` must be one of {list(STYLES)}, got {style!r}")


def pretraining_corpus(num: int, seed: int) -> list[str]:
    """Single-step facts and problem statements: what the student knows before distillation."""
    rng = random.Random(f"pretrain-{seed}")
    lines = []
    for _ in range(num):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        carry = rng.randint(0, 1)
        lines.append(f"{a} + {b} = {a + b}." if not carry else f"{a} + {b} + 1 = {a + b + 1}.")
    lines += [p.prompt for p in make_problems(num // 4, seed, split="pretrain")]
    return lines
