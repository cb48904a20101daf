"""Tuples in command-line overrides: ``key=(a,b)`` is read as ``key=[a,b]``.

Detectron2 parses overrides with hydra's grammar, which has lists ``[a,b]`` but no tuples: ``key=(1,2)``
is a parse error. Configs hold tuples as lists anyway (OmegaConf stores ``(1, 2)`` as ``[1, 2]``), so
rewriting the brackets before parsing gives the value the user meant, without changing the parser.

Rewritten: a ``(`` where a value starts (right after ``=``, ``[``, ``,`` or a rewritten ``(``, spaces
allowed) and its matching ``)``; a trailing comma (``(1,)``) is dropped. Left alone: quoted
strings, ``${...}`` interpolations, hydra functions such as ``choice(1,2)`` (a ``(`` after a name) and
parentheses inside a value (``coco:data/(2024)/train.json``).
"""

__all__ = ["tuples_to_lists"]

_VALUE_START = "[,("


def tuples_to_lists(override: str) -> str:
    """``"key=(1,(2,3))"`` -> ``"key=[1,[2,3]]"``; overrides without a tuple come back unchanged."""
    if "=" not in override or "(" not in override:
        return override
    key, value = override.split("=", 1)
    out = []
    stack = []  # for each open "(": True if it was rewritten to "["
    quote = None
    brace_depth = 0
    previous = "["  # the start of the value counts as a place where a value starts
    i = 0
    while i < len(value):
        ch = value[i]
        if quote:
            if ch == "\\" and i + 1 < len(value):
                out.append(value[i:i + 2])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif brace_depth:
            brace_depth += {"{": 1, "}": -1}.get(ch, 0)
        elif ch in "'\"":
            quote = ch
        elif ch == "$" and value[i + 1:i + 2] == "{":
            brace_depth = 1
            out.append("${")
            i += 2
            previous = "}"
            continue
        elif ch == "(":
            rewrite = previous in _VALUE_START
            stack.append(rewrite)
            ch = "[" if rewrite else ch
        elif ch == ")" and stack:
            if stack.pop():
                while out and out[-1].isspace():
                    out.pop()
                if out and out[-1] == ",":
                    out.pop()  # (1,) -> [1]
                ch = "]"
        out.append(ch)
        if not ch.isspace():
            # a "(" kept as it is (a function call, a path) does not start a value
            previous = "'" if quote else "f" if ch == "(" else ch
        i += 1
    return f"{key}={''.join(out)}"
