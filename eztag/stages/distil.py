"""Distil: train the bi-encoder on the judge's scores in rounds, each stopped or kept by a label-free score.

Round r trains the student of round r-1 (round 0: the encode stage's model) on the judged candidates of the
training documents, re-mines their candidates with the new student (the mine stage's `mine`), and judges the
pairs the shared judge cache does not hold yet (the judge stage's `judge_candidates`), within `[mine] budget` when
there is one (the documents where the student is least sure first). A held-out part of the mined documents is
never trained on: the judge's verdict on each student's top-1 and top-5 labels there (LLM-P@1, LLM-P@5) is the
label-free score; the rounds stop when it no longer improves, and the best round's model is kept. No ground truth
is read. The kept model then encodes the labels and documents into `encode/` and is indexed into `index/`, which
the tag stage uses when `distil` is in the pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from eztag.artifacts import atomic_dir, write_json, write_parquet, write_text
from eztag.distillation.config import DistilConfig
from eztag.distillation.rounds import Rounds
from eztag.distillation.selection import agreement, label_free_scores, rounds_markdown, selection_score
from eztag.distillation.training import train
from eztag.embeddings import EmbeddingStore, gather_rows
from eztag.encoding import write_embeddings
from eztag.errors import EztagError
from eztag.indexing import write_index
from eztag.mining import MineConfig
from eztag.models import resolve_encoder
from eztag.stages.contract import StageInputs, no_fingerprint

log = logging.getLogger(__name__)

NAME = "distil"
HELP = "train the encoder on the judge's scores, in rounds"
REQUIRES = ("ingest", "encode", "index", "mine", "judge")
OPTIONAL: tuple[str, ...] = ()
CONFLICTS = {"synonyms": "distil re-encodes and re-indexes the labels without their synonym vectors"}
PATH_FIELDS: tuple[str, ...] = ()
fingerprint = no_fingerprint
ENCODE_DIR, INDEX_DIR = "encode", "index"  # the kept student's encode and index outputs, inside distil's folder
HELD_OUT_DIR = "round-0-held-out"  # under a budget: the held-out top-5 pairs the judge stage left unjudged
MODEL_DIR = "model"  # the kept student (a sentence-transformers folder), inside distil's folder
# the stages after distil tag, calibrate and identify with the kept student; calibrate also reads the rounds' judgments
PROVIDES = {"encode": ENCODE_DIR, "index": INDEX_DIR, "encoder": MODEL_DIR, "round_judgments": "rounds"}
Config = DistilConfig


def check_pipeline(config: DistilConfig, configs: Mapping[str, Any]) -> None:
    """A judging budget's depth leaves each budgeted document enough judged candidates for a training row."""
    mine: MineConfig = configs["mine"]
    if mine.budget is not None and mine.budget_depth is not None and mine.budget_depth < config.list_size:
        raise EztagError(
            f"budget_depth {mine.budget_depth} is below distil.list_size {config.list_size}: "
            "no budgeted document would make a training row",
            field="mine.budget_depth",
        )


