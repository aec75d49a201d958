"""The PerSyn router: a backbone and a score head giving one score per teacher (self-contained: shipped as remote code).

For a prompt x the router gives π(x) ∈ R^n, one score per teacher. The probability that teacher b is a better
teacher than teacher a for x is σ(π_b(x) − π_a(x)) (Bradley-Terry, PerSyn Eq. 3), and the router is trained with
binary cross-entropy on the pairs ranked by the reward of Eq. 2 (Eq. 4). All pairs of a prompt share one π(x), so one
backbone pass per prompt serves all its pairs (at most C(n, 2): ties and missing rewards are left out).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_persyn_router import PersynRouterConfig


def reward_pairs(teacher_rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The comparable teacher pairs of a batch of reward vectors, in the explicit pairwise form of Eq. 4.

    A pair `(row, a, b)` with `a < b` is comparable when both rewards are finite (NaN marks a missing teacher) and
    different (ties say nothing about the order).

    Args:
        teacher_rewards (`torch.Tensor` of shape `[batch, n_teachers]`): Rewards in router teacher order.

    Returns:
        `pairs` (`torch.LongTensor` of shape `[n_pairs, 3]`): rows `(row, a, b)`; `labels` (`torch.FloatTensor` of
        shape `[n_pairs]`): 1.0 where teacher `b` has the higher reward, else 0.0.
    """
    rewards = teacher_rewards.float()
    n_teachers = rewards.shape[1]
    finite = torch.isfinite(rewards)
    upper = torch.ones(n_teachers, n_teachers, dtype=torch.bool, device=rewards.device).triu(diagonal=1)
    comparable = finite[:, :, None] & finite[:, None, :] & upper & (rewards[:, :, None] != rewards[:, None, :])
    rows, a, b = comparable.nonzero(as_tuple=True)
    labels = (rewards[rows, b] > rewards[rows, a]).float()
    return torch.stack([rows, a, b], dim=-1), labels


def bradley_terry_loss(scores: torch.Tensor, pairs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of σ(s_b − s_a) against the labels, averaged over all pairs (PerSyn Eq. 4).

    Within a batch every pair weighs the same, whichever prompt it comes from. Batches hold prompts, not pairs, and
    each batch's mean counts the same in training however many pairs it holds, so over an epoch this is the mean over
    the pairwise dataset's rows only when every batch holds as many pairs. A batch without any pair gives a zero loss
    that still depends on `scores`.
    """
    if pairs.shape[0] == 0:
        return scores.sum() * 0.0
    rows, a, b = pairs.unbind(dim=-1)
    margins = scores[rows, b].float() - scores[rows, a].float()
    return F.binary_cross_entropy_with_logits(margins, labels.to(margins.device, torch.float32))


def pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per sequence: its `last` or first (`cls`) attended token, or the `mean` of its attended tokens.

    Positions come from `attention_mask`, so left and right padding give the same result.
    """
    mask = attention_mask.to(hidden_states.device)
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device)
        index = (positions * mask.long()).argmax(dim=-1)
    else:  # "cls": argmax returns the first attended position
        index = mask.long().argmax(dim=-1)
    return hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), index]


