"""Wire models of the rerank routes: Jina (/v1/rerank), Cohere v2 (/v2/rerank) and Infinity (/rerank).

One request shape (the fields the three conventions share), one response shape per convention: each client
parses its own provider's answer, so the document and usage come back the way that provider writes them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from clipserve.api.protocol import RankUsage, RequestModel

QUERY_DESCRIPTION = "A string, or a text or image item (forms as /v1/embeddings)."
DOCUMENTS_DESCRIPTION = (
    "Texts and/or images (strings or items, forms as /v1/embeddings) to order by relevance."
)
TOP_N_DESCRIPTION = "Return only the best top_n results (all when omitted)."


class JinaRerankRequest(RequestModel):
    """Jina's rerank body (litellm `jina_ai/` sends it to /v1/rerank)."""

    refuse_unknown_fields: ClassVar[bool] = True  # a field we do not honour is a 400 naming it

    model: str | None = None
    query: Any = Field(description=QUERY_DESCRIPTION)
    documents: list[Any] = Field(description=DOCUMENTS_DESCRIPTION)
    top_n: int | None = Field(default=None, description=TOP_N_DESCRIPTION)
    return_documents: bool = Field(default=True, description="Jina's default: documents come back.")


class CohereRerankRequest(RequestModel):
    """Cohere's v2 rerank body (litellm `cohere/` sends it to /v2/rerank)."""

    refuse_unknown_fields: ClassVar[bool] = True  # a field we do not honour is a 400 naming it

    model: str | None = None
    query: Any = Field(description=QUERY_DESCRIPTION)
    documents: list[Any] = Field(description=DOCUMENTS_DESCRIPTION)
    top_n: int | None = Field(default=None, description=TOP_N_DESCRIPTION)
    return_documents: bool = Field(default=False, description="Cohere's default: results carry no document.")


class InfinityRerankRequest(RequestModel):
    """Infinity's rerank body (infinity-client and litellm `infinity/` send it to /rerank)."""

    refuse_unknown_fields: ClassVar[bool] = True  # a field we do not honour is a 400 naming it

    model: str | None = Field(
        default=None, description="Infinity's 'default/not-specified' means the served one."
    )
    query: Any = Field(description=QUERY_DESCRIPTION)
    documents: list[Any] = Field(description=DOCUMENTS_DESCRIPTION)
    top_n: int | None = Field(default=None, description=TOP_N_DESCRIPTION)
    return_documents: bool = Field(
        default=False, description="Infinity's default: results carry no document."
    )
    raw_scores: bool = Field(
        default=False, description="Accepted: the score is the cosine similarity either way (no sigmoid)."
    )


class RerankResult(BaseModel):
    index: int
    relevance_score: float = Field(description="Cosine similarity of query and document, in [-1, 1].")
    document: Any = None


class JinaRerankResponse(BaseModel):
    model: str
    results: list[RerankResult]
    usage: RankUsage


class CohereBilledUnits(BaseModel):
    input_tokens: int
    images: int


class CohereMeta(BaseModel):
    api_version: dict[str, str] = Field(default_factory=lambda: {"version": "2"})
    billed_units: CohereBilledUnits


class CohereRerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    meta: CohereMeta


class InfinityRerankResult(BaseModel):
    index: int
    relevance_score: float = Field(description="Cosine similarity of query and document, in [-1, 1].")
    document: str | None = Field(default=None, description="The text, or an image's source, as sent.")


class InfinityRerankResponse(BaseModel):
    object: Literal["rerank"] = "rerank"
    id: str
    created: int
    model: str
    results: list[InfinityRerankResult]
    usage: RankUsage
