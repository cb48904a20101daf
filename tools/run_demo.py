#!/usr/bin/env python
"""The demo on the built-in dataset, end to end on CPU (what ``make demo`` runs): does Siamese DETR
pretraining help a detector that has few labels?

1. data: the built-in ``synthetic_shapes`` splits ``train_large`` (1024 images) and ``val`` (64),
   generated on first use (seconds);
2. backbone: a narrow ResNet-18 trained on a separate built-in classification set
   (configs/demo/demo_backbone.py; k-NN accuracy of its features on the val objects is reported);
3. Siamese DETR pretraining of the fast detector (two-level Deformable DETR) on the 1024 UNLABELLED train
   images, frozen backbone (configs/demo/demo_siamese_pretrain.py), then class-agnostic AR@1/10/100 of its
   learned queries alone on val, and of the same model at random initialisation;
4. finetuning on a seeded 10% low-label subset (102 images, configs/demo/demo_detector.py) from (a) the
   pretrained Transformer and (b) a random Transformer: same backbone, budget, seed and thread count; COCO
   AP on val every 200 iterations;
5. ``ap_curves.png``, ``detections.png``, ``loss_curves.png``, ``summary.json`` and a summary table.

Steps 3 and 4 run two at a time (``--parallel``, one torch thread each): the random-init evaluation beside
the pretraining, then the two finetunings side by side (the scratch one waits for the pretraining too, so
that both share the machine alike and their times compare; on 2 cores this order is also a few percent
faster than starting it beside the pretraining, whose data loader already keeps the second core partly
busy: ``benchmarks/bench_demo_schedule.py``, and the project card's demo section). One thread per step, two
steps at a time, is also faster than two threads per step, one step at a time (``--threads 2 --parallel 1``;
``bench_demo_schedule.py --against two-threads``, note 4 of the card's "How long it takes").

Every step is a command a user could type (printed); its full output goes to ``<step folder>/demo.log`` and
a progress bar with ETA to the terminal. Each step records its inputs (resolved config, command, digests of
the checkpoints it starts from and of the project's code, library versions, processor kind) in
``<step folder>/step_inputs.json``: a re-run skips finished steps whose inputs are unchanged, resumes
interrupted ones and redoes (after deleting the folder) those whose inputs changed or whose folder another
command left there; the digests of the dataset's annotation files are inputs too, and a finished step whose
``model_final.pth`` / ``metrics.json`` changed since is redone. The steps die with the demo (even by SIGKILL);
``summary.json`` and the figures are removed when a run starts, so they are never an earlier run's; one run
at a time per output folder. ``--fresh`` starts over (only in a folder that holds nothing but the demo's
outputs, in its step folders too).
Outputs go to ``--output`` (default ``output/demo``); the dataset to ``$DETECTRON2_DATASETS``
(default ``./datasets``).
"""
import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, Optional

# detectron2 v0.6 scripts a few functions with torch.jit at import time; recent torch warns on each
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit\._script")

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BACKBONE_CONFIG = "configs/demo/demo_backbone.py"
PRETRAIN_CONFIG = "configs/demo/demo_siamese_pretrain.py"
DETECTOR_CONFIG = "configs/demo/demo_detector.py"
DATA_SPLITS = ("train_large", "val")
STEP_FOLDERS = ("backbone", "siamese_pretrain", "siamese_random_init_eval", "finetune_pretrained", "finetune_scratch")
# written from the step folders at the end of a run: deleted when a run starts
FINAL_OUTPUTS = ("summary.json", "ap_curves.png", "detections.png", "loss_curves.png")
LOCK_NAME = ".lock"  # siamese_detr.demo.runner.LOCK_NAME
# everything the demo writes to its output folder (what --fresh may delete)
DEMO_ENTRIES = STEP_FOLDERS + FINAL_OUTPUTS + ("commands.txt", LOCK_NAME) + tuple(
    f".{Path(name).stem}.tmp{Path(name).suffix}" for name in FINAL_OUTPUTS)
# what the steps write inside their folders (paths relative to the folder; ``.tmp``: an interrupted atomic write)
STEP_FILES = re.compile(r"(config\.yaml|config_eval_only\.yaml|demo\.log|log\.txt(\.rank\d+)?|metrics\.json"
                        r"|last_checkpoint|step_inputs\.json|step_inputs|progress\.json|loss\.json"
                        r"|events\.out\.tfevents\.[^/]+|model_(final|\d{7})\.pth|inference/.+)(\.tmp)?")


