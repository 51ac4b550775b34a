"""The node API: a typed Python function becomes a node type; its signature is its schema.

    @node("core/add", category="math")
    def add(a: float, b: Annotated[float, Field(ge=0)] = 1.0) -> float:
        "Sum of two numbers."
        return a + b

Parameters annotated with a registered `SocketType` are link sockets; `int`, `float`, `str`,
`bool`, `Literal[...]`, lists and dicts are widgets (also fed by links of a compatible type);
`ListOf[T]` takes a whole list of T (see `nodegraph.lists` for when a node runs once per element);
pydantic `Field` constraints in `Annotated[...]` give bounds, validation and the JSON Schema the
browser draws. `Lazy[T]` inputs arrive as zero-argument callables evaluated only when called.
A parameter annotated `Context` receives the run context. The return annotation names the
outputs: one type (output named by `outputs=` or after the type), a NamedTuple (one output per
field) or None.
"""

from __future__ import annotations

import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from .context import Context
from .lists import BatchAxis, ListKind, ListMarker
from .types import ANY, BOOLEAN, FLOAT, INT, JSON, STRING, SocketType

NODE_ID = re.compile(r"^[a-z][a-z0-9_]*/[a-z0-9_][a-z0-9_./-]*$")


class _LazyMarker:
    def __repr__(self) -> str:
        return "Lazy"


LAZY = _LazyMarker()


class Lazy:
    """`Lazy[T]`: the node receives a zero-argument callable and upstream runs only if it is called."""

    def __class_getitem__(cls, item: Any) -> Any:
        return Annotated[item, LAZY]


@dataclass(frozen=True)
class Widget:
    """UI hints for a widget input, merged into its JSON Schema as `x-widget`.

    kind "image": an image file path the editor shows and can upload into its inputs folder; "mask": an
    image file the editor lets the user paint (brush, eraser) over the image named by the input `over`."""

    kind: Literal["number", "slider", "text", "multiline", "checkbox", "dropdown", "file", "image",
                  "mask"] | None = None
    step: float | None = None
    over: str | None = None

    def as_schema(self) -> dict[str, Any]:
        return {k: v for k, v in {"kind": self.kind, "step": self.step, "over": self.over}.items() if v is not None}


@dataclass(frozen=True)
class Choice:
    """`Annotated[SOCKET, Choice("solver")]`: pick a registered component of a kind by name.

    The input is a dropdown of every component of `kind` registered by any plugin (the JSON Schema's
    `enum`), or a link of the socket's type carrying a configured component. Either way the node
    receives the component itself: a name is looked up in the registry before the node runs.
    """

    kind: str


@dataclass(frozen=True)
class PathAccess:
    """Marks a `str` input as a path the node reads ("read") or writes ("write").

    Validation resolves such a value (symlinks included) and refuses it unless it lies inside the
    allowed roots (reads: the working folder and configured folders; writes: the output folder),
    before anything runs; see `nodegraph.confine`.
    """

    mode: Literal["read", "write"]
    weights: bool = False
    """Model weights (files of many GB): fingerprinted by names, sizes, times and safetensors headers
    instead of content, and not held to the byte bound (the file-count bound stays)."""

    def __repr__(self) -> str:
        if self.mode == "write":
            return "OutputPath"
        return "ModelPath" if self.weights else "InputPath"


READ = PathAccess("read")
WRITE = PathAccess("write")
WEIGHTS = PathAccess("read", weights=True)

InputPath = Annotated[str, READ, Widget(kind="file")]
"""A file or folder the node reads. Confined to the read roots at validation; its content
fingerprint (bounded in files and bytes) joins the node's cache key."""

ModelPath = Annotated[str, WEIGHTS, Widget(kind="file")]
"""A model file or folder the node reads (a diffusers folder, a .safetensors checkpoint). Confined like
`InputPath`; its fingerprint reads each file's name, size, modification time and safetensors header, not
its gigabytes, so validating a workflow on a 20 GB model stays instant."""

OutputPath = Annotated[str, WRITE, Widget(kind="text")]
"""A file, folder or file-name prefix the node writes, relative to the output folder. Absolute
paths, `..` escapes and symlinks leading out of the output folder are refused at validation."""

FilePath = InputPath
"""Former name of `InputPath` (kept for plugins written against it)."""

FILE = READ  # former marker name


