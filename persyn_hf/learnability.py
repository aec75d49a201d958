"""Learnability (PerSyn Eq. 1): the student's mean log-probability of a teacher's response, given the prompt.

r_l(y, θ) = 1/|y| · Σ_t log p_θ(y_t | y_<t, x), with the prompt x rendered by the student's chat template.

The tokens scored are exactly those the SFT stage trains the student on: TRL's `SFTTrainer` with
prompt-completion conversational data and its default completion-only loss. They are found with TRL's own
tokenisation (`trl.data_utils._tokenize` and `common_prefix_length`, as `SFTTrainer._prepare_dataset` uses them):
the prompt with the generation prompt and the whole conversation are tokenised with the student's chat template,
and the completion starts where the two token sequences diverge. So with the DeepSeek-R1-Distill template (which
prefills `<think>\\n` and drops the reasoning of an assistant turn) or Qwen3's (which inserts an empty
`<think>\\n\\n</think>\\n\\n`), the score covers what SFT will train on, artefacts included. With
`assistant_only_loss=True` the span is also limited to the template's `{% generation %}` block, under TRL's
training template (`get_training_chat_template`) when the student's has no such block, as `SFTTrainer` does.

`count_end_of_turn` chooses the span:
- `True` (default): every token SFT trains on, the template's end of turn included (`<|im_end|>\\n` for Qwen2.5,
  `<|eot_id|>` for Llama 3): the same span in `score` and `sft`, |y| + |end of turn| tokens;
- `False`: the end of turn dropped, the |y| tokens of Eq. 1 literally (template tokens the student's template
  inserts *before* the response text, such as Qwen3's empty think block, are trained on by SFT and stay in).

Responses that cannot be scored get NaN and a reason (`NAN_REASONS`), counted in `LearnabilityScores.nan_counts`:
an empty or whitespace-only response, text that is not valid UTF-8 (a lone surrogate), a conversation longer than
`max_length` tokens (decided on a bounded prefix: a megabyte response is never tokenised in full), a span the
template leaves empty. Scoring runs either here with `transformers` (`learnability_scores`: length-bucketed padded
batches, or padding-free packed rows) or on an OpenAI-compatible engine such as vLLM that returns prompt
log-probabilities (`engine_learnability_scores`), given the same token ids.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field

from persyn_hf.configs import check_choice
from persyn_hf.contracts import completion_messages
from persyn_hf.errors import ConfigError
from persyn_hf.teachers.pool import run_coroutine

logger = logging.getLogger(__name__)

INVALID_UTF8, EMPTY_RESPONSE, TOO_LONG, NO_TOKENS, ENGINE_ERROR = (
    "invalid_utf8",
    "empty_response",
    "too_long",
    "no_response_tokens",
    "engine_error",
)
NAN_REASONS = {
    INVALID_UTF8: "the prompt or response is not valid UTF-8 text (e.g. a lone surrogate)",
    EMPTY_RESPONSE: "the response is missing, empty or whitespace only",
    TOO_LONG: "prompt and response take more than `max_length` tokens",
    NO_TOKENS: "the chat template leaves no response token to score",
    ENGINE_ERROR: "the scoring engine failed the request after its retries",
}
# A stand-in response, rendered to find the text the template writes after a response (its end of turn).
_SENTINEL = "PERSYN_LEARNABILITY_SENTINEL"
# Probing a long text for its token count starts with a prefix of this many characters per allowed token.
PROBE_CHARS_PER_TOKEN = 4


class LearnabilityError(ConfigError):
    """A student, tokenizer or chat template that learnability cannot be computed with (one line: problem, fix)."""


@dataclass(frozen=True)
class Encoded:
    """A conversation tokenised as SFT tokenises it; the scored tokens are `input_ids[start:end]`."""

    input_ids: list[int]
    start: int
    end: int


@dataclass
class LearnabilityScores:
    """One score per response (NaN when unscored) and, for each NaN, its reason (a key of `NAN_REASONS`)."""

    scores: list[float]
    nan_reasons: list[str | None]

    @property
    def nan_counts(self) -> dict[str, int]:
        """Unscored responses per reason, e.g. `{"too_long": 3}`."""
        return dict(Counter(reason for reason in self.nan_reasons if reason is not None))

    def summary(self) -> str:
        """One line for a log or a card: how many responses were scored, and why the others were not."""
        counts = self.nan_counts
        unscored = ", ".join(f"{count} {reason} ({NAN_REASONS[reason]})" for reason, count in counts.items())
        return f"learnability: {len(self.scores) - sum(counts.values())} of {len(self.scores)} responses scored" + (
            f"; NaN: {unscored}" if counts else ""
        )


class UnscorableResponse(Exception):
    """A response that gets NaN; `reason` is a key of `NAN_REASONS`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# Tokenising as SFT does ----------------------------------------------------------------------------------------


