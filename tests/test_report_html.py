"""The HTML page: escaping, identifier hygiene, determinism, self-containment, layout."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html.parser import HTMLParser

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from _report_factory import (
    EVIL,
    IMAGE_PATHS,
    IMG,
    PATIENT_IDS,
    SCRIPT,
    STUDY_IDS,
    build_report,
)

from medaudit._errors import InvalidInputError, InvalidParameterError
from medaudit.report import Check, Figure, Report, Section
from medaudit.report._html import (
    MAX_TABLE_ROWS,
    UNSAFE_SVG,
    WITHHELD_PATH,
    is_identifier_column,
    redact_image_paths,
    render_document,
    render_html,
)
from medaudit.report._json import dumps, report_from_dict, report_to_dict


class _Page(HTMLParser):
    """Every tag, attribute and text node of a page, as the browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.script_bodies: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_bodies.append(data)
        else:
            self.text.append(data)


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    return p


@pytest.fixture(scope="module")
def report() -> Report:
    return build_report()


@pytest.fixture(scope="module")
def page(report) -> str:
    return render_html(report)


@pytest.fixture(scope="module")
def parsed(page) -> _Page:
    return _parse(page)


# ----------------------------------------------------------------------------- escaping


def test_hostile_strings_are_text_not_markup(page, parsed):
    tag_names = [t for t, _ in parsed.tags]
    assert "img" not in tag_names
    assert tag_names.count("script") == 1  # the page's own sorting script
    assert not [(t, a) for t, attrs in parsed.tags for a in attrs if a.lower().startswith("on")], (
        "an event-handler attribute made it into the page"
    )
    text = "".join(parsed.text)
    # Shown literally: section title, group name in a table cell, column name, note,
    # check description and id, model card, figure caption.
    assert text.count(SCRIPT) >= 8
    assert text.count(IMG) >= 6
    assert f"note {SCRIPT}" in text  # a column name
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in page


def test_hostile_alt_text_stays_inside_its_attribute(parsed):
    figures = [a for t, a in parsed.tags if t == "figure"]
    assert len(figures) == 2
    for attrs in figures:
        assert attrs["role"] == "img"
        assert attrs["aria-label"] == f"ROC curves per group, including {EVIL}"
        assert set(attrs) == {"class", "role", "aria-label"}


def test_matplotlib_escapes_user_strings_inside_svg(report):
    # The fairness figure's legend holds the hostile group name; matplotlib's SVG writer
    # escapes it, which is why figures may be inlined as markup.
    svg = report.section("fairness").figures["roc_by_sex"].svg
    assert SCRIPT not in svg and "<img" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg


def test_inline_script_is_the_only_one_allowed_by_the_csp(page, parsed):
    (csp,) = [
        a["content"] for t, a in parsed.tags if a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert "default-src 'none'" in csp
    (body,) = parsed.script_bodies
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp


def test_page_loads_nothing_from_outside(page, parsed):
    for tag, attrs in parsed.tags:
        assert tag not in {"link", "iframe", "object", "embed", "img", "base"}
        for name in ("src", "href", "xlink:href", "action", "poster", "srcset"):
            v = attrs.get(name)
            if v is not None:
                assert v.startswith(("#", "data:image/")), (tag, name, v[:60])
    assert "@import" not in page
    assert not re.search(r"url\(\s*['\"]?(?!#)", page)
    # No http(s) URL is loaded; the ones left are SVG/RDF namespace names.
    for url in re.findall(r"https?://[^\s\"'<>)]+", page):
        assert url.startswith(
            (
                "http://www.w3.org/",
                "http://purl.org/",
                "http://creativecommons.org/",
                "https://matplotlib.org/",
            )
        ), url


# ----------------------------------------------------------------------------- identifiers


def test_identifiers_are_withheld_by_default(page):
    for s in PATIENT_IDS + STUDY_IDS + IMAGE_PATHS:
        assert s not in page
    assert "patient_id</th>" not in page
    assert "Identifier columns withheld: patient_id, study_id, path" in page
    assert WITHHELD_PATH in page  # in the note and in the duplicate_of column


def test_identifiers_are_shown_when_asked_for(report):
    page = render_html(report, include_identifiers=True)
    for s in PATIENT_IDS + STUDY_IDS + IMAGE_PATHS:
        assert s in page
    assert "This report shows patient identifiers" in page
    assert "This report shows patient identifiers" not in render_html(report)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("patient_id", True),
        ("STUDY_ID", True),
        ("path", True),
        ("dicom_path", True),
        ("filename", True),
        ("site", False),
        ("auroc", False),
        ("pathology", False),
    ],
)
def test_identifier_columns(name, expected):
    assert is_identifier_column(name) is expected


