"""The demo's tools against careless or unlucky use: bad flags, ``--fresh`` on a folder that is not the demo's,
two runs in one output folder, a killed demo (its steps must not outlive it, its old summary must not stay), a
damaged cached output, a changed dataset, a bad override. Every refusal is one line naming the flag or key and
comes before any step runs. What the demo reports (summary.json, the summary table) is in test_demo_summary.py."""
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siamese_detr.demo.runner import StepRunner, last_iteration
from siamese_detr.demo.steps import file_digest
from demo_tool_helpers import TINY_SIZES, StepStarted, process_alive
from script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]
BACKBONE_CONFIG = "configs/demo/demo_backbone.py"
COUNTER = ("import pathlib, sys; d = pathlib.Path(sys.argv[1]); c = d.parent / 'count.txt'; "
           "c.write_text(str(int(c.read_text()) + 1) if c.exists() else '1'); "
           "(d / 'model_final.pth').write_text('weights'); (d / 'metrics.json').write_text('{}')")


def _tool(name):
    return load_script(ROOT / "tools" / f"{name}.py", f"adversarial_{name}")


# ------------------------------------------------------------------------------------------- bad flags
@pytest.mark.parametrize("flags, message", [
    (["--parallel", "0"], "--parallel must be at least 1, got 0"),  # used to wait forever
    (["--backbone-iters", "0"], "--backbone-iters must be at least 1, got 0"),  # used to mean the full schedule
    (["--pretrain-iters", "0"], "--pretrain-iters must be at least 1, got 0"),
    (["--finetune-iters", "-1"], "--finetune-iters must be at least 1, got -1"),
    (["--eval-period", "0"], "--eval-period must be at least 1, got 0"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
    (["--seed", "-1"], "--seed must be non-negative, got -1"),
])
def test_run_demo_refuses_bad_flags_before_any_step(demo_env, nothing_runs, capsys, flags, message):
    out = demo_env / "demo"
    with pytest.raises(SystemExit) as exc:
        _tool("run_demo").main(["--output", str(out)] + flags)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_run_demo_refuses_an_output_that_is_a_file(demo_env, nothing_runs, capsys):
    out = demo_env / "demo"
    out.write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        _tool("run_demo").main(["--output", str(out)])
    assert exc.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err
    assert out.read_text() == "not a folder"


def test_fresh_deletes_only_a_demo_folder(demo_env, nothing_runs, capsys):
    """``--fresh`` used to ``rmtree`` whatever ``--output`` named (``--output .`` = the whole project)."""
    mine = demo_env / "mine"
    (mine / "backbone").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exc:
        _tool("run_demo").main(["--fresh", "--output", str(mine)])
    assert exc.value.code == 2 and "holds files the demo does not write (notes.txt)" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "backbone").is_dir()
    # a folder holding the working directory is refused too, whatever it holds
    inside = demo_env / "demo" / "here"
    inside.mkdir(parents=True)
    os.chdir(inside)
    with pytest.raises(SystemExit) as exc:
        _tool("run_demo").main(["--fresh", "--output", ".."])
    assert exc.value.code == 2 and "holds the repository or the working directory" in capsys.readouterr().err
    assert inside.is_dir()
    # the demo's own folder is emptied
    demo = demo_env / "demo2"
    (demo / "finetune_scratch").mkdir(parents=True)
    (demo / "finetune_scratch" / "model_final.pth").write_text("old")
    (demo / "commands.txt").write_text("$ old")
    with pytest.raises(StepStarted):
        _tool("run_demo").main(["--fresh", "--output", str(demo)])
    assert not (demo / "finetune_scratch").exists() and not (demo / "commands.txt").exists()


