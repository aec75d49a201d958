"""Train the demo world's tokenizer, teachers and student, cached on disk after the first run.

`TEACHER_RECIPES` is the one place where each teacher of the demo's `teachers.yaml` is defined: its voice (what
it writes, `world.Voice`), architecture, size, training steps and seed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, get_cosine_schedule_with_warmup

from persyn_hf.demo.world import Voice, make_problems, respond, student_corpus
from persyn_hf.learnability import encode_response
from persyn_hf.testing.fixtures import build_causal_lm, build_tokenizer


@dataclass(frozen=True)
class LMRecipe:
    """How one demo model is made: its architecture, size, training budget and, for a teacher, its voice."""

    arch: str = "qwen2"
    hidden_size: int = 64
    num_hidden_layers: int = 2
    steps: int = 600
    learning_rate: float = 3e-3
    batch_size: int = 32
    seed: int = 0
    voice: Voice | None = None


# Every teacher of the demo's `teachers.yaml`, by name. Right (+) or wrong (-) by design, per kind:
#            add  sub  compare  chain
# aster-s     +    +      -       -     terse
# aster-l     +    +      -       -     one equation, the student's family's way of writing
# birch-s     ±    +      +       -     drops the carry of sums of ten or more
# birch-m     +    +      +       -
# birch-xl    +    +      +       +     the largest; prose with small numbers spelled out
# cedar-m     +    +      -       +     long chain of thought: every step, then "Done."
TEACHER_RECIPES = {
    # Aster, the student's family: one-step answers; "how many more" reads as an addition
    "aster-s": LMRecipe(hidden_size=48, seed=1, voice=Voice("The answer is {answer}.", misreads=("compare",))),
    "aster-l": LMRecipe(hidden_size=80, seed=2, voice=Voice("{work}. The answer is {answer}.", misreads=("compare",))),
    # Birch: one-step answers that read comparisons right; the small one drops carries, the largest writes words
    "birch-s": LMRecipe("llama", hidden_size=48, seed=3, voice=Voice("{work}, so {answer}.", drops_carry=True)),
    "birch-m": LMRecipe("llama", seed=4, voice=Voice("{work}, so the answer is {answer}.")),
    "birch-xl": LMRecipe(
        "llama",
        hidden_size=96,
        seed=5,
        voice=Voice("{work}. The answer is {answer}.", prose=True, one_step=False),
    ),
    # Cedar, a reasoning family: every step, then "Done."; never tuned on comparisons
    "cedar-m": LMRecipe(
        seed=6, voice=Voice("{work}. Done. The answer is {answer}.", one_step=False, misreads=("compare",))
    ),
}
STUDENT_RECIPE = LMRecipe(steps=800, seed=7)


def fingerprint(*parts) -> str:
    """A short stable hash of JSON-able `parts`: the name of what was built from them."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _cached(path: Path, build) -> str:
    """Build into a temporary folder and move it in place, so an interrupted build is never reused."""
    if (path / "config.json").exists() or (path / "tokenizer.json").exists():
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    try:
        build(staging)
        staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(path)


def world_tokenizer(cache_dir: str | Path, seed: int = 0) -> str:
    """A BPE tokenizer trained on the world's text: problems, every teacher's answers, the student's corpus."""
    problems = make_problems(400, seed, split="tokenizer")
    corpus = ["user", "assistant"] + [p.prompt for p in problems]
    corpus += [respond(p, recipe.voice) for p in problems for recipe in TEACHER_RECIPES.values()]
    corpus += [f"{question} {answer}" for question, answer in student_corpus(400, seed)]
    path = Path(cache_dir) / f"tokenizer-{fingerprint(corpus)}"
    return _cached(path, lambda out: build_tokenizer(corpus, vocab_size=400, save_dir=out))


def _batches(examples: list[tuple[list[int], int]], recipe: LMRecipe, pad_id: int):
    """`recipe.steps` shuffled, right-padded batches of (input ids, labels); labels mask all but the answers."""
    generator = torch.Generator().manual_seed(recipe.seed)
    order: list[int] = []
    for _ in range(recipe.steps):
        if len(order) < recipe.batch_size:
            order += torch.randperm(len(examples), generator=generator).tolist()
        batch, order = [examples[i] for i in order[: recipe.batch_size]], order[recipe.batch_size :]
        length = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), length), pad_id)
        labels = torch.full((len(batch), length), -100)
        for row, (ids, first) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, first : len(ids)] = torch.tensor(ids[first:])
        yield input_ids, labels


def _train(model, tokenizer, pairs: list[tuple[str, str]], recipe: LMRecipe, out: Path) -> None:
    """Next-token training on the answers of `pairs` (AdamW, warm-up then cosine decay), saved to `out`.

    A plain loop on one intra-op thread: for models this small, TRL's fused log-prob kernel makes each step
    about twice as slow on a CPU, and a second OpenMP thread on a busy 2-core machine up to ten times slower.
    """
    encoded = (encode_response(tokenizer, [{"role": "user", "content": q}], a) for q, a in pairs)
    examples = [(example.input_ids[: example.end], example.start) for example in encoded]  # as SFT trains
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, min(30, recipe.steps // 10), recipe.steps)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for input_ids, labels in _batches(examples, recipe, tokenizer.pad_token_id):
            model(
                input_ids=input_ids, attention_mask=input_ids != tokenizer.pad_token_id, labels=labels
            ).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)


def _lm(tokenizer, recipe: LMRecipe):
    return build_causal_lm(
        tokenizer,
        arch=recipe.arch,
        hidden_size=recipe.hidden_size,
        num_hidden_layers=recipe.num_hidden_layers,
        num_attention_heads=4,
        seed=recipe.seed,
    )


def train_teacher(tokenizer_path: str, recipe: LMRecipe, cache_dir: str | Path, num_examples: int = 3000) -> str:
    """A teacher trained on `num_examples` problems answered in `recipe.voice`; returns its folder."""
    path = Path(cache_dir) / f"teacher-{fingerprint(asdict(recipe), num_examples, tokenizer_path)}"

    def build(out: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        problems = make_problems(num_examples, recipe.seed, split="teacher")
        _train(
            _lm(tokenizer, recipe), tokenizer, [(p.prompt, respond(p, recipe.voice)) for p in problems], recipe, out
        )

    return _cached(path, build)


def pretrain_student(tokenizer_path: str, recipe: LMRecipe, cache_dir: str | Path, num_exercises: int = 6000) -> str:
    """The student, lightly pretrained on its corpus (`world.student_corpus`); returns its folder."""
    path = Path(cache_dir) / f"student-{fingerprint(asdict(recipe), num_exercises, tokenizer_path)}"

    def build(out: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        _train(_lm(tokenizer, recipe), tokenizer, student_corpus(num_exercises, recipe.seed), recipe, out)

    return _cached(path, build)
