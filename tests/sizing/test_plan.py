import math
from dataclasses import replace
from datetime import date

import pytest

from ftplan.sizing.catalog import resolve_model
from ftplan.sizing.dataformat import BY_KEY
from ftplan.sizing.gpus import get_gpu
from ftplan.sizing.memory import FITS, estimate_memory, fit_verdict
from ftplan.sizing.method import recommend
from ftplan.sizing.plan import LocalBox, Workload, apply_limits, fastest, openai_status, pareto, search
from ftplan.sizing.prices import load_prices
from ftplan.sizing.setup import TrainingSetup
from ftplan.sizing.setupsearch import SEARCHED
from ftplan.sizing.trainers import apply_trainer

PINNED = frozenset(SEARCHED)  # the setup as given: compare objectives like for like


@pytest.fixture
def book():
    return load_prices()  # bundled rows only: conftest points XDG_CONFIG_HOME at an empty folder


def plan(model="llama-3.1-8b", objective_fmt="messages", tokens=50_000_000, examples=20_000, book=None, **kw):
    src = resolve_model(model)
    choice = recommend(BY_KEY[objective_fmt], examples=examples, tokens=tokens, model_id=src.model_id,
                       params=src.arch.total_params, adapter=kw.pop("adapter", None), method=kw.pop("method", None))
    work = Workload(tokens, tokens, choice.epochs, choice.objective, 2048, **kw.pop("work", {}))
    plans, notes = search(src.arch, work, choice, TrainingSetup(), book, model_id=src.model_id, **kw)
    return src, choice, work, plans, notes


def test_every_plan_fits_its_gpus_with_margin_by_the_memory_model(book):
    src, _, _, plans, _ = plan(book=book)
    cloud = [p for p in plans if p.kind == "cloud"]
    assert len(cloud) > 50
    for p in cloud:
        need = estimate_memory(src.arch, p.training_setup).per_gpu
        assert need == p.per_gpu_bytes and fit_verdict(need, p.gpu_memory_bytes) == FITS
        assert p.setup["micro_batch_size"] == p.training_setup.micro_batch_size  # what the recipe will carry


def test_qlora_only_where_lora_does_not_fit_with_margin(book):
    src, _, _, plans, _ = plan(book=book)
    for p in (q for q in plans if q.kind == "cloud" and q.adapter == "qlora"):
        frugal = apply_trainer(TrainingSetup(gpus=p.count, distributed="fsdp" if p.count > 1 else "none"),
                               p.setup["trainer"])  # micro-batch 1, checkpointing on: LoRA's smallest footprint
        assert fit_verdict(estimate_memory(src.arch, frugal).per_gpu, get_gpu(p.gpu).memory_bytes) != FITS
    assert {"lora", "qlora"} <= {p.adapter for p in plans}  # T4 needs QLoRA for 8B, H100 does not


def test_plans_are_sorted_by_cost_and_priced_by_their_rows(book):
    _, _, _, plans, _ = plan(book=book)
    assert [p.usd for p in plans] == sorted(p.usd for p in plans)
    lam = next(p for p in plans if p.provider == "lambda" and p.gpu == "H100" and p.count == 1)
    row = next(r for r in book.gpu_rows if r.provider == "lambda" and r.gpu == "H100" and r.counts == (1,))
    assert lam.usd == pytest.approx(row.usd_per_gpu_hour * lam.hours)
    assert lam.hours == pytest.approx((lam.train_seconds + lam.startup_seconds) / 3600)


def test_modal_adds_cpu_memory_and_region_multiplier(book):
    _, _, _, base, _ = plan(book=book, providers={"modal"}, gpus={"H100"}, counts={1})
    _, _, _, narrow, _ = plan(book=book, providers={"modal"}, gpus={"H100"}, counts={1}, region="narrow")
    m = book.providers["modal"]
    expected = 3.9492 + m["cpu_cores_per_gpu"] * m["cpu_usd_per_core_hour"] + m["memory_gib_per_gpu"] * \
        m["memory_usd_per_gib_hour"]
    assert base[0].usd_per_hour == pytest.approx(expected)
    assert narrow[0].usd == pytest.approx(base[0].usd * 1.75)


def test_more_gpus_are_faster_and_multi_node_appears_where_allowed(book):
    _, _, _, plans, _ = plan(book=book, providers={"modal"}, gpus={"H100"})
    by_count = {p.count: p for p in plans}
    assert set(by_count) >= {1, 2, 4, 8, 16, 32}
    assert by_count[8].train_seconds < by_count[1].train_seconds
    lam = plan(book=book, providers={"lambda"}, gpus={"H100"})[3]
    assert max(p.count for p in lam) == 8  # Lambda rows are single-node


