"""tools/lazyconfig_train_net.py end to end on the built-in dataset: train, resume, --eval-only."""
import json
import os

import pytest

from hang_guard import HANG_GUARD_S
from train_net_tool import ROOT, TINY, train_net


def _run(tmp_path, *extra, eval_only=False, resume=False):
    argv = ["--config-file", str(ROOT / "configs/demo/detr_demo.py")]
    argv += ["--eval-only"] if eval_only else []
    argv += ["--resume"] if resume else []
    argv += TINY + [f"train.output_dir={tmp_path / 'out'}", *extra]
    return train_net.main(train_net.parse_args(argv))


def _metrics(tmp_path):
    lines = (tmp_path / "out" / "metrics.json").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_train_resume_and_eval_only(tmp_path, tiny_synthetic_shapes):
    keep_one = "train.checkpointer.max_to_keep=1"
    _run(tmp_path, "train.max_iter=3", "train.checkpointer.period=2", "train.eval_period=3", keep_one)
    out = tmp_path / "out"
    assert (out / "model_final.pth").is_file() and (out / "config.yaml").is_file()
    records = _metrics(tmp_path)
    losses = [r for r in records if "total_loss" in r]
    assert [r["iteration"] for r in losses] == [0, 1, 2]
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "lr", "data_time"} <= set(losses[0])
    assert any("bbox/AP" in r for r in records), "periodic evaluation wrote COCO AP to metrics.json"

    # --resume continues from the last checkpoint (iteration 2 finished -> starts at 3)
    assert sorted(p.name for p in out.glob("model_*.pth")) == ["model_0000001.pth", "model_final.pth"]
    _run(tmp_path, "train.max_iter=5", "train.checkpointer.period=2", "train.eval_period=0", keep_one, resume=True)
    resumed = [r["iteration"] for r in _metrics(tmp_path) if "total_loss" in r]
    assert resumed == [0, 1, 2, 3, 4]
    # max_to_keep=1 also counts the first run's periodic file: model_0000003 replaced model_0000001
    assert sorted(p.name for p in out.glob("model_*.pth")) == ["model_0000003.pth", "model_final.pth"]

    results = _run(tmp_path, f"train.init_checkpoint={out / 'model_final.pth'}", eval_only=True)
    assert set(results["bbox"]) >= {"AP", "AP50", "AP75"}
    # the checkpoint's iteration (0-based index: 4) and, as the training run's evaluations count, 5 finished
    record = _metrics(tmp_path)[-1]
    assert (record["eval_only"], record["iteration"], record["eval/finished_iterations"]) == (True, 4, 5)
    assert 0.0 <= results["bbox"]["AP"] <= 100.0  # AP of size ranges without objects may be NaN


def test_a_run_stopped_during_its_final_evaluation_evaluates_when_resumed(tmp_path, tiny_synthetic_shapes):
    """detectron2 writes model_final.pth after the last step and evaluates only after training: a run killed
    in between used to resume with nothing to train and end without its final results (the demo then
    reported an earlier evaluation's AP as the final one). Resumed, it evaluates and logs the results as the
    training run would have; resumed again, it does not evaluate twice."""
    over = ("train.max_iter=2", "train.checkpointer.period=1", "train.eval_period=2")
    _run(tmp_path, *over)
    metrics = tmp_path / "out" / "metrics.json"
    finished = [r for r in _metrics(tmp_path) if "bbox/AP" in r]
    assert [(r["iteration"], r["eval/finished_iterations"]) for r in finished] == [(2, 2)]
    # the state such a kill leaves: model_final.pth and last_checkpoint written, no final evaluation line
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines() if "bbox/AP" not in line))
    assert (tmp_path / "out" / "last_checkpoint").read_text() == "model_final.pth"

    _run(tmp_path, *over, resume=True)
    assert [r["iteration"] for r in _metrics(tmp_path) if "total_loss" in r] == [0, 1]  # nothing retrained
    evaluated = [r for r in _metrics(tmp_path) if "bbox/AP" in r]
    assert [(r["iteration"], r["eval/finished_iterations"]) for r in evaluated] == [(2, 2)]
    assert evaluated[0]["bbox/AP"] == pytest.approx(finished[0]["bbox/AP"])  # the same weights, evaluated
    assert not evaluated[0].get("eval_only")
    _run(tmp_path, *over, resume=True)
    assert len([r for r in _metrics(tmp_path) if "bbox/AP" in r]) == 1


