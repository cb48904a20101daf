"""Cached demo steps: reused when their inputs are unchanged, redone (folder emptied) when they changed or
when another command left the folder there, resumed when interrupted (issue 12: `make demo` must notice
that its inputs changed)."""
import json
import os
import shlex
import sys
import time
from pathlib import Path

import pytest

from siamese_detr.demo.runner import StepRunner, config_digest, last_iteration, resolved_config
from siamese_detr.demo.steps import Step, file_digest, source_digest, text_digest

from demo_tool_helpers import COUNTER, killed_run, recorded_inputs
from hang_guard import HANG_GUARD_S

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "demo" / "demo_backbone.py")


def test_step_states(tmp_path):
    folder = tmp_path / "step"
    step = Step("s", folder, {"a": 1, "b": (1, 2)})
    assert step.state() == "fresh"
    assert step.begin() == "fresh" and folder.is_dir()
    (folder / "partial.txt").write_text("x")
    again = Step("s", folder, {"a": 1, "b": [1, 2]})  # tuples and lists record the same
    assert again.state() == "resume" and again.begin() == "resume"
    assert (folder / "partial.txt").exists()  # an interrupted run keeps its files
    again.finish()
    assert Step("s", folder, {"a": 1, "b": [1, 2]}).begin() == "cached"
    changed = Step("s", folder, {"a": 2, "b": [1, 2]})
    assert changed.changed_keys() == ["a"]
    assert changed.begin() == "fresh"
    assert not (folder / "partial.txt").exists()  # redone from an empty folder
    record = json.loads((folder / "step_inputs.json").read_text())
    started = record.pop("started")  # when this (unfinished) run began
    assert record == {"step": "s", "inputs": {"a": 2, "b": [1, 2]}, "complete": False}
    assert abs(started - (folder / "step_inputs.json").stat().st_mtime) < 60


def test_folder_left_by_another_command_is_redone(tmp_path):
    folder = tmp_path / "finetune"
    folder.mkdir()
    (folder / "last_checkpoint").write_text("model_0000099.pth")  # e.g. the README's first training command
    step = Step("finetune", folder, {"config": "x"})
    assert step.state() == "fresh"
    step.begin()
    assert sorted(p.name for p in folder.iterdir()) == ["step_inputs.json"]


