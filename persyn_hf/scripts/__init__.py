"""Command-line verbs: one module per verb, each with `make_parser()` and `main(...)`."""

# verb -> (module, one-line help). Modules are imported only when their verb runs.
VERBS = {
    "generate": ("persyn_hf.scripts.generate", "Teachers answer prompts: every teacher (parallel) or the routed one."),
    "score": ("persyn_hf.scripts.score", "Score responses: quality, student learnability and their mix (Eq. 1-2)."),
    "select": (
        "persyn_hf.scripts.select",
        "Assign prompts to teachers with a strategy (persyn, oracle, strong, ...).",
    ),
    "train-router": ("persyn_hf.scripts.train_router", "Train the PerSyn router with the Bradley-Terry loss."),
    "route": ("persyn_hf.scripts.route", "Route a prompt set to teachers with a trained router."),
    "build": ("persyn_hf.scripts.build", "Build a dataset: magpie_zoo, persyn_math or personalized."),
    "sft": ("persyn_hf.scripts.sft", "Fine-tune the student on a personalized dataset with TRL."),
    "eval": ("persyn_hf.scripts.eval", "Evaluate a student with lm-eval."),
    "demo": ("persyn_hf.scripts.demo", "Run the whole method offline on the embedded demo world."),
}
