"""Parameters declared once: typed, defaulted, validated fields of a method (or filter) class.

A class lists its parameters as class attributes::

    class RandomSkip(Method):
        rate = Param(0.5, float_in(0.0, 1.0, max_open=True), "probability of skipping an example")
        seed = Param(None, optional(int_at_least(0)), "RNG seed; None: the run's training seed")

and gets, from that one declaration: a keyword-only constructor that validates every value early
(unknown names get a "did you mean"), ``params()`` (the resolved values, for run records),
``param_specs()`` (name -> default, for ``datadiet methods`` and the registry), and a readable
``inspect.signature``. Scikit-learn's ``get_params`` and dataclasses are the models.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .._validate import check_bool
from ..errors import ConfigError, suggest

Check = Callable[[str, Any], Any]


class Param:
    """One declared parameter: its default, its check (``check(name, value) -> value``) and a one-line doc."""

    __slots__ = ("default", "check", "doc", "name")

    def __init__(self, default: Any, check: Check | None = None, doc: str = "") -> None:
        self.default = default
        self.check = check
        self.doc = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def validate(self, value: Any) -> Any:
        return value if self.check is None else self.check(self.name, value)

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.get(self.name, self.default)


def declared(cls: type) -> dict[str, Param]:
    """The parameters of ``cls`` (its own and inherited, in declaration order, later overriding earlier)."""
    out: dict[str, Param] = {}
    for klass in reversed(cls.__mro__):
        for k, v in vars(klass).items():
            if isinstance(v, Param):
                out[k] = v
    return out


class Configurable:
    """Base for classes whose parameters are :class:`Param` fields: keyword-only, validated construction."""

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.__init__ is not Configurable.__init__:
            cls.__signature__ = None  # a class with a constructor of its own: inspect reads that constructor
            return
        specs = declared(cls)
        params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=p.default) for n, p in specs.items()]
        cls.__signature__ = inspect.Signature(params)

    def __init__(self, **values: Any) -> None:
        specs = declared(type(self))
        for k in values:
            if k not in specs:
                name = getattr(type(self), "name", type(self).__name__)
                raise ConfigError(f"{name!r} has no parameter {k!r}.{suggest(k, list(specs))} "
                                  f"Its parameters: {', '.join(specs) or '(none)'}")
        for k, p in specs.items():
            self.__dict__[k] = p.validate(values[k]) if k in values else p.default
        self.__post_init__()

    def __post_init__(self) -> None:
        """Cross-parameter checks and derived state, after every parameter is set."""

    @classmethod
    def param_specs(cls) -> dict[str, Any]:
        """Parameter name -> default."""
        return {k: p.default for k, p in declared(cls).items()}

    def params(self) -> dict[str, Any]:
        """The resolved parameters (recorded in the run record)."""
        return {k: getattr(self, k) for k in declared(type(self))}


# ---------------------------------------------------------------------------------------- checks
def optional(check: Check) -> Check:
    """``None`` or what ``check`` accepts."""
    return lambda name, v: None if v is None else check(name, v)


def int_at_least(lo: int, hi: int | None = None) -> Check:
    from .._validate import check_int

    return lambda name, v: check_int(name, v, min=lo, max=hi)


def float_in(lo: float | None = None, hi: float | None = None, *, min_open: bool = False,
             max_open: bool = False) -> Check:
    from .._validate import check_float

    return lambda name, v: check_float(name, v, min=lo, max=hi, min_open=min_open, max_open=max_open)


def one_of(*choices: str) -> Check:
    from .._validate import check_choice

    return lambda name, v: check_choice(name, v, tuple(choices))


def boolean(name: str, v: Any) -> bool:
    """``True`` or ``False`` only (the run configuration's check: a quoted ``"false"`` gets the fix)."""
    return check_bool(name, v)


def as_given(check: Check) -> Check:
    """What ``check`` accepts, kept as given (not converted): for a value that ``__post_init__`` resolves
    once the other parameters are known (e.g. a cross-parameter message that quotes the value as given)."""
    def f(name: str, v: Any) -> Any:
        check(name, v)
        return v

    return f
