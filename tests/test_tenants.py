"""Tokens scoped to collections: generated token files (roles per collection) x collections x every
method, through gRPC and the web API: a call goes through exactly when its token's role on the
collection allows it, PERMISSION_DENIED otherwise, UNAUTHENTICATED without a known token, and
ListCollections shows only what the token may see."""

from __future__ import annotations

import json
import os

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from crossbit.server.core.tokens import NEEDS, ROLES, Principal
from crossbit.v1 import crossbit_pb2 as pb
from crossbit.v1 import crossbit_pb2_grpc as pb_grpc

from helpers import free_port, record

COLLECTIONS = ("default", "shop", "photos")
TOKENS = ("tok-a-123456", "tok-b-123456", "tok-c-123456")
EXAMPLES = int(os.environ.get("CROSSBIT_FUZZ_EXAMPLES", "0")) // 20 or 4
ADMIN = "admin-token-123"


def calls(coll: str, n: int) -> dict:
    """method -> (action, a function(stub, metadata) making the call on ``coll``)."""
    code = b"\0" * 8
    return {
        "Encode": ("encode", lambda s, m: s.Encode(pb.EncodeRequest(texts=["x"], collection=coll),
                                                   metadata=m)),
        "AddTexts": ("add", lambda s, m: s.AddTexts(pb.AddTextsRequest(
            items=[pb.TextItem(text="a dog", key=f"k{n}")], collection=coll), metadata=m)),
        "AddImagesStream": ("add", lambda s, m: s.AddImagesStream(iter([pb.ImageItem(
            image=b"not an image", collection=coll)]), metadata=m)),
        "Search": ("search", lambda s, m: s.Search(pb.SearchRequest(code=code, collection=coll,
                                                                    modality=pb.TEXT), metadata=m)),
        "SearchBatch": ("search", lambda s, m: s.SearchBatch(pb.SearchBatchRequest(
            queries=[pb.SearchRequest(code=code)], collection=coll), metadata=m)),
        "Delete": ("delete", lambda s, m: s.Delete(pb.DeleteRequest(keys=["nope"],
                                                                    collection=coll), metadata=m)),
        "GetStats": ("stats", lambda s, m: s.GetStats(pb.GetStatsRequest(collection=coll),
                                                      metadata=m)),
        "Count": ("count", lambda s, m: s.Count(pb.CountRequest(collection=coll), metadata=m)),
        "Get": ("get", lambda s, m: s.Get(pb.GetRequest(keys=["nope"], collection=coll),
                                          metadata=m)),
        "Scroll": ("scroll", lambda s, m: s.Scroll(pb.ScrollRequest(collection=coll,
                                                                    page_size=2), metadata=m)),
        "UpdateMetadata": ("update", lambda s, m: s.UpdateMetadata(pb.UpdateMetadataRequest(
            keys=["nope"], set={"a": pb.Value(int_value=1)}, collection=coll), metadata=m)),
        "DescribeCollection": ("describe", lambda s, m: s.DescribeCollection(
            pb.DescribeCollectionRequest(name=coll), metadata=m)),
        "CreateCollection": ("create", lambda s, m: s.CreateCollection(
            pb.CreateCollectionRequest(name=coll, exist_ok=True), metadata=m)),
        "DropCollection": ("drop", lambda s, m: s.DropCollection(  # a name no one made
            pb.DropCollectionRequest(name=f"ghost_{coll}", confirm_name=f"ghost_{coll}"),
            metadata=m)),
    }


def outcome(call, stub, token) -> str:
    try:
        call(stub, (("authorization", f"Bearer {token}"),) if token else ())
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name


role_st = st.sampled_from((None, *ROLES))
table_st = st.fixed_dictionaries({t: st.fixed_dictionaries({c: role_st for c in
                                                             (*COLLECTIONS, "*")})
                                  for t in TOKENS})