# ----------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    """The command line: parse ``argv`` (default ``sys.argv[1:]``; a flag :func:`check_args` refuses ends the tool
    through ``parser.error``, exit 2), work from the repository root, lock ``--output``, delete the earlier demo's
    outputs with ``--fresh`` and the earlier run's figures and summary always, then :func:`run`. Returns the exit
    status: 0, or 130 after Ctrl-C (the unfinished steps resume on the next run)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("output/demo"),
                        help="folder of the steps, figures and summary.json (default: output/demo)")
    parser.add_argument("--backbone-iters", type=int, default=None, help="override demo_backbone's max_iter")
    parser.add_argument("--pretrain-iters", type=int, default=None, help="override the pretraining max_iter")
    parser.add_argument("--finetune-iters", type=int, default=None, help="override the finetuning max_iter")
    parser.add_argument("--eval-period", type=int, default=None, help="finetuning evaluation period")
    parser.add_argument("--seed", type=int, default=None, help="training seed of every stage (default: configs)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process (OMP_NUM_THREADS; 1 is fastest on a busy 2-core machine)")
    parser.add_argument("--parallel", type=int, default=2,
                        help="steps run at once (the random-init evaluation beside the pretraining, then the "
                             "two finetunings side by side; 1: one after the other)")
    parser.add_argument("--fresh", action="store_true", help="delete the demo's outputs and start over")
    args = parser.parse_args(argv)
    problem = check_args(args)
    if problem:
        parser.error(problem)

    os.environ["DETECTRON2_DATASETS"] = os.path.abspath(os.getenv("DETECTRON2_DATASETS", "datasets"))
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning:torch.jit._script")
    output = args.output.resolve()
    os.chdir(ROOT)  # every command runs from the repository root
    if output.is_relative_to(ROOT):  # shorter commands; they run from the repository root
        output = output.relative_to(ROOT)
    from siamese_detr.demo.runner import lock_output

    lock = lock_output(output)  # one demo per output folder
    try:
        if args.fresh:
            start_over(output)
        for name in FINAL_OUTPUTS:  # this run's, or none: never an earlier run's next to this run's steps
            (output / name).unlink(missing_ok=True)
        return run(args, output)
    except KeyboardInterrupt:  # Ctrl-C: the running steps were stopped and stay unfinished
        print(f"\ninterrupted; the same command resumes the unfinished steps (outputs in {output})", file=sys.stderr)
        return 130
    finally:
        lock.close()


def prepare_data(args) -> dict:
    """Step 1: the built-in images (the generator reuses complete splits with the same parameters). Returns the
    inputs of every step: other images redo them, and so does another thread count (float results differ)."""
    cmd = [PY, "datasets/prepare_synthetic_shapes.py", "--splits", *DATA_SPLITS]
    print(f"\n[data] $ {' '.join(map(str, cmd))}", flush=True)
    if subprocess.run([str(c) for c in cmd], cwd=ROOT, stdout=subprocess.DEVNULL).returncode != 0:
        raise SystemExit(f"[data] failed: {' '.join(map(str, cmd))} (its error is above)")
    from siamese_detr.demo.data import synthetic_shapes_digests

    return {"data": synthetic_shapes_digests(DATA_SPLITS), "threads": args.threads}


