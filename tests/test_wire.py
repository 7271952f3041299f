"""Arrays between services: compact bytes with their shape and dtype, the same after pickle (one server) and after
JSON (separate machines), never JSON number lists."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from serving.backends import DiffusionJob, Segmented
from serving.core.wire import WireArray


@pytest.fixture(scope="module")
def arrays(coffee):
    rng = np.random.default_rng(0)
    mask = np.zeros(coffee.shape[:2], dtype=bool)
    mask[90:310, 190:431] = True  # an edge that does not fall on a byte of packed bits
    return {
        "photo": coffee,
        "odd photo": coffee[:-1, 3:].copy(),
        "mask": mask,
        "soft mask": rng.random((33, 47), dtype=np.float32),
        "half": rng.random((5, 7)).astype(np.float16),
        "one pixel": np.zeros((1, 1, 3), dtype=np.uint8),
    }


@pytest.mark.parametrize("name", ["photo", "odd photo", "mask", "soft mask", "half", "one pixel"])
def test_an_array_arrives_as_it_left_through_json_and_pickle(arrays, name):
    array = arrays[name]
    wire = WireArray.of(array)
    for arrived in (
        WireArray.model_validate_json(wire.model_dump_json()).to_numpy(),
        pickle.loads(pickle.dumps(wire)).to_numpy(),
    ):
        assert arrived.dtype == array.dtype and arrived.shape == array.shape
        np.testing.assert_array_equal(arrived, array)
        assert arrived.flags.writeable


def test_the_json_is_base64_bytes_not_number_lists(arrays):
    photo, mask = arrays["photo"], arrays["mask"]
    text = WireArray.of(photo).model_dump_json()
    assert "[" not in json.loads(text)["data"]
    assert len(text) < photo.nbytes * 1.34 + 200  # base64: four characters for three bytes
    packed = WireArray.of(mask)
    assert len(packed.data) == -(-mask.size // 8)  # eight mask pixels a byte


def test_stage_messages_carry_arrays_the_same_way(arrays):
    job = DiffusionJob(
        job_id="j1",
        image=WireArray.of(arrays["photo"]),
        subject_mask=WireArray.of(arrays["mask"]),
        original_size=(600, 400),
        prompt="a galaxy",
        options={"steps": 2},
    )
    arrived = DiffusionJob.model_validate_json(job.model_dump_json())
    assert arrived.image.to_numpy().dtype == np.uint8 and arrived.subject_mask.to_numpy().dtype == bool
    np.testing.assert_array_equal(arrived.subject_mask.to_numpy(), arrays["mask"])
    mask = WireArray.of(arrays["mask"])
    answer = Segmented(mask=mask, score=0.9, image_id="x", cached=True, engine="u2netp+clicks")
    arrived = Segmented.model_validate_json(answer.model_dump_json())
    assert arrived.mask.to_numpy().shape == (400, 600) and arrived.engine == "u2netp+clicks"


def test_other_dtypes_and_short_data_are_refused():
    with pytest.raises(ValueError, match="int64"):
        WireArray.of(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="holds 3 values for shape"):
        WireArray(shape=(2, 2), dtype="uint8", data=b"abc").to_numpy()


@pytest.mark.parametrize(
    ("shape", "data", "message"),
    [
        ((2, 8), b"\xff", r"holds 1 bytes of packed bits for shape \(2, 8\)"),  # short: would be padded with False
        ((2, 4), b"\xff\x00", r"holds 2 bytes of packed bits for shape \(2, 4\)"),  # long: the tail would be dropped
        ((3, 3), b"\xff", r"holds 1 bytes of packed bits for shape \(3, 3\)"),
    ],
)
def test_packed_masks_of_the_wrong_length_are_refused(shape, data, message):
    with pytest.raises(ValueError, match=message):
        WireArray(shape=shape, dtype="bool", data=data).to_numpy()
    assert WireArray(shape=(3, 3), dtype="bool", data=b"\xff\x80").to_numpy().all()  # 9 bits in 2 bytes


@pytest.mark.parametrize(("dtype", "data"), [("bool", b"\xff"), ("uint8", b"\x00" * 8), ("float32", b"\x00" * 8)])
def test_negative_dimensions_are_refused(dtype, data):
    with pytest.raises(ValueError, match=r"wire array shape \(-1, -8\) has a negative dimension"):
        WireArray(shape=(-1, -8), dtype=dtype, data=data).to_numpy()