def test_which_final_evaluation_counts_and_runs_that_never_evaluate(tmp_path, caplog, monkeypatch):
    """Only a final evaluation after the file's last training line counts (a folder started over without
    --resume holds an earlier series), never an --eval-only record; a run without an evaluator (the ImageNet
    pretrainings) or with eval_period 0 is never evaluated on resume, and says nothing about it."""
    from omegaconf import OmegaConf

    from siamese_detr.engine.eval_outputs import final_evaluation_logged

    metrics = tmp_path / "metrics.json"
    train_line, final = '{"iteration": 1, "total_loss": 1.0}\n', '{"bbox/AP": 1.0, "eval/finished_iterations": 2.0}\n'
    cases = [("", False), (train_line, False), (train_line + final, True), (train_line + final + train_line, False),
             (train_line + final + train_line + final, True),
             (train_line + final.replace("}", ', "eval_only": true}'), False),
             (train_line + final.replace("2.0", "1.0"), False)]
    for text, expected in cases:
        metrics.write_text(text)
        assert final_evaluation_logged(str(tmp_path), 2) is expected, text

    monkeypatch.setattr(train_net, "do_test", lambda cfg, model: pytest.fail("evaluated a run that never does"))
    metrics.write_text(train_line)
    for evaluator, period in ((None, 5000), ({"_target_": "x"}, 0)):
        cfg = OmegaConf.create({"train": {"eval_period": period, "max_iter": 2, "output_dir": str(tmp_path)},
                                "dataloader": {"evaluator": evaluator}})
        with caplog.at_level("INFO"):
            train_net.evaluate_if_killed_before_final_evaluation(cfg, model=None)
    assert "evaluat" not in caplog.text


def test_resume_into_a_folder_of_another_run_is_refused(tmp_path, tiny_synthetic_shapes):
    """--resume continues the run in train.output_dir only if it trains the same model and data."""
    from siamese_detr.engine.resume_checks import ResumeMismatchError

    _run(tmp_path, "train.max_iter=1", "train.eval_period=0")
    with pytest.raises(ResumeMismatchError, match=r"model\.num_queries.*another train\.output_dir"):
        _run(tmp_path, "train.max_iter=2", "train.eval_period=0", "model.num_queries=7", resume=True)
    with pytest.raises(ResumeMismatchError, match=r"dataloader\.train\.dataset\.names"):
        _run(tmp_path, "train.max_iter=2", "train.eval_period=0",
             "dataloader.train.dataset.names=synthetic_shapes_val", resume=True)
    # a longer schedule is fine: the same run continues
    _run(tmp_path, "train.max_iter=2", "train.eval_period=0", resume=True)
    assert [r["iteration"] for r in _metrics(tmp_path) if "total_loss" in r] == [0, 1]


