"""The READMEs against the tree: every repository path they name exists, every ``--flag`` they pass to one of
our scripts is defined in that script, and every ``key=value`` override of a ``--config-file`` command is a
key of that config (a ``+key=`` adds one on purpose and is skipped)."""
import glob
import re
from pathlib import Path

import pytest
from detectron2.config import LazyConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "datasets/README.md", "projects/SiameseDETR/README.md", "benchmarks/RESULTS.md"]
# paths the docs name that are not in the repository on purpose: files a command writes, a user's own
# folder, and files of the official code bases
NOT_IN_TREE = {
    "datasets/my_data",
    "datasets/proposals/synthetic_shapes_train.edgeboxes.proposals",
    "datasets/proposals/synthetic_shapes_val.selective_search.proposals",
    "datasets/pipelines/transforms.py",  # Zx55/SiameseDETR
    "datasets/selfdet.py",  # dddzg/up-detr
    "datasets/coco.py",  # amirbar/DETReg
    *(f"configs/DETReg_fine_tune_{p}pct_coco.sh" for p in (1, 2, 5, 10)),  # amirbar/DETReg
    "tools/hpcplayers/box_generator.py",  # Zx55/SiameseDETR
}
PATH = re.compile(r"(?<![\w/.$<-])((?:configs|tools|datasets|benchmarks|tests|projects)/[\w./{},*-]+)")
SCRIPT = re.compile(r"(?<![\w/])((?:tools|datasets|benchmarks)/\w+\.py)\b")


def _text(doc):
    return (ROOT / doc).read_text()


def _expand_braces(path):
    """``a{,_b}c`` -> ``["ac", "a_bc"]`` (nested and repeated groups too)."""
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [q for alt in m.group(1).split(",") for q in _expand_braces(path[:m.start()] + alt + path[m.end():])]


def _code_snippets(text):
    """Logical lines of fenced code blocks (``\\`` continuations joined, comments cut) and inline code spans."""
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            yield line.split("#")[0]
    for span in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)):
        yield span


@pytest.mark.parametrize("doc", DOCS)
def test_every_named_path_exists(doc):
    missing = []
    for m in PATH.finditer(_text(doc)):
        named = m.group(1).rstrip(".,)")
        if named.startswith("configs/selfsup/"):  # the official Siamese DETR configs
            continue
        assert named.count("{") == named.count("}"), f"{doc}: keep {named!r}... on one line (it is checked)"
        for path in _expand_braces(named):
            if path in NOT_IN_TREE:
                continue
            found = glob.glob(str(ROOT / path)) if "*" in path else (ROOT / path).exists()
            if not found:
                missing.append(f"{path} (from {named})")
    assert not missing, f"{doc} names paths that do not exist: {missing}"


def _flags_by_script(doc):
    flags = {}
    for snippet in _code_snippets(_text(doc)):
        for segment in re.split(r"[;&|]+", snippet):
            scripts = list(SCRIPT.finditer(segment))
            for i, m in enumerate(scripts):
                end = scripts[i + 1].start() if i + 1 < len(scripts) else len(segment)
                for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", segment[m.end():end]):
                    flags.setdefault(m.group(1), set()).add(flag)
    return flags


@pytest.mark.parametrize("doc", DOCS)
def test_every_flag_passed_to_a_script_is_defined_there(doc):
    undefined = []
    for script, flags in _flags_by_script(doc).items():
        source = (ROOT / script).read_text()
        # argparse flags of our scripts are string literals ("--name"); lazyconfig_train_net's come from
        # detectron2's default_argument_parser
        if script == "tools/lazyconfig_train_net.py":
            from detectron2.engine import default_argument_parser

            source += " ".join(f'"{o}"' for a in default_argument_parser()._actions for o in a.option_strings)
        undefined += [f"{script} {f}" for f in sorted(flags) if f'"{f}"' not in source]
    assert not undefined, f"{doc} passes flags its scripts do not define: {undefined}"


def test_the_check_sees_a_wrong_flag_and_a_missing_path():
    fake = "```bash\npython tools/run_demo.py --no-such-flag\n```\nsee `configs/demo/none.py`"
    scripts = {}
    for snippet in _code_snippets(fake):
        for m in SCRIPT.finditer(snippet):
            scripts.setdefault(m.group(1), set()).update(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", snippet))
    assert scripts == {"tools/run_demo.py": {"--no-such-flag"}}
    assert '"--no-such-flag"' not in (ROOT / "tools/run_demo.py").read_text()
    assert [m.group(1) for m in PATH.finditer(fake)] == ["tools/run_demo.py", "configs/demo/none.py"]
    assert _expand_braces("a{,_b}_{x,y}.py") == ["a_x.py", "a_y.py", "a_b_x.py", "a_b_y.py"]


def _has_key(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, IndexError):
            if not hasattr(node, part):
                return False
            node = getattr(node, part)
    return True


@pytest.mark.parametrize("doc", DOCS)
def test_every_override_is_a_key_of_its_config(doc):
    configs, unknown = {}, []
    for snippet in _code_snippets(_text(doc)):
        m = re.search(r"--config-file\s+(\S+)", snippet)
        if not m:
            continue
        config_file = m.group(1)
        assert (ROOT / config_file).exists(), f"{doc}: {config_file} does not exist"
        if config_file not in configs:
            configs[config_file] = LazyConfig.load(str(ROOT / config_file))
        for key in re.findall(r"(?<![\w.+-])([a-z_]\w*(?:\.\w+)+)=\S+", snippet[m.end():]):
            if not _has_key(configs[config_file], key):
                unknown.append(f"{config_file}: {key}")
    assert not unknown, f"{doc} overrides keys its configs do not have (add them with +key=): {unknown}"