def test_image_paths_are_redacted_in_free_text():
    text = "see /data/x/P01.DCM, a/b.nii.gz and c.jpeg; scan.npy. Formats: .png, .dcm"
    assert redact_image_paths(text) == (
        f"see {WITHHELD_PATH}, {WITHHELD_PATH} and {WITHHELD_PATH}; {WITHHELD_PATH}. "
        "Formats: .png, .dcm"
    )
    assert redact_image_paths("manifest.csv model.safetensors") == "manifest.csv model.safetensors"


# ----------------------------------------------------------------------------- determinism


def test_same_report_same_bytes_and_audit_json_round_trip(report, page):
    assert render_html(report) == page
    doc = json.loads(dumps(report_to_dict(report)))
    assert render_document(doc) == page
    # Through Report objects again (DataFrames rebuilt from records) the page is the same.
    assert report_from_dict(doc).to_html() == page


def test_save_writes_both_files(tmp_path, report, page):
    out = report.save(tmp_path / "r")
    assert (out / "index.html").read_text(encoding="utf-8") == page
    doc = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert render_document(doc) == page
    assert (out / "index.html").stat().st_size < 5 * 1024 * 1024


# ----------------------------------------------------------------------------- content


def test_summary_sections_and_blocks_are_all_there(page):
    for anchor in (
        'id="summary"',
        'id="s-performance"',
        'id="s-fairness"',
        'id="s-integrity"',
        'id="s-privacy"',
        'id="model-card"',
        'id="methods"',
        'id="reproducibility"',
    ):
        assert anchor in page
    nav = page[page.index('<nav class="toc"') : page.index("</nav>")]
    assert nav.count("<a href=") == 9  # + the glossary
    # Executive summary comes first and ranks the zero-tolerance failure first.
    summary = page[page.index('id="summary"') : page.index('id="s-performance"')]
    summary = re.sub(r"<abbr [^>]*>|</abbr>", "", summary)  # hover definitions
    assert (
        "The model did not pass this audit: 3 of 7 checks failed at critical or major severity."
        in summary
    )
    assert summary.index("Patients in both training and test data: 3") < summary.index(
        "AUROC gap between sexes: 0.080 [0.052, 0.118]"
    )
    assert "What to do:</strong> Re-split by patient_id" in summary
    assert "Findings, most important first (4, grouped by root cause)" in summary