def test_unknown_override_key_fails_before_training(tmp_path, tiny_synthetic_shapes):
    with pytest.raises(KeyError, match="train.max_iterr"):
        _run(tmp_path, "train.max_iterr=3")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--config-file", "configs/no_such.py"], "--config-file 'configs/no_such.py' does not exist"),
    ([], "--config-file is required: the LazyConfig to run, e.g. configs/demo/detr_demo.py"),
    (["--config-file", str(ROOT / "configs/demo")],
     f"is a folder: give a config file in it, e.g. {ROOT}/configs/demo/"),
    (["--config-file", str(ROOT / "configs/demo/detr_demo.py"), "--num-gpus", "0"],
     "--num-gpus 0: the number of processes must be at least 1"),
])
def test_config_file_and_process_count_mistakes_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        train_net.parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_python_file_that_is_not_a_training_config_is_named(tmp_path):
    """A tool given as the config loaded fine and failed later with omegaconf's 'Missing key train'."""
    argv = ["--config-file", str(ROOT / "tools/plot_metrics.py"), f"train.output_dir={tmp_path / 'out'}"]
    with pytest.raises(ValueError, match=r"plot_metrics.py is not a training config of this project: it defines "
                                         r"no model, dataloader, train, optimizer, lr_multiplier"):
        train_net.main(train_net.parse_args(argv))
    fragment = ["--config-file", str(ROOT / "configs/common/optim.py"), "--eval-only"]
    with pytest.raises(ValueError, match=r"optim.py is not a training config of this project: it defines no "
                                         r"model, dataloader, train \(it defines "):
        train_net.main(train_net.parse_args(fragment))


def test_a_batch_that_does_not_split_over_the_processes_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setattr(train_net.comm, "get_world_size", lambda: 3)
    with pytest.raises(ValueError, match=r"dataloader.train.total_batch_size=2 images per iteration do not split "
                                         r"over 3 processes \(--num-gpus 3\): set "
                                         r"dataloader.train.total_batch_size=3, or another"):
        train_net.setup(train_net.parse_args(["--config-file", str(ROOT / "configs/demo/detr_demo.py"), *TINY,
                                              f"train.output_dir={tmp_path / 'out'}"]))


def test_a_batch_that_does_not_split_is_refused_before_the_processes_start(tmp_path, monkeypatch):
    """Found by every process after all of them had started (8 processes: 28 s and 8 tracebacks); now by the
    launching process, before any starts. One process: nothing to check there (setup does it)."""
    args = train_net.parse_args(["--num-gpus", "4", "--config-file", str(ROOT / "configs/demo/detr_demo.py"),
                                 *TINY, f"train.output_dir={tmp_path / 'out'}"])  # TINY: total_batch_size=2
    monkeypatch.setattr(train_net.comm, "get_world_size", lambda: pytest.fail("asked a process group"))
    with pytest.raises(ValueError, match=r"do not split over 4 processes \(--num-gpus 4\): set "
                                         r"dataloader.train.total_batch_size=4, or another"):
        train_net.check_before_launch(args)
    train_net.check_before_launch(train_net.parse_args(["--num-gpus", "2", "--config-file",
                                                        args.config_file, *args.opts]))
    train_net.check_before_launch(train_net.parse_args(["--config-file", args.config_file, *args.opts,
                                                        "dataloader.train.total_batch_size=3"]))
    assert not (tmp_path / "out").exists()  # nothing written: the processes do that


