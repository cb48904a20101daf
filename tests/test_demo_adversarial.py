"""The demo's tools against careless or unlucky use: bad flags, ``--fresh`` on a folder that is not the demo's,
two runs in one output folder, a killed demo (its steps must not outlive it, its old summary must not stay), a
damaged cached output, a changed dataset, a bad override. Every refusal is one line naming the flag or key and
comes before any step runs."""
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siamese_detr.demo.runner import StepRunner, last_iteration
from siamese_detr.demo.steps import file_digest
from script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]
BACKBONE_CONFIG = "configs/demo/demo_backbone.py"
TINY_SIZES = "train_large=4,val=2,train=4"
COUNTER = ("import pathlib, sys; d = pathlib.Path(sys.argv[1]); c = d.parent / 'count.txt'; "
           "c.write_text(str(int(c.read_text()) + 1) if c.exists() else '1'); "
           "(d / 'model_final.pth').write_text('weights'); (d / 'metrics.json').write_text('{}')")


class _StepStarted(Exception):
    """Raised by the stand-ins below: the tool got as far as running something."""


def _tool(name):
    return load_script(ROOT / "tools" / f"{name}.py", f"adversarial_{name}")


@pytest.fixture
def demo_env(tmp_path, monkeypatch):
    """A tiny dataset root, the variables the tools set restored afterwards, and the working directory too."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.setenv("SYNTHETIC_SHAPES_NUM_IMAGES", TINY_SIZES)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONWARNINGS", "ignore::FutureWarning:torch.jit._script")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def nothing_runs(monkeypatch):
    """Any command or step the tools would start raises :class:`_StepStarted` instead."""
    import siamese_detr.demo.runner as runner

    def refuse(*args, **kwargs):
        raise _StepStarted(args)

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(runner, "StepRunner", refuse)


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
    with pytest.raises(_StepStarted):
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
    with pytest.raises(_StepStarted):
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
    with pytest.raises(_StepStarted):
        _tool("run_demo").main(["--output", str(out)])
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == []
    # the same for tools/compare_pretraining.py's comparison files
    for name in ("comparison.json", "comparison.md", "comparison.png"):
        (out / name).write_text("an earlier run's")
    with pytest.raises(_StepStarted):
        _tool("compare_pretraining").main(["--output", str(out), "--method", "scratch="])
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == []


def test_figures_and_summary_are_written_whole(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    tool = _tool("run_demo")
    with pytest.raises(KeyboardInterrupt):
        with tool.written_whole(path) as tmp:
            tmp.write_text('{"half": ')
            raise KeyboardInterrupt
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    with tool.written_whole(path) as tmp:
        assert tmp.suffix == ".json"  # matplotlib and OpenCV choose the format by it
        tmp.write_text("{}")
    assert path.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_each_summary_number_comes_from_its_own_step_and_metric(tmp_path):
    """summary.json's numbers, each read from its own step's metrics.json: every source value is distinct, so
    a swapped folder or metric (AR of the random-init evaluation as the pretrained one's, AP75 as AP50) shows."""
    def metrics(folder, *records):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in records))
        return tmp_path / folder

    bb = tmp_path / "backbone"
    bb.mkdir()
    (bb / "metrics.json").write_text(json.dumps({"method": "supervised", "knn_accuracy": 96.0,
                                                 "knn_accuracy_random_init": 64.0}))
    pt = metrics("pretrain", {"iteration": 9, "total_loss": 1.0},
                 {"class_agnostic/AR@100": 1.0, "class_agnostic/AR@1": 0.5},  # an earlier evaluation: not the last
                 {"class_agnostic/AR@100": 11.0, "class_agnostic/AR@1": 0.36})
    rnd = metrics("random_init", {"class_agnostic/AR@100": 0.25, "class_agnostic/AR@1": 0.0})
    ft = {"pretrained": metrics("ft_p", {"bbox/AP": 22.0, "bbox/AP50": 46.0, "bbox/AP75": 17.0}),
          "scratch": metrics("ft_s", {"bbox/AP": 25.0, "bbox/AP50": 50.0, "bbox/AP75": 21.0})}
    summary = _tool("run_demo").write_summary(tmp_path, bb, pt, rnd, ft, {"backbone": 6.0}, 390.0, 60.0,
                                              ["backbone"], [], {"torch": "x"},
                                              {"cpu": "X", "cpu_id": "v f 1", "torch_cpu_capability": "AVX2"})
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert summary["ap"] == {"pretrained": 22.0, "scratch": 25.0}
    assert summary["ap50"] == {"pretrained": 46.0, "scratch": 50.0}
    assert (summary["ar100_pretrained_no_finetune"], summary["ar1_pretrained_no_finetune"]) == (11.0, 0.36)
    assert (summary["ar100_random_init_no_finetune"], summary["ar1_random_init_no_finetune"]) == (0.25, 0.0)
    assert (summary["backbone_knn_accuracy"], summary["backbone_knn_accuracy_random_init"]) == (96.0, 64.0)
    assert summary["backbone"].startswith("narrow ResNet-18 trained by supervised classification")
    assert (summary["minutes"], summary["minutes_this_run"]) == (6.5, 1.0)
    assert summary["machine"] == {"cpu": "X", "cpu_id": "v f 1", "torch_cpu_capability": "AVX2",
                                  "cpus": len(os.sched_getaffinity(0))}


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
    with pytest.raises(_StepStarted):  # free again
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
            if not _alive(child):
                break
            time.sleep(0.1)
        assert not _alive(child), "the step kept running after the demo was killed"
    finally:
        if parent.poll() is None:
            parent.kill()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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
            raise _StepStarted(name)

    monkeypatch.setattr(runner, "StepRunner", Recorder)
    with pytest.raises(_StepStarted):
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