def training_jobs(args, output: Path, backbone_ckpt: Path, data: dict):
    """Steps 3 and 4, as jobs of ``StepRunner.parallel``: the Siamese DETR pretraining (with the class-agnostic
    evaluation of its learned queries at the end), the same model at random initialisation (transformer random,
    same backbone) evaluated the same way, and the finetunings from the pretraining and from scratch (same
    backbone, budget, seed and thread count).

    Returns ``(jobs, folders)``: the four jobs and ``{"pretrain", "random_init", "pretrained", "scratch"}`` ->
    each one's output folder. ``parallel`` starts a job that may start in list order, so with two at a time the
    schedule is: the pretraining and the random-init evaluation first; once the pretraining has ended, the two
    finetunings side by side. The scratch finetuning does not need the pretraining's checkpoint; it waits for
    it (``after``) so that the two finetunings run under the same load, which makes their times comparable
    and, on 2 cores, the whole demo faster than running it beside the pretraining (measured: the project
    card's demo section)."""
    seed = [f"train.seed={args.seed}"] if args.seed is not None else []
    train_cmd = [PY, "tools/lazyconfig_train_net.py", "--config-file"]
    folders = {"pretrain": output / "siamese_pretrain", "random_init": output / "siamese_random_init_eval",
               "pretrained": output / "finetune_pretrained", "scratch": output / "finetune_scratch"}

    pt_over = [f"train.output_dir={folders['pretrain']}", f"train.init_checkpoint={backbone_ckpt}"] + seed
    if args.pretrain_iters:
        pt_over += schedule_overrides(args.pretrain_iters) + [f"train.eval_period={args.pretrain_iters}"]
    pretrain_job = dict(name="pretrain", folder=folders["pretrain"], cmd=train_cmd + [PRETRAIN_CONFIG, "--resume"]
                        + pt_over, config=PRETRAIN_CONFIG, overrides=pt_over, init=backbone_ckpt, inputs=data)

    rnd_over = [f"train.output_dir={folders['random_init']}", f"train.init_checkpoint={backbone_ckpt}",
                "train.eval_allow_random=True"] + seed
    random_init_job = dict(name="random-init eval", folder=folders["random_init"], cmd=train_cmd
                           + [PRETRAIN_CONFIG, "--eval-only"] + rnd_over, config=PRETRAIN_CONFIG, overrides=rnd_over,
                           init=backbone_ckpt, total=0, inputs=data)

    ft_common = list(seed)
    if args.finetune_iters:
        ft_common += schedule_overrides(args.finetune_iters)
    if args.eval_period:
        ft_common.append(f"train.eval_period={args.eval_period}")

    def finetune_job(label, init, after=()):
        over = [f"train.output_dir={folders[label]}", f"train.init_checkpoint={init}"] + ft_common
        return dict(name=f"finetune {label}", folder=folders[label], cmd=train_cmd + [DETECTOR_CONFIG, "--resume"]
                    + over, config=DETECTOR_CONFIG, overrides=over, init=init, after=after, inputs=data)

    jobs = [pretrain_job, random_init_job, finetune_job("scratch", backbone_ckpt, after=["pretrain"]),
            finetune_job("pretrained", folders["pretrain"] / "model_final.pth", after=["pretrain"])]
    return jobs, folders


