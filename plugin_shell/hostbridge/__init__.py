"""The JSON host bridge: one way in for every scriptable DAW (`sa3 host REQUEST.json`).

A DAW script describes its timeline (rate, tempo map, meters, song end, selection, track, clip) and an
action; the bridge runs `PluginShell` on the engine and replies with what to place, sample-exact.
`docs/host-bridge.md` is the contract; `request` checks it, `host` is the `HostContext` it fills,
`run` runs it.
"""

from .request import SCHEMA_VERSION, Request, RequestError, parse
from .run import handle

__all__ = ["SCHEMA_VERSION", "Request", "RequestError", "handle", "parse"]
