"""Named weak-network profiles (``profiles.toml``) and the cellular traces they replay.

``load_profile("3g")`` returns a :class:`Profile` whose ``downlink`` and ``uplink`` are
:class:`~sim.netem.LinkConfig`; ``list_profiles()`` names the built-in ones. A path to a
user TOML file with the same schema works wherever a name does (see :mod:`.loader`).
"""

from __future__ import annotations

from .loader import DIRECTIONS, Profile, list_profiles, load_profile, load_profiles

__all__ = ["DIRECTIONS", "Profile", "list_profiles", "load_profile", "load_profiles"]
