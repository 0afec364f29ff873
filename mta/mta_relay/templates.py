"""Template substitution for the HTTP injection API: the Jinja dialect KumoMTA renders with (minijinja), on
Jinja2's ImmutableSandboxedEnvironment, with a fixed budget per render. Pure.

A template is compiled once per request (``compile_template``: syntax and the refused constructs give a
``TemplateRefused``, which the caller turns into a 400 naming the field) and rendered once per recipient
(``Template.render``: a ``RenderError`` fails that recipient only). The request's client writes the
template, so nothing here trusts it:

- no loader (no file system): ``include``, ``import``, ``extends`` are refused at compile time, as are
  ``macro``, ``call`` blocks and recursive loops (unbounded recursion) and any attribute or item whose name
  starts with ``_`` (the sandbox would render those as an empty string; a refusal says why);
- only the filters and globals listed below exist (an unknown filter is a compile error), and method calls
  are limited to a short list of ``str`` and ``dict`` read-only methods;
- every value a template builds (``+``, ``*``, ``%``, ``~``, ``join``, ``replace``, padding filters) is
  checked against the output limit *before* it is built, integer arguments are capped, every loop draws
  from one iteration budget per render, and the output stops at the limit.

Undefined variables behave as in KumoMTA's default (minijinja's lenient mode, Jinja2's ``Undefined``):
they print as nothing and iterate as empty; an attribute of an undefined value is an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from jinja2 import TemplateError, nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS
from jinja2.runtime import LoopContext, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Joiner
from jinja2.visitor import NodeTransformer

MAX_LOOP_ITERATIONS = 10_000  # per render, all loops together
MAX_INT_ARGUMENT = 10_000  # widths, counts, batch sizes a filter or method may be given
_BIG_FORMAT_WIDTH = re.compile(r"%[-#0 +]*(\*|\d{5,})|%[-#0 +]*\d*\.(\*|\d{5,})|\{[^{}]*\d{5,}[^{}]*\}")

_FILTERS = ("abs", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape", "first",
            "float", "forceescape", "groupby", "indent", "int", "items", "join", "last", "length", "list",
            "lower", "map", "max", "min", "reject", "rejectattr", "replace", "reverse", "round", "safe",
            "select", "selectattr", "sort", "string", "striptags", "sum", "title", "tojson", "trim",
            "truncate", "unique", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "batch", "slice")
_METHODS: dict[type[object], frozenset[str]] = {
    str: frozenset({"capitalize", "casefold", "count", "endswith", "find", "isalnum", "isalpha", "isdigit",
                    "islower", "isspace", "istitle", "isupper", "lower", "lstrip", "partition", "rfind",
                    "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip",
                    "swapcase", "title", "upper"}),
    dict: frozenset({"get", "items", "keys", "values"})}


class TemplateRefused(ValueError):
    """The template cannot be compiled or uses something refused here (the request gets a 400)."""


class RenderError(ValueError):
    """Rendering for one recipient failed (that recipient fails). The text names no substitution value."""


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.iterations = 0

    def loop(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self.iterations += 1
            if self.iterations > MAX_LOOP_ITERATIONS:
                raise SecurityError(f"more than {MAX_LOOP_ITERATIONS} loop iterations")
            yield item

    def size(self, length: int) -> None:
        if length > self.limit:
            raise SecurityError(f"a value would exceed {self.limit} characters")


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple | dict) else len(str(value))


def _int_arguments(args: Iterable[Any]) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_INT_ARGUMENT:
            raise SecurityError(f"a number argument above {MAX_INT_ARGUMENT}")


def _format_string(fmt: Any) -> None:
    if isinstance(fmt, str) and _BIG_FORMAT_WIDTH.search(fmt):
        raise SecurityError("a format width or precision above 4 digits")


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, autoescape: bool) -> None:
        super().__init__(autoescape=autoescape, keep_trailing_newline=True)
        self.filters = {name: self._guarded_filter(name, FILTERS[name]) for name in _FILTERS}
        self.globals = {"range": self._range, "dict": dict, "cycler": Cycler, "joiner": Joiner}

    def _guarded_filter(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            _int_arguments([*args, *kwargs.values()])
            budget = _CURRENT.budget
            values = [a for a in args if not hasattr(a, "environment")]  # skip the passed environment
            if name == "join" and values:
                items = list(values[0])
                separator = values[1] if len(values) > 1 else kwargs.get("d", "")
                budget.size(sum(_length(i) for i in items) + len(items) * _length(separator))
                return function(*(a if a is not values[0] else items for a in args), **kwargs)
            if name == "replace" and len(values) >= 3:
                text, old, new = (str(v) for v in values[:3])
                budget.size(len(text) + (text.count(old) + (1 if not old else 0)) * len(new))
            if name in ("center", "indent", "wordwrap") and values:
                budget.size(_length(values[0]) * 2 + MAX_INT_ARGUMENT)
            return function(*args, **kwargs)

        for attribute in ("jinja_pass_arg",):  # keep what Jinja reads to pass the environment or context
            if hasattr(function, attribute):
                setattr(guarded, attribute, getattr(function, attribute))
        return guarded

    @staticmethod
    def _range(*args: int) -> range:
        _int_arguments(args)
        return range(*args)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _CURRENT.budget
        if operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            budget.size(len(left) + len(right))
        elif operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(count, int):
                    budget.size(len(seq) * max(count, 0))
            if isinstance(left, int) and isinstance(right, int):
                budget.size((left.bit_length() + right.bit_length()) // 3)
        elif operator == "**":
            if isinstance(right, int) and (right > 4096 or abs(left if isinstance(left, int) else 2)
                                           .bit_length() * max(right, 0) > 16384):
                raise SecurityError("power too large")
        elif operator == "%" and isinstance(left, str):
            _format_string(left)
            budget.size(len(left) + _length(right))
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", type(__obj).__name__)
        if type(owner) in _METHODS:
            if name not in _METHODS[type(owner)]:
                raise SecurityError(f"method {name!r} is not available in templates")
        elif not (isinstance(__obj, Undefined | Joiner) or __obj in __self.globals.values()
                  or isinstance(owner, LoopContext | Cycler | Joiner)):
            raise SecurityError(f"{name!r} cannot be called in templates")
        _int_arguments([*args, *kwargs.values()])
        return super().call(__context, __obj, *args, **kwargs)


class _Current:
    """The budget of the render running now (renders are synchronous, one at a time per thread)."""

    budget: _Budget = _Budget(0)


_CURRENT = _Current()


class _Guard(NodeTransformer):
    """Refuses what a mail template has no use for and routes loops and ``~`` through the budget."""

    _REFUSED: ClassVar[dict[type[nodes.Node], str]] = {
        nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "import",
        nodes.Extends: "extends", nodes.Macro: "macro", nodes.CallBlock: "call block"}

    def generic_visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        for kind, what in self._REFUSED.items():
            if isinstance(node, kind):
                raise TemplateRefused(f"line {node.lineno}: {what} is not available in templates")
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise TemplateRefused(f"line {node.lineno}: attribute {node.attr!r} is not available")
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
            raise TemplateRefused(f"line {node.lineno}: item {node.arg.value!r} is not available")
        if isinstance(node, nodes.For) and node.recursive:
            raise TemplateRefused(f"line {node.lineno}: recursive loops are not available in templates")
        node = super().generic_visit(node, *args, **kwargs)
        if isinstance(node, nodes.For):
            node.iter = nodes.Call(nodes.Name("_loop", "load"), [node.iter], [], None, None,
                                   lineno=node.lineno)
        if isinstance(node, nodes.Concat):
            return nodes.Call(nodes.Name("_concat", "load"), node.nodes, [], None, None, lineno=node.lineno)
        return node


def _loop(iterable: Iterable[Any]) -> Iterator[Any]:
    return _CURRENT.budget.loop(iterable)


def _concat(*parts: Any) -> str:
    _CURRENT.budget.size(sum(_length(p) for p in parts))
    return "".join(p if isinstance(p, str) else str(p) for p in parts)


_TEXT = _Environment(autoescape=False)
_HTML = _Environment(autoescape=True)  # KumoMTA escapes substitutions in html_body (the ".html" name)
for _env in (_TEXT, _HTML):
    _env.globals.update({"_loop": _loop, "_concat": _concat})


@dataclass(frozen=True)
class Template:
    """A compiled template, or the literal text when templating is off (the ``Static`` dialect)."""

    source: str
    compiled: Any = None

    def render(self, variables: dict[str, Any], limit: int) -> str:
        if self.compiled is None:
            return self.source
        _CURRENT.budget = _Budget(limit)
        out: list[str] = []
        size = 0
        try:
            for chunk in self.compiled.generate(variables):
                size += len(chunk)
                if size > limit:
                    raise RenderError(f"output exceeds {limit} characters")
                out.append(chunk)
        except RenderError:
            raise
        except SecurityError as error:
            raise RenderError(f"refused: {error}") from None
        except TemplateError as error:  # UndefinedError and the like: their text names variables only
            raise RenderError(error.message or type(error).__name__) from None
        except RecursionError:
            raise RenderError("template nests too deeply") from None
        except Exception as error:  # a filter's TypeError/ValueError text may quote substitution data
            raise RenderError(f"{type(error).__name__} while rendering") from None
        finally:
            _CURRENT.budget = _Budget(0)
        return "".join(out)


def compile_template(source: str, *, html: bool = False, static: bool = False) -> Template:
    """Compile once per request; ``TemplateRefused`` says why (no template text in the message)."""
    if static or ("{" not in source):
        return Template(source)
    env = _HTML if html else _TEXT
    try:
        tree = env.parse(source)
        tree = _Guard().visit(tree)
        return Template(source, env.from_string(tree))
    except TemplateRefused:
        raise
    except TemplateError as error:
        line = getattr(error, "lineno", None)
        raise TemplateRefused(f"line {line}: {error.message}" if line else str(error.message)) from None
    except RecursionError:
        raise TemplateRefused("template nests too deeply") from None


__all__ = ["RenderError", "Template", "TemplateRefused", "compile_template"]
