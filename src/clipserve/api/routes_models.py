"""GET /v1/models and /v1/models/{id}: the served model and its card."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from clipserve.api.dependencies import AppContext, get_context
from clipserve.api.protocol import ModelCard, ModelList
from clipserve.model_card import HUB_ID, MODEL_ALIASES, MODEL_CARD
from clipserve.service.model_names import resolve_model_name

router = APIRouter(tags=["models"])


def _card(context: AppContext) -> ModelCard:
    weights = context.runtime.weights
    return ModelCard(
        id=HUB_ID,
        created=context.started_at,
        owned_by="laion",
        aliases=sorted(MODEL_ALIASES - {HUB_ID}),
        embedding_dimensions=context.runtime.embed_dim,
        license=str(MODEL_CARD["license"]),
        task=str(MODEL_CARD["task"]),
        tasks=list(MODEL_CARD["tasks"]),  # type: ignore[call-overload]
        imagenet_zero_shot_top1=float(MODEL_CARD["imagenet_zero_shot_top1"]),  # type: ignore[arg-type]
        weights={
            "kind": weights.kind.value,
            "source": weights.source,
            "fingerprint": weights.fingerprint,
            "random": weights.is_random,
        },
        card=MODEL_CARD,
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(context: Annotated[AppContext, Depends(get_context)]) -> ModelList:
    return ModelList(data=[_card(context)])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def retrieve_model(model_id: str, context: Annotated[AppContext, Depends(get_context)]) -> ModelCard:
    resolve_model_name(model_id)
    return _card(context)