def test_fresh_keeps_a_file_of_the_user_in_a_step_folder(demo_env, nothing_runs, capsys):
    """``--fresh`` deleted the step folders whole: a folded checkpoint written next to the pretraining's
    (the example of tools/fold_region_queries.py's help, before) was lost without a word."""
    demo = demo_env / "demo"
    written = {"siamese_pretrain": ["config.yaml", "demo.log", "log.txt", "log.txt.rank1", "metrics.json",
                                    "last_checkpoint", "last_checkpoint.tmp", "step_inputs.json", "step_inputs.tmp",
                                    "model_0000199.pth", "model_final.pth", "model_final.pth.tmp",
                                    "events.out.tfevents.1796598337.vm.18375.0"],
               "backbone": ["config.yaml", "loss.json", "metrics.json", "progress.json", "model_final.pth"],
               "siamese_random_init_eval": ["config_eval_only.yaml", "inference/class_agnostic_results.json",
                                            "inference/coco_instances_results.json"]}
    for step, names in written.items():
        for name in names:
            (demo / step / name).parent.mkdir(parents=True, exist_ok=True)
            (demo / step / name).write_text("the demo's")
    mine = demo / "siamese_pretrain" / "model_final_folded.pth"
    mine.write_text("keep me")
    (demo / "backbone" / "notes").mkdir()
    (demo / "backbone" / "notes" / "todo.txt").write_text("keep me too")
    with pytest.raises(SystemExit) as exc:
        _tool("run_demo").main(["--fresh", "--output", str(demo)])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "holds files the demo does not write (backbone/notes/todo.txt, siamese_pretrain/model_final_folded.pth)" \
        in err and "move those out of it" in err
    assert mine.read_text() == "keep me" and (demo / "siamese_pretrain" / "model_final.pth").exists()
    # without them, the same folder is the demo's own: emptied
    mine.unlink()
    shutil.rmtree(demo / "backbone" / "notes")
    with pytest.raises(StepStarted):
        _tool("run_demo").main(["--fresh", "--output", str(demo)])
    assert not any((demo / step).exists() for step in written)


# ---------------------------------------------------------------------------------- stale results
def test_a_run_that_does_not_finish_leaves_no_earlier_summary(demo_env, nothing_runs):
    """A re-run stopped before its figures (killed, a failed step) must not leave the previous run's
    summary.json and figures next to its own step folders."""
    out = demo_env / "demo"
    out.mkdir()
    for name in ("summary.json", "ap_curves.png", "detections.png", "loss_curves.png"):
        (out / name).write_text("an earlier run's")
    with pytest.raises(StepStarted):
        _tool("run_demo").main(["--output", str(out)])
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == []
    # the same for tools/compare_pretraining.py's comparison files
    for name in ("comparison.json", "comparison.md", "comparison.png"):
        (out / name).write_text("an earlier run's")
    with pytest.raises(StepStarted):
        _tool("compare_pretraining").main(["--output", str(out), "--method", "scratch="])
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == []


