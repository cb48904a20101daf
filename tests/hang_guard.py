"""How long a test waits on a child process (its start, its output, its end) before calling it hung.

A guard against a suite that never ends, not a speed target: every wait it bounds takes seconds normally, and
the bound is generous enough that a loaded, shared machine never trips it (a hung child fails the test after
this long instead of stalling CI until its own limit).
"""
HANG_GUARD_S = 900
