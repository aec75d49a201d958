"""The PerSyn router model: Bradley-Terry loss, pooling, save/load with AutoModel and remote code, routing."""

import itertools
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

import persyn_hf  # noqa: F401  (registers the router with AutoModel)
from persyn_hf.router import PersynRouterConfig, PersynRouterModel, bradley_terry_loss, reward_pairs

NAN = float("nan")
TEACHERS = ["terse", "short-cot", "long-cot"]
PROMPTS = ["What is 12 + 7?", "Tom has 4 apples and buys 9 more.", "Compute 345 - 129.", "A train travels 60 km."]


def bce(margin: float, label: float) -> float:
    """Binary cross-entropy of sigmoid(margin) against label, by hand."""
    p = 1.0 / (1.0 + math.exp(-margin))
    return -(label * math.log(p) + (1.0 - label) * math.log(1.0 - p))


@pytest.fixture(scope="module")
def tiny_bert_path(tmp_path_factory, tiny_tokenizer):
    """A tiny BERT encoder (random weights) with the fixture tokenizer."""
    path = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def qwen2_router(tiny_qwen2_path):
    torch.manual_seed(0)
    return PersynRouterModel.from_backbone(tiny_qwen2_path, teachers=TEACHERS)


def test_reward_pairs_skip_missing_teachers_and_ties():
    rewards = torch.tensor([[1.0, NAN, 0.0], [1.0, 1.0, 3.0], [NAN, NAN, 2.0]])
    pairs, labels = reward_pairs(rewards)
    # row 0: only (0, 2) (teacher 1 missing); row 1: (0, 1) is a tie; row 2: a single known teacher
    assert pairs.tolist() == [[0, 0, 2], [1, 0, 2], [1, 1, 2]]
    assert labels.tolist() == [0.0, 1.0, 1.0]


def test_loss_equals_hand_computation():
    scores = torch.tensor([[0.5, -1.0, 2.0], [0.0, 1.0, 3.0], [0.0, 0.0, 0.0]])
    rewards = torch.tensor([[1.0, NAN, 0.0], [1.0, 1.0, 3.0], [NAN, NAN, 2.0]])
    # pairs: (row 0: s2 - s0 = 1.5, label 0), (row 1: s2 - s0 = 3, label 1), (row 1: s2 - s1 = 2, label 1)
    expected = (bce(1.5, 0.0) + bce(3.0, 1.0) + bce(2.0, 1.0)) / 3
    assert expected == pytest.approx(1.7014 / 3 + 0.0486 / 3 + 0.1269 / 3, abs=1e-4)
    loss = bradley_terry_loss(scores, *reward_pairs(rewards))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_batch_without_pairs_gives_zero_loss_with_gradient():
    scores = torch.zeros(2, 3, requires_grad=True)
    loss = bradley_terry_loss(scores, *reward_pairs(torch.tensor([[1.0, 1.0, NAN], [NAN, NAN, NAN]])))
    loss.backward()
    assert loss.item() == 0.0
    assert scores.grad is not None


def test_forward_vector_form_equals_explicit_pair_forms(qwen2_router):
    router, tokenizer = qwen2_router
    rewards = torch.tensor([[0.2, NAN, 0.9], [0.5, 0.5, 0.1], [0.3, 0.8, 0.6], [NAN, 0.4, NAN]])
    batch = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    vector = router(**batch, teacher_rewards=rewards)

    # The same pairs written out by hand, as rows (prompt, a, b, label) of the paper's pairwise dataset
    rows = [
        (i, a, b, float(rewards[i, b] > rewards[i, a]))
        for i in range(len(PROMPTS))
        for a, b in itertools.combinations(range(len(TEACHERS)), 2)
        if not (math.isnan(rewards[i, a]) or math.isnan(rewards[i, b])) and rewards[i, a] != rewards[i, b]
    ]
    assert len(rows) == 1 + 2 + 3 + 0
    s = vector.scores.detach()
    by_hand = sum(bce((s[i, b] - s[i, a]).item(), label) for i, a, b, label in rows) / len(rows)
    assert vector.loss.item() == pytest.approx(by_hand, rel=1e-5)

    # Explicit pair form over the same batch
    pairs = torch.tensor([[i, a, b] for i, a, b, _ in rows])
    labels = torch.tensor([label for *_, label in rows])
    pair_form = router(**batch, pairs=pairs, pair_labels=labels)
    assert pair_form.loss.item() == pytest.approx(vector.loss.item(), rel=1e-6)

    # One backbone pass per pair row (the pairwise dataset taken literally): the prompt repeated once per pair
    per_row = tokenizer([PROMPTS[i] for i, *_ in rows], padding=True, return_tensors="pt")
    row_pairs = torch.tensor([[j, a, b] for j, (_, a, b, _) in enumerate(rows)])
    literal = router(**per_row, pairs=row_pairs, pair_labels=labels)
    assert literal.loss.item() == pytest.approx(vector.loss.item(), rel=1e-5)


