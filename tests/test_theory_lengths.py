"""Training length in the dynamics and the costs (issue 23 item 1): label passes with reuse, bridge units,
one name per count, and predictions at the reference lengths unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from budget_planner.planner import plan_setup
from budget_planner.presets import load_scenario, preset_names
from theory.arms import ARMS, ComputeModel, Stage
from theory.dynamics import extend, predict_arms, reuse_factor
from theory.errors import InputError
from theory.scenario import DEFAULT_LENGTHS, parse_scenario

S = Stage


def test_reuse_factor_is_one_at_the_reference_and_saturates():
    assert reuse_factor(3.0, 3.0, 20.0) == pytest.approx(1.0)
    e = np.array([0.5, 1, 3, 10, 30, 100, 1000])
    f = reuse_factor(e, 3.0, 20.0)
    assert np.all(np.diff(f) > 0)
    # the limit: a label yields at most e_r labels' worth, h(inf) / h(e0) = 1 / (1 - exp(-e0 / e_r))
    assert f[-1] == pytest.approx(1.0 / (1.0 - np.exp(-3.0 / 20.0)), rel=1e-6)
    # no saturation (e_r = inf): every pass counts as new labels
    assert reuse_factor(12.0, 3.0, np.inf) == pytest.approx(4.0)
    # few passes: almost linear
    assert reuse_factor(0.3, 0.1, 1e6) == pytest.approx(3.0, rel=1e-5)


def test_extend_is_the_fraction_at_one_unit_and_bounded_by_the_reachable_part():
    f, r = 0.4, 0.5
    assert extend(f, 1.0, r) == pytest.approx(f)
    assert extend(f, None, r) == f
    units = np.array([0.25, 0.5, 1, 2, 4, 8, 64])
    F = extend(f, units, r)
    assert np.all(np.diff(F) > 0) and F[-1] == pytest.approx(f + r * (1 - f), rel=1e-6)
    assert extend(f, 5.0, 1.0) == pytest.approx(1 - (1 - f) ** 5)  # reach 1: geometric, as the replay's r passes
    assert extend(f, 5.0, 0.0) == pytest.approx(f)  # reach 0: length buys nothing
    assert extend(0.0, 3.0, 0.5) == 0.0


@pytest.mark.parametrize("name", preset_names())
def test_predictions_at_the_reference_lengths_are_the_original_ones(name):
    scn = load_scenario(name)
    setup = plan_setup(scn, None)
    n = scn.budget
    ref = {s: scn.compute.reference_length(s) for s in Stage}
    base = predict_arms(setup.setting, ARMS.values(), n, n // 2)
    given = predict_arms(setup.setting, ARMS.values(), n, n // 2, lengths=ref)
    np.testing.assert_allclose(given, base, atol=1e-9)


@pytest.mark.parametrize("name", ["paper-qwen3-math", "modes-k15", "toy-arith"])
def test_longer_grpo_never_lowers_direct_grpo_and_labels_and_passes_trade(name):
    scn = load_scenario(name)
    setup = plan_setup(scn, None)
    e0 = scn.compute.label_passes
    arm = ARMS["direct_grpo"]
    acc = [predict_arms(setup.setting, [arm], 64, None, {S.STUDENT_GRPO: e0 * m})[0, 0, setup.b]
           for m in (0.5, 1, 2, 8)]
    assert np.all(np.diff(acc) >= -1e-9)
    # with no saturation (e_r = inf) doubling the passes is doubling the labels
    from dataclasses import replace
    s_inf = replace(setup.setting, rates=replace(setup.setting.rates, reuse=np.inf))
    twice = predict_arms(s_inf, [arm], 64, None, {S.STUDENT_GRPO: 2 * e0})[0, :, setup.b]
    more = predict_arms(s_inf, [arm], 128, None)[0, :, setup.b]
    np.testing.assert_allclose(twice, more, atol=1e-9)


def test_tokens_count_label_passes_and_bridge_units():
    cm = ComputeModel(group_size=4, prompt_tokens=10, response_tokens=20, train_passes=2, label_passes=3,
                      bridge_prompts=50, bridge_response_tokens=40)
    per_pass = 4 * 30 * (1 + 2)
    assert cm.grpo_tokens(7) == 7 * 3 * per_pass
    assert cm.stage_tokens(S.STUDENT_GRPO, 7, 6.0) == 7 * 6 * per_pass
    assert cm.stage_tokens(S.FKL_WARMUP, 0, 2.0) == 2 * 50 * 50 * 3  # bridge sequences use L_b = 10 + 40
    assert cm.stage_tokens(S.OPD, 0) == 50 * 50 * 3
    toks = ARMS["rl_teacher_bridge"].compute_tokens(10, cm, lengths={"teacher_grpo": 6.0, "opd": 4.0})
    assert toks == {"teacher_grpo": 10 * 6 * per_pass, "fkl_warmup": 50 * 50 * 3, "opd": 4 * 50 * 50 * 3}


def test_one_name_per_count_and_the_old_name_is_refused_with_the_new_ones():
    with pytest.raises(InputError, match="train_passes .* label_passes"):
        parse_scenario(_minimal(compute={"grpo_epochs": 2}))
    assert "grpo_epochs" not in ComputeModel.__dataclass_fields__


def _minimal(**extra) -> dict:
    """The smallest valid scenario, from a preset's TOML (what a user writes), with `extra` tables."""
    import tomllib
    from budget_planner.presets import PRESET_DIR
    doc = tomllib.loads((PRESET_DIR / "toy-arith.toml").read_text())
    doc.update(extra)
    return doc


def test_lengths_table_parses_defaults_and_refuses_unknown_fields():
    scn = parse_scenario(_minimal())
    assert scn.get("lengths.reuse").value == pytest.approx(
        load_scenario("toy-arith").get("lengths.reuse").value)
    doc = _minimal()
    doc.pop("lengths", None)
    bare = parse_scenario(doc)
    assert bare.get("lengths.reuse").value == DEFAULT_LENGTHS["reuse"]["value"]
    assert not bare.get("lengths.reuse").fitted  # the observations ran at the reference lengths
    with pytest.raises(InputError, match="lengths: unknown field 'epochs'"):
        parse_scenario(_minimal(lengths={"epochs": {"value": 1, "tag": "assumed", "why": "x"}}))
    with pytest.raises(InputError, match="lengths.bridge_reach.value"):
        parse_scenario(_minimal(lengths={"bridge_reach": {"value": 1.5, "tag": "assumed", "why": "x"}}))


@pytest.mark.parametrize("name", [n for n in preset_names() if n.startswith(("modes", "toy-arith"))])
def test_toy_compute_blocks_match_the_configs_they_describe(name):
    """The toy scenarios' [compute] says what their configs run: 3 passes over the labels, 16 x 8 rollouts,
    one bridge unit = 200 steps x 32 prompts."""
    import tomllib
    from pathlib import Path
    cm = load_scenario(name).compute
    cfg = "configs/legacy/fixed_length/family/modes_k15.toml" if name.startswith("modes") else "configs/toy.toml"
    d = tomllib.loads(Path(cfg).read_text())
    assert cm.label_passes == d["grpo"]["epochs"] and cm.group_size == d["grpo"]["group_size"]
    assert cm.bridge_prompts * cm.bridge_samples == d["fkl"]["steps"] * d["fkl"]["prompts_per_step"]
    assert cm.bridge_prompts * cm.bridge_samples == d["opd"]["steps"] * d["opd"]["prompts_per_step"]
    assert cm.response_tokens <= d["grpo"]["max_new_tokens"]
