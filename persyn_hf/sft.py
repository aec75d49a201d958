"""The SFT stage: fine-tune the student on a personalized dataset with TRL's `SFTTrainer`.

The personalized dataset is TRL's prompt-completion format with chat messages, so TRL computes the loss on the
completion (the teacher's response, the template's end-of-turn tokens included) only: prompt tokens get the label
-100. Learnability (`persyn_hf.learnability`) scores exactly these tokens. The trainer writes the student to a fresh
folder inside `output_dir`, from which it is saved with its card through the artifact store, on the main process
only (a run that cannot publish it leaves it there, and says where); its card records where its data came from (the
personalized dataset, the strategy, the router). The training arguments ship as `training_args.json`, never as a
pickle.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import TYPE_CHECKING

from persyn_hf.configs import renamed
from persyn_hf.contracts import StageResult
from persyn_hf.errors import ConfigError, DataError, OutputError
from persyn_hf.store import MODEL_FILES, ArtifactStore, check_writable

if TYPE_CHECKING:
    from datasets import Dataset
    from huggingface_hub import ModelCard

# The columns SFTTrainer reads: TRL prompt-completion messages (the rest of the sft contract is provenance).
TRAINING_COLUMNS = ("prompt", "completion")
TRAINING_ARGS_PICKLE, TRAINING_ARGS_JSON = "training_args.bin", "training_args.json"


@dataclass
class SFTScriptArguments:
    """Which personalized dataset the student learns from, and where the student goes.

    Parameters:
        dataset_repo_id (`str`):
            The personalized sft dataset (built by `persyn-hf build personalized`): its repo id in the store.
        student_repo_id (`str`):
            Repo id the fine-tuned student is saved (or pushed) to, with its card.
        dataset_config (`str`, *optional*, defaults to `"default"`):
            Config (subset) of the dataset, e.g. one per strategy.
        dataset_train_split (`str`, *optional*, defaults to `"train"`):
            Split to train on.
        router_repo_id (`str`, *optional*):
            Repo id of the router that assigned the prompts, recorded in the student's card. Leave unset for
            strategies that need no router (strong, mix, family_strong, car, oracle).
        dataset_name (`str`, *optional*): Deprecated name of `dataset_repo_id`.
        router_name (`str`, *optional*): Deprecated name of `router_repo_id`.
    """

    dataset_repo_id: str | None = field(
        default=None, metadata={"help": "Repo id of the personalized sft dataset in the artifact store."}
    )
    student_repo_id: str | None = field(
        default=None, metadata={"help": "Repo id the fine-tuned student is saved (or pushed) to."}
    )
    dataset_config: str = field(default="default", metadata={"help": "Config (subset) of the dataset."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    router_repo_id: str | None = field(
        default=None,
        metadata={"help": "Repo id of the router that assigned the prompts, recorded in the card (unset: no router)."},
    )
    dataset_name: str | None = field(default=None, metadata={"help": "Deprecated: use `dataset_repo_id`."})
    router_name: str | None = field(default=None, metadata={"help": "Deprecated: use `router_repo_id`."})

    def __post_init__(self):
        renamed(self, "dataset_name", "dataset_repo_id")
        renamed(self, "router_name", "router_repo_id")
        for name in ("dataset_repo_id", "student_repo_id"):
            if getattr(self, name) is None:
                raise ConfigError(f"`{name}` is required.")


def load_sft_dataset(store: ArtifactStore, script_args: SFTScriptArguments) -> Dataset:
    """Load the personalized dataset and check it against the sft dataset contract."""
    return store.load_dataset(
        script_args.dataset_repo_id, script_args.dataset_config, script_args.dataset_train_split, contract="sft"
    )


def dataset_strategy(dataset: Dataset, dataset_name: str) -> str:
    """The one strategy that built `dataset` (from its `strategy` column)."""
    strategies = sorted(set(dataset["strategy"]))
    if len(strategies) != 1:
        raise DataError(
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
    from huggingface_hub import ModelCard, ModelCardData

    from persyn_hf.cards import PERSYN_CITATION
    from persyn_hf.templates import template_path

    base_model = model_args.model_name_or_path
    base_model_is_local = os.path.isdir(base_model)
    rewards = [reward for reward in dataset["reward"] if reward is not None and math.isfinite(reward)]
    counts = Counter(dataset["teacher"])
    allocation = [(teacher, n, n / len(dataset)) for teacher, n in counts.most_common()]
    strategy = dataset_strategy(dataset, script_args.dataset_repo_id)
    peft = model_args.use_peft
    card_data = ModelCardData(
        base_model=None if base_model_is_local else base_model,
        datasets=[script_args.dataset_repo_id],
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
        dataset_name=script_args.dataset_repo_id,
        dataset_config=script_args.dataset_config,
        strategy=strategy,
        router_name=script_args.router_repo_id,
        num_examples=len(dataset),
        mean_reward=sum(rewards) / len(rewards) if rewards else None,
        num_rewarded=len(rewards),
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


def publishable_folder(trainer, folder: str) -> None:
    """Save the trained student into `folder` (every process: gathers sharded weights), with its training arguments
    as JSON instead of the `training_args.bin` pickle the `Trainer` writes."""
    trainer.save_model(folder)
    if trainer.accelerator.is_main_process:
        pickle = os.path.join(folder, TRAINING_ARGS_PICKLE)
        if os.path.exists(pickle):
            os.remove(pickle)
        with open(os.path.join(folder, TRAINING_ARGS_JSON), "w") as file:
            file.write(trainer.args.to_json_string())


def run(script_args: SFTScriptArguments, training_args, model_args, store: ArtifactStore | None = None) -> StageResult:
    """Fine-tune `model_args.model_name_or_path` on the personalized dataset; returns the trained model, where it
    was saved, and `{"strategy": ..., "train_loss": ...}`.

    `training_args` is TRL's `SFTConfig`, `model_args` its `ModelConfig`.
    """
    from transformers import set_seed

    store = store or ArtifactStore()
    store.check_output(script_args.student_repo_id, "student_repo_id", files=MODEL_FILES)
    check_writable(
        training_args.output_dir, f"`output_dir` {training_args.output_dir!r}", "choose another `output_dir`"
    )
    model_args.model_name_or_path = store.resolve_model(
        model_args.model_name_or_path, "model_name_or_path", hub_ids=True
    )
    dataset = load_sft_dataset(store, script_args)
    strategy = dataset_strategy(dataset, script_args.dataset_repo_id)

    set_seed(training_args.seed)  # LoRA adapters are initialised before the Trainer seeds itself
    trainer = make_trainer(dataset, training_args, model_args)
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    from accelerate.utils import broadcast_object_list

    main_process = trainer.accelerator.is_main_process
    if main_process:
        os.makedirs(training_args.output_dir, exist_ok=True)
    folder = [tempfile.mkdtemp(dir=training_args.output_dir, prefix="student-") if main_process else None]
    saved = broadcast_object_list(folder)[0]  # a fresh folder: nothing of an earlier run can ship with the student
    publishable_folder(trainer, saved)
    location = store.location(script_args.student_repo_id)
    if main_process:  # the folder goes once the student is published: a failed run leaves the trained student there
        card = student_card(dataset, script_args, training_args, model_args)
        try:
            location = store.save_folder(script_args.student_repo_id, saved, card=card)
        except OutputError as error:  # e.g. a file of the user's own in the way
            raise OutputError(f"{error} The trained student is kept in {saved!r}.") from error
        shutil.rmtree(saved)
        trainer.accelerator.print(f"Student saved to {location}.")
    trainer.accelerator.wait_for_everyone()
    return StageResult(trainer.model, location, {"strategy": strategy, "train_loss": result.training_loss})
