"""The SFT stage: fine-tune the student on a personalized dataset with TRL's `SFTTrainer`.

The personalized dataset is TRL's prompt-completion format with chat messages, so TRL computes the loss
on the completion (the teacher's response) only: prompt tokens get the label -100. The trainer writes the
student to a fresh `<output_dir>/student`, from which it is saved with its card through the artifact store,
on the main process only; its card records where its data came from (the personalized dataset, the
strategy that assigned the teachers, the router).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import version

from datasets import Dataset
from huggingface_hub import ModelCard, ModelCardData

from persyn_hf.hub_cards import template_path
from persyn_hf.rewards import require_columns
from persyn_hf.store import ArtifactStore, StoreArguments

# The sft dataset contract: TRL prompt-completion messages plus provenance.
TRAINING_COLUMNS = ("prompt", "completion")
PROVENANCE_COLUMNS = ("prompt_id", "teacher", "strategy", "reward")

PERSYN_CITATION = """@article{zhang2025persyn,
  title   = {{Find Your Optimal Teacher: Personalized Data Synthesis via Router-Guided Multi-Teacher Distillation}},
  author  = {Zhang, Hengyuan and Yang, Shiping and Liang, Xiao and Shang, Chenming and Jiang, Yuxuan and Tao, Chaofan and Xiong, Jing and So, Hayden Kwok-Hay and Xie, Ruobing and Chang, Angel X. and Wong, Ngai},
  year    = {2025}
}"""


@dataclass
class SFTScriptArguments:
    """Which personalized dataset the student learns from, and where the student goes.

    Parameters:
        dataset_name (`str`):
            Repo id of the personalized sft dataset in the artifact store (built by `persyn-hf build personalized`).
        student_repo_id (`str`):
            Repo id the fine-tuned student is saved (or pushed) to, with its card.
        dataset_config (`str`, *optional*, defaults to `"default"`):
            Config (subset) of the dataset, e.g. one per strategy.
        dataset_train_split (`str`, *optional*, defaults to `"train"`):
            Split to train on.
        router_name (`str`, *optional*):
            Repo id of the router that assigned the prompts, recorded in the student's card. Leave unset for
            strategies that need no router (strong, mix, family_strong, car, oracle).
    """

    dataset_name: str = field(metadata={"help": "Repo id of the personalized sft dataset in the artifact store."})
    student_repo_id: str = field(metadata={"help": "Repo id the fine-tuned student is saved (or pushed) to."})
    dataset_config: str = field(default="default", metadata={"help": "Config (subset) of the dataset."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    router_name: str | None = field(
        default=None,
        metadata={"help": "Repo id of the router that assigned the prompts, recorded in the card (unset: no router)."},
    )


def load_sft_dataset(store: ArtifactStore, script_args: SFTScriptArguments) -> Dataset:
    """Load the personalized dataset and check it against the sft dataset contract."""
    dataset = store.load_dataset(script_args.dataset_name, script_args.dataset_config, script_args.dataset_train_split)
    require_columns(dataset, [*TRAINING_COLUMNS, *PROVENANCE_COLUMNS], f"sft ({script_args.dataset_name!r})")
    if len(dataset) == 0:
        raise ValueError(
            f"The sft dataset {script_args.dataset_name!r} has no rows in split {script_args.dataset_train_split!r}."
        )
    return dataset


def dataset_strategy(dataset: Dataset, dataset_name: str) -> str:
    """The one strategy that built `dataset` (from its `strategy` column)."""
    strategies = sorted(set(dataset["strategy"]))
    if len(strategies) != 1:
        raise ValueError(
            f"The sft dataset {dataset_name!r} mixes strategies {strategies}; a student learns from one strategy's "
            "data: pick its config with `dataset_config`."
        )
    return strategies[0]


def student_card(
    dataset: Dataset,
    script_args: SFTScriptArguments,
    training_args,
    model_args,
) -> ModelCard:
    """TRL's model card plus provenance: the personalized dataset, its strategy and teachers, the router."""
    base_model = model_args.model_name_or_path
    base_model_is_local = os.path.isdir(base_model)
    counts = Counter(dataset["teacher"])
    allocation = [(teacher, n, n / len(dataset)) for teacher, n in counts.most_common()]
    strategy = dataset_strategy(dataset, script_args.dataset_name)
    peft = model_args.use_peft
    card_data = ModelCardData(
        base_model=None if base_model_is_local else base_model,
        datasets=[script_args.dataset_name],
        library_name="peft" if peft else "transformers",
        model_name=script_args.student_repo_id,
        tags=["persyn", "trl", "sft", "generated_from_trainer", f"strategy:{strategy}"],
    )
    return ModelCard.from_template(
        card_data,
        template_path=template_path("student_card.md"),
        model_name=script_args.student_repo_id,
        base_model=base_model,
        base_model_is_local=base_model_is_local,
        hub_model_id=script_args.student_repo_id,
        dataset_name=script_args.dataset_name,
        dataset_config=script_args.dataset_config,
        strategy=strategy,
        router_name=script_args.router_name,
        num_examples=len(dataset),
        mean_reward=sum(dataset["reward"]) / len(dataset),
        allocation=allocation,
        learning_rate=training_args.learning_rate,
        num_train_epochs=training_args.num_train_epochs,
        effective_batch_size=training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * training_args.world_size,
        lr_scheduler_type=getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type),
        warmup_steps=training_args.warmup_steps,
        max_length=training_args.max_length,
        peft=peft,
        lora_r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_target_modules=model_args.lora_target_modules,
        persyn_citation=PERSYN_CITATION,
        trl_version=version("trl"),
        transformers_version=version("transformers"),
        pytorch_version=version("torch"),
        datasets_version=version("datasets"),
        tokenizers_version=version("tokenizers"),
        peft_version=version("peft"),
    )


def make_trainer(dataset: Dataset, training_args, model_args):
    """TRL's `SFTTrainer` for the student on the sft dataset's `prompt`/`completion` (loss on the completion)."""
    from trl import SFTTrainer, get_peft_config

    model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    training_args.model_init_kwargs = {**model_init_kwargs, **(training_args.model_init_kwargs or {})}
    return SFTTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=dataset.select_columns(list(TRAINING_COLUMNS)),
        peft_config=get_peft_config(model_args),
    )


def train_student(
    script_args: SFTScriptArguments,
    training_args,
    model_args,
    store_args: StoreArguments,
) -> str:
    """Fine-tune `model_args.model_name_or_path` on the personalized dataset; returns the student's location."""
    store = ArtifactStore.from_args(store_args)
    store.location(script_args.student_repo_id)  # a malformed repo id fails now, not after training
    dataset = load_sft_dataset(store, script_args)
    dataset_strategy(dataset, script_args.dataset_name)

    trainer = make_trainer(dataset, training_args, model_args)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    saved = os.path.join(training_args.output_dir, "student")
    if trainer.accelerator.is_main_process:
        shutil.rmtree(saved, ignore_errors=True)  # files of an earlier run must not ship with this student
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(saved)  # every process: gathers sharded weights, writes on the main one
    location = store.location(script_args.student_repo_id)
    if trainer.accelerator.is_main_process:
        card = student_card(dataset, script_args, training_args, model_args)
        location = store.save_folder(script_args.student_repo_id, saved, card=card)
        trainer.accelerator.print(f"Student saved to {location}.")
    trainer.accelerator.wait_for_everyone()
    return location
