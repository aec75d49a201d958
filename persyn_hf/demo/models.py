"""Train the demo world's tokenizer, teachers and student with TRL, cached on disk after the first run."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoTokenizer

from persyn_hf.demo.world import STYLES, make_problems, pretraining_corpus, respond
from persyn_hf.testing.fixtures import build_causal_lm, build_tokenizer


@dataclass(frozen=True)
class LMRecipe:
    """How one demo model is made: its architecture, size and training budget."""

    arch: str = "qwen2"
    hidden_size: int = 64
    num_hidden_layers: int = 2
    steps: int = 200
    learning_rate: float = 3e-3
    batch_size: int = 32
    seed: int = 0
    style: str | None = None  # teachers only: the answer style they are trained on


# How each teacher of the demo's `teachers.yaml` is made: its style, size and training budget.
TEACHER_RECIPES = {
    "long-cot": LMRecipe(style="long_cot", hidden_size=96, num_hidden_layers=3, steps=500, seed=1),
    "short-cot": LMRecipe(style="short_cot", hidden_size=64, num_hidden_layers=2, steps=600, seed=2),
    "terse": LMRecipe(style="terse", hidden_size=64, num_hidden_layers=2, steps=400, seed=3),
    "sloppy": LMRecipe(style="sloppy", arch="llama", hidden_size=48, num_hidden_layers=2, steps=400, seed=4),
}
STUDENT_RECIPE = LMRecipe(hidden_size=64, num_hidden_layers=2, steps=300, seed=5)


def _fingerprint(*parts) -> str:
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
    """A BPE tokenizer trained on the world's text (problems and every style of answer)."""
    rng = random.Random(seed)
    problems = make_problems(400, seed, split="tokenizer")
    corpus = ["user", "assistant"] * 50 + [p.prompt for p in problems]
    corpus += [respond(p, style, rng) for p in problems for style in STYLES]
    path = Path(cache_dir) / f"tokenizer-{_fingerprint(seed, corpus[:3])}"
    return _cached(path, lambda out: build_tokenizer(corpus, vocab_size=400, save_dir=out))


def _train(model, tokenizer, dataset: Dataset, recipe: LMRecipe, out: Path) -> None:
    """SFT with TRL on one intra-op thread: the models are tiny, and on a busy 2-core machine a second
    OpenMP thread makes each step up to ten times slower."""
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(out / "trainer"),
        max_steps=recipe.steps,
        per_device_train_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=min(20, recipe.steps // 10),
        max_length=192,
        logging_steps=max(1, recipe.steps // 4),
        save_strategy="no",
        report_to="none",
        seed=recipe.seed,
        use_cpu=True,
        bf16=False,  # SFTConfig defaults to bf16 autocast, which is slow on CPU
        gradient_checkpointing=False,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer.train()
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    shutil.rmtree(out / "trainer", ignore_errors=True)


def _conversations(pairs: list[tuple[str, str]]) -> Dataset:
    """TRL's conversational prompt-completion rows: the loss is on the assistant's answer only."""
    return Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}]}
            for q, a in pairs
        ]
    )


def _lm(tokenizer, recipe: LMRecipe):
    return build_causal_lm(
        tokenizer,
        arch=recipe.arch,
        hidden_size=recipe.hidden_size,
        num_hidden_layers=recipe.num_hidden_layers,
        num_attention_heads=4,
        seed=recipe.seed,
    )


def train_teacher(tokenizer_path: str, recipe: LMRecipe, cache_dir: str | Path, num_examples: int = 2000) -> str:
    """A teacher trained on `num_examples` conversations answered in `recipe.style`; returns its folder."""
    path = Path(cache_dir) / f"teacher-{recipe.style}-{_fingerprint(asdict(recipe), num_examples, tokenizer_path)}"

    def build(out: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        rng = random.Random(recipe.seed)
        problems = make_problems(num_examples, recipe.seed, split=f"teacher-{recipe.style}")
        dataset = _conversations([(p.prompt, respond(p, recipe.style, rng)) for p in problems])
        _train(_lm(tokenizer, recipe), tokenizer, dataset, recipe, out)

    return _cached(path, build)


def pretrain_student(tokenizer_path: str, recipe: LMRecipe, cache_dir: str | Path, num_lines: int = 3000) -> str:
    """A student lightly pretrained on single-digit facts and restating problems as sums; returns its folder."""
    path = Path(cache_dir) / f"student-{_fingerprint(asdict(recipe), num_lines, tokenizer_path)}"

    def build(out: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        dataset = _conversations(pretraining_corpus(num_lines, recipe.seed))
        _train(_lm(tokenizer, recipe), tokenizer, dataset, recipe, out)

    return _cached(path, build)
