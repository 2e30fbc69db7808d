"""The trained student leaves as a Hugging Face checkpoint: a tiny toy run exported with
`save_pretrained` (and its tokenizer) reloads through `AutoModelForCausalLM` / `AutoTokenizer` alone
and gives the logits of the stage checkpoint it came from."""

import json

import pytest
import torch

from conftest import tiny_config, write_config
from theory.errors import InputError


@pytest.mark.slow
def test_export_reloads_with_auto_classes_logits_equal(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reference import checkpoint as ckpt
    from reference.cli import main
    from reference.export import EXPORT_META, final_student_stage, load_student
    from reference.pipeline import run_pipeline

    cfg = tiny_config()
    work = tmp_path / "work"
    run_pipeline(cfg, "raw_teacher_bridge", 0, workdir=work, split="val", progress=False)
    cfg_path = write_config(cfg, tmp_path / "tiny.toml")
    out = tmp_path / "hf"
    assert main(["export", "--arm", "raw_teacher_bridge", "--seed", "0", "--config", str(cfg_path),
                 "--workdir", str(work), "--out", str(out)]) == 0

    stage, key = final_student_stage(cfg, "raw_teacher_bridge", 0)
    assert stage == "opd" and json.loads((out / EXPORT_META).read_text())["stage_key"] == key
    trained, _ = load_student(cfg)
    ckpt.load_weights(trained, work / "stages" / key)
    hf = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    enc = tok(["12+30=", "7+8+9="], return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        want = trained.eval()(**enc).logits
        got = hf.eval()(**enc).logits
    assert torch.equal(got, want)
    base, _ = load_student(cfg)  # the export is the trained student, not the base one
    assert not torch.equal(base.eval()(**enc).logits.detach(), want)


def test_export_without_a_finished_run_says_so(tmp_path):
    from reference.export import export_student

    with pytest.raises(InputError, match="run the arm first"):
        export_student(tiny_config(), "direct_grpo", 0, workdir=tmp_path, out=tmp_path / "hf")
