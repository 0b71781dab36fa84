"""Recording endpoints: uploads are raw bytes, downloads streams."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.contract.recordings import GET_RECORDING, UPLOAD_RECORDING, FetchQuery


def test_raw_upload_streamed_download() -> None:
    assert UPLOAD_RECORDING.raw_body and UPLOAD_RECORDING.audience == "host"
    assert GET_RECORDING.stream == "application/x-asciicast"
    with pytest.raises(ValidationError):
        FetchQuery.model_validate({"purpose": "steal"})
