"""Run ``atml bench`` for one experiment of each family and collect the figures in one JSON file.

    python scripts/benches.py --json benchmarks/bench-cpu.json     # then: python scripts/update_readme.py

Each bench times atml's path and the naive one in one process on the same data, seed and
order (see ``atml bench --help``); this only runs them in turn, with the settings README shows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import torch

from atml import cli, runtime

BENCHES = (
    ["resnet.head", "--preset", "demo", "--set", "epochs=10"],
    ["vit.pooling", "--preset", "demo"],
    ["clip.zeroshot", "--preset", "demo"],
    ["vae.train", "--preset", "demo"],
    ["gan.dcgan", "--preset", "demo", "--set", "epochs=5"],
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    benches = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, bench in enumerate(BENCHES):
            out = Path(tmp) / f"{i}.json"
            code = cli.main(["bench", *bench, "--device", args.device, "--json", str(out)])
            if code != 0:
                return code
            benches.append(json.loads(out.read_text()))
    device = runtime.select_device(args.device)
    report = {"device_name": runtime.environment(device, 0)["device_name"], "torch": torch.__version__,
              "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"), "benches": benches}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
