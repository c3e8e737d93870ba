"""Pure planning in the transfer engine: packs, ranged-read runs, short reads, download parts (and the part
scheduler over an in-memory store)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from disdat_luigi import fsutil
from disdat_luigi.errors import IntegrityError
from disdat_luigi.remotes import download
from disdat_luigi.remotes.download import PART, Downloads, part_bounds, window_for
from disdat_luigi.remotes.transfer import COALESCE_GAP, PACK_MAX, PACK_MIN, pack_runs, plan_packs, read_exactly
from disdat_luigi.store.manifest import FileEntry

KiB = 1024
MiB = 1024 * KiB


def items_of(*sizes):
    return [(f"{i:064x}", Path(f"f{i}"), size) for i, size in enumerate(sizes)]


def target_of(items, workers):
    return min(PACK_MAX, max(PACK_MIN, math.ceil(sum(s for _, _, s in items) / max(1, workers))))


def check_packing(items, workers, packs):
    """Order kept, each item exactly once, each pack within the target, each pack full before the next."""
    assert [item for pack in packs for item in pack] == items
    assert all(pack for pack in packs)
    target = target_of(items, workers)
    assert PACK_MIN <= target <= PACK_MAX
    for pack in packs:
        assert sum(s for _, _, s in pack) <= target or len(pack) == 1
    for pack, following in zip(packs, packs[1:]):
        assert sum(s for _, _, s in pack) + following[0][2] > target  # it was cut only when the next did not fit


def test_plan_packs_constants_are_as_documented():
    assert (PACK_MIN, PACK_MAX, COALESCE_GAP) == (1 * MiB, 8 * MiB, 1 * MiB)


def test_plan_packs_of_nothing_is_no_pack():
    assert plan_packs([], 10) == []


def test_plan_packs_small_total_uses_packs_of_pack_min():
    items = items_of(*[100 * KiB] * 100)  # ~9.8 MiB over 10 workers: below PACK_MIN each, so 1 MiB packs
    packs = plan_packs(items, 10)
    check_packing(items, 10, packs)
    assert [len(p) for p in packs] == [10] * 10


def test_plan_packs_medium_total_gives_one_pack_per_worker():
    items = items_of(*[256 * KiB] * 160)  # 40 MiB over 10 workers: 4 MiB packs
    packs = plan_packs(items, 10)
    check_packing(items, 10, packs)
    assert [len(p) for p in packs] == [16] * 10


def test_plan_packs_large_total_is_capped_at_pack_max():
    items = items_of(*[512 * KiB] * 1000)  # 500 MiB over 4 workers: 8 MiB packs, never 125 MiB
    packs = plan_packs(items, 4)
    check_packing(items, 4, packs)
    assert [len(p) for p in packs] == [16] * 62 + [8]
    assert max(sum(s for _, _, s in p) for p in packs) == PACK_MAX


def test_plan_packs_uneven_sizes_keep_order_and_bounds():
    sizes = [(i * 7919) % (900 * KiB) + 1 for i in range(300)]
    items = items_of(*sizes)
    for workers in (1, 3, 10, 64):
        check_packing(items, workers, plan_packs(items, workers))


def test_plan_packs_an_item_above_the_target_travels_alone():
    items = items_of(KiB, 9 * MiB, KiB)
    assert plan_packs(items, 1) == [[items[0]], [items[1]], [items[2]]]


def test_plan_packs_zero_workers_counts_as_one():
    items = items_of(*[3 * MiB] * 4)  # 12 MiB, one worker: 8 MiB target, two items per pack
    assert [len(p) for p in plan_packs(items, 0)] == [2, 2]


# ---------------------------------------------------------------------------------------------------
# pack_runs
# ---------------------------------------------------------------------------------------------------

PACK = "f" * 64


def entry(n, offset, size):
    return FileEntry(f"{n:064x}", size, PACK, offset)


def test_pack_runs_of_nothing_is_no_run():
    assert pack_runs([]) == []


def test_pack_runs_adjacent_entries_are_one_run_in_offset_order():
    a, b, c = entry(1, 0, 10), entry(2, 10, 5), entry(3, 15, 100)
    assert pack_runs([c, a, b]) == [[a, b, c]]


def test_pack_runs_gap_below_coalesce_gap_is_one_run():
    a, b = entry(1, 0, 100), entry(2, 100 + COALESCE_GAP - 1, 10)
    assert pack_runs([a, b]) == [[a, b]]


def test_pack_runs_gap_above_coalesce_gap_splits():
    a, b = entry(1, 0, 100), entry(2, 100 + COALESCE_GAP + 1, 10)
    assert pack_runs([b, a]) == [[a], [b]]


def test_pack_runs_gap_is_measured_from_the_end_of_the_previous_entry():
    a, b = entry(1, 0, 2 * MiB), entry(2, 2 * MiB + 100, 10)  # starts 2 MiB after a starts, 100 bytes after it ends
    assert pack_runs([a, b]) == [[a, b]]


def test_pack_runs_gap_is_measured_from_the_last_entry_of_the_run():
    a = entry(1, 0, 10)
    b = entry(2, 10 + MiB // 2, 10)
    c = entry(3, b.offset + 10 + MiB // 2, 10)  # 1 MiB + 20 after a's end, half a MiB after b's end
    assert pack_runs([a, b, c]) == [[a, b, c]]


def test_pack_runs_mixed_close_and_far():
    a, b = entry(1, 0, 10), entry(2, 20, 10)
    c, d = entry(3, 30 + 2 * COALESCE_GAP, 10), entry(4, 40 + 2 * COALESCE_GAP, 10)
    e = entry(5, 50 + 5 * COALESCE_GAP, 1)
    assert pack_runs([e, d, c, b, a]) == [[a, b], [c, d], [e]]


# ---------------------------------------------------------------------------------------------------
# read_exactly
# ---------------------------------------------------------------------------------------------------

class ShortReads:
    """A stream that returns at most ``chunk`` bytes per read, then b'' at the end, recording each request."""

    def __init__(self, data: bytes, chunk: int):
        self.data, self.chunk, self.pos = data, chunk, 0
        self.asked = []

    def read(self, n: int) -> bytes:
        self.asked.append(n)
        out = self.data[self.pos:self.pos + min(n, self.chunk)]
        self.pos += len(out)
        return out


def test_read_exactly_retries_short_reads_until_it_has_length_bytes():
    stream = ShortReads(bytes(range(20)), chunk=3)
    assert read_exactly(stream, 10) == bytes(range(10))
    assert stream.asked == [10, 7, 4, 1]


def test_read_exactly_one_full_read():
    stream = ShortReads(b"abcdef", chunk=100)
    assert read_exactly(stream, 6) == b"abcdef"
    assert stream.asked == [6]


def test_read_exactly_stream_ending_early_returns_what_there_was_after_seeing_eof():
    stream = ShortReads(b"abcde", chunk=2)
    assert read_exactly(stream, 10) == b"abcde"
    assert stream.asked == [10, 8, 6, 5]  # the last read returned b'': end of file


def test_read_exactly_empty_stream():
    stream = ShortReads(b"", chunk=2)
    assert read_exactly(stream, 4) == b""
    assert stream.asked == [4]


def test_read_exactly_zero_length_reads_nothing():
    stream = ShortReads(b"abc", chunk=2)
    assert read_exactly(stream, 0) == b""
    assert stream.asked == []


# ---------------------------------------------------------------------------------------------------
# part_bounds and Downloads (large objects as parts of the pull's pool, hashed in order from memory)
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, part, expected", [
    (0, 4, [(0, 0)]),
    (1, 4, [(0, 1)]),
    (4, 4, [(0, 4)]),
    (5, 4, [(0, 4), (4, 5)]),
    (12, 4, [(0, 4), (4, 8), (8, 12)]),
])
def test_part_bounds_exact(size, part, expected):
    assert part_bounds(size, part) == expected


@pytest.mark.parametrize("size", [0, 1, 7, PART - 1, PART, PART + 1, 3 * PART - 1, 17 * PART + 12345])
def test_part_bounds_are_contiguous_and_cover_the_object(size):
    bounds = part_bounds(size)
    assert bounds[0][0] == 0 and bounds[-1][1] == size
    assert all(end == start for (_, end), (start, _) in zip(bounds, bounds[1:]))
    assert all(0 < end - start <= PART for start, end in bounds) or size == 0
    assert len(bounds) == max(1, math.ceil(size / PART))


def test_part_is_16_mib_and_the_window_holds_at_least_two():
    assert PART == 16 * MiB
    assert window_for(0) == 2 and window_for(160 * MiB) == 10


class PartStore:
    """open_range over in-memory objects; ``gate(key, start)`` runs before a range is served (to reorder or fail
    parts), and every range asked is recorded."""

    def __init__(self, objects, gate=lambda key, start: None):
        self.objects, self.gate, self.asked = objects, gate, []
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def open_range(self, key, start, length):
        with self.lock:
            self.asked.append((key, start, length))
        self.gate(key, start)
        yield io.BytesIO(self.objects[key][start:start + length])


def run_parts(downloads, tasks, threads):
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(t) for t in tasks]
        for f in futures:
            f.result()


@pytest.mark.parametrize("threads", [1, 3, 8])
def test_downloads_write_and_hash_every_object_in_order_whatever_order_parts_land(tmp_path, monkeypatch, threads):
    """Parts landing out of order (each waits a random little while) still give every file its exact bytes and
    sha256, each range asked exactly once, and the verified callback once per object, after its file is closed.
    Parts travel in slices (of 300 bytes here)."""
    monkeypatch.setattr(download, "PART", 1000)
    _slices_of(300, monkeypatch)
    objects = {f"k{i}": os.urandom(n) for i, n in enumerate([5 * 1000 + 3, 1000, 1, 7 * 1000])}
    rng = random.Random(7)
    store = PartStore(objects, gate=lambda key, start: time.sleep(rng.random() / 200))
    downloads = Downloads(store, window=4)
    done = {}
    tasks = []
    for key, data in objects.items():
        tasks += downloads.add(key, len(data), tmp_path / key, lambda n: None,
                               lambda sha, key=key: done.setdefault(key, (sha, (tmp_path / key).read_bytes())))
    run_parts(downloads, tasks, threads)
    assert done == {k: (hashlib.sha256(d).hexdigest(), d) for k, d in objects.items()}
    assert sorted(store.asked) == sorted(set(store.asked))
    assert sum(n for _, _, n in store.asked) == sum(len(d) for d in objects.values())
    assert all(obj.fd is None and obj.finished for obj in downloads.objects)


def _slices_of(size, monkeypatch):
    monkeypatch.setattr(download, "WRITE_SLICE", size)
    monkeypatch.setattr(fsutil, "WRITE_SLICE", size)


def test_parts_are_written_in_slices_and_the_awaited_part_is_hashed_as_it_comes(tmp_path, monkeypatch):
    """No write larger than a slice (large writes are slow on VMs); the part the hash waits for is hashed slice by
    slice as each is read, not once the whole part is in (so an object's hash ends with its last byte); every
    slice is read into the same buffer (fresh memory for each would cost a page fault every 4 KiB)."""
    monkeypatch.setattr(download, "PART", 1000)
    _slices_of(256, monkeypatch)
    data = os.urandom(2500)
    events = []

    buffers = set()

    class Body(io.BytesIO):
        def readinto(self, b):
            n = super().readinto(b)
            events.append(("read", n))
            buffers.add(id(b.obj))
            return n

    class Sha:
        def __init__(self, real=hashlib.sha256):
            self.real = real()

        def update(self, chunk):
            events.append(("hash", len(chunk)))
            self.real.update(chunk)

        def hexdigest(self):
            return self.real.hexdigest()

    store = PartStore({"k": data})
    store.open_range = contextlib.contextmanager(lambda key, start, length: (yield Body(data[start:start + length])))
    monkeypatch.setattr(download.hashlib, "sha256", Sha)
    writes = []
    real_pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, b, pos: writes.append(len(b)) or real_pwrite(fd, b, pos))
    result = []
    run_parts(None, Downloads(store, window=3).add("k", len(data), tmp_path / "k", lambda n: None, result.append), 1)
    monkeypatch.undo()
    assert result == [hashlib.sha256(data).hexdigest()] and (tmp_path / "k").read_bytes() == data
    assert max(writes) == 256 and sum(writes) == len(data)
    reads = [n for what, n in events if what == "read"]
    assert max(reads) == 256 and sum(reads) == len(data)
    assert events == [e for n in reads for e in (("read", n), ("hash", n))]
    assert len(buffers) == 1


def test_parts_that_land_before_the_hash_reaches_them_are_hashed_from_the_file(tmp_path, monkeypatch):
    """A part that lands while the hash waits for an earlier one is not held in memory: the hash reads it back
    from the file, so what is verified is what the file holds (bytes changed in the file meanwhile fail it)."""
    monkeypatch.setattr(download, "PART", 100)
    data = os.urandom(300)

    def gate(key, start):
        if start == 0:     # the awaited part comes last: parts 1 and 2 in first, then the file is changed
            deadline = time.monotonic() + 10
            while downloads.objects[0].landed != {1, 2}:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            fd = os.open(tmp_path / "k", os.O_WRONLY)
            os.pwrite(fd, b"X", 150)
            os.close(fd)

    downloads = Downloads(PartStore({"k": data}, gate), window=3)
    result = []
    tasks = downloads.add("k", len(data), tmp_path / "k", lambda n: None, result.append)
    with ThreadPoolExecutor(3) as pool:
        for f in [pool.submit(t) for t in tasks]:
            f.result()
    changed = data[:150] + b"X" + data[151:]
    assert result == [hashlib.sha256(changed).hexdigest()] != [hashlib.sha256(data).hexdigest()]


def test_downloads_hold_at_most_the_window_of_parts(tmp_path, monkeypatch):
    """With part 0 held back, the other workers fetch at most window - 1 parts after it, then wait."""
    monkeypatch.setattr(download, "PART", 100)
    data = os.urandom(100 * 20)
    release, started = threading.Event(), []

    def gate(key, start):
        started.append(start)
        if start == 0:
            assert release.wait(10)

    store = PartStore({"k": data}, gate)
    downloads = Downloads(store, window=3)
    result = []
    tasks = downloads.add("k", len(data), tmp_path / "k", lambda n: None, result.append)
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(t) for t in tasks]
        time.sleep(0.5)
        assert sorted(started) == [0, 100, 200]      # parts 0-2 only: the window is full until part 0 lands
        release.set()
        for f in futures:
            f.result()
    assert result == [hashlib.sha256(data).hexdigest()] and (tmp_path / "k").read_bytes() == data


def test_downloads_abort_removes_what_was_not_verified(tmp_path, monkeypatch):
    """A part that fails leaves its object's file to abort(), which removes it (and only the unverified ones)."""
    monkeypatch.setattr(download, "PART", 100)
    good, bad = os.urandom(250), os.urandom(250)

    def gate(key, start):
        if key == "bad" and start == 200:
            raise OSError("connection dropped")

    store = PartStore({"good": good, "bad": bad}, gate)
    downloads = Downloads(store, window=8)
    verified = []
    tasks = downloads.add("good", 250, tmp_path / "good", lambda n: None, verified.append)
    tasks += downloads.add("bad", 250, tmp_path / "bad", lambda n: None, verified.append)
    with pytest.raises(OSError, match="dropped"):
        run_parts(downloads, tasks, 1)
    downloads.abort()
    assert verified == [hashlib.sha256(good).hexdigest()]
    assert (tmp_path / "good").read_bytes() == good and not (tmp_path / "bad").exists()


def test_a_part_shorter_than_asked_is_a_damaged_object(tmp_path):
    store = PartStore({"k": b"x" * 10})
    downloads = Downloads(store, window=2)
    tasks = downloads.add("k", 20, tmp_path / "k", lambda n: None, lambda sha: None)
    with pytest.raises(IntegrityError, match="shorter than its manifest says"):
        run_parts(downloads, tasks, 1)
    downloads.abort()
    assert not (tmp_path / "k").exists()


def test_files_are_written_in_slices_whatever_the_kernel_takes(tmp_path, monkeypatch):
    """write_new (a pulled file that came whole, or from a pack) writes at most a slice a call, and goes on after
    a write that took less (a nearly full disk)."""
    _slices_of(256, monkeypatch)
    data = os.urandom(1000)
    writes = []
    real_pwrite = os.pwrite

    def pwrite(fd, b, pos):
        writes.append(len(b))
        return real_pwrite(fd, bytes(b)[:100] if len(writes) == 2 else b, pos)   # the second write takes 100

    monkeypatch.setattr(os, "pwrite", pwrite)
    fsutil.write_new(tmp_path / "f", data)
    monkeypatch.undo()
    assert (tmp_path / "f").read_bytes() == data
    assert writes == [256, 256, 256, 256, 132]
