import multiprocessing as mp

import pytest

from ftplan.launcher.jobstore import JobStore
from ftplan.sizing.errors import FtplanError


def test_create_update_get_and_prefix_lookup(tmp_path):
    store = JobStore(tmp_path / "j.sqlite3")
    jid = store.create("local", recipe_hash="abc", name="r", plan={"usd": 1.5}, output_dir="/o")
    store.update(jid, status="running", actuals={"usd": 0.1})
    store.merge_provider_ids(jid, pid=123)
    job = store.get(jid[-6:])
    assert job["status"] == "running" and job["plan"] == {"usd": 1.5} and job["provider_ids"] == {"pid": 123}
    with pytest.raises(FtplanError, match="no job"):
        store.get("nope")
    import sqlite3

    assert sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persists in the file


def test_events_are_stored_once_even_when_ingested_twice(tmp_path):
    store = JobStore(tmp_path / "j.sqlite3")
    jid = store.create("local")
    pairs = [(0, {"type": "started", "time": 1}), (40, {"type": "step", "step": 1, "total": 2, "time": 2})]
    assert store.add_events(jid, pairs, 80) == 2
    assert store.add_events(jid, pairs, 80) == 0
    assert [e["type"] for e in store.events(jid)] == ["started", "step"]
    assert store.get(jid)["events_offset"] == 80


def _writer(path, jid, start, n):
    store = JobStore(path)
    for i in range(start, start + n):
        store.add_events(jid, [(i, {"type": "log", "time": i, "message": str(i)})], None)
        store.update(jid, status="running")


def test_two_processes_at_once_do_not_corrupt_the_store(tmp_path):
    path = tmp_path / "j.sqlite3"
    jid = JobStore(path).create("local")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, jid, s, 150)) for s in (0, 100)]  # overlapping 100..149
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = JobStore(path)
    seqs = [e["_seq"] for e in store.events(jid)]
    assert seqs == list(range(250))
    import sqlite3

    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_speed_correction_is_the_median_ratio(tmp_path):
    store = JobStore(tmp_path / "j.sqlite3")
    assert store.speed_correction("H100") is None
    for i, (pred, act) in enumerate([(1000, 800), (1000, 900), (1000, 1200)]):
        store.record_measurement("H100", f"j{i}", pred, act, None, None)
    assert store.speed_correction("H100") == (0.9, 3)
