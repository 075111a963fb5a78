import json

import pytest

from ftplan.recipes.backend import select_backend
from ftplan.recipes.checkpoints import last_complete, mark_complete
from ftplan.recipes.events import EventWriter, read_events, validate_event
from ftplan.recipes.launch import accelerate_config, training_command
from ftplan.recipes.rewards import brevity, exact_answer, load_reward
from ftplan.sizing.errors import FtplanError


@pytest.mark.parametrize("kw,name", [
    (dict(adapter="lora", objective="sft", cuda=True, unsloth_installed=True), "unsloth"),
    (dict(adapter="qlora", objective="dpo", cuda=True, unsloth_installed=True), "unsloth"),
    (dict(adapter="lora", objective="sft", cuda=False, unsloth_installed=True), "peft"),
    (dict(adapter="lora", objective="sft", cuda=True, unsloth_installed=False), "peft"),
    (dict(adapter="lora", objective="sft", cuda=True, unsloth_installed=True, gpus=4), "peft"),
    (dict(adapter="dora", objective="sft", cuda=True, unsloth_installed=True), "peft"),
    (dict(adapter="lora", objective="simpo", cuda=True, unsloth_installed=True), "peft"),
    (dict(adapter="full", objective="sft", cuda=True, unsloth_installed=True), "full"),
])
def test_backend_selection_says_why(kw, name):
    b = select_backend(**kw)
    assert b.name == name and len(b.reason) > 10


def test_events_reader_never_returns_a_half_written_line(tmp_path):
    w = EventWriter(tmp_path / "e.jsonl")
    w.emit("started", objective="sft")
    w.emit("step", step=1, total=2, loss=1.0)
    with open(tmp_path / "e.jsonl", "a") as fh:
        fh.write('{"type": "step", "ste')  # a writer mid-line
    pairs, offset = read_events(tmp_path / "e.jsonl")
    assert [e["type"] for _, e in pairs] == ["started", "step"]
    assert all(validate_event(e) == [] for _, e in pairs)
    with open(tmp_path / "e.jsonl", "a") as fh:
        fh.write('p": 2, "total": 2, "time": 1}\n')
    more, _ = read_events(tmp_path / "e.jsonl", offset)
    assert [(seq, e["step"]) for seq, e in more] == [(offset, 2)]
    assert validate_event({"type": "step", "time": 1}) == ["step event without 'step'", "step event without 'total'"]
    with pytest.raises(ValueError):
        w.emit("exploded")


def test_half_written_checkpoint_is_skipped(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        (root / f"checkpoint-{step}").mkdir(parents=True)
    mark_complete(root / "checkpoint-2", 2)
    mark_complete(root / "checkpoint-4", 4)
    assert last_complete(root) == root / "checkpoint-4"  # checkpoint-6 has no marker: never loaded
    assert last_complete(tmp_path / "none") is None


def test_multi_gpu_runs_through_accelerate_with_a_config_from_the_plan(tmp_path):
    import yaml

    cmd = training_command("r.yaml", tmp_path, tmp_path / "e.jsonl", gpus=4, distributed="fsdp")
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    cfg = yaml.safe_load((tmp_path / "accelerate.yaml").read_text())
    assert cfg["distributed_type"] == "FSDP" and cfg["num_processes"] == 4
    assert "ftplan.recipes.train" in cmd
    assert accelerate_config(8, "zero3")["deepspeed_config"]["zero_stage"] == 3
    single = training_command("r.yaml", tmp_path, tmp_path / "e.jsonl", gpus=1, resume=True)
    assert single[1:3] == ["-m", "ftplan.recipes.train"] and "--resume" in single


def test_rewards():
    assert exact_answer(["it is 42", "41"], answer=["42", "42"]) == [1.0, 0.0]
    assert exact_answer([[{"role": "assistant", "content": "7"}]], answer=[7]) == [1.0]
    assert brevity(["short", "word " * 300]) == [1.0, 0.0]
    assert load_reward("ftplan.recipes.rewards:brevity") is brevity
    with pytest.raises(FtplanError, match="module:function"):
        load_reward("brevity")
    with pytest.raises(FtplanError, match="cannot be imported"):
        load_reward("nope.mod:f")
    json.dumps({})


def test_callback_checkpoints_by_time_and_stops_on_request(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from types import SimpleNamespace

    from ftplan.recipes import callbacks

    clock = [1000.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: clock[0])
    stop = callbacks.StopFlag()
    cb = callbacks.EventCallback(EventWriter(tmp_path / "e.jsonl"), stop, every_minutes=1, usd_per_hour=3.6)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    state = SimpleNamespace(global_step=5)
    cb.on_step_end(None, state, control)
    assert not control.should_save
    clock[0] += 61
    cb.on_step_end(None, state, control)
    assert control.should_save and not control.should_training_stop
    control.should_save = False
    stop.request("SIGTERM")
    cb.on_step_end(None, state, control)
    assert control.should_save and control.should_training_stop and cb.stopped_at == 5


def test_multi_node_accelerate_config_names_the_main_machine(tmp_path):
    import yaml

    cmd = training_command("r.yaml", tmp_path, tmp_path / "e.jsonl", gpus=16, machines=2, rank=1, main_ip="10.0.0.1")
    cfg = yaml.safe_load((tmp_path / "accelerate.yaml").read_text())
    assert (cfg["num_processes"], cfg["num_machines"], cfg["machine_rank"], cfg["main_process_ip"]) == \
        (16, 2, 1, "10.0.0.1")
    assert "--config_file" in cmd


def test_a_full_disk_is_named_and_the_half_written_checkpoint_removed(tmp_path):
    """ENOSPC as the OS raises it (here the errno, as on a full disk) and torch's zip-writer text: both name the
    cause, remove the checkpoint without a completion marker and keep the complete one."""
    import errno

    from ftplan.recipes.checkpoints import checkpoints, mark_complete, write_failure

    root = tmp_path / "checkpoints"
    (root / "checkpoint-2").mkdir(parents=True)
    (root / "checkpoint-2" / "adapter_model.safetensors").write_bytes(b"x" * 10)
    mark_complete(root / "checkpoint-2", 2)
    (root / "checkpoint-4").mkdir()
    (root / "checkpoint-4" / "optimizer.pt").write_bytes(b"x" * 3)
    err = OSError(errno.ENOSPC, "No space left on device")
    said = write_failure(err, root)
    assert said.startswith(f"writing to {tmp_path} failed: the disk is full;") and "checkpoint-4" in said
    assert "checkpoint-2, is kept" in said and "--resume" in said
    assert [(s, done) for s, _, done in checkpoints(root)] == [(2, True)]
    torch_says = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64960 vs 64852")
    assert "unexpected pos 64960 vs 64852" in write_failure(torch_says, root)
    assert write_failure(ValueError("unrelated"), root) is None
