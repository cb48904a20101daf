"""The demo's step cache and runner at the edges the end-to-end tests leave open: the output lock, the
iteration count of a resumed run, a step killed by a signal, the working folder and log of a step, a reused
step without a recorded time as a dependency, the step record's corner cases, the code digest's file order
and folder names, the summary's resumed steps, and the label-free dataset dicts of a dataset without sizes."""
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog

from siamese_detr.demo.runner import (StepRunner, _Running, clock, last_iteration, last_results, lock_output)
from siamese_detr.demo.steps import Step, source_digest
from script_modules import load_script
from hang_guard import HANG_GUARD_S
from demo_tool_helpers import COUNTER, killed_run, process_alive, recorded_inputs

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- the lock
def test_the_lock_is_exclusive_and_names_the_current_owner(tmp_path):
    """A second lock of the same folder is refused while the first is held (even by the same process: two
    runners would write the same steps), naming the holder's pid alone, not a stale pid left in the file."""
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / ".lock").write_text("999999999")  # left by a run that died
    lock = lock_output(folder)
    try:
        assert (folder / ".lock").read_text() == str(os.getpid())
        with pytest.raises(SystemExit, match=rf"in use by another run \(pid {os.getpid()}\)"):
            lock_output(folder)
    finally:
        lock.close()
    lock_output(folder).close()  # free again


# ------------------------------------------------------------------------------ iterations and clock
def test_last_iteration_reads_metrics_json_before_progress_json(tmp_path):
    (tmp_path / "metrics.json").write_text('{"iteration": 9, "total_loss": 1.0}\n')
    (tmp_path / "progress.json").write_text('{"iteration": 99, "total_loss": 1.0}\n')
    assert last_iteration(tmp_path) == 10
    (tmp_path / "metrics.json").unlink()
    assert last_iteration(tmp_path) == 100


def test_a_training_line_with_a_slash_key_still_moves_the_count_back(tmp_path):
    """Only a line whose keys (but ``iteration``) ALL hold a ``/`` is an evaluation's; a resumed run's training
    line that logs one such key beside its losses (e.g. ``loss/region``) moves the count back like any other."""
    (tmp_path / "metrics.json").write_text(
        '{"iteration": 19, "total_loss": 1.0}\n{"iteration": 9, "total_loss": 2.0, "loss/region": 0.5}\n')
    assert last_iteration(tmp_path) == 10
    (tmp_path / "metrics.json").write_text(
        '{"iteration": 19, "total_loss": 1.0}\n{"iteration": 9, "bbox/AP": 1.0, "bbox/AP50": 2.0}\n')
    assert last_iteration(tmp_path) == 20


def test_last_results_keep_only_evaluation_metrics_the_last_value_winning(tmp_path):
    """Training lines carry losses, ``lr`` and ``iteration`` beside an evaluation's ``task/metric`` keys: only
    the latter are results; a line that is no JSON object is skipped."""
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"iteration": 9, "total_loss": 2.0, "lr": 0.1, "bbox/AP": 1.0}\n'
                       '[1, 2]\n{"iteration": 19, "bbox/AP": 3.0, "bbox/AP50": 7.0}\n'
                       '{"iteration": 29, "total_loss": 1.5}\n')
    assert last_results(metrics) == {"bbox/AP": 3.0, "bbox/AP50": 7.0}
    assert last_results(tmp_path / "missing.json") == {}


def test_clock_by_hand():
    assert [clock(s) for s in (None, 0, 59.9, 61, 3600, -5.0)] == ["0:00", "0:00", "0:59", "1:01", "60:00", "0:00"]


def test_the_bar_never_shows_more_than_the_total(tmp_path):
    """A metrics.json logging past the total (e.g. an evaluation line at max_iter) shows a full bar, not more."""
    (tmp_path / "metrics.json").write_text('{"iteration": 1499, "total_loss": 1.0}\n')
    run = _Running("s", tmp_path, None, None, None, start=0.0, total=1000)
    assert run.progress(now=5.0, final=True) == f"[{'#' * 30}] 1000/1000 it  0:05 elapsed"
    assert run.progress(now=5.0, short=True) == "1000/1000 it"