def test_together_bills_tokens_by_size_band_and_objective(book):
    _, choice, work, plans, _ = plan(book=book, providers={"together"})
    [tg] = plans
    assert tg.usd == pytest.approx(work.billable_tokens_per_epoch * work.epochs / 1e6 * 0.48)
    *_, dpo, _ = plan(book=book, providers={"together"}, objective_fmt="preference")
    assert dpo[0].usd == pytest.approx(work.billable_tokens_per_epoch * work.epochs / 1e6 * 1.20)
    *_, kto, notes = plan(book=book, providers={"together"}, objective_fmt="unpaired_preference")
    assert kto == [] and any("not kto" in n for n in notes)
    *_, big, notes = plan("llama-3.1-405b", book=book, providers={"together"})
    assert big == [] and any("not on it" in n for n in notes)  # Together's list has no 405B base
    *_, tiny, notes = plan("Qwen/Qwen2.5-0.5B", book=book, providers={"together"})
    assert tiny == [] and any("not on it" in n for n in notes)


def test_reference_forward_makes_dpo_slower_than_simpo(book):
    kw = dict(providers={"lambda"}, gpus={"H100"}, counts={1}, objective_fmt="preference", pinned=PINNED)
    simpo = plan(book=book, method="simpo", **kw)[3][0]  # the same pairs, no reference model
    dpo = plan(book=book, **kw)[3][0]
    assert dpo.train_seconds > 1.2 * simpo.train_seconds


def test_precomputed_reference_costs_one_pass_not_one_per_epoch(book):
    kw = dict(providers={"lambda"}, gpus={"H100"}, counts={1}, objective_fmt="preference", pinned=PINNED)
    live = plan(book=book, **kw)[3][0]
    pre = plan(book=book, work={"precomputed_reference": True}, **kw)[3][0]
    simpo = plan(book=book, method="simpo", **kw)[3][0]
    assert live.train_seconds > pre.train_seconds > simpo.train_seconds


def test_grpo_generation_dominates(book):
    work = {"prompts": 10_000, "group_size": 8, "completion_len": 256}
    grpo = plan(book=book, providers={"lambda"}, gpus={"H100"}, counts={1}, objective_fmt="prompt_only",
                work=work, pinned=PINNED)[3][0]
    sft = plan(book=book, providers={"lambda"}, gpus={"H100"}, counts={1}, pinned=PINNED)[3][0]
    assert grpo.train_seconds > 1.5 * sft.train_seconds


def test_local_box_costs_power_and_amortisation(book):
    box = LocalBox(get_gpu("RTX-4090"), 2, 0.20, 0.8, card_price_usd=1600, lifetime_hours=10_000)
    plans = plan(book=book, local=box, today=date(2026, 11, 24))[3]
    [local] = [p for p in plans if p.kind == "local"]
    assert local.usd_per_hour == pytest.approx(2 * 450 * 0.8 / 1000 * 0.20 + 2 * 1600 / 10_000)
    assert local.usd == pytest.approx(local.usd_per_hour * local.hours)


def test_local_box_that_cannot_hold_the_job_says_so(book):
    box = LocalBox(get_gpu("T4"), 1, 0.2, 0.8)
    _, _, _, plans, notes = plan("llama-3.1-70b", book=book, local=box)
    assert not any(p.kind == "local" for p in plans) and any("cannot hold" in n for n in notes)


def test_pareto_front_is_exactly_the_undominated_plans(book):
    plans = plan(book=book)[3]
    front = pareto(plans)
    timed = [p for p in plans if p.hours is not None]
    ids = {id(p) for p in front}
    for p in timed:
        dominated = any(q.usd <= p.usd and q.hours < p.hours or q.usd < p.usd and q.hours <= p.hours for q in timed)
        assert (id(p) in ids) == (not dominated)


def test_fastest_prefers_the_cheaper_of_near_ties(book):
    plans = plan(book=book)[3]
    f = fastest(plans)
    best = min(p.hours for p in plans if p.hours)
    assert f.hours <= best + max(1 / 60, 0.02 * best)
    assert all(p.usd >= f.usd for p in plans if p.hours is not None and p.hours <= best + max(1 / 60, 0.02 * best))


def test_limits_filter_and_explain_what_would_fit(book):
    plans = plan(book=book)[3]
    kept, msg = apply_limits(plans, max_cost=5.0, max_hours=None)
    assert kept and msg is None and all(p.usd <= 5 for p in kept)
    kept, msg = apply_limits(plans, max_cost=0.0001, max_hours=None)
    assert kept == [] and "cheapest plan" in msg and "--max-cost" in msg
    kept, msg = apply_limits(plans, max_cost=None, max_hours=0.01)
    assert kept == [] and "fastest" in msg


