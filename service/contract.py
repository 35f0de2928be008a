"""The HTTP contract: each request body declared once, as a dataclass whose fields carry rules.

From one declaration (:class:`PredictRequest`, :class:`TrainRequest`) come both the fast parser
the routes run (:meth:`Contract.parse`: field names, presence, bounds, with precise messages)
and the OpenAPI document (:meth:`Contract.openapi`, through a pydantic model generated from the
same rules). Rows are checked against the served model by :func:`service.body.parse_instances`,
because their width and feature names are the model's. Bounds that are settings (``max_rows``,
``max_learning_rate``, ``max_passes``) are named in the rule and read from :class:`Limits`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    create_model,
)
from pydantic import Field as Documented

from model.errors import InvalidParameterError
from model.validation import describe_value

from .errors import InvalidRequestError

__all__ = [
    "MAX_VERSION",
    "PREDICT_EXAMPLES",
    "TRAIN_EXAMPLES",
    "Contract",
    "Limits",
    "PredictRequest",
    "Rule",
    "TrainRequest",
    "rule",
]

MAX_VERSION = 2**62  # version numbers a client may send (path or body)

Number = StrictFloat  # JSON Schema's "number": StrictFloat takes ints too, never bools or strings
Label = StrictInt | StrictStr
# A cell: a number; for a model with categorical features a string (a category) in such a
# column; null for a missing cell of a model that imputes (GET /models/{version}: raw_features).
Cell = StrictFloat | StrictStr | None
Row = list[Cell] | dict[str, Cell]


@dataclass(frozen=True)
class Limits:
    """The request bounds that are settings."""

    max_rows: int = 1000
    max_learning_rate: float = 1.0
    max_passes: int = 10
    refuse_unknown_categories: bool = False  # how rows are read: 422 for an unseen category


@dataclass(frozen=True)
class Rule:
    """How one request field is checked and documented.

    ``kind``: ``rows`` (instances, checked against the model later), ``labels`` (a list),
    ``integer`` or ``number`` (bounded scalars), ``boolean``. ``high`` is a number or the name of a
    :class:`Limits` attribute. ``low`` is inclusive unless ``low_inclusive`` is false.
    """

    kind: Literal["rows", "labels", "integer", "number", "boolean"]
    description: str
    low: float = 1
    high: float | str | None = None
    low_inclusive: bool = True


def rule(
    kind: Literal["rows", "labels", "integer", "number", "boolean"],
    description: str,
    **bounds: Any,
) -> Any:
    """A dataclass field carrying its :class:`Rule`; required unless ``default`` is given."""
    default = bounds.pop("default", dataclasses.MISSING)
    return field(default=default, metadata={"rule": Rule(kind, description, **bounds)})


_ROWS_DOC = (
    "Rows to score: each an object keyed by the model's raw feature names (all of them), or a "
    "list of their values in the order of raw_features (GET /models/{version}). A numeric "
    "feature takes a finite number, a categorical one a string (one of its categories; an "
    "unseen one sets none of its one-hot columns, or is refused with 422 unknown_category "
    "when the service's unknown_categories setting is refuse). null is a missing value, "
    "imputed as the model was trained (its raw_features' fill), for models that impute; "
    "refused otherwise. For a model trained on numbers only, raw_features are its features "
    "(n_features, feature_names): a list row is n_features numbers. Booleans are refused."
)


@dataclass(frozen=True)
class PredictRequest:
    """``POST /predict``."""

    instances: list[Any] = rule("rows", _ROWS_DOC, high="max_rows")
    version: int | None = rule(
        "integer",
        "score with this stored version instead of the active",
        high=MAX_VERSION,
        default=None,
    )


@dataclass(frozen=True)
class TrainRequest:
    """``POST /train``."""

    instances: list[Any] = rule("rows", _ROWS_DOC, high="max_rows")
    labels: list[Any] = rule(
        "labels",
        "one label per instance, each one of the model's classes "
        "(integers or strings, as the model was trained)",
        high="max_rows",
    )
    learning_rate: float | None = rule(
        "number",
        "step size for this update (default: the model's schedule)",
        low=0,
        low_inclusive=False,
        high="max_learning_rate",
        default=None,
    )
    passes: int | None = rule(
        "integer", "SGD steps over this minibatch", high="max_passes", default=None
    )
    force: bool | None = rule(
        "boolean",
        "apply the update even if the guard refuses it (needs the admin permission; "
        "recorded in the version's metadata)",
        default=None,
    )


# The examples score against what `make run` serves: digits, 64 pixel intensities 0-16
# (features pixel_<row>_<column>); this row is a 0.
DIGITS_ZERO = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4]
DIGITS_ZERO += [12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5]
DIGITS_ZERO += [10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]
PREDICT_EXAMPLES: dict[str, dict[str, Any]] = {
    "rows as lists (the digits model of make run)": {"instances": [DIGITS_ZERO]},
    "a row as an object, pinned to version 1": {
        "instances": [{f"pixel_{i // 8}_{i % 8}": v for i, v in enumerate(DIGITS_ZERO)}],
        "version": 1,
    },
}
TRAIN_EXAMPLES: dict[str, dict[str, Any]] = {
    "one minibatch (the digits model of make run)": {
        "instances": [DIGITS_ZERO],
        "labels": [0],
        "learning_rate": 0.01,
        "passes": 1,
    },
}

Request = TypeVar("Request")


class Contract(Generic[Request]):
    """One request's declaration, bound to this app's :class:`Limits`."""

    def __init__(
        self, request: type[Request], limits: Limits, examples: dict[str, dict[str, Any]]
    ) -> None:
        self.request = request
        self.examples = examples
        self.rules: dict[str, Rule] = {}
        self.high: dict[str, float | None] = {}
        self.required: list[str] = []
        for item in dataclasses.fields(request):  # type: ignore[arg-type]  # a dataclass
            declared: Rule = item.metadata["rule"]
            self.rules[item.name] = declared
            high = declared.high
            self.high[item.name] = getattr(limits, high) if isinstance(high, str) else high
            if item.default is dataclasses.MISSING:
                self.required.append(item.name)
        self.names = tuple(self.rules)

    def parse(self, data: dict[str, Any]) -> Request:
        """Check ``data`` (a JSON object) and return the typed request. Scalars are checked
        before lists; rows are left for :func:`service.body.parse_instances`."""
        for key in data:
            if key not in self.rules:
                raise InvalidRequestError(
                    f"unknown field {key!r}; expected {', '.join(self.names)}", field=key
                )
        for key in self.required:
            if key not in data:
                raise InvalidRequestError(f"missing field {key!r}", field=key)
        for name, declared in self.rules.items():
            value = data.get(name)
            if value is not None and declared.kind in ("integer", "number"):
                self._check_scalar(name, declared, value)
            if value is not None and declared.kind == "boolean" and not isinstance(value, bool):
                raise InvalidParameterError(
                    f"{name}: expected true or false, got {describe_value(value)}", field=name
                )
        labels = data.get("labels")
        if "labels" in self.rules and not isinstance(labels, list):
            raise InvalidRequestError(
                f"labels: expected a list, got {describe_value(labels)}", field="labels"
            )
        return self.request(**data)

    def _check_scalar(self, name: str, declared: Rule, value: Any) -> None:
        low, high = declared.low, self.high[name]
        if declared.kind == "integer":
            ok = type(value) is int and value >= low and (high is None or value <= high)
            upper = f"..{int(high)}" if high is not None else " or more"
            expected = f"an integer {int(low)}{upper}"
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and (value >= low if declared.low_inclusive else value > low)
            ok = ok and (high is None or value <= high)
            bracket = "[" if declared.low_inclusive else "("
            expected = f"a number in {bracket}{low:g}, {high:g}]"
        if not ok:
            raise InvalidParameterError(
                f"{name}: expected {expected}, got {_describe_number(value)}", field=name
            )

    # ------------------------------------------------------------------ documentation
    def model(self) -> type[BaseModel]:
        """The same rules as a pydantic model: what OpenAPI shows."""
        fields: dict[str, Any] = {}
        for name, declared in self.rules.items():
            annotation, bounds = self._documented(declared, self.high[name])
            required = name in self.required
            fields[name] = (
                annotation if required else annotation | None,
                Documented(... if required else None, description=declared.description, **bounds),
            )
        return create_model(self.request.__name__, __config__=ConfigDict(extra="forbid"), **fields)

    @staticmethod
    def _documented(declared: Rule, high: float | None) -> tuple[Any, dict[str, Any]]:
        """A rule's JSON type and the bounds shown for it."""
        if declared.kind in ("rows", "labels"):
            item = Row if declared.kind == "rows" else Label
            return list[item], {"min_length": 1, "max_length": high}  # type: ignore[valid-type]
        if declared.kind == "integer":
            return StrictInt, {"ge": int(declared.low), "le": high}
        if declared.kind == "boolean":
            return StrictBool, {}
        # On a number the bounds sit on the type itself: on the optional union they would not
        # reach the schema.
        bounds: dict[str, Any] = {"ge" if declared.low_inclusive else "gt": declared.low}
        return Annotated[Number, Documented(le=high, **bounds)], {}

    def openapi(self) -> dict[str, Any]:
        """An ``openapi_extra`` entry documenting the request body, with its examples."""
        schema = self.model().model_json_schema(ref_template="#/components/schemas/{model}")
        schema.pop("$defs", None)
        examples = {
            name: {"summary": name, "value": value} for name, value in self.examples.items()
        }
        return {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": schema, "examples": examples}},
            }
        }


def _describe_number(value: Any) -> str:
    # JSON integers beyond 64 bits arrive as floats: show them as the integers they were.
    if isinstance(value, float) and value.is_integer() and abs(value) >= 2**63:
        return str(int(value))
    return describe_value(value)
