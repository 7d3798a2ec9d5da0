"""The web console (``txc console``): transactions, their timelines, operator actions and
chaos runs, served by Starlette from server-rendered templates. Needs the extra
``console``."""

from ._app import create_app
from ._state import Settings

__all__ = ["Settings", "create_app"]