def test_the_terminal_line_shows_every_running_step_within_the_width(tmp_path, monkeypatch, capsys):
    """On a terminal, one running step shows its full bar; two show ``name: done/total it ETA`` each, joined by
    `` | `` on one line that is overwritten in place (``\\r``) and cut to the terminal's width; elsewhere the
    line is not printed at all (the logs get the progress)."""
    import siamese_detr.demo.runner as runner_module

    folders = []
    for name, iteration in (("pretrain", 99), ("finetune", 249)):
        folders.append(tmp_path / name)
        folders[-1].mkdir()
        (folders[-1] / "metrics.json").write_text(f'{{"iteration": {iteration}}}\n')
    runs = [_Running("pretrain", folders[0], None, None, None, start=0.0, total=600),
            _Running("finetune", folders[1], None, None, None, start=0.0, total=800)]
    runner = StepRunner(tmp_path, tmp_path)
    monkeypatch.setattr(runner_module, "_terminal_width", lambda: 200)

    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    runner._show(runs)
    assert capsys.readouterr().out == ""

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    runner._show(runs)
    line = capsys.readouterr().out
    assert line.startswith("\r  pretrain: 100/600 it | finetune: 250/800 it") and "\n" not in line
    assert len(line) == 1 + 199  # "\r", then 2 spaces and the text padded: one column short of the width

    runner._show(runs[1:])
    line = capsys.readouterr().out
    assert line.startswith(f"\r  [{'#' * 9}{'.' * 21}] 250/800 it") and len(line) == 1 + 199

    monkeypatch.setattr(runner_module, "_terminal_width", lambda: 30)
    runner._show(runs)
    assert capsys.readouterr().out == "\r  " + "pretrain: 100/600 it | finetune: 250/800 it"[:27]


# --------------------------------------------------------------------------------------- the runner
def test_a_step_process_whose_demo_is_gone_ends_before_it_runs():
    """A step started just as its demo died (its parent is then another process) ends at once, exit 1,
    instead of writing its folder with no demo to wait for it; with its demo alive it runs."""
    import subprocess

    code = ("import os, sys; from siamese_detr.demo.runner import _die_with_parent; "
            "_die_with_parent(os.getppid() + int(sys.argv[1])); print('ran')")
    for offset, returncode, out in ((0, 0, "ran\n"), (1, 1, "")):
        done = subprocess.run([sys.executable, "-c", code, str(offset)], capture_output=True, text=True,
                              timeout=HANG_GUARD_S)
        assert (done.returncode, done.stdout) == (returncode, out), done.stderr


def test_a_step_killed_by_a_signal_fails_and_stays_incomplete(tmp_path):
    """A step whose process dies by a signal (the kernel's OOM killer, a kill) has a negative return code: it
    failed, it must not be recorded complete and reused."""
    runner = StepRunner(tmp_path, tmp_path)
    cmd = [sys.executable, "-c", "import os, signal; print('dying'); os.kill(os.getpid(), signal.SIGTERM)"]
    with pytest.raises(SystemExit, match=r"\[killed\] failed \(exit -15\)"):
        runner.step("killed", tmp_path / "killed", cmd)
    assert Step("killed", tmp_path / "killed", recorded_inputs(runner, cmd)).state() == "resume"


def test_a_failed_step_shows_the_end_of_its_log(tmp_path):
    runner = StepRunner(tmp_path, tmp_path)
    cmd = [sys.executable, "-c", "print('\\n'.join(f'line {i}' for i in range(40))); raise SystemExit(2)"]
    with pytest.raises(SystemExit) as exc:
        runner.step("bad", tmp_path / "bad", cmd)
    message = str(exc.value)
    assert "line 39" in message and "line 25" in message and "line 24" not in message  # its last 15 lines
    assert f"full log: {tmp_path / 'bad' / 'demo.log'}" in message


