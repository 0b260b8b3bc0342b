"""What :func:`lowrank.analyze` returns: the analysis record with its renderings.

``report.analysis`` is the :class:`~lowrank.analysis.results.AnalysisReport` (per module: spectrum, energy ranks,
effective rank, verdict; the comparisons; the data verdict); ``to_json`` writes it as the ``lowrank.analysis/1``
document ``lowrank analyze --json`` writes, byte for byte, and ``to_html`` / ``to_markdown`` the reports of
``--html`` / ``--markdown``. Files are written whole or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lowrank.analysis.results import AnalysisReport
from lowrank.outputs import write_text_atomic


@dataclass(frozen=True)
class Report:
    """An analysis and its renderings (see the module docstring)."""

    analysis: AnalysisReport

    @property
    def verdict(self) -> str:
        """The model's data verdict: "raise r", "adequate", "lower r", or "not converged" / "collapsed" (no rank
        advice) when analyzed with ``data``; "not judged" without data (a LoRA spectrum alone cannot say whether
        more rank would help; a full delta's per-module verdicts are in ``analysis.modules``)."""
        return self.analysis.sufficiency.verdict if self.analysis.sufficiency else "not judged"

    def to_dict(self) -> dict:
        """The ``lowrank.analysis/1`` document as plain JSON types."""
        return self.analysis.to_dict()

    def to_json(self, path: str | Path | None = None) -> str:
        """The ``lowrank.analysis/1`` JSON text (written to ``path`` too, when given)."""
        return _written(json.dumps(self.to_dict(), indent=1) + "\n", path)

    def to_html(self, path: str | Path | None = None) -> str:
        """The self-contained HTML report (plots embedded; written to ``path`` too, when given)."""
        from lowrank.render.html import render

        return _written(render(self.analysis), path)

    def to_markdown(self, path: str | Path | None = None) -> str:
        """The Markdown report (written to ``path`` too, when given)."""
        from lowrank.render.markdown import render

        return _written(render(self.analysis), path)


def _written(text: str, path: str | Path | None) -> str:
    if path is not None:
        write_text_atomic(path, text)
    return text
