"""``benchmarks/RESULTS.md``, where each benchmark appends the section it measured."""
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = ("# Benchmark results\n\nEach section is appended by the benchmark that produced it (with the machine it "
          "ran on).\n")


def append_section(lines) -> None:
    """Append ``lines`` (a section, starting with its blank line and heading) to RESULTS.md, creating the file
    with its header first if it does not exist."""
    if not RESULTS.exists():
        RESULTS.write_text(HEADER)
    with open(RESULTS, "a") as f:
        f.write("\n".join(lines) + "\n")
