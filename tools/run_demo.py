#!/usr/bin/env python
"""The main job on the built-in dataset, end to end on CPU (what ``make demo`` runs).

1. generate the built-in synthetic dataset (seconds; no download);
2. EdgeBoxes proposals for its train split into a proposal store, and their recall on the val split;
3. Siamese DETR pretraining (configs/demo/siamese_detr_pretrain_demo.py), then class-agnostic evaluation
   of the pretrained model without finetuning (AR@1/10/100 on the val split);
4. the downstream-initialisation probe (configs/demo/detr_heads_only_demo.py; supplementary Table 1):
   heads-only training on a frozen Transformer, from the pretraining checkpoint and from random
   weights, then class-agnostic AR@1/10/100 of each, side by side;
5. DETR finetuning initialised from the pretraining checkpoint (configs/demo/detr_demo.py), then COCO AP
   on the val split;
6. a PNG of the loss curves of pretraining and finetuning (tools/plot_metrics.py) and a summary table.

Every step is a command a user could type (they are printed); re-running resumes: finished proposal
chunks are kept and finished trainings are not redone (``--resume``). ``--fresh`` starts over.
Outputs go to ``--output`` (default ``output/demo``); the dataset and proposal store to
``$DETECTRON2_DATASETS`` (default ``./datasets``).
"""
import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def run(cmd, log):
    """Run one step, echoing the command; stop the demo with its exit code if it fails."""
    printable = " ".join(shlex.quote(str(c)) for c in cmd)
    print(f"\n$ {printable}", flush=True)
    log.write(f"$ {printable}\n")
    start = time.time()
    proc = subprocess.run([str(c) for c in cmd], cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"step failed (exit {proc.returncode}): {printable}")
    log.write(f"  done in {time.time() - start:.0f}s\n")
    log.flush()


def last_results(metrics_json: Path) -> dict:
    """The last value of every evaluation metric (``task/metric`` keys) in a detectron2 metrics.json."""
    results = {}
    if metrics_json.is_file():
        for line in metrics_json.read_text().splitlines():
            if line.strip():
                results.update({k: v for k, v in json.loads(line).items() if "/" in k})
    return results


def print_summary(output: Path, pretrain_dir: Path, finetune_dir: Path) -> None:
    rows = [
        ("Siamese DETR pretrained, no finetuning", pretrain_dir, "class_agnostic"),
        ("heads only on frozen Transformer, Siamese DETR init", output / "heads_only_siamese", "class_agnostic"),
        ("heads only on frozen Transformer, random init", output / "heads_only_random", "class_agnostic"),
        ("DETR finetuned from Siamese DETR", finetune_dir, "bbox"),
    ]
    print("\nResults on synthetic_shapes_val (%):")
    print(f"{'run':<52} {'AR@1':>6} {'AR@10':>6} {'AR@100':>6} {'AP':>6} {'AP50':>6}")
    for label, folder, task in rows:
        res = last_results(folder / "metrics.json")
        cells = [res.get(f"{task}/{key}") for key in ("AR@1", "AR@10", "AR@100", "AP", "AP50")]
        print(f"{label:<52} " + " ".join(f"{c:6.2f}" if isinstance(c, float) else f"{'-':>6}" for c in cells))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("output/demo"))
    parser.add_argument("--pretrain-iters", type=int, default=None, help="override the demo config's max_iter")
    parser.add_argument("--finetune-iters", type=int, default=None, help="override the demo config's max_iter")
    parser.add_argument("--num-workers", type=int, default=2, help="proposal-generation processes")
    parser.add_argument("--fresh", action="store_true", help="delete the demo's outputs and start over")
    args = parser.parse_args(argv)

    datasets = Path(os.environ.get("DETECTRON2_DATASETS", "datasets"))
    os.environ["DETECTRON2_DATASETS"] = str(datasets)
    # silence the FutureWarning torch prints for each function detectron2 v0.6 scripts at import time
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning:torch.jit._script")
    output = args.output
    store = datasets / "proposals" / "synthetic_shapes_train.edgeboxes.proposals"
    val_store = output / "proposals" / "synthetic_shapes_val.edgeboxes.proposals"
    pretrain_dir, finetune_dir = output / "siamese_detr_pretrain", output / "detr_finetune"
    if args.fresh:
        for path in (output, store):
            shutil.rmtree(path, ignore_errors=True)
    output.mkdir(parents=True, exist_ok=True)
    started = time.time()

    with open(output / "commands.txt", "a") as log:
        run([PY, "datasets/prepare_synthetic_shapes.py"], log)
        run([PY, "tools/generate_proposals.py", "--dataset", "synthetic_shapes_train", "--method", "edgeboxes",
             "--output", store, "--num-workers", args.num_workers], log)
        run([PY, "tools/generate_proposals.py", "--dataset", "synthetic_shapes_val", "--method", "edgeboxes",
             "--output", val_store, "--num-workers", args.num_workers], log)
        run([PY, "tools/evaluate_proposals.py", "--dataset", "synthetic_shapes_val", "--store", val_store,
             "--json", output / "proposal_recall.json"], log)

        # the training tool evaluates after the last iteration: class-agnostic AR@1/10/100 for the
        # pretrained model (no finetuning), COCO AP for the finetuned one
        pretrain = [PY, "tools/lazyconfig_train_net.py", "--config-file", "configs/demo/siamese_detr_pretrain_demo.py",
                    "--resume", f"train.output_dir={pretrain_dir}"]
        if args.pretrain_iters:
            pretrain.append(f"train.max_iter={args.pretrain_iters}")
        run(pretrain, log)

        for name, init in (("heads_only_siamese", pretrain_dir / "model_final.pth"), ("heads_only_random", "")):
            run([PY, "tools/lazyconfig_train_net.py", "--config-file", "configs/demo/detr_heads_only_demo.py",
                 "--resume", f"train.output_dir={output / name}", f"train.init_checkpoint={init}"], log)

        finetune = [PY, "tools/lazyconfig_train_net.py", "--config-file", "configs/demo/detr_demo.py", "--resume",
                    f"train.output_dir={finetune_dir}", f"train.init_checkpoint={pretrain_dir / 'model_final.pth'}"]
        if args.finetune_iters:
            finetune.append(f"train.max_iter={args.finetune_iters}")
        run(finetune, log)

        run([PY, "tools/plot_metrics.py", pretrain_dir / "metrics.json", finetune_dir / "metrics.json",
             "--labels", "Siamese DETR pretraining", "DETR finetuning", "--output", output / "loss_curves.png"], log)

    print_summary(output, pretrain_dir, finetune_dir)
    print(f"\nDemo finished in {(time.time() - started) / 60:.1f} min. Outputs in {output}/:")
    print(f"  proposals:   {store} (recall on val: {output / 'proposal_recall.json'})")
    print(f"  pretraining: {pretrain_dir}/ (model_final.pth, metrics.json, log.txt)")
    print(f"  finetuning:  {finetune_dir}/ (COCO AP printed above and in metrics.json)")
    print(f"  curves:      {output / 'loss_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