@dataclass(frozen=True)
class Bundled:
    """`Annotated[InputPath, Bundled(resolve)]`: names of things shipped with a package.

    `resolve(value)` returns the real path of a shipped item for one of its names ("shapes",
    "all-MiniLM-L6-v2") and None for anything else. A shipped item is trusted (code, not the
    workflow, chose where it is), so it is read and fingerprinted without the root check; any other
    value is an ordinary confined path.
    """

    resolve: Callable[[str], Any]


class NodeDefinitionError(TypeError):
    """A node function whose signature cannot be turned into a node type."""


class InputValueError(ValueError):
    """A value that does not fit an input's declared type or bounds."""


@dataclass
class InputSpec:
    name: str
    socket: SocketType
    annotation: Any
    default: Any = inspect.Parameter.empty
    lazy: bool = False
    access: PathAccess | None = None
    widget_hint: dict[str, Any] = field(default_factory=dict)
    choice: str | None = None
    bundled: Bundled | None = None
    list_element: SocketType | None = None
    """The element type when the input takes a whole list (`ListOf[T]`, or a list widget such as
    `list[float]`); None for an input of one value, which runs its node once per element of a list."""
    list_socket: bool = False
    """Declared `ListOf[T]`: the node gets a list of socket values (a single linked value, a list of one)."""
    batch_axis: int | None = None
    """`BatchAxis(dim)`: list elements differing only here may run as one call (see `nodegraph.lists`)."""

    @property
    def is_file(self) -> bool:
        """A path the node reads (its fingerprint joins the cache key)."""
        return self.access is not None and self.access.mode == "read"

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    @property
    def is_widget(self) -> bool:
        return self.socket.widget or self.choice is not None

    @cached_property
    def adapter(self) -> TypeAdapter | None:
        return TypeAdapter(self.annotation) if self.is_widget else None

    def coerce(self, value: Any) -> Any:
        """Validate a widget value (literal or arriving on a link) against type and bounds."""
        if self.list_socket:
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if not self.socket.accepts_value(item):
                    raise InputValueError(f"expected a list of {self.socket.name}, got an element of type "
                                          f"{type(item).__name__}")
            return items
        if self.adapter is None or (self.choice is not None and not isinstance(value, str)):
            if not self.socket.accepts_value(value):
                raise InputValueError(f"expected {self.socket.name}, got {type(value).__name__}")
            return value
        try:
            result = self.adapter.validate_python(value, strict=False)
        except PydanticValidationError as err:
            first = err.errors()[0]
            raise InputValueError(f"{first['msg']} (got {_short_repr(value)})") from None
        problem = _coercion_problem(value, result, self.allows_non_finite)
        if problem:
            raise InputValueError(f"{problem} (got {_short_repr(value)})")
        return result

    @cached_property
    def description(self) -> str:
        """The input's own description (`Field(description=...)`), or ""."""
        return next((item.description for item in _metadata(self.annotation)
                     if isinstance(getattr(item, "description", None), str)), "")

    @cached_property
    def allows_non_finite(self) -> bool:
        """True only when the input says so: `Annotated[float, Field(allow_inf_nan=True)]`."""
        return any(getattr(item, "allow_inf_nan", None) is True for item in _metadata(self.annotation))

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {}
        if self.adapter is not None:
            try:
                schema = self.adapter.json_schema()
            except Exception:  # noqa: BLE001 - schema is a UI nicety, never fatal
                schema = {}
        schema["x-socket"] = self.socket.name
        if self.choice is not None:
            schema["x-choice"] = self.choice
        if not self.required:
            schema["default"] = self.default
        if self.lazy:
            schema["x-lazy"] = True
        if self.access is not None:
            schema["x-path"] = self.access.mode
        if self.widget_hint:
            schema["x-widget"] = self.widget_hint
        return schema


@dataclass
class OutputSpec:
    name: str
    socket: SocketType
    list_kind: ListKind | None = None
    """"list" for `ListOf[T]`, "sweep" for `SweepOf[T]`: the node returns a Python list of T."""
    batch_axis: int | None = None
    """`BatchAxis(dim)`: after a call running several elements at once, split back along `dim`."""