def test_a_step_runs_in_the_runners_root_and_is_redone_when_any_argument_changes(tmp_path, capsys, monkeypatch):
    """Commands name the repository's files relative to it (``tools/...``): a step runs in ``root``, not in the
    caller's working folder. A change of any argument (here the last) is a change of the step's inputs."""
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    counter = tmp_path / "count.txt"
    script = f"import os; open('cwd.txt', 'w').write(os.getcwd()); exec({COUNTER!r})"
    runner = StepRunner(root, tmp_path / "logs")
    runner.step("s", tmp_path / "out", [sys.executable, "-c", script, str(counter), "a"])
    assert (root / "cwd.txt").read_text() == str(root) and not (elsewhere / "cwd.txt").exists()
    assert counter.read_text() == "1"
    runner.step("s", tmp_path / "out", [sys.executable, "-c", script, str(counter), "a"])
    assert counter.read_text() == "1" and runner.reused == {"s"}
    runner.step("s", tmp_path / "out", [sys.executable, "-c", script, str(counter), "b"])
    assert counter.read_text() == "2"
    assert "inputs changed (command): redoing the step" in capsys.readouterr().out


def test_parallel_refuses_no_slot_and_jobs_that_wait_for_each_other_before_running_any(tmp_path):
    """Either would loop for ever: no job could ever start."""
    runner = StepRunner(tmp_path, tmp_path)
    job = dict(name="a", folder=tmp_path / "a", cmd=[sys.executable, "-c", "open('ran', 'w')"])
    with pytest.raises(ValueError, match="max_parallel must be at least 1, got 0"):
        runner.parallel([job], max_parallel=0)
    with pytest.raises(ValueError, match=r"jobs \['a', 'b'\] wait for each other"):
        runner.parallel([dict(job, after=["b"]), dict(job, name="b", folder=tmp_path / "b", after=["a"])])
    assert not (tmp_path / "ran").exists()


def test_stopping_a_step_that_ignores_sigterm_kills_it(tmp_path):
    """``stop`` terminates, waits (30 s) and then kills; the log is closed either way."""
    import subprocess

    class Stubborn:  # a process that outlives SIGTERM
        def __init__(self):
            self.calls = []

        def poll(self):
            return None

        def terminate(self):
            self.calls.append("terminate")

        def wait(self, timeout=None):
            self.calls.append(("wait", timeout))
            if timeout is not None:
                raise subprocess.TimeoutExpired("step", timeout)

        def kill(self):
            self.calls.append("kill")

    proc, log = Stubborn(), open(tmp_path / "demo.log", "a")
    _Running("s", tmp_path, None, proc, log, 0.0, 0).stop()
    assert proc.calls == ["terminate", ("wait", 30), "kill", ("wait", None)] and log.closed


def test_a_failed_parallel_step_stops_the_others_processes(tmp_path):
    """When one step of a parallel run fails, the processes of the others are ended before the error is
    raised (not left training in the background beside the re-run). The failing step waits (bounded by the
    hang guard) until the other has started and written its pid."""
    pid_file = tmp_path / "slow.pid"
    slow = [sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                                  "time.sleep(600)"]
    bad = [sys.executable, "-c", f"import os, sys, time; any(os.path.getsize({str(pid_file)!r}) > 0 "
                                 f"if os.path.exists({str(pid_file)!r}) else time.sleep(0.05) "
                                 f"for _ in range({HANG_GUARD_S * 20})); sys.exit(3)"]
    runner = StepRunner(tmp_path, tmp_path)
    try:
        with pytest.raises(SystemExit, match=r"\[bad\] failed \(exit 3\)"):
            runner.parallel([dict(name="slow", folder=tmp_path / "slow", cmd=slow),
                             dict(name="bad", folder=tmp_path / "bad", cmd=bad)], max_parallel=2)
        assert not process_alive(int(pid_file.read_text()))
    finally:
        if pid_file.is_file() and pid_file.read_text() and process_alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_continued_step_appends_to_the_interrupted_runs_log(tmp_path):
    """demo.log holds the step's whole output: the interrupted run's lines stay, the continuation's follow."""
    runner = StepRunner(tmp_path, tmp_path)
    cmd = [sys.executable, "-c", "print('second run')", "--resume"]
    folder = tmp_path / "s"
    killed_run(folder, cmd, runner, 10.0)
    (folder / "demo.log").write_text("first run\n")
    runner.step("s", folder, cmd)
    assert runner.resumed == {"s"}
    assert (folder / "demo.log").read_text().splitlines() == ["first run", "second run"]


