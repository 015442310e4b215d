"""Whether an SVG figure is safe to inline in the report page.

Figures are matplotlib's own SVG output, but an ``audit.json`` may come from anywhere:
the SVG must be well-formed XML made of the elements matplotlib writes, with no event
handler and no external or ``javascript:`` reference.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from functools import lru_cache

__all__ = ["svg_problem"]

_SVG_NS = "http://www.w3.org/2000/svg"
# The elements matplotlib's SVG backend writes; anything else is refused. None of them
# makes the browser's HTML parser leave SVG content, and none runs code.
_SVG_ELEMENTS = frozenset(
    {
        "svg", "g", "defs", "style", "path", "use", "clippath", "rect", "circle", "ellipse",
        "line", "polyline", "polygon", "text", "tspan", "image", "metadata", "title", "desc",
        "symbol", "lineargradient", "radialgradient", "stop", "pattern", "mask", "marker", "a",
        "filter", "fecolormatrix", "fecomposite", "feflood", "feblend", "feoffset",
        "fegaussianblur", "femerge", "femergenode",
    }
)  # fmt: skip
# RDF / Dublin Core / Creative Commons elements, allowed inside <metadata> only.
_METADATA_NS = frozenset(
    {
        "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
        "http://purl.org/dc/elements/1.1/",
        "http://creativecommons.org/ns#",
    }
)
# HTML parses the content of these as HTML: they may hold text only.
_HTML_INTEGRATION_POINTS = frozenset({"title", "desc"})
_EXTERNAL_URL_RE = re.compile(r"url\(\s*['\"]?\s*(?!#)", re.IGNORECASE)
_SAFE_HREF_RE = re.compile(r"^\s*(#|data:image/(png|jpeg);base64,)", re.IGNORECASE)
_JS_URL_RE = re.compile(r"j\s*a\s*v\s*a\s*s\s*c\s*r\s*i\s*p\s*t\s*:", re.IGNORECASE)


def _split(name: str) -> tuple[str, str]:
    if name.startswith("{"):
        ns, local = name[1:].split("}", 1)
        return ns, local.lower()
    return "", name.lower()


def _element_problem(el: ET.Element, in_metadata: bool) -> str | None:
    ns, tag = _split(el.tag)
    if in_metadata and ns in _METADATA_NS:
        pass
    elif ns != _SVG_NS or tag not in _SVG_ELEMENTS:
        return f"it contains a <{tag}> element"
    if tag in _HTML_INTEGRATION_POINTS and ns == _SVG_NS and len(el):
        return f"its <{tag}> holds elements"
    if tag == "style" and el.text and ("@import" in el.text or _EXTERNAL_URL_RE.search(el.text)):
        return "its stylesheet loads an external resource"
    for attr, value in el.attrib.items():
        a = _split(attr)[1]
        if a.startswith("on"):
            return f"it has an event-handler attribute {a!r}"
        if a in {"href", "src"} and not _SAFE_HREF_RE.match(value):
            return f"it references {value[:40]!r}"
        if _EXTERNAL_URL_RE.search(value) or _JS_URL_RE.search(value):
            return "it references an external resource"
    return None


@lru_cache(maxsize=64)
def svg_problem(svg: str) -> str | None:
    """Why ``svg`` is not safe to inline (None when it is).

    Figures are matplotlib's own SVG output, but an ``audit.json`` may come from
    anywhere. The SVG must be well-formed XML made of the elements matplotlib writes, with
    no event handler, no external or ``javascript:`` reference, and none of the constructs
    that the HTML parser reads differently from an XML parser (CDATA, processing
    instructions, DOCTYPE, comments opening with ``>``).
    """
    upper = svg.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        return "it declares a DOCTYPE or entities"
    if "<![CDATA[" in upper:
        return "it contains a CDATA section"
    try:
        parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True))
        root = ET.fromstring(svg, parser=parser)
    except ET.ParseError as exc:
        return f"it is not well-formed SVG ({exc})"
    if _split(root.tag) != (_SVG_NS, "svg"):
        return f"its root element <{_split(root.tag)[1]}> is not an <svg> in the SVG namespace"
    stack: list[tuple[ET.Element, bool]] = [(root, False)]
    while stack:
        el, in_metadata = stack.pop()
        if el.tag is ET.ProcessingInstruction:
            return "it contains a processing instruction"
        if el.tag is ET.Comment:
            if (el.text or "").startswith((">", "->")):
                return "it contains a malformed comment"
            continue
        why = _element_problem(el, in_metadata)
        if why is not None:
            return why
        inside = in_metadata or _split(el.tag) == (_SVG_NS, "metadata")
        stack.extend((child, inside) for child in el)
    return None


_svg_problem = svg_problem
