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


def _missing_paths(text):
    """Repository paths ``text`` names that do not exist (``NOT_IN_TREE`` and the official configs excepted)."""
    missing = []
    for m in PATH.finditer(text):
        named = m.group(1).rstrip(".,)")
        if named.startswith("configs/selfsup/"):  # the official Siamese DETR configs
            continue
        assert named.count("{") == named.count("}"), f"keep {named!r}... on one line (it is checked)"
        for path in _expand_braces(named):
            if path in NOT_IN_TREE:
                continue
            found = glob.glob(str(ROOT / path)) if "*" in path else (ROOT / path).exists()
            if not found:
                missing.append(f"{path} (from {named})")
    return missing


@pytest.mark.parametrize("doc", DOCS)
def test_every_named_path_exists(doc):
    missing = _missing_paths(_text(doc))
    assert not missing, f"{doc} names paths that do not exist: {missing}"


def _flags_by_script(text):
    """``{script: flags passed to it}`` over the code of ``text`` (a flag belongs to the script before it)."""
    flags = {}
    for snippet in _code_snippets(text):
        for segment in re.split(r"[;&|]+", snippet):
            scripts = list(SCRIPT.finditer(segment))
            for i, m in enumerate(scripts):
                end = scripts[i + 1].start() if i + 1 < len(scripts) else len(segment)
                for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", segment[m.end():end]):
                    flags.setdefault(m.group(1), set()).add(flag)
    return flags


def _undefined_flags(text):
    """``"script --flag"`` for each flag ``text`` passes to one of our scripts that does not define it."""
    undefined = []
    for script, flags in _flags_by_script(text).items():
        source = (ROOT / script).read_text()
        # argparse flags of our scripts are string literals ("--name"); lazyconfig_train_net's come from
        # detectron2's default_argument_parser
        if script == "tools/lazyconfig_train_net.py":
            from detectron2.engine import default_argument_parser

            source += " ".join(f'"{o}"' for a in default_argument_parser()._actions for o in a.option_strings)
        undefined += [f"{script} {f}" for f in sorted(flags) if f'"{f}"' not in source]
    return undefined


@pytest.mark.parametrize("doc", DOCS)
def test_every_flag_passed_to_a_script_is_defined_there(doc):
    undefined = _undefined_flags(_text(doc))
    assert not undefined, f"{doc} passes flags its scripts do not define: {undefined}"


def test_the_check_sees_a_wrong_flag_and_a_missing_path():
    """The two checks above, on a made-up text: a flag of one script is not taken for the next one's on the same
    line, an undefined flag is reported, a missing path is reported and an existing one is not."""
    fake = ("```bash\npython tools/run_demo.py --no-such-flag && python tools/plot_metrics.py m.json --output x.png\n"
            "python tools/run_demo.py --fresh\n```\nsee `configs/demo/none.py` and `configs/demo/demo_detector.py`")
    assert _flags_by_script(fake) == {"tools/run_demo.py": {"--no-such-flag", "--fresh"},
                                      "tools/plot_metrics.py": {"--output"}}
    assert _undefined_flags(fake) == ["tools/run_demo.py --no-such-flag"]
    assert _missing_paths(fake) == ["configs/demo/none.py (from configs/demo/none.py)"]
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


LINK = re.compile(r"\]\(([^)\s]+)\)")


def _heading_anchor(heading):
    """GitHub's anchor of a Markdown heading: lower case, punctuation other than ``-`` and ``_`` dropped,
    spaces to ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _broken_links(doc, text):
    """Relative links and images of ``text`` (in ``doc``; code is not prose, so fenced blocks and inline code
    are skipped) whose file is missing, or whose ``#anchor`` is no heading of that file; web links are not
    followed."""
    broken = []
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))
    for target in LINK.findall(prose):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (ROOT / doc).parent / path if path else ROOT / doc
        if not file.exists():
            broken.append(f"{target} (no file {path})")
        elif anchor:
            headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", file.read_text(), flags=re.S), re.M)
            if anchor not in {_heading_anchor(h) for h in headings}:
                broken.append(f"{target} (no heading with anchor #{anchor})")
    return broken


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_and_image_resolves(doc):
    broken = _broken_links(doc, _text(doc))
    assert not broken, f"{doc} links to what does not exist: {broken}"


def test_the_link_check_sees_a_missing_image_and_a_wrong_anchor():
    fake = ("![a](projects/SiameseDETR/docs/no_such.png) [b](projects/SiameseDETR/README.md#no-such-part) "
            "[c](projects/SiameseDETR/README.md#demo-on-the-built-in-dataset-make-demo-2-cpu-cores) "
            "[d](https://example.org/x.png) ![e](projects/SiameseDETR/docs/demo_ap_curves.png) "
            "`sigmoid(bbox_embed[l](hs[l]))`")
    assert _broken_links("README.md", fake) == [
        "projects/SiameseDETR/docs/no_such.png (no file projects/SiameseDETR/docs/no_such.png)",
        "projects/SiameseDETR/README.md#no-such-part (no heading with anchor #no-such-part)",
    ]
    assert _heading_anchor("Demo on the built-in dataset (`make demo`, 2 CPU cores)") == \
        "demo-on-the-built-in-dataset-make-demo-2-cpu-cores"
