"""The statistics and figures of the demo's report: seeds, paired comparisons, router baselines, charts.

- `seed_summary`: mean ± sample standard deviation of a strategy's held-out accuracy over student seeds, every
  seed kept;
- `paired_difference`: accuracy of one strategy minus another's on the same problems and seeds, with a bootstrap
  confidence interval over seeds and problems;
- `router_baselines`: the Hit@k a router must beat: chance (a random teacher) and the majority class (always the
  teacher most often best on the router's training prompts);
- `rank_correlation`: Spearman's correlation, e.g. of the Eq. 2 reward with what the student gains;
- `line_chart`, `scatter_chart`: the PNG figures (α sweep, data-size curve, reward against student gain).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def seed_summary(accuracies: list[float]) -> dict:
    """`{"mean", "std", "seeds"}` of accuracies over seeds (sample std, n - 1 in the divisor; 0 for one seed)."""
    values = np.asarray(accuracies, dtype=np.float64)
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return {"mean": float(values.mean()), "std": float(std), "seeds": [float(v) for v in values]}


def paired_difference(
    ours: list[dict[str, bool]], theirs: list[dict[str, bool]], num_resamples: int = 2000, seed: int = 0
) -> dict:
    """Accuracy of `ours` minus `theirs`, paired by seed and problem, with a 95% bootstrap CI over seeds and problems.

    Each argument holds one `{prompt_id: correct}` per seed, seeds in the same order. Each of `num_resamples` draws
    resamples the seeds and the problems with replacement (so the interval holds the seed-to-seed variation as well
    as the problems') and takes the mean gap over the drawn seeds and problems.
    """
    problems = sorted(ours[0])
    a = np.array([[run[p] for p in problems] for run in ours], dtype=np.float64)
    b = np.array([[run[p] for p in problems] for run in theirs], dtype=np.float64)
    gaps = a - b  # [seeds, problems]
    rng = np.random.default_rng(seed)
    seeds = rng.integers(len(gaps), size=(num_resamples, len(gaps), 1))
    drawn = rng.integers(len(problems), size=(num_resamples, 1, len(problems)))
    means = gaps[seeds, drawn].mean(axis=(1, 2))
    low, high = np.percentile(means, [2.5, 97.5])
    return {"difference": float(gaps.mean()), "ci95": [float(low), float(high)], "num_problems": len(problems)}


def hit_rows(choices: np.ndarray, rewards: np.ndarray, k: int) -> np.ndarray:
    """Per prompt, whether the chosen teacher has a known reward and fewer than `k` teachers with a strictly higher
    one (ties never count against the choice, as in the router's own Hit@k)."""
    chosen = rewards[np.arange(len(rewards)), choices]
    higher = (np.where(np.isfinite(rewards), rewards, -np.inf) > chosen[:, None]).sum(axis=1)
    return (higher < k) & np.isfinite(chosen)


def router_baselines(train_rewards: np.ndarray, eval_rewards: np.ndarray, ks: tuple[int, ...] = (1, 3)) -> dict:
    """Hit@k on the router's held-out prompts of a random teacher (its expectation, among the teachers with a reward)
    and of the majority class (always the teacher that is best most often on the training prompts)."""
    n = eval_rewards.shape[1]
    best = np.nanargmax(np.where(np.isfinite(train_rewards), train_rewards, -np.inf), axis=1)
    majority = int(np.bincount(best, minlength=n).argmax())
    known = np.isfinite(eval_rewards)
    weights = known / known.sum(axis=1, keepdims=True)
    levels = {"majority_teacher": majority}
    for k in ks:
        hits = np.stack([hit_rows(np.full(len(eval_rewards), t), eval_rewards, k) for t in range(n)], axis=1)
        levels[f"chance_hit_at_{k}"] = float((hits * weights).sum(axis=1).mean())
        levels[f"majority_hit_at_{k}"] = float(hits[:, majority].mean())
    return levels


def rank_correlation(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation of `x` and `y` (ties get their mean rank)."""

    def ranks(values) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        order = values.argsort()
        ranked = np.empty(len(values))
        ranked[order] = np.arange(len(values))
        for value in np.unique(values):  # ties share their mean rank
            ranked[values == value] = ranked[values == value].mean()
        return ranked

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def line_chart(x: list, series: dict[str, list[float]], path: str | Path, title: str, xlabel: str, ylabel: str):
    """A PNG line chart of one or more series over `x` (error bars from `series[name + ' std']` when given)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 4.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, values in series.items():
        if name.endswith(" std"):
            continue
        axes.errorbar(x, values, yerr=series.get(f"{name} std"), marker="o", capsize=3, label=name)
    return _save(figure, axes, path, title, xlabel, ylabel)


def scatter_chart(points: list[dict], path: str | Path, title: str, xlabel: str, ylabel: str):
    """A PNG scatter of labelled points (`{"x", "y", "label", "group"}`), one colour per group."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for group in dict.fromkeys(point["group"] for point in points):
        members = [point for point in points if point["group"] == group]
        axes.scatter([p["x"] for p in members], [p["y"] for p in members], label=group)
        for point in members:
            axes.annotate(
                point["label"], (point["x"], point["y"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    return _save(figure, axes, path, title, xlabel, ylabel)


def _save(figure, axes, path: str | Path, title: str, xlabel: str, ylabel: str) -> Path:
    """Label, grid and legend the axes, then write the figure as a PNG."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=120)
    return Path(path)
