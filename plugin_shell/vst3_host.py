"""The built SA3 VST3 seen from Python hosts (pedalboard, DawDreamer): where the build puts it, and
its saved state, read and edited.

The plugin's text settings (prompt, prompt template, model, Python, results folder), its result files
and its status line are in its state, not in parameters (VST3 parameters are numbers). A host hands
that state around as bytes: pedalboard's ``plugin.raw_state``, DawDreamer's ``save_state(path)`` file,
a DAW's session. Those bytes are JUCE's VST3 host envelope: ``VC2!`` + size + XML ``<VST3PluginState>``
whose ``<IComponent>`` holds the plugin's own state in JUCE's base64 dialect; the plugin's own state is
``VC2!`` + size + ``<SA3State>`` XML (parameters and ``<SA3Text>``), then JUCE's private trailer.
``PluginState`` reads and rewrites exactly that, so a host can set the prompt by restoring a state.
"""

from __future__ import annotations

import os
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD_DIR_ENV = "SA3_VST3_BUILD_DIR"
DEFAULT_BUILD_DIR = REPO / "build" / "vst3"


def build_dir() -> Path:
    return Path(os.environ.get(BUILD_DIR_ENV) or DEFAULT_BUILD_DIR)


def plugin_path() -> Path:
    """The built bundle: ``<build dir>/SA3_artefacts/Release/VST3/SA3.vst3``."""
    return build_dir() / "SA3_artefacts" / "Release" / "VST3" / "SA3.vst3"


def protocol_tool_path() -> Path:
    return build_dir() / "sa3_protocol_tool_artefacts" / "Release" / "sa3_protocol_tool"


# --- JUCE's binary XML and base64 dialect --------------------------------------------------------

_MAGIC = 0x21324356  # "VC2!" little-endian: AudioProcessor::copyXmlToBinary
_JUCE64 = ".ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+"


def xml_from_binary(data: bytes) -> tuple[ET.Element, bytes]:
    """(the XML, the bytes after it) of ``copyXmlToBinary`` output."""
    magic, size = struct.unpack_from("<II", data)
    if magic != _MAGIC:
        raise ValueError("not JUCE binary XML (no VC2! header)")
    text = data[8 : 8 + size].rstrip(b"\0")
    return ET.fromstring(text), data[8 + size :]


def xml_to_binary(element: ET.Element, trailer: bytes = b"") -> bytes:
    text = ET.tostring(element, encoding="utf-8") + b"\0"
    return struct.pack("<II", _MAGIC, len(text)) + text + trailer


def juce_base64_decode(text: str) -> bytes:
    size_text, _, chars = text.strip().partition(".")
    value = 0
    for i, char in enumerate(chars):
        value |= _JUCE64.index(char) << (6 * i)
    size = int(size_text)
    return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def juce_base64_encode(data: bytes) -> str:
    value = int.from_bytes(data, "little")
    count = (len(data) * 8 + 5) // 6
    return f"{len(data)}." + "".join(_JUCE64[(value >> (6 * i)) & 63] for i in range(count))


# --- the plugin's state ---------------------------------------------------------------------------


@dataclass
class PluginState:
    """The SA3 plugin's state inside a host's state bytes."""

    host: ET.Element  # <VST3PluginState>
    plugin: ET.Element  # <SA3State>
    trailer: bytes  # JUCE's private data after the plugin's state

    @classmethod
    def from_host_bytes(cls, data: bytes) -> PluginState:
        host, _ = xml_from_binary(data)
        component = host.find("IComponent")
        if component is None:
            raise ValueError("no IComponent state: not a VST3 plugin's state")
        plugin, trailer = xml_from_binary(juce_base64_decode(component.text or ""))
        if plugin.tag != "SA3State":
            raise ValueError(f"not the SA3 plugin's state (root element {plugin.tag})")
        return cls(host, plugin, trailer)

    def to_host_bytes(self) -> bytes:
        self.host.find("IComponent").text = juce_base64_encode(xml_to_binary(self.plugin, self.trailer))
        return xml_to_binary(self.host)

    @property
    def text(self) -> ET.Element:
        return self.plugin.find("SA3Text")

    @property
    def status(self) -> str:
        return self.text.get("status", "")

    @property
    def notice(self) -> str:
        """A problem kept in view while the status moves on (a missing result file)."""
        return self.text.get("notice", "")

    @property
    def engine(self) -> str:
        """Which engine the plugin uses: endpoint, local or remote, CURVE, its device once connected."""
        return self.text.get("engine", "")

    @property
    def results(self) -> list[Path]:
        return [Path(e.get("path")) for e in self.text.findall("result")]

    def parameter(self, param_id: str) -> float:
        for element in self.plugin.iter("PARAM"):
            if element.get("id") == param_id:
                return float(element.get("value"))
        raise KeyError(param_id)

    def set_text(self, **fields: str) -> PluginState:
        """Sets text settings: prompt, template, model, python, results_folder."""
        for name, value in fields.items():
            self.text.set(name, str(value))
        return self

    def set_results(self, paths: list[str | os.PathLike]) -> PluginState:
        for element in self.text.findall("result"):
            self.text.remove(element)
        for path in paths:
            ET.SubElement(self.text, "result", path=str(path))
        return self
