"""Dashboard views of a replayed object: bpfnb.live's own, which read a replay's maps,
globals and streams as they read a live object's (bpfnb/live/sources.py), at the
replay clock, and stop when the replay is destroyed."""

from __future__ import annotations

from ..live.pick import object_views, view_of

__all__ = ["object_views", "view_of"]
