"""GET /v1/models and /v1/models/{id}: the served model and its card; GET /models in Infinity's shape."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from clipserve.api.auth import get_caller
from clipserve.api.dependencies import AppContext, get_context
from clipserve.api.protocol import ModelCard, ModelList
from clipserve.model_card import HUB_ID, MODEL_ALIASES, MODEL_FACTS
from clipserve.runtime.weights import WeightsInfo, WeightsKind
from clipserve.service.model_names import resolve_model_name

router = APIRouter(tags=["models"], dependencies=[Depends(get_caller)])
# Infinity's clients and litellm's infinity/ provider list models at the root, and infinity-client parses each
# entry as Infinity's ModelInfo: `stats` required, `owned_by` either absent or "infinity". So /models answers in
# that shape (the same model, its queue as `stats`, no owner); /v1/models stays OpenAI's.
infinity_router = APIRouter(dependencies=[Depends(get_caller)], include_in_schema=False)


def public_source(weights: WeightsInfo) -> str:
    """Where the weights came from, as anyone may read it: a hub id or 'random', never a local path (which
    tells a caller about the host's file system; the fingerprint identifies the weights just as well)."""
    if weights.kind is WeightsKind.OPEN_CLIP_FILE:
        return "local open_clip checkpoint"
    if weights.kind is WeightsKind.TRANSFORMERS:
        return "local transformers checkpoint"
    return weights.source  # hf-hub:ORG/REPO or 'random'


def _card(context: AppContext) -> ModelCard:
    weights = context.runtime.weights
    return ModelCard(
        id=HUB_ID,
        created=context.started_at,
        owned_by="laion",
        aliases=sorted(MODEL_ALIASES - {HUB_ID}),
        embedding_dimensions=context.runtime.embed_dim,
        license=MODEL_FACTS.license,
        task=MODEL_FACTS.task,
        tasks=list(MODEL_FACTS.tasks),
        imagenet_zero_shot_top1=MODEL_FACTS.imagenet_zero_shot_top1,
        weights={
            "kind": weights.kind.value,
            "source": public_source(weights),
            "fingerprint": weights.fingerprint,
            "random": weights.is_random,
        },
        card=asdict(MODEL_FACTS),
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(context: Annotated[AppContext, Depends(get_context)]) -> ModelList:
    return ModelList(data=[_card(context)])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def retrieve_model(model_id: str, context: Annotated[AppContext, Depends(get_context)]) -> ModelCard:
    resolve_model_name(model_id)
    return _card(context)


@infinity_router.get("/models")
async def list_models_infinity_shape(context: Annotated[AppContext, Depends(get_context)]) -> dict[str, Any]:
    card = _card(context)
    queues = context.queues
    queued = queues.images.depth + queues.texts.depth if queues is not None else 0
    return {
        "object": "list",
        "data": [
            {
                "id": card.id,
                "object": "model",
                "created": card.created,
                "backend": "clipserve",
                "capabilities": ["embed", "image_embed", "rerank", "classify"],
                "stats": {"queue_absolute": queued, "batch_size": context.settings.image_batch_size},
            }
        ],
    }
