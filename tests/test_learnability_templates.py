"""Learnability scores exactly the tokens SFT trains on, for the chat templates of real students.

For each template TRL ships (`trl/chat_templates`), the fixture BPE tokenizer gets the template and its special
tokens; the real `SFTTrainer` prepares a prompt-completion dataset and its collator builds the batch. The positions
learnability scores must be those whose label is not -100, on the same input ids.
"""

import pytest
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from persyn_hf.learnability import LearnabilityError, encode_response, sft_chat_template
from persyn_hf.testing.fixtures import build_causal_lm
from persyn_hf.testing.templates import TEMPLATES, template_tokenizer

# What each template writes after the response text: what `count_end_of_turn=False` leaves out.
END_OF_TURN = {
    "qwen2_5": "<|im_end|>\n",
    "qwen3": "<|im_end|>\n",
    "qwen3_5_think": "<|im_end|>\n",
    "llama3_1": "<|eot_id|>",
    "llama3_2": "<|eot_id|>",
    "gemma": "<end_of_turn>\n",
    "gemma3": "<end_of_turn>\n",
    "deepseek_r1_distill": "<｜end▁of▁sentence｜>",
    "phi3": "<|end|>\n<|endoftext|>",
}
# TRL has no training template (with `{% generation %}`) for these: `assistant_only_loss` is refused by both.
NO_TRAINING_TEMPLATE = {"llama3_1", "llama3_2"}

USER = [{"role": "user", "content": "What is 12 + 7?"}]
MULTI_TURN = [*USER, {"role": "assistant", "content": "19"}, {"role": "user", "content": "Compute 345 - 129."}]
PLAIN = "12 + 7 = 19. The answer is 19."
REASONING = "<think>\nFirst add the ones, then the tens.\n</think>\n\n12 + 7 = 19. The answer is 19."
EXAMPLES = [
    (USER, PLAIN),
    (USER, REASONING),
    (MULTI_TURN, "345 - 129 = 216."),
    (MULTI_TURN, "<think>Let us think step by step.</think>216"),  # no newlines around the reasoning
]


def sft_batch(tokenizer, assistant_only_loss: bool, tmp_path) -> dict:
    """The batch TRL's SFT collator makes of `EXAMPLES`, after `SFTTrainer`'s own dataset preparation."""
    rows = [{"prompt": p, "completion": [{"role": "assistant", "content": r}]} for p, r in EXAMPLES]
    args = SFTConfig(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        bf16=False,
        assistant_only_loss=assistant_only_loss,
        max_length=None,
    )
    trainer = SFTTrainer(
        model=build_causal_lm(tokenizer),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    return trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])


@pytest.mark.parametrize("assistant_only_loss", [False, True])
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_scored_positions_are_the_positions_sft_trains_on(name, assistant_only_loss, tmp_path):
    tokenizer = template_tokenizer(name)
    if assistant_only_loss and name in NO_TRAINING_TEMPLATE:
        with pytest.raises(ValueError, match="not training-compatible"):
            sft_batch(tokenizer, assistant_only_loss, tmp_path)
        with pytest.raises(LearnabilityError, match="no training template for this one.*add the markers"):
            sft_chat_template(tokenizer, assistant_only_loss)
        return
    batch = sft_batch(tokenizer, assistant_only_loss, tmp_path)
    chat_template = sft_chat_template(tokenizer, assistant_only_loss)
    for row, (prompt, response) in enumerate(EXAMPLES):
        encoded = encode_response(
            tokenizer, prompt, response, assistant_only_loss=assistant_only_loss, chat_template=chat_template
        )
        length = len(encoded.input_ids)
        assert batch["input_ids"][row, :length].tolist() == encoded.input_ids
        trained = (batch["labels"][row] != -100).nonzero().flatten().tolist()
        assert list(range(encoded.start, encoded.end)) == trained, (name, response)


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_without_end_of_turn_the_template_tail_alone_is_dropped(name):
    tokenizer = template_tokenizer(name)
    full = encode_response(tokenizer, USER, PLAIN)
    bare = encode_response(tokenizer, USER, PLAIN, count_end_of_turn=False)
    assert (bare.input_ids, bare.start) == (full.input_ids, full.start)
    assert tokenizer.decode(full.input_ids[bare.end : full.end]) == END_OF_TURN[name]
    # Qwen3 inserts an empty think block into a reply without one, and SFT trains on it: it stays in. Qwen3.5
    # prefills `<think>\n`; this tokenizer has no "\n\n" token, so one "\n" of the block is in the prompt.
    head = {"qwen3": "<think>\n\n</think>\n\n", "qwen3_5_think": "\n</think>\n\n"}.get(name, "")
    assert tokenizer.decode(bare.input_ids[bare.start : bare.end]) == head + PLAIN


def test_deepseek_r1_distill_scores_what_sft_keeps_of_a_reasoning_reply():
    """The template prefills `<think>\\n` and drops the reasoning of an assistant turn: under the student's own
    template SFT trains on the answer only, under TRL's training template (`assistant_only_loss`) on both."""
    tokenizer = template_tokenizer("deepseek_r1_distill")
    own = encode_response(tokenizer, USER, REASONING)
    assert tokenizer.decode(own.input_ids[own.start : own.end]) == "\n\n" + PLAIN + "<｜end▁of▁sentence｜>"
    template = sft_chat_template(tokenizer, assistant_only_loss=True)
    training = encode_response(tokenizer, USER, REASONING, assistant_only_loss=True, chat_template=template)
    assert tokenizer.decode(training.input_ids[training.start : training.end]) == (
        "First add the ones, then the tens.\n</think>\n\n" + PLAIN + "<｜end▁of▁sentence｜>"
    )
