"""The HTML report's pieces that need no training run: how the advice's evidence is shown."""

from __future__ import annotations

import html

from tunewise.advise.evidence import cite
from tunewise.report.html import _advice_html, citations


def test_the_evidence_column_shows_the_cited_sources_not_python_reprs():
    advice = {"decision": "lora", "reasons": [{"rule": "start-with-lora", "reason": "the seed's default",
                                               "evidence": cite(("seed", "qlora-2023"))}]}
    page = "".join(_advice_html(advice))
    cells = page.split("<tbody>")[1].split("</td>")
    evidence = cells[2]
    assert "{" not in evidence and "'id'" not in evidence
    assert html.escape("The LoRA decision framework (the seed, 'Making the call')") in evidence
    assert html.escape("Dettmers et al., 'QLoRA' (arXiv 2305.14314)") in evidence
    assert evidence.count("<br>") == 1  # one source a line
    assert 'title="NF4 + double quantisation' in evidence  # the finding, on hover


def test_a_citation_with_a_web_address_is_a_link_and_text_is_escaped():
    cell = citations([{"id": "x", "source": "A <b>paper</b>", "finding": "f", "url": "https://arxiv.org/abs/1"},
                      {"id": "y", "source": "Offline", "url": "javascript:alert(1)"}, "bare-id"])
    assert cell == ('<a href="https://arxiv.org/abs/1" title="f">A &lt;b&gt;paper&lt;/b&gt;</a><br>Offline'
                    "<br>bare-id")
    assert citations(None) == ""
