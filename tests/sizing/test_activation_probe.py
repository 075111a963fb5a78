"""The activation model against what autograd really saves, on a real architecture (random weights).

A 2-layer Llama is built from a config (no download) and one training step runs on the CPU in
bf16. A `saved_tensors_hooks` pack hook sees every tensor autograd keeps for the backward pass;
summing the unique storages saved inside decoder layer 0, parameters excluded (a frozen linear
keeps a view of its weight, which is not an activation), gives the exact activation bytes per token
per layer. The planner's tensor-by-tensor count (`activation_bytes_per_token_layer` before its
fitted GPU-side overhead factor) must match it for each way the saved set changes: full
fine-tuning, LoRA with and without dropout, fp32 adapters, and QLoRA through bitsandbytes' 4-bit
layers. (Chosen over FakeTensorMode + a dispatch-mode byte counter: the hook counts exactly the
saved set, with no fake-device caveats, and a tiny real model steps in well under a second.)

On the CPU, dropout keeps its mask in the activation dtype (2 B) where CUDA keeps 1 B, so the
fp32-adapter dropout case sits a little above the model; the tolerance covers that.
"""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from ftplan.sizing import constants as C  # noqa: E402
from ftplan.sizing.architecture import from_config  # noqa: E402
from ftplan.sizing.memory import activation_bytes_per_token_layer  # noqa: E402
from ftplan.sizing.setup import TrainingSetup  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.train]

CONFIG = dict(model_type="llama", hidden_size=256, intermediate_size=688, num_hidden_layers=2,
              num_attention_heads=8, num_key_value_heads=2, vocab_size=1000)
SEQ, BATCH = 128, 2
PEFT_TARGETS = {"all-linear": "all-linear", "q,v": ["q_proj", "v_proj"]}


def _model(adapter: str, tmp_path):
    cfg = transformers.LlamaConfig(**{k: v for k, v in CONFIG.items() if k != "model_type"},
                                   attn_implementation="sdpa")
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    if adapter != "qlora":
        return model
    pytest.importorskip("bitsandbytes")
    model.save_pretrained(tmp_path)
    quant = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                            bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)
    return transformers.LlamaForCausalLM.from_pretrained(tmp_path, quantization_config=quant, dtype=torch.bfloat16)


def measured_saved_bytes_per_token(setup: TrainingSetup, tmp_path) -> float:
    torch.manual_seed(0)
    model = _model(setup.adapter, tmp_path)
    if setup.is_adapter:
        model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=setup.lora_dropout,
                                                           target_modules=PEFT_TARGETS[setup.lora_targets]))
        if setup.adapter_dtype == "bf16":
            for p in model.parameters():
                if p.requires_grad:
                    p.data = p.data.to(torch.bfloat16)
    model.train()
    layer = next(m for n, m in model.named_modules() if n.endswith("layers.0"))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    state = {"inside": False, "seen": set(params), "bytes": 0}
    layer.register_forward_pre_hook(lambda *a: state.update(inside=True))
    layer.register_forward_hook(lambda *a: state.update(inside=False))

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if state["inside"] and key not in state["seen"]:
            state["seen"].add(key)
            state["bytes"] += t.untyped_storage().nbytes()
        return t

    ids = torch.randint(0, 1000, (BATCH, SEQ))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    return state["bytes"] / (SEQ * BATCH)


CASES = {
    "full": dict(adapter="full"),
    "lora": dict(adapter="lora", lora_dropout=0.0, adapter_dtype="bf16"),
    "lora-dropout": dict(adapter="lora", lora_dropout=0.05, adapter_dtype="bf16"),
    "lora-fp32-adapters": dict(adapter="lora", lora_dropout=0.0, adapter_dtype="fp32"),
    "lora-fp32-adapters-dropout": dict(adapter="lora", lora_dropout=0.05, adapter_dtype="fp32"),
    "lora-qv-dropout": dict(adapter="lora", lora_dropout=0.05, adapter_dtype="bf16", lora_targets="q,v"),
    "qlora": dict(adapter="qlora", lora_dropout=0.0, adapter_dtype="bf16"),
    "qlora-qv": dict(adapter="qlora", lora_dropout=0.0, adapter_dtype="bf16", lora_targets="q,v"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_activation_model_matches_autograd(case, tmp_path):
    setup = TrainingSetup(seq_len=SEQ, attention="flash", **CASES[case])
    measured = measured_saved_bytes_per_token(setup, tmp_path)
    arch = from_config(CONFIG, "tiny-llama")
    modelled = activation_bytes_per_token_layer(arch, setup) / C.ACTIVATION_OVERHEAD
    assert modelled == pytest.approx(measured, rel=0.2)


def test_dropout_and_legacy_bitsandbytes_change_the_saved_set(tmp_path):
    """The two switches move the count the way autograd moves: dropout adds, current bnb saves no input."""
    base = dict(seq_len=SEQ, attention="flash", adapter_dtype="bf16", lora_targets="q,v")
    no_drop = measured_saved_bytes_per_token(TrainingSetup(adapter="lora", lora_dropout=0.0, **base), tmp_path)
    drop = measured_saved_bytes_per_token(TrainingSetup(adapter="lora", lora_dropout=0.05, **base), tmp_path)
    qlora = measured_saved_bytes_per_token(TrainingSetup(adapter="qlora", lora_dropout=0.0, **base), tmp_path)
    assert drop > no_drop
    assert qlora == pytest.approx(no_drop, rel=0.05)  # bitsandbytes >= 0.43.2 keeps no 4-bit input
    arch = from_config(CONFIG, "tiny-llama")
    model = {k: activation_bytes_per_token_layer(arch, TrainingSetup(**base, **kw)) for k, kw in {
        "no_drop": dict(adapter="lora", lora_dropout=0.0), "drop": dict(adapter="lora", lora_dropout=0.05),
        "qlora": dict(adapter="qlora", lora_dropout=0.0),
        "legacy": dict(adapter="qlora", lora_dropout=0.0, quant_saves_inputs=True)}.items()}
    assert model["drop"] > model["no_drop"]
    assert model["qlora"] == model["no_drop"]
    assert model["legacy"] > model["qlora"]
