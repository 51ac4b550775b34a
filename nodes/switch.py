"""Control flow: a switch whose inputs are lazy, so only the chosen branch runs."""

from nodegraph import ANY, Lazy, node


@node("core/switch", category="control", display_name="Switch")
def switch(condition: bool, if_true: Lazy[ANY], if_false: Lazy[ANY]) -> ANY:
    """Pass on `if_true` or `if_false`; the branch not taken is never computed."""
    return if_true() if condition else if_false()