def sft_chat_template(tokenizer, assistant_only_loss: bool = False) -> str | None:
    """The chat template `SFTTrainer` tokenises with: `None` (the tokenizer's own) unless `assistant_only_loss`
    needs `{% generation %}` markers the template lacks, then TRL's training template for it."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if not tokenizer.chat_template:
        raise LearnabilityError(
            "The student's tokenizer has no chat template, and learnability renders prompts with it: "
            "use the student's instruct tokenizer or set `tokenizer.chat_template` (e.g. from trl/chat_templates)."
        )
    if not assistant_only_loss or has_generation_markers(tokenizer.chat_template):
        return None
    try:
        return get_training_chat_template(tokenizer)
    except ValueError as error:
        raise LearnabilityError(
            "`assistant_only_loss=True` needs a chat template with `{% generation %}` markers and TRL has no "
            f"training template for this one ({error}): add the markers to the template, or set "
            "`assistant_only_loss=False` in both the score and sft stages."
        ) from None


def _check_text(text) -> None:
    if isinstance(text, str):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UnscorableResponse(INVALID_UTF8) from None


def longer_than(tokenizer, text: str, max_tokens: int) -> bool:
    """Whether `text` alone takes more than `max_tokens` tokens, tokenising no more of it than needed to tell.

    A text longer than `PROBE_CHARS_PER_TOKEN * max_tokens` characters is probed with prefixes cut before a space,
    each 4x longer than the last: a byte-level or Metaspace tokenizer splits words apart before merging, so such a
    prefix has no more tokens than the whole text, and a prefix over the limit decides. A shorter text returns
    `False` untokenised (the caller checks the exact length on the full tokenisation).
    """
    limit = PROBE_CHARS_PER_TOKEN * max_tokens
    while limit < len(text):
        cut = text.rfind(" ", 0, limit)
        prefix = text[: cut if cut > 0 else limit]
        if len(tokenizer(prefix, add_special_tokens=False)["input_ids"]) > max_tokens:
            return True
        limit *= 4
    return False


def _end_of_turn_ids(tokenizer, messages: list[dict], chat_template: str | None) -> list[int]:
    """Token ids of what the template writes after the response text of a final assistant turn."""
    conversation = [*messages, {"role": "assistant", "content": _SENTINEL}]
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False, chat_template=chat_template)
    if _SENTINEL not in rendered:
        raise LearnabilityError(
            "The chat template does not render the assistant's content, so its end of turn cannot be told apart: "
            "use `count_end_of_turn=True`."
        )
    tail = rendered[rendered.rindex(_SENTINEL) + len(_SENTINEL) :]
    return tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []


def _sft_tokens(tokenizer, messages, response, chat_template, assistant_only_loss) -> tuple[list[int], list[int]]:
    """`(input_ids, trained positions)` exactly as `SFTTrainer` builds them for a prompt-completion example: labels
    are kept where `completion_mask` (and, with `assistant_only_loss`, `assistant_masks`) is 1."""
    from trl.data_utils import _tokenize, common_prefix_length

    completion = completion_messages(response)
    prompt_ids = _tokenize(tokenizer, messages, add_generation_prompt=True, chat_template=chat_template)
    processed = _tokenize(
        tokenizer,
        messages + completion,
        return_assistant_tokens_mask=assistant_only_loss,
        chat_template=chat_template,
    )
    input_ids = processed["input_ids"]
    start = common_prefix_length(prompt_ids["input_ids"], input_ids)
    masks = processed.get("assistant_masks") if assistant_only_loss else None
    # position 0 has no context: the loss of a causal LM, which shifts labels, never counts it
    trained = [i for i in range(max(start, 1), len(input_ids)) if masks is None or masks[i]]
    return input_ids, trained


def encode_response(
    tokenizer,
    messages: list[dict],
    response: str,
    *,
    count_end_of_turn: bool = True,
    assistant_only_loss: bool = False,
    max_length: int | None = None,
    chat_template: str | None = None,
) -> Encoded:
    """Tokenise a (prompt `messages`, `response`) pair as SFT does and locate the tokens Eq. 1 scores.

    `chat_template` is the one `sft_chat_template(tokenizer, assistant_only_loss)` returns (pass it when encoding
    many pairs: it is computed once). Raises `UnscorableResponse` (with the NaN reason) for a pair that cannot be
    scored, `LearnabilityError` for a template it cannot be scored with.
    """
    for text in [*(message.get("content") for message in messages), response]:
        _check_text(text)
    if not isinstance(response, str) or not response.strip():
        raise UnscorableResponse(EMPTY_RESPONSE)
    texts = [response, *(m["content"] for m in messages if isinstance(m.get("content"), str))]
    if max_length is not None and any(longer_than(tokenizer, text, max_length) for text in texts):
        raise UnscorableResponse(TOO_LONG)
    input_ids, trained = _sft_tokens(tokenizer, messages, response, chat_template, assistant_only_loss)
    if not trained:
        raise UnscorableResponse(NO_TOKENS)
    start, end = trained[0], trained[-1] + 1
    if trained != list(range(start, end)):
        raise LearnabilityError(
            "The chat template trains on several separate spans of one reply, which learnability cannot score "
            "as one response: use a template with one `{% generation %}` block per assistant turn."
        )
    if not count_end_of_turn:
        end_of_turn = _end_of_turn_ids(tokenizer, messages, chat_template)
        if end_of_turn and input_ids[-len(end_of_turn) :] != end_of_turn:
            raise LearnabilityError(
                f"The chat template's end of turn {tokenizer.decode(end_of_turn)!r} does not tokenise apart from "
                "the response, so it cannot be left out: use `count_end_of_turn=True`."
            )
        end = min(end, len(input_ids) - len(end_of_turn))
        if end <= start:
            raise UnscorableResponse(NO_TOKENS)
    if max_length is not None and end > max_length:
        raise UnscorableResponse(TOO_LONG)
    return Encoded(input_ids, start, end)


def encode_responses(
    tokenizer,
    messages: list[list[dict]],
    responses: list[str],
    *,
    count_end_of_turn: bool = True,
    assistant_only_loss: bool = False,
    max_length: int | None = None,
) -> tuple[list[Encoded | None], list[str | None]]:
    """`encode_response` for every pair: the encodings (`None` when unscorable) and the NaN reasons."""
    chat_template = sft_chat_template(tokenizer, assistant_only_loss)
    encoded, reasons = [], []
    for prompt, response in zip(messages, responses, strict=True):
        try:
            encoded.append(
                encode_response(
                    tokenizer,
                    prompt,
                    response,
                    count_end_of_turn=count_end_of_turn,
                    assistant_only_loss=assistant_only_loss,
                    max_length=max_length,
                    chat_template=chat_template,
                )
            )
            reasons.append(None)
        except UnscorableResponse as unscorable:
            encoded.append(None)
            reasons.append(unscorable.reason)
    return encoded, reasons


def context_length(config, setting: str, model: str = "student") -> int:
    """A model's context, from its `config`: `max_position_embeddings` of its text config, which attribute maps give
    for models that call it otherwise (GPT-2's `n_positions`). A model without one needs `setting` set."""
    config = config.get_text_config()
    max_length = getattr(config, "max_position_embeddings", None)
    if not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(
            f"The {model}'s config ({type(config).__name__}) gives no context length (`max_position_embeddings`): "
            f"set `{setting}` to the longest prompt + response the {model} can read."
        )
    return max_length


# Scoring with transformers ------------------------------------------------------------------------------------


def load_for_scoring(auto_class, path: str, dtype: str, device):
    """`auto_class.from_pretrained(path)` in `dtype` on `device`, in eval mode: a model that scores, never trains."""
    return auto_class.from_pretrained(path, dtype=dtype).to(device).eval()


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


def _padded_means(model, examples: list[Encoded], pad_id: int) -> list[float]:
    """Mean log-probability of each span, in one left-padded batch: every span ends at the last position, so the
    model computes logits for the last `longest span + 1` positions only."""
    import torch
    from trl.trainer.utils import selective_log_softmax

    length = max(e.end for e in examples)
    span_lengths = [e.end - e.start for e in examples]
    window = max(span_lengths)
    input_ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, example in enumerate(examples):
        input_ids[row, length - example.end :] = torch.tensor(example.input_ids[: example.end])
        attention_mask[row, length - example.end :] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    targets = input_ids.to(model.device)
    with torch.inference_mode():
        logits = model(
            input_ids=targets,
            attention_mask=attention_mask.to(model.device),
            position_ids=position_ids.to(model.device),
            use_cache=False,
            logits_to_keep=window + 1,
        ).logits
        # each row's span is the tail of the window: its log-softmax skips the window's other positions
        return [
            selective_log_softmax(logits[row, -n - 1 : -1][None], targets[row, -n:][None]).float().mean().item()
            for row, n in enumerate(span_lengths)
        ]


def _packed_means(model, examples: list[Encoded]) -> list[float]:
    """Mean log-probability of each span, the sequences packed into one row without padding: positions restart at
    each sequence (as `DataCollatorWithFlattening` does), and logits are computed at the span positions only.

    `use_cache=False` matters: with a cache, transformers does not derive the per-sequence causal mask from
    `position_ids` and the sequences would attend to each other.
    """
    import torch
    from trl.trainer.utils import selective_log_softmax

    input_ids, position_ids, keep = [], [], []
    for example in examples:
        keep += range(len(input_ids) + example.start - 1, len(input_ids) + example.end - 1)
        input_ids += example.input_ids[: example.end]
        position_ids += range(example.end)
    keep = torch.tensor(keep)
    input_ids = torch.tensor([input_ids])
    with torch.inference_mode():
        logits = model(
            input_ids=input_ids.to(model.device),
            position_ids=torch.tensor([position_ids], device=model.device),
            use_cache=False,
            logits_to_keep=keep.to(model.device),
        ).logits
        logps = selective_log_softmax(logits, input_ids[:, keep + 1].to(model.device))[0].float().cpu()
    return [span.mean().item() for span in logps.split([e.end - e.start for e in examples])]


def learnability_scores(
    model,
    tokenizer,
    messages: list[list[dict]],
    responses: list[str],
    *,
    count_end_of_turn: bool = True,
    max_length: int | None = None,
    assistant_only_loss: bool = False,
    padding_free: bool = False,
    batch_size: int = 16,
    max_tokens_per_batch: int = 16384,
    show_progress: bool = True,
) -> LearnabilityScores:
    """Eq. 1 for every (prompt `messages`, response) pair with the student `model` and its `tokenizer`.

    Args:
        count_end_of_turn: Score the template's end of turn with the response (`True`: exactly SFT's tokens) or
            not (`False`: the |y| tokens of Eq. 1).
        max_length: Longest prompt + response scored, in tokens (defaults to the student's context,
            `context_length(model.config, "max_length")`); longer pairs get NaN before any forward pass.
        assistant_only_loss: As the SFT stage's `SFTConfig.assistant_only_loss`.
        padding_free: Pack each batch into one row without padding (positions restarting per sequence) instead of
            left-padding it. Exact only for a model whose attention honours packed `position_ids` (transformers'
            Llama and Qwen2 with sdpa or eager attention do, checked in the tests, as flash-attention's varlen path). On
            CPU it is no faster than padded batches of the same size (`benchmarks/learnability.py`): padded is the
            default because it is exact for every model.
        batch_size, max_tokens_per_batch: Most pairs, and most (padded) tokens, in one forward pass.
    """
    from tqdm.auto import tqdm

    max_length = max_length or context_length(model.config, "max_length")
    encoded, reasons = encode_responses(
        tokenizer,
        messages,
        responses,
        count_end_of_turn=count_end_of_turn,
        assistant_only_loss=assistant_only_loss,
        max_length=max_length,
    )
    scored = [i for i, example in enumerate(encoded) if example is not None]
    scores = [math.nan] * len(encoded)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    batches = length_buckets([encoded[i].end for i in scored], batch_size, max_tokens_per_batch)
    for batch in tqdm(batches, desc="Learnability", disable=not show_progress):
        examples = [encoded[scored[j]] for j in batch]
        means = _packed_means(model, examples) if padding_free else _padded_means(model, examples, pad_id)
        for j, value in zip(batch, means):
            scores[scored[j]] = value
    result = LearnabilityScores(scores, reasons)
    if result.nan_counts:
        logger.warning(result.summary())
    return result


# The score stage's entry points --------------------------------------------------------------------------------

BACKENDS = ("transformers", "openai")


@dataclass
class LearnabilityConfig:
    """How learnability (Eq. 1) is computed: where, on which tokens, within which bound.

    Parameters:
        learnability_backend (`str`, *optional*, defaults to `"transformers"`):
            `transformers`: the student loaded in this process; `openai`: an OpenAI-compatible server that returns
            prompt log-probabilities (vLLM, started with `--no-enable-prefix-caching`) serving the student.
        learnability_base_url (`str` or `None`, *optional*, defaults to `None`):
            URL of that server, for `openai`.
        learnability_model (`str` or `None`, *optional*, defaults to `None`):
            Name the server knows the student by (vLLM's `--served-model-name`); defaults to `student`.
        learnability_max_concurrency (`int`, *optional*, defaults to `64`):
            Most requests in flight to that server.
        count_end_of_turn (`bool`, *optional*, defaults to `True`):
            Score the template's end-of-turn token(s) with the response: exactly the tokens SFT trains on. `False`
            leaves them out: the |y| tokens of Eq. 1.
        learnability_max_length (`int` or `None`, *optional*, defaults to `None`):
            Longest prompt + response scored, in tokens; longer ones get NaN. Defaults to the student's context
            (`max_position_embeddings` of its config; a model without one needs this set).
        assistant_only_loss (`bool`, *optional*, defaults to `False`):
            Set as in the sft stage's `SFTConfig`: `True` scores only the template's `{% generation %}` block.
        padding_free (`bool`, *optional*, defaults to `False`):
            Pack each batch into one row without padding (`transformers` backend); see `learnability_scores`.
    """

    learnability_backend: str = field(default="transformers", metadata={"help": "transformers or openai."})
    learnability_base_url: str | None = field(default=None, metadata={"help": "Server URL, for openai."})
    learnability_model: str | None = field(default=None, metadata={"help": "The student's name on the server."})
    learnability_max_concurrency: int = field(default=64, metadata={"help": "Most requests in flight."})
    count_end_of_turn: bool = field(
        default=True, metadata={"help": "Score the end-of-turn token(s) with the response, as SFT trains on them."}
    )
    learnability_max_length: int | None = field(
        default=None, metadata={"help": "Longest prompt + response scored (default: the student's context)."}
    )
    assistant_only_loss: bool = field(default=False, metadata={"help": "As the sft stage's SFTConfig."})
    padding_free: bool = field(default=False, metadata={"help": "Packed rows instead of padded batches."})

    def __post_init__(self):
        check_choice("learnability_backend", self.learnability_backend, BACKENDS)
        if self.learnability_backend == "openai" and not self.learnability_base_url:
            raise ConfigError("`learnability_backend: openai` needs `learnability_base_url` (the server's URL).")


def prepare_student(config: LearnabilityConfig, student: str) -> tuple:
    """The student's tokenizer and length bound, checked without loading its weights: a tokenizer without a chat
    template, a template TRL cannot make assistant-only, a model without a context length fail here, before any
    scoring (the score stage calls this before computing quality)."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(student)
    sft_chat_template(tokenizer, config.assistant_only_loss)
    max_length = config.learnability_max_length or context_length(
        AutoConfig.from_pretrained(student), "learnability_max_length"
    )
    return tokenizer, max_length


def score_learnability(
    config: LearnabilityConfig,
    student: str,
    messages: list[list[dict]],
    responses: list[str],
    *,
    batch_size: int = 16,
    max_tokens_per_batch: int = 16384,
    dtype: str = "auto",
    device="cpu",
    show_progress: bool = True,
) -> LearnabilityScores:
    """Eq. 1 for every pair with the `student` (path or Hub id), on the backend `config` names."""
    tokenizer, max_length = prepare_student(config, student)
    options = {
        "count_end_of_turn": config.count_end_of_turn,
        "max_length": max_length,
        "assistant_only_loss": config.assistant_only_loss,
    }
    if config.learnability_backend == "openai":
        endpoint = engine_endpoint(
            config.learnability_base_url, config.learnability_model or student, config.learnability_max_concurrency
        )
        return engine_learnability_scores(endpoint, tokenizer, messages, responses, **options)
    from transformers import AutoModelForCausalLM

    model = load_for_scoring(AutoModelForCausalLM, student, dtype, device)
    return learnability_scores(
        model,
        tokenizer,
        messages,
        responses,
        padding_free=config.padding_free,
        batch_size=batch_size,
        max_tokens_per_batch=max_tokens_per_batch,
        show_progress=show_progress,
        **options,
    )


# Scoring on an OpenAI-compatible engine ----------------------------------------------------------------------


def engine_endpoint(base_url: str, model: str, max_concurrency: int = 64, api_key_env: str | None = None):
    """The student's scoring server as a member of the teacher pool (`backend: openai`), for its retries and
    concurrency limits. `model` is the name the server knows the student by."""
    from persyn_hf.teachers.spec import TeacherSpec

    return TeacherSpec(
        name="student",
        model_id=model,
        family="student",
        size_b=1.0,
        backend="openai",
        base_url=base_url,
        max_concurrency=max_concurrency,
        backend_args={"api_key_env": api_key_env},
    )


@dataclass
class _EngineJob:
    prompt_id: int  # the pool's name for a job's key: here the response's index
    example: Encoded = field(repr=False)


def _span_mean(prompt_logprobs: list, example: Encoded) -> float:
    """Mean log-probability of the span from an engine's per-position prompt log-probabilities (vLLM's format:
    `None` for the first token, then `{token_id: {"logprob": ...}, ...}` holding the actual token beside others)."""
    ids = example.input_ids
    return sum(prompt_logprobs[t][str(ids[t])]["logprob"] for t in range(example.start, example.end)) / (
        example.end - example.start
    )


def engine_learnability_scores(
    endpoint,
    tokenizer,
    messages: list[list[dict]],
    responses: list[str],
    *,
    max_length: int,
    count_end_of_turn: bool = True,
    assistant_only_loss: bool = False,
    pool_config=None,
) -> LearnabilityScores:
    """Eq. 1 computed by an OpenAI-compatible engine serving the student (vLLM): the same spans as
    `learnability_scores`, sent as token ids to `/v1/completions` with `prompt_logprobs: 0, max_tokens: 1`.

    `endpoint` is a `TeacherSpec` (`engine_endpoint(...)`); requests run in a `TeacherPool` (`pool_config`: its
    concurrency, time-outs and retries); a request that fails for good leaves its score NaN (`engine_error`).
    `max_length` is the server's context (vLLM's `--max-model-len`): the one generated token must fit too, so
    pairs of more than `max_length - 1` tokens are not sent. Run vLLM with `--no-enable-prefix-caching`: its prefix
    caching has had bugs with prompt log-probabilities (positions served from the cache).
    """
    from persyn_hf.teachers.pool import PoolConfig, RequestFailed, TeacherPool

    if endpoint.backend != "openai" or endpoint.backend_args.get("http_client", "aiohttp") != "aiohttp":
        raise LearnabilityError(
            f"Engine-side learnability needs an `openai` endpoint with the aiohttp client, got {endpoint.backend!r}: "
            "use `engine_endpoint(base_url, model)`."
        )
    encoded, reasons = encode_responses(
        tokenizer,
        messages,
        responses,
        count_end_of_turn=count_end_of_turn,
        assistant_only_loss=assistant_only_loss,
        max_length=max_length - 1,
    )
    scores = [math.nan] * len(encoded)
    jobs = [_EngineJob(i, example) for i, example in enumerate(encoded) if example is not None]

    async def run() -> list:
        async with TeacherPool([endpoint], pool_config or PoolConfig()) as pool:

            async def handle(spec, job: _EngineJob) -> None:
                ids = job.example.input_ids[: job.example.end]
                prompt_logprobs, _ = await pool.call(spec.name, lambda backend: backend.prompt_logprobs(ids))
                try:
                    scores[job.prompt_id] = _span_mean(prompt_logprobs, job.example)
                except (KeyError, IndexError, TypeError) as error:
                    raise RequestFailed(f"no prompt log-probabilities for the response: {error!r}", None, 1) from error

            return await pool.run({endpoint.name: jobs}, handle)

    failures = run_coroutine(run())
    for failure in failures:
        reasons[failure.prompt_id] = ENGINE_ERROR
    if failures:
        logger.warning(f"{len(failures)} learnability requests failed; the first: {failures[0].error}")
    result = LearnabilityScores(scores, reasons)
    if result.nan_counts:
        logger.warning(result.summary())
    return result