def test_check_rows_are_traffic_lights_with_value_ci_threshold_and_reason(page):
    row = re.search(r'<tr id="check-performance-ece" class="check warn">(.*?)</tr>', page, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    cells = [re.sub(r"<abbr [^>]*>|</abbr>", "", c) for c in cells]
    # Status and severity in two cells: a minor failure reads "Fail" and "Minor".
    assert "Fail" in cells[0] and "Minor" in cells[1]
    assert cells[3] == "0.134 [0.090, 0.170]"
    assert cells[4] == "≤ 0.1"
    assert "minor severity: does not fail the report" in cells[5]
    assert "Recalibrate the scores" in cells[5]
    skipped = re.search(r'class="check skipped">(.*?)</tr>', page, re.S).group(1)
    assert "group too small: 12 images, fewer than 30" in skipped
    # Within a section, failed checks come before passing ones.
    integ = page[page.index('id="s-integrity"') :]
    assert integ.index("check fail") < integ.index("check pass")


def test_tables_merge_ci_columns_and_right_align_numbers(page, parsed):
    assert "AUROC</abbr> [95% <abbr" in page
    assert "auroc_lo" not in page and "auroc_hi" not in page
    assert '<td class="num" data-v="0.921">0.921 [0.890, 0.946]</td>' in page
    assert '<td class="num" data-v="412.0">412</td>' in page
    assert '<td class="num" data-v="0.4035">0.404</td>' in page
    # A missing value with missing CI is a dash, not "nan".
    assert not re.search(r"\bnan\b", "".join(parsed.text), re.IGNORECASE)


def test_model_card_methods_and_reproducibility(page):
    card = page[page.index('id="model-card"') : page.index('id="methods"')]
    for label in ("Intended use", "Training data", "Sensitive attributes audited", "Limitations"):
        assert f"<dt>{label}</dt>" in card
    assert "<li>age_group</li>" in card
    methods = page[page.index('id="methods"') : page.index('id="reproducibility"')]
    methods = re.sub(r"<abbr [^>]*>|</abbr>", "", methods)
    assert "stratified patient-level bootstrap" in methods
    assert "Seyyed-Kalantari L et al." in methods
    assert methods.count("<p>") >= 3  # the fairness methods text has two paragraphs
    repro = page[page.index('id="reproducibility"') :]
    assert "medaudit audit --model m.safetensors --data manifest.csv" in repro
    assert "sha256:" + "ab12" * 16 in repro
    assert "<dt>torch</dt>" in repro and "2.14.0" in repro
    assert "<dt>Seed</dt>" in repro


def test_minimal_report_renders_with_placeholders():
    page = render_html(Report())
    assert "This report contains no checks." in page
    assert "No model card was recorded" in page
    assert "No run metadata was recorded." in page


def test_long_tables_are_cut_with_a_note():
    n = MAX_TABLE_ROWS + 50
    df = pd.DataFrame({"i": range(n), "score": [i / n for i in range(n)]})
    page = render_html(Report([Section("big", "Big", "s", tables={"rows": df})]))
    body = page[page.index("<caption>Rows</caption>") :]
    body = body[: body.index("</table>")]
    assert body.count("<tr") == MAX_TABLE_ROWS + 1  # + the header row
    # Past the first rows the table is folded on screen (every row is in the page).
    assert body.count('<tr class="extra">') == MAX_TABLE_ROWS - 12
    assert "Show all 200 rows" in page
    assert f"Showing the first {MAX_TABLE_ROWS} of {n} rows" in page


def test_print_stylesheet_and_no_javascript_dependence(page):
    assert "@media print" in page
    assert (
        "nav.toc, .jump, .fold-toggle, .fold-label, .screen-only { display: none !important; }"
        in page
    )
    # Everything is in the markup already: the script only adds sorting buttons.
    assert "<button" not in page.split("<script>")[0]


def test_render_validates_parameters(report):
    with pytest.raises(InvalidParameterError, match="'include_identifiers' parameter"):
        render_html(report, include_identifiers="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="'report' parameter of render_html"):
        render_html({"sections": {}})  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- unsafe SVG


_SVG_NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'


@pytest.mark.parametrize(
    ("svg", "why"),
    [
        (f"<svg {_SVG_NS}><script>alert(1)</script></svg>", "it contains a <script> element"),
        (f'<svg {_SVG_NS} onload="alert(1)"></svg>', "it has an event-handler attribute 'onload'"),
        (f"<svg {_SVG_NS}><foreignObject><p>x</p></foreignObject></svg>", "foreignobject"),
        (f'<svg {_SVG_NS}><image xlink:href="https://evil.example/x.png"/></svg>', "references"),
        (f'<svg {_SVG_NS}><a href="javascript:alert(1)"><text>x</text></a></svg>', "references"),
        (f"<svg {_SVG_NS}><style>@import 'http://x/y.css';</style></svg>", "stylesheet"),
        (f'<svg {_SVG_NS}><rect style="fill: url(http://x/p)"/></svg>', "external resource"),
        (f'<svg {_SVG_NS}><set attributeName="href" to="javascript:x"/></svg>', "<set>"),
        ('<!DOCTYPE svg [<!ENTITY a "b">]><svg/>', "DOCTYPE"),
        ("<svg><rect></svg>", "not well-formed"),
        # Constructs the HTML parser reads differently from XML (parser differentials).
        (
            f"<svg {_SVG_NS}><desc><![CDATA[</desc><img src=x onerror=alert(1)>]]></desc></svg>",
            "CDATA",
        ),
        (f'<svg {_SVG_NS}><?x a="1>" <img src=x onerror=alert(1)>?></svg>', "processing"),
        (f"<svg {_SVG_NS}><!--> <img src=x onerror=alert(1)> --></svg>", "malformed comment"),
        (
            f'<svg {_SVG_NS}><desc><meta xmlns="http://www.w3.org/1999/xhtml" '
            'http-equiv="refresh" content="0"/></desc></svg>',
            "<desc> holds elements",
        ),
        (f"<svg {_SVG_NS}><title><tspan>x</tspan></title></svg>", "<title> holds elements"),
        (f"<svg {_SVG_NS}><p>x</p></svg>", "<p> element"),
        (f'<svg {_SVG_NS}><rect fill="java&#9;script:alert(1)"/></svg>', "external"),
        ("<svg><rect/></svg>", "root element <svg> is not an <svg> in the SVG namespace"),
        (f"<html {_SVG_NS}></html>", "root element <html> is not"),
    ],
)
def test_unsafe_svg_in_audit_json_is_refused(report, svg, why):
    doc = json.loads(dumps(report_to_dict(report)))
    doc["sections"]["performance"]["figures"]["roc_by_site"]["svg"] = svg
    with pytest.raises(InvalidInputError) as err:
        render_document(doc)
    msg = str(err.value)
    assert msg.startswith(
        UNSAFE_SVG.format(figure="roc_by_site", section="performance", why="")[:-1]
    )
    assert why.lower() in msg.lower()


def test_safe_svg_with_internal_references_and_embedded_image_is_inlined():
    fig, axs = plt.subplots(1, 4, figsize=(8, 2))
    im = axs[0].imshow([[0.0, 1.0], [1.0, 0.0]])  # embeds a data:image/png and a clip path
    fig.colorbar(im, ax=axs[0])
    axs[1].bar([1, 2], [3, 4], hatch="//")  # a <pattern>
    axs[1].set_title(r"$\alpha$ & <b>")  # mathtext
    axs[2].pcolormesh([[0.0, 1.0], [1.0, 0.0]], shading="gouraud")  # <filter>, gradients
    axs[3].errorbar([1, 2], [1, 2], yerr=[0.1, 0.2], fmt="o")
    axs[3].annotate("x", (1, 1), xytext=(1.5, 1.5), arrowprops={"arrowstyle": "->"})
    f = Figure.from_matplotlib(fig, alt="checkerboard")
    page = render_html(Report([Section("x", "X", "s", figures={"img": f})]))
    assert f.svg in page
    assert "data:image/png;base64," in page


def test_check_values_become_checks_in_page_regardless_of_section_name():
    c = Check.evaluate(
        "zzz.metric", "Made-up metric", 0.3, op=">=", threshold=0.5, advice="Fix it."
    )
    page = render_html(Report([Section("zzz", "Unplanned audit", "s", checks=[c])]))
    summary = page[page.index('id="summary"') : page.index('id="s-zzz"')]
    assert "Made-up metric: 0.300; the policy requires at least 0.5." in summary
    assert "Fix it." in summary


def _headers(df: pd.DataFrame) -> list[str]:
    page = render_html(Report([Section("t", "T", "s", tables={"tbl": df})]))
    thead = page[page.index("<caption>Tbl</caption>") :]
    thead = thead[: thead.index("</thead>")]
    # Headers in words; glossary terms in them carry a hover definition (<abbr>).
    return [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th\b[^>]*>(.*?)</th>", thead)]


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (
            ["site", "n", "auroc", "ci_low", "ci_high"],
            ["site", "n", "AUROC [95% CI]"],
        ),
        (["metric", "value", "ci_low", "ci_high"], ["metric", "value [95% CI]"]),
        (
            ["g", "tpr", "tpr_lo", "tpr_hi", "fpr", "fpr_ci_low", "fpr_ci_high"],
            ["g", "sensitivity (TPR) [95% CI]", "FPR [95% CI]"],
        ),
        # Bin edges are not confidence intervals.
        (["bin_low", "bin_high", "y", "p"], ["bin low", "bin high", "y", "p"]),
        # A text column left of a bare pair does not take it.
        (["group", "ci_low", "ci_high"], ["group", "CI low", "CI high"]),
    ],
)
def test_ci_columns_are_merged_only_where_they_belong(columns, expected):
    data = {
        c: ["a", "b"] if c in ("site", "metric", "g", "group") else [0.5, 0.25] for c in columns
    }
    assert _headers(pd.DataFrame(data)) == expected


def test_merged_ci_cell_with_missing_bounds():
    df = pd.DataFrame(
        {
            "g": ["a", "b"],
            "auroc": [0.9, float("nan")],
            "ci_low": [0.85, None],
            "ci_high": [None, None],
        }
    )
    page = render_html(Report([Section("t", "T", "s", tables={"tbl": df})]))
    assert '<td class="num" data-v="0.9">0.900 [0.850, –]</td>' in page
    assert '<td class="num">–</td>' in page  # missing, still aligned with the numbers


def test_counts_stored_as_floats_read_as_counts_and_empty_tables_say_so():
    tables = {
        "counts": pd.DataFrame({"g": ["a", "b"], "n_patients": [18.0, 120.0], "rate": [0.5, 0.25]}),
        "empty": pd.DataFrame({"reason": pd.Series([], dtype=str), "n": pd.Series([], dtype=int)}),
    }
    page = render_html(Report([Section("t", "T", "s", tables=tables)]))
    assert '<td class="num" data-v="18.0">18</td>' in page
    assert '<td class="num" data-v="0.25">0.250</td>' in page
    assert '<td colspan="2" class="muted">No rows: nothing to list.</td>' in page
