"""The Triton exact top-k on a machine without a GPU: its cases (fused_topk_cases.py) in Triton's interpreter, in a
process of their own started with TRITON_INTERPRET=1, and the one-line error without the interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eztag.errors import EztagError
from eztag.indexes.exact import ExactIndex

CASES = Path(__file__).with_name("fused_topk_cases.py")


@pytest.mark.slow
def test_kernel_cases_pass_in_the_triton_interpreter() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "-o",
            "addopts=",
            str(CASES),
        ],
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "5 passed" in run.stdout, run.stdout[-2000:]  # every case ran: none skipped or deselected


def test_triton_selection_without_a_gpu_or_the_interpreter_is_a_one_line_error() -> None:
    if "triton.language" in sys.modules and os.environ.get("TRITON_INTERPRET") == "1":
        pytest.fail("this test needs triton imported without the interpreter")
    with pytest.raises(EztagError, match="needs a CUDA GPU") as error:
        ExactIndex(device="cpu", selection="triton")
    assert "\n" not in str(error.value) and "index.options" in str(error.value)