def test_forward_rejects_inconsistent_inputs(qwen2_router):
    router, tokenizer = qwen2_router
    batch = tokenizer(PROMPTS[:2], padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="has 2 columns but the router scores 3 teachers"):
        router(**batch, teacher_rewards=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="`pairs` and `pair_labels` go together"):
        router(**batch, pairs=torch.tensor([[0, 0, 1]]))
    with pytest.raises(ValueError, match="either `teacher_rewards` or `pairs`"):
        router(**batch, teacher_rewards=torch.zeros(2, 3), pairs=torch.tensor([[0, 0, 1]]), pair_labels=torch.ones(1))


def test_config_validation(tiny_qwen2_path):
    backbone = AutoModel.from_pretrained(tiny_qwen2_path).config
    with pytest.raises(ValueError, match="at least 2 teachers"):
        PersynRouterConfig(teachers=["only"], backbone_config=backbone)
    with pytest.raises(ValueError, match=r"\['a'\] appear more than once"):
        PersynRouterConfig(teachers=["a", "b", "a"], backbone_config=backbone)
    with pytest.raises(ValueError, match="`pooling` must be one of"):
        PersynRouterConfig(teachers=["a", "b"], backbone_config=backbone, pooling="max")
    with pytest.raises(ValueError, match="`head` must be one of"):
        PersynRouterConfig(teachers=["a", "b"], backbone_config=backbone, head="deep")
    with pytest.raises(ValueError, match="needs a `model_type` key"):
        PersynRouterConfig(teachers=["a", "b"], backbone_config={"hidden_size": 8})
    with pytest.raises(ValueError, match="`backbone_config` is not set"):
        PersynRouterModel(PersynRouterConfig(teachers=["a", "b"]))


def test_from_backbone_keeps_backbone_weights_and_picks_pooling(tiny_qwen2_path, tiny_bert_path):
    router, _ = PersynRouterModel.from_backbone(tiny_qwen2_path, teachers=TEACHERS)
    reference = AutoModel.from_pretrained(tiny_qwen2_path)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(router.backbone.state_dict()[name], tensor), name
    assert router.config.pooling == "last"
    encoder, _ = PersynRouterModel.from_backbone(tiny_bert_path, teachers=TEACHERS, head="mlp", head_hidden_size=8)
    assert encoder.config.pooling == "mean"
    assert encoder.score.dense.out_features == 8


@pytest.mark.parametrize("pooling", ["last", "cls", "mean"])
def test_pooling_ignores_padding_side(qwen2_router, pooling):
    router, tokenizer = qwen2_router
    router.config.pooling = pooling
    try:
        right = router(**tokenizer(PROMPTS, padding=True, return_tensors="pt", padding_side="right")).scores
        left = router(**tokenizer(PROMPTS, padding=True, return_tensors="pt", padding_side="left")).scores
        alone = torch.cat([router(**tokenizer([p], return_tensors="pt")).scores for p in PROMPTS])
    finally:
        router.config.pooling = "last"
    torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(alone, right, atol=1e-5, rtol=1e-4)


