"""The experiment report: its intervals, its sample-ratio check, and a simulated experiment of
10,000 users with a known lift driven through the API's own functions (assignment, exposure log,
interactions joined to exposures) and read back from the logs by the report."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import pytest

from cluster.cli import main
from etl.events_log import Exposure
from graphql_api import service
from graphql_api.context import Context
from graphql_api.runtime import Runtime
from hybrid.experiment_report import Outcome, analyse, newcombe, report_from_logs, wilson
from hybrid.experiments import ArmSpec, Experiment

pytest_plugins = ["tests.api_helpers"]

N_USERS = 10_000
CLICK = 0.30
"""Chance that a user clicks one item of the list shown (at a uniformly drawn rank), in both arms."""
CONVERT = {"tuned": 0.30, "pop_only": 0.40}
"""Chance that a click converts (value 5 instead of 1): conversion rates 0.09 and 0.12, lift 0.03."""
ELSEWHERE = 0.10
"""Chance that a user, independently, interacts with an item that was not shown (naming the exposure)."""


def test_newcombe_matches_the_published_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II example (56/70 vs 48/80): method 10
    # gives 0.0524 to 0.3339 for the difference 0.2
    d = newcombe(wilson(56, 70), wilson(48, 80))
    assert d.value == pytest.approx(0.2)
    assert (round(d.low, 4), round(d.high, 4)) == (0.0524, 0.3339)


def _exposure(k: int, variant: str, experiment: str = "e") -> Exposure:
    return Exposure(f"x{k}", f"u{k}", experiment, variant, "v1", ("a", "b", "c"), shown_at=float(k))


def test_sample_ratio_mismatch_is_flagged_only_when_the_split_is_off() -> None:
    experiment = Experiment("e", {"tuned": 0.5, "b": 0.5}, {"b": ArmSpec(signals=("als",))})
    rng = random.Random(1)
    fair = [_exposure(k, "tuned" if rng.random() < 0.5 else "b") for k in range(10_000)]
    assert not analyse(experiment, fair, []).srm
    lossy = [x for k, x in enumerate(fair) if x.variant == "tuned" or k % 10]  # a tenth of b's exposures lost
    report = analyse(experiment, lossy, [])
    assert report.srm and report.srm_p < 1e-3


def test_outcomes_are_joined_per_exposure() -> None:
    experiment = Experiment("e", {"tuned": 0.5, "b": 0.5}, {"b": ArmSpec(signals=("als",))}, conversion_value=4)
    exposures = [_exposure(0, "tuned"), _exposure(1, "b"), _exposure(2, "b"), _exposure(3, "tuned", "other")]
    outcomes = [Outcome("x0", "u0", "b", 5.0),   # a conversion at rank 2
                Outcome("x1", "u1", "zz", 5.0),  # not shown: no click, NDCG 0
                Outcome("x1", "u9", "a", 5.0),   # another user's exposure: ignored
                Outcome("x3", "u3", "a", 5.0)]   # another experiment: ignored
    report = analyse(experiment, exposures, outcomes)
    tuned, b = report.arm("tuned"), report.arm("b")
    assert (tuned.users, tuned.click_rate.value, tuned.conversion_rate.value) == (1, 1.0, 1.0)
    assert tuned.ndcg.value == pytest.approx(1 / math.log2(3))
    assert (b.users, b.outcomes, b.click_rate.value, b.hit_rate.value, b.ndcg.value) == (2, 1, 0.0, 0.0, 0.0)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_simulated_experiment_reports_its_known_lift(make_settings, api_root, tmp_path, anyio_backend) -> None:
    assert main(["experiment", "create", "sim", "--traffic", "tuned=0.5,pop_only=0.5",
                 "--signals", "pop_only=popularity", "--bundle-root", str(api_root)]) == 0
    settings = make_settings(cache_ttl=0)
    runtime = Runtime(settings)
    await runtime.start()
    rng = np.random.default_rng(7)
    started = time.perf_counter()
    try:
        assert runtime.experiment is not None and runtime.experiment.name == "sim"
        catalogue = list(runtime.engine.bundle.items.ids)
        for k in range(N_USERS):
            ctx = Context(None, None, runtime, runtime.engine, experiment=runtime.experiment)  # type: ignore[arg-type]
            user = f"sim-{k}"
            run = await service.recommend(ctx, user, 10, None, None, None, True)
            shown, x = run.result.item_ids, run.exposure
            assert x is not None and x.variant == run.result.variant
            specs = []
            if rng.random() < CLICK:
                value = 5.0 if rng.random() < CONVERT[x.variant] else 1.0
                specs.append(service.InteractionSpec(user, shown[rng.integers(len(shown))], value, None, x.exposure_id))
            if rng.random() < ELSEWHERE:
                other = next(i for i in rng.permutation(catalogue) if i not in shown)
                specs.append(service.InteractionSpec(user, str(other), 1.0, None, x.exposure_id))
            if specs:
                await service.record(ctx, specs)
    finally:
        await runtime.stop()
    served_s = time.perf_counter() - started

    report = report_from_logs(api_root, "sim", events_dir=settings.events_dir)
    control, treated = report.arm("tuned"), report.arm("pop_only")
    print(f"\n{N_USERS} simulated users served and recorded in {served_s:.1f}s")
    assert control.users + treated.users == N_USERS and not report.srm
    true_lift = 0.3 * (CONVERT["pop_only"] - CONVERT["tuned"])
    lift = treated.conversion_lift
    assert lift is not None and lift.low <= true_lift <= lift.high and lift.low > 0, lift
    assert treated.click_lift is not None and treated.click_lift.low <= 0 <= treated.click_lift.high
    for arm in (control, treated):
        assert arm.click_rate.low <= CLICK <= arm.click_rate.high
        hit = CLICK / (1 - (1 - CLICK) * (1 - ELSEWHERE))  # P(a shown item | the exposure got any interaction)
        assert arm.hit_rate.low <= hit <= arm.hit_rate.high, (arm.name, arm.hit_rate)

    plot = tmp_path / "sim.png"
    assert main(["experiment", "report", "sim", "--bundle-root", str(api_root), "--events-dir",
                 str(settings.events_dir), "--plot", str(plot)]) == 0
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"
    assert main(["experiment", "stop", "sim", "--bundle-root", str(api_root)]) == 0
    assert main(["experiment", "stop", "--bundle-root", str(api_root)]) == 2  # none runs now


def test_cli_refuses_an_arm_the_bundle_cannot_serve(api_root: Path, capsys) -> None:
    assert main(["experiment", "create", "bad", "--traffic", "tuned=1,nope=1", "--bundle-root", str(api_root)]) == 2
    assert "experiment 'bad': unknown variant 'nope'" in capsys.readouterr().err
    assert main(["experiment", "create", "bad", "--traffic", "tuned=1,w=1", "--weights", "w=graph:1",
                 "--bundle-root", str(api_root)]) == 2
    assert "graph" in capsys.readouterr().err
    assert main(["experiment", "list", "--bundle-root", str(api_root)]) == 0
    assert "bad" not in capsys.readouterr().out
