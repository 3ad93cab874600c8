"""Many new rows of one model in as few INSERT statements as the backend allows.

The live-session writer records hundreds of small rows per batch, and the ORM's
per-row machinery would cost more than the database's work:

* ``QuerySet.bulk_create`` compiles its statement through the SQL compiler
  (and on SQLite and PostgreSQL asks for the new primary keys back);
* ``executemany`` is no better on SQLite: the driver releases and re-takes the
  GIL around every row, and with the event loop holding it each hand-over costs
  a thread switch;
* a model instance per row runs ``Model.__init__`` only to be taken apart again.

Here rows are plain ``{field name: value}`` dicts (or unsaved instances), and
one multi-row ``INSERT ... VALUES (...), (...)`` goes out per batch of rows
(sized by the backend's ``bulk_batch_size``, as ``bulk_create`` sizes them), its
text built once per model, connection and row count.  Missing values take the
field's default.  Values are prepared as the ORM prepares them for an INSERT
(``get_db_prep_save``), except those that pass unchanged anyway: a ``str`` for a
text field, an ``int`` for an integer field (or a foreign key to one), a
``bool`` for a boolean, ``None`` for a nullable field.  No signals are sent
(neither does ``bulk_create``) and auto-increment keys are not read back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from django.db import connections, router
from django.db.models import (
    AutoField,
    BigAutoField,
    BooleanField,
    CharField,
    Field,
    ForeignKey,
    IntegerField,
    Model,
    SmallAutoField,
    TextField,
)

_AUTO = (AutoField, BigAutoField, SmallAutoField)
_MISSING = object()


def _fields(model: type[Model]) -> tuple[Field[Any, Any], ...]:
    return tuple(
        f
        for f in model._meta.concrete_fields
        if not (f.primary_key and isinstance(f, _AUTO))
    )


def _passes_as(field: Field[Any, Any]) -> type | None:
    """The Python type whose values ``field`` stores unchanged, if any."""
    target = field.target_field if isinstance(field, ForeignKey) else field
    # Exact classes only: a subclass may prepare values its own way.
    if type(target) in (CharField, TextField):
        return str
    if type(target) is BooleanField:
        return bool
    if isinstance(target, IntegerField) and type(target).get_db_prep_value is (
        IntegerField.get_db_prep_value
    ):
        return int
    return None


@functools.lru_cache(maxsize=32)
def _plan(
    model: type[Model], alias: str
) -> tuple[tuple[Field[Any, Any], ...], tuple[Callable[[Any], Any], ...]]:
    """The fields of an INSERT and, per field, how to prepare a value."""
    connection = connections[alias]
    fields = _fields(model)
    preparers: list[Callable[[Any], Any]] = []
    for field in fields:
        kind = _passes_as(field)
        prep = functools.partial(field.get_db_prep_save, connection=connection)

        def prepare(
            value: Any,
            kind: type | None = kind,
            prep: Any = prep,
            null: bool = field.null,
        ) -> Any:
            if value is None and null:
                return None
            if kind is not None and type(value) is kind:
                return value
            return prep(value)

        preparers.append(prepare)
    return fields, tuple(preparers)


@functools.lru_cache(maxsize=256)
def _statement(model: type[Model], alias: str, rows: int) -> str:
    quote = connections[alias].ops.quote_name
    fields = _fields(model)
    row = "({})".format(", ".join(["%s"] * len(fields)))
    # Only names from the model's own metadata, quoted; values are parameters
    # (hence the S608/B608 "SQL built from strings" findings are false alarms).
    return "INSERT INTO {} ({}) VALUES {}".format(  # noqa: S608  # nosec B608
        quote(model._meta.db_table),
        # (a concrete field always has a column: None is for those without one)
        ", ".join(quote(cast(str, f.column)) for f in fields),
        ", ".join([row] * rows),
    )


def insert_rows(model: type[Model], rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT ``rows`` (dicts by field ``attname``, e.g. ``user_id``) into
    ``model``'s table, in the caller's transaction if any."""
    if not rows:
        return
    alias = router.db_for_write(model)
    connection = connections[alias]
    fields, preparers = _plan(model, alias)
    columns = list(zip(fields, preparers, strict=True))
    size = max(1, connection.ops.bulk_batch_size(list(fields), rows))
    # Rows of one batch repeat values (the user, the address, the batch's
    # timestamp): each distinct value of a column is prepared once.
    prepared: dict[tuple[int, Any], Any] = {}
    with connection.cursor() as cursor:
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            params = []
            for row in batch:
                for index, (field, prepare) in enumerate(columns):
                    value = row.get(field.attname, _MISSING)
                    if value is _MISSING:
                        value = field.get_default()
                    try:
                        params.append(prepared[index, value])
                    except KeyError:
                        params.append(
                            prepared.setdefault((index, value), prepare(value))
                        )
                    except TypeError:  # unhashable (e.g. a JSON value)
                        params.append(prepare(value))
            cursor.execute(_statement(model, alias, len(batch)), params)


def insert(objs: Sequence[Model]) -> None:
    """INSERT the unsaved instances ``objs`` (all of one model)."""
    if not objs:
        return
    model = type(objs[0])
    fields = _fields(model)
    insert_rows(
        model, [{f.attname: f.pre_save(obj, True) for f in fields} for obj in objs]
    )
    alias = router.db_for_write(model)
    for obj in objs:
        obj._state.adding = False
        obj._state.db = alias
