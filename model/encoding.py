"""From a table's raw features to the numbers the estimator sees: one-hot categories, imputation.

A :class:`FeatureEncoder` is learned on the training rows of a raw :class:`~model.data.Dataset`
(:meth:`FeatureEncoder.fit`) and stored with the model, in the snapshot's metadata as plain JSON
(:meth:`FeatureEncoder.to_json`, no pickle)::

    {"features": [
        {"name": "age", "kind": "numeric", "fill": 41.5},
        {"name": "colour", "kind": "categorical", "categories": ["blue", "missing", "red"],
         "fill": "missing"}
     ]}

* a numeric raw feature is one encoded column; ``fill`` is the value a missing cell takes (the
  training rows' mean, or median), ``null`` when missing cells are refused;
* a categorical raw feature is one 0/1 column per category, in the order of ``categories``
  (named ``colour=blue``, ...); a category not in the list (unseen in training) sets none of
  them (all zeros), unless the caller asks for it to be refused; ``fill`` is the category a
  missing cell takes (``"missing"`` by default, always one of the categories), ``null`` when
  missing cells are refused.

The encoded rows, not the raw ones, are what the estimator trains on, what online updates store
in the log and what the guard set holds: a model's encoding never changes along its versions,
so replaying an update reproduces it bit for bit.

Example::

    >>> from model.data import Dataset
    >>> raw = Dataset(np.array([[1.0, 0.0], [np.nan, 1.0], [3.0, np.nan]]), np.array([0, 1, 0]),
    ...               ("size", "colour"), "y", "memory", categories={"colour": ("blue", "red")},
    ...               missing=True)
    >>> encoder = FeatureEncoder.fit(raw, np.arange(3))
    >>> encoder.encoded_names
    ('size', 'colour=blue', 'colour=missing', 'colour=red')
    >>> encoder.encode_rows([[2.0, "red"], [None, None]]).tolist()
    [[2.0, 0.0, 0.0, 1.0], [2.0, 0.0, 1.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from .errors import (
    CorruptArtifactError,
    InvalidParameterError,
    NotANumberError,
    UnknownCategoryError,
)
from .validation import check_row_widths, describe_value

if TYPE_CHECKING:
    from .data import Dataset

__all__ = ["FeatureEncoder", "RawFeature", "describe_raw_features"]

Kind = Literal["numeric", "categorical"]
NUMERIC_FILLS = ("mean", "median")
MISSING_CATEGORY = "missing"


@dataclass(frozen=True)
class RawFeature:
    """One column of the table as clients send it (see the module docstring)."""

    name: str
    kind: Kind
    categories: tuple[str, ...] = ()
    fill: float | str | None = None

    @property
    def width(self) -> int:
        """Encoded columns."""
        return len(self.categories) if self.kind == "categorical" else 1

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "categorical":
            out["categories"] = list(self.categories)
        out["fill"] = self.fill
        return out


@dataclass(frozen=True)
class FeatureEncoder:
    """Raw rows ``(n, n_raw)`` -> encoded float64 rows ``(n, n_encoded)``."""

    features: tuple[RawFeature, ...]

    # ------------------------------------------------------------------ learning
    @classmethod
    def fit(
        cls,
        dataset: Dataset,
        rows: NDArray[np.intp],
        *,
        impute: bool = True,
        numeric_fill: str = "mean",
        missing_category: str = MISSING_CATEGORY,
    ) -> FeatureEncoder:
        """Learn categories and fill values on ``dataset``'s ``rows`` (the training split).

        ``impute=False`` stores no fill values (missing cells are then refused, as by a model
        trained on complete data). ``numeric_fill``: ``mean`` or ``median`` of the column's
        present training values (0 when none is present).
        """
        if numeric_fill not in NUMERIC_FILLS:
            raise InvalidParameterError(
                f"numeric_fill must be one of {', '.join(NUMERIC_FILLS)}, got {numeric_fill!r}",
                field="numeric_fill",
            )
        if not isinstance(missing_category, str) or not missing_category.strip():
            raise InvalidParameterError(
                f"missing_category must be a non-empty string, got {missing_category!r}",
                field="missing_category",
            )
        X = dataset.X[rows]
        features = []
        for column, name in enumerate(dataset.feature_names):
            values = X[:, column]
            present = values[~np.isnan(values)]
            if name in dataset.categories:
                known = dataset.categories[name]
                seen = {known[int(code)] for code in np.unique(present)}
                if impute:
                    seen.add(missing_category)
                features.append(
                    RawFeature(
                        name,
                        "categorical",
                        tuple(sorted(seen)),
                        missing_category if impute else None,
                    )
                )
                continue
            fill: float | None = None
            if impute:
                average = np.mean if numeric_fill == "mean" else np.median
                fill = float(average(present)) if present.size else 0.0
            features.append(RawFeature(name, "numeric", (), fill))
        encoder = cls(tuple(features))
        encoder._check_names()
        return encoder

    def _check_names(self) -> None:
        names = self.encoded_names
        if len(set(names)) != len(names):
            seen: set[str] = set()
            twice = next(name for name in names if name in seen or seen.add(name))  # type: ignore[func-returns-value]
            raise InvalidParameterError(
                f"the encoded feature name {twice!r} occurs twice (a column named like a "
                "category of another); rename the column",
                field="features",
            )

    # ------------------------------------------------------------------ description
    @property
    def names(self) -> tuple[str, ...]:
        """The raw features' names, in order."""
        return tuple(feature.name for feature in self.features)

    @property
    def encoded_names(self) -> tuple[str, ...]:
        """``name`` for a numeric feature, ``name=category`` for each category."""
        out: list[str] = []
        for feature in self.features:
            if feature.kind == "numeric":
                out.append(feature.name)
            else:
                out.extend(f"{feature.name}={category}" for category in feature.categories)
        return tuple(out)

    @property
    def n_encoded(self) -> int:
        return sum(feature.width for feature in self.features)

    @property
    def imputes(self) -> bool:
        """Whether missing cells (JSON null) are taken."""
        return any(feature.fill is not None for feature in self.features)

    def to_json(self) -> dict[str, Any]:
        return {"features": [feature.to_json() for feature in self.features]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureEncoder:
        """Parse stored JSON; anything malformed is a :class:`CorruptArtifactError`."""
        try:
            features = []
            for item in data["features"]:
                kind = item["kind"]
                fill = item.get("fill")
                if kind == "numeric":
                    feature = RawFeature(str(item["name"]), "numeric", (), _fill_number(fill))
                elif kind == "categorical":
                    categories = tuple(str(category) for category in item["categories"])
                    if fill is not None and fill not in categories:
                        raise ValueError(f"fill {fill!r} is not a category")
                    feature = RawFeature(str(item["name"]), "categorical", categories, fill)
                else:
                    raise ValueError(f"unknown kind {kind!r}")
                features.append(feature)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptArtifactError(
                f"the stored feature encoding is malformed ({exc})"
            ) from None
        return cls(tuple(features))

    # ------------------------------------------------------------------ encoding
    def encode_dataset(self, dataset: Dataset) -> Dataset:
        """``dataset`` (raw, these features) as the plain dataset the estimator trains on."""
        from .data import Dataset

        X = dataset.X
        out = np.zeros((X.shape[0], self.n_encoded))
        offset = 0
        for column, feature in enumerate(self.features):
            values = X[:, column]
            missing = np.isnan(values)
            if feature.kind == "numeric":
                out[:, offset] = values
                if missing.any():
                    out[missing, offset] = feature.fill  # fit ensured one when imputing
            else:
                position = {category: i for i, category in enumerate(feature.categories)}
                known = dataset.categories[feature.name]
                # file category index -> one-hot column, -1 when unseen in training
                lookup = np.array([position.get(v, -1) for v in known] + [-1], dtype=np.intp)
                codes = np.where(missing, len(known), values).astype(np.intp)
                hot = lookup[codes]
                if feature.fill is not None and missing.any():
                    hot[missing] = position[str(feature.fill)]
                rows = np.flatnonzero(hot >= 0)
                out[rows, offset + hot[rows]] = 1.0
            offset += feature.width
        return Dataset(
            X=out,
            y=dataset.y,
            feature_names=self.encoded_names,
            label_name=dataset.label_name,
            source=dataset.source,
        )

    def encode_rows(
        self,
        rows: Sequence[Sequence[Any]],
        *,
        refuse_unknown: bool = False,
        field: str = "instances",
    ) -> NDArray[np.float64]:
        """Request rows, each a list of raw values in the order of :attr:`features` (a number
        or null for a numeric feature, a string or null for a categorical one) -> encoded
        ``(n, n_encoded)``. A category unseen in training encodes as all zeros, or is refused
        (:class:`UnknownCategoryError`) with ``refuse_unknown``."""
        out = np.zeros((len(rows), self.n_encoded))
        lookups = [
            {category: i for i, category in enumerate(feature.categories)}
            for feature in self.features
        ]
        check_row_widths(rows, len(self.features), field)
        for row, values in enumerate(rows):
            offset = 0
            for feature, lookup, value in zip(self.features, lookups, values, strict=True):
                if value is None and feature.fill is not None:
                    value = feature.fill
                if feature.kind == "numeric":
                    if type(value) not in (int, float) or not np.isfinite(value):
                        raise NotANumberError(
                            f"{field}: expected a number at row {row}, column {feature.name!r}, "
                            f"got {describe_value(value)}",
                            field=field,
                            row=row,
                        )
                    out[row, offset] = value
                else:
                    if not isinstance(value, str):
                        raise NotANumberError(
                            f"{field}: expected a category (a string) at row {row}, column "
                            f"{feature.name!r}, got {describe_value(value)}",
                            field=field,
                            row=row,
                        )
                    position = lookup.get(value.strip())
                    if position is not None:
                        out[row, offset + position] = 1.0
                    elif refuse_unknown:
                        raise UnknownCategoryError(
                            f"{field}: unknown category {value!r} for column {feature.name!r} "
                            f"at row {row} (known: {_preview(feature.categories)})",
                            field=field,
                            row=row,
                        )
                offset += feature.width
        return out


def _fill_number(value: Any) -> float | None:
    if value is None:
        return None
    if type(value) not in (int, float):
        raise ValueError(f"numeric fill {value!r} is not a number")
    return float(value)


def _preview(categories: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(category) for category in categories[:limit])
    return shown + (", ..." if len(categories) > limit else "")


def describe_raw_features(
    encoder: Mapping[str, Any] | None, feature_names: Sequence[str] | None, n_features: int
) -> list[dict[str, Any]]:
    """The raw feature schema a client sends rows in: the stored encoder's features, or, for a
    model without one, every feature numeric with no fill (names ``feature_<i>`` if none)."""
    if encoder is not None:
        return [feature.to_json() for feature in FeatureEncoder.from_json(encoder).features]
    names = feature_names or [f"feature_{i}" for i in range(n_features)]
    return [{"name": name, "kind": "numeric", "fill": None} for name in names]