def test_a_reused_step_without_a_recorded_time_still_lets_its_followers_start(tmp_path):
    """A finished step whose record has no time (0 s when reused) is done: a job ``after`` it runs."""
    runner = StepRunner(tmp_path, tmp_path)
    first = [sys.executable, "-c", "pass"]
    step = Step("a", tmp_path / "a", recorded_inputs(runner, first))
    step.begin()
    step.finish()  # no seconds recorded
    counter = tmp_path / "count.txt"
    jobs = [dict(name="b", folder=tmp_path / "b", cmd=[sys.executable, "-c", COUNTER, str(counter)], after=["a"]),
            dict(name="a", folder=tmp_path / "a", cmd=first)]
    assert runner.parallel(jobs, max_parallel=2)[1] == 0.0
    assert runner.reused == {"a"} and counter.read_text() == "1"


# ---------------------------------------------------------------------------------- the step record
def test_paths_in_inputs_record_as_their_text(tmp_path):
    """Inputs may hold paths (a checkpoint, a folder): recorded as text, so the same path given as a string
    finds the finished step."""
    step = Step("s", tmp_path / "s", {"init": Path("a/b.pth"), "sizes": (1, 2)})
    step.begin()
    step.finish(3.0)
    again = Step("s", tmp_path / "s", {"init": "a/b.pth", "sizes": [1, 2]})
    assert again.state() == "cached" and again.seconds() == 3.0


def test_changed_keys_names_an_input_that_is_gone(tmp_path):
    step = Step("s", tmp_path / "s", {"a": 1, "b": 2, "gone": 3})
    step.begin()
    step.finish()
    assert Step("s", tmp_path / "s", {"a": 1, "b": 5}).changed_keys() == ["b", "gone"]
    assert Step("s", tmp_path / "s", {"a": 1, "b": 2, "gone": 3, "new": 0}).changed_keys() == ["new"]


@pytest.mark.parametrize("content", ['{"step": "s", "inputs": {"a": 1}}', '[1, 2]', '{"step": '])
def test_a_record_that_does_not_say_complete_is_never_reused(tmp_path, content):
    """A record without ``complete`` (written by something else) resumes; one that is not a JSON object or
    not JSON at all is no record: the step starts fresh."""
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "step_inputs.json").write_text(content)
    state = Step("s", folder, {"a": 1}).state()
    assert state == ("resume" if content.endswith("}}") else "fresh")


def test_the_time_of_an_interrupted_run_is_never_negative(tmp_path, monkeypatch):
    """An interrupted run that wrote nothing but its record, or only files older than its start (copied in),
    ran 0 s by what the folder shows."""
    import types

    import siamese_detr.demo.steps as steps_module

    monkeypatch.setattr(steps_module, "time", types.SimpleNamespace(time=lambda: 1.0e9))
    step = Step("s", tmp_path / "s", {"a": 1})
    step.begin()
    assert step.continue_interrupted() == 0.0
    old = tmp_path / "s" / "copied.pth"
    old.write_text("x")
    os.utime(old, (1.0e9 - 500.0, 1.0e9 - 500.0))
    assert step.continue_interrupted() == 0.0


# ------------------------------------------------------------------------------------ the code digest
def test_source_digest_follows_the_top_folder_not_the_listing_order(tmp_path, monkeypatch):
    """A file moved from one code folder to another (package -> tools) changes the digest; the order in which
    the file system lists files does not."""
    pkg, tools = tmp_path / "pkg", tmp_path / "tools"
    pkg.mkdir()
    tools.mkdir()
    for name, text in (("a.py", "A = 1\n"), ("b.py", "B = 2\n"), ("c.py", "C = 3\n")):
        (pkg / name).write_text(text)
    base = source_digest([pkg, tools])
    listing = Path.rglob
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: reversed(list(listing(self, pattern))))
    assert source_digest([pkg, tools]) == base
    monkeypatch.undo()
    (pkg / "c.py").rename(tools / "c.py")
    assert source_digest([pkg, tools]) != base


