"""The baseline of the serving benchmark: the transformers engine generating in a process of its own.

Run as `python bench/engine_probe.py MODEL_DIR`. The probe loads the model with
`TransformersEngine` as an engine worker does (device "auto", the same
environment), prints `ready`, and then runs one generation for each JSON line
on stdin, such as `{"prompt": "...", "max_tokens": 128, "temperature": 0}`. It
writes one JSON line for each: `seconds` (wall time of `generate`) and
`completion_tokens`. It exits when stdin closes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from kamiwaza_mcp.local.engines import GenerationRequest, create_engine


def main() -> None:
    engine = create_engine("transformers", Path(sys.argv[1]), device="auto")
    engine.load()
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        settings = json.loads(line)
        request = GenerationRequest(
            prompt=settings["prompt"], max_tokens=settings["max_tokens"], temperature=settings["temperature"]
        )
        started = time.perf_counter()
        result = engine.generate(request)
        seconds = time.perf_counter() - started
        print(json.dumps({"seconds": seconds, "completion_tokens": result.completion_tokens}), flush=True)


if __name__ == "__main__":
    main()