def test_openai_calendar_warns_before_and_refuses_after_the_cutoff(book):
    ok, text = openai_status(book, date(2026, 11, 24))
    assert ok and "2027-01-06" in text
    ok, text = openai_status(book, date(2027, 2, 1))
    assert not ok and "stopped" in text


def test_full_finetune_of_70b_needs_many_gpus(book):
    plans = plan("llama-3.1-70b", adapter="full", book=book)[3]
    cloud = [p for p in plans if p.kind == "cloud"]
    assert cloud and min(p.count for p in cloud) >= 4 and all(p.distributed == "fsdp" for p in cloud)


def test_search_is_deterministic(book):
    a = [p.to_dict() for p in plan(book=book)[3]]
    b = [p.to_dict() for p in plan(book=book)[3]]
    assert a == b and not any(math.isnan(p["usd"]) for p in a)


def test_pinned_fields_stay_as_the_user_set_them(book):
    src = resolve_model("llama-3.1-8b")
    choice = recommend(BY_KEY["messages"], examples=5000, tokens=10**7, model_id=src.model_id,
                       params=src.arch.total_params)
    work = Workload(10**7, 10**7, 1, "sft", 2048)
    base = replace(TrainingSetup(), seq_len=4096, micro_batch_size=2, gradient_checkpointing=True, trainer="trl")
    pinned = frozenset({"micro_batch_size", "gradient_checkpointing", "trainer"})
    plans, _ = search(src.arch, work, choice, base, book, providers={"lambda"}, gpus={"H100"}, counts={1},
                      pinned=pinned)
    s = plans[0].setup
    assert (s["micro_batch_size"], s["gradient_checkpointing"], s["trainer"]) == (2, True, "trl")
    free, _ = search(src.arch, work, choice, base, book, providers={"lambda"}, gpus={"H100"}, counts={1})
    assert free[0].setup["trainer"] == "unsloth"  # one GPU, LoRA: what ftplan's program runs there
    assert free[0].usd <= plans[0].usd  # the search never does worse than a pinned setup it could have chosen


def test_openai_plans_only_when_asked_and_never_after_the_cutoff(book):
    _, _, work, plans, notes = plan(book=book, providers={"openai"}, today=date(2026, 11, 24))
    assert {p.provider for p in plans} == {"openai"}
    mini = next(p for p in plans if "gpt-4.1-mini" in p.label)
    assert mini.usd == pytest.approx(work.billable_tokens_per_epoch * work.epochs / 1e6 * 5.0)
    assert not any("nano" in p.label for p in plans)  # retired 2026-10-23 in the price data
    _, _, _, late, notes = plan(book=book, providers={"openai"}, today=date(2027, 1, 7))
    assert late == [] and any("stopped" in n for n in notes)
    _, _, _, default, _ = plan(book=book, today=date(2026, 11, 24))
    assert not any(p.provider == "openai" for p in default)


def test_teacher_adds_time_and_memory(book):
    src = resolve_model("llama-3.1-8b")
    choice = recommend(BY_KEY["messages"], examples=5000, tokens=10**7, model_id=src.model_id,
                       params=src.arch.total_params, method="distillation")
    base_work = Workload(10**7, 10**7, 1, "distillation", 2048)
    teacher = resolve_model("llama-3.1-70b").arch.total_params
    kw = dict(providers={"lambda"}, gpus={"H100"}, counts={8}, pinned=PINNED)
    [plain], _ = search(src.arch, base_work, choice, TrainingSetup(distributed="fsdp"), book, **kw)
    [taught], _ = search(src.arch, replace(base_work, teacher_params=teacher), choice,
                         TrainingSetup(distributed="fsdp"), book, **kw)
    # At best the teacher's 2 FLOPs per parameter per token run at full peak on all 8 GPUs.
    floor = 10**7 * 2 * teacher / (get_gpu("H100").bf16_tflops * 1e12 * 8)
    assert taught.train_seconds - plain.train_seconds > floor
    assert taught.train_seconds > 3 * plain.train_seconds  # a 70B forward per token outweighs 8B LoRA training
    assert taught.per_gpu_bytes > plain.per_gpu_bytes


def test_preference_pairs_double_the_activations_of_a_micro_batch(book):
    kw = dict(providers={"lambda"}, gpus={"H100"}, counts={1}, pinned=PINNED)
    sft = plan(book=book, **kw)[3][0]
    dpo = plan(book=book, objective_fmt="preference", **kw)[3][0]
    src = resolve_model("llama-3.1-8b")
    two = estimate_memory(src.arch, replace(sft.training_setup, micro_batch_size=2)).per_gpu
    assert dpo.training_setup.micro_batch_size == 2 and dpo.per_gpu_bytes == two > sft.per_gpu_bytes
