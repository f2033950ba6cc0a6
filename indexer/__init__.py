"""crossbit.indexer: binary FAISS indexes over a durable SQLite store."""