def run(config: DistilConfig, out_dir: Path, inputs: StageInputs) -> dict[str, Any]:
    """Train round by round into rounds/round-N/, keep the best in model/, then write encode/ and index/."""
    encode_dir, judge_dir = inputs["encode"], inputs["judge"]
    upstream = (inputs.config("encode"), inputs.config("index"), inputs.config("mine"), inputs.config("judge"))
    state = Rounds(config, inputs["ingest"], judge_dir, upstream, inputs.engine)
    judged = pl.read_parquet(judge_dir / "judgments.parquet")
    judgments, added, added_report = state.held_out_top(judged, encode_dir, inputs["index"])
    if added is not None:  # beside the rounds' judgments, where calibrate and the pair counts find them
        write_parquet(out_dir / "rounds" / HELD_OUT_DIR / "judgments.parquet", added)
    reference = state.reference(judgments, state.holdout)
    base_vectors = gather_rows(EmbeddingStore(encode_dir / "documents"), state.doc_rows)
    base_labels = EmbeddingStore(encode_dir / "labels").load()
    base = resolve_encoder(state.encode_config.model)
    history = [
        {
            "round": 0,
            "model": base,
            "label_free": label_free_scores(judgments, state.holdout, config.verdict_threshold),
            "agreement": agreement(reference, state.doc_row, base_vectors, base_labels),
            "judge": json.loads((judge_dir / "report.json").read_text()),
            "held_out_top_up": added_report,
        }
    ]
    best = 0
    for number in range(1, config.rounds + 1):
        round_dir = out_dir / "rounds" / f"round-{number}"
        report_path = round_dir / "report.json"
        if report_path.exists():
            report = json.loads(report_path.read_text())
            judgments = pl.read_parquet(round_dir / "judgments.parquet")
        else:
            columns, data = state.training_set(judgments)
            report = {"round": number, "model": str(round_dir / "model"), "training_set": data}
            report["training"] = train(history[-1]["model"], columns, config, round_dir)
            candidates, doc_vectors, label_vectors = state.mine(round_dir / "model", round_dir)
            judgments, report["judge"] = state.judge_pairs(candidates)
            write_parquet(round_dir / "judgments.parquet", judgments)
            report["label_free"] = label_free_scores(judgments, state.holdout, config.verdict_threshold)
            report["agreement"] = agreement(reference, state.doc_row, doc_vectors, label_vectors)
            write_json(report_path, report)
            shutil.rmtree(round_dir / "checkpoints", ignore_errors=True)
        history.append(report)
        improvement = selection_score(report["label_free"]) - selection_score(history[best]["label_free"])
        log.info(f"[distil] round {number}: {report['label_free']}, agreement {report['agreement']}")
        if improvement <= config.min_improvement:
            break
        best = number
    return _finish(state, history, best, out_dir, inputs)


def _finish(state: Rounds, history: list[dict], best: int, out_dir: Path, inputs: StageInputs) -> dict[str, Any]:
    """Save the kept model, encode and index with it, and write report.json."""
    from sentence_transformers import SentenceTransformer

    if not (out_dir / MODEL_DIR).is_dir():
        with atomic_dir(out_dir / MODEL_DIR) as tmp:
            SentenceTransformer(history[best]["model"], device="cpu").save(str(tmp))
    encode_config = dataclasses.replace(state.encode_config, model=str(out_dir / MODEL_DIR))
    write_embeddings(encode_config, inputs["ingest"], out_dir / ENCODE_DIR, inputs.engine)
    write_index(state.index_config, inputs["ingest"], out_dir / ENCODE_DIR, None, out_dir / INDEX_DIR)
    rounds = history[1:]
    judged = [inputs["judge"] / "judgments.parquet", out_dir / "rounds" / HELD_OUT_DIR / "judgments.parquet"]
    judged += [out_dir / "rounds" / f"round-{report['round']}" / "judgments.parquet" for report in rounds]
    pairs = [pl.read_parquet(path, columns=["doc_id", "label_id"]) for path in judged if path.exists()]
    summary = {
        "best_round": best,
        "rounds_run": len(rounds),
        "label_free": {str(report["round"]): report["label_free"] for report in history},
        "agreement": {str(report["round"]): report["agreement"] for report in history},
        "pairs_judged": history[0]["judge"]["judged_now"]
        + (history[0]["held_out_top_up"] or {"judged_now": 0})["judged_now"]
        + sum(report["judge"]["judged_now"] for report in rounds),
        "distinct_pairs": pl.concat(pairs).unique().height,
        "judge_seconds": round(
            history[0]["judge"]["scoring_seconds"] + sum(report["judge"]["scoring_seconds"] for report in rounds), 2
        ),
        "training_seconds": round(sum(report["training"]["seconds"] for report in rounds), 2),
        "holdout_documents": len(state.holdout),
        "training_documents": len(state.doc_ids) - len(state.holdout),
        "rounds": history,
    }
    write_json(out_dir / "report.json", summary)
    write_text(out_dir / "rounds.md", rounds_markdown(history, best, summary["distinct_pairs"]))
    return {key: value for key, value in summary.items() if key != "rounds"}