@pytest.fixture(scope="module")
def tenant_server(model, tmp_path_factory):
    from crossbit.server.config import ServerConfig
    from crossbit.server.rpc.app import create_server

    folder = tmp_path_factory.mktemp("tenants")
    tokens = folder / "tokens.json"
    tokens.write_text(json.dumps({"token": [{"name": "boot", "token": "boot-token-1",
                                             "collections": {"*": "read"}}]}))
    running = create_server(ServerConfig(port=0, data=str(folder / "data"), index="flat",
                                         snapshot_interval=0, auth_token=ADMIN,
                                         tokens_file=str(tokens), web_port=free_port()),
                            model=model)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    stub = pb_grpc.RetrievalStub(channel)
    admin = (("authorization", f"Bearer {ADMIN}"),)
    for name in COLLECTIONS[1:]:
        stub.CreateCollection(pb.CreateCollectionRequest(name=name), metadata=admin)
    yield running, stub, tokens
    channel.close()
    running.stop(1.0)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck), phases=[Phase.generate])
@given(table_st)
def test_no_call_crosses_a_tenants_boundary(tenant_server, table):
    running, stub, tokens = tenant_server
    entries = [{"name": t, "token": t, "collections": {c: r for c, r in roles.items() if r}}
               for t, roles in table.items() if any(roles.values())]
    tokens.write_text(json.dumps({"token": entries or [{"name": "boot", "token": "boot-token-1",
                                                        "collections": {"*": "read"}}]}))
    assert "reloaded" in running.tokens.reload()  # what SIGHUP does
    principals = {e["token"]: Principal(e["name"], e["collections"]) for e in entries}
    checked = 0
    for token in TOKENS:
        who = principals.get(token)
        for n, coll in enumerate(COLLECTIONS):
            for method, (action, call) in calls(coll, n).items():
                target = f"ghost_{coll}" if method == "DropCollection" else coll
                got = outcome(call, stub, token)
                if who is None:
                    assert got == "UNAUTHENTICATED", (token, method, coll, got)
                elif not who.may(target, action):
                    assert got == "PERMISSION_DENIED", (token, table[token], method, coll, got)
                else:
                    assert got not in ("PERMISSION_DENIED", "UNAUTHENTICATED", "INTERNAL",
                                       "UNKNOWN"), (token, table[token], method, coll, got)
                checked += 1
        listed = outcome(lambda s, m: s.ListCollections(pb.ListCollectionsRequest(), metadata=m),
                         stub, token)
        if who is not None:
            names = {c.name for c in stub.ListCollections(
                pb.ListCollectionsRequest(),
                metadata=(("authorization", f"Bearer {token}"),)).collections}
            assert names == {c for c in COLLECTIONS if who.sees(c)}, (table[token], names)
        else:
            assert listed == "UNAUTHENTICATED"
        web_matrix(running, token, who)
    for method, (_, call) in calls("default", 0).items():  # no token, an unknown one, two
        assert outcome(call, stub, None) == "UNAUTHENTICATED", method
        assert outcome(call, stub, "who-is-this") == "UNAUTHENTICATED", method
    record("tenant_matrix", calls=checked)


def web_matrix(running, token: str, who) -> None:
    """The web API under the same rules: 401 without a known token, 403 without the role."""
    port = running.core.config.web_port
    with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                      headers={"authorization": f"Bearer {token}"}) as web:
        for coll in COLLECTIONS:
            for path, action in (("/api/search?q=a+dog", "search"), ("/api/items", "scroll"),
                                 ("/api/count", "count"), ("/api/stats", "stats")):
                sep = "&" if "?" in path else "?"
                status = web.get(f"{path}{sep}collection={coll}").status_code
                if who is None:
                    assert status == 401, (path, coll, status)
                elif not who.may(coll, action):
                    assert status == 403, (path, coll, status)
                else:
                    assert status == 200, (path, coll, status)
        listed = web.get("/api/collections")
        if who is not None:
            assert {c["name"] for c in listed.json()["collections"]} == \
                {c for c in COLLECTIONS if who.sees(c)}


def test_roles_are_ordered():
    reader, writer = Principal("r", {"shop": "read"}), Principal("w", {"*": "read", "shop": "write"})
    assert reader.may("shop", "search") and not reader.may("shop", "add")
    assert writer.may("shop", "delete") and writer.may("other", "get")
    assert not writer.may("other", "add") and not writer.may("shop", "drop")
    assert set(NEEDS.values()) <= set(ROLES)
