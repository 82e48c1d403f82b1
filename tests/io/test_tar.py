"""Damaged WebDataset shards: every readable sample is kept, and the damage is a reject that
says where. Shards are real tar files written by `tarfile`, damaged the ways downloads and
disks damage them; `tarfile` itself is the oracle for the undamaged layout."""

import gzip
import io
import random
import tarfile
import zlib

import pytest
from test_sources import read_all

from mmtok.io.tar import Damage, Member, parse_header, tar_members

SAMPLES = 20


def build_shard(fmt=tarfile.GNU_FORMAT) -> tuple[bytes, list[dict]]:
    """A shard of SAMPLES samples (`s/NNN.jpg` + `s/NNN.txt`) and, per member, where it lies."""
    rng = random.Random(7)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for i in range(SAMPLES):
            for ext, data in (("jpg", rng.randbytes(1500 + 97 * i)), ("txt", f"cap {i}".encode())):
                info = tarfile.TarInfo(f"s/{i:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = [
            {
                "key": m.name.rsplit(".", 1)[0],
                "ext": m.name.rsplit(".", 1)[1],
                "header": m.offset,
                "end": m.offset_data + m.size,
                "data": raw[m.offset_data : m.offset_data + m.size],
            }
            for m in tar
        ]
    return raw, members


def samples_of(members):
    keys = []
    for m in members:
        if m["key"] not in keys:
            keys.append(m["key"])
    return keys


def read_shard(tmp_path, data: bytes, name="shard.tar"):
    path = tmp_path / name
    path.write_bytes(data)
    _, rows, rejects = read_all([path])
    return rows, rejects


def damage_offsets(rejects) -> list[int]:
    return [int(r["message"].split(":", 1)[0].removeprefix("byte ")) for r in rejects]


def assert_nothing_vanished(rows, rejects, members, readable_end):
    """Each sample is a row, or lies after the start of reported damage; every sample whose
    members all lie in the readable part is a row with its exact bytes."""
    by_key = {r["key"]: r for r in rows}
    first_damage = min(damage_offsets(rejects), default=None)
    for key in samples_of(members):
        parts = [m for m in members if m["key"] == key]
        if all(m["end"] <= readable_end for m in parts) and key in by_key:
            row = by_key[key]
            assert row["image"]["bytes"] == next(m["data"] for m in parts if m["ext"] == "jpg")
            assert row["caption"] == next(m["data"] for m in parts if m["ext"] == "txt").decode()
        elif key not in by_key:
            assert first_damage is not None and parts[-1]["end"] > first_damage, key
    full = [
        k
        for k in samples_of(members)
        if all(m["end"] <= readable_end for m in members if m["key"] == k)
    ]
    assert set(full) <= set(by_key)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_walker_reads_what_tarfile_reads(fmt):
    raw, members = build_shard(fmt)
    got = [(e.name.decode(), e.data) for e in tar_members(io.BytesIO(raw))]
    assert got == [(f"{m['key']}.{m['ext']}", m["data"]) for m in members]
    gz = [(e.name.decode(), e.data) for e in tar_members(io.BytesIO(gzip.compress(raw)))]
    assert gz == got


def test_long_names_and_pax_headers():
    buf = io.BytesIO()
    long = "d" * 150 + "/sample.jpg"
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(long)
        info.size = 3
        info.pax_headers = {"comment": "x" * 600}
        tar.addfile(info, io.BytesIO(b"abc"))
    (member,) = tar_members(io.BytesIO(buf.getvalue()))
    assert (member.name, member.data) == (long.encode(), b"abc")


def test_bad_header_checksum_mid_shard_resyncs_at_the_next_header(tmp_path):
    raw, members = build_shard()
    bad = next(m for m in members if m["key"] == "s/010" and m["ext"] == "jpg")
    data = bytearray(raw)
    data[bad["header"] + 10] ^= 0xFF  # a flipped byte in the name: the checksum fails
    assert parse_header(bytes(data[bad["header"] : bad["header"] + 512])) is None
    rows, rejects = read_shard(tmp_path, bytes(data))
    # All 20 samples are rows: s/010 lost its image (skipped) but its caption resynced.
    assert [r["key"] for r in rows] == samples_of(members)
    assert rows[10]["image"] is None and rows[10]["caption"] == "cap 10"
    (reject,) = rejects
    assert reject["reason"] == "bad_record" and reject["stage"] == "read"
    assert f"bad tar header at byte {bad['header']:,}" in reject["message"]
    assert "skipping to next header" in reject["message"]
    assert "after sample 's/009'" in reject["message"]


@pytest.mark.parametrize("share", [0.5, 0.7, 0.9])
def test_targz_cut_keeps_every_sample_before_the_cut(tmp_path, share):
    raw, members = build_shard()
    gz = gzip.compress(raw)
    cut = gz[: int(len(gz) * share)]
    readable = len(zlib.decompressobj(31).decompress(cut))
    rows, rejects = read_shard(tmp_path, cut, "shard.tar.gz")
    assert len(rejects) == 1 and "the gzip stream ends early" in rejects[0]["message"]
    assert "is unread" in rejects[0]["message"]
    assert_nothing_vanished(rows, rejects, members, readable)
    assert len(rows) >= int(SAMPLES * share) - 2