def test_two_process_cpu_training_via_num_gpus(tmp_path, tiny_synthetic_shapes):
    """--num-gpus 2 without GPUs: two gloo workers train (DDP) and evaluate together."""
    import os
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("with CUDA, --num-gpus uses GPUs")
    env = dict(os.environ, DETECTRON2_DATASETS=str(tiny_synthetic_shapes))
    # the subprocess generates the default-size built-in dataset under this test's own root
    argv = [sys.executable, str(ROOT / "tools" / "lazyconfig_train_net.py"), "--num-gpus", "2",
            "--config-file", str(ROOT / "configs/demo/detr_demo.py"), *TINY,
            "train.max_iter=2", "train.eval_period=2",
            f"train.output_dir={tmp_path / 'out'}"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out" / "model_final.pth").is_file()
    iterations = [r["iteration"] for r in _metrics(tmp_path) if "total_loss" in r]
    assert iterations == [0, 1]
    assert "bbox/AP" in "".join((tmp_path / "out" / "metrics.json").read_text().splitlines()[-1:])
    # --resume with two processes: both compare the previous config.yaml before the main one rewrites it
    resume = [a for a in argv if a not in ("train.max_iter=2", "train.eval_period=2")]
    resume[2:2] = ["--resume"]  # before the overrides (argparse gives the rest to them)
    resume += ["train.max_iter=3", "train.eval_period=0"]
    proc = subprocess.run(resume, capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["iteration"] for r in _metrics(tmp_path) if "total_loss" in r] == [0, 1, 2]


def test_training_on_two_machines_of_one_process_each(tmp_path, tiny_synthetic_shapes):
    """``--num-gpus 1 --num-machines 2 --machine-rank R --dist-url file://...`` on two launchers (two "machines"
    sharing a file system; CPU workers over gloo): they train as one DDP job of world size 2 (one metrics series,
    one model_final.pth, each rank's log), and neither prints a warning about detectron2's own code (the
    deprecated TypedStorage of its all_gather, DDP's broadcast_buffers argument)."""
    import os
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("with CUDA, --num-gpus uses GPUs")
    env = dict(os.environ, DETECTRON2_DATASETS=str(tiny_synthetic_shapes))
    url = f"file://{tmp_path / 'rendezvous'}"
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tools" / "lazyconfig_train_net.py"), "--num-gpus", "1",
                               "--num-machines", "2", "--machine-rank", str(rank), "--dist-url", url,
                               "--config-file", str(ROOT / "configs/demo/detr_demo.py"), *TINY,
                               "train.max_iter=2", "train.eval_period=0", f"train.output_dir={tmp_path / 'out'}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
             for rank in (0, 1)]
    try:
        errs = [p.communicate(timeout=HANG_GUARD_S)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(e[-3000:] for e in errs)
    assert (tmp_path / "out" / "model_final.pth").is_file() and (tmp_path / "out" / "log.txt.rank1").is_file()
    assert [r["iteration"] for r in _metrics(tmp_path) if "total_loss" in r] == [0, 1]
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "Rank of current process: 0. World size: 2" in log
    for err in errs:
        assert "TypedStorage is deprecated" not in err and "`broadcast_buffers` is deprecated" not in err


def test_a_finished_run_leaves_no_multiprocessing_folders_behind(tmp_path):
    """detectron2 keeps the endless training iterator until the process ends: its data-loader workers were
    then terminated at exit and each left its multiprocessing folder (``pymp-*`` in the temporary folder)
    behind, one per worker per run. A real run in a fresh process, with its own temporary folder."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import cv2
    import numpy as np

    from hang_guard import HANG_GUARD_S

    (tmp_path / "images").mkdir()
    images, annotations = [], []
    for i in range(4):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), np.full((96, 128, 3), 40 * i, np.uint8))
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 96, "width": 128})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 40, 30],
                            "area": 1200, "iscrowd": 0})
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "box"}]}
    (tmp_path / "train.json").write_text(json.dumps(data))
    # a folder of its own, in the session's short temporary folder: under tmp_path the workers' sockets could
    # exceed the 107 bytes of a Unix socket path (refused at start-up, see test_worker_checks.py)
    temporary = Path(tempfile.mkdtemp(prefix="run-"))
    cmd = [sys.executable, str(ROOT / "tools/lazyconfig_train_net.py"), "--config-file",
           str(ROOT / "configs/demo/detr_demo.py"), *TINY, "train.max_iter=2", "train.eval_period=0",
           f"dataloader.train.dataset.names=coco:{tmp_path / 'train.json'}:{tmp_path / 'images'}",
           "dataloader.train.num_workers=2", f"train.output_dir={tmp_path / 'out'}"]
    env = {**os.environ, "TMPDIR": str(temporary), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "model_final.pth").is_file()
    assert sorted(p.name for p in temporary.glob("pymp-*")) == []
