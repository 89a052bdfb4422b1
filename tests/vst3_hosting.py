"""Helpers for the VST3 plugin tests: hosting the built SA3.vst3 in pedalboard, reading its status
and setting its text through its state (plugin_shell.vst3_host), test audio."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pedalboard

from plugin_shell.vst3_host import PluginState

RATE = 44100
WAIT_S = 180.0  # an upper bound for the engine to answer, never a timing assertion


def load(path) -> pedalboard.VST3Plugin:
    return pedalboard.load_plugin(str(path))


def state(plugin) -> PluginState:
    return PluginState.from_host_bytes(plugin.raw_state)


def set_text(plugin, **fields) -> None:
    """Text settings (prompt, results_folder, ...) the way a host restores a session."""
    plugin.raw_state = state(plugin).set_text(**fields).to_host_bytes()


def wait_status(read_status: Callable[[], str], predicate: Callable[[str], bool], what: str,
                timeout: float = WAIT_S) -> str:
    """Polls the plugin's status line until `predicate` holds (the bound is a deadline, not a check)."""
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = read_status()
        if predicate(status):
            return status
        time.sleep(0.05)
    raise AssertionError(f"the plugin never reported {what}; its status: {status!r}")


def wait_for(plugin, predicate: Callable[[str], bool], what: str, timeout: float = WAIT_S) -> str:
    return wait_status(lambda: state(plugin).status, predicate, what, timeout)


def noise(seconds: float, seed: int = 0, rate: int = RATE) -> np.ndarray:
    frames = round(seconds * rate)
    return (np.random.default_rng(seed).standard_normal((2, frames)) * 0.1).astype(np.float32)


TICK_S = 0.1  # a few of the plugin engine thread's 20 ms polls, so it sees a trigger go low again


def pulse(plugin, name: str, predicate: Callable[[str], bool], what: str, timeout: float = WAIT_S) -> str:
    """Raises a trigger parameter (Run, Cancel, New seed, Start engine), waits for the status it
    leads to, and lowers it again for the next rising edge."""
    setattr(plugin, name, True)
    try:
        return wait_for(plugin, predicate, what, timeout)
    finally:
        setattr(plugin, name, False)
        time.sleep(TICK_S)