def test_garbage_inside_the_tar_of_a_targz_is_skipped(tmp_path):
    raw, members = build_shard()
    at = next(m for m in members if m["key"] == "s/007" and m["ext"] == "jpg")["header"] + 700
    garbage = random.Random(1).randbytes(2048)
    gz = gzip.compress(raw[:at] + garbage + raw[at:])
    rows, rejects = read_shard(tmp_path, gz, "shard.tar.gz")
    # s/007's image is cut by the garbage (its data is no longer where its header says):
    # the walker finds s/007.txt's header again; every other sample is intact.
    keys = [r["key"] for r in rows]
    assert keys == samples_of(members)
    intact = [r for r in rows if r["key"] != "s/007"]
    assert all(r["image"] is not None for r in intact)
    assert len(rejects) == 1 and "bad tar header" in rejects[0]["message"]


def test_garbage_in_the_compressed_bytes_ends_with_one_reject_for_the_rest(tmp_path):
    raw, members = build_shard()
    gz = gzip.compress(raw, compresslevel=1)
    at = len(gz) // 2
    damaged = gz[:at] + bytes(2048) + b"\xff" * 16 + gz[at:]
    rows, rejects = read_shard(tmp_path, damaged, "shard.tar.gz")
    readable = 0
    inflate = zlib.decompressobj(31)
    for i in range(0, at, 64):  # what inflates before the damage, the oracle's way
        readable += len(inflate.decompress(gz[i : min(i + 64, at)]))
    assert len(rejects) == 1 and "is unread" in rejects[0]["message"]
    assert_nothing_vanished(rows, rejects, members, readable)
    assert len(rows) >= 5


def test_garbage_of_odd_size_in_a_plain_tar(tmp_path):
    raw, members = build_shard()
    at = next(m for m in members if m["key"] == "s/012")["header"]  # between two samples
    rows, rejects = read_shard(tmp_path, raw[:at] + b"junk" * 77 + raw[at:])
    assert [r["key"] for r in rows] == samples_of(members)
    assert all(r["image"] is not None for r in rows)
    (reject,) = rejects
    assert f"skipped {4 * 77:,} bytes" in reject["message"] and f"byte {at:,}" in reject["message"]


def test_no_header_after_the_damage_is_one_reject_for_the_rest(tmp_path):
    raw, members = build_shard()
    at = next(m for m in members if m["key"] == "s/015")["header"]
    rows, rejects = read_shard(tmp_path, raw[:at] + random.Random(3).randbytes(5000))
    assert [r["key"] for r in rows] == samples_of(members)[:15]
    (reject,) = rejects
    assert f"bad tar header at byte {at:,} and no valid header after it" in reject["message"]


def test_cut_inside_a_header_and_inside_data(tmp_path):
    raw, members = build_shard()
    header = next(m for m in members if m["key"] == "s/004")["header"]
    rows, rejects = read_shard(tmp_path, raw[: header + 100])
    assert len(rows) == 4 and "ends inside a header" in rejects[0]["message"]
    rows, rejects = read_shard(tmp_path, raw[: header + 900])
    assert [r["key"] for r in rows] == samples_of(members)[:4]
    assert "is cut after 388 of" in rejects[0]["message"]


def test_damage_events_carry_offsets():
    raw, _ = build_shard()
    data = bytearray(raw)
    data[0] ^= 0x01
    events = list(tar_members(io.BytesIO(bytes(data))))
    assert isinstance(events[0], Damage) and events[0].offset == 0
    assert len([e for e in events if isinstance(e, Member)]) == 2 * SAMPLES - 1


@pytest.mark.parametrize("compress", [False, True])
def test_random_damage_never_loses_a_sample_silently(tmp_path, compress):
    """Fault injection: flips, cuts and inserted garbage at random places, 60 trials each."""
    raw, members = build_shard()
    packed = gzip.compress(raw) if compress else raw
    rng = random.Random(11)
    for trial in range(60):
        data = bytearray(packed)
        kind = trial % 3
        at = rng.randrange(len(data))
        if kind == 0:
            for _ in range(4):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del data[at:]
        else:
            data[at:at] = rng.randbytes(rng.randrange(1, 3000))
        rows, rejects = read_shard(
            tmp_path, bytes(data), "shard.tar.gz" if compress else "shard.tar"
        )
        kept = {r["key"] for r in rows}
        first_damage = min(damage_offsets(rejects), default=None)
        for key in samples_of(members):
            if key not in kept:
                end = max(m["end"] for m in members if m["key"] == key)
                assert first_damage is not None and first_damage < end, (trial, key)


def test_member_names_that_climb_out_are_only_keys(tmp_path):
    """Nothing is extracted: `../` and absolute names are sample keys, no file is written."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("../../evil.jpg", "/abs/evil.jpg"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"data"))
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    rows, rejects = read_shard(tmp_path, buf.getvalue())
    assert rejects == [] and [r["key"] for r in rows] == ["../../evil", "/abs/evil"]
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["shard.tar"]
