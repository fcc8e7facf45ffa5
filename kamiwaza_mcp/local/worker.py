"""The engine worker process: one loaded model behind an OpenAI-compatible HTTP server.

Run as `python -m kamiwaza_mcp.local.worker --model-path DIR --port-file FILE ...`.
The worker loads the model, binds port 0 on the host, writes the bound port to the
port file (atomically, once the server accepts connections) and serves /health,
/v1/models, /v1/chat/completions and /v1/completions, without streaming.

When the model cannot be loaded, the worker exits with code 2 after writing one
stderr line that starts with `MODEL_LOADING_FAILURE:` or, when memory ran out, `OOM:`.
It ends itself when its parent process exits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .engines import (
    ENGINE_NAMES,
    ChatMessage,
    Engine,
    EngineOutOfMemoryError,
    GenerationRequest,
    GenerationResult,
    InvalidPromptError,
    ModelLoadError,
    create_engine,
)

__all__ = ["build_app", "main"]

logger = logging.getLogger(__name__)

EXIT_LOAD_FAILURE = 2
# OpenAI's default max_tokens for /v1/completions. Chat completions default to the rest of the context.
DEFAULT_COMPLETION_MAX_TOKENS = 16
MAX_STOP_STRINGS = 4
PARENT_POLL_SECONDS = 1.0
# Time for a graceful shutdown after the parent exits, before the worker exits hard.
PARENT_EXIT_GRACE_SECONDS = 10.0


# Request bodies


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str | list[_TextPart]

    def to_chat_message(self) -> ChatMessage:
        if isinstance(self.content, str):
            return ChatMessage(role=self.role, content=self.content)
        return ChatMessage(role=self.role, content="".join(part.text for part in self.content))


class _SamplingFields(BaseModel):
    """Fields shared by chat and text completion requests. Unknown OpenAI fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(default=None, ge=1, le=1)
    stream: bool | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        strings = [value] if isinstance(value, str) else value or []
        if len(strings) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are allowed, got {len(strings)}")
        if any(not s for s in strings):
            raise ValueError("stop strings must not be empty")
        return value

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionBody(_SamplingFields):
    """Body of POST /v1/chat/completions."""

    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionBody(_SamplingFields):
    """Body of POST /v1/completions, whose `prompt` is one string or a list of exactly one."""

    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _single_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError(f"exactly one prompt is supported per request, got {len(value)}")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class _BadRequest(Exception):
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


# Application


@dataclass
class _WorkerState:
    engine: Engine
    served_model_name: str
    created: int = field(default_factory=lambda: int(time.time()))
    # One model instance generates one request at a time; waiting requests queue here.
    lock: anyio.Lock = field(default_factory=anyio.Lock)


def build_app(engine: Engine, served_model_name: str) -> Starlette:
    """Build the worker's ASGI app around a loaded engine."""
    state = _WorkerState(engine=engine, served_model_name=served_model_name)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def models(request: Request) -> JSONResponse:
        entry = {
            "id": served_model_name,
            "object": "model",
            "created": state.created,
            "owned_by": "kamiwaza-mcp",
        }
        return JSONResponse({"object": "list", "data": [entry]})

    async def chat_completions(request: Request) -> JSONResponse:
        return await _handle(request, state, chat=True)

    async def completions(request: Request) -> JSONResponse:
        return await _handle(request, state, chat=False)

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ]
    return Starlette(routes=routes)


async def _handle(request: Request, state: _WorkerState, *, chat: bool) -> JSONResponse:
    try:
        generation = await _parse_generation(request, state.engine, chat=chat)
    except _BadRequest as exc:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    started = time.monotonic()
    try:
        async with state.lock:
            result = await anyio.to_thread.run_sync(state.engine.generate, generation)
    except InvalidPromptError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)
    except EngineOutOfMemoryError as exc:
        _write_fatal_line("OOM", str(exc))
        return JSONResponse({"detail": f"out of memory: {exc}"}, status_code=507)

    logger.info(
        "Generated %d tokens after a %d-token prompt in %.2f s (finish_reason %s)",
        result.completion_tokens,
        result.prompt_tokens,
        time.monotonic() - started,
        result.finish_reason,
    )
    return JSONResponse(_response_body(result, state.served_model_name, chat=chat))


async def _parse_generation(request: Request, engine: Engine, *, chat: bool) -> GenerationRequest:
    """Validate the JSON body and turn it into a GenerationRequest, or raise _BadRequest."""
    try:
        raw = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _BadRequest(400, f"request body is not valid JSON: {exc}") from exc
    try:
        body: ChatCompletionBody | CompletionBody = (
            ChatCompletionBody.model_validate(raw) if chat else CompletionBody.model_validate(raw)
        )
    except ValidationError as exc:
        raise _BadRequest(422, _describe_validation_error(exc)) from exc
    if body.stream:
        raise _BadRequest(400, "stream: streaming is not supported; set stream to false")

    try:
        return _to_generation_request(body, engine.context_length)
    except ValueError as exc:
        raise _BadRequest(400, str(exc)) from exc


