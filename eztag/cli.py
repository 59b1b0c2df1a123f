"""The `eztag` command line: one subcommand per stage, `run` for a whole pipeline, and helpers."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from eztag import __version__
from eztag.errors import EztagError

STAGE_HELP = {
    "ingest": "validate documents, labels and ground truth into Parquet",
    "encode": "embed labels and documents",
    "synonyms": "write, prune and refine label synonyms with an LLM",
    "index": "build the label index",
    "mine": "mine candidate labels per document for the judge",
    "judge": "score candidate labels with an LLM relevance judge",
    "distil": "train the encoder on the judge's scores, in rounds",
    "calibrate": "fit calibrated tag probabilities to the judge's verdicts",
    "tag": "retrieve and select the labels of every document",
    "evaluate": "score the tags against the ground truth",
}


def _pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", type=Path, help="pipeline TOML file")
    parser.add_argument("--run-dir", type=Path, help="run directory (default: [pipeline] run_dir or runs/NAME)")
    parser.add_argument("--force", action="append", default=[], metavar="STAGE", help="rerun STAGE even if up to date")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        dest="overrides",
        help="override a config value (TOML syntax), e.g. --set tag.k=10",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="eztag", description="Extreme zero-shot multi-label tagging.")
    parser.add_argument("--version", action="version", version=f"eztag {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a whole pipeline into a run directory",
        description="Run every stage of a pipeline; finished stages are skipped.",
    )
    _pipeline_arguments(run)
    for stage, text in STAGE_HELP.items():
        sub = commands.add_parser(
            stage, help=text, description=f"{text[0].upper()}{text[1:]} (runs unfinished upstream stages first)."
        )
        _pipeline_arguments(sub)
    compare = commands.add_parser(
        "compare",
        help="compare the metrics of several runs",
        description="Markdown table and recall@k plot for several evaluated runs.",
    )
    compare.add_argument("run_dirs", type=Path, nargs="+", help="run directories with a finished evaluate stage")
    compare.add_argument("--out", type=Path, required=True, help="folder for comparison.md and recall_at_k.png")
    data = commands.add_parser("data", help="build benchmark data sets", description="Build a benchmark data set.")
    datasets = data.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    debtags = datasets.add_parser(
        "debtags",
        help="Debian package descriptions tagged with debtags",
        description="Build the debtags benchmark from the Debian archive (needs apt-get).",
    )
    debtags.add_argument("--out", type=Path, required=True, help="output folder")
    debtags.add_argument("--lists-dir", type=Path, help="keep the downloaded apt lists here")
    debtags.add_argument("--sample-size", type=int, default=300, help="documents in the demo sample (from dev)")
    return parser


def _run_pipeline(args: argparse.Namespace) -> None:
    from eztag.pipeline import Pipeline
    from eztag.stages.evaluate import NAME as EVALUATE
    from eztag.stages.evaluate import markdown_table

    pipeline = Pipeline.load(args.pipeline, args.overrides)
    run_dir = args.run_dir or pipeline.default_run_dir()
    until = None if args.command == "run" else args.command
    summaries = pipeline.run(run_dir, until=until, force=args.force)
    if EVALUATE in summaries:
        print(markdown_table({run_dir.name: summaries[EVALUATE]["metrics"]}, pipeline.configs[EVALUATE].ks), end="")
    print(f"run directory: {run_dir}")


def _dispatch(args: argparse.Namespace) -> None:
    if args.command == "compare":
        from eztag.stages.evaluate import compare

        print(compare(args.run_dirs, args.out), end="")
    elif args.command == "data":
        from eztag.datasets import debtags

        stats = debtags.build(args.out, args.lists_dir, sample_size=args.sample_size)
        print(f"wrote {args.out}: {stats['splits']}")
    else:
        _run_pipeline(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        _dispatch(args)
    except EztagError as error:
        if args.debug or os.environ.get("EZTAG_DEBUG"):
            raise
        print(f"eztag: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eztag: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