def test_tokenizer_without_pad_token(tmp_path, tiny_tokenizer, tiny_qwen2_path):
    model = AutoModel.from_pretrained(tiny_qwen2_path)
    # eos present: it becomes the pad token, the vocabulary stays
    no_pad = AutoTokenizer.from_pretrained(tiny_qwen2_path)
    no_pad.pad_token = None
    model.save_pretrained(tmp_path / "eos")
    no_pad.save_pretrained(tmp_path / "eos")
    router, tokenizer = PersynRouterModel.from_backbone(str(tmp_path / "eos"), teachers=TEACHERS)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert router.backbone.get_input_embeddings().num_embeddings == len(tiny_tokenizer)
    # neither pad nor eos: a pad token is added and the embeddings grow by one row
    no_pad.eos_token = None
    model.save_pretrained(tmp_path / "bare")
    no_pad.save_pretrained(tmp_path / "bare")
    router, tokenizer = PersynRouterModel.from_backbone(str(tmp_path / "bare"), teachers=TEACHERS)
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.pad_token_id is not None
    assert router.backbone.get_input_embeddings().num_embeddings == len(tokenizer)
    teachers, _ = router.route(PROMPTS, tokenizer, batch_size=2, show_progress=False)
    assert len(teachers) == len(PROMPTS)


@pytest.mark.parametrize("backbone", ["qwen2", "llama", "bert"])
def test_save_and_load_with_automodel(tmp_path, backbone, tiny_qwen2_path, tiny_llama_path, tiny_bert_path):
    path = {"qwen2": tiny_qwen2_path, "llama": tiny_llama_path, "bert": tiny_bert_path}[backbone]
    router, tokenizer = PersynRouterModel.from_backbone(path, teachers=TEACHERS, head="mlp")
    router.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"model.safetensors", "configuration_persyn_router.py", "modeling_persyn_router.py"} <= files

    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is PersynRouterModel  # the local registration wins over the shipped code
    assert loaded.config.teachers == TEACHERS and loaded.config.head == "mlp"
    _, expected = router.route(PROMPTS, tokenizer, show_progress=False)
    _, scores = loaded.route(PROMPTS, AutoTokenizer.from_pretrained(tmp_path), show_progress=False)
    torch.testing.assert_close(scores, expected)
    trusted = AutoModel.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(trusted) is PersynRouterModel


def test_trust_remote_code_load_without_persyn_hf(tmp_path, qwen2_router):
    router, tokenizer = qwen2_router
    router.save_pretrained(tmp_path / "router")
    tokenizer.save_pretrained(tmp_path / "router")
    _, expected = router.route(PROMPTS, tokenizer, show_progress=False)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["persyn_hf"] = None  # persyn_hf is not installed in this process
        try:
            import persyn_hf
        except ImportError:
            pass
        else:
            raise SystemExit("persyn_hf was importable")
        from transformers import AutoModel, AutoTokenizer
        router = AutoModel.from_pretrained({str(tmp_path / "router")!r}, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained({str(tmp_path / "router")!r}, trust_remote_code=True)
        assert type(router).__module__.startswith("transformers_modules."), type(router).__module__
        _, scores = router.route({PROMPTS!r}, tokenizer, show_progress=False)
        print("SCORES", scores.tolist())
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("SCORES"))
    torch.testing.assert_close(torch.tensor(eval(line.removeprefix("SCORES "))), expected)


def test_route_batches_by_length_and_keeps_order(qwen2_router):
    router, tokenizer = qwen2_router
    teachers, scores = router.route(PROMPTS, tokenizer, batch_size=3, show_progress=False)
    one_by_one = torch.cat([router.route([p], tokenizer, show_progress=False)[1] for p in PROMPTS])
    torch.testing.assert_close(scores, one_by_one, atol=1e-5, rtol=1e-4)
    assert teachers == [TEACHERS[i] for i in scores.argmax(dim=-1).tolist()]
    top2, _ = router.route(PROMPTS, tokenizer, top_k=2, show_progress=False)
    assert top2 == [[TEACHERS[i] for i in row] for row in scores.topk(2, dim=-1).indices.tolist()]
    assert router.route([], tokenizer)[0] == []
    with pytest.raises(ValueError, match="`top_k` must be between 1 and 3"):
        router.route(PROMPTS, tokenizer, top_k=4)
