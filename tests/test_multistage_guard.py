"""The guard on multistage's stage 2 (issue 19): the confidence bound, the guard's rules, planted truth.

Planted truth: a predictor that is right keeps skipping; one that is wrong never starts; one that
goes wrong mid-run (the keyword's meaning flips) is paused and resumes once it has re-learned;
the unguarded stage 2 (``guard=False``) on the same streams skips the important examples.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from datadiet.core.engine import StepEngine
from datadiet.errors import ConfigError
from datadiet.functional.bounds import binomial_lower_bound, binomial_upper_bound
from datadiet.methods.multistage.guard import MIN_SKIP_RATE, SkipGuard, guard_limit, next_skip_rate
from datadiet.methods.multistage.method import MultistageMethod
from datadiet.methods.registry import build_method

from test_multistage import EASY, HARD, PlantedLossModel, planted_token_batches


# ---------------------------------------------------------------------- the bound (pure)
def binomial_pmf(k: int, n: int, p: float) -> float:
    return math.comb(n, k) * p**k * (1 - p) ** (n - k)


@pytest.mark.parametrize("confidence", [0.8, 0.95])
@pytest.mark.parametrize("n", [1, 5, 20, 80])
def test_bounds_cover_at_least_their_confidence_exactly(n, confidence):
    """Coverage computed exactly (sum over every outcome k), for true proportions from 0.001 to 0.999."""
    upper = [binomial_upper_bound(k, n, confidence=confidence) for k in range(n + 1)]
    lower = [binomial_lower_bound(k, n, confidence=confidence) for k in range(n + 1)]
    worst = 1.0
    for p in (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999):
        cov_u = sum(binomial_pmf(k, n, p) for k in range(n + 1) if upper[k] >= p)
        cov_l = sum(binomial_pmf(k, n, p) for k in range(n + 1) if lower[k] <= p)
        assert cov_u >= confidence - 1e-9 and cov_l >= confidence - 1e-9, (p, cov_u, cov_l)
        worst = min(worst, cov_u)
    assert worst < 1.0, "the bound is not trivially loose"
    # exact, not conservative by rounding: at the bound, P(X <= k) is 1 - confidence
    for k in range(n):
        cdf = sum(binomial_pmf(j, n, upper[k]) for j in range(k + 1))
        assert cdf == pytest.approx(1 - confidence, rel=1e-6)


def test_bounds_edge_cases_and_closed_forms():
    assert binomial_upper_bound(0, 0) == 1.0 and binomial_lower_bound(0, 0) == 0.0  # nothing known
    assert binomial_upper_bound(7, 7) == 1.0 and binomial_lower_bound(0, 7) == 0.0
    for n in (1, 3, 50, 1000):
        assert binomial_upper_bound(0, n, confidence=0.95) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-12)
        assert binomial_lower_bound(n, n, confidence=0.95) == pytest.approx(0.05 ** (1 / n), rel=1e-12)
    assert binomial_upper_bound(0, 1, confidence=0.95) == pytest.approx(0.95)
    # mirror image, monotone in k, shrinking with n, more confidence -> wider
    for k in range(11):
        assert binomial_lower_bound(k, 10) == pytest.approx(1 - binomial_upper_bound(10 - k, 10))
    ups = [binomial_upper_bound(k, 30) for k in range(31)]
    assert all(a < b for a, b in zip(ups, ups[1:-1])) and ups[-1] == 1.0
    assert binomial_upper_bound(10, 100) < binomial_upper_bound(1, 10)
    assert binomial_upper_bound(3, 40, confidence=0.99) > binomial_upper_bound(3, 40, confidence=0.9)
    assert 3 / 40 < binomial_upper_bound(3, 40) and binomial_lower_bound(3, 40) < 3 / 40


def test_bounds_equal_the_beta_quantiles():
    stats = pytest.importorskip("scipy.stats")
    for k, n in [(1, 10), (5, 10), (3, 256), (30, 256), (200, 256), (12, 1000)]:
        assert binomial_upper_bound(k, n, confidence=0.95) == pytest.approx(stats.beta.ppf(0.95, k + 1, n - k),
                                                                            rel=1e-8)
        assert binomial_lower_bound(k, n, confidence=0.9) == pytest.approx(stats.beta.ppf(0.1, k, n - k + 1),
                                                                           rel=1e-8)


@pytest.mark.parametrize(("args", "match"), [
    ((3, 2, 0.95), "k must be <= 2, got 3"),
    ((-1, 2, 0.95), "k must be >= 0"),
    ((0, -2, 0.95), "n must be >= 0"),
    ((1, 2, 1.0), "confidence must be < 1"),
    ((1, 2, 0.0), "confidence must be > 0"),
    ((1.5, 2, 0.9), "k must be an integer"),
])
def test_bound_arguments_are_checked(args, match):
    k, n, c = args
    for f in (binomial_upper_bound, binomial_lower_bound):
        with pytest.raises(ConfigError, match=match):
            f(k, n, confidence=c)


# ---------------------------------------------------------------------- the guard's rules (pure + state)
def test_skip_rate_halves_to_zero_and_doubles_back():
    r, down = 1.0, []
    for _ in range(5):
        r = next_skip_rate(r, False)
        down.append(r)
    assert down == [0.5, 0.25, MIN_SKIP_RATE, 0.0, 0.0]
    up = []
    for _ in range(5):
        r = next_skip_rate(r, True)
        up.append(r)
    assert up == [MIN_SKIP_RATE, 0.25, 0.5, 1.0, 1.0]
    assert next_skip_rate(0.75, True) == 1.0 and next_skip_rate(0.3, True) == 0.6
    assert guard_limit(0.1, 0.4) == 0.1 and guard_limit(0.1, 0.03) == 0.03  # never above the kept rate


def feed(guard: SkipGuard, n: int, false_rate: float, kept_rate: float, g: torch.Generator, seen: int = 0) -> None:
    """Feed ``n`` labelled predicted-unimportant and ``n`` predicted-important examples, in batches of 16."""
    for _ in range(n // 8):
        pu = torch.tensor([True] * 8 + [False] * 8)
        y = torch.cat([torch.rand(8, generator=g) < false_rate, torch.rand(8, generator=g) < kept_rate])
        guard.record(pu, y)
        guard.check(seen)


def test_skip_guard_judges_its_window_by_the_bound():
    g = torch.Generator().manual_seed(0)
    guard = SkipGuard(target=0.1, confidence=0.95, window=128, explore_fraction=0.05)
    feed(guard, 120, 0.0, 0.5, g)
    ev = guard.evidence()
    assert ev["evidence"] == 120 and ev["false_skips"] == 0 and not ev["passes"], "a window must be full"
    assert guard.state(warmed_up=True) == "collecting"
    feed(guard, 8, 0.0, 0.5, g)
    ev = guard.evidence()
    assert ev["passes"] and ev["false_skip_bound"] == pytest.approx(1 - 0.05 ** (1 / 128))
    assert guard.state(warmed_up=True) == "ready" and guard.state(warmed_up=False) == "collecting"
    assert guard.effective_skip_rate == 0.0, "nothing is skipped before stage 2"
    guard.start(examples_seen=1000)
    assert guard.active and guard.skip_rate == 1.0 and guard.effective_skip_rate == pytest.approx(0.95)
    # 12% of the skipped are important: the point estimate is near the target, the bound is over it
    feed(guard, 256, 0.12, 0.5, g)
    ev = guard.evidence()
    assert ev["false_skip_estimate"] < 0.16 and ev["false_skip_bound"] > 0.1 and not ev["passes"]
    assert guard.skip_rate < 1.0 and guard._c["lowered"] >= 1
    # a predictor no better than random: the kept examples are important as rarely as the skipped ones
    guard2 = SkipGuard(target=0.5, window=128)
    feed(guard2, 256, 0.2, 0.2, g)
    ev = guard2.evidence()
    assert ev["false_skip_bound"] < 0.5, "the target alone would let it skip"
    assert ev["limit"] == ev["kept_important_lower"] < ev["false_skip_bound"] and not ev["passes"]
    assert guard2.state(warmed_up=True) == "blocking"
    # state round trip: the same verdicts and telemetry afterwards
    twin = SkipGuard(target=0.1, confidence=0.95, window=128, explore_fraction=0.05)
    twin.load_state_dict(guard.state_dict())
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    feed(guard, 64, 0.0, 0.5, g1, seen=2000)
    feed(twin, 64, 0.0, 0.5, g2, seen=2000)
    assert twin.telemetry(warmed_up=True) == guard.telemetry(warmed_up=True)


# ---------------------------------------------------------------------- planted truth through the engine
def run_stream(method: MultistageMethod, n_batches: int, *, flip_at: int | None = None, seed: int = 1):
    """Planted stream (keyword EASY -> low loss); from batch ``flip_at`` on the keyword means the opposite.

    Returns (meta predictor, engine, skipped ids, {id: important}).
    """
    meta, lt = method.build_filters(n_first_epoch=n_batches * 16, seed=0)
    skipped: list[int] = []

    class Recording(type(meta)):
        def decide(self, batch, losses):
            d = super().decide(batch, losses)
            skipped.extend(batch.ids[~d.keep].tolist())
            return d

    meta.__class__ = Recording
    model = PlantedLossModel(EASY)
    engine = StepEngine(task="classification", batch_size=16, filters=[meta, lt])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    important: dict[int, bool] = {}
    for b, (batch, easy) in enumerate(planted_token_batches(n_batches, 16, seed=seed)):
        if b == flip_at:
            model.easy_token = HARD
        now_easy = easy if flip_at is None or b < flip_at else ~easy
        important.update(zip(batch["example_id"].tolist(), (~now_easy).tolist()))
        engine.step(model, opt, batch)
    engine.end_epoch(model, opt)
    return meta, engine, skipped, important


def planted_method(**kw) -> MultistageMethod:
    return MultistageMethod(**{"warmup_fraction": 0.05, "window": 64, "switch_window": 8, "explore_fraction": 0.2,
                               "vocab_size": 60, "seed": 0, **kw})


def test_guard_keeps_a_good_predictor_skipping_and_records_why():
    meta, engine, skipped, important = run_stream(planted_method(), 200)
    tel = meta.telemetry()
    g = tel["guard"]
    assert tel["switch"] is not None and tel["switch"]["guard"]["false_skip_bound"] <= 0.1
    assert g["state"] == "skipping" and g["lowered"] == 0 and g["paused"] == 0 and g["checks"] > 5
    assert not tel["stage2_disabled_by_guard"] and g["effective_skip_rate"] == pytest.approx(0.8)
    assert len(skipped) > 0.3 * 200 * 16 and sum(important[i] for i in skipped) <= 0.01 * len(skipped)
    assert engine.skipped()["meta_predictor"] == len(skipped) and tel["guard_let_through"] == 0
    # the run record gets the estimate, its bound and the skip rate over time (JSON, as records are)
    rec = json.loads(json.dumps(engine.summary()["filters"][type(meta).__name__]))
    cols = rec["guard"]["history"]["columns"]
    rows = rec["guard"]["history"]["rows"]
    assert cols == ["examples_seen", "stage", "evidence", "false_skip_estimate", "false_skip_bound", "limit",
                    "effective_skip_rate"]
    assert [r[1] for r in rows][0] == 1 and rows[-1][1] == 2 and rows[-1][-1] == pytest.approx(0.8)
    assert all(r[4] <= r[5] for r in rows if r[1] == 2), "in stage 2 the bound stayed under the limit"


def invert(meta) -> None:
    """Make ``meta``'s predictor say the opposite of what it learned (badly wrong, confidently)."""
    model = meta.model
    original = model.predict_log_proba

    def flipped(*a, **kw):
        return original(*a, **kw).flip(1)

    model.predict_log_proba = flipped


