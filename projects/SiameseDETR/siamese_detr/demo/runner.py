"""Runs the demo's commands as cached steps (:class:`~siamese_detr.demo.steps.Step`) with a progress bar
and ETA on the terminal and each command's full output in ``<step folder>/demo.log``.

Used by ``tools/run_demo.py`` and ``tools/compare_pretraining.py``.
"""
import functools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from ..utils.parent_watch import arm_parent_death_signal
from ..utils.writable import folder_problem
from .steps import Step, file_digest, machine_kind, software_versions, source_digest

__all__ = ["LOCK_NAME", "StepRunner", "clock", "config_digest", "last_iteration", "last_results", "lock_output",
           "output_folder_problem", "read_json", "resolved_config"]

LOCK_NAME = ".lock"  # in the output folder, held by the demo / comparison writing there


def lock_output(folder: Path):
    """Lock ``folder`` (created if needed) for this process: returns the open lock file, which holds the lock
    until it is closed or the process ends. Raises ``SystemExit`` with a one-line message, ``error: ...``,
    when another process holds it (two runs writing the same step folders would spoil each other's results) or
    when ``folder`` cannot be created or written (:func:`output_folder_problem`)."""
    import fcntl

    folder = Path(folder)
    problem = output_folder_problem(folder)
    if problem:
        raise SystemExit(f"error: {problem}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / LOCK_NAME, "a+")
    except OSError as e:  # what the check cannot see (the folder changed meanwhile)
        raise SystemExit(f"error: --output {folder}: cannot write there ({e.strerror}); give a folder you can "
                         "write to") from None
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        owner = lock.read().strip() or "?"
        lock.close()
        raise SystemExit(f"error: --output {folder} is in use by another run (pid {owner}) writing the same steps; "
                         "wait for it to finish or give another --output")
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def output_folder_problem(folder: Path) -> Optional[str]:
    """Why ``--output folder`` cannot hold the runs (a file, a file in the way of it, no write permission:
    :func:`~siamese_detr.utils.writable.folder_problem`), as a message naming the flag; None when it can.
    Creates nothing, so that the tools check it with their other flags, before anything runs."""
    problem = folder_problem(folder)
    if problem is None:
        return None
    return f"--output {folder} {problem}: give a folder you can write to (it is created if missing)"


def _die_with_parent(parent_pid: int) -> None:
    """In a step's process, before it runs: ask Linux to send it SIGTERM when the demo (``parent_pid``) dies,
    even by SIGKILL, so that no step keeps writing its folder after the demo is gone (and beside the
    re-run's); a demo that died before the signal was armed ends the step now."""
    arm_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent_pid:
        os._exit(1)


def resolved_config(config_file: str, overrides: List[str]):
    """The LazyConfig ``config_file`` after ``overrides``, as the training tool sees it."""
    from detectron2.config import LazyConfig

    from ..engine import apply_checked_overrides

    return apply_checked_overrides(LazyConfig.load(str(config_file)), overrides)


def config_digest(cfg) -> str:
    """sha256 of a LazyConfig's YAML dump: any change of its file, of a config it imports or of an override
    changes it."""
    from detectron2.config import LazyConfig

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.yaml")
        LazyConfig.save(cfg, path)
        return file_digest(path)


def last_iteration(folder: Path) -> int:
    """Number of finished iterations of a step folder's run: one more than the ``iteration`` of the last
    line that has one in ``metrics.json`` (else ``progress.json``). The last line, not the largest: a run
    resumed from a checkpoint logs again from there, after the lines its interrupted run wrote beyond it.
    A results-only line (every key but ``iteration`` has a ``/``: ``bbox/AP``, ...) never moves the count
    back: detectron2 writes an evaluation that fell between two logging steps after the later step's line."""
    for name in ("metrics.json", "progress.json"):
        path = Path(folder) / name
        if not path.is_file():
            continue
        last = None
        with open(path, errors="replace") as f:
            for line in f:
                try:
                    record = json.loads(line)
                    iteration = int(record["iteration"]) + 1
                except (ValueError, KeyError, TypeError):
                    continue
                results_only = len(record) > 1 and all("/" in key for key in record if key != "iteration")
                last = max(last or 0, iteration) if results_only else iteration
        if last is not None:
            return last
    return 0


def clock(seconds: float) -> str:
    """``seconds`` as ``m:ss`` (minutes are not wrapped into hours: 3725.7 -> ``"62:05"``; fractions are cut,
    negative or None -> ``"0:00"``)."""
    seconds = int(max(0, seconds or 0))
    return f"{seconds // 60}:{seconds % 60:02d}"


def read_json(path: Path) -> dict:
    """The JSON value stored in the file ``path`` (e.g. the backbone step's one-object ``metrics.json``), or ``{}``
    when there is no such file; a file that does not parse raises ``ValueError``."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def last_results(metrics_json: Path) -> dict:
    """The last value of every evaluation metric (``task/metric`` keys) in a detectron2 metrics.json:
    ``{"bbox/AP": 41.2, "bbox/AP50": ..., ...}`` (as detectron2 logs them: COCO AP in percent); lines
    that do not parse are skipped; ``{}`` for a missing file."""
    results = {}
    metrics_json = Path(metrics_json)
    if metrics_json.is_file():
        for line in metrics_json.read_text(errors="replace").splitlines():
            try:
                results.update({k: v for k, v in json.loads(line).items() if "/" in k})
            except (ValueError, AttributeError):
                continue
    return results


def default_code_folders(root: Path) -> List[Path]:
    """The code a demo step runs: the ``siamese_detr`` package (models, data, the dataset generator) and
    ``<root>/tools`` (the commands). Configs count through the resolved config's digest."""
    return [Path(__file__).resolve().parents[1], Path(root) / "tools"]


class StepRunner:
    """Runs commands from ``root`` as cached steps; appends every command to ``<log_dir>/commands.txt``.

    Args:
        root: the working folder of the commands (the repository root); step configs are relative to it.
        log_dir: the folder of ``commands.txt`` (created).
        code_folders: the folders whose ``*.py`` code is digested (:func:`~.steps.source_digest`).

    Every step's inputs include the digest of the code in ``code_folders`` (default
    :func:`default_code_folders`), :func:`~siamese_detr.demo.steps.software_versions` and
    :func:`~siamese_detr.demo.steps.machine_kind`, so that a step is redone after an update of the project or
    of its libraries, or on another kind of processor, instead of reusing results they would not give.
    """

    def __init__(self, root: Path, log_dir: Path, code_folders: Optional[List[Path]] = None):
        self.reused: set = set()  # names of the steps reused in this run
        self.resumed: set = set()  # names of the steps this run continued after an interruption
        self.root = Path(root)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        folders = default_code_folders(self.root) if code_folders is None else code_folders
        self.environment = {"code": source_digest(folders), "software": software_versions(),
                            "machine": machine_kind()}

    def step(self, name: str, folder: Path, cmd: List, config: Optional[str] = None,
             overrides: Optional[List[str]] = None, inputs: Optional[Dict] = None,
             total: Optional[int] = None) -> float:
        """Run ``cmd`` as the step ``name`` writing ``folder``; returns its seconds (when reused: the seconds
        recorded by the run that made it, and ``name`` is added to :attr:`reused`; when it continues an
        interrupted run: the interrupted runs' seconds included, and ``name`` is added to :attr:`resumed`).

        Inputs recorded: ``inputs`` + the command + the code's digest, library versions and processor kind
        (:attr:`environment`) + (with ``config``) the resolved config's digest after ``overrides``. Unchanged
        and complete: reused, unless a recorded output (``model_final.pth``, ``metrics.json``) changed or
        went since, then redone in an emptied folder; unchanged and incomplete: a command given ``--resume``
        continues in the same folder from its ``last_checkpoint``, any other (or one killed before its first
        checkpoint) starts again in an emptied folder; changed or unknown: the folder is deleted first. The
        command's output goes to ``<folder>/demo.log`` (appended). ``total``: the
        iterations of the progress bar; None: the resolved config's ``train.max_iter`` (without a config, or
        0: elapsed time only).
        Raises ``SystemExit`` with the end of the log when the command fails.
        """
        return self.parallel([dict(name=name, folder=folder, cmd=cmd, config=config, overrides=overrides,
                                   inputs=inputs, total=total)], max_parallel=1)[0]

    def parallel(self, jobs: List[Dict], max_parallel: int = 2) -> List[float]:
        """Run steps up to ``max_parallel`` at once; each job holds the keyword arguments of :meth:`step`,
        plus optionally ``after`` (names of jobs of this call that must finish first) and ``init`` (a
        checkpoint whose digest is recorded as ``inputs["init"]`` when the job starts, i.e. after the job
        that writes it). Jobs start in list order as soon as they may. Returns each job's seconds, as
        :meth:`step`.

        One progress line shows every running step. When a step fails, the others still running are
        stopped (they stay incomplete, so a re-run resumes them) and ``SystemExit`` is raised.
        """
        if max_parallel < 1:
            raise ValueError(f"max_parallel must be at least 1, got {max_parallel}")
        names = [job["name"] for job in jobs]
        for job in jobs:
            unknown = set(job.get("after", ())) - set(names)
            if unknown:
                raise ValueError(f"job {job['name']!r} waits for unknown jobs {sorted(unknown)}")
        results: List[Optional[float]] = [None] * len(jobs)
        pending = list(range(len(jobs)))
        running: Dict[int, _Running] = {}
        try:
            while pending or running:
                done = {names[i] for i, r in enumerate(results) if r is not None}
                ready = [i for i in pending if set(jobs[i].get("after", ())) <= done]
                if not ready and not running:
                    raise ValueError(f"jobs {[names[i] for i in pending]} wait for each other")
                for index in ready[: max(0, max_parallel - len(running))]:
                    pending.remove(index)
                    job = {k: v for k, v in jobs[index].items() if k != "after"}
                    launched = self._launch(**job)
                    if isinstance(launched, float):
                        results[index] = launched
                    else:
                        running[index] = launched
                if not running:
                    continue
                time.sleep(1.0)
                for index, run in list(running.items()):
                    if run.proc.poll() is not None:
                        del running[index]
                        results[index] = self._complete(run)
                self._show(list(running.values()))
        finally:
            for run in running.values():
                run.stop()
        return [float(r) for r in results]

    def _launch(self, name: str, folder: Path, cmd: List, config: Optional[str] = None,
                overrides: Optional[List[str]] = None, inputs: Optional[Dict] = None, total: Optional[int] = None,
                init: Optional[Path] = None):
        """Starts a step: returns its recorded seconds (a float) when it is reused, else a :class:`_Running`."""
        folder = Path(folder)
        inputs = {**self.environment, **(inputs or {})}
        if init is not None:
            inputs["init"] = file_digest(init)
        if config is not None:
            inputs["config"] = str(config)
            try:
                cfg = resolved_config(str(self.root / config), list(overrides or []))
            except (KeyError, ValueError, TypeError) as e:  # an unknown key or a value of another kind
                message = e.args[0] if isinstance(e, KeyError) and e.args else e
                raise SystemExit(f"[{name}] {config}: {message}")
            inputs["resolved_config"] = config_digest(cfg)
            if total is None:
                total = int(cfg.train.max_iter)
        inputs["command"] = [str(c) for c in cmd]
        step = Step(name, folder, inputs)
        printable = " ".join(shlex.quote(str(c)) for c in cmd)
        print(f"\n[{name}] $ {printable}", flush=True)
        with open(self.log_dir / "commands.txt", "a") as f:
            f.write(f"$ {printable}\n")
        previous = step.record()
        changed = step.changed_keys()
        damaged = step.damaged_outputs() if not changed else []
        state = step.begin()
        earlier = 0.0  # seconds of the interrupted runs this one continues
        if state == "cached":
            print(f"[{name}] inputs unchanged and finished before: reused ({folder})", flush=True)
            self.reused.add(name)
            return float(step.seconds() or 0.0)
        if state == "fresh" and damaged:
            print(f"[{name}] outputs changed or gone since it finished ({', '.join(damaged)}): redoing the step",
                  flush=True)
        elif state == "fresh" and previous is not None:
            print(f"[{name}] inputs changed ({', '.join(changed)}): redoing the step", flush=True)
        elif state == "resume":
            checkpoint = folder / "last_checkpoint"  # what detectron2's --resume reads
            if "--resume" in map(str, cmd) and checkpoint.is_file():
                earlier = step.continue_interrupted()
                self.resumed.add(name)
                ran = "its time unknown" if earlier is None else f"it had run {clock(earlier)}"
                print(f"[{name}] continuing an interrupted run from its last checkpoint "
                      f"({checkpoint.read_text().strip()}; {ran})", flush=True)
                earlier = earlier or 0.0
            else:  # e.g. the backbone step and evaluations, or a run killed before its first checkpoint
                step.restart()
                why = "no checkpoint to resume from" if "--resume" in map(str, cmd) else "its command cannot resume"
                print(f"[{name}] interrupted before: starting it again ({why})", flush=True)
        log = open(folder / "demo.log", "a")
        proc = subprocess.Popen([str(c) for c in cmd], cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=functools.partial(_die_with_parent, os.getpid()))
        return _Running(name, folder, step, proc, log, time.time(), total or 0, earlier)

    def _complete(self, run: "_Running") -> float:
        """Finishes a step whose process ended: prints its final progress, records it complete; raises
        ``SystemExit`` with the end of its log when it failed."""
        run.log.close()
        if sys.stdout.isatty():
            print("\r" + " " * (_terminal_width() - 1) + "\r", end="")
        print(f"[{run.name}] {run.progress(final=True)}", flush=True)
        if run.proc.returncode != 0:
            tail = (run.folder / "demo.log").read_text(errors="replace").splitlines()[-15:]
            raise SystemExit("\n".join(tail) + f"\n[{run.name}] failed (exit {run.proc.returncode}); full log: "
                             f"{run.folder / 'demo.log'}")
        seconds = time.time() - run.start + run.earlier  # the interrupted runs' time included
        run.step.finish(seconds)
        return seconds

    def _show(self, runs: List["_Running"]) -> None:
        """The progress of the running steps on one terminal line (nothing when not a terminal)."""
        if not runs or not sys.stdout.isatty():
            return
        if len(runs) == 1:
            text = runs[0].progress()
        else:
            text = " | ".join(f"{r.name}: {r.progress(short=True)}" for r in runs)
        width = _terminal_width() - 3
        print("\r  " + text[:width].ljust(width), end="", flush=True)


def _terminal_width() -> int:
    return shutil.get_terminal_size((100, 20)).columns


class _Running:
    """A started step: its process, open log file and progress bookkeeping."""

    def __init__(self, name, folder, step, proc, log, start, total, earlier=0.0):
        self.name, self.folder, self.step, self.proc = name, folder, step, proc
        self.log, self.start, self.total = log, start, total
        self.earlier = earlier  # seconds of the interrupted runs this one continues
        self._logged_before = last_iteration(folder)  # by the interrupted run this one resumes
        self._first_seen = None  # (iterations, time) when this run's first logged iteration was seen

    def progress(self, final: bool = False, short: bool = False, now: Optional[float] = None) -> str:
        """``[####....] done/total it  m:ss elapsed, ETA m:ss`` (``short``: ``done/total it ETA m:ss``; no
        ``total``: ``m:ss elapsed`` only). Elapsed is this run's time (not an interrupted run's); no ETA on
        the ``final`` line or before this run has logged two different iteration counts.

        The ETA comes from this run's own pace: the iterations logged since the first line it wrote, over
        the time since then (neither the start-up time nor an interrupted run's iterations count)."""
        now = time.time() if now is None else now
        elapsed = now - self.start
        if not self.total:
            return f"{clock(elapsed)} elapsed"
        done = min(last_iteration(self.folder), self.total)
        if self._first_seen is None and done != self._logged_before:
            self._first_seen = (done, now)
        eta = ""
        if not final and self._first_seen is not None and done > self._first_seen[0]:
            first_done, first_time = self._first_seen
            eta = f"ETA {clock((now - first_time) / (done - first_done) * (self.total - done))}"
        if short:
            return f"{done}/{self.total} it {eta}".strip()
        filled = int(30 * done / self.total)
        bar = f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} it"
        return f"{bar}  {clock(elapsed)} elapsed" + (f", {eta}" if eta else "")

    def stop(self) -> None:
        """Terminates the process (the step stays incomplete, a re-run resumes it) and closes the log."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
