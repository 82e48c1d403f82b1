"""The device runtime: every row comes back once, in order, through batch halving on a real
`torch.OutOfMemoryError`; a bug in the model is raised, never turned into a statistic."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import encode, photo, write_jsonl

from mmtok.engine.pipeline import OutputOptions, run_pipeline
from mmtok.errors import MmtokError
from mmtok.io.sources import Inputs, ReadOptions
from mmtok.models.inputs import PIXELS, ModelInputStage
from mmtok.models.preprocess import Preprocess
from mmtok.models.runtime import DeviceStage, fp16_vectors, pixels_array, resolve_device

SIZE = 8


class MeanColour(DeviceStage):
    """A stand-in model: the mean of each channel; runs out of memory above `fits` rows."""

    name = "mean_colour"

    def __init__(self, fits: int | None = None, fail: bool = False, **kw):
        super().__init__(**kw)
        self.fits, self.fail, self.calls = fits, fail, []

    def output_fields(self):
        return [pa.field("mean_colour", pa.list_(pa.float16(), 3))]

    def host_inputs(self, kept):
        return {"pixels": self.host_tensor(pixels_array(kept.column(PIXELS), SIZE, SIZE))}

    def forward(self, inputs):
        import torch

        n = len(inputs["pixels"])
        self.calls.append(n)
        if self.fail:
            raise ValueError("a bug in the model")
        if self.fits is not None and n > self.fits:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {n} images")
        return {"mean": inputs["pixels"].float().mean(dim=(1, 2))}

    def columns(self, outputs, kept):
        return {"mean_colour": fp16_vectors(outputs.get("mean", np.zeros((0, 3))))}


@pytest.fixture
def dataset(tmp_path):
    rows = []
    for i in range(150):
        path = tmp_path / f"photo_{i}.png"
        path.write_bytes(encode(photo(20 + i % 7, 16, seed=i), "PNG"))
        rows.append({"id": f"r{i:03d}", "image": str(path)})
    bad = tmp_path / "page_saved_as.jpg"
    bad.write_bytes(b"<html>not an image</html>")
    rows.insert(70, {"id": "bad", "image": str(bad)})
    return write_jsonl(tmp_path / "in.jsonl", rows)


def run(dataset, out, stage, workers=1, batch_rows=None):
    inputs = Inputs([str(dataset)], ReadOptions(batch_rows=batch_rows or stage.rows_per_batch))
    stages = [ModelInputStage(Preprocess(size=(SIZE, SIZE), resize_mode="squash")), stage]
    manifest = run_pipeline(inputs, stages, OutputOptions(str(out)), workers=workers)
    return manifest, pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("part-*.parquet")))


def expected_means(dataset):
    import json

    from mmtok.images import decode_image
    from mmtok.models.preprocess import model_input

    means = {}
    for line in dataset.read_text().splitlines():
        row = json.loads(line)
        if row["id"] != "bad":
            im = decode_image(row["image"], exif_transpose=False)
            pixels = model_input(im, Preprocess(size=(SIZE, SIZE), resize_mode="squash"))
            means[row["id"]] = pixels.reshape(-1, 3).mean(axis=0)
    return means


def test_out_of_memory_halves_the_batch_and_keeps_every_row(dataset, tmp_path):
    stage = MeanColour(fits=5)  # automatic batch size: 64 on CPU
    manifest, table = run(dataset, tmp_path / "out", stage)
    counts = manifest["counts"]
    assert (counts["in"], counts["out"], counts["rejected"]) == (151, 150, 1)
    assert stage.halvings == 4 and stage.rows_per_batch == 4  # 64 -> 32 -> 16 -> 8 -> 4
    assert max(n for n in stage.calls[stage.halvings :]) == 4
    assert table.column("id").to_pylist() == [f"r{i:03d}" for i in range(150)]
    means = expected_means(dataset)
    got = np.array(table.column("mean_colour").to_pylist(), np.float32)
    want = np.array([means[i] for i in table.column("id").to_pylist()], np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-3)
    assert PIXELS not in table.column_names
    rejects = pq.read_table(tmp_path / "out" / "__mmtok__" / "rejects.parquet")
    assert rejects.column("reason").to_pylist() == ["not_image"]


def test_a_fixed_batch_size_that_does_not_fit_is_a_clear_error(dataset, tmp_path):
    with pytest.raises(MmtokError, match="out of memory on cpu with a batch of 16"):
        run(dataset, tmp_path / "out", MeanColour(fits=5, batch_size=16))
    assert not (tmp_path / "out").exists()


def test_a_bug_in_the_model_is_raised_as_itself(dataset, tmp_path):
    with pytest.raises(ValueError, match="a bug in the model"):
        run(dataset, tmp_path / "out", MeanColour(fail=True))
    assert not (tmp_path / "out").exists()


def test_two_workers_and_small_batches_give_the_same_rows_in_order(dataset, tmp_path):
    _, one = run(dataset, tmp_path / "one", MeanColour(), workers=1)
    _, two = run(dataset, tmp_path / "two", MeanColour(batch_size=7), workers=2, batch_rows=7)
    assert one.equals(two)


def test_devices():
    assert resolve_device("cpu") == "cpu"
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto") == "cpu"
    for text in ("cuda", "cuda:1"):
        with pytest.raises(MmtokError, match="no CUDA GPU"):
            resolve_device(text)
    with pytest.raises(MmtokError, match="unknown device"):
        resolve_device("tpu")


def test_a_caller_that_stops_early_ends_both_threads():
    import threading

    from mmtok.engine.local import BatchResult

    before = set(threading.enumerate())  # other tests' worker pools may still be winding down
    stage = MeanColour(batch_size=2)
    size = SIZE * SIZE * 3
    pixels = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(size), 2, [None, pa.py_buffer(bytes(i % 256 for i in range(2 * size)))]
    )
    pulled = []

    def batches():
        for i in range(100):
            pulled.append(i)
            yield BatchResult(pa.table({"id": [f"a{i}", f"b{i}"], PIXELS: pixels}), [], 2)

    stream = stage.run_stream(batches())
    first = next(stream)
    assert first.kept.column_names == ["id", "mean_colour"] and first.kept.num_rows == 2
    stream.close()
    left = [t for t in threading.enumerate() if t not in before and t.name.startswith("mmtok-")]
    assert not left
    assert len(pulled) < 100  # the feeder stopped pulling work
