"""The wheel: built from this repository, installed without the checkout (a target directory,
no editable path), it finds its planner presets, the reference's configs and its base checkpoints
from another working directory. Slow (one wheel build, about half a minute)."""

import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
SOURCES = ("pyproject.toml", "README.md", "theory", "budget_planner", "reference", "tuning", "configs")


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, (cmd, r.stdout[-2000:], r.stderr[-2000:])
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:  # a clean copy: the build writes build/ and *.egg-info next to its sources
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, symlinks=True, ignore=junk)
        else:
            shutil.copy2(p, src / name)
    # no build isolation: the build backend (setuptools) comes from this environment, no network
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
          "-w", str(tmp / "dist")], cwd=tmp)
    (wheel,) = list((tmp / "dist").glob("sparse2dense-*.whl"))
    site = tmp / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
          str(wheel)], cwd=tmp)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), SPARSE2DENSE_CACHE=str(tmp / "cache"), OMP_NUM_THREADS="1")

    def run(*args):
        return _run([sys.executable, *args], cwd=elsewhere, env=env)
    return site, run


def test_the_installed_package_is_the_wheel_not_the_checkout(installed):
    site, run = installed
    out = run("-c", "import theory, budget_planner, reference, tuning; "
                    "print('\\n'.join(m.__file__ for m in (theory, budget_planner, reference, tuning)))").stdout
    assert len(out.split()) == 4
    for f in out.split():
        assert Path(f).resolve().is_relative_to(site.resolve()), f


def test_it_finds_the_planner_presets(installed):
    site, run = installed
    listed = {line.split()[0] for line in run("-m", "budget_planner", "scenarios").stdout.splitlines() if line}
    assert listed == {p.stem for p in (ROOT / "budget_planner" / "scenarios").glob("*.toml")}
    out = run("-m", "budget_planner", "plan", "--scenario", "paper-qwen3-math", "--labels", "5000").stdout
    assert "recommended: " in out
    assert (site / "bin" / "budget-planner").is_file()
    assert run("-m", "budget_planner", "--version").stdout.strip() == "budget-planner 0.1.0"


def test_it_finds_the_reference_assets_and_configs(installed):
    site, run = installed
    for d in (ROOT / "reference" / "assets").iterdir():
        shipped = {p.relative_to(d) for p in d.rglob("*") if p.is_file()}
        got = {p.relative_to(site / "reference" / "assets" / d.name)
               for p in (site / "reference" / "assets" / d.name).rglob("*") if p.is_file()}
        assert shipped and got == shipped, d.name
    want = sorted(p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*")
                  if p.suffix in (".toml", ".yaml"))
    out = run("-c", "from reference.config import CONFIG_DIR, load_config\n"
                    "for n in ('toy_short', 'toy', 'paper-qwen3-math', 'legacy/toy'):\n"
                    "    load_config(n)\n"
                    "print(CONFIG_DIR)\n"
                    "print('\\n'.join(sorted(p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob('*') "
                    "if p.is_file())))").stdout.split()
    assert Path(out[0]).resolve().is_relative_to(site.resolve())
    assert out[1:] == want
