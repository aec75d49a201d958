"""The demo world: arithmetic word problems of four kinds, the voices teachers answer in, the student's corpus.

Everything is written by code, so the whole method runs offline on a CPU. The world is built so that the teacher
a student learns best from depends on the prompt's kind, as its wording shows:

- `add` ("gets 4 more") and `sub` ("gives away 4"): one step, and every careful teacher is right; the student
  learns best from answers written the way its own family (Aster) writes them;
- `compare` ("How many more pens does Tom have?"): one subtraction, but "more" makes some teachers add;
- `chain` ("gets 1 more, then 2 more"): two steps; a teacher that answers in one step stops after the first.

A teacher is a `Voice`: the way it writes an answer and the mistakes it is built to make (`respond`). The student
has read every single-digit fact and pulled the numbers out of many word problems (`student_corpus`), but has
never seen a comparison or a worked chain: what a teacher teaches it is how to read and lay out a problem.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from datasets import Dataset

NAMES = ["Tom", "Ana", "Li", "Sam", "Mia", "Raj", "Eva", "Ben"]
ITEMS = ["apples", "coins", "books", "pens", "cards", "shells"]
KINDS = ("add", "sub", "compare", "chain")


@dataclass(frozen=True)
class Problem:
    """One word problem of `kind` over `numbers`; `name` (and `other`, in a comparison) hold `item`s."""

    prompt_id: str
    kind: str
    numbers: tuple[int, ...]
    name: str
    other: str
    item: str

    @property
    def prompt(self) -> str:
        (a, b, *rest), name, item = self.numbers, self.name, self.item
        if self.kind == "add":
            return f"{name} has {a} {item} and gets {b} more. How many {item} now?"
        if self.kind == "sub":
            return f"{name} has {a} {item} and gives away {b}. How many {item} now?"
        if self.kind == "compare":
            return f"{name} has {a} {item} and {self.other} has {b}. How many more {item} does {name} have?"
        return f"{name} has {a} {item}, gets {b} more, then {rest[0]} more. How many {item} now?"

    @property
    def subtracts(self) -> bool:
        return self.kind in ("sub", "compare")

    @property
    def answer(self) -> int:
        return self.numbers[0] - self.numbers[1] if self.subtracts else sum(self.numbers)

    @property
    def equation(self) -> str:
        """The problem as an expression, e.g. `7+1+2`."""
        return ("-" if self.subtracts else "+").join(map(str, self.numbers))


def _numbers(kind: str, rng: random.Random) -> tuple[int, ...]:
    """Operands whose every step is a single-digit fact: a chain's first sum stays below ten."""
    if kind == "add":
        return rng.randint(1, 9), rng.randint(1, 9)
    if kind == "chain":
        a = rng.randint(1, 8)
        return a, rng.randint(1, 9 - a), rng.randint(1, 9)
    b = rng.randint(1, 8)
    return rng.randint(b + 1, 9), b


def make_problems(num: int, seed: int, split: str = "train", exclude: set[str] | None = None) -> list[Problem]:
    """`num` problems, kinds in turn, from a random stream seeded by `split` and `seed`.

    Splits draw from different streams: the demo distils on `train` and reports `test`; design the world against
    `dev`. The world is small (a few thousand wordings of each kind), so a wording can recur within and across
    splits; with `exclude`, the problems are distinct and none has a prompt in `exclude` (a held-out split).
    """
    rng = random.Random(f"{split}-{seed}")
    problems, taken = [], set() if exclude is None else set(exclude)
    while len(problems) < num:
        i = len(problems)
        kind = KINDS[i % len(KINDS)]
        name, other = rng.sample(NAMES, 2)
        problem = Problem(f"{split}-{i:05d}", kind, _numbers(kind, rng), name, other, rng.choice(ITEMS))
        if exclude is not None:
            if problem.prompt in taken:
                continue
            taken.add(problem.prompt)
        problems.append(problem)
    return problems


def problems_dataset(problems: list[Problem]) -> Dataset:
    """The prompts contract: `prompt_id`, `prompt`, gold `answer`, `source`, plus the problem's `kind`."""
    return Dataset.from_list(
        [
            {"prompt_id": p.prompt_id, "prompt": p.prompt, "answer": str(p.answer), "source": "demo", "kind": p.kind}
            for p in problems
        ]
    )


