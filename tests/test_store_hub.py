"""The artifact store's Hub path, pushed to a fake Hub on 127.0.0.1 (`tests/hub_server.py`) from a real process.

The push runs in a subprocess because `huggingface_hub` reads `HF_ENDPOINT` and `HF_TOKEN` at import: the client
is configured exactly as a user's would be, through the environment.
"""

import io
import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from hub_server import FakeHub
from transformers import AutoModelForCausalLM

PUSH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from datasets import Dataset
    from huggingface_hub import DatasetCard, ModelCard
    from persyn_hf.cards import allocation_chart, existing_card_metadata
    from persyn_hf.testing.fixtures import build_causal_lm, build_tokenizer
    from persyn_hf.store import ArtifactStore
    from persyn_hf.teachers import TeacherSpec

    work = sys.argv[1]
    store = ArtifactStore(work + "/store", hub=True, private=True)
    tokenizer = build_tokenizer()
    model = build_causal_lm(tokenizer, arch="llama", seed=3)
    store.save_model("user/tiny-model", model, tokenizer, card=ModelCard("---\\nlicense: mit\\n---\\n# Tiny model card\\n"))

    card = DatasetCard("---\\npretty_name: Tiny data\\ntags:\\n- persyn\\n---\\n\\n# Tiny data card\\n")
    prompts = Dataset.from_dict({"prompt_id": ["p0", "p1"], "prompt": ["1 + 1?", "2 + 2?"]})
    store.save_dataset("user/tiny-data", prompts, card=card, config_name="prompts")
    generations = Dataset.from_dict({"prompt_id": ["p0"], "teacher": ["t"], "response": ["2"]})
    store.save_dataset("user/tiny-data", generations, config_name="generations")
    teachers = [TeacherSpec(name="t", model_id="org/t", family="F", size_b=1)]
    store.save_files("user/tiny-data", {"chart.png": allocation_chart({"t": 1}, teachers, work + "/chart.png", "x")})
    print(json.dumps(existing_card_metadata(store, "user/tiny-data")))
    """
)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """Push a model, a dataset (two configs, card first) and a chart to the fake Hub; returns what it saw."""
    work = tmp_path_factory.mktemp("push")
    (work / "push.py").write_text(PUSH_SCRIPT)
    token = f"hf_persyn_test_{secrets.token_hex(8)}"
    with FakeHub() as hub:
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.url,
            "HF_TOKEN": token,
            "HF_HOME": str(work / "hf_home"),
            "HF_HUB_DISABLE_XET": "1",  # binary files take the LFS route, which the fake Hub speaks
            "HF_HUB_VERBOSITY": "debug",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_OFFLINE": "0",  # the suite runs offline; this process talks to the local fake Hub only
        }
        result = subprocess.run(
            [sys.executable, str(work / "push.py"), str(work)],
            env=env,
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent.parent,
            timeout=300,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    return {"hub": hub, "token": token, "work": work, "result": result}


def test_dataset_card_is_committed_before_the_data(pushed):
    repo = pushed["hub"].repos["dataset", "user/tiny-data"]
    added = [sorted(commit.added) for commit in repo.commits]
    assert added == [
        ["README.md"],
        ["README.md", "prompts/train-00000-of-00001.parquet"],
        ["README.md", "generations/train-00000-of-00001.parquet"],
        ["chart.png"],
    ]
    assert b"# Tiny data card" in repo.commits[0].added["README.md"]
    # `push_to_hub` merged each config into the card pushed first, instead of replacing it.
    _, header, body = repo.files["README.md"].decode().split("---", 2)
    metadata = yaml.safe_load(header)
    assert metadata["pretty_name"] == "Tiny data" and "# Tiny data card" in body
    assert sorted(c["config_name"] for c in metadata["configs"]) == ["generations", "prompts"]
    table = pq.read_table(io.BytesIO(repo.files["prompts/train-00000-of-00001.parquet"]))
    assert table.to_pydict() == {"prompt_id": ["p0", "p1"], "prompt": ["1 + 1?", "2 + 2?"]}
    assert repo.files["chart.png"][:8] == b"\x89PNG\r\n\x1a\n"
    existing = json.loads(pushed["result"].stdout.strip().splitlines()[-1])  # read back from the Hub's card
    assert existing["pretty_name"] == "Tiny data" and len(existing["configs"]) == 2


def test_model_is_pushed_in_one_loadable_commit(pushed, tmp_path):
    repo = pushed["hub"].repos["model", "user/tiny-model"]
    assert len(repo.commits) == 1
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(repo.files)
    assert b"# Tiny model card" in repo.files["README.md"]
    for path, content in repo.files.items():
        (tmp_path / path).write_bytes(content)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert model.config.model_type == "llama"


def test_repos_are_created_private(pushed):
    creates = [json.loads(r.body) for r in pushed["hub"].requests if r.path == "/api/repos/create"]
    assert {(c["type"], c["name"]) for c in creates} == {("model", "tiny-model"), ("dataset", "tiny-data")}
    assert all(c["visibility"] == "private" for c in creates)
    assert all(repo.private for repo in pushed["hub"].repos.values())


def test_token_reaches_the_hub_but_no_file_or_log(pushed):
    token = pushed["token"]
    writes = [r for r in pushed["hub"].requests if r.path.startswith("/api/") and r.method == "POST"]
    writes = [r for r in writes if "/commit/" in r.path or "/preupload/" in r.path or r.path == "/api/repos/create"]
    assert writes and all(r.headers.get("authorization") == f"Bearer {token}" for r in writes)

    result = pushed["result"]
    assert token not in result.stdout and token not in result.stderr  # the client logged at debug level
    written = [path for path in pushed["work"].rglob("*") if path.is_file()]  # HF_HOME and the store root too
    assert any(path.name == "README.md" for path in written)  # the card read back was cached there
    assert all(token.encode() not in path.read_bytes() for path in written)
    committed = [content for repo in pushed["hub"].repos.values() for content in repo.files.values()]
    assert all(token.encode() not in content for content in committed)
