"""`clipserve embed-dataset`: embed whole image datasets on Ray Data into clip-retrieval's output layout.

sources (what the input is and how its shards are read) -> decoding (bytes -> pixels, CPU tasks) ->
pipeline (the Ray Data plan; the model in an actor pool) -> output (atomic per-shard commit) -> faiss_index.
"""
