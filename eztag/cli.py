"""The `eztag` command line: one subcommand per stage, `run` for a whole pipeline, and helpers."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import typing
from pathlib import Path

from eztag import __version__, runstate
from eztag.comparison import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES
from eztag.engines import EngineName
from eztag.errors import EztagError
from eztag.stages import STAGES


def _pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", type=Path, help="pipeline TOML file")
    parser.add_argument("--run-dir", type=Path, help="run directory (default: [pipeline] run_dir or runs/NAME)")
    parser.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="STAGE",
        help="rerun STAGE and the stages that depend on it, even if up to date",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        dest="overrides",
        help="override a config value (TOML syntax), e.g. --set tag.k=10",
    )
    parser.add_argument(
        "--engine",
        choices=typing.get_args(EngineName),
        help="where encode, judge and tag run (default: [pipeline] engine, else local); ray: see [pipeline.ray]",
    )
    parser.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=-1.0,
        metavar="SECONDS",
        help="if another run holds the run directory, wait for it (at most SECONDS) instead of failing",
    )


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="eztag", description="Extreme zero-shot multi-label tagging.")
    parser.add_argument("--version", action="version", version=f"eztag {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true", help="also print debug messages")
    loudness.add_argument("-q", "--quiet", action="store_true", help="print only warnings and results")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a whole pipeline into a run directory",
        description="Run every stage of a pipeline; finished stages are skipped.",
    )
    _pipeline_arguments(run)
    for stage in STAGES.values():
        text = stage.HELP
        sub = commands.add_parser(
            stage.NAME, help=text, description=f"{text[0].upper()}{text[1:]} (runs unfinished upstream stages first)."
        )
        _pipeline_arguments(sub)
    compare = commands.add_parser(
        "compare",
        help="compare the metrics of several runs",
        description="Markdown table, recall@k plot and an HTML page with several evaluated runs side by side, and "
        "paired bootstrap intervals of each run's metric differences from the first run.",
    )
    compare.add_argument("run_dirs", type=Path, nargs="+", help="run directories with a finished evaluate stage")
    compare.add_argument(
        "--out", type=Path, required=True, help="folder for comparison.md, recall_at_k.png and comparison.html"
    )
    compare.add_argument(
        "--resamples",
        type=_positive_int,
        default=DEFAULT_RESAMPLES,
        metavar="N",
        help=f"bootstrap resamples for the intervals against the first run (default {DEFAULT_RESAMPLES})",
    )
    compare.add_argument(
        "--confidence",
        type=_confidence,
        default=DEFAULT_CONFIDENCE,
        metavar="LEVEL",
        help=f"confidence level of the intervals, between 0 and 1 (default {DEFAULT_CONFIDENCE})",
    )
    report = commands.add_parser(
        "report",
        help="write a run's self-contained HTML report",
        description="One HTML page (no network needed to view it) with a run's stages, metrics, labels, judge, "
        "distillation rounds and sample documents. Reads the run directory only.",
    )
    report.add_argument("run_dir", type=Path, help="run directory")
    report.add_argument("--out", type=Path, help="HTML file to write (default: RUN_DIR-report.html beside RUN_DIR)")
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
    debtags.add_argument(
        "--bare-labels-only",
        action="store_true",
        help="only write labels-bare.jsonl (tag names' own words, no descriptions) from OUT/labels.jsonl; offline",
    )
    return parser


def _run_pipeline(args: argparse.Namespace) -> None:
    from eztag.artifacts import RunDir
    from eztag.pipeline import Pipeline
    from eztag.runlock import run_lock
    from eztag.stages.evaluate import NAME as EVALUATE
    from eztag.stages.evaluate import markdown_table

    engine = [f'pipeline.engine="{args.engine}"'] if args.engine else []
    pipeline = Pipeline.load(args.pipeline, [*args.overrides, *engine])
    run_dir = args.run_dir or pipeline.default_run_dir()
    until = None if args.command == "run" else args.command
    with run_lock(run_dir, args.wait):
        summaries = pipeline.run(run_dir, until=until, force=args.force)
        wanted = args.command in ("run", EVALUATE) and EVALUATE in pipeline.configs
        if wanted and RunDir(run_dir).is_finished(EVALUATE, pipeline.stage_hash(EVALUATE)):
            metrics = json.loads((run_dir / EVALUATE / "metrics.json").read_text(encoding="utf-8"))
            print(markdown_table({run_dir.name: metrics["metrics"]}, metrics["ks"]), end="")
            page = run_dir / "report.html"
            if EVALUATE in summaries or not page.exists():
                from eztag.report import write_report

                print(f"report: {write_report(run_dir, page)}")
    print(f"run directory: {run_dir}")


def _dispatch(args: argparse.Namespace) -> None:
    if args.command == "compare":
        from eztag.report import write_comparison

        print(write_comparison(args.run_dirs, args.out, args.resamples, args.confidence), end="")
        print(f"comparison: {args.out / 'comparison.html'}")
    elif args.command == "report":
        from eztag.report import write_report

        out = args.out or args.run_dir.resolve().with_name(f"{args.run_dir.resolve().name}-report.html")
        print(f"report: {write_report(args.run_dir, out)}")
    elif args.command == "data":
        from eztag.datasets import debtags

        if args.bare_labels_only:
            print(f"wrote {debtags.write_bare_labels(args.out)}")
        else:
            stats = debtags.build(args.out, args.lists_dir, sample_size=args.sample_size)
            print(f"wrote {args.out}: {stats['splits']}")
    else:
        _run_pipeline(args)


def configure_logging(verbose: bool, quiet: bool) -> None:
    """eztag's messages: progress (info, debug with -v, none with -q) to stdout, warnings to stderr."""
    progress = logging.StreamHandler(sys.stdout)
    progress.addFilter(lambda record: record.levelno < logging.WARNING)
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setLevel(logging.WARNING)
    logger = logging.getLogger("eztag")
    logger.handlers = [progress, warnings]
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors and failed writes print one line and exit 2; SIGINT and SIGTERM print where the
    run stopped and exit 130 and 143."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    previous = runstate.handle_stop_signals()
    try:
        try:
            _dispatch(args)
        except Exception as error:
            from eztag.safe_writes import WriteFailed, write_errno

            code = write_errno(error)
            if code is None or isinstance(error, EztagError):
                raise
            raise WriteFailed(getattr(error, "filename", None), code, writing=code != errno.EACCES) from error
    except EztagError as error:
        if args.debug or os.environ.get("EZTAG_DEBUG"):
            raise
        print(f"eztag: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        message, status = runstate.interrupted(interrupt)
        print(message, file=sys.stderr)
        return status
    finally:
        runstate.restore_stop_signals(previous, process_ends=argv is None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
