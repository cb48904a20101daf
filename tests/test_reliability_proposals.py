"""Issue 11 items 6 and 7: proposal stores match their images, settings and method; the generator never
hangs on a dead worker (real SIGKILL) and recovers a merge lock left by a killed merge."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from siamese_detr.data.proposals import ProposalStore, ProposalStoreError
from siamese_detr.data.proposals.generate import merge_if_complete
from siamese_detr.data.proposals.sources import StoreProposals

from hang_guard import HANG_GUARD_S
from script_modules import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "generate_proposals.py")


def _tool():
    return load_script(TOOL, "generate_proposals_rel2")


gen = _tool()


def _images(folder, n, size=(48, 64)):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(os.path.join(folder, f"im{i:02d}.png"), rng.integers(0, 255, size + (3,), dtype=np.uint8))


def _random_store(tmp_path, n=4):
    images, out = str(tmp_path / "imgs"), str(tmp_path / "store")
    _images(images, n)
    args = ["--image-dir", images, "--method", "random", "--max-boxes", "8", "--output", out, "--no-progress"]
    assert gen.main(args) == 0
    return images, out, args


# ------------------------------------------------------------------------------------------- item 6
def test_store_records_every_image_size_and_refuses_resized_images(tmp_path):
    images, out, _ = _random_store(tmp_path)
    store = ProposalStore.open(out)
    assert all(store.image_size(i) == (48, 64) for i in store.image_ids)
    source = StoreProposals(out)
    d = {"file_name": os.path.join(images, "im01.png"), "image_id": "im01.png"}
    boxes, _ = source(d, np.zeros((48, 64, 3), np.uint8))
    assert len(boxes) == 8
    with pytest.raises(ProposalStoreError, match="im01.png.*24x32 now but was 48x64.*--overwrite"):
        source(d, np.zeros((24, 32, 3), np.uint8))  # the folder re-exported at half size


def test_store_used_with_another_folder_is_refused_unless_allowed(tmp_path):
    import shutil

    images, out, _ = _random_store(tmp_path)
    copy = str(tmp_path / "copy")
    shutil.copytree(images, copy)
    d = {"file_name": os.path.join(copy, "im00.png"), "image_id": "im00.png"}
    image = np.zeros((48, 64, 3), np.uint8)
    with pytest.raises(ProposalStoreError, match="generated from the images in .*imgs.*allow_other_folder=True"):
        StoreProposals(out)(d, image)
    boxes, _ = StoreProposals(out, allow_other_folder=True)(d, image)
    assert np.array_equal(boxes, ProposalStore.open(out).get("im00.png")[0])


def test_store_of_another_method_is_refused(tmp_path):
    _, out, _ = _random_store(tmp_path)
    with pytest.raises(ProposalStoreError, match="holds 'random' proposals, the config asks for 'edgeboxes'"):
        StoreProposals(out, method="edgeboxes")({"image_id": "im00.png"})


def test_a_complete_store_asked_for_with_other_settings_is_refused(tmp_path, capsys):
    images, out, args = _random_store(tmp_path)
    assert gen.main(args) == 0  # same settings: nothing to do
    capsys.readouterr()
    assert gen.main(args[:-1] + ["--max-boxes", "5", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "max_boxes" in err and "--overwrite" in err
    other = str(tmp_path / "other")
    _images(other, 2)
    assert gen.main(["--image-dir", other] + args[2:]) == 2  # another folder
    assert "images" in capsys.readouterr().err
    assert gen.main(args[:-1] + ["--max-boxes", "5", "--overwrite", "--no-progress"]) == 0  # the advised fix
    assert ProposalStore.open(out).params["max_boxes"] == 5


def test_the_advice_for_a_corrupt_store_works(tmp_path):
    _, out, args = _random_store(tmp_path)
    with open(os.path.join(out, "boxes.npy"), "r+b") as f:
        f.truncate(20)
    with pytest.raises(ProposalStoreError) as err:
        ProposalStore.open(out)
    assert "--overwrite" in str(err.value)
    assert gen.main(args + ["--overwrite"]) == 0
    assert len(ProposalStore.open(out)) == 4


def test_a_store_without_sizes_is_a_clear_error(tmp_path):
    _, out, _ = _random_store(tmp_path)
    os.remove(os.path.join(out, "sizes.npy"))  # a store from before sizes were recorded
    with pytest.raises(ProposalStoreError, match="sizes.npy is missing or corrupt.*--overwrite"):
        ProposalStore.open(out)


def test_usage_errors_are_one_line_and_leave_no_folder(tmp_path, capsys):
    out = tmp_path / "never"
    assert gen.main(["--image-dir", str(tmp_path / "missing"), "--output", str(out)]) == 2
    assert gen.main(["--dataset", "no_such_dataset", "--output", str(out)]) == 2
    assert gen.main(["--image-dir", str(tmp_path), "--output", str(out), "--num-shards", "2", "--shard-id", "2"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert "does not exist" in lines[0] and "not a registered dataset" in lines[1] and "--shard-id" in lines[2]
    assert not out.exists()


# ------------------------------------------------------------------------------------------- item 7
def _children(pid):
    """(pid, cmdline) of the direct children of ``pid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append((int(entry), cmd))
    return found