def test_guard_never_lets_a_wrong_predictor_skip():
    def run(**kw):
        meta, lt = planted_method(**kw).build_filters(n_first_epoch=120 * 16, seed=0)
        invert(meta)
        model = PlantedLossModel(EASY)
        engine = StepEngine(task="classification", batch_size=16, filters=[meta, lt])
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        for batch, _ in planted_token_batches(120, 16, seed=2):
            engine.step(model, opt, batch)
        engine.end_epoch(model, opt)
        return meta.telemetry(), engine

    tel, engine = run()
    assert tel["switch"] is None and "meta_predictor" not in engine.skipped()
    assert tel["stage2_disabled_by_guard"] and tel["guard"]["state"] == "blocking"
    assert tel["guard"]["false_skip_estimate"] > 0.9 and tel["stage"] == 1
    # the unguarded stage 2 with a loose log-loss rule switches on it and skips the important examples
    tel, engine = run(guard=False, meta_loss_threshold=40.0)
    assert tel["switch"] is not None and engine.skipped()["meta_predictor"] > 500
    assert tel["guard"] is None and not tel["stage2_disabled_by_guard"]


def test_guard_pauses_stage2_when_the_predictor_goes_wrong_and_resumes_when_it_recovers():
    """The keyword's meaning flips after 100 batches: what the predictor skips becomes the important half."""
    meta, _, skipped, important = run_stream(planted_method(), 250, flip_at=100)
    after = [i for i in skipped if i >= 100 * 16]
    false_guarded = sum(important[i] for i in after)
    g = meta.telemetry()["guard"]
    assert g["paused"] >= 1 and g["resumed"] >= 1 and g["state"] == "skipping"
    rows = g["history"]["rows"]
    paused = [r for r in rows if r[1] == 2 and r[-1] == 0.0]
    assert paused and all(r[4] > r[5] or r[2] > 0 for r in paused)
    assert any(r[4] > r[5] for r in rows if r[1] == 2), "the bound went over the limit after the flip"
    # the same stream without the guard keeps skipping the now-important examples
    meta_u, _, skipped_u, important_u = run_stream(planted_method(guard=False, meta_loss_threshold=0.3), 250,
                                                   flip_at=100)
    false_unguarded = sum(important_u[i] for i in skipped_u if i >= 100 * 16)
    assert false_unguarded > 500 and false_guarded < 0.4 * false_unguarded


