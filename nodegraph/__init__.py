"""nodegraph: typed node graphs for conditional generative models.

This module is the public API for users and plugin authors; everything imported here is kept
compatible within a plugin API version (`API_VERSION`).
"""

from .atomic import atomic_path, atomic_write_bytes, atomic_write_text
from .cache import LRUCache
from .codecs import CODEC_COMPONENT, Array, Codec, Decoder, Encoder, NotStorable
from .confine import PathPolicy, PathRefused
from .context import Cancelled, CancelToken, Context
from .disk_cache import DiskCache, default_disk_cache_dir
from .events import Event
from .hooks import hookimpl
from .lists import BatchAxis, ElementCounts, ListOf, SweepOf, batch_tiles
from .node import Bundled, Choice, FilePath, InputPath, Lazy, ModelPath, NodeType, OutputPath, Widget, node
from .plugins import API_VERSION, PluginLoader, default_registry, load_registry
from .registry import Registry, RegistryError
from .session import NodeFailed, RunCancelled, RunResult, Session, resolve_device, run
from .settings import SETTING_COMPONENT, SettingError, check_settings, positive_env_number
from .types import ANY, BOOLEAN, FLOAT, INT, JSON, STRING, SocketType, can_connect
from .validate import Plan, Problem, WorkflowInvalid, compile_workflow, validate
from .workflow import Link, Workflow, WorkflowFormatError

__version__ = "0.1.0"

__all__ = [
    "ANY", "API_VERSION", "Array", "BOOLEAN", "BatchAxis", "CODEC_COMPONENT", "Codec", "Decoder", "DiskCache",
    "ElementCounts", "Encoder", "ListOf", "NotStorable", "SweepOf", "batch_tiles", "default_disk_cache_dir",
    "Bundled", "InputPath", "ModelPath", "OutputPath", "PathPolicy", "PathRefused",
    "FLOAT", "INT", "JSON", "STRING", "CancelToken", "Cancelled", "Choice",
    "Context", "Event", "FilePath", "LRUCache", "Lazy", "Link", "NodeFailed", "NodeType", "Plan",
    "PluginLoader", "Problem", "Registry", "RegistryError", "RunCancelled", "RunResult", "SETTING_COMPONENT",
    "Session", "SettingError",
    "SocketType", "Widget", "Workflow", "WorkflowFormatError", "WorkflowInvalid", "atomic_path",
    "atomic_write_bytes", "atomic_write_text", "can_connect",
    "check_settings", "compile_workflow", "default_registry", "hookimpl", "load_registry", "node",
    "positive_env_number", "resolve_device", "run",
    "validate",
]
