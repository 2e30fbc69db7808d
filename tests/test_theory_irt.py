"""The Rasch-with-compliance model: quadrature, inversion, and recovery from simulated pilots."""

import numpy as np
import pytest
from scipy import integrate, special

from theory import irt
from theory.errors import InputError


def test_accuracy_matches_direct_integration():
    theta, c, s_d = 0.7, 0.9, 1.8
    f = lambda d: special.expit(theta - d) * np.exp(-0.5 * (d / s_d) ** 2) / (s_d * np.sqrt(2 * np.pi))  # noqa: E731
    exact, _ = integrate.quad(f, -40, 40)
    assert irt.accuracy(theta, c, s_d) == pytest.approx(100 * c * exact, abs=0.02)


@pytest.mark.parametrize("iters,tol", [(2, 1e-4), (3, 1e-6)])
def test_solve_theta_inverts(iters, tol):
    rng = np.random.default_rng(0)
    target = rng.uniform(0.01, 0.995, (200, 3))
    s_d = rng.uniform(1.0, 3.0, (200, 1))
    theta = irt.solve_theta(target, s_d, iters=iters)
    assert np.abs(irt.ability_accuracy(theta, s_d) - target).max() < tol


def test_fit_problems_recovers_theta_sd_and_compliance():
    rng = np.random.default_rng(1)
    theta, c, s_d = np.array([0.3, 1.6]), np.array([0.9, 0.8]), 1.4
    df = irt.simulate_problems(theta, c, s_d, n_items=400, k=16, rng=rng, models=["s", "t"])
    fit = irt.fit_problems(df, models=["s", "t"])
    for i in range(2):
        assert abs(fit.theta[i] - theta[i]) < 3 * fit.theta_se[i] + 0.05
        assert fit.compliance[i] == pytest.approx(c[i], abs=0.02)
    assert abs(fit.s_d - s_d) < 3 * fit.s_d_se + 0.05
    assert fit.to_frame().shape[0] == 2


def test_fit_problems_rejects_unusable_tables():
    df = irt.simulate_problems([0.0], [0.9], 1.0, n_items=3, k=4, rng=np.random.default_rng(0), models=["s"])
    with pytest.raises(InputError, match="too few"):
        irt.fit_problems(df)
    df = irt.simulate_problems([0.0], [0.9], 1.0, n_items=10, k=4, rng=np.random.default_rng(0), models=["s"])
    with pytest.raises(InputError, match="no rows for model 't'"):
        irt.fit_problems(df, models=["s", "t"])
