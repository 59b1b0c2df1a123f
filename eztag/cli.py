"""The `eztag` command line: one subcommand per stage, `run` for a whole pipeline, and helpers."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import shutil
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

from eztag import __version__, runstate
from eztag.comparison import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES
from eztag.engines import EngineName
from eztag.errors import EztagError
from eztag.stages import STAGES


def _pipeline_arguments(
    parser: argparse.ArgumentParser,
    *,
    positional: bool = True,
    run_dir: str = "run directory (default: [pipeline] run_dir or runs/NAME)",
) -> None:
    if positional:
        parser.add_argument("pipeline", type=Path, help="pipeline TOML file")
    parser.add_argument("--run-dir", type=Path, help=run_dir)
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


def _tag_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser], text: str) -> None:
    """`eztag tag PIPELINE` (the pipeline up to its tag stage) or `eztag tag DOCUMENTS LABELS --out FILE`."""
    tag = commands.add_parser(
        "tag",
        help=f"{text}; or tag DOCUMENTS with LABELS into --out without a pipeline",
        usage="eztag tag PIPELINE [options] | eztag tag DOCUMENTS LABELS --out FILE [options]",
        description="With a pipeline file: run it up to its tag stage. With DOCUMENTS and LABELS (CSV, TSV, JSONL or "
        "Parquet): encode both, retrieve each document's top K labels, select its tags and write them to --out "
        "(CSV, TSV, JSONL or Parquet by extension: doc_id, rank, label_id, label, score, probability when "
        "calibrated, selected). The run directory keeps the work: a rerun skips what is done, a killed run resumes.",
    )
    tag.add_argument("inputs", type=Path, nargs="+", metavar="FILE", help="PIPELINE, or DOCUMENTS LABELS")
    _pipeline_arguments(tag, positional=False)
    files = tag.add_argument_group("without a pipeline (DOCUMENTS LABELS)")
    files.add_argument("--out", type=Path, help="tags file to write: .csv, .tsv, .jsonl or .parquet")
    files.add_argument("--model", help="encoder: a folder (e.g. a cold-start run's distil/model), a hub id or default")
    files.add_argument("--k", type=_positive_int, default=10, help="labels ranked per document (default 10)")
    files.add_argument(
        "--rule",
        choices=["auto", "top_k", "probability", "expected_f1"],
        default="auto",
        help="which ranked labels are selected: auto (calibrated probability with --calibrator, else top_k)",
    )
    files.add_argument("--top-k", type=_positive_int, default=5, help="tags selected by rule top_k (default 5)")
    files.add_argument("--calibrator", type=Path, help="calibrator.json of a cold-start run (calibrate stage)")
    files.add_argument("--selected-only", action="store_true", help="write only the selected tags")


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _number(text: str) -> float:
    """`text` as a float; NaN (which fails every range check) when it is not a number."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _days(text: str) -> float:
    value = _number(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of days, 0 or more, got {text!r}")
    return value


def _confidence(text: str) -> float:
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _interval_arguments(parser: argparse.ArgumentParser, baseline: str) -> None:
    parser.add_argument(
        "--resamples",
        type=_positive_int,
        default=DEFAULT_RESAMPLES,
        metavar="N",
        help=f"bootstrap resamples for the intervals against {baseline} (default {DEFAULT_RESAMPLES})",
    )
    parser.add_argument(
        "--confidence",
        type=_confidence,
        default=DEFAULT_CONFIDENCE,
        metavar="LEVEL",
        help=f"confidence level of the intervals, between 0 and 1 (default {DEFAULT_CONFIDENCE})",
    )


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
        if stage.NAME == "tag":
            _tag_parser(commands, text)
            continue
        sub = commands.add_parser(
            stage.NAME, help=text, description=f"{text[0].upper()}{text[1:]} (runs unfinished upstream stages first)."
        )
        _pipeline_arguments(sub)
    init = commands.add_parser(
        "init",
        help="write a commented pipeline file for your documents and labels",
        description="Write a pipeline TOML beside DOCUMENTS (paths relative to it, the columns found in the files, "
        "evaluate only when the documents have a labels column); run it with `eztag run`.",
    )
    init.add_argument("documents", type=Path, help="documents file (CSV, TSV, JSONL or Parquet)")
    init.add_argument("labels", type=Path, help="labels file (CSV, TSV, JSONL or Parquet)")
    init.add_argument("--out", type=Path, help="pipeline file to write (default: eztag.toml beside DOCUMENTS)")
    init.add_argument("--cold-start", action="store_true", help="add mine, judge, distil and calibrate (an LLM judge)")
    init.add_argument("--overwrite", action="store_true", help="replace an existing pipeline file")
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
    _interval_arguments(compare, "the first run")
    sweep = commands.add_parser(
        "sweep",
        help="run a pipeline under several settings and compare them",
        description="Run the pipeline of a sweep file once per variant ([variants.NAME] tables, then every "
        "combination of the [grid.AXIS] options; its `set` overrides after any --set given here) into RUN_DIR/NAME, "
        "taking each stage already finished with the same settings in another variant instead of running it again, "
        'then compare every variant with the first (eztag compare); with command = "check-judge" each variant is '
        "eztag check-judge and the sweep writes a table of the checks; with choose = METRIC it writes scores.json, "
        "whose best variant's setting a later sweep starts from (best_of = FILE, among = PATTERN).",
    )
    sweep.add_argument("sweep", type=Path, help="sweep TOML file ([sweep], [variants.NAME] and [grid.AXIS] tables)")
    _pipeline_arguments(
        sweep, positional=False, run_dir="folder of the variants' run directories (default: [sweep] run_dir)"
    )
    check = commands.add_parser(
        "check-judge",
        help="before distilling: does the judge order candidates better than the student, on labelled documents?",
        description="Run the pipeline's ingest, encode, index, mine and judge settings over LABELLED (a few hundred "
        "documents with their labels, in any input format) into RUN_DIR-judge-check, the judgments going to the "
        "pipeline's judge cache (the cold start reuses them); then order each document's candidates by the student "
        "and by the judge, score both against the labels (P@1, nDCG@5, paired bootstrap intervals), report the "
        "judge's yes-rates and say whether distilling with this judge should help.",
    )
    check.add_argument(
        "pipeline", type=Path, help="pipeline TOML file with a judge (e.g. one from eztag init --cold-start)"
    )
    check.add_argument(
        "labelled", type=Path, help="labelled documents: CSV, TSV, JSONL or Parquet with a labels column"
    )
    check.add_argument("--ground-truth", type=Path, help="the labels in a separate file of (doc_id, label_id) rows")
    check.add_argument(
        "--documents", type=_positive_int, default=300, help="labelled documents judged, a seeded sample (default 300)"
    )
    _interval_arguments(check, "the student's order")
    _pipeline_arguments(check, positional=False)
    report = commands.add_parser(
        "report",
        help="write a run's self-contained HTML report",
        description="One HTML page (no network needed to view it) with a run's stages, metrics, labels, judge, "
        "distillation rounds and sample documents. Reads the run directory only.",
    )
    report.add_argument("run_dir", type=Path, help="run directory")
    report.add_argument("--out", type=Path, help="HTML file to write (default: RUN_DIR-report.html beside RUN_DIR)")
    prune = commands.add_parser(
        "prune-cache",
        help="remove the entries of label and index caches that no run has used for a while",
        description="Remove from each cache folder ([encode] label_cache, [index] cache) the entries no run has "
        "taken for DAYS days (label vectors with their digest file, built indexes, a killed run's partial work); "
        "it waits for the runs using a folder, and they wait for it.",
    )
    prune.add_argument("folders", type=Path, nargs="+", help="cache folders")
    prune.add_argument(
        "--unused-days",
        type=_days,
        required=True,
        metavar="DAYS",
        help="remove entries unused for this many days",
    )
    return parser


def _overrides(args: argparse.Namespace) -> list[str]:
    """The `--set` overrides, with `--engine` as one more."""
    return [*args.overrides, *([f'pipeline.engine="{args.engine}"'] if args.engine else [])]


@contextlib.contextmanager
def _claimed(run_dir: Path, wait: float | None) -> Iterator[None]:
    """Hold the run directory's lock; a run that fails before finishing a stage leaves no folder it created."""
    from eztag.artifacts import RunDir
    from eztag.runlock import run_lock

    created = next((folder for folder in [*reversed(run_dir.parents), run_dir] if not folder.exists()), None)
    try:
        with run_lock(run_dir, wait):
            yield
    except EztagError:
        if created is not None and not RunDir(run_dir).manifest()["stages"]:
            shutil.rmtree(created, ignore_errors=True)
        raise


def _run_pipeline(args: argparse.Namespace, files: tuple[Path, Path] | None = None) -> None:
    """Run a pipeline file (up to the stage `args.command` names), or with `files` (documents, labels) the pipeline
    `eztag tag` makes, its tags then written to `args.out`."""
    from eztag import quickstart
    from eztag.artifacts import RunDir, write_text
    from eztag.comparison import EVALUATE_DIR as EVALUATE  # the evaluate stage's name and folder
    from eztag.comparison import markdown_table
    from eztag.config import apply_overrides
    from eztag.pipeline import Pipeline
    from eztag.stages.tag import NAME as TAG

    overrides = _overrides(args)
    data = None
    if files is None:
        pipeline = Pipeline.load(args.pipeline, overrides)
        run_dir = args.run_dir or pipeline.default_run_dir()
    else:
        quickstart.tags_format(args.out)
        options = {"k": args.k, "rule": args.rule, "top_k": args.top_k, "calibrator": args.calibrator}
        data = quickstart.tag_pipeline(*files, model=args.model, **options)
        run_dir = args.run_dir or Path("runs") / f"tag-{files[0].name.split('.')[0]}"
        pipeline = Pipeline.load(run_dir / "pipeline.toml", overrides, data=data)
    whole = args.command == "run" or files is not None
    with _claimed(run_dir, args.wait):
        if data is not None:
            header = "# written by `eztag tag`; rerun it with: eztag run THIS_FILE --run-dir THIS_FOLDER\n"
            write_text(run_dir / "pipeline.toml", quickstart.toml_text(apply_overrides(data, overrides), header))
        summaries = pipeline.run(run_dir, until=None if whole else args.command, force=args.force)
        finished = RunDir(run_dir)
        if (args.command in ("run", EVALUATE) and EVALUATE in pipeline.configs) and finished.is_finished(
            EVALUATE, pipeline.stage_hash(EVALUATE)
        ):
            metrics = json.loads((run_dir / EVALUATE / "metrics.json").read_text(encoding="utf-8"))
            print(markdown_table({run_dir.name: metrics["metrics"]}, metrics["ks"]), end="")
            for note in metrics.get("notes", []):
                print(f"note: {note}")
        if whole and TAG in pipeline.configs and finished.is_finished(TAG, pipeline.stage_hash(TAG)):
            if files is None:
                print(f"tags: {run_dir / TAG / 'tags.parquet'}")
            else:
                written = quickstart.write_tags(run_dir, args.out, selected_only=args.selected_only)
                documents = written["doc_id"].n_unique()
                print(f"tags: {args.out} ({written.height} rows, {documents} documents)")
            page = run_dir / "report.html"
            if summaries or not page.exists():
                from eztag.report import write_report

                print(f"report: {write_report(run_dir, page)}")
    print(f"run directory: {run_dir}")


def _check_judge(args: argparse.Namespace) -> None:
    """`eztag check-judge`: the pipeline's judge against its student on labelled documents."""
    from eztag import judge_check

    pipeline, distil = judge_check.check_pipeline(
        args.pipeline, args.labelled, args.ground_truth, args.documents, _overrides(args)
    )
    run_dir = args.run_dir or pipeline.default_run_dir()
    with _claimed(run_dir, args.wait):
        pipeline.run(run_dir, force=args.force)
        text = judge_check.markdown(judge_check.write_check(run_dir, distil, args.resamples, args.confidence))
    print(text, end="")
    print(f"judge check: {run_dir / judge_check.REPORT}.md")
    print(f"run directory: {run_dir}")


def _sweep(args: argparse.Namespace) -> None:
    """`eztag sweep`: each variant's pipeline into its run directory, then the comparison of them all."""
    from eztag import judge_check
    from eztag.artifacts import write_text
    from eztag.report import write_comparison
    from eztag.sweep import load_sweep, stage_seconds, take_finished_stages, write_scores

    sweep = load_sweep(args.sweep, _overrides(args))
    for name, variant in sweep.variants.items():
        for stage in args.force:
            if stage not in variant.pipeline.configs:
                raise EztagError(f"variant '{name}': stage '{stage}' is not in its pipeline", field="--force")
    root = args.run_dir or sweep.run_dir
    run_dirs = [root / name for name in sweep.variants]
    fresh: list[Path] = []
    checks = {}
    for run_dir, (name, variant) in zip(run_dirs, sweep.variants.items(), strict=True):
        print(f"variant {name}: {run_dir}")
        forced = variant.pipeline.downstream(args.force)
        with _claimed(run_dir, args.wait):
            others = [other for other in run_dirs if other != run_dir]
            taken = take_finished_stages(variant.pipeline, run_dir, others, fresh, forced) if sweep.share else []
            if taken:
                print(f"taken from other variants: {', '.join(taken)}")
            variant.pipeline.run(run_dir, force=[stage for stage in forced if stage not in taken])
            if sweep.command == "check-judge":
                checks[name] = judge_check.write_check(run_dir, variant.distil, sweep.resamples, sweep.confidence)
        fresh.append(run_dir)
    stages = list(dict.fromkeys(stage for variant in sweep.variants.values() for stage in variant.pipeline.stages))
    named_dirs = dict(zip(sweep.variants, run_dirs, strict=True))
    write_text(sweep.out / "stages.md", stage_seconds(named_dirs, stages))
    if checks:
        print(judge_check.write_sweep_checks(sweep.out, checks), end="")
        print(f"checks: {sweep.out / 'checks.md'}")
    else:
        print(write_comparison(run_dirs, sweep.out, sweep.resamples, sweep.confidence), end="")
        print(f"comparison: {sweep.out / 'comparison.html'}")
    if sweep.choose is not None:
        print(write_scores(sweep.out, sweep.choose, named_dirs, sweep.settings))


def _tag(args: argparse.Namespace) -> None:
    """`eztag tag`: a pipeline file up to its tag stage, or DOCUMENTS LABELS into --out."""
    quick = {"--out": args.out, "--model": args.model, "--calibrator": args.calibrator}
    if len(args.inputs) == 1:
        given = [flag for flag, value in quick.items() if value is not None]
        if given:
            raise EztagError(f"{', '.join(given)} go with `eztag tag DOCUMENTS LABELS`, not with a pipeline file")
        args.pipeline = args.inputs[0]
        _run_pipeline(args)
    elif len(args.inputs) == 2:
        if args.out is None:
            raise EztagError("eztag tag DOCUMENTS LABELS needs --out FILE (.csv, .tsv, .jsonl or .parquet)")
        _run_pipeline(args, (args.inputs[0], args.inputs[1]))
    else:
        raise EztagError("eztag tag takes a pipeline file, or DOCUMENTS and LABELS")


def _init(args: argparse.Namespace) -> None:
    from eztag import quickstart
    from eztag.artifacts import write_text

    out = args.out or args.documents.parent / "eztag.toml"
    if out.exists() and not args.overwrite:
        raise EztagError("exists; choose another --out or add --overwrite", file=out)
    for path in (args.documents, args.labels):
        if not path.is_file():
            raise EztagError("file not found", file=path)
    text, notes = quickstart.init_pipeline(args.documents, args.labels, out, cold_start=args.cold_start)
    write_text(out, text)
    print("columns: " + ", ".join(notes))
    print(f"wrote {out}; run it with: eztag run {out}")


def _dispatch(args: argparse.Namespace) -> None:
    if args.command == "compare":
        from eztag.report import write_comparison

        print(write_comparison(args.run_dirs, args.out, args.resamples, args.confidence), end="")
        print(f"comparison: {args.out / 'comparison.html'}")
    elif args.command == "report":
        from eztag.report import write_report

        out = args.out or args.run_dir.resolve().with_name(f"{args.run_dir.resolve().name}-report.html")
        print(f"report: {write_report(args.run_dir, out)}")
    elif args.command == "tag":
        _tag(args)
    elif args.command == "init":
        _init(args)
    elif args.command == "check-judge":
        _check_judge(args)
    elif args.command == "sweep":
        _sweep(args)
    elif args.command == "prune-cache":
        _prune_cache(args.folders, args.unused_days)
    else:
        _run_pipeline(args)


def _prune_cache(folders: list[Path], unused_days: float) -> None:
    from eztag.entry_caches import prune

    for folder in folders:
        pruned = prune(folder, unused_days)
        print(
            f"{folder}: removed {len(pruned.removed)} entries ({pruned.freed_bytes / 2**20:.1f} MiB), "
            f"kept {pruned.kept}"
        )


def configure_logging(verbose: bool, quiet: bool) -> None:
    """eztag's messages: progress (info, debug with -v, none with -q) to stdout, warnings to stderr."""
    progress = logging.StreamHandler(sys.stdout)
    progress.addFilter(lambda record: record.levelno < logging.WARNING)
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setLevel(logging.WARNING)
    logger = logging.getLogger("eztag")
    logger.handlers = [progress, warnings]
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    # the Hugging Face libraries' per-file and per-weight bars on stderr would bury eztag's own lines; a user who
    # wants them sets HF_HUB_DISABLE_PROGRESS_BARS=0 (read when those libraries are first imported)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


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
