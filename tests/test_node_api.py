from typing import Annotated, NamedTuple

import pytest
from pydantic import Field

from nodegraph import ANY, FLOAT, INT, Context, Lazy, Registry, RegistryError, SocketType, can_connect, node
from nodegraph.node import InputValueError, NodeDefinitionError

from . import engine_nodes


def test_signature_becomes_schema():
    t = engine_nodes.count.node_type
    assert t.id == "test/count" and t.version == 1 and t.category == "test"
    assert t.description == "An integer."
    n = t.inputs["n"]
    assert n.socket.name == "INT" and not n.required and n.default == 3
    schema = n.json_schema()
    assert schema["minimum"] == 0 and schema["maximum"] == 100 and schema["default"] == 3
    assert t.inputs["mode"].json_schema()["enum"] == ["up", "down"]
    assert list(t.outputs) == ["int"] and t.outputs["int"].socket.name == "INT"


def test_required_inputs_and_named_outputs():
    t = engine_nodes.split.node_type
    assert t.inputs["value"].required
    assert {name: o.socket.name for name, o in t.outputs.items()} == {"whole": "INT", "fraction": "FLOAT"}
    assert t.outputs_as_dict((2, 0.5)) == {"whole": 2, "fraction": 0.5}
    with pytest.raises(TypeError, match="must return 2 outputs"):
        t.outputs_as_dict(3)


def test_widget_coercion_enforces_bounds():
    spec = engine_nodes.count.node_type.inputs["n"]
    assert spec.coerce("7") == 7
    with pytest.raises(InputValueError, match="less than or equal to 100"):
        spec.coerce(101)
    with pytest.raises(InputValueError):
        engine_nodes.count.node_type.inputs["mode"].coerce("sideways")


def test_context_lazy_and_flags():
    slow = engine_nodes.slow.node_type
    assert slow.context_param == "ctx" and "ctx" not in slow.inputs
    choose = engine_nodes.choose.node_type
    assert choose.inputs["yes"].lazy and not choose.inputs["condition"].lazy
    assert engine_nodes.record.node_type.side_effect and engine_nodes.record.node_type.output_node
    assert engine_nodes.read_file.node_type.file_inputs == ("path",)


def test_decorated_function_stays_plain_python():
    assert engine_nodes.add(2.0, 3.0) == 5.0


def test_bad_definitions_are_refused():
    with pytest.raises(NodeDefinitionError, match="namespace/name"):
        node("NoNamespace")
    with pytest.raises(NodeDefinitionError, match="needs a type annotation"):
        @node("test/bad")
        def bad(x) -> int:
            return 1
    with pytest.raises(NodeDefinitionError, match="return annotation"):
        @node("test/bad2")
        def bad2(x: int):
            return 1
    with pytest.raises(NodeDefinitionError, match="default of 'x' is invalid"):
        @node("test/bad3")
        def bad3(x: Annotated[int, Field(ge=5)] = 1) -> int:
            return x
    with pytest.raises(NodeDefinitionError, match="neither a SocketType"):
        @node("test/bad4")
        def bad4(x: Context | set) -> int:
            return 1


def test_socket_subtyping():
    backbone = SocketType("BACKBONE_T")
    unet = SocketType("UNET_T", parent=backbone)
    assert can_connect(unet, backbone)
    assert not can_connect(backbone, unet)
    assert can_connect(INT, FLOAT) and not can_connect(FLOAT, INT)
    assert can_connect(ANY, unet) and can_connect(unet, ANY)
    assert unet.lineage() == ["UNET_T", "BACKBONE_T"]


def test_registry_rejects_clashes_and_unregistered_types():
    reg = Registry()
    reg.registrar("alpha").add_node(engine_nodes.add)
    with pytest.raises(RegistryError, match="'alpha' and by 'beta'"):
        reg.registrar("beta").add_node(engine_nodes.add)

    @node("core/sneaky")
    def sneaky() -> int:
        return 1

    with pytest.raises(RegistryError, match="reserved"):
        reg.registrar("beta").add_node(sneaky)

    orphan = SocketType("ORPHAN")

    @node("test/orphan")
    def uses_orphan(x: orphan) -> int:
        return 1

    with pytest.raises(RegistryError, match="unregistered socket type ORPHAN"):
        reg.add_node(uses_orphan)


def test_multiple_outputs_from_namedtuple_with_socket_fields():
    class Pair(NamedTuple):
        left: INT
        right: INT

    @node("test/pair")
    def pair(a: int) -> Pair:
        return Pair(a, a + 1)

    assert pair.node_type.outputs_as_dict(pair(1)) == {"left": 1, "right": 2}


def test_lazy_input_is_marked_lazy_and_keeps_its_socket():
    @node("test/lazy_int")
    def lazy_int(a: Lazy[INT], b: INT) -> INT:
        return a() + b

    inputs = lazy_int.node_type.inputs
    assert inputs["a"].lazy and inputs["a"].socket is INT
    assert not inputs["b"].lazy and inputs["b"].socket is INT
    assert lazy_int.node_type.schema()["inputs"]["a"]["schema"].get("x-lazy") is True


def test_image_and_mask_widget_hints_reach_the_schema_and_over_must_name_an_input():
    from nodegraph import InputPath, Widget

    @node("test/painted")
    def painted(path: Annotated[InputPath, Widget(kind="image")],
                mask: Annotated[InputPath | None, Widget(kind="mask", over="path")] = None) -> None:
        """An image and a mask painted over it."""

    inputs = painted.node_type.schema()["inputs"]
    assert inputs["path"]["schema"]["x-widget"] == {"kind": "image"}
    assert inputs["mask"]["schema"]["x-widget"] == {"kind": "mask", "over": "path"}
    assert inputs["mask"]["schema"]["x-path"] == "read"  # still a confined read path
    with pytest.raises(NodeDefinitionError, match="over='picture'"):
        @node("test/misnamed")
        def misnamed(path: InputPath, mask: Annotated[InputPath, Widget(kind="mask", over="picture")]) -> None:
            """The mask names an input that does not exist."""
