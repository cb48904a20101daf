"""Shared by the benchmarks that measure each row in a fresh process (a clean peak-memory counter, an empty
compile cache): the parent's call of a child, and the child's answer, one JSON line on its standard output."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_child_process(script, row, env=None) -> dict:
    """Run ``python script --child <row as JSON>`` in the repository root (with ``env``, default this process's
    environment) and return the JSON object on the last line of its output. A failed child ends the benchmark
    with one message naming the row and showing the last lines of the child's error output."""
    cmd = [sys.executable, str(script), "--child", json.dumps(list(row))]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode:
        tail = "\n".join(out.stderr.strip().splitlines()[-15:])
        sys.exit(f"{Path(script).name}: the child process of {list(row)} failed (exit {out.returncode}):\n{tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def answer_if_child(args, measure) -> bool:
    """In a child (``args.child``, set by :func:`run_child_process`): print ``measure(*row)`` as the JSON line
    its parent reads and return True; in the parent return False."""
    if not args.child:
        return False
    print(json.dumps(measure(*json.loads(args.child))))
    return True
