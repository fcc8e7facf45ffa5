"""Time the steps of kamiwaza-mcp's start-up in one fresh process, and print them as one JSON line.

Run as `python bench/startup_phases.py STATE_DIR`. The steps are those the
server takes before its `initialize` result. It imports the MCP SDK, then the
server and CLI modules, and builds the server, which registers every tool. Then it
imports the embedded local platform and starts it on STATE_DIR, with an empty
models folder.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    state_dir = Path(sys.argv[1])
    marks = [time.perf_counter()]

    import mcp.server.mcpserver  # noqa: F401 - the import is what is timed

    marks.append(time.perf_counter())
    import kamiwaza_mcp.cli  # noqa: F401
    from kamiwaza_mcp.config import ServerSettings
    from kamiwaza_mcp.server import build_server

    marks.append(time.perf_counter())
    build_server(ServerSettings.model_validate({"state_dir": state_dir, "models_dir": state_dir / "models"}))
    marks.append(time.perf_counter())
    from kamiwaza_mcp.local import LocalPlatform, LocalPlatformSettings

    marks.append(time.perf_counter())

    import anyio

    async def start_platform() -> None:
        settings = LocalPlatformSettings(
            state_dir=state_dir, models_dir=state_dir / "models", scan_hf_cache=False
        )
        async with LocalPlatform(settings):
            marks.append(time.perf_counter())

    anyio.run(start_platform)
    names = (
        "import the MCP SDK",
        "import the server",
        "build the server",
        "import the platform",
        "start the platform",
    )
    # The platform start includes creating the event loop, as the server's stdio run does.
    print(
        json.dumps({name: end - start for name, start, end in zip(names, marks[:-1], marks[1:], strict=True)})
    )


if __name__ == "__main__":
    main()
