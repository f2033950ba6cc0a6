"""The JSON bodies the README gives for ghz and grpcurl parse into the right request messages."""

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format

from crossbit.v1 import crossbit_pb2 as pb

BODIES = Path(__file__).resolve().parent.parent / "bench" / "ghz"
MESSAGES = {"search_text.json": pb.SearchRequest, "search_filtered.json": pb.SearchRequest,
            "search_code.json": pb.SearchRequest,
            "search_batch.json": pb.SearchBatchRequest, "encode.json": pb.EncodeRequest,
            "add_texts.json": pb.AddTextsRequest}


@pytest.mark.parametrize("name,message", sorted(MESSAGES.items()))
def test_body_parses(name, message):
    parsed = json_format.Parse((BODIES / name).read_text(), message())
    assert parsed.ByteSize() > 0
    if name == "search_code.json":
        assert len(parsed.code) == 8  # a 64-bit code, base64 in JSON


def test_image_body_maker(tmp_path, photos):
    (tmp_path / "cat.jpg").write_bytes(photos["chelsea"])
    script = BODIES / "make_image_body.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "cat.jpg")],
                         capture_output=True, text=True, check=True).stdout
    request = json_format.Parse(out, pb.AddImagesRequest())
    assert request.items[0].key == "cat.jpg" and request.items[0].image == photos["chelsea"]
    stream = json.loads(subprocess.run([sys.executable, str(script), "--stream",
                                        str(tmp_path / "cat.jpg")], capture_output=True,
                                       text=True, check=True).stdout)
    assert base64.b64decode(stream[0]["image"]) == photos["chelsea"]
