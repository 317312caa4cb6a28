"""Which predictor a request goes to: the predictor route, or one revision picked by its tag.

During a canary (Knative mode) the predictor's route splits calls between two revisions. With the
InferenceService annotation ``serving.kserve.io/enable-tag-routing: "true"`` KServe tags them:
``latest`` (the newest revision) and ``prev`` (the last rolled-out one; KServe adds it while
``canaryTrafficPercent`` is below 100). Knative publishes each tag at the host ``<tag>-<route>``
(its default ``tag-template`` is ``{{.Tag}}-{{.Name}}``) and creates a Kubernetes Service of that
name in the namespace. So where the transformer reaches the split route at ``--predictor_host
yolov3-predictor.vision`` (injected by KServe), it reaches one revision at
``latest-yolov3-predictor.vision`` or ``prev-yolov3-predictor.vision`` (cluster-local:
``latest-yolov3-predictor.vision.svc.cluster.local``): the tag is prefixed to the first label.

A request with the transformer's ``--revision_header`` (``x-model-revision``) set to ``latest`` or
``prev`` (aliases ``canary`` and ``stable``, any case) goes to that tag's host; without it, to the
predictor route. Both revisions see the same transformer, so the same preprocessing (each is
described on its own: they may be different models). ``--revision_hosts`` gives the tag hosts
explicitly (local stacks, tests, a changed ``tag-template``).

Pure functions, no server imports.
"""

from __future__ import annotations

import ipaddress
from typing import Mapping

from yolo_contract.tensors import REVISION_TAGS

#: The tags KServe gives the predictor's traffic targets.
TAGS = ("latest", "prev")

__all__ = ["TAGS", "canonical_tag", "parse_revision_hosts", "tag_hosts", "revision_targets"]


def canonical_tag(value: str) -> str:
    """``latest`` or ``prev`` for a header value (aliases ``canary``/``stable``, any case).

    Raises:
        ValueError: any other value.
    """
    tag = REVISION_TAGS.get(value.strip().lower())
    if tag is None:
        raise ValueError(f"must be one of {', '.join(REVISION_TAGS)}")
    return tag


def parse_revision_hosts(text: str) -> tuple[tuple[str, str], ...]:
    """``"prev=127.0.0.1:9001,latest=127.0.0.1:9002"`` -> ``(("latest", ...), ("prev", ...))``.

    Keys are tags or their aliases; each tag at most once; hosts are ``host[:port]``. An empty text
    gives ``()``.

    Raises:
        ValueError: malformed pairs, unknown or repeated tags, empty hosts.
    """
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, host = part.partition("=")
        if not sep or not host.strip():
            raise ValueError(f"expected TAG=HOST[:PORT] pairs, got {part!r}")
        try:
            tag = canonical_tag(key)
        except ValueError as e:
            raise ValueError(f"revision tag {key.strip()!r} {e}") from None
        if tag in out:
            raise ValueError(f"revision tag {tag!r} given twice")
        out[tag] = host.strip()
    return tuple(sorted(out.items()))


def _split_port(hostport: str) -> tuple[str, str]:
    """``("host", ":port")`` (``""`` when there is no port); IPv6 literals keep their brackets."""
    if hostport.startswith("["):
        end = hostport.find("]")
        return hostport[: end + 1], hostport[end + 1:]
    host, sep, port = hostport.rpartition(":")
    if sep and port.isdigit() and host:
        return host, sep + port
    return hostport, ""


def tag_hosts(predictor_host: str) -> dict[str, str]:
    """The tag hosts of a Knative predictor route: ``latest-``/``prev-`` + its first DNS label.

    ``yolov3-predictor.vision`` -> ``{"latest": "latest-yolov3-predictor.vision", "prev":
    "prev-yolov3-predictor.vision"}`` (a port, if any, is kept).

    Raises:
        ValueError: the host is an IP address or ``localhost`` (no route name to derive from).
    """
    host, port = _split_port(predictor_host.strip())
    name = host.strip("[]")
    try:
        ipaddress.ip_address(name)
        is_ip = True
    except ValueError:
        is_ip = False
    if not name or is_ip or name == "localhost":
        raise ValueError(f"cannot derive revision tag hosts from --predictor_host {predictor_host!r} (not a "
                         "Knative route name); give them with --revision_hosts latest=HOST,prev=HOST")
    return {tag: f"{tag}-{host}{port}" for tag in TAGS}


def revision_targets(predictor_host: str, revision_hosts: Mapping[str, str] | tuple) -> dict[str, str]:
    """``{tag: host}`` a transformer routes tagged requests to: ``revision_hosts`` when given (only
    those tags), else :func:`tag_hosts` of ``predictor_host``."""
    explicit = dict(revision_hosts)
    return explicit if explicit else tag_hosts(predictor_host)
