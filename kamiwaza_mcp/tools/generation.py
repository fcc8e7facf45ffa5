"""Tools that send text generation requests to a deployed model."""

from __future__ import annotations

from typing import Annotated, Any

from mcp_types import CallToolResult
from pydantic import BaseModel, Field

from ..client import APIError, DeploymentError, InvalidRequestError, KamiwazaClient
from ..client.models import ChatMessage, Deployment, DeploymentStatus
from ._common import DeploymentId, ToolContext, app_of, canonical_uuid, structured, tool

__all__ = ["TOOLS"]

MaxTokens = Annotated[int, Field(ge=1, le=4096, description="maximum number of tokens to generate")]
Prompt = Annotated[str, Field(min_length=1, max_length=200_000, description="the prompt text")]

# Next step for a deployment that is not DEPLOYED, by status.
_NOT_READY_HINTS = {
    DeploymentStatus.UNLOADED: "call load_model to load it back",
    DeploymentStatus.STOPPED: "deploy the model again with deploy_model",
    DeploymentStatus.FAILED: "call get_deployment for the error",
    DeploymentStatus.ERROR: "call get_deployment for the error",
}


class TokenUsage(BaseModel):
    """Token counts of one generation."""

    prompt_tokens: int = Field(description="tokens in the prompt")
    completion_tokens: int = Field(description="tokens generated")
    total_tokens: int = Field(description="prompt and generated tokens together")


class GenerationResult(BaseModel):
    """Generated text with why it ended and the token counts."""

    deployment_id: str = Field(description="UUID of the deployment that generated")
    text: str = Field(description="the generated text")
    finish_reason: str | None = Field(
        description="stop (a natural end or a stop string) or length (max_tokens reached)"
    )
    usage: TokenUsage = Field(description="token counts")


class SimpleGenerationResult(BaseModel):
    """Generated text."""

    deployment_id: str = Field(description="UUID of the deployment that generated")
    text: str = Field(description="the generated text")


@tool("Generate text (simple)", read_only=True)
async def simple_generate(
    ctx: ToolContext,
    deployment_id: DeploymentId,
    prompt: Prompt,
    max_tokens: MaxTokens = 256,
) -> Annotated[CallToolResult, SimpleGenerationResult]:
    """Send `prompt` as one user chat message to a DEPLOYED deployment and return the reply text.

    For sampling settings, several messages or token counts, use generate.
    """
    client = app_of(ctx).client
    deployment = await _ready_deployment(client, deployment_id)
    body = {
        "model": _served_name(deployment),
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
    }
    completion = await client.chat_completion(deployment, body)
    if not completion.choices:
        raise _no_choices(deployment)
    text = completion.choices[0].message.content
    return structured(text, SimpleGenerationResult(deployment_id=deployment.id, text=text))


@tool("Generate text", read_only=True)
async def generate(
    ctx: ToolContext,
    deployment_id: DeploymentId,
    prompt: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=200_000,
            description="text for the model to continue, sent to /v1/completions without a chat template; "
            "give this or messages",
        ),
    ] = None,
    messages: Annotated[
        list[ChatMessage] | None,
        Field(
            min_length=1,
            max_length=256,
            description="chat messages, each {role: system|user|assistant, content}, sent to /v1/chat/completions; "
            "give this or prompt",
        ),
    ] = None,
    max_tokens: MaxTokens = 256,
    temperature: Annotated[
        float | None, Field(ge=0, le=2, description="sampling temperature; 0 is greedy; omit for the default")
    ] = None,
    top_p: Annotated[
        float | None, Field(gt=0, le=1, description="nucleus sampling probability mass; omit for the default")
    ] = None,
    stop: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=256)]] | None,
        Field(max_length=4, description="up to 4 strings that end the generation when produced"),
    ] = None,
    seed: Annotated[
        int | None, Field(ge=0, le=2**63 - 1, description="random seed for reproducible sampling")
    ] = None,
) -> Annotated[CallToolResult, GenerationResult]:
    """Generate text on a DEPLOYED deployment from a prompt or from chat messages (exactly one of them).

    Returns the text, why it ended (stop or length) and the token counts.
    """
    if (prompt is None) == (messages is None):
        raise InvalidRequestError(
            "generate needs exactly one of prompt and messages, got "
            + ("both" if prompt is not None else "neither"),
            hint="pass prompt for plain text completion, or messages for a chat",
        )
    client = app_of(ctx).client
    deployment = await _ready_deployment(client, deployment_id)
    body: dict[str, Any] = {"model": _served_name(deployment), "max_tokens": max_tokens}
    sampling = {"temperature": temperature, "top_p": top_p, "stop": stop, "seed": seed}
    body.update({key: value for key, value in sampling.items() if value is not None})

    if messages is not None:
        body["messages"] = [message.model_dump() for message in messages]
        chat = await client.chat_completion(deployment, body)
        if not chat.choices:
            raise _no_choices(deployment)
        text, finish_reason, usage = (
            chat.choices[0].message.content,
            chat.choices[0].finish_reason,
            chat.usage,
        )
    else:
        body["prompt"] = prompt
        completion = await client.completion(deployment, body)
        if not completion.choices:
            raise _no_choices(deployment)
        text, finish_reason, usage = (
            completion.choices[0].text,
            completion.choices[0].finish_reason,
            completion.usage,
        )

    result = GenerationResult(
        deployment_id=deployment.id,
        text=text,
        finish_reason=finish_reason,
        usage=TokenUsage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        ),
    )
    summary = (
        f"[finish_reason {finish_reason}; {usage.prompt_tokens} prompt + "
        f"{usage.completion_tokens} generated = {usage.total_tokens} tokens]"
    )
    return structured(f"{text}\n\n{summary}", result)


async def _ready_deployment(client: KamiwazaClient, deployment_id: str) -> Deployment:
    """Return the deployment, or raise DeploymentError with the next step when it cannot generate."""
    deployment = await client.get_deployment(canonical_uuid(deployment_id, "deployment", "list_deployments"))
    if deployment.status == DeploymentStatus.DEPLOYED:
        return deployment
    hint = _NOT_READY_HINTS.get(
        deployment.status, "call get_deployment_status until it is DEPLOYED, then generate again"
    )
    raise DeploymentError(f"deployment {deployment.id} is {deployment.status}, not DEPLOYED", hint=hint)


def _served_name(deployment: Deployment) -> str:
    # NOTE: the model's name is sent as `model`. The local platform serves under
    # that name; a remote engine that checks `model` against another served name
    # rejects the request.
    return deployment.m_name or deployment.m_id


def _no_choices(deployment: Deployment) -> APIError:
    return APIError(
        f"deployment {deployment.id} returned no choices",
        hint="retry; if it repeats, check the deployment with get_health",
    )


TOOLS = (simple_generate, generate)