@dataclass(frozen=True)
class Voice:
    """How a teacher answers, and the mistakes it is built to make.

    `template` holds `{work}` (the working, one `x+y=z` equation per step, or prose) and `{answer}`.
    """

    template: str
    prose: bool = False  # the working in words ("Start with 7, add 1 to get 8")
    one_step: bool = True  # on a chain, stops after the first step (a short chain-of-thought answer)
    misreads: tuple[str, ...] = ()  # kinds it reads as an addition
    drops_carry: bool = False  # writes only the ones digit of a sum of ten or more


def _steps(problem: Problem, voice: Voice) -> list[tuple[int, str, int, int]]:
    """The (x, op, y, result) steps `voice` takes on `problem`, its own mistakes included."""
    first, *rest = problem.numbers
    op = "-" if problem.subtracts and problem.kind not in voice.misreads else "+"
    steps, total = [], first
    for number in rest[:1] if voice.one_step else rest:
        result = total - number if op == "-" else total + number
        if voice.drops_carry:
            result %= 10
        steps.append((total, op, number, result))
        total = result
    return steps


NUMBER_WORDS = [
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    *("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen"),
]


def _prose(steps: list[tuple[int, str, int, int]]) -> str:
    """The working in words, small numbers spelled out as a style guide would have them."""
    verbs = {"+": "add", "-": "take away"}
    words = [f"{verbs[op]} {NUMBER_WORDS[y]} to get {NUMBER_WORDS[z]}" for _, op, y, z in steps]
    return f"Start with {NUMBER_WORDS[steps[0][0]]}, " + ", ".join(words)


def respond(problem: Problem, voice: Voice) -> str:
    """The answer `voice` gives to `problem`: the text a teacher with that voice is trained to write."""
    steps = _steps(problem, voice)
    work = _prose(steps) if voice.prose else ". ".join(f"{x}{op}{y}={z}" for x, op, y, z in steps)
    return voice.template.format(work=work, answer=steps[-1][3])


# The voices of the student's corpus, with their shares: its own family's worked answers, a little of others'.
WORKED = Voice("{work}. The answer is {answer}.", one_step=False)
CORPUS_VOICES = {
    WORKED: 0.93,
    Voice("{work}, so the answer is {answer}.", one_step=False): 0.05,
    Voice("{work}. Done. The answer is {answer}.", one_step=False): 0.02,
}
WORKED_SHARE = 0.15  # of the corpus' `add` and `sub` word problems; the others are only restated


def _exercise(rng: random.Random) -> Problem:
    """A bare sum or difference over every single-digit fact, or a two-step sum."""
    kind = rng.choice(("add", "sub", "chain"))
    numbers = (rng.randint(0, 9), rng.randint(0, 9)) if kind == "add" else _numbers(kind, rng)
    return Problem("", kind, numbers, "", "", "")


def student_corpus(num: int, seed: int) -> list[tuple[str, str]]:
    """What the student reads before distillation, as (question, answer) pairs.

    `num` exercises answered in the voices of `CORPUS_VOICES`, and the `add`, `sub` and `chain` problems among
    `num` word problems restated as expressions (`7+1+2`), a `WORKED_SHARE` of the one-step ones worked instead.
    No comparison and no worked chain: the student cannot solve a problem zero-shot, it restates it.
    """
    rng = random.Random(f"corpus-{seed}")
    voices, weights = list(CORPUS_VOICES), list(CORPUS_VOICES.values())
    pairs = []
    for _ in range(num):
        exercise = _exercise(rng)
        voice = rng.choices(voices, weights)[0]
        pairs.append((f"What is {exercise.equation}?", respond(exercise, voice)))
    for problem in make_problems(num, seed, split="corpus"):
        if problem.kind == "compare":
            continue
        worked = problem.kind != "chain" and rng.random() < WORKED_SHARE
        pairs.append((problem.prompt, respond(problem, WORKED) if worked else problem.equation))
    return pairs
