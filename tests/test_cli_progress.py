"""The CLI's one progress wrapper: bars on stderr, and with ``after``, none for work shorter than that."""

from lowrank.progress import ProgressEvent
from lowrank_cli.progress import rich_progress


def test_bars_draw_the_events_on_stderr(capsys):
    with rich_progress(True) as progress:
        for done in range(3):
            progress(ProgressEvent("reading modules", done, 2, "q_proj"))
    captured = capsys.readouterr()
    assert "reading modules" in captured.err and captured.out == ""


def test_work_shorter_than_after_draws_nothing(capsys):
    with rich_progress(True, after=60.0) as progress:
        for done in range(3):
            progress(ProgressEvent("reading modules", done, 2, "q_proj"))
    assert capsys.readouterr().err == ""


def test_disabled_draws_nothing(capsys):
    with rich_progress(False) as progress:
        progress(ProgressEvent("reading modules", 1, 2, ""))
    assert capsys.readouterr().err == ""
