"""The activation model against what autograd really saves, on a real architecture (random weights).

A 2-layer Llama is built from a config (no download) and one training step runs on the CPU in
bf16. A `saved_tensors_hooks` pack hook sees every tensor autograd keeps for the backward pass;
summing the unique storages saved inside decoder layer 0 gives the exact activation bytes per
token per layer, which the planner's `activation_bytes_per_token_layer` must match. (Chosen over
FakeTensorMode + a dispatch-mode byte counter: the hook counts exactly the saved set, with no
fake-device caveats, and a tiny real model steps in well under a second.)
"""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from ftplan.sizing.architecture import from_config  # noqa: E402
from ftplan.sizing.memory import activation_bytes_per_token_layer  # noqa: E402
from ftplan.sizing.setup import TrainingSetup  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.train]

CONFIG = dict(model_type="llama", hidden_size=256, intermediate_size=688, num_hidden_layers=2,
              num_attention_heads=8, num_key_value_heads=2, vocab_size=1000)
SEQ, BATCH = 128, 2


def measured_saved_bytes_per_token(adapter: str) -> float:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**{k: v for k, v in CONFIG.items() if k != "model_type"},
                                   attn_implementation="sdpa")
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    if adapter == "lora":
        model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    layer = next(m for n, m in model.named_modules() if n.endswith("layers.0"))
    state = {"inside": False, "seen": set(), "bytes": 0}
    layer.register_forward_pre_hook(lambda *a: state.update(inside=True))
    layer.register_forward_hook(lambda *a: state.update(inside=False))

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if state["inside"] and key not in state["seen"] and not (t.is_leaf and t.requires_grad):
            state["seen"].add(key)
            state["bytes"] += t.untyped_storage().nbytes()
        return t

    ids = torch.randint(0, 1000, (BATCH, SEQ))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    return state["bytes"] / (SEQ * BATCH)


@pytest.mark.parametrize("adapter", ["full", "lora"])
def test_activation_model_matches_autograd(adapter):
    measured = measured_saved_bytes_per_token(adapter)
    arch = from_config(CONFIG, "tiny-llama")
    modelled = activation_bytes_per_token_layer(arch, TrainingSetup(adapter=adapter, seq_len=SEQ, attention="flash"))
    assert modelled == pytest.approx(measured, rel=0.25)
