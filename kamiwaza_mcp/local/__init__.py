"""The embedded local platform: the Kamiwaza serving API over model workers on this machine.

async with LocalPlatform(LocalPlatformSettings(state_dir=...)) as platform:
    platform.app  # ASGI app: /api/... and /runtime/models/{id}/v1/...
"""

from .platform import LocalPlatform
from .settings import LocalPlatformSettings

__all__ = ["LocalPlatform", "LocalPlatformSettings"]
