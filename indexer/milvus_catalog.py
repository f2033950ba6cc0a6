"""The catalog of crossbit collections kept in Milvus (``crossbit_catalog``), so that every server
sharing a Milvus sees the collections any of them created."""

from __future__ import annotations

import json
import logging
import re
import uuid

from crossbit.indexer.milvus_rows import MilvusUnavailable, message

log = logging.getLogger(__name__)

CATALOG = "crossbit_catalog"
NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")  # collection names (quoted safely in expressions)


class MilvusCatalog:
    """One row per collection: its name (the primary key) and its record as JSON."""

    def __init__(self, uri: str, token: str | None = None, database: str | None = None,
                 timeout_s: float = 10.0):
        from pymilvus import DataType, MilvusClient

        kwargs = {"uri": uri, "token": token or "", "timeout": timeout_s,
                  "alias": f"crossbit-catalog-{uuid.uuid4().hex}"}
        if database:
            kwargs["db_name"] = database
        self.timeout_s = timeout_s
        try:
            self._client = MilvusClient(**kwargs)
            if not self._client.has_collection(CATALOG, timeout=timeout_s):
                schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False,
                                                    description="crossbit collections")
                schema.add_field("name", DataType.VARCHAR, max_length=64, is_primary=True)
                schema.add_field("record", DataType.VARCHAR, max_length=65535)
                schema.add_field("v", DataType.BINARY_VECTOR, dim=8)
                params = self._client.prepare_index_params()
                params.add_index(field_name="v", index_type="BIN_FLAT", metric_type="HAMMING")
                self._client.create_collection(CATALOG, schema=schema, index_params=params,
                                               consistency_level="Strong", timeout=timeout_s)
            self._client.load_collection(CATALOG, timeout=timeout_s)
        except Exception as exc:
            raise MilvusUnavailable(f"Milvus at {uri}: the collection catalog: {message(exc)}"
                                    ) from None

    def _query(self, expr: str) -> list[dict]:
        try:
            rows = self._client.query(CATALOG, filter=expr, output_fields=["name", "record"],
                                      consistency_level="Strong", timeout=self.timeout_s)
        except Exception as exc:
            raise MilvusUnavailable(f"Milvus: the collection catalog: {message(exc)}") from None
        return [json.loads(r["record"]) for r in rows]

    def records(self) -> list[dict]:
        return self._query('name != ""')

    def record(self, name: str) -> dict | None:
        if not NAME.fullmatch(name):
            return None
        rows = self._query(f'name == "{name}"')
        return rows[0] if rows else None

    def put(self, record: dict) -> None:
        self._client.upsert(CATALOG, [{"name": record["name"], "record": json.dumps(record),
                                       "v": b"\0"}], timeout=self.timeout_s)

    def remove(self, name: str) -> None:
        if NAME.fullmatch(name):
            self._client.delete(CATALOG, filter=f'name == "{name}"', timeout=self.timeout_s)
