"""Judging: score (document, label) candidates with the configured LLM judge, through a resumable cache of Parquet
shards (the judge stage's work; distil judges each round's new candidates through the same cache).

Every judgment is cached under sha256(model id, template name@version, domain, truncated document, label,
description). A run loads every shard, judges only the pairs with no stored score (each once), and writes each
scored batch as a new shard atomically: a killed run loses at most the batch in flight, and a rerun redoes nothing
stored. Failures are kept in the shards for the record but are judged again by the next run.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm

from eztag import runstate
from eztag.artifacts import cache_location, read_shards, write_shard
from eztag.engines import Engine, LocalEngine
from eztag.errors import EztagError
from eztag.judges import JUDGES, Judge, Judgment
from eztag.models import model_files
from eztag.prompts import Pair, PromptTemplate
from eztag.templates import DOCUMENT_COLUMNS, LABEL_COLUMNS, check_template, render_rows

# judgments.parquet's verdict as a probability on both scales: P(yes), or P(grade >= 2) on the graded scale (its
# `score` is an expected grade there)
P_YES = (1 / (1 + (-pl.col("log_odds")).exp())).alias("p_yes")
# cache shards: "p_yes" holds Judgment.score (the on-disk name is kept so existing caches stay readable)
SHARD_SCHEMA: dict[str, Any] = {"key": pl.String, "p_yes": pl.Float64, "log_odds": pl.Float64, "failure": pl.String}
P_YES_THRESHOLDS = (0.1, 0.25, 0.5, 0.75, 0.9)
# a judge saying yes to fewer or more of its pairs than these hardly separates its candidates (warned, label-free)
YES_RATE_BOUNDS = (0.05, 0.9)
YES_RATE_MIN_PAIRS = 50  # fewer judged pairs: no warning
LOG_ODDS_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclasses.dataclass
class JudgeConfig:
    """Which judge, which prompt, and how the work is cut into cached shards.

    `options` are keyword options of the backend, e.g. device, precision, scoring, token_budget, batch_size
    (transformers); base_url, tokenizer, concurrency, timeout, max_attempts (openai); tensor_parallel_size (vllm).
    """

    backend: str = "transformers"
    """`transformers` (in-process model, P(yes) from the yes/no token log-probabilities), `openai` (any
    OpenAI-compatible server), `vllm` (in-process `vllm.LLM`) or `cross-encoder` (a sentence-transformers CrossEncoder;
    sigmoid of its logit)."""
    model: str = "default"
    """A named judge (`smollm2-135m`, also `default`; `qwen2.5-coder-1.5b`), a local folder (relative to the pipeline
    file's folder), a `.gguf` file or a hub id."""
    template: str = "yes-no"
    """Prompt template: `yes-no`, `yes-no-short` (no domain, no description line) or `graded` (0-3; the score is the
    expected grade / 3); its name@version is part of the cache key."""
    domain: str = "document"
    """What a document is, filled into the prompt ("Does the tag apply to this {domain}?"); part of the cache key."""
    document_template: str = "{text}"
    """What the prompt's {document} shows: a `{field}` template over `{doc_id}`, `{title}` and `{text}`."""
    label_template: str = "{text}"
    """What the prompt's {label} shows: a `{field}` template over `{label_id}`, `{text}`, `{description}` and
    `{facet}`."""
    description_template: str = "{description}"
    """What the prompt's "Tag group" line shows, a template over the same label fields; the line is left out where it
    renders empty (`""` drops it for every label)."""
    max_document_tokens: int = 256
    """Documents are cut to this many tokens of the judge's tokenizer before prompting (the cut text is part of the
    cache key)."""
    shard_size: int = 256
    """Pairs per scoring call and per cache shard (the unit of resume and of the engine's work)."""
    cache_dir: str | None = None
    """The judge cache folder (relative to the pipeline file's folder), which runs may share; `None`:
    RUN_DIR/cache/judge, outside the stage folder, so a changed judge config keeps every judgment already made."""
    options: dict = dataclasses.field(default_factory=dict)
    """`[judge.options]`, the backend's own keyword options (an unknown one is an error; see the class docstring and
    README "LLM relevance judge")."""

    def __post_init__(self) -> None:
        self.options = JUDGES.check_options(self.backend, self.options, field="judge.options")  # checked once, here
        if self.max_document_tokens < 1 or self.shard_size < 1:
            raise ValueError("max_document_tokens and shard_size must be positive")
        check_template(self.document_template, DOCUMENT_COLUMNS, where="judge.document_template")
        check_template(self.label_template, LABEL_COLUMNS, where="judge.label_template")
        check_template(self.description_template, LABEL_COLUMNS, where="judge.description_template")
        try:
            PromptTemplate.named(self.template, self.domain)
        except EztagError as error:
            raise ValueError(error.message) from None


def pair_key(model_id: str, template: PromptTemplate, pair: Pair) -> str:
    """The cache key of one judgment."""
    fields = [model_id, template.key, template.domain, pair.document, pair.label, pair.description]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()


def judge_cache(config: JudgeConfig, judge_dir: Path) -> Path:
    """The judge cache folder: `cache_dir`, or RUN_DIR/cache/judge."""
    return cache_location(config.cache_dir, judge_dir, "judge", "judge.cache_dir")


def load_cache(cache_dir: Path) -> dict[str, tuple[float | None, float | None]]:
    """key -> (score, log_odds) of every stored successful judgment."""
    stored = read_shards(cache_dir, SHARD_SCHEMA).filter(pl.col("failure").is_null())
    return {key: (score, log_odds) for key, score, log_odds in stored.select("key", "p_yes", "log_odds").iter_rows()}


def build_judge(config: JudgeConfig) -> Judge:
    """The configured judge backend; built once per process for the same backend, model (and model files),
    prompt and options: a vLLM engine or a loaded model is kept for the next stage or round that asks for it,
    until `release_judge` or another judge is built. The judge kept before is released first: two engines of a 1.5B
    model need not fit in memory together (a sweep over judges builds one after another)."""
    files = tuple(model_files(Path(config.model)))  # a model folder retrained in place is a new judge
    key = (config.backend, config.model, files, config.template, config.domain, tuple(sorted(config.options.items())))
    if key not in _KEPT:
        release_judge()
        _KEPT[key] = JUDGES.construct(
            config.backend, config.model, PromptTemplate.named(config.template, config.domain), **config.options
        )
    return _KEPT[key]


_KEPT: dict[tuple[Any, ...], Judge] = {}


def release_judge() -> None:
    """Close and drop the judge `build_judge` keeps (a vLLM engine's processes end), and collect it now."""
    for judge in _KEPT.values():
        judge.close()
    _KEPT.clear()
    gc.collect()


def judge_worker(config: JudgeConfig, model_id: str) -> Callable[[list[Pair]], tuple[list[Judgment], float]]:
    """An engine worker: (judgments, seconds scoring) of a shard of pairs, by the judge checked to be the model the
    driver keyed the cache with, loaded before the first shard."""
    judge = build_judge(config)
    if judge.model_id != model_id:
        raise EztagError(
            f"the judge on this worker is '{judge.model_id}' but the driver keys the cache with '{model_id}' "
            "(another device or dtype was picked there): set judge.options device and dtype/precision explicitly",
            field="judge.options",
        )
    judge.load()

    def timed_score(pairs: list[Pair]) -> tuple[list[Judgment], float]:
        started = time.perf_counter()
        judgments = judge.score(pairs)
        return judgments, time.perf_counter() - started

    return timed_score


def candidate_pairs(config: JudgeConfig, judge: Judge, ingest_dir: Path, candidates: pl.DataFrame) -> list[Pair]:
    """One Pair per candidate row, documents cut to `max_document_tokens` by the judge's tokenizer."""
    documents = pl.read_parquet(ingest_dir / "documents.parquet").filter(
        pl.col("doc_id").is_in(candidates["doc_id"].unique().to_list())
    )
    truncated = judge.truncate(render_rows(documents, config.document_template), config.max_document_tokens)
    document_text = dict(zip(documents["doc_id"].to_list(), truncated, strict=True))
    labels = pl.read_parquet(ingest_dir / "labels.parquet")
    label_text = dict(
        zip(
            labels["label_id"].to_list(),
            zip(
                render_rows(labels, config.label_template),
                render_rows(labels, config.description_template),
                strict=True,
            ),
            strict=True,
        )
    )
    return [
        Pair(document_text[doc_id], *label_text[label_id])
        for doc_id, label_id in candidates.select("doc_id", "label_id").iter_rows()
    ]


def judge_candidates(
    config: JudgeConfig,
    judge: Judge,
    ingest_dir: Path,
    candidates: pl.DataFrame,
    cache_dir: Path,
    engine: Engine | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """(judgments, report) of mined candidates; only pairs with no stored score in `cache_dir` are judged, shard by
    shard on `engine` (this process by default), each shard written to the cache as it comes back."""
    engine = engine or LocalEngine()
    pairs = candidate_pairs(config, judge, ingest_dir, candidates)
    keys = [pair_key(judge.model_id, judge.template, pair) for pair in pairs]
    cache_dir.mkdir(parents=True, exist_ok=True)
    stored = load_cache(cache_dir)
    todo = {key: pair for key, pair in zip(keys, pairs, strict=True) if key not in stored}
    failures: dict[str, str] = {}
    todo_items = list(todo.items())
    shards = [todo_items[start : start + config.shard_size] for start in range(0, len(todo_items), config.shard_size)]
    make_worker = functools.partial(judge_worker, config, judge.model_id)
    units = [[pair for _, pair in shard] for shard in shards]
    scoring_seconds, done = 0.0, 0
    with tqdm(total=len(todo_items), desc="judge", unit="pair", disable=None) as bar:
        for position, (scored, seconds) in engine.score(judge, make_worker, units):
            scoring_seconds += seconds
            batch = shards[position]
            shard = pl.DataFrame(
                {
                    "key": [key for key, _ in batch],
                    "p_yes": [judgment.score for judgment in scored],
                    "log_odds": [judgment.log_odds for judgment in scored],
                    "failure": [judgment.failure for judgment in scored],
                },
                schema=SHARD_SCHEMA,
            )
            write_shard(cache_dir, shard)
            for (key, _), judgment in zip(batch, scored, strict=True):
                if judgment.failure is None:
                    stored[key] = (judgment.score, judgment.log_odds)
                else:
                    failures[key] = judgment.failure
            done += len(batch)
            bar.update(len(batch))
            runstate.progress(done, len(todo_items), "pairs to judge")
    judgments = _judgments_frame(candidates, keys, stored, failures)
    report = judgment_report(
        judgments, unique_pairs=len(set(keys)), judged_now=len(todo_items), seconds=scoring_seconds
    )
    return judgments, report


def _judgments_frame(
    candidates: pl.DataFrame,
    keys: list[str],
    stored: dict[str, tuple[float | None, float | None]],
    failures: dict[str, str],
) -> pl.DataFrame:
    scored = [stored.get(key, (None, None)) for key in keys]
    return (
        candidates.with_columns(
            score=pl.Series([score for score, _ in scored], dtype=pl.Float64),
            log_odds=pl.Series([log_odds for _, log_odds in scored], dtype=pl.Float64),
            failure=pl.Series([None if key in stored else failures.get(key) for key in keys], dtype=pl.String),
        )
        .with_columns(rank_in_doc=pl.col("log_odds").rank("ordinal", descending=True).over("doc_id").cast(pl.Int32))
        .select(
            "doc_id",
            "label_id",
            "score",
            "log_odds",
            "rank_in_doc",
            "source",
            "student_score",
            "student_rank",
            "failure",
        )
    )


def judgment_report(judgments: pl.DataFrame, *, unique_pairs: int, judged_now: int, seconds: float) -> dict[str, Any]:
    """Counts, failures by reason, speed and the calibration aid (threshold fractions, log-odds quantiles)."""
    scored = judgments.filter(pl.col("failure").is_null())
    reasons = Counter(failure.split(":")[0] for failure in judgments["failure"].drop_nulls())
    p_yes, log_odds = scored["score"].to_numpy(), scored["log_odds"].to_numpy()
    positives_per_doc = scored.group_by("doc_id").agg(pl.col("score").ge(0.5).sum())["score"].mean()
    return {
        "pairs": judgments.height,
        "unique_pairs": unique_pairs,
        "cache_hits": unique_pairs - judged_now,
        "judged_now": judged_now,
        "failures": int(judgments["failure"].is_not_null().sum()),
        "failures_by_reason": dict(reasons),
        "scoring_seconds": round(seconds, 3),
        "pairs_per_second": round(judged_now / seconds, 2) if seconds else None,
        "fraction_p_yes_at_least": {str(t): round(float(np.mean(p_yes >= t)), 4) for t in P_YES_THRESHOLDS}
        if len(p_yes)
        else {},
        "log_odds_quantiles": {str(q): round(float(np.quantile(log_odds, q)), 4) for q in LOG_ODDS_QUANTILES}
        if len(log_odds)
        else {},
        "mean_labels_per_doc_p_yes_0.5": round(float(positives_per_doc or 0), 3),  # type: ignore[arg-type]
        "yes_rate": round(float(np.mean(log_odds >= 0)), 4) if len(log_odds) else None,
    }


def yes_rate_warning(yes_rate: float | None, pairs: int) -> str | None:
    """A warning when the judge says yes (P(yes) >= 0.5; P(grade >= 2) when graded) to almost all of `pairs` judged
    pairs or almost none, else None."""
    low, high = YES_RATE_BOUNDS
    if yes_rate is None or pairs < YES_RATE_MIN_PAIRS or low < yes_rate < high:
        return None
    return (
        f"the judge says yes to {yes_rate:.0%} of {pairs} pairs: its verdicts hardly separate the candidates, and tag "
        "counts calibrated on them will be off"
    )
