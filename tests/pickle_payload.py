"""A pickle that runs code when it is loaded, for the tests of the rule that no store, cache or unchosen file
is ever unpickled."""


class Payload:
    """Unpickling this creates the file ``marker`` (a stand-in for arbitrary code in a malicious file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))
