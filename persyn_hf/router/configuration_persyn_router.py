"""Configuration of the PerSyn router (self-contained: shipped next to the weights as remote code)."""

from transformers import AutoConfig, PretrainedConfig

POOLINGS = ("last", "cls", "mean")
HEADS = ("linear", "mlp")

# Encoder architectures (bidirectional attention), which pool with `mean` by default; every other backbone
# is taken as a decoder and pools its last non-pad token.
ENCODER_MODEL_TYPES = (
    "albert",
    "bert",
    "camembert",
    "deberta",
    "deberta-v2",
    "distilbert",
    "electra",
    "ernie",
    "mpnet",
    "modernbert",
    "roberta",
    "xlm-roberta",
    "xlm-roberta-xl",
)


class PersynRouterConfig(PretrainedConfig):
    r"""
    Configuration of a [`PersynRouterModel`]: a backbone (any `AutoModel` architecture) and a score head with one
    output per teacher, trained with the Bradley-Terry loss of PerSyn (Eq. 3-4).

    Args:
        teachers (`list[str]`):
            Ordered teacher names: output `i` of the router scores teacher `teachers[i]`, always.
        backbone_config (`dict` or `PretrainedConfig`):
            Configuration of the backbone, e.g. a Qwen2, Llama, BERT or MiniLM config. A `dict` needs `model_type`.
        pooling (`str`, *optional*):
            How a prompt's hidden states become one vector: `"last"` (last non-pad token, for decoders), `"cls"`
            (first token, for encoders) or `"mean"` (mean over non-pad tokens). Defaults to `"mean"` for encoder
            architectures and `"last"` otherwise.
        head (`str`, *optional*, defaults to `"linear"`):
            Score head: `"linear"` (one linear layer) or `"mlp"` (one hidden layer with GELU, then linear).
        head_hidden_size (`int`, *optional*):
            Width of the hidden layer of the `"mlp"` head. Defaults to the backbone's hidden size.
        dropout (`float`, *optional*, defaults to `0.0`):
            Dropout on the pooled vector (and on the hidden layer of the `"mlp"` head).
        max_prompt_length (`int`, *optional*, defaults to `1024`):
            Prompts are truncated to their first `max_prompt_length` tokens, in training and routing alike.

    Example:

    ```python
    >>> from transformers import AutoConfig
    >>> from persyn_hf.router import PersynRouterConfig

    >>> config = PersynRouterConfig(teachers=["small", "large"], backbone_config=AutoConfig.for_model("qwen2"))
    >>> config.pooling
    'last'
    ```
    """

    model_type = "persyn-router"

    def __init__(
        self,
        teachers: list[str] | None = None,
        backbone_config: dict | PretrainedConfig | None = None,
        pooling: str | None = None,
        head: str = "linear",
        head_hidden_size: int | None = None,
        dropout: float = 0.0,
        max_prompt_length: int = 1024,
        **kwargs,
    ):
        if teachers is not None:
            teachers = list(teachers)
            if len(teachers) < 2:
                raise ValueError(f"A router needs at least 2 teachers to choose between, got `teachers={teachers}`.")
            duplicates = sorted({name for name in teachers if teachers.count(name) > 1})
            if duplicates:
                raise ValueError(f"`teachers` must be unique names, but {duplicates} appear more than once.")
        if isinstance(backbone_config, dict):
            if "model_type" not in backbone_config:
                raise ValueError("`backbone_config` given as a dict needs a `model_type` key, e.g. 'qwen2' or 'bert'.")
            backbone_config = dict(backbone_config)
            backbone_config = AutoConfig.for_model(backbone_config.pop("model_type"), **backbone_config)
        if pooling is None and backbone_config is not None:
            pooling = "mean" if backbone_config.model_type in ENCODER_MODEL_TYPES else "last"
        if pooling is not None and pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {list(POOLINGS)}, got {pooling!r}.")
        if head not in HEADS:
            raise ValueError(f"`head` must be one of {list(HEADS)}, got {head!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout}.")
        if max_prompt_length < 1:
            raise ValueError(f"`max_prompt_length` must be a positive number of tokens, got {max_prompt_length}.")
        self.teachers = teachers
        self.backbone_config = backbone_config
        self.pooling = pooling
        self.head = head
        self.head_hidden_size = head_hidden_size
        self.dropout = dropout
        self.max_prompt_length = max_prompt_length
        super().__init__(**kwargs)

    @property
    def num_teachers(self) -> int:
        return len(self.teachers or [])