# ---------------------------------------------------------------------- parameters
@pytest.mark.parametrize(("params", "match"), [
    ({"guard": "yes"}, "guard must be true or false"),
    ({"guard_target": 0.0}, "guard_target must be > 0"),
    ({"guard_target": 1.5}, "guard_target must be <= 1"),
    ({"guard_confidence": 1.0}, "guard_confidence must be < 1"),
    ({"guard_confidence": 0}, "guard_confidence must be > 0"),
    ({"guard_window": 0}, "guard_window must be >= 1"),
    ({"guard_window": 2.5}, "guard_window must be an integer"),
    ({"guard": False}, "with guard=false the switch to stage 2 needs a rule of its own: give meta_loss_threshold"),
    ({"meta_loss_threshold": 0}, "meta_loss_threshold must be > 0"),
    ({"gaurd_target": 0.2}, "Did you mean 'guard_target'"),
])
def test_bad_guard_parameters_give_clear_messages(params, match):
    with pytest.raises(ConfigError, match=match):
        build_method("multistage", params)


def test_guard_parameters_are_recorded_and_reach_the_filter():
    m = build_method("multistage", {"guard_target": 0.2, "guard_window": 64})
    p = m.params()
    assert p["guard"] is True and p["guard_target"] == 0.2 and p["guard_confidence"] == 0.95
    assert p["guard_window"] == 64 and p["meta_loss_threshold"] is None
    meta, _ = m.build_filters(n_first_epoch=100, seed=0, vocab_size=60)
    assert (meta.skip_guard.target, meta.skip_guard.window, meta.skip_guard.check_every) == (0.2, 64, 8)
    old = build_method("multistage", {"guard": False, "meta_loss_threshold": 0.5})
    assert old.params()["guard"] is False
