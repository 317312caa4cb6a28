"""Names a client typed: class filters and parameter names, resolved or refused helpfully (pure).

One place decides what a ``class_filter`` means, so the transformer (which checks it against the
model's ModelInfo before decoding any image) and the predictor (the authority: it checks again
against its own names) can never disagree:

* an item is a class **name**, matched exactly first and then case-insensitively (``Dog`` is
  ``dog``), or a class **id** (an int, or a string of digits: ``16``, ``"16"``) when no class is
  named like that;
* an unknown name is refused with :class:`~yolo_contract.errors.BadRequest` naming it and the
  closest valid names (``difflib``), e.g. ``unknown class "dgo" (did you mean "dog"?)``.

Client text is echoed only through :func:`shown`: at most :data:`MAX_SHOWN` characters, printable
ones, so an error message can name a typo but never carries request data of any size.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Mapping, Sequence

from yolo_contract.errors import BadRequest

__all__ = ["MAX_SHOWN", "resolve_class_filter", "shown", "suggest", "unknown_names_message"]

#: Longest piece of client text an error message repeats (longer text is cut, with "…").
MAX_SHOWN = 20
#: Names an error message lists at most (each with its suggestions).
MAX_NAMED = 5


def shown(value: object) -> str:
    """``value`` as a short, quoted, printable string that is safe to put in a message or log."""
    text = str(value)
    cut = len(text) > MAX_SHOWN
    text = "".join(ch if ch.isprintable() and ch not in '"\\' else "?" for ch in text[:MAX_SHOWN])
    return f'"{text}{"…" if cut else ""}"'


def suggest(word: str, choices: Iterable[str], n: int = 3, aliases: Mapping[str, str] | None = None) -> list[str]:
    """The closest ``choices`` to ``word`` (case-insensitive, best first; empty when none is close):
    an alias's target (e.g. another tool's name for the same thing), then choices that ``word``
    begins (``iou`` -> ``iou_threshold``), then ``difflib``'s close matches."""
    by_key: dict[str, str] = {}
    for choice in choices:
        by_key.setdefault(choice.casefold(), choice)
    key = str(word).casefold()[:64]
    found = [aliases[key]] if aliases and key in aliases else []
    if len(key) >= 3:
        found += [c for k, c in by_key.items() if k.startswith(key)]
    found += [by_key[k] for k in difflib.get_close_matches(key, list(by_key), n=n, cutoff=0.6)]
    return list(dict.fromkeys(found))[:n]


def unknown_names_message(what: str, unknown: Sequence[object], choices: Sequence[str],
                          aliases: Mapping[str, str] | None = None) -> str:
    """``unknown <what> "x" (did you mean "y"?), "z"`` for the first few ``unknown`` names."""
    parts = []
    for name in unknown[:MAX_NAMED]:
        close = suggest(str(name), choices, aliases=aliases) if isinstance(name, str) else []
        hint = f" (did you mean {' or '.join(shown(c) for c in close)}?)" if close else ""
        parts.append(shown(name) + hint)
    more = f" and {len(unknown) - MAX_NAMED} more" if len(unknown) > MAX_NAMED else ""
    if len(unknown) > 1:
        what += "es" if what.endswith("s") else "s"
    return f"unknown {what} {', '.join(parts)}{more}"


def resolve_class_filter(items: Sequence[str | int], classes: Sequence[str], model: str = "") -> tuple[int, ...]:
    """The sorted class ids a ``class_filter`` keeps (see the module docstring for the rules).

    Args:
        items: the filter as :func:`yolo_contract.tensors.coerce_parameters` returns it (names,
            digit strings and ints).
        classes: the model's class names in id order.
        model: the served name, for the hint where the classes are listed.

    Raises:
        BadRequest: an item names no class, or an id is out of range.
    """
    exact = {name: i for i, name in enumerate(classes)}
    folded: dict[str, list[int]] = {}
    for i, name in enumerate(classes):
        folded.setdefault(name.casefold(), []).append(i)
    ids: set[int] = set()
    unknown: list[object] = []
    out_of_range: list[int] = []
    for item in items:
        if isinstance(item, str) and item in exact:
            ids.add(exact[item])
        elif isinstance(item, int) or (isinstance(item, str) and item.isascii() and item.isdigit()):
            i = int(item)
            (ids.add(i) if 0 <= i < len(classes) else out_of_range.append(i))
        elif isinstance(item, str) and len(folded.get(item.casefold(), ())) == 1:
            ids.add(folded[item.casefold()][0])
        else:
            unknown.append(item)
    if unknown or out_of_range:
        where = f"GET /v2/models/{model} lists them" if model else "the model's metadata lists them"
        problems = []
        if unknown:
            problems.append(unknown_names_message("class", unknown, classes))
        if out_of_range:
            problems.append(f"class id{'s' if len(out_of_range) > 1 else ''} "
                            f"{', '.join(str(i)[:MAX_SHOWN] for i in out_of_range[:MAX_NAMED])} out of range")
        raise BadRequest(
            f"class_filter: {'; '.join(problems)}: not among this model's {len(classes)} classes "
            f"(names are case-insensitive, ids 0-{len(classes) - 1} work too; {where})"
        )
    return tuple(sorted(ids))
