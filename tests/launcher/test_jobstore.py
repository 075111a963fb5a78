import multiprocessing as mp
import sqlite3

import pytest

from ftplan.launcher import speedlog
from ftplan.launcher.jobstore import FinalRecordError, JobStore
from ftplan.sizing.errors import FtplanError


def test_create_update_get_and_literal_prefix_or_suffix_lookup(tmp_path):
    store = JobStore(tmp_path / "j.sqlite3")
    jid = store.create("local", recipe_hash="abc", name="r", plan={"usd": 1.5}, output_dir="/o")
    store.update(jid, status="running", actuals={"usd": 0.1})
    store.merge_provider_ids(jid, pid=123)
    job = store.get(jid[-6:])
    assert job["status"] == "running" and job["plan"] == {"usd": 1.5} and job["provider_ids"] == {"pid": 123}
    assert store.get(jid[:15])["id"] == jid and store.get(jid)["id"] == jid
    with pytest.raises(FtplanError, match="no job"):
        store.get("nope")
    assert sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persists in the file


@pytest.mark.parametrize("pattern", ["%", "_", "%%", "2026%", "%-%", "____"])
def test_sql_wildcards_are_characters_not_patterns(tmp_path, pattern):
    store = JobStore(tmp_path / "j.sqlite3")
    store.create("local", job_id="20261202-070000-aaaaaa")
    with pytest.raises(FtplanError, match="no job"):
        store.get(pattern)


def test_an_ambiguous_prefix_names_the_candidates(tmp_path):
    store = JobStore(tmp_path / "j.sqlite3")
    a = store.create("local", job_id="20261202-070000-aaaaaa")
    b = store.create("local", job_id="20261202-070001-bbbbbb")
    with pytest.raises(FtplanError, match="matches 2 jobs") as exc:
        store.get("20261202-07")
    assert a in str(exc.value) and b in str(exc.value)


def test_a_final_record_never_changes_but_takes_annotations(tmp_path):
    store = JobStore(tmp_path / "j.sqlite3")
    jid = store.create("local", status="running")
    store.update(jid, status="failed", error="killed")
    for change in ({"status": "completed"}, {"actuals": {"steps": 60}}, {"error": None}):
        with pytest.raises(FinalRecordError, match="is final"):
            store.update(jid, **change)
    store.update(jid, eval={"passed": True}, outputs={"path": "/x"})  # later commands' results about it
    job = store.get(jid)
    assert job["status"] == "failed" and job["error"] == "killed" and job["eval"] == {"passed": True}


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
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _opener(path, barrier, results):
    barrier.wait()
    try:
        JobStore(path)
        results.put("ok")
    except Exception as exc:  # reported back to the test, which names it
        results.put(repr(exc))


@pytest.mark.parametrize("old_store", [False, True], ids=["new", "older-release"])
def test_several_clis_opening_the_store_at_the_same_moment_all_get_it(tmp_path, old_store):
    """`ftplan run` and the `ftplan jobs` watching it open a store that does not exist yet at once.

    SQLite (sqlite.org/wal.html, "Activating And Configuring WAL Mode"; sqlite.org/lang_altertable.html)
    answers a journal-mode change under another connection's lock with SQLITE_BUSY at once, and an
    ALTER TABLE that lost the race with "duplicate column": neither is a damaged store.
    """
    ctx = mp.get_context("spawn")
    for trial in range(4):
        path = tmp_path / f"jobs{trial}.sqlite3"
        if old_store:  # the first release's table, before the migrated columns
            sqlite3.connect(path).executescript("CREATE TABLE jobs (id TEXT PRIMARY KEY, provider TEXT NOT NULL, "
                                                "status TEXT NOT NULL, created_at REAL, updated_at REAL)")
        barrier, results = ctx.Barrier(5), ctx.Queue()
        procs = [ctx.Process(target=_opener, args=(path, barrier, results)) for _ in range(5)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(60)
        assert outcomes == ["ok"] * 5, outcomes
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert {"resumed_from", "options", "outputs"} <= {r[1] for r in db.execute("PRAGMA table_info(jobs)")}


def test_a_damaged_store_is_named_with_what_to_do(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    path.write_bytes(b"\x00garbage, not sqlite" * 100)
    with pytest.raises(FtplanError) as exc:
        JobStore(path)
    assert str(path) in str(exc.value) and "Move it aside" in str(exc.value) and "--import" in str(exc.value)


def test_speed_correction_is_the_median_ratio_and_a_damaged_log_is_ignored_with_a_note(tmp_path):
    log = tmp_path / "speed.json"
    assert speedlog.corrections(log) == ({}, None)
    for i, (pred, act) in enumerate([(1000, 800), (1000, 900), (1000, 1200)]):
        speedlog.record("H100", f"j{i}", pred, act, file=log)
    assert speedlog.corrections(log)[0] == {"H100": (0.9, 3)}
    log.write_text("{not json")
    found, note = speedlog.corrections(log)
    assert found == {} and str(log) in note