def _to_generation_request(
    body: ChatCompletionBody | CompletionBody, context_length: int
) -> GenerationRequest:
    common: dict[str, Any] = {
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "stop": body.stop_strings(),
        "seed": body.seed,
    }
    if isinstance(body, ChatCompletionBody):
        # The engine caps max_tokens at the room the prompt leaves in the context.
        max_tokens = body.max_completion_tokens or body.max_tokens or context_length
        messages = tuple(message.to_chat_message() for message in body.messages)
        return GenerationRequest(messages=messages, max_tokens=max_tokens, **common)
    max_tokens = body.max_tokens or DEFAULT_COMPLETION_MAX_TOKENS
    return GenerationRequest(prompt=body.prompt_text(), max_tokens=max_tokens, **common)


def _describe_validation_error(exc: ValidationError) -> str:
    """Name each invalid field by its dotted path, for example `messages.0.role`."""
    problems = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{location}: {error['msg']}")
    return "invalid request body: " + "; ".join(problems)


def _response_body(result: GenerationResult, model: str, *, chat: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": result.finish_reason, "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": result.text}
    else:
        choice["text"] = result.text
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        },
    }


# Process


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kamiwaza_mcp.local.worker",
        description="Serve one model folder over an OpenAI-compatible HTTP API.",
    )
    parser.add_argument("--engine", choices=ENGINE_NAMES, default="transformers", help="inference engine")
    parser.add_argument("--model-path", type=Path, required=True, help="Hugging Face model folder to load")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; the port is chosen by the OS")
    parser.add_argument(
        "--port-file", type=Path, required=True, help="file that receives the bound port when ready"
    )
    parser.add_argument("--served-model-name", help="model name in responses (default: the folder name)")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="device to load onto"
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="INFO",
        help="level of the stderr log",
    )
    return parser.parse_args(argv)


def _write_fatal_line(code: str, message: str) -> None:
    """Write `CODE: message` as one stderr line, which the platform reads to classify the failure."""
    sys.stderr.write(f"{code}: {' '.join(message.split())}\n")
    sys.stderr.flush()


def _start_parent_watchdog(parent_pid: int) -> None:
    """End this process when its parent exits (the worker is then reparented and getppid changes)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        logger.warning("Parent process %d exited; shutting down", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(PARENT_EXIT_GRACE_SECONDS)
        logger.error("Graceful shutdown took over %.0f s; exiting now", PARENT_EXIT_GRACE_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _bind(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto is
    # IPPROTO_TCP, and without it each kept-alive request waits about 40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def _write_port_file(port_file: Path, port: int) -> None:
    """Write the port through a temporary file and a rename, so a reader never sees a partial file."""
    port_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = port_file.with_name(f"{port_file.name}.{os.getpid()}.tmp")
    temporary.write_text(f"{port}\n", encoding="ascii")
    os.replace(temporary, port_file)


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that writes the port file once it accepts connections."""

    def __init__(self, config: uvicorn.Config, port_file: Path) -> None:
        super().__init__(config)
        self.port_file = port_file

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.started or not sockets:
            return
        host, port = sockets[0].getsockname()[:2]
        _write_port_file(self.port_file, port)
        logger.info("Serving on http://%s:%d (port written to %s)", host, port, self.port_file)


async def _serve(app: Starlette, sock: socket.socket, port_file: Path) -> None:
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5
    )
    await _AnnouncingServer(config, port_file).serve(sockets=[sock])


def _load(args: argparse.Namespace) -> Engine | None:
    """Load the engine, or write the fatal stderr line and return None."""
    engine = create_engine(args.engine, args.model_path, device=args.device)
    try:
        engine.load()
    except EngineOutOfMemoryError as exc:
        _write_fatal_line("OOM", str(exc))
        return None
    except ModelLoadError as exc:
        _write_fatal_line("MODEL_LOADING_FAILURE", str(exc))
        return None
    return engine


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker until it is signalled or its parent exits, and return the exit code."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Progress bars would fill the worker log with carriage-return lines. This must run before
    # transformers is imported.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    _start_parent_watchdog(os.getppid())

    logger.info("Loading %s with the %s engine (pid %d)", args.model_path, args.engine, os.getpid())
    engine = _load(args)
    if engine is None:
        return EXIT_LOAD_FAILURE

    served_model_name = args.served_model_name or args.model_path.name
    sock = _bind(args.host)
    anyio.run(_serve, build_app(engine, served_model_name), sock, args.port_file)
    logger.info("Worker stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