def draw_figures(output: Path, pt_dir: Path, ft_dirs: Dict[str, Path]) -> None:
    """Step 5: ap_curves.png, detections.png and loss_curves.png in ``output`` (each written whole or not at
    all)."""
    from siamese_detr.demo.plots import draw_detections, eval_history, plot_ap_curves

    curves = {"from Siamese DETR pretraining": eval_history(ft_dirs["pretrained"] / "metrics.json"),
              "from a random Transformer (scratch)": eval_history(ft_dirs["scratch"] / "metrics.json")}
    with written_whole(output / "ap_curves.png") as path:
        plot_ap_curves(curves, str(path), "Deformable DETR finetuned on 10% of the labels")
    with written_whole(output / "detections.png") as path:
        draw_detections(str(ROOT / DETECTOR_CONFIG),
                        {"from Siamese DETR (top k)": str(ft_dirs["pretrained"] / "model_final.pth"),
                         "from scratch (top k)": str(ft_dirs["scratch"] / "model_final.pth")},
                        str(path), top_k=True)
    with written_whole(output / "loss_curves.png") as path:
        subprocess.run([PY, "tools/plot_metrics.py", pt_dir / "metrics.json", ft_dirs["pretrained"] / "metrics.json",
                        ft_dirs["scratch"] / "metrics.json", "--labels", "Siamese DETR pretraining",
                        "finetuning (pretrained)", "finetuning (scratch)", "--output", path],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def run(args, output: Path) -> int:
    """The demo's steps, figures and summary into ``output`` (relative to the repository root, the working
    directory), which this process has locked."""
    from siamese_detr.demo.runner import StepRunner

    started = time.time()
    demo = StepRunner(ROOT, output)
    times = {}

    t = time.time()
    data = prepare_data(args)  # 1. data
    times["data"] = time.time() - t

    # 2. backbone
    bb_dir = output / "backbone"
    bb_over = [f"train.output_dir={bb_dir}"] + ([f"train.seed={args.seed}"] if args.seed is not None else [])
    if args.backbone_iters:
        bb_over.append(f"train.max_iter={args.backbone_iters}")
    times["backbone"] = demo.step("backbone", bb_dir, [PY, "tools/train_demo_backbone.py", "--config-file",
                                  BACKBONE_CONFIG] + bb_over, BACKBONE_CONFIG, bb_over, data)
    if not backbone_ok(bb_dir):
        raise SystemExit(f"[backbone] no model_final.pth in {bb_dir}")

    # 3., 4. pretraining and finetunings, two at a time in the order training_jobs gives, one torch thread each
    jobs, folders = training_jobs(args, output, bb_dir / "model_final.pth", data)
    step_times = dict(zip((job["name"] for job in jobs), demo.parallel(jobs, max_parallel=args.parallel)))
    for key, name in (("pretrain", "pretrain"), ("finetune (scratch)", "finetune scratch"),
                      ("random-init eval", "random-init eval"), ("finetune (pretrained)", "finetune pretrained")):
        times[key] = step_times[name]

    t = time.time()
    ft_dirs = {label: folders[label] for label in ("pretrained", "scratch")}
    draw_figures(output, folders["pretrain"], ft_dirs)  # 5. figures
    times["figures"] = time.time() - t

    this_run = time.time() - started
    summary = write_summary(output, bb_dir, folders["pretrain"], folders["random_init"], ft_dirs, times,
                            demo_seconds(times, args.parallel), this_run, sorted(demo.reused), sorted(demo.resumed),
                            demo.environment["software"], demo.environment["machine"])
    print_table(summary, times, demo.reused, demo.resumed)
    print(f"\nDemo finished in {this_run / 60:.1f} min ({summary['minutes']:.1f} min of steps, reused ones "
          f"counted as when they ran). Outputs in {output}/: summary.json, ap_curves.png, "
          f"detections.png, loss_curves.png; each step's folder has its demo.log, metrics.json and config.yaml.")
    return 0


def check_args(args) -> Optional[str]:
    """Why the flags cannot run the demo, or None: a count below 1 (``--backbone-iters 0`` would otherwise
    silently mean the config's full schedule, ``--parallel 0`` would wait forever), a negative seed, or an
    ``--output`` that cannot hold the steps (a file, no write permission:
    :func:`siamese_detr.demo.runner.output_folder_problem`); with ``--fresh``, see :func:`fresh_problem`."""
    from siamese_detr.demo.runner import output_folder_problem

    for flag in ("backbone_iters", "pretrain_iters", "finetune_iters", "eval_period", "threads", "parallel"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            return f"--{flag.replace('_', '-')} must be at least 1, got {value}"
    if args.seed is not None and args.seed < 0:
        return f"--seed must be non-negative, got {args.seed}"
    problem = output_folder_problem(args.output)
    if problem:
        return problem
    return fresh_problem(args.output) if args.fresh else None


def fresh_problem(output: Path) -> Optional[str]:
    """Why ``--fresh`` must not delete ``output``, or None: it holds the repository or the working directory,
    or files the demo does not write (``--fresh --output .`` must not delete the project)."""
    full = output.resolve()
    if Path.cwd().resolve().is_relative_to(full) or ROOT.is_relative_to(full):
        return (f"--fresh --output {full}: refusing to delete a folder that holds the repository or the working "
                "directory; give the demo's own folder (default output/demo)")
    foreign = sorted(p.name for p in full.iterdir() if p.name not in DEMO_ENTRIES) if full.is_dir() else []
    foreign += foreign_step_files(full)
    if foreign:
        return (f"--fresh --output {full}: refusing to delete it, it holds files the demo does not write "
                f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); give the demo's own folder, "
                "or move those out of it (or delete them yourself)")
    return None


def foreign_step_files(output: Path) -> list:
    """Files in ``output``'s step folders (:data:`STEP_FOLDERS`) that no step writes (:data:`STEP_FILES`), as
    ``<step>/<path>``, sorted: e.g. a checkpoint that ``tools/fold_region_queries.py`` wrote next to the
    pretraining's, which ``--fresh`` must not delete with the folder."""
    found = []
    for step in STEP_FOLDERS:
        folder = output / step
        if not folder.is_dir() or folder.is_symlink():
            continue
        for path in folder.rglob("*"):
            relative = path.relative_to(folder).as_posix()
            if (path.is_file() or path.is_symlink()) and not STEP_FILES.fullmatch(relative):
                found.append(f"{step}/{relative}")
    return sorted(found)


def start_over(output: Path) -> None:
    """``--fresh``: delete what earlier demos wrote to ``output`` (checked by :func:`fresh_problem`), except
    the lock this run holds."""
    for name in DEMO_ENTRIES:
        path = output / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif name != LOCK_NAME:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def written_whole(path: Path):
    """Yields a temporary name next to ``path`` (same extension) to write; renamed to ``path`` once written,
    so that an interrupted run leaves no half-written figure or summary."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def demo_seconds(times: dict, parallel: int) -> float:
    """Wall-clock seconds of a whole demo from its step times (reused steps with the time they took when they
    ran): with two steps at a time (the schedule of :func:`training_jobs`), the longer of the pretraining and
    the random-init evaluation, then the longer of the two finetunings (each step's time was measured while
    sharing the machine)."""
    if parallel < 2:
        return sum(times.values())
    first = max(times["pretrain"], times["random-init eval"])
    then = max(times["finetune (pretrained)"], times["finetune (scratch)"])
    return times["data"] + times["backbone"] + first + then + times.get("figures", 0.0)


def schedule_overrides(iters: int):
    """Overrides giving a demo config ``iters`` iterations, lr x0.1 after 80% (as the configs)."""
    drop = max(1, int(iters * 0.8))
    return [f"train.max_iter={iters}", f"lr_multiplier.milestones=[{drop}]",
            f"lr_multiplier.num_updates={max(iters, drop + 1)}"]


def backbone_ok(folder: Path) -> bool:
    return (folder / "model_final.pth").is_file()


def write_summary(output, bb_dir, pt_dir, rnd_dir, ft_dirs, times, seconds, this_run, reused, resumed,
                  software, machine) -> dict:
    """Write ``output/summary.json`` (whole or not at all, :func:`written_whole`) and return it: the finetunings'
    AP / AP50, the class-agnostic AR@1 / AR@100 of the pretrained and of the random-init model without finetuning,
    the backbone's k-NN accuracies, ``seconds`` (the whole demo's, :func:`demo_seconds`) and ``this_run`` in
    minutes, the step times, the reused and resumed steps, the library versions and the machine (``machine``, the
    processor kind of :func:`~siamese_detr.demo.steps.machine_kind`, with the number of processors this process
    may use added)."""
    from siamese_detr.demo.runner import last_results, read_json

    bb = read_json(bb_dir / "metrics.json")
    pre = last_results(pt_dir / "metrics.json")
    rnd = last_results(rnd_dir / "metrics.json")
    ft = {k: last_results(v / "metrics.json") for k, v in ft_dirs.items()}
    method = bb.get("method", "?")
    backbone = (
        "narrow ResNet-18 trained by supervised classification on a separate built-in classification set "
        "(objects of scenes with seeds disjoint from every detection split)" if method == "supervised" else
        "narrow ResNet-18 trained label-free (SimSiam) on crops of the unlabelled train images"
    )
    summary = {
        "ap": {k: v.get("bbox/AP") for k, v in ft.items()},
        "ap50": {k: v.get("bbox/AP50") for k, v in ft.items()},
        "ar100_pretrained_no_finetune": pre.get("class_agnostic/AR@100"),
        "ar1_pretrained_no_finetune": pre.get("class_agnostic/AR@1"),
        "ar100_random_init_no_finetune": rnd.get("class_agnostic/AR@100"),
        "ar1_random_init_no_finetune": rnd.get("class_agnostic/AR@1"),
        "backbone": backbone,
        "backbone_knn_accuracy": bb.get("knn_accuracy"),
        "backbone_knn_accuracy_random_init": bb.get("knn_accuracy_random_init"),
        "minutes": seconds / 60,  # all steps, reused ones with the time they took when they ran
        "minutes_this_run": this_run / 60,
        "stage_seconds": times,
        "reused_steps": reused,
        "resumed_steps": resumed,  # continued after an interruption: their seconds include the interrupted runs'
        "software": software,  # the versions the steps ran with (they are step inputs)
        # the processor kind the steps ran on (a step input: the floats depend on it) and the processors usable
        "machine": {**machine, "cpus": usable_cpus()},
    }
    with written_whole(output / "summary.json") as path:
        path.write_text(json.dumps(summary, indent=1))
    return summary


def usable_cpus() -> int:
    """The number of processors this process may run on (its affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def describe_machine(machine: dict) -> str:
    """One line naming the machine of a summary: "AMD EPYC (AuthenticAMD family 25 ...), torch CPU kernels
    AVX2, 2 CPUs"."""
    cpu_id = f" ({machine['cpu_id']})" if machine.get("cpu_id") and machine["cpu_id"] != machine.get("cpu") else ""
    cpus = machine.get("cpus")
    return (f"{machine.get('cpu', 'unknown')}{cpu_id}, torch CPU kernels {machine.get('torch_cpu_capability', '?')}"
            + (f", {cpus} CPU{'s' if cpus != 1 else ''}" if cpus else ""))


def print_table(s: dict, times: dict, reused=(), resumed=()) -> None:
    """Print the summary ``s`` as a table, one row per step with its time (``*``: reused, ``+``: resumed) and key
    metric, then the AP gain from the pretraining when both finetunings have an AP."""
    from siamese_detr.demo.runner import clock

    def pct(v):
        return "-" if v is None else f"{v:.1f}"

    rows = [
        ("data (generate / reuse)", times.get("data"), ""),
        ("backbone (k-NN on val objects)", times.get("backbone"),
         f"k-NN {pct(s['backbone_knn_accuracy'])}% (random init {pct(s['backbone_knn_accuracy_random_init'])}%)"),
        ("Siamese DETR pretraining (no labels)", times.get("pretrain"),
         f"AR@1/100 {pct(s['ar1_pretrained_no_finetune'])}/{pct(s['ar100_pretrained_no_finetune'])}"),
        ("same model, random init", times.get("random-init eval"),
         f"AR@1/100 {pct(s['ar1_random_init_no_finetune'])}/{pct(s['ar100_random_init_no_finetune'])}"),
        ("finetune 10% labels from pretraining", times.get("finetune (pretrained)"),
         f"AP {pct(s['ap']['pretrained'])}  AP50 {pct(s['ap50']['pretrained'])}"),
        ("finetune 10% labels from scratch", times.get("finetune (scratch)"),
         f"AP {pct(s['ap']['scratch'])}  AP50 {pct(s['ap50']['scratch'])}"),
        ("figures", times.get("figures"), ""),
    ]
    step_names = {"backbone (k-NN on val objects)": "backbone", "Siamese DETR pretraining (no labels)": "pretrain",
                  "same model, random init": "random-init eval",
                  "finetune 10% labels from pretraining": "finetune pretrained",
                  "finetune 10% labels from scratch": "finetune scratch"}
    legend = "* = reused from an earlier run, its time then"
    if resumed:
        legend += "; + = continued after an interruption, the interrupted run's time included"
    print(f"\nSummary (metrics on synthetic_shapes_val, %; {legend}):")
    print(f"{'stage':<40} {'time':>6}  key metric")
    for stage, seconds, metric in rows:
        mark = "*" if step_names.get(stage) in reused else "+" if step_names.get(stage) in resumed else " "
        print(f"{stage:<40} {clock(seconds):>6}{mark} {metric}")
    ap = s["ap"]
    if ap.get("pretrained") is not None and ap.get("scratch") is not None:
        gain = ap["pretrained"] - ap["scratch"]
        print(f"gain from Siamese DETR pretraining: {gain:+.1f} AP (one seed; the AP varies by about 2 between "
              "seeds here: python tools/compare_pretraining.py compares over several)")
    if s.get("machine"):
        print(f"machine: {describe_machine(s['machine'])} (the floats, so the numbers, depend on the processor kind)")


if __name__ == "__main__":
    sys.exit(main())