# ------------------------------------------------------------------------------- one run per folder
def _hold(folder: Path):
    """Lock ``folder`` as a running demo does (the lock file the tools take)."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = open(folder / ".lock", "a+")
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return lock


def test_second_demo_or_comparison_in_the_same_folder_is_refused(demo_env, nothing_runs, capsys):
    out = demo_env / "demo"
    lock = _hold(out)
    try:
        for tool, extra in (("run_demo", []), ("compare_pretraining", ["--method", "scratch="])):
            with pytest.raises(SystemExit) as exc:
                _tool(tool).main(["--output", str(out)] + extra)
            assert "is in use by another run" in str(exc.value) and "give another --output" in str(exc.value)
    finally:
        lock.close()
    with pytest.raises(StepStarted):  # free again
        _tool("run_demo").main(["--output", str(out)])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_steps_do_not_outlive_a_killed_demo(tmp_path):
    """A demo killed by SIGKILL (or SIGTERM, which skips Python's clean-up) used to leave its training
    processes running, writing the step folders beside the re-run's."""
    pid_file = tmp_path / "step.pid"
    step = f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(600)"
    demo = ("import sys; from pathlib import Path; from siamese_detr.demo.runner import StepRunner; "
            f"StepRunner(Path({str(tmp_path)!r}), Path({str(tmp_path)!r})).step('sleep', Path({str(tmp_path)!r}) "
            f"/ 'sleep', [sys.executable, '-c', {step!r}])")
    parent = subprocess.Popen([sys.executable, "-c", demo], stdout=subprocess.DEVNULL)
    child = None
    try:
        for _ in range(1200):  # the step has started
            if pid_file.is_file() and pid_file.read_text():
                child = int(pid_file.read_text())
                break
            assert parent.poll() is None, "the demo ended before its step started"
            time.sleep(0.1)
        assert child is not None
        parent.kill()
        parent.wait()
        for _ in range(600):
            if not process_alive(child):
                break
            time.sleep(0.1)
        assert not process_alive(child), "the step kept running after the demo was killed"
    finally:
        if parent.poll() is None:
            parent.kill()
        if child is not None and process_alive(child):
            os.kill(child, signal.SIGKILL)


# --------------------------------------------------------------------------------------- the caches
def test_a_damaged_output_of_a_finished_step_is_redone(tmp_path, capsys):
    """A truncated model_final.pth (or an edited metrics.json) of a finished step used to be reused and handed
    to the next step."""
    runner = StepRunner(tmp_path, tmp_path)
    folder = tmp_path / "step"
    cmd = [sys.executable, "-c", COUNTER, str(folder)]
    runner.step("s", folder, cmd)
    runner.step("s", folder, cmd)
    assert (tmp_path / "count.txt").read_text() == "1"  # unchanged: reused
    with open(folder / "model_final.pth", "r+") as f:
        f.truncate(3)
    runner.step("s", folder, cmd)
    assert (tmp_path / "count.txt").read_text() == "2"
    assert "outputs changed or gone since it finished (model_final.pth): redoing the step" in capsys.readouterr().out
    (folder / "metrics.json").unlink()
    runner.step("s", folder, cmd)
    assert (tmp_path / "count.txt").read_text() == "3"
    assert "(metrics.json)" in capsys.readouterr().out


def _first_step_inputs(tool, argv, monkeypatch) -> dict:
    """The inputs ``tool`` records for its first step (the step itself is not run)."""
    import siamese_detr.demo.runner as runner

    seen = []

    class Recorder:
        def __init__(self, *args, **kwargs):
            pass

        def step(self, name, folder, cmd, config=None, overrides=None, inputs=None, total=0):
            seen.append(dict(inputs or {}))
            raise StepStarted(name)

    monkeypatch.setattr(runner, "StepRunner", Recorder)
    with pytest.raises(StepStarted):
        _tool(tool).main(argv)
    return seen[0]


def _data_inputs_of_the_first_step(tool, argv, demo_env, monkeypatch):
    """The ``data`` input the first step of ``tool`` records, for the tiny dataset and one of other sizes,
    checked against the digests of the annotation files."""
    datasets = demo_env / "datasets" / "synthetic_shapes" / "annotations"
    found = []
    for sizes in (TINY_SIZES, "train_large=4,val=3,train=4"):
        monkeypatch.setenv("SYNTHETIC_SHAPES_NUM_IMAGES", sizes)
        found.append(_first_step_inputs(tool, argv, monkeypatch)["data"])
        assert found[-1] == {split: file_digest(datasets / f"{split}.json") for split in ("train_large", "val")}
    return found


def test_a_changed_dataset_changes_every_steps_inputs(demo_env, monkeypatch):
    """The steps used to record no trace of the images: a dataset of other sizes reused results of the old one."""
    first, second = _data_inputs_of_the_first_step("run_demo", ["--output", str(demo_env / "demo")], demo_env,
                                                   monkeypatch)
    assert first["train_large"] == second["train_large"] and first["val"] != second["val"]


@pytest.mark.parametrize("tool", ["run_demo", "compare_pretraining"])
def test_the_thread_count_is_a_step_input(tool, demo_env, monkeypatch):
    """Float results depend on the thread count: a re-run with another --threads must not reuse the steps."""
    monkeypatch.setenv("SYNTHETIC_SHAPES_NUM_IMAGES", TINY_SIZES)
    threads = [_first_step_inputs(tool, ["--output", str(demo_env / "out"), "--threads", n], monkeypatch)["threads"]
               for n in ("1", "2")]
    assert threads == [1, 2]


def test_an_interrupted_backbone_rerun_shows_its_own_progress(demo_env):
    """progress.json used to be appended to: a re-run of an interrupted backbone step showed the old run's
    progress on its bar."""
    out = demo_env / "backbone"
    out.mkdir()
    (out / "progress.json").write_text(json.dumps({"iteration": 59, "total_loss": 1.0}) + "\n")
    assert last_iteration(out) == 60
    assert _tool("train_demo_backbone").main(
        ["--config-file", str(ROOT / BACKBONE_CONFIG), f"train.output_dir={out}", "train.max_iter=1",
         "train.batch_size=4", "train.crop_size=16", "data.classification_scenes=2", "train.knn_k=1"]) == 0
    assert last_iteration(out) == 1


# ---------------------------------------------------------------------------------- bad overrides
def test_a_step_with_a_bad_override_fails_in_one_line(tmp_path):
    runner = StepRunner(ROOT, tmp_path)
    with pytest.raises(SystemExit, match=r"^\[backbone\] configs/demo/demo_backbone.py: Config key 'train.foo'"):
        runner.step("backbone", tmp_path / "bb", [sys.executable, "-c", "pass"], BACKBONE_CONFIG, ["train.foo=1"])


@pytest.mark.parametrize("argv, message", [
    (["--config-file", "configs/demo/nope.py"], "--config-file configs/demo/nope.py: no such file"),
    (["--config-file", BACKBONE_CONFIG, "train.foo=1"], "Config key 'train.foo'"),
    (["--config-file", BACKBONE_CONFIG, "train.method=byol"], "train.method must be 'simsiam' or 'supervised'"),
    (["--config-file", BACKBONE_CONFIG, "train.knn_k=0"], "train.knn_k must be an integer of at least 1, got 0"),
])
def test_train_demo_backbone_refuses_a_bad_config_in_one_line(demo_env, capsys, argv, message):
    os.chdir(ROOT)
    out = demo_env / "backbone"
    tiny = [f"train.output_dir={out}", "train.max_iter=1", "train.batch_size=4", "train.crop_size=16",
            "data.classification_scenes=2"]
    with pytest.raises(SystemExit) as exc:
        _tool("train_demo_backbone").main(argv + (tiny if len(argv) > 2 else []))
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--parallel", "0"], "--parallel must be at least 1, got 0"),
    (["--pretrain-iters", "0"], "--pretrain-iters must be at least 1, got 0"),
    (["--eval-period", "0"], "--eval-period must be at least 1, got 0"),
    (["--extra", "train.foo=1"], "--extra (applied to configs/demo/demo_detector.py): Config key 'train.foo'"),
    (["--backbone-extra", "train.bar=2"], "--backbone-extra (applied to configs/demo/demo_backbone.py): Config key"),
])
def test_compare_refuses_bad_counts_and_overrides_before_any_step(demo_env, nothing_runs, capsys, flags, message):
    out = demo_env / "compare"
    with pytest.raises(SystemExit) as exc:
        _tool("compare_pretraining").main(["--output", str(out), "--method", "scratch="] + flags)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_compare_refuses_an_output_that_is_a_file(demo_env, nothing_runs, capsys):
    out = demo_env / "compare"
    out.write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        _tool("compare_pretraining").main(["--output", str(out), "--method", "scratch="])
    assert exc.value.code == 2 and f"--output {out} is a file, not a folder" in capsys.readouterr().err
    assert out.read_text() == "not a folder"


def test_ctrl_c_ends_the_demo_with_a_line_not_a_traceback(demo_env, monkeypatch, capsys):
    import siamese_detr.demo.runner as runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "StepRunner", interrupted)
    try:
        code = _tool("run_demo").main(["--output", str(demo_env / "demo")])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C ended the demo with a traceback")
    assert code == 130
    assert "interrupted; the same command resumes the unfinished steps" in capsys.readouterr().err


def test_the_comparison_steps_take_the_dataset_as_an_input_too(demo_env, monkeypatch):
    """compare_pretraining.py reuses steps as the demo does: other images must redo them."""
    first, second = _data_inputs_of_the_first_step(
        "compare_pretraining", ["--output", str(demo_env / "compare"), "--seeds", "0"], demo_env, monkeypatch)
    assert first["val"] != second["val"]