# ------------------------------------------------------------------------------ the demo's summary table
def _table_summary():
    return {"ap": {"pretrained": 22.0, "scratch": 25.0}, "ap50": {"pretrained": 46.0, "scratch": 50.0},
            "ar1_pretrained_no_finetune": 0.36, "ar100_pretrained_no_finetune": 11.0,
            "ar1_random_init_no_finetune": 0.0, "ar100_random_init_no_finetune": 0.25,
            "backbone_knn_accuracy": 96.0, "backbone_knn_accuracy_random_init": 64.0}


def test_the_summary_table_shows_each_rows_own_numbers_and_the_signed_gain(capsys):
    """The pretrained finetuning's row shows its AP (22 / 46), the scratch one's its own (25 / 50), the gain is
    pretrained minus scratch (-3.0, a loss shown as one), and reused (*) / resumed (+) steps are marked."""
    times = {"data": 3.0, "backbone": 6.0, "pretrain": 125.0, "random-init eval": 9.0,
             "finetune (pretrained)": 61.0, "finetune (scratch)": 70.0, "figures": 2.0}
    _tool("run_demo").print_table(_table_summary(), times, reused={"backbone", "finetune scratch"},
                                  resumed={"pretrain"})
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == ("Summary (metrics on synthetic_shapes_val, %; * = reused from an earlier run, its time then; "
                        "+ = continued after an interruption, the interrupted run's time included):")
    assert lines[2] == f"{'stage':<40} {'time':>6}  key metric"
    assert lines[3:] == [
        f"{'data (generate / reuse)':<40}   0:03  ",
        f"{'backbone (k-NN on val objects)':<40}   0:06* k-NN 96.0% (random init 64.0%)",
        f"{'Siamese DETR pretraining (no labels)':<40}   2:05+ AR@1/100 0.4/11.0",
        f"{'same model, random init':<40}   0:09  AR@1/100 0.0/0.2",
        f"{'finetune 10% labels from pretraining':<40}   1:01  AP 22.0  AP50 46.0",
        f"{'finetune 10% labels from scratch':<40}   1:10* AP 25.0  AP50 50.0",
        f"{'figures':<40}   0:02  ",
        "gain from Siamese DETR pretraining: -3.0 AP (one seed; the AP varies by about 2 between seeds here: "
        "python tools/compare_pretraining.py compares over several)",
    ]


def test_the_summary_table_without_resumed_steps_or_an_ap(capsys):
    """No resumed step: no `+` in the legend; a missing AP: `-` and no gain line."""
    summary = _table_summary()
    summary["ap"]["scratch"] = None
    _tool("run_demo").print_table(summary, {}, reused=set(), resumed=set())
    out = capsys.readouterr().out
    assert "(metrics on synthetic_shapes_val, %; * = reused from an earlier run, its time then):" in out
    assert f"{'finetune 10% labels from scratch':<40}   0:00  AP -  AP50 50.0" in out.splitlines()
    assert "gain" not in out and "*" not in out.split("\n", 3)[3]


