"""The real-scale dry run: Qwen3-1.7B / 8B built on the meta device from the paper config."""

import json
import shutil
from pathlib import Path

import pytest

from reference.config import load_config
from reference.dryrun import Shape, dry_run, format_dry_run, memory_estimate
from theory.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper-qwen3-math.toml"


@pytest.fixture(scope="module")
def paper_run():
    return dry_run(load_config(PAPER))


def test_official_parameter_counts(paper_run):
    m = paper_run["models"]
    # official totals: Qwen3-1.7B 1.72B (tied), Qwen3-8B 8.19B (untied)
    assert abs(m["student"]["params"] / 1.72e9 - 1) < 0.005
    assert abs(m["teacher"]["params"] / 8.19e9 - 1) < 0.005
    assert m["student"]["tied"] and not m["teacher"]["tied"]
    assert m["student"]["vocab"] == m["teacher"]["vocab"] == 151936
    assert m["student"]["device"] == "meta"


def test_stages_json_shape(paper_run):
    names = [s["name"] for s in paper_run["stages"]]
    assert names == ["teacher_grpo", "fkl_warmup", "opd", "student_grpo", "eval"]
    for s in paper_run["stages"]:
        assert {"name", "model", "params", "memory_gib", "launch"} <= set(s)
        assert s["params"] > 1e9
    opd = paper_run["stages"][2]
    assert opd["model"] == "Qwen/Qwen3-1.7B" and opd["frozen"] == "Qwen/Qwen3-8B"
    assert "accelerate launch --config_file configs/accelerate/fsdp2.yaml --num_processes 8" in opd["launch"]["8"]
    assert opd["launch"]["1"].startswith("reference-pipeline run --config")
    json.dumps(paper_run)  # the CLI's --json output must serialise
    text = format_dry_run(paper_run)
    assert "Qwen/Qwen3-8B" in text and "8.191B" in text


def test_paper_config_launches_sharded(paper_run):
    """fsdp2.yaml by default: on 8 GPUs each trained model's weights, grads and AdamW moments are split
    8 ways (the frozen scorer stays whole), so the 8B teacher's GRPO fits where DDP's would not."""
    assert paper_run["engine"]["sharded_states"]
    grpo = paper_run["stages"][0]
    one, eight = grpo["memory_breakdown_gib"]["1"], grpo["memory_breakdown_gib"]["8"]
    assert eight["train_states"] == pytest.approx(one["train_states"] / 8, abs=0.02)
    assert eight["total"] < one["total"] / 2
    opd = paper_run["stages"][2]["memory_breakdown_gib"]
    assert opd["8"]["frozen_weights"] == opd["1"]["frozen_weights"]
    assert "sharded (FSDP2)" in format_dry_run(paper_run)


def test_each_stage_entry_is_its_row_of_the_stage_table(paper_run):
    """Who trains, who scores, whose rollouts: read from theory.arms.STAGES, not decided here."""
    from theory.arms import STAGES, Stage

    m = paper_run["models"]
    for s in paper_run["stages"][:-1]:
        spec = STAGES[Stage(s["name"])]
        assert s["trainable"] == spec.trains and s["model"] == m[spec.trains]["name"]
        assert s["frozen"] == (m[spec.scorer]["name"] if spec.scorer else None)
        assert s["sampler"] == m[spec.samples]["name"]


def test_memory_model_components():
    s = Shape(2048, 28, 16, 8, 128, 6144, 151936, True, "test")
    full = memory_estimate(trained=(s, 1_720_574_976), frozen=None, tokens=8192, checkpointing=False, n_gpus=1, shard=False)
    ckpt = memory_estimate(trained=(s, 1_720_574_976), frozen=None, tokens=8192, checkpointing=True, n_gpus=1, shard=False)
    sharded = memory_estimate(trained=(s, 1_720_574_976), frozen=None, tokens=8192, checkpointing=True, n_gpus=8, shard=True)
    # 8 bytes/param of bf16 weights+grads+Adam moments; logits 8192 x 151936 x 10 bytes
    assert full["train_states"] == pytest.approx(1_720_574_976 * 8 / 2**30, abs=0.01)
    assert full["logits"] == pytest.approx(8192 * 151936 * 10 / 2**30, abs=0.01)
    assert ckpt["activations"] < full["activations"] / 5
    assert sharded["train_states"] == pytest.approx(ckpt["train_states"] / 8, abs=0.01)


