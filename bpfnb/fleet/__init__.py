"""One BPF object on many hosts: compile once here, load on every ipyparallel engine.

``fleet = bpfnb.Fleet()`` (an ``ipyparallel.Client`` by default), ``fo =
fleet.load(source)``, then ``fo.maps.X.to_df()`` (one frame, a ``host`` column),
``fo.bss.v`` (a Series by host), ``fo.status`` and ``fo.destroy()``. The engine side
is bpfnb/fleet/engine.py.
"""

from .client import EngineDied, Fleet, Reply
from .object import FleetError, FleetMap, FleetObject

__all__ = ["Fleet", "FleetObject", "FleetMap", "FleetError", "EngineDied", "Reply"]