def test_the_summary_table_names_the_machine(capsys):
    """The last line names the processor kind and the processors the demo had, which its numbers depend on."""
    summary = _table_summary()
    summary["machine"] = {"cpu": "AMD EPYC", "cpu_id": "vendor_id AuthenticAMD cpu family 25 model 1 stepping 1",
                          "torch_cpu_capability": "AVX2", "cpus": 2}
    _tool("run_demo").print_table(summary, {}, reused=set(), resumed=set())
    assert capsys.readouterr().out.splitlines()[-1] == (
        "machine: AMD EPYC (vendor_id AuthenticAMD cpu family 25 model 1 stepping 1), torch CPU kernels AVX2, "
        "2 CPUs (the floats, so the numbers, depend on the processor kind)")
    describe = _tool("run_demo").describe_machine
    assert describe({"cpu": "arm64", "cpu_id": "arm64", "torch_cpu_capability": "DEFAULT", "cpus": 1}) == (
        "arm64, torch CPU kernels DEFAULT, 1 CPU")


def test_the_readmes_sample_of_the_summary_table_is_what_the_demo_prints(capsys):
    """The README's Quick start shows the end of a real run, its long lines folded (continuations indented by two
    spaces). Printed again by ``print_table`` from the numbers read off its rows, the table must come out line for
    line as the README shows it, so the sample cannot drift from the demo's current format."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```text\nSummary (metrics on")
    block = readme[start + len("```text\n"):readme.index("```", start + 3)]
    shown = []
    for line in block.splitlines():
        if line.startswith("  "):
            shown[-1] += " " + line.strip()
        elif line:
            shown.append(line)
    rows = {line[:40].strip(): line[40:] for line in shown[2:9]}

    def numbers(stage):
        return [float(v) for v in re.findall(r"\d+\.\d+", rows[stage].split(None, 1)[1])]

    def seconds(stage):
        minutes, secs = rows[stage].split()[0].split(":")
        return 60 * int(minutes) + int(secs)

    knn, knn_random = numbers("backbone (k-NN on val objects)")
    ar1, ar100 = numbers("Siamese DETR pretraining (no labels)")
    ar1_random, ar100_random = numbers("same model, random init")
    ap_pre, ap50_pre = numbers("finetune 10% labels from pretraining")
    ap_scratch, ap50_scratch = numbers("finetune 10% labels from scratch")
    machine = re.fullmatch(r"machine: (.+) \((.+)\), torch CPU kernels (\w+), (\d+) CPUs \(.*\)", shown[10])
    summary = {"ap": {"pretrained": ap_pre, "scratch": ap_scratch},
               "ap50": {"pretrained": ap50_pre, "scratch": ap50_scratch},
               "ar1_pretrained_no_finetune": ar1, "ar100_pretrained_no_finetune": ar100,
               "ar1_random_init_no_finetune": ar1_random, "ar100_random_init_no_finetune": ar100_random,
               "backbone_knn_accuracy": knn, "backbone_knn_accuracy_random_init": knn_random,
               "machine": {"cpu": machine[1], "cpu_id": machine[2], "torch_cpu_capability": machine[3],
                           "cpus": int(machine[4])}}
    times = {key: seconds(stage) for key, stage in [
        ("data", "data (generate / reuse)"), ("backbone", "backbone (k-NN on val objects)"),
        ("pretrain", "Siamese DETR pretraining (no labels)"), ("random-init eval", "same model, random init"),
        ("finetune (pretrained)", "finetune 10% labels from pretraining"),
        ("finetune (scratch)", "finetune 10% labels from scratch"), ("figures", "figures")]}
    _tool("run_demo").print_table(summary, times, reused=set(), resumed=set())
    printed = [line.rstrip() for line in capsys.readouterr().out.splitlines() if line]
    # the gain is taken from the unrounded APs: the README's may differ from the rounded ones' by 0.1
    gain = re.compile(r"(?<=^gain from Siamese DETR pretraining: )[-+]\d+\.\d")
    assert abs(float(gain.search(shown[9])[0]) - float(gain.search(printed[9])[0])) <= 0.1 + 1e-9
    assert [gain.sub("G", line) for line in printed] == [gain.sub("G", line) for line in shown[:len(printed)]]
    assert shown[len(printed)].startswith("Demo finished in ")


def test_demo_seconds_by_hand():
    """Two at a time: data + backbone + the longer of pretraining 10 and random-init eval 3 + the longer of the
    finetunings (pretrained 5, scratch 8) + figures = 1 + 2 + 10 + 8 + 1 = 22 (not a chain pretraining ->
    pretrained finetuning beside scratch -> random-init, 19); one at a time: the sum, 30."""
    tool = _tool("run_demo")
    times = {"data": 1.0, "backbone": 2.0, "pretrain": 10.0, "finetune (pretrained)": 5.0,
             "finetune (scratch)": 8.0, "random-init eval": 3.0, "figures": 1.0}
    assert tool.demo_seconds(times, 2) == 22.0
    assert tool.demo_seconds(times, 3) == 22.0
    assert tool.demo_seconds(times, 1) == 30.0
    # the other member of each pair the longer one: 1 + 2 + 12 + 6 + 1
    assert tool.demo_seconds(dict(times, **{"finetune (pretrained)": 6.0, "finetune (scratch)": 4.0,
                                            "random-init eval": 12.0}), 2) == 22.0
    without_figures = {k: v for k, v in times.items() if k != "figures"}
    assert tool.demo_seconds(without_figures, 2) == 21.0


def test_schedule_overrides_of_the_demo_drop_the_lr_at_80_percent():
    assert _tool("run_demo").schedule_overrides(10) == [
        "train.max_iter=10", "lr_multiplier.milestones=[8]", "lr_multiplier.num_updates=10"]
    assert _tool("run_demo").schedule_overrides(1) == [
        "train.max_iter=1", "lr_multiplier.milestones=[1]", "lr_multiplier.num_updates=2"]


def test_each_step_time_of_the_demo_is_its_own(demo_env, monkeypatch):
    """run with the steps, the data command and the figures stood in for: the seconds ``parallel`` returns for
    each job (a distinct number per job) land under that job's stage in summary.json's stage_seconds."""
    import siamese_detr.demo.plots as plots
    import siamese_detr.demo.runner as runner

    seconds = {"pretrain": 100.0, "finetune scratch": 200.0, "random-init eval": 300.0, "finetune pretrained": 700.0}

    class FakeRunner:
        def __init__(self, root, log_dir):
            self.environment = {"code": "c", "software": {"torch": "fake"}, "machine": {"cpu": "fake"}}
            self.reused, self.resumed = {"backbone"}, set()

        def step(self, name, folder, cmd, config=None, overrides=None, inputs=None, total=None):
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "model_final.pth").write_text("weights")
            return 50.0

        def parallel(self, jobs, max_parallel=2):
            return [seconds[job["name"]] for job in jobs]

    def command(cmd, *args, **kwargs):  # the data command, and plot_metrics.py writing its figure
        cmd = [str(c) for c in cmd]
        if "--output" in cmd:
            Path(cmd[cmd.index("--output") + 1]).write_text("png")
        return subprocess.CompletedProcess(cmd, 0)

    def figure(output):
        Path(output).write_text("png")

    monkeypatch.setattr(runner, "StepRunner", FakeRunner)
    monkeypatch.setattr(subprocess, "run", command)
    monkeypatch.setattr(plots, "eval_history", lambda *args, **kwargs: [])
    monkeypatch.setattr(plots, "plot_ap_curves", lambda curves, output, title: figure(output))
    monkeypatch.setattr(plots, "draw_detections", lambda config, runs, output, top_k: figure(output))
    out = demo_env / "demo"
    assert _tool("run_demo").main(["--output", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stage_seconds"]
    assert {k: stages[k] for k in ("backbone", "pretrain", "finetune (scratch)", "random-init eval",
                                   "finetune (pretrained)")} == {
        "backbone": 50.0, "pretrain": 100.0, "finetune (scratch)": 200.0, "random-init eval": 300.0,
        "finetune (pretrained)": 700.0}
    assert summary["reused_steps"] == ["backbone"]
    # two at a time: max(pretraining 100, random-init eval 300) + max(finetunings 700, 200)
    assert summary["minutes"] * 60 == pytest.approx(stages["data"] + 50.0 + 300.0 + 700.0 + stages["figures"])
