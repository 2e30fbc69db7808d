"""No new duplicated block of six or more lines (scripts/check_duplicates.py, pylint's Symilar):
the repository against docs/duplicates_baseline.txt, and the key's behaviour on a two-file example."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from check_duplicates import main  # noqa: E402

BLOCK = "".join(f"    total = total * {i} + len(items[{i}:])\n" for i in range(8))


def _write(pkg: Path, name: str, above: int = 0) -> None:
    (pkg / name).write_text(f'"""{name}"""\n' + "X = 1\n" * above + f"\n\ndef f(items):\n    total = 0\n{BLOCK}    return total\n")


def test_no_new_duplicated_block_in_the_repository():
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_duplicates.py")], capture_output=True, text=True,
                       timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


def test_a_copy_is_new_until_accepted_and_keeps_its_key_when_it_moves(tmp_path, capsys):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    _write(pkg, "a.py")
    _write(pkg, "b.py")
    args = ["--root", str(tmp_path), "--baseline", str(tmp_path / "baseline.txt"), "pkg"]
    assert main(args) == 1
    assert "NEW duplicated block" in capsys.readouterr().out
    assert main([*args, "--update"]) == 0
    assert "pkg/a.py pkg/b.py" in (tmp_path / "baseline.txt").read_text()
    _write(pkg, "b.py", above=5)  # the same block further down: line numbers change, the key does not
    assert main(args) == 0
    _write(pkg, "c.py")  # a third copy is a new block
    capsys.readouterr()
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "NEW duplicated block" in out and "pkg/c.py" in out
