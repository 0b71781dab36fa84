"""The recordings list: sizes, lengths, and every field escaped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bastion.recording.store import RecordingMeta
from bastion.web.recordings import duration, human_size, recording_rows

START = datetime(2025, 1, 1, tzinfo=UTC)


def test_sizes_and_lengths() -> None:
    assert human_size(512) == "512 B" and human_size(2048) == "2.0 KiB"
    meta = RecordingMeta(
        session_id="s1", user="u", started=START, ended=START + timedelta(seconds=75)
    )
    assert duration(meta) == "1:15"
    assert duration(meta.model_copy(update={"ended": START + timedelta(hours=2)})) == "2:00:00"
    assert duration(meta.model_copy(update={"ended": None})) == "-"


def test_rows_escape_user_controlled_fields() -> None:
    meta = RecordingMeta(
        session_id="s1", user="<img src=x>", login="root", node="n", command="echo '<b>'"
    )
    html = recording_rows([meta])
    assert "<img" not in html and "&lt;img src=x&gt;" in html and "&lt;b&gt;" in html
    assert 'href="/web/recordings/s1"' in html
