"""The milvus kind's collection: its schema (version, fields, index), created once, and the checks
on open (schema version, code length, the model that made the codes)."""

from __future__ import annotations

import json
import logging

from crossbit.indexer.interface import ModelMismatch

log = logging.getLogger(__name__)

SCHEMA = 3  # 1: a local id counter; 2: the key as a VARCHAR primary key (before 2026-12-03)
MAX_TEXT = 65535  # Milvus's VARCHAR limit, in bytes
# caller ids are below; the allocator's ids (Milvus auto ids: about 2**58.7, 2**58 since 2004) above
ASSIGNED_FROM = 2**58
MAX_KEY_BYTES = 4096
MAX_EMBEDDING_DIM = 4096  # Milvus's ARRAY capacity limit


class CollectionSchema:
    """Creating and checking the collection and its id allocator; mixed into MilvusIndex,
    whose ``_client``, ``_call``, ``collection``, ``allocator``, ``bits``, ``uri``,
    ``index_type`` and ``nlist`` it uses."""

    def _open_collection(self, model: dict | None) -> dict | None:
        from pymilvus import DataType

        if not self._call(self._client.has_collection, self.collection):
            record = json.dumps({"crossbit_schema": SCHEMA, "bits": self.bits, "model": model})
            schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False,
                                                description=record)
            # the id is the primary key: one row per id, whichever servers write it
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("code", DataType.BINARY_VECTOR, dim=self.bits)
            schema.add_field("key", DataType.VARCHAR, max_length=MAX_KEY_BYTES)
            schema.add_field("metadata", DataType.JSON)
            schema.add_field("embedding", DataType.ARRAY, element_type=DataType.FLOAT,
                             max_capacity=MAX_EMBEDDING_DIM)
            schema.add_field("thumbnail", DataType.VARCHAR, max_length=MAX_TEXT)
            schema.add_field("added", DataType.DOUBLE)
            params = self._client.prepare_index_params()
            params.add_index(field_name="code", index_type=self.index_type,
                             metric_type="HAMMING",
                             params={"nlist": self.nlist} if self.index_type == "BIN_IVF_FLAT"
                             else {})
            self._call(self._client.create_collection, self.collection, schema=schema,
                       index_params=params, consistency_level="Strong")
            log.info("milvus: created collection %s at %s (%s)", self.collection, self.uri,
                     self.index_type)
        record = self._check_schema(model)
        if not self._call(self._client.has_collection, self.allocator):
            schema = self._client.create_schema(auto_id=True, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True, auto_id=True)
            schema.add_field("v", DataType.BINARY_VECTOR, dim=8)
            params = self._client.prepare_index_params()
            params.add_index(field_name="v", index_type="BIN_FLAT", metric_type="HAMMING")
            self._call(self._client.create_collection, self.allocator, schema=schema,
                       index_params=params)
            self._call(self._client.release_collection, self.allocator)  # never searched
        self._call(self._client.load_collection, self.collection)
        return record

    def _check_schema(self, model: dict | None) -> dict | None:
        info = self._call(self._client.describe_collection, self.collection)
        fields = {f["name"]: f for f in info["fields"]}
        where = f"collection {self.collection} at {self.uri}"
        try:
            version = json.loads(info.get("description") or "{}").get("crossbit_schema")
        except ValueError:
            version = None
        if version != SCHEMA or not fields.get("id", {}).get("is_primary"):
            raise ValueError(f"{where} has the schema of an older crossbit (schema {version}, "
                             f"this one writes schema {SCHEMA}: the id as the primary key); give "
                             "another collection, or drop it and add the items again")
        dim = int(fields["code"]["params"]["dim"])
        if dim != self.bits:
            raise ValueError(f"{where} holds {dim}-bit codes, this model makes {self.bits}-bit "
                             "codes")
        try:
            record = json.loads(info.get("description") or "{}").get("model")
        except ValueError:
            record = None
        if model is not None and record is None:
            log.warning("%s: no model recorded (made without one); not checked", where)
        elif model is not None and record.get("fingerprint") != model.get("fingerprint"):
            raise ModelMismatch(
                f"{where} holds codes made by {record.get('name')} (fingerprint "
                f"{record.get('fingerprint')}), not by {model.get('name')} (fingerprint "
                f"{model.get('fingerprint')}): serve it with the model that made it, or give "
                "this model another collection")
        return record
