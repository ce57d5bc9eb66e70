"""What route functions share: the region index (loaded once per process, on first use)."""

from __future__ import annotations

import threading

from starlette.requests import Request

from dispatcher.regions import RegionIndex

_loading = threading.Lock()


def regions(request: Request) -> RegionIndex:
    """The region index (about a second to load, so only when a page first needs it)."""
    state = request.app.state
    if state.regions is None:
        with _loading:
            if state.regions is None:
                state.regions = RegionIndex.load()
    return state.regions