def test_digests(tmp_path):
    import hashlib

    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    assert file_digest(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert file_digest(tmp_path / "missing") is None
    assert text_digest("abc") == hashlib.sha256(b"abc").hexdigest()


def test_resolved_config_digest_follows_overrides():
    def resolved_config_digest(overrides):
        return config_digest(resolved_config(CONFIG, overrides))

    base = resolved_config_digest([])
    assert resolved_config_digest([]) == base
    assert resolved_config_digest(["train.lr=0.01"]) != base
    assert resolved_config_digest(["train.method=simsiam"]) != base


def test_runner_reuses_then_redoes_a_changed_step(tmp_path, capsys):
    runner = StepRunner(tmp_path, tmp_path)
    folder = tmp_path / "out"
    counter = tmp_path / "count.txt"
    cmd = [sys.executable, "-c", COUNTER, str(counter)]
    runner.step("count", folder, cmd, config=CONFIG, overrides=[], inputs={"init": "a"})
    runner.step("count", folder, cmd, config=CONFIG, overrides=[], inputs={"init": "a"})
    assert counter.read_text() == "1"  # the second run reused the finished step
    assert runner.reused == {"count"}
    assert runner.step("count", folder, cmd, config=CONFIG, overrides=[], inputs={"init": "a"}) == \
        Step("count", folder, {}).seconds() > 0  # a reused step reports the time it took when it ran
    (folder / "leftover").write_text("old")
    # a changed input (e.g. the checkpoint the step starts from) or a changed config redoes it
    runner.step("count", folder, cmd, config=CONFIG, overrides=[], inputs={"init": "b"})
    assert counter.read_text() == "2" and not (folder / "leftover").exists()
    assert "inputs changed (init): redoing the step" in capsys.readouterr().out
    runner.step("count", folder, cmd, config=CONFIG, overrides=["train.max_iter=3"],
                inputs={"init": "b"})
    assert counter.read_text() == "3"
    assert "inputs changed (resolved_config)" in capsys.readouterr().out
    assert "$ " in (tmp_path / "commands.txt").read_text()


def test_source_digest_follows_what_the_code_does(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text('"""Module doc."""\nX = 1\n\n\ndef f(y):\n    """Doc."""\n    return y + X\n')
    (pkg / "sub" / "b.py").write_text("class C:\n    '''Doc.'''\n")
    (pkg / "notes.txt").write_text("not code")
    base = source_digest([pkg])
    assert len(base) == 64 and source_digest([pkg, tmp_path / "missing"]) == base

    def digest_after(path, text):
        old = path.read_text()
        path.write_text(text)
        try:
            return source_digest([pkg])
        finally:
            path.write_text(old)

    a, b = pkg / "a.py", pkg / "sub" / "b.py"
    # comments, docstrings, layout and files other than *.py do not count
    assert digest_after(a, "# a comment\nX = 1\ndef f(y):\n    '''Other doc.'''\n    return (y +\n X)\n") == base
    assert digest_after(b, "class C:\n    pass\n") == base
    assert digest_after(pkg / "notes.txt", "changed") == base
    # what the code does counts
    assert digest_after(a, '"""Module doc."""\nX = 2\n\n\ndef f(y):\n    """Doc."""\n    return y + X\n') != base
    assert digest_after(a, '"""Module doc."""\nX = 1\n\n\ndef f(y):\n    """Doc."""\n    return X + y\n') != base
    assert digest_after(b, "class C:\n    '''Doc.'''\n    n = 'Doc.'\n") != base
    assert digest_after(b, "class C(:\n") != digest_after(b, "class C(:  \n")  # unparsable: by its bytes
    # so does a file added or renamed
    (pkg / "c.py").write_text("")
    with_c = source_digest([pkg])
    assert with_c != base
    (pkg / "c.py").rename(pkg / "d.py")
    assert source_digest([pkg]) not in (base, with_c)
    (pkg / "d.py").unlink()
    assert source_digest([pkg]) == base
    # and a file moved to another subfolder, its code and name unchanged
    (pkg / "sub2").mkdir()
    (pkg / "sub" / "b.py").rename(pkg / "sub2" / "b.py")
    assert source_digest([pkg]) != base
    (pkg / "sub2" / "b.py").rename(pkg / "sub" / "b.py")
    assert source_digest([pkg]) == base


def test_runner_redoes_steps_after_a_code_or_library_change(tmp_path, capsys):
    import torch

    from siamese_detr.demo.runner import default_code_folders

    code = tmp_path / "code"
    code.mkdir()
    (code / "model.py").write_text("def f():\n    return 1\n")
    counter = tmp_path / "count.txt"
    cmd = [sys.executable, "-c", COUNTER, str(counter)]

    def run(machine=None, **software):
        runner = StepRunner(tmp_path, tmp_path, code_folders=[code])
        runner.environment["software"].update(software)  # as after an update of a library
        runner.environment["machine"].update(machine or {})  # as on another kind of processor
        runner.step("count", tmp_path / "out", cmd)
        return runner

    assert run().environment["software"]["torch"] == torch.__version__
    assert run().reused == {"count"} and counter.read_text() == "1"
    (code / "model.py").write_text("def f():\n    '''Only a docstring more.'''\n    return 1\n")
    assert run().reused == {"count"} and counter.read_text() == "1"
    (code / "model.py").write_text("def f():\n    return 2\n")
    assert not run().reused and counter.read_text() == "2"
    assert "inputs changed (code): redoing the step" in capsys.readouterr().out
    assert not run(torch="0.0.1").reused and counter.read_text() == "3"
    assert "inputs changed (software): redoing the step" in capsys.readouterr().out
    assert run(torch="0.0.1").reused == {"count"} and counter.read_text() == "3"
    other_kind = {"torch": "0.0.1", "machine": {"torch_cpu_capability": "another instruction set"}}
    assert not run(**other_kind).reused and counter.read_text() == "4"
    assert "inputs changed (machine): redoing the step" in capsys.readouterr().out
    # by default: the siamese_detr package and the repository's tools
    root = Path(__file__).resolve().parents[1]
    assert default_code_folders(root) == [root / "projects" / "SiameseDETR" / "siamese_detr", root / "tools"]


def test_failing_step_stays_incomplete(tmp_path):
    runner = StepRunner(tmp_path, tmp_path)
    folder = tmp_path / "bad"
    with pytest.raises(SystemExit, match="failed"):
        runner.step("bad", folder, [sys.executable, "-c", "print('boom'); raise SystemExit(3)"])
    bad = [sys.executable, "-c", "print('boom'); raise SystemExit(3)"]
    assert Step("bad", folder, recorded_inputs(runner, bad)).state() == "resume"
    assert "boom" in (folder / "demo.log").read_text()


def test_last_iteration(tmp_path):
    (tmp_path / "metrics.json").write_text('{"iteration": 9}\n{"iteration": 19, "x": 1}\n{"iter')
    assert last_iteration(tmp_path) == 20
    assert last_iteration(tmp_path / "none") == 0
    with open(tmp_path / "metrics.json", "a") as f:  # resumed from a checkpoint at iteration 9
        f.write('\n{"iteration": 14}\n')
    assert last_iteration(tmp_path) == 15
    # an evaluation at iteration 24, between the logging steps 19 and 29, is written after 29's line
    with open(tmp_path / "metrics.json", "a") as f:
        f.write('{"iteration": 29, "total_loss": 1.0}\n{"bbox/AP": 12.0, "eval/finished_iterations": 25.0, '
                '"iteration": 24}\n')
    assert last_iteration(tmp_path) == 30


# two steps that can only both finish if they run at the same time: each writes its own flag file, then
# waits (bounded by the hang guard) for the other's
RENDEZVOUS = ("import pathlib, sys, time; d = pathlib.Path(sys.argv[1]); "
              "(d / (sys.argv[2] + '.flag')).write_text('x'); "
              "ok = any((d / (sys.argv[3] + '.flag')).exists() or time.sleep(0.1) "
              f"for _ in range({HANG_GUARD_S * 10})); "
              "sys.exit(0 if ok else 5)")


def test_parallel_steps_run_at_the_same_time_and_are_cached(tmp_path):
    runner = StepRunner(tmp_path, tmp_path)
    jobs = [dict(name=name, folder=tmp_path / name, cmd=[sys.executable, "-c", RENDEZVOUS, str(tmp_path), name, other])
            for name, other in (("a", "b"), ("b", "a"))]
    seconds = runner.parallel(jobs, max_parallel=2)
    assert len(seconds) == 2 and all(s > 0 for s in seconds)
    assert all(Step(j["name"], j["folder"], recorded_inputs(runner, j["cmd"])).state() == "cached" for j in jobs)
    assert runner.parallel(jobs, max_parallel=2) == seconds  # finished steps are reused, with their times
    assert runner.reused == {"a", "b"}


def test_parallel_failure_stops_the_other_steps(tmp_path):
    runner = StepRunner(tmp_path, tmp_path)
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    jobs = [dict(name="slow", folder=tmp_path / "slow", cmd=sleeper),
            dict(name="bad", folder=tmp_path / "bad", cmd=[sys.executable, "-c", "raise SystemExit(3)"])]
    with pytest.raises(SystemExit, match=r"\[bad\] failed \(exit 3\)"):
        runner.parallel(jobs, max_parallel=2)
    # the still-running step was stopped and stays incomplete: a re-run resumes it
    assert Step("slow", tmp_path / "slow", recorded_inputs(runner, sleeper)).state() == "resume"


def test_parallel_after_waits_and_records_the_new_checkpoint(tmp_path):
    runner = StepRunner(tmp_path, tmp_path)
    ckpt = tmp_path / "a.pth"
    write = [sys.executable, "-c", f"import pathlib; pathlib.Path({str(ckpt)!r}).write_text('weights')"]
    # b fails unless a's output already exists when b starts, although both could run at once
    read = [sys.executable, "-c", f"import pathlib; assert pathlib.Path({str(ckpt)!r}).read_text() == 'weights'"]
    jobs = [dict(name="b", folder=tmp_path / "b", cmd=read, init=ckpt, after=["a"]),
            dict(name="a", folder=tmp_path / "a", cmd=write)]
    runner.parallel(jobs, max_parallel=2)
    record = json.loads((tmp_path / "b" / "step_inputs.json").read_text())
    assert record["inputs"]["init"] == file_digest(ckpt)  # the digest of the file a wrote, read when b started
    with pytest.raises(ValueError, match="unknown"):
        runner.parallel([dict(name="c", folder=tmp_path / "c", cmd=read, after=["nope"])])


def test_an_interrupted_step_continues_only_when_its_command_resumes_from_a_checkpoint(tmp_path, capsys):
    """A command given --resume continues in its folder when the killed run left a ``last_checkpoint``;
    without one (killed before its first checkpoint) or with a command that cannot resume, the step starts
    again in an emptied folder (its old metrics.json lines would otherwise be read as this run's)."""
    runner = StepRunner(tmp_path, tmp_path)
    resuming = [sys.executable, "-c", "pass", "--resume"]
    cases = (([sys.executable, "-c", "pass"], False, "starting it again (its command cannot resume)", False),
             # a checkpoint does not make a command without --resume continue: it would train from scratch
             # while the folder kept the old run's metrics.json lines
             ([sys.executable, "-c", "pass"], True, "starting it again (its command cannot resume)", False),
             (resuming, False, "starting it again (no checkpoint to resume from)", False),
             (resuming, True, "continuing an interrupted run from its last checkpoint (model_0000199.pth;", True))
    for index, (cmd, checkpoint, said, kept) in enumerate(cases):
        folder = tmp_path / f"step{index}"
        Step("s", folder, {**recorded_inputs(runner, cmd)}).begin()  # as a run killed before it finished
        (folder / "metrics.json").write_text('{"iteration": 239}\n')
        if checkpoint:
            (folder / "last_checkpoint").write_text("model_0000199.pth")
        capsys.readouterr()
        runner.step("s", folder, cmd)
        assert said in capsys.readouterr().out
        assert (folder / "metrics.json").exists() == kept
        assert (folder / "last_checkpoint").exists() == kept
        assert runner.resumed == ({"s"} if kept else set())
        runner.resumed.clear()


def test_the_progress_bar_counts_this_runs_pace_and_its_config_total(tmp_path):
    """The total comes from the resolved config (an override of train.max_iter included); the ETA from the
    iterations this run logged since its first line, not from an interrupted run's lines nor the start-up."""
    from siamese_detr.demo.runner import _Running

    runner = StepRunner(tmp_path, tmp_path)
    folder = tmp_path / "bb"
    launched = runner._launch("bb", folder, [sys.executable, "-c", "pass"], config=CONFIG,
                              overrides=["train.max_iter=7"])
    launched.proc.wait()
    launched.log.close()
    assert launched.total == 7
    metrics = folder / "metrics.json"
    metrics.write_text('{"iteration": 799}\n')  # an interrupted run had logged 800 iterations
    run = _Running("ft", folder, None, None, None, start=0.0, total=1000)
    assert run.progress(now=30.0) == "[########################......] 800/1000 it  0:30 elapsed"  # no new line yet
    with open(metrics, "a") as f:
        f.write('{"iteration": 599}\n')  # resumed from the checkpoint at 599: its first line
    assert run.progress(now=40.0).endswith("600/1000 it  0:40 elapsed")  # one point: no pace yet
    with open(metrics, "a") as f:
        f.write('{"iteration": 699}\n')
    assert run.progress(now=60.0) == "[#####################.........] 700/1000 it  1:00 elapsed, ETA 1:00"
    assert run.progress(now=60.0, short=True) == "700/1000 it ETA 1:00"
    assert run.progress(now=60.0, final=True).endswith("700/1000 it  1:00 elapsed")


def test_a_continued_step_records_the_interrupted_runs_time(tmp_path, capsys, monkeypatch):
    """A step continued after an interruption records (and returns) its whole time: the interrupted run's,
    from its start to the newest file it wrote, plus this run's; a second interruption adds up. The runner's
    clock is held still, so this run adds exactly 0 s and the expected totals are exact."""
    import types

    import siamese_detr.demo.runner as runner_module

    monkeypatch.setattr(runner_module, "time", types.SimpleNamespace(time=lambda: 1.0e9, sleep=time.sleep))
    runner = StepRunner(tmp_path, tmp_path)
    cmd = [sys.executable, "-c", "pass", "--resume"]
    for earlier, expected in ((None, 100.0), (30.0, 130.0)):
        folder = tmp_path / f"earlier{earlier}"
        killed_run(folder, cmd, runner, 100.0, {} if earlier is None else {"earlier_seconds": earlier})
        capsys.readouterr()
        seconds = runner.step("s", folder, cmd)
        assert f"it had run {expected // 60:.0f}:{expected % 60:02.0f})" in capsys.readouterr().out
        assert seconds == pytest.approx(expected, abs=1e-6)
        assert json.loads((folder / "step_inputs.json").read_text())["seconds"] == seconds
        assert runner.resumed == {"s"}
        runner.resumed.clear()
    # a record from before start times were kept: only this run's time (here 0 s) is known
    folder = tmp_path / "legacy"
    killed_run(folder, cmd, runner, 100.0)
    record = json.loads((folder / "step_inputs.json").read_text())
    del record["started"]
    (folder / "step_inputs.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert runner.step("s", folder, cmd) == 0.0
    assert "(model_0000199.pth; its time unknown)" in capsys.readouterr().out


def test_software_versions_names_every_library_that_makes_the_numbers():
    import platform

    import cv2
    import detectron2
    import numpy
    import torch
    import torchvision

    from siamese_detr.demo.steps import software_versions

    assert software_versions() == {"python": platform.python_version(), "torch": torch.__version__,
                                   "torchvision": torchvision.__version__, "detectron2": detectron2.__version__,
                                   "numpy": numpy.__version__, "opencv": cv2.__version__}


_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
stepping\t: 1
flags\t\t: fpu avx2

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel Xeon
stepping\t: 8
"""


def test_machine_kind_names_the_first_processor_and_torchs_kernels(tmp_path):
    """Vendor, family, model and stepping of the first processor (not the second's, not its flags, not
    "model name" for "model"), and the instruction set torch's CPU kernels were chosen for."""
    import torch

    from siamese_detr.demo.steps import machine_kind

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(_CPUINFO)
    assert machine_kind(cpuinfo) == {
        "cpu": "AMD EPYC 7B13", "cpu_id": "vendor_id AuthenticAMD cpu family 25 model 1 stepping 1",
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    arm = tmp_path / "arm"
    arm.write_text("\nprocessor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
                   "CPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n")
    assert machine_kind(arm)["cpu_id"] == ("CPU implementer 0x41 CPU architecture 8 CPU variant 0x3 "
                                           "CPU part 0xd0c CPU revision 1")


def test_machine_kind_without_cpuinfo_falls_back_to_the_platform(tmp_path, monkeypatch):
    import platform

    from siamese_detr.demo.steps import machine_kind

    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    kind = machine_kind(tmp_path / "absent")
    assert (kind["cpu"], kind["cpu_id"]) == ("arm64", "arm64")


def test_continue_interrupted_records_the_time_of_every_interrupted_run(tmp_path, monkeypatch):
    """Each continuation records (in the step's record, not only its return value) the interrupted runs'
    seconds so far, so that a second interruption adds the first's: 100 s, then 100 + 50 s. Step's clock is
    a fake one; the files' times are set by hand."""
    import types

    import siamese_detr.demo.steps as steps_module

    now = [1.0e9]
    monkeypatch.setattr(steps_module, "time", types.SimpleNamespace(time=lambda: now[0]))
    folder = tmp_path / "step"
    step = Step("s", folder, {"a": 1})
    assert step.begin() == "fresh"
    first_start = now[0]
    for name, after in (("metrics.json", 40.0), ("demo.log", 100.0), ("sub/model_0000099.pth", 70.0)):
        path = folder / name
        path.parent.mkdir(exist_ok=True)
        path.write_text("x")
        os.utime(path, (first_start + after, first_start + after))  # the newest: 100 s after the start

    now[0] = first_start + 500.0  # the re-run continues it
    assert step.continue_interrupted() == 100.0
    record = step.record()
    assert (record["started"], record.get("earlier_seconds"), record["complete"]) == (first_start + 500, 100.0, False)

    second_start = now[0]
    os.utime(folder / "metrics.json", (second_start + 50.0, second_start + 50.0))  # killed again 50 s later
    now[0] = second_start + 300.0
    assert step.continue_interrupted() == 150.0
    record = step.record()
    assert (record["started"], record.get("earlier_seconds"), record["complete"]) == (second_start + 300, 150.0, False)
    assert step.state() == "resume"


def _fast_polls(monkeypatch, on_poll=None):
    """The runner's poll interval shortened to 0.01 s (its clock unchanged); ``on_poll(n)`` is called before
    the n-th poll's wait (n = 1, 2, ...)."""
    import types

    import siamese_detr.demo.runner as runner_module

    polls = [0]

    def sleep(_seconds):
        polls[0] += 1
        if on_poll is not None:
            on_poll(polls[0])
        time.sleep(0.01)

    monkeypatch.setattr(runner_module, "time", types.SimpleNamespace(time=time.time, sleep=sleep))


def test_parallel_never_runs_more_than_max_parallel_steps(tmp_path, monkeypatch):
    """4 steps, --parallel 2: the first two wait (bounded by the hang guard) for a file the test writes at
    the runner's second poll, so they are certainly both still running when the runner decides whether to
    start the third and fourth; a step may start only once one of them has ended. The number of live step
    processes is counted at each start (the runner only starts one when fewer than 2 are live)."""
    go = tmp_path / "go"
    _fast_polls(monkeypatch, on_poll=lambda n: go.write_text("") if n == 2 else None)
    started, live_at_start = [], []
    launch = StepRunner._launch

    def counting_launch(self, **job):
        live_at_start.append(1 + sum(run.proc.poll() is None for run in started))
        launched = launch(self, **job)
        started.append(launched)
        return launched

    monkeypatch.setattr(StepRunner, "_launch", counting_launch)
    wait = ("import pathlib, sys, time; go = pathlib.Path(sys.argv[1]); "
            f"sys.exit(0 if any(go.exists() or time.sleep(0.02) for _ in range({HANG_GUARD_S * 50})) else 5)")
    runner = StepRunner(tmp_path, tmp_path)
    jobs = [dict(name=name, folder=tmp_path / name, cmd=[sys.executable, "-c", wait, str(go), name])
            for name in "abcd"]
    seconds = runner.parallel(jobs, max_parallel=2)
    assert len(seconds) == 4 and all(s > 0 for s in seconds)
    assert [run.name for run in started] == ["a", "b", "c", "d"]  # list order
    assert live_at_start[:2] == [1, 2]  # a and b at once (b starts while a waits for the go file)
    assert max(live_at_start) == 2


def test_commands_txt_keeps_every_command(tmp_path, monkeypatch):
    """``commands.txt`` lists every step's command, in order, across steps and runners (a reused step's
    too): it is appended to, never rewritten."""
    _fast_polls(monkeypatch)
    first = [sys.executable, "-c", "print('first')"]
    second = [sys.executable, "-c", "print('second step')"]
    runner = StepRunner(tmp_path, tmp_path)
    runner.step("one", tmp_path / "one", first)
    runner.step("two", tmp_path / "two", second)
    StepRunner(tmp_path, tmp_path).step("one", tmp_path / "one", first)  # a later demo run: reused
    python = shlex.quote(sys.executable)
    assert (tmp_path / "commands.txt").read_text().splitlines() == [
        f"$ {python} -c 'print('\"'\"'first'\"'\"')'",
        f"$ {python} -c 'print('\"'\"'second step'\"'\"')'",
        f"$ {python} -c 'print('\"'\"'first'\"'\"')'",
    ]


def test_the_demo_runs_the_two_finetunings_side_by_side_after_the_pretraining(tmp_path, monkeypatch):
    """The demo's four jobs (``run_demo.training_jobs``, commands stood in for) with --parallel 2: the
    random-init evaluation starts beside the pretraining and ends at once; the pretraining ends only when the
    test lets it (the runner's third poll). Neither finetuning starts before that, though a slot is free
    from the first poll on (the scratch one does not need the pretraining's checkpoint: it waits so that the
    two share the machine alike). Then both run at once: the scratch stand-in ends only once the pretrained
    one has started, and the pretrained one only once the scratch one has started (``demo_seconds`` adds the
    longer of each pair)."""
    import argparse

    from script_modules import load_script

    run_demo = load_script(Path(__file__).resolve().parents[1] / "tools" / "run_demo.py", "steps_run_demo")
    started, pretraining_released = [], []
    go = {"pretrain": tmp_path / "go_pretrain", "finetune scratch": tmp_path / "go_scratch",
          "finetune pretrained": tmp_path / "go_pretrained"}

    def on_poll(n):
        if n == 3:
            go["pretrain"].write_text("")
        if "finetune pretrained" in started:
            go["finetune scratch"].write_text("")
        if "finetune scratch" in started:
            go["finetune pretrained"].write_text("")

    _fast_polls(monkeypatch, on_poll=on_poll)
    launch = StepRunner._launch

    def recording_launch(self, **job):
        started.append(job["name"])
        pretraining_released.append(go["pretrain"].exists())
        return launch(self, **job)

    monkeypatch.setattr(StepRunner, "_launch", recording_launch)
    wait = ("import pathlib, sys, time; go = pathlib.Path(sys.argv[1]); "
            f"sys.exit(0 if any(go.exists() or time.sleep(0.02) for _ in range({HANG_GUARD_S * 50})) else 5)")
    args = argparse.Namespace(seed=None, pretrain_iters=None, finetune_iters=None, eval_period=None)
    jobs, _ = run_demo.training_jobs(args, tmp_path / "demo", tmp_path / "backbone.pth", {})
    stand_ins = [dict(name=job["name"], folder=job["folder"], after=job.get("after", ()),
                      cmd=[sys.executable, "-c", wait if job["name"] in go else "", str(go.get(job["name"], ""))])
                 for job in jobs]
    assert len(StepRunner(tmp_path, tmp_path).parallel(stand_ins, max_parallel=2)) == 4
    assert started == ["pretrain", "random-init eval", "finetune scratch", "finetune pretrained"]
    assert pretraining_released == [False, False, True, True]
