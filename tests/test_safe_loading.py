"""Static check: every torch.load in atml's source passes weights_only=True."""

import re
from pathlib import Path

import pytest

import atml

CALL = re.compile(r"torch\.load\((?P<args>[^)]*)\)")


def test_every_torch_load_uses_weights_only():
    root = Path(atml.__file__).parent
    calls = [(path, m.group("args")) for path in root.rglob("*.py") for m in CALL.finditer(path.read_text())]
    assert calls, "the check found no torch.load at all: the pattern is broken"
    unsafe = [f"{path.relative_to(root)}: torch.load({args})" for path,
              args in calls if "weights_only=True" not in args]
    assert not unsafe, unsafe


@pytest.mark.parametrize("kind, says", [
    ("text", "it is a text file"),
    ("pickled object", "pickled data that is not a plain state dict"),
    ("truncated", "truncated or damaged zip archive"),
    ("empty", "it is empty"),
])
def test_a_bad_weights_file_is_one_plain_line(tmp_path, kind, says):
    """No torch internals ('101.', 'pop from empty list', miniz text, ANSI escapes) reach the user."""
    import pickle

    import torch

    from atml.errors import WeightsError
    from atml.models import weights

    path = tmp_path / "w.pth"
    if kind == "text":
        path.write_text("hello\n")
    elif kind == "pickled object":
        path.write_bytes(pickle.dumps(Exception("not weights")))
    elif kind == "truncated":
        torch.save({"a": torch.randn(64, 64)}, path)
        path.write_bytes(path.read_bytes()[:3000])
    else:
        path.write_bytes(b"")
    with pytest.raises(WeightsError) as info:
        weights.read_state_dict(path)
    message = str(info.value)
    assert says in message and str(path) in message and "\n" not in message and "\x1b" not in message
    assert "atml reads state dicts saved with torch.save" in message
    for internal in ("101.", "pop from empty list", "PytorchStreamReader", "enforce fail", "Weights only load"):
        assert internal not in message


def test_silencing_open_clip_leaves_every_other_logger_alone(caplog):
    import logging

    from atml.models import clip

    with clip._quiet_open_clip():
        logging.getLogger("someone.else").warning("still heard")
        logging.warning("root, from atml's own code")
    assert not logging.getLogger().disabled
    assert [r.getMessage() for r in caplog.records] == ["still heard", "root, from atml's own code"]
    caplog.clear()
    clip._open_clip_model("ViT-B-32",
                          quick_gelu=True)  # open_clip warns that no pretrained weights were loaded: dropped
    assert not [r for r in caplog.records if "pretrained" in r.getMessage().lower()]