# ------------------------------------------------------------------------------------------ the summary
def test_the_summary_lists_the_reused_and_the_resumed_steps_apart(tmp_path):
    tool = load_script(ROOT / "tools" / "run_demo.py", "runner_cache_run_demo")
    dirs = {name: tmp_path / name for name in ("bb", "pt", "rnd", "ftp", "fts")}
    summary = tool.write_summary(tmp_path, dirs["bb"], dirs["pt"], dirs["rnd"],
                                 {"pretrained": dirs["ftp"], "scratch": dirs["fts"]}, {"backbone": 1.0}, 120.0, 30.0,
                                 ["backbone", "finetune scratch"], ["pretrain"], {"torch": "x"},
                                 {"cpu": "x"})
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["reused_steps"] == ["backbone", "finetune scratch"] and written["resumed_steps"] == ["pretrain"]
    assert (summary["minutes"], summary["minutes_this_run"]) == (2.0, 0.5)
    assert summary["ap"] == {"pretrained": None, "scratch": None}  # no metrics.json: no number, no crash


def test_the_demo_hands_its_reused_and_resumed_steps_to_the_summary(tmp_path, monkeypatch, capsys):
    """run_demo.py end to end with stand-ins (a runner that reports one reused and two resumed steps, no
    data command, no figures): summary.json and the table keep the two lists apart."""
    import subprocess

    import siamese_detr.demo.data as data
    import siamese_detr.demo.plots as plots
    import siamese_detr.demo.runner as runner

    class Runner:
        def __init__(self, root, log_dir):
            self.environment = {"code": "c", "software": {"torch": "stand-in"},
                                "machine": {"cpu": "stand-in"}}
            self.reused, self.resumed = {"backbone"}, {"pretrain", "finetune scratch"}

        def step(self, name, folder, *args, **kwargs):
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "model_final.pth").write_text("weights")
            return 1.0

        def parallel(self, jobs, max_parallel=2):
            return [1.0] * len(jobs)

    def command(cmd, *args, **kwargs):  # the data command, and plot_metrics.py writing its figure
        cmd = [str(c) for c in cmd]
        if "--output" in cmd:
            Path(cmd[cmd.index("--output") + 1]).write_text("png")
        return subprocess.CompletedProcess(cmd, 0)

    for name, value in (("DETECTRON2_DATASETS", str(tmp_path / "datasets")), ("OMP_NUM_THREADS", "1"),
                        ("PYTHONWARNINGS", "ignore::FutureWarning:torch.jit._script")):
        monkeypatch.setenv(name, value)  # the tool sets them: restored afterwards
    monkeypatch.chdir(tmp_path)  # the tool moves to the repository root: restored afterwards
    monkeypatch.setattr(runner, "StepRunner", Runner)
    monkeypatch.setattr(data, "synthetic_shapes_digests", lambda splits: {s: "digest" for s in splits})
    monkeypatch.setattr(subprocess, "run", command)
    monkeypatch.setattr(plots, "eval_history", lambda *args, **kwargs: [])
    monkeypatch.setattr(plots, "plot_ap_curves", lambda curves, output, title: Path(output).write_text("png"))
    monkeypatch.setattr(plots, "draw_detections", lambda config, runs, output, top_k: Path(output).write_text("png"))
    out = tmp_path / "demo"
    assert load_script(ROOT / "tools" / "run_demo.py", "runner_cache_run_demo_main").main(["--output", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reused_steps"] == ["backbone"]
    assert summary["resumed_steps"] == ["finetune scratch", "pretrain"]
    marks = {line[:40].strip(): line[47] for line in capsys.readouterr().out.splitlines() if len(line) > 47
             and line[41:47].strip().count(":") == 1}
    assert marks["backbone (k-NN on val objects)"] == "*" and marks["Siamese DETR pretraining (no labels)"] == "+"
    assert marks["finetune 10% labels from scratch"] == "+" and marks["finetune 10% labels from pretraining"] == " "


# --------------------------------------------------------------------------------------------- data
def test_unlabelled_dicts_of_a_dataset_without_sizes_hold_only_its_fields():
    """A dataset of file names and ids (e.g. an image folder listed without reading the images) gives dicts of
    those fields only, not ``height: None`` (the mapper reads the size from the image)."""
    from siamese_detr.demo.data import unlabelled_dicts

    name = "runner_cache_no_sizes"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [{"file_name": "a.png", "image_id": 3}])
    try:
        assert unlabelled_dicts(name) == [{"file_name": "a.png", "image_id": 3}]
    finally:
        DatasetCatalog.remove(name)