def test_local_directory_shapes_come_from_config_json(tmp_path):
    from reference.models import build_tiny_qwen3_dir

    d = build_tiny_qwen3_dir(tmp_path / "tiny", hidden=32, layers=2, heads=4, kv_heads=2, head_dim=8, intermediate=64)
    cfg = load_config(PAPER).override({
        "student.path": str(d), "teacher.path": str(d),
        "student.hidden": 32, "student.layers": 2, "student.heads": 4, "student.kv_heads": 2,
        "student.head_dim": 8, "student.intermediate": 64,
        "teacher.hidden": 32, "teacher.layers": 2, "teacher.heads": 4, "teacher.kv_heads": 2,
        "teacher.head_dim": 8, "teacher.intermediate": 64,
    })
    out = dry_run(cfg, arm="direct_grpo")
    assert out["models"]["student"]["vocab_source"].endswith("config.json")
    assert [s["name"] for s in out["stages"]] == ["student_grpo", "eval"]
    bad = cfg.override({"student.hidden": 64})
    with pytest.raises(InputError, match="disagree"):
        dry_run(bad)


def test_unknown_arm_is_refused(paper_run):
    with pytest.raises(InputError, match="unknown arm"):
        dry_run(load_config(PAPER), arm="nope")


def test_cli_dry_run_json(capsys):
    from reference.cli import main

    assert main(["run", "--config", str(PAPER), "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    stages = {s["name"]: s for s in out["stages"]}
    assert stages["opd"]["model"] == "Qwen/Qwen3-1.7B"
    assert stages["teacher_grpo"]["model"] == "Qwen/Qwen3-8B"
    assert all(s["params"] > 1e9 for s in out["stages"])


def test_cli_dry_run_bad_config_is_one_line(tmp_path, capsys):
    from reference.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text(PAPER.read_text().replace("\n[student]\n", "\n[student]\nwidth = 3\n"))
    assert main(["run", "--config", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown config field student.width") and "\n" not in err


def test_every_stage_fits_80_gib_on_8_gpus_with_the_codes_own_flags(paper_run):
    """Issue 24 item 5: on 8 GPUs every stage's training peak fits an 80 GiB GPU under the plan the
    pipeline applies: fp32 master weights, gradients and AdamW moments (mixed precision), bf16 compute,
    checkpointing on for the trained model whichever it is (the teacher too), the frozen teacher in bf16
    and replicated; each stage lists its rollout micro-batch and that micro-batch's KV cache."""
    for s in paper_run["stages"]:
        assert s["memory_gib"]["8"] <= 80.0 and s["fits_80gib"]["8"], s["name"]
        r = s["rollout"]["8"]
        assert r["micro_batch"] > 0 and r["kv_cache_gib"] > 0
        if s["plan"] is None:
            continue
        p = s["plan"]
        assert (p["param_dtype"], p["grad_dtype"], p["optimizer_state_dtype"], p["compute_dtype"]) == \
            ("float32", "float32", "float32", "bfloat16"), s["name"]
        assert p["checkpointing"] and p["mixed"]
        assert s["memory_breakdown_gib"]["8"]["compute_copy"] > 0
    teacher = paper_run["stages"][0]
    assert teacher["name"] == "teacher_grpo" and teacher["plan"]["trains"] == "teacher"
    # 16 B/param of the 8B sharded 8 ways
    assert teacher["memory_breakdown_gib"]["8"]["train_states"] == pytest.approx(16 * 8.191e9 / 8 / 2**30, abs=0.05)
    # the teacher's GRPO states alone (122 GiB) do not fit one GPU: the 1-GPU column says so
    assert not teacher["fits_80gib"]["1"]
    opd = paper_run["stages"][2]
    assert opd["plan"]["scorer_dtype"] == "bfloat16" and not opd["plan"]["scorer_sharded"]
    assert opd["memory_breakdown_gib"]["8"]["frozen_weights"] == pytest.approx(2 * 8.191e9 / 2**30, abs=0.05)


def test_checkpointing_and_micro_batch_come_from_the_config_not_from_the_dry_run():
    cfg = load_config(PAPER).override({"engine.gradient_checkpointing": False, "engine.micro_batch": 0,
                                       "engine.precision": "pure"})
    run = dry_run(cfg, arm="direct_grpo", gpus=(8,))
    grpo = run["stages"][0]
    assert not grpo["plan"]["checkpointing"] and grpo["plan"]["param_dtype"] == "bfloat16"
    # micro_batch 0: the rank's whole update (its share of one mini-batch) in one chunk
    assert grpo["rows_per_chunk"]["8"] == 512 * 8 // cfg.grpo.mini_batches // 8
    assert "compute_copy" in grpo["memory_breakdown_gib"]["8"]  # FSDP2 gathers units in any precision
    assert grpo["memory_breakdown_gib"]["8"]["train_states"] == pytest.approx(8 * 1.7206e9 / 8 / 2**30, abs=0.02)


def test_docs_scale_md_tables_are_the_dry_runs(paper_run):
    """docs/scale.md's dry-run tables are generated (`--markdown docs/scale.md`), never typed."""
    from reference.dryrun import MARK_BEGIN, MARK_END, markdown_tables
    doc = (ROOT / "docs" / "scale.md").read_text()
    block = doc.split(MARK_BEGIN, 1)[1].split(MARK_END, 1)[0].strip()
    assert block == markdown_tables(paper_run).strip(), (
        "docs/scale.md is stale: reference-pipeline run --config configs/paper-qwen3-math.toml --dry-run "
        "--markdown docs/scale.md")


def test_cli_markdown_rewrites_only_the_marked_block(tmp_path, capsys):
    from reference.cli import main
    from reference.dryrun import MARK_BEGIN, MARK_END
    doc = tmp_path / "scale.md"
    doc.write_text(f"before\n{MARK_BEGIN}\nold\n{MARK_END}\nafter\n")
    assert main(["run", "--config", str(PAPER), "--dry-run", "--markdown", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith(f"{MARK_END}\nafter\n") and "old" not in text
    assert "| teacher_grpo |" in text
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    assert main(["run", "--config", str(PAPER), "--dry-run", "--markdown", str(bare)]) == 2
    assert "no dry-run block" in capsys.readouterr().err


def test_launch_configs_with_keys_the_engine_does_not_read_are_refused(tmp_path):
    from reference.config import REPO_ROOT
    from reference.engines import check_accelerate_config, load_accelerate_config
    fsdp = load_accelerate_config(REPO_ROOT / "configs" / "accelerate" / "fsdp2.yaml")
    assert check_accelerate_config(fsdp) == "fsdp2"
    assert check_accelerate_config(load_accelerate_config(REPO_ROOT / "configs" / "accelerate" / "ddp.yaml")) == "none"
    cases = {("fsdp_config", "fsdp_offload_params", True): "fsdp_offload_params: True is not supported",
             ("fsdp_config", "fsdp_activation_checkpointing", True): "gradient_checkpointing",
             ("fsdp_config", "fsdp_state_dict_type", "SHARDED_STATE_DICT"): "fsdp_state_dict_type is not read",
             ("fsdp_config", "fsdp_version", 1): "fsdp_version: 1 is not supported",
             (None, "mixed_precision", "bf16"): r"mixed_precision: bf16 is not read \(precision is \[engine\] precision"}
    for (section, key, value), message in cases.items():
        bad = {**fsdp, "fsdp_config": dict(fsdp["fsdp_config"])}
        (bad[section] if section else bad)[key] = value
        with pytest.raises(InputError, match=message):
            check_accelerate_config(bad)
    with pytest.raises(InputError, match="DeepSpeed"):
        check_accelerate_config({"distributed_type": "DEEPSPEED", "mixed_precision": "no"})
    # the dry run refuses what the engine would: one line naming the file and the key
    yaml = tmp_path / "offload.yaml"
    yaml.write_text((REPO_ROOT / "configs" / "accelerate" / "fsdp2.yaml").read_text()
                    + "  fsdp_offload_params: true\n")
    with pytest.raises(InputError, match=r"offload.yaml'.*fsdp_offload_params"):
        dry_run(load_config(PAPER).override({"engine.accelerate_config": str(yaml)}))


def test_a_launch_exporting_ignored_fsdp_settings_is_refused(monkeypatch):
    from reference.engines import launch_sharding
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")  # launch_sharding sets it: restored after
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "false")
    monkeypatch.setenv("FSDP_SHARDING_STRATEGY", "FULL_SHARD")
    assert launch_sharding(2) == "fsdp2"
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "true")
    with pytest.raises(InputError, match="fsdp_offload_params = true is not read"):
        launch_sharding(2)
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "false")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(InputError, match="mixed_precision bf16 is not read"):
        launch_sharding(2)
