"""Learnability (paper Eq. 1): the student's mean log-probability of a response's tokens given its prompt.

The prompt is rendered with the student's chat template, and only response tokens enter the mean. Scoring is
batched: conversations are grouped longest first (`length_buckets`) and only the response window gets logits.
"""

from __future__ import annotations

import math


def conversation(messages: list[dict], response: str) -> list[dict]:
    return [*messages, {"role": "assistant", "content": response}]


def length_buckets(lengths: list[int], batch_size: int, max_tokens_per_batch: int) -> list[list[int]]:
    """Indices grouped longest first into batches of at most `batch_size` examples and `max_tokens_per_batch`
    padded tokens (an example longer than the budget gets a batch of its own), so that padding stays small."""
    batches, batch = [], []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        longest = lengths[batch[0]] if batch else lengths[index]
        if batch and (len(batch) == batch_size or longest * (len(batch) + 1) > max_tokens_per_batch):
            batches.append(batch)
            batch = []
        batch.append(index)
    return [*batches, batch] if batch else batches


def encode_response(tokenizer, messages: list[dict], response: str) -> tuple[list[int], int]:
    """Token ids of the conversation up to the end of the response, and the index of its first response token.

    The conversation (prompt `messages` + the assistant `response`) is rendered and tokenised whole with the
    tokenizer's chat template; the response span is found on that tokenisation with the character offsets, so
    merges across the prompt/response boundary cannot shift it. Response tokens are those carrying characters
    after the rendered generation prompt, up to the end of the rendered assistant turn (its end-of-turn token
    included, trailing template whitespace not).
    """
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(conversation(messages, response), tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError(
            "The chat template does not render the prompt (with `add_generation_prompt=True`) as a prefix of the "
            "conversation, so the response span cannot be located; use a chat template that does."
        )
    start, end = len(prompt_text), len(full_text.rstrip())
    encoding = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    in_response = [
        i
        for i, (first, last) in enumerate(encoding["offset_mapping"])
        if last > start and first < end and last > first
    ]
    if not in_response:
        return encoding["input_ids"], len(encoding["input_ids"])
    return encoding["input_ids"][: in_response[-1] + 1], in_response[0]


def learnability_scores(
    model,
    tokenizer,
    messages: list[list[dict]],
    responses: list[str],
    batch_size: int = 16,
    max_tokens_per_batch: int = 16384,
    show_progress: bool = True,
) -> list[float]:
    """Eq. 1: the student's mean log-probability of each response's tokens given its prompt (NaN if empty).

    Conversations are tokenised whole (`encode_response`), grouped longest first into batches bounded by
    `batch_size` and `max_tokens_per_batch`, and left-padded so that every response ends at the last position:
    the model then computes logits only for the last `max response length + 1` positions (`logits_to_keep`),
    and neither prompt nor padding tokens enter the mean.
    """
    import torch
    from tqdm.auto import tqdm
    from trl.trainer.utils import selective_log_softmax

    encoded = [encode_response(tokenizer, m, r) for m, r in zip(messages, responses)]
    scored = [i for i, (ids, first) in enumerate(encoded) if first < len(ids)]
    scores = [math.nan] * len(encoded)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    batches = length_buckets([len(encoded[i][0]) for i in scored], batch_size, max_tokens_per_batch)
    for batch in tqdm(batches, desc="Learnability", disable=not show_progress):
        examples = [encoded[scored[j]] for j in batch]
        length = max(len(ids) for ids, _ in examples)
        response_lengths = torch.tensor([len(ids) - first for ids, first in examples])
        window = int(response_lengths.max())
        input_ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, (ids, _) in enumerate(examples):
            input_ids[row, length - len(ids) :] = torch.tensor(ids)
            attention_mask[row, length - len(ids) :] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = model(
                input_ids=input_ids.to(model.device),
                attention_mask=attention_mask.to(model.device),
                position_ids=position_ids.to(model.device),
                logits_to_keep=window + 1,
            ).logits[:, :-1]
            logps = selective_log_softmax(logits, input_ids[:, -window:].to(model.device)).float().cpu()
        in_response = torch.arange(window) >= (window - response_lengths)[:, None]
        means = (logps * in_response).sum(-1) / response_lengths
        for j, value in zip(batch, means.tolist()):
            scores[scored[j]] = value
    return scores
