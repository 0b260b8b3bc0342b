"""lowrank.render: terminal (100 columns, summary first), Markdown, and self-contained HTML with plots."""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import replace
from html.parser import HTMLParser

import pytest
from rich.console import Console
from test_analysis import peft_adapter, planted_pair, save_base, tiny
from test_rank import ProbeDifference, _data, _probe

from lowrank.analysis.run import AnalyzeConfig, analyze
from lowrank.render import by_type, probe_text, recommendation_config
from lowrank.render import html as html_render
from lowrank.render import markdown as markdown_render
from lowrank.render import terminal
from lowrank.analysis.results import AnalysisReport


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> AnalysisReport:
    folder = tmp_path_factory.mktemp("render")
    model = tiny("llama")
    save_base(model, folder / "base")
    state = model.state_dict()
    peft_adapter(folder / "r2", model, 2, ["q_proj", "v_proj", "down_proj"], seed=1)
    other = tiny("llama")
    other.load_state_dict(state)
    peft_adapter(folder / "r8", other, 8, ["q_proj", "v_proj", "down_proj"], seed=2)
    return analyze(AnalyzeConfig(str(folder / "r2"), base=str(folder / "base"), against=str(folder / "r8")))


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> AnalysisReport:
    folder = tmp_path_factory.mktemp("full")
    planted_pair(folder, {"model.layers.0.mlp.up_proj": 3, "model.layers.1.mlp.up_proj": 12})
    return analyze(AnalyzeConfig(str(folder / "tuned.safetensors"), base=str(folder / "base.safetensors")))


def _terminal(report: AnalysisReport) -> str:
    console = Console(file=io.StringIO(), width=100, record=True, color_system=None)
    terminal.render(report, console)
    return console.export_text()


def test_terminal_summary_first_grouped_by_type_within_100_columns(compared):
    text = _terminal(compared)
    assert max(len(line) for line in text.splitlines()) <= 100
    summary = text.index("Summary")
    positions = [text.index(f"{kind}  (lora") for kind in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")]
    assert summary < min(positions)
    assert compared.summary.headline.split(".")[0] in text.replace("\n", " ").replace("│", " ")
    assert "Comparison with --against" in text and "phi (left)" in text and "intruders" in text
    for module in compared.modules:
        assert module.verdict in text


def test_terminal_full_delta_shows_energy_at_reference_rank(full):
    text = _terminal(full)
    assert "E@r" in text and "(16)" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    verdicts = {m.name: m.verdict for m in full.modules}
    assert verdicts == {"model.layers.0.mlp.up_proj": "lower r", "model.layers.1.mlp.up_proj": "adequate"}


def _tables(markdown: str) -> list[list[str]]:
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_markdown_sections_tables_and_recommendation(compared):
    text = markdown_render.render(compared)
    assert text.startswith("# lowrank analyze")
    assert text.index("## Summary") < text.index("## Modules by type") < text.index("## How verdicts")
    tables = _tables(text)
    assert len(tables) >= 1 + len(by_type(compared.modules)) * 2
    for table in tables:
        assert len({line.count("|") for line in table}) == 1, table[0]
    block = re.search(r"```json\n(.*?)\n```", text, re.S).group(1)
    assert json.loads(block) == recommendation_config(compared)


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.links = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs["src"])
        for key in ("href", "src"):
            if key in attrs:
                self.links.append(attrs[key])


def test_html_is_self_contained_with_plots_and_heatmaps(compared):
    page = html_render.render(compared)
    parser = _Images()
    parser.feed(page)
    types = len(by_type(compared.modules))
    assert len(parser.sources) == 2 + 1 + types  # spectra, rank per layer, phi per layer, one heatmap row per type
    for source in parser.sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(link.startswith("data:") for link in parser.links)
    assert "<script" not in page and "phi(i, j)" in page
    assert sum(page.count(f'class="pill {css}"') for css in ("raise", "adequate", "lower", "unjudged")) >= len(
        compared.modules)


def test_html_without_comparison_has_no_heatmaps(full):
    page = html_render.render(full)
    parser = _Images()
    parser.feed(page)
    assert len(parser.sources) == 2 and "Comparison" not in page


def test_renderers_read_only_the_record(compared):
    copy = AnalysisReport.from_dict(json.loads(json.dumps(compared.to_dict())))
    assert markdown_render.render(copy) == markdown_render.render(compared)
    assert _terminal(copy) == _terminal(compared)


@pytest.mark.parametrize("verdict", ["lower r", "adequate"])
def test_the_probe_paragraph_says_what_lower_r_measured(compared, verdict):
    """'Lower r' comes from the update cut to r/2 and trained on, not from a retraining at r/2: the paragraph says
    so under that verdict only."""
    probe = _probe(ProbeDifference(0.0, 0.0005, 0.0, 0.0, 0.2), ProbeDifference(0.001, 0.0005, 0.002, 0.0, 0.2))
    text = probe_text(replace(compared, sufficiency=_data(verdict, probe, 4 if verdict == "lower r" else 8)))
    assert text.startswith("Probe: from the trained adapter")
    assert ("cut to rank r/2 and trained on" in text) == (verdict == "lower r")


def test_a_quartered_arm_shows_in_the_paragraph_the_headline_and_the_plot(compared):
    """Where "lower r" was in question the probe ran r/4 too: the paragraph states the margin, the headline its
    cost, and the HTML page carries the paragraph."""
    from lowrank.analysis import rank as ranking

    probe = replace(_probe(ProbeDifference(0.0, 0.0005, 0.0, 0.0, 0.2), ProbeDifference(0.004, 0.001, 0.008, -0.2,
                                                                                          0.2)),
                    quartering=ProbeDifference(0.03, 0.004, 0.06, -1.1, 0.3))
    data = replace(_data("adequate", probe, 8), raise_above_first=0.0, lower_quarter=0.05)
    text = probe_text(replace(compared, sufficiency=data))
    assert "0.53 at r/4 = 2" in text and "and cutting to r/4 by less than 5% (r > 2)" in text
    assert "(0% at r = 1)" in text
    assert "cutting to r/4 raised it by 6.0%" in ranking.probe_sentence(probe)
    page = html_render.render(replace(compared, sufficiency=data))
    assert "0.53 at r/4 = 2" in page
