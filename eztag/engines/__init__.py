"""Engines: where a stage's work units run. `local` runs them in this process; `ray` in a Ray Data actor pool.

A stage cuts its pending work into units (an encode chunk, a judge shard, a tag chunk), hands the engine a picklable
zero-argument `make_worker` (it builds the model, judge or index once per worker process and returns the function
that processes one unit) and writes each result atomically as it comes back. Artifacts, caches and resume are the
stage's, so both engines write the same run directory, and a run started on one resumes on the other.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from eztag.errors import EztagError

if TYPE_CHECKING:
    from eztag.judges import Judge, Judgment
    from eztag.prompts import Pair

Worker = Callable[[Any], Any]  # processes one unit


@dataclasses.dataclass
class RayOptions:
    """`[pipeline.ray]`: the Ray cluster and the actor pool of each stage.

    address: an existing cluster ("auto", "ray://head:10001", ...); unset: RAY_ADDRESS, else a local instance with
    `num_cpus` CPUs. actors: workers per stage (each holds its own model); cpus/gpus_per_actor: Ray resources each
    (a vLLM judge takes one GPU per tensor-parallel rank when gpus_per_actor > 0).
    """

    address: str | None = None
    """An existing Ray cluster (`auto`, `ray://head:10001`, ...); `None`: the `RAY_ADDRESS` variable, else a local
    instance started for the run."""
    num_cpus: int | None = None
    """CPUs of the local instance started when there is no address; `None`: Ray's default (every CPU)."""
    actors: int = 1
    """Workers per stage, each holding its own model, judge or index."""
    cpus_per_actor: float = 1.0
    """Ray CPUs reserved by each actor."""
    gpus_per_actor: float = 0.0
    """Ray GPUs reserved by each actor; a vLLM judge takes one GPU per tensor-parallel rank when this is above 0."""
    vllm_batch_size: int = 64
    """Pairs per request batch of Ray Data's vLLM processor (the `vllm` judge only)."""

    def __post_init__(self) -> None:
        if self.actors < 1 or self.vllm_batch_size < 1 or self.cpus_per_actor < 0 or self.gpus_per_actor < 0:
            raise ValueError("ray needs actors, vllm_batch_size >= 1 and non-negative cpus_per_actor, gpus_per_actor")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError("ray.num_cpus must be positive")


class Engine(ABC):
    """Runs a stage's work units."""

    @abstractmethod
    def map(self, make_worker: Callable[[], Worker], units: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """(position in `units`, result) of every unit, each yielded once as it finishes (any order)."""

    def score(
        self, judge: Judge, make_worker: Callable[[], Worker], units: Sequence[list[Pair]]
    ) -> Iterator[tuple[int, tuple[list[Judgment], float]]]:
        """(position, (judgments, seconds scoring)) of each unit of pairs: `make_worker`'s judge on the engine's
        workers."""
        return self.map(make_worker, units)


class LocalEngine(Engine):
    """Every unit in this process, in order, with one worker."""

    def map(self, make_worker: Callable[[], Worker], units: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        if not units:
            return
        work = make_worker()
        for position, unit in enumerate(units):
            yield position, work(unit)


EngineName = Literal["local", "ray"]


def get_engine(name: str, ray: RayOptions | None = None) -> Engine:
    """The engine `name` ("local" or "ray", with its options)."""
    if name == "local":
        return LocalEngine()
    try:
        from eztag.engines.ray_data import RayEngine
    except ImportError as error:
        if (error.name or "").partition(".")[0] not in ("ray", "pyarrow", "pandas"):
            raise
        raise EztagError("engine 'ray' needs Ray Data; install it with: pip install 'eztag[ray]'") from None
    return RayEngine(ray or RayOptions())