Migration = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class NodeType:
    """A registered node type: everything the validator, scheduler, CLI and UI need to know."""

    id: str
    version: int
    category: str
    display_name: str
    description: str
    fn: Callable[..., Any]
    inputs: dict[str, InputSpec]
    outputs: dict[str, OutputSpec]
    context_param: str | None = None
    side_effect: bool = False
    output_node: bool = False
    migrations: dict[int, Migration] = field(default_factory=dict)
    multiple_outputs: bool = False
    plugin: str = ""

    @property
    def namespace(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def file_inputs(self) -> tuple[str, ...]:
        return tuple(name for name, spec in self.inputs.items() if spec.is_file)

    @property
    def path_inputs(self) -> tuple[str, ...]:
        """Inputs declared `InputPath` or `OutputPath`: checked against the roots at validation."""
        return tuple(name for name, spec in self.inputs.items() if spec.access is not None)

    def schema(self, registry: Any = None) -> dict[str, Any]:
        """JSON description used by `nodegraph nodes --json` and the browser palette. With a registry,
        `Choice` inputs list the registered component names as their `enum`."""
        inputs = {}
        for name, spec in self.inputs.items():
            schema = spec.json_schema()
            if spec.choice is not None and registry is not None:
                schema["enum"] = registry.component_names(spec.choice)
            inputs[name] = {"type": spec.socket.name, "required": spec.required, "widget": spec.is_widget,
                            "schema": schema}
            if spec.list_element is not None:
                inputs[name]["list_of"] = spec.list_element.name
        return {
            "id": self.id,
            "version": self.version,
            "category": self.category,
            "display_name": self.display_name,
            "description": self.description,
            "plugin": self.plugin,
            "side_effect": self.side_effect,
            "output_node": self.output_node,
            "inputs": inputs,
            "outputs": {name: {"type": spec.socket.name, **({"list": spec.list_kind} if spec.list_kind else {})}
                        for name, spec in self.outputs.items()},
        }

    def migrate(self, saved_version: int, inputs: dict[str, Any]) -> dict[str, Any]:
        """Bring inputs saved by an older version up to this one, one step at a time."""
        for version in range(saved_version, self.version):
            step = self.migrations.get(version)
            if step is None:
                raise LookupError(f"no migration from version {version} to {version + 1}")
            inputs = step(dict(inputs))
        return inputs

    def outputs_as_dict(self, result: Any) -> dict[str, Any]:
        """Normalise a node's return value to {output name: value}."""
        names = list(self.outputs)
        if not names:
            return {}
        if self.multiple_outputs:
            if isinstance(result, Mapping):
                missing = [n for n in names if n not in result]
                if missing:
                    raise TypeError(f"returned no value for output(s) {missing}")
                return {n: result[n] for n in names}
            if not isinstance(result, tuple) or len(result) != len(names):
                raise TypeError(f"must return {len(names)} outputs {names}, got {_short_repr(result)}")
            return dict(zip(names, result, strict=True))
        return {names[0]: result}


def _metadata(annotation: Any) -> list[Any]:
    """Every constraint object in an annotation (pydantic's FieldInfo keeps its own in .metadata)."""
    if get_origin(annotation) is not Annotated:
        return []
    found = []
    for item in get_args(annotation)[1:]:
        found.append(item)
        found.extend(getattr(item, "metadata", []) or [])
    return found


def _coercion_problem(value: Any, result: Any, allow_non_finite: bool, depth: int = 0) -> str:
    """What lax validation let through that a workflow must not say: `true` where a number is
    expected (pydantic turns it into 1) and NaN or infinity (unless the input allows them).
    Walks the given value and the coerced one side by side."""
    if depth > 64:
        return ""
    if isinstance(value, bool) and not isinstance(result, bool):
        return f"expected a number, got the boolean {str(value).lower()}"
    if isinstance(result, float) and not allow_non_finite and not math.isfinite(result):
        return "NaN and infinite values are not allowed here"
    if isinstance(value, (list, tuple)) and isinstance(result, (list, tuple)) and len(value) == len(result):
        for item, coerced in zip(value, result, strict=True):
            problem = _coercion_problem(item, coerced, allow_non_finite, depth + 1)
            if problem:
                return problem
    elif isinstance(value, dict) and isinstance(result, dict):
        for key, item in value.items():
            if key in result:
                problem = _coercion_problem(item, result[key], allow_non_finite, depth + 1)
                if problem:
                    return problem
    return ""


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_PRIMITIVES: dict[Any, SocketType] = {int: INT, float: FLOAT, str: STRING, bool: BOOLEAN}
_WIDGET_PYTHON_TYPES: dict[str, Any] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def _socket_for(annotation: Any, where: str) -> tuple[SocketType, Any, bool, PathAccess | None, dict[str, Any]]:
    """Map an annotation to (socket, annotation for validation, lazy, path access, widget hint).
    A `Choice` is returned in the hint under the key "choice", a `Bundled` under "bundled", a list
    marker's kind under "list" and a `BatchAxis` dimension under "batch_axis"."""
    lazy = False
    access: PathAccess | None = None
    hint: dict[str, Any] = {}
    socket: SocketType | None = None
    base = annotation
    if get_origin(annotation) is Annotated:
        base, *meta = get_args(annotation)
        kept = []
        for item in meta:
            if item is LAZY:
                lazy = True
            elif isinstance(item, PathAccess):
                access = item
            elif isinstance(item, Bundled):
                hint["bundled"] = item
            elif isinstance(item, Widget):
                hint.update(item.as_schema())
            elif isinstance(item, Choice):
                hint["choice"] = item.kind
            elif isinstance(item, ListMarker):
                hint["list"] = item.kind
            elif isinstance(item, BatchAxis):
                hint["batch_axis"] = item.dim
            elif isinstance(item, SocketType):
                socket = item
            else:
                kept.append(item)
        if socket is None and get_origin(base) is Annotated:
            inner = _socket_for(base, where)
            socket, base = inner[0], inner[1]
            lazy, access = lazy or inner[2], access or inner[3]
            hint = {**inner[4], **hint}
        annotation = Annotated[(base, *kept)] if kept else base
    if isinstance(base, SocketType):
        socket = base
        annotation = str if "choice" in hint else _WIDGET_PYTHON_TYPES.get(base.name, Any)
    optional = [a for a in get_args(base) if a is not type(None)] if _is_union(base) else []
    if access is None and len(optional) == 1 and get_origin(optional[0]) is Annotated:
        # `ModelPath | None = None`: an optional path keeps its access (confined when set, skipped when None)
        inner = _socket_for(optional[0], where)
        access, hint = inner[3], {**inner[4], **hint}
    if socket is None:
        socket = _primitive_socket(base, where)
    if access is not None and socket is not STRING:
        raise NodeDefinitionError(f"{where}: {access!r} must annotate a str input")
    return socket, annotation, lazy, access, hint


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (typing.Union, types.UnionType)


def _list_widget_element(annotation: Any, where: str) -> SocketType | None:
    """The element socket of a list or tuple widget (`list[float]` -> FLOAT, `tuple[int, ...]` -> INT,
    nested or mixed items -> JSON, unconstrained items -> ANY); None for any other annotation."""
    base = annotation
    while get_origin(base) is Annotated:
        base = get_args(base)[0]
    origin = get_origin(base)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        members = [a for a in get_args(base) if a is not type(None)]
        return _list_widget_element(members[0], where) if len(members) == 1 else None
    if base in (list, tuple):
        return ANY
    if origin not in (list, tuple):
        return None
    items = [a for a in get_args(base) if a is not Ellipsis]
    if not items:
        return ANY
    if len({repr(a) for a in items}) > 1:
        return JSON
    try:
        return _socket_for(items[0], where)[0]
    except NodeDefinitionError:
        return ANY


def _primitive_socket(base: Any, where: str) -> SocketType:
    if base in _PRIMITIVES:
        return _PRIMITIVES[base]
    origin = get_origin(base)
    if origin is Literal:
        choices = get_args(base)
        if all(isinstance(c, str) for c in choices):
            return STRING
        if all(isinstance(c, int) and not isinstance(c, bool) for c in choices):
            return INT
    if origin in (list, tuple, dict) or base in (list, tuple, dict):
        return JSON
    if _is_union(base):
        members = [a for a in get_args(base) if a is not type(None)]
        if len(members) == 1:
            return _socket_for(members[0], where)[0]
    raise NodeDefinitionError(
        f"{where}: annotation {base!r} is neither a SocketType nor a widget type "
        "(int, float, str, bool, Literal, list, dict)"
    )


def _parse_outputs(fn: Callable[..., Any], hints: dict[str, Any], names: tuple[str, ...] | None,
                   where: str) -> tuple[dict[str, OutputSpec], bool]:
    ret = hints.get("return", inspect.Signature.empty)
    if ret is None or ret is type(None):
        return {}, False
    if ret is inspect.Signature.empty:
        raise NodeDefinitionError(f"{where}: add a return annotation (None for no outputs)")
    if isinstance(ret, type) and issubclass(ret, tuple) and hasattr(ret, "__annotations__") \
            and hasattr(ret, "_fields"):
        field_hints = typing.get_type_hints(ret, include_extras=True)
        outs = {n: _output_spec(n, field_hints[n], f"{where} output {n}") for n in ret._fields}
        return outs, True
    if names and len(names) != 1:
        raise NodeDefinitionError(f"{where}: one return type but outputs={names}")
    spec = _output_spec("", ret, f"{where} return")
    spec.name = names[0] if names else spec.socket.name.lower()
    return {spec.name: spec}, False


def _output_spec(name: str, annotation: Any, where: str) -> OutputSpec:
    socket, _, lazy, access, hint = _socket_for(annotation, where)
    if lazy or access is not None or "choice" in hint:
        raise NodeDefinitionError(f"{where}: Lazy, paths and Choice describe inputs, not outputs")
    return OutputSpec(name, socket, hint.get("list"), hint.get("batch_axis"))


def node(
    id: str,
    *,
    version: int = 1,
    category: str = "misc",
    display_name: str | None = None,
    outputs: tuple[str, ...] | None = None,
    side_effect: bool = False,
    output_node: bool = False,
    migrations: dict[int, Migration] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a node type. The function stays callable as plain Python; `fn.node_type` holds it."""
    if not NODE_ID.match(id):
        raise NodeDefinitionError(f"node id {id!r} must look like 'namespace/name' (lower case)")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.node_type = build_node_type(  # type: ignore[attr-defined]
            fn, id, version=version, category=category, display_name=display_name, outputs=outputs,
            side_effect=side_effect, output_node=output_node, migrations=migrations or {},
        )
        return fn

    return decorate


def build_node_type(fn: Callable[..., Any], id: str, *, version: int, category: str,
                    display_name: str | None, outputs: tuple[str, ...] | None, side_effect: bool,
                    output_node: bool, migrations: dict[int, Migration]) -> NodeType:
    where = f"node {id!r}"
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as err:  # noqa: BLE001
        raise NodeDefinitionError(f"{where}: cannot resolve annotations: {err}") from err
    inputs: dict[str, InputSpec] = {}
    context_param = None
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise NodeDefinitionError(f"{where}: *args/**kwargs are not allowed (inputs need names)")
        annotation = hints.get(name, inspect.Parameter.empty)
        if annotation is Context:
            context_param = name
            continue
        if annotation is inspect.Parameter.empty:
            raise NodeDefinitionError(f"{where}: input {name!r} needs a type annotation")
        socket, validation_type, lazy, access, hint = _socket_for(annotation, f"{where} input {name!r}")
        choice = hint.pop("choice", None)
        bundled = hint.pop("bundled", None)
        list_kind = hint.pop("list", None)
        batch_axis = hint.pop("batch_axis", None)
        if bundled is not None and (access is None or access.mode != "read"):
            raise NodeDefinitionError(f"{where} input {name!r}: Bundled(...) goes with InputPath")
        if list_kind is not None and (list_kind != "list" or socket.widget or choice is not None or lazy):
            raise NodeDefinitionError(f"{where} input {name!r}: ListOf[T] takes a socket type T (write list[float] "
                                      "for a list widget); sweeps are outputs only")
        element = socket if list_kind is not None else (
            _list_widget_element(validation_type, f"{where} input {name!r}") if socket is JSON else None)
        spec = InputSpec(name, socket, validation_type, param.default, lazy, access, hint, choice, bundled,
                         element, list_kind is not None, batch_axis)
        if not spec.required and spec.is_widget and spec.default is not None:
            try:
                spec.coerce(spec.default)
            except InputValueError as err:
                raise NodeDefinitionError(f"{where}: default of {name!r} is invalid: {err}") from None
        inputs[name] = spec
    for name, spec in inputs.items():
        over = spec.widget_hint.get("over") if spec.widget_hint else None
        if over is not None and over not in inputs:
            raise NodeDefinitionError(f"{where} input {name!r}: Widget(over={over!r}) names no input of this node")
    outs, multiple = _parse_outputs(fn, hints, outputs, where)
    doc = inspect.getdoc(fn) or ""
    return NodeType(
        id=id, version=version, category=category,
        display_name=display_name or id.split("/", 1)[1].replace("_", " ").title(),
        description=doc, fn=fn, inputs=inputs, outputs=outs, context_param=context_param,
        side_effect=side_effect, output_node=output_node or side_effect, migrations=migrations,
        multiple_outputs=multiple,
    )
