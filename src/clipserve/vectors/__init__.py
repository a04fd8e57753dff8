"""Vector storage for collections: the VectorStore protocol, the embedded store and the Milvus one."""
