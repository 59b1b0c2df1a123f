"""Device and precision are validated choices with one meaning of "auto", and a bad value is a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from eztag.devices import check_device, check_precision, pick_device, pick_dtype
from eztag.errors import EztagError
from tests.conftest import assert_one_line_error, eztag, pipeline_file


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_valid_devices_pass(device: str) -> None:
    assert check_device(device) == device


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:", "cuda:x", "mps0", ""])
def test_bad_devices_name_the_field(device: str) -> None:
    with pytest.raises(EztagError) as error:
        check_device(device, field="index.device")
    assert error.value.field == "index.device" and "expected auto, cpu, cuda or cuda:N" in error.value.message


def test_auto_precision_means_float32_on_cpu_and_float16_on_a_gpu_unless_the_backend_says_bfloat16() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert pick_dtype("auto", cpu) == torch.float32
    assert pick_dtype("auto", cpu, gpu_auto="bfloat16") == torch.float32
    assert pick_dtype("auto", gpu) == torch.float16
    assert pick_dtype("auto", gpu, gpu_auto="bfloat16") == torch.bfloat16
    assert pick_dtype("bfloat16", cpu) == torch.bfloat16 and pick_dtype("float32", gpu) == torch.float32
    with pytest.raises(EztagError) as error:
        check_precision("fp16")
    assert error.value.message == "unknown precision 'fp16' (expected one of: auto, bfloat16, float16, float32)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(EztagError, match="asks for a CUDA GPU, but none is visible"):
        pick_device("cuda:0", field="encode.device")


@pytest.mark.parametrize(
    ("table", "fragments"),
    [
        ('[index]\nprecision = "fp16"\n', ("field 'index.precision'", "'fp16' is not allowed", "float16")),
        ('[index]\ndevice = "gpu"\n', ("field 'index.device'", "unknown device 'gpu'")),
        ('device = "gpu"\n', ("field 'encode.device'", "unknown device 'gpu'")),  # lands in [encode]
        ('precision = "half"\n', ("field 'encode.precision'", "'half' is not allowed")),
    ],
)
def test_bad_device_or_precision_in_a_pipeline_is_one_line(
    tmp_path: Path, small_inputs: tuple[Path, Path], table: str, fragments: tuple[str, ...]
) -> None:
    config = pipeline_file(tmp_path, *small_inputs, extra=table)
    assert_one_line_error(eztag("run", str(config)), str(config), *fragments)