def _run_tool(argv, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, TOOL] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, **kwargs)


def test_a_worker_killed_by_sigkill_costs_a_retry_not_a_hang(tmp_path):
    images, out, ref = str(tmp_path / "imgs"), str(tmp_path / "store"), str(tmp_path / "ref")
    _images(images, 12)
    common = ["--image-dir", images, "--method", "random", "--max-boxes", "8", "--no-progress", "--chunk-size", "6"]
    assert gen.main(common + ["--output", ref]) == 0
    proc = _run_tool(common + ["--output", out, "--num-workers", "2", "--debug-sleep", "0.4"])
    try:
        worker = None
        for _ in range(2400):  # bounded: at most 2400 polls 0.05 s apart
            if worker is not None or proc.poll() is not None:
                break
            workers = [p for p, cmd in _children(proc.pid) if "spawn_main" in cmd]
            if len(workers) == 2:
                time.sleep(1.0)  # let them start on the first chunk
                worker = workers[0]
            time.sleep(0.05)
        assert worker is not None, "the pool's workers did not start"
        os.kill(worker, signal.SIGKILL)
        _, err = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    log = open(os.path.join(out, "generate.log")).read()
    assert "a worker process died" in log and "attempt 1 of 2" in log
    a, b = ProposalStore.open(out), ProposalStore.open(ref)
    assert a.image_ids == b.image_ids
    assert all(np.array_equal(a.get(i)[0], b.get(i)[0]) for i in a.image_ids)


def test_a_worker_dying_on_every_attempt_fails_with_a_message(tmp_path):
    images, out = str(tmp_path / "imgs"), str(tmp_path / "store")
    _images(images, 8)
    proc = _run_tool(["--image-dir", images, "--method", "random", "--output", out, "--no-progress",
                      "--chunk-size", "4", "--num-workers", "2", "--debug-die-on", "im05.png"])
    try:
        _, err = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err.decode()
    assert proc.returncode == 1, err
    assert "a worker process died" in err and "attempt 2 of 2; giving up" in err and "im04.png" in err
    chunks = os.path.join(out, "shards", "shard-00000-of-00001", "chunks")
    assert os.path.isfile(os.path.join(chunks, "chunk-000000.json"))  # the finished chunk is kept
    assert not os.path.isfile(os.path.join(out, "meta.json"))


def test_a_stale_merge_lock_is_taken_over_and_a_live_one_respected(tmp_path):
    images, out = str(tmp_path / "imgs"), str(tmp_path / "store")
    _images(images, 4)
    for shard in range(2):
        assert gen.main(["--image-dir", images, "--method", "random", "--output", out, "--no-progress",
                         "--num-shards", "2", "--shard-id", str(shard), "--keep-shards"]) == 0
    os.remove(os.path.join(out, "meta.json"))  # as if the merge had not happened yet
    lock = os.path.join(out, ".merge.lock")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with open(lock, "w") as f:
            json.dump({"host": socket.gethostname(), "pid": sleeper.pid}, f)
        assert merge_if_complete(out, 2, keep_shards=True) is None  # a live owner: wait for it
        assert os.path.exists(lock)
    finally:
        sleeper.kill()
        sleeper.wait()
    # the owner was killed mid-merge: its lock is stale
    assert merge_if_complete(out, 2) == out
    assert not os.path.exists(lock) and len(ProposalStore.open(out)) == 4
