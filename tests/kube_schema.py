"""Strict offline validation of InferenceService documents against the vendored KServe CRD.

The API server only *prunes* unknown fields of a custom resource, so a typo such as
``canaryTraficPercent`` is silently dropped on a cluster. ``kubectl --validate=strict`` rejects it;
this module does the same offline (docs: shared kserve-0.21.md, section 5.3):

* the schema is ``spec.versions[v1beta1].schema.openAPIV3Schema`` of
  ``schemas/serving.kserve.io_inferenceservices.yaml``;
* ``x-kubernetes-int-or-string`` becomes ``anyOf: [integer, string]``;
* an object marked ``x-kubernetes-preserve-unknown-fields`` stays open;
* every other object that declares ``properties`` gets ``additionalProperties: false``;
* ``int32``/``int64`` formats are range-checked with a :class:`jsonschema.FormatChecker`;
* ``x-kubernetes-*``, ``default`` and ``nullable`` are dropped; CEL rules are not emulated;
* ``metadata`` (opaque in a CRD) gets the few API-server rules that matter for manifests:
  ``name`` is required and DNS-1123, label and annotation values are strings.

Usage::

    from tests.kube_schema import load_isvc_validator

    validate = load_isvc_validator()
    errors = validate(isvc_dict)          # [] when valid, else "path: message" strings
    validate.check(isvc_dict)             # raises StrictValidationError when invalid

The converted schema and the validator are built once per process (about 0.6 s with the
libyaml loader) and cached.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The vendored CRD (repo-relative: ``schemas/serving.kserve.io_inferenceservices.yaml``).
CRD_PATH = REPO_ROOT / "schemas" / "serving.kserve.io_inferenceservices.yaml"

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Keys that carry no validation meaning for jsonschema, or whose meaning we do not emulate.
_DROP_KEYS = {"default", "nullable"}


class StrictValidationError(ValueError):
    """Raised by :meth:`IsvcValidator.check`; ``errors`` holds one ``"path: message"`` per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("InferenceService failed strict CRD validation:\n  " + "\n  ".join(errors))
        self.errors = errors


def load_yaml_documents(path: Path | str) -> list[Any]:
    """All non-empty YAML documents of ``path`` (libyaml loader when available)."""
    with open(path, "rb") as fh:
        return [doc for doc in yaml.load_all(fh, Loader=_Loader) if doc is not None]


def _strict(node: Any) -> Any:
    """Return a converted copy of one OpenAPI v3 (structural) schema node."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node

    int_or_string = bool(node.get("x-kubernetes-int-or-string"))
    preserve_unknown = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _strict(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _strict(value) if isinstance(value, (dict, list)) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_strict(sub) for sub in value]
        else:
            out[key] = value

    if int_or_string:
        out.pop("type", None)
        # A structural int-or-string node may still carry its own anyOf/pattern; keep them under allOf.
        own_any_of = out.pop("anyOf", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if own_any_of:
            out["allOf"] = [{"anyOf": own_any_of}]
    if "properties" in out and not preserve_unknown and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _metadata_schema() -> dict[str, Any]:
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "maxLength": 63, "pattern": _DNS1123_LABEL},
            "namespace": {"type": "string", "maxLength": 63, "pattern": _DNS1123_LABEL},
            "labels": string_map,
            "annotations": string_map,
        },
    }


@functools.lru_cache(maxsize=1)
def load_crd_schema(crd_path: str = str(CRD_PATH)) -> dict[str, Any]:
    """The strict jsonschema (dict) of InferenceService v1beta1, converted once and cached."""
    docs = load_yaml_documents(crd_path)
    crd = next(d for d in docs if d.get("kind") == "CustomResourceDefinition")
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = _metadata_schema()
    schema["properties"]["apiVersion"] = {"const": API_VERSION}
    schema["properties"]["kind"] = {"const": KIND}
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    return schema


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()

    def _in_range(bounds: tuple[int, int]):
        def check(value: object) -> bool:
            if isinstance(value, bool) or not isinstance(value, int):
                return True  # type errors are reported by "type", not by "format"
            return bounds[0] <= value <= bounds[1]

        return check

    checker.checks("int32")(_in_range(_INT32))
    checker.checks("int64")(_in_range(_INT64))
    return checker


def _path(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


class IsvcValidator:
    """Callable strict validator; build it with :func:`load_isvc_validator`."""

    def __init__(self, schema: dict[str, Any]):
        self.schema = schema
        self._validator = jsonschema.Draft7Validator(schema, format_checker=_format_checker())

    def iter_errors(self, doc: Any) -> Iterable[jsonschema.ValidationError]:
        return self._validator.iter_errors(doc)

    def __call__(self, doc: Any) -> list[str]:
        """Every violation as ``"path: message"``, sorted by path; ``[]`` when ``doc`` is valid."""
        return sorted({f"{_path(error)}: {error.message}" for error in self.iter_errors(doc)})

    def check(self, doc: Any) -> None:
        """Raise :class:`StrictValidationError` unless ``doc`` is valid."""
        errors = self(doc)
        if errors:
            raise StrictValidationError(errors)


@functools.lru_cache(maxsize=1)
def load_isvc_validator() -> IsvcValidator:
    """The cached strict InferenceService validator (see the module docstring for the rules)."""
    return IsvcValidator(load_crd_schema())


def is_isvc(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == KIND and str(doc.get("apiVersion", "")).startswith("serving.kserve.io/")