@dataclass
class PersynRouterOutput(ModelOutput):
    """Output of [`PersynRouterModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Bradley-Terry loss, returned when `teacher_rewards` (or `pairs` and `pair_labels`) are passed.
        scores (`torch.FloatTensor` of shape `[batch, n_teachers]`):
            One score per teacher, in `config.teachers` order; the router picks the highest.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The backbone's hidden states, returned with `output_hidden_states=True`.
    """

    loss: torch.FloatTensor | None = None
    scores: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class PersynRouterHead(nn.Module):
    """Pooled vector -> one score per teacher: a linear layer, or one GELU hidden layer then a linear layer."""

    def __init__(self, config: PersynRouterConfig, hidden_size: int):
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        self.dense = None
        if config.head == "mlp":
            width = config.head_hidden_size or hidden_size
            self.dense = nn.Linear(hidden_size, width)
            self.activation = nn.GELU()
            hidden_size = width
        self.out_proj = nn.Linear(hidden_size, config.num_teachers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(pooled)
        if self.dense is not None:
            hidden = self.dropout(self.activation(self.dense(hidden)))
        return self.out_proj(hidden)


class PersynRouterPreTrainedModel(PreTrainedModel):
    config_class = PersynRouterConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True
    _keep_in_fp32_modules = ["score"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True


class PersynRouterModel(PersynRouterPreTrainedModel):
    """The PerSyn router π: a backbone (decoder or encoder) and a score head with one output per teacher.

    Index `i` of `scores` is teacher `config.teachers[i]`. Load a trained router with
    `AutoModel.from_pretrained(path_or_repo)` (after `import persyn_hf`, or with `trust_remote_code=True`), start a new
    one from a pretrained backbone with [`PersynRouterModel.from_backbone`].
    """

    def __init__(self, config: PersynRouterConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        if config.num_teachers < 2:
            raise ValueError(
                f"A router needs at least 2 teachers to choose between, got `teachers={config.teachers}`."
            )
        if config.backbone_config is None:
            raise ValueError(
                "`backbone_config` is not set: start a router with `PersynRouterModel.from_backbone(...)`."
            )
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config.backbone_config)
        self.score = PersynRouterHead(config, config.backbone_config.hidden_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    @classmethod
    def from_backbone(
        cls,
        name_or_path: str,
        teachers: list[str],
        pooling: str | None = None,
        head: str = "linear",
        head_hidden_size: int | None = None,
        dropout: float = 0.0,
        max_prompt_length: int = 1024,
        **backbone_kwargs,
    ) -> tuple[PersynRouterModel, object]:
        """A new router on the pretrained backbone `name_or_path` (e.g. `"Qwen/Qwen2.5-1.5B"`), with its tokenizer.

        The backbone's weights are loaded with `AutoModel.from_pretrained(name_or_path, **backbone_kwargs)` (a causal
        LM checkpoint gives its base model); the score head starts fresh. A tokenizer without a pad token gets the
        eos token as pad token, or a new `<|pad|>` token (and resized embeddings) when it has no eos token either:
        pooling reads positions from the attention mask, so the pad token's id never matters.

        Returns:
            `(router, tokenizer)`: save the tokenizer with the router, `route` and training need it.
        """
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        backbone = AutoModel.from_pretrained(name_or_path, **backbone_kwargs)
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is not None:
                tokenizer.pad_token = tokenizer.eos_token
            else:
                tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
                backbone.resize_token_embeddings(len(tokenizer))
        config = PersynRouterConfig(
            teachers=teachers,
            backbone_config=backbone.config,
            pooling=pooling,
            head=head,
            head_hidden_size=head_hidden_size,
            dropout=dropout,
            max_prompt_length=max_prompt_length,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        return cls(config, backbone=backbone), tokenizer

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        teacher_rewards: torch.Tensor | None = None,
        pairs: torch.LongTensor | None = None,
        pair_labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
    ) -> PersynRouterOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `[batch, seq_len]`): Tokenized prompts (no chat template).
            attention_mask (`torch.Tensor` of shape `[batch, seq_len]`, *optional*): 1 on tokens, 0 on padding.
            teacher_rewards (`torch.Tensor` of shape `[batch, n_teachers]`, *optional*):
                Rewards in `config.teachers` order, NaN where a teacher is missing. Gives the Bradley-Terry loss over
                every comparable pair of every prompt (see `reward_pairs`), averaged over all pairs of the batch.
            pairs (`torch.LongTensor` of shape `[n_pairs, 3]`, *optional*):
                The explicit pairwise form: rows `(row, a, b)`, with `row` indexing the batch. Needs `pair_labels`.
            pair_labels (`torch.Tensor` of shape `[n_pairs]`, *optional*): 1 if teacher `b` is preferred over `a`.
            output_hidden_states (`bool`, *optional*): Also return the backbone's hidden states.
        """
        if teacher_rewards is not None and pairs is not None:
            raise ValueError("Pass either `teacher_rewards` or `pairs` with `pair_labels`, not both.")
        if (pairs is None) != (pair_labels is None):
            raise ValueError("`pairs` and `pair_labels` go together: pass both or neither.")
        if teacher_rewards is not None and teacher_rewards.shape[-1] != self.config.num_teachers:
            raise ValueError(
                f"`teacher_rewards` has {teacher_rewards.shape[-1]} columns but the router scores "
                f"{self.config.num_teachers} teachers {self.config.teachers}."
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        outputs = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        pooled = pool(outputs.last_hidden_state, attention_mask, self.config.pooling)
        scores = self.score(pooled.to(self.score.out_proj.weight.dtype))

        loss = None
        if teacher_rewards is not None:
            pairs, pair_labels = reward_pairs(teacher_rewards.to(scores.device))
        if pairs is not None:
            loss = bradley_terry_loss(scores, pairs.to(scores.device), pair_labels)
        return PersynRouterOutput(loss=loss, scores=scores, hidden_states=outputs.hidden_states)

    @torch.inference_mode()
    def route(
        self,
        prompts: list[str],
        tokenizer,
        batch_size: int = 32,
        top_k: int = 1,
        show_progress: bool = True,
    ) -> tuple[list[str] | list[list[str]], torch.Tensor]:
        """Route each prompt to its best teacher(s).

        Prompts are tokenized once (truncated to `config.max_prompt_length`), sorted by length and run in batches of
        `batch_size`, so that little compute is spent on padding; results come back in the input order.

        Returns:
            `(teachers, scores)`: the best teacher's name per prompt (`top_k=1`), or the `top_k` best names, best
            first (`top_k > 1`); and the float32 scores of shape `[len(prompts), n_teachers]` on CPU.
        """
        if not 1 <= top_k <= self.config.num_teachers:
            raise ValueError(f"`top_k` must be between 1 and {self.config.num_teachers} (teachers), got {top_k}.")
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size}.")
        if tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer has no pad token: use the tokenizer saved with the router.")
        prompts = list(prompts)
        if not prompts:
            return [], torch.empty(0, self.config.num_teachers)
        encoded = tokenizer(prompts, truncation=True, max_length=self.config.max_prompt_length)["input_ids"]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
        scores = torch.empty(len(encoded), self.config.num_teachers)
        was_training = self.training
        self.eval()
        for start in tqdm(range(0, len(order), batch_size), desc="Routing", disable=not show_progress):
            indices = order[start : start + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt")
            batch = {key: value.to(self.device) for key, value in batch.items()}
            scores[indices] = self(**batch).scores.float().cpu()
        self.train(was_training)
        best = scores.topk(top_k, dim=-1).indices.tolist()
        names = [[self.config.teachers[i] for i in row] for row in best]
        return ([row[0] for row in names] if top_k == 1 else names), scores


PersynRouterConfig.register_for_auto_class()
PersynRouterModel.register_for_auto_class("AutoModel")
