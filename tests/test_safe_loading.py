"""Static check: every torch.load in atml's source passes weights_only=True."""

import re
from pathlib import Path

import atml

CALL = re.compile(r"torch\.load\((?P<args>[^)]*)\)")


def test_every_torch_load_uses_weights_only():
    root = Path(atml.__file__).parent
    calls = [(path, m.group("args")) for path in root.rglob("*.py") for m in CALL.finditer(path.read_text())]
    assert calls, "the check found no torch.load at all: the pattern is broken"
    unsafe = [f"{path.relative_to(root)}: torch.load({args})" for path, args in calls if "weights_only=True" not in args]
    assert not unsafe, unsafe
