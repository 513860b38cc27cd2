"""The sweep report's picture reads: a learning-rate sweep on a log axis whose ticks are the
swept values, printed short; whole-number steps; other values on a plain axis."""

import json
import math

import pytest
import yaml

from runner import report


def _sweep(root, values):
    """A sweep folder as runner jobs leave it: overrides, metrics.jsonl, summary.json."""
    for i, (lr, rank) in enumerate(values):
        job = root / str(i)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
            [f"optimizer.learning_rate={lr}", f"lora.rank={rank}"]))
        records = [{"step": s, "loss": 2.5 * math.exp(-s * lr * 10) + 0.3}
                   for s in range(5, 61, 5)]
        (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (job / "summary.json").write_text(json.dumps(
            {"status": "finished", "steps": 60, "final_loss": records[-1]["loss"]}))
    return root


@pytest.mark.parametrize("rates,labels", [
    ((1e-4, 3e-4, 1e-3), ["0.0001", "0.0003", "0.001"]),
    ((1e-3, 1.25e-3, 1.5e-3), ["0.001", "0.00125", "0.0015"]),  # ran into "0.001000.00125..."
])
def test_a_learning_rate_sweep_has_a_log_axis_with_its_values_as_labels(tmp_path, rates,
                                                                         labels):
    folder = _sweep(tmp_path, [(lr, 4 if i % 2 else 8) for i, lr in enumerate(rates)])
    swept, rows = report.collect(folder)
    assert swept == ["lora.rank", "optimizer.learning_rate"]
    fig = report.figure(folder, swept, rows)
    fig.canvas.draw()
    curves, by_rank, by_lr = fig.axes
    assert by_lr.get_xscale() == "log" and by_rank.get_xscale() == "linear"
    assert [t.get_text() for t in by_lr.get_xticklabels()] == labels
    assert not by_lr.xaxis.get_minor_ticks() or all(
        not t.label1.get_text() for t in by_lr.xaxis.get_minor_ticks())
    steps = [t for t in curves.get_xticks() if curves.get_xlim()[0] <= t <= curves.get_xlim()[1]]
    assert steps and all(float(t).is_integer() for t in steps)
    assert report.draw(folder, swept, rows).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_which_values_get_a_log_axis():
    assert report.log_scale("optimizer.learning_rate", [1e-3, 1.2e-3])
    assert report.log_scale("train.batch_size", [4, 16])
    assert not report.log_scale("lora.rank", [4, 8])
    assert not report.log_scale("optimizer.weight_decay", [0.0, 0.1])  # a zero: no log axis
