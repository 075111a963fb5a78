from ftplan.sizing.matrix import EXAMPLES, MAX_HOURS, MODELS, sizing_matrix


def test_matrix_covers_the_grid_and_grows_with_the_job():
    cells = sizing_matrix()
    assert len(cells) == len(EXAMPLES) * len(MODELS)
    for label, _ in MODELS:
        row = [c for c in cells if c.model_label == label]
        costs = [c.plan.usd for c in row]
        assert costs == sorted(costs), label  # more data never costs less
        assert all(c.plan is not None for c in row)
    for n in EXAMPLES:
        col = [c for c in cells if c.examples == n]
        gpu_mem = [c.plan.count * c.plan.gpu_memory_bytes for c in col]
        assert gpu_mem[-1] > gpu_mem[0]  # 405B needs more GPU memory than 1B
    assert all(c.within_limit == (c.plan.hours <= MAX_HOURS) for c in cells)
    small = next(c for c in cells if c.examples == 1000 and c.model_label == "1B")
    assert small.plan.count == 1 and small.epochs == 3
