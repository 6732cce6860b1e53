"""The ONNX backend: model folders built by onnxruntime-genai's builder, run by its Generator.

A model is a folder: ``genai_config.json``, the ONNX graph and weights, the tokenizer and,
when ``quantize`` built it, ``edge_agent.json`` naming its base identity and LoRA slots.

Prompts, prefix reuse and the decode loop follow ``_prompted.PromptedBackend``; a step is
onnxruntime-genai's ``generate_next_token`` over its KV cache. A greedy request reuses the
previous request's generator when schema and adapter match, rewound to the longest common
token prefix (``rewind_to``), so a fixed system prompt is evaluated once. JSON schemas go
to its guidance (llguidance, in the CPU wheel too) with ``json.dumps``'s separators: the
output is the canonical call JSON the flywheel trains on. Text the schema forces is fed in
one batch and gets logprob 0.0, as on llama.cpp; other logprobs are the raw logits'
log-softmax.

Adapters fill the model's LoRA slots through ``og.Adapters`` (see adapters.onnx_export); a
GGUF adapter is converted on load. The execution provider comes from the device profile;
when it cannot load and the profile allows it, the model runs on CPU with a warning.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from edge_agent.backends._chat_template import CHATML_TEMPLATE, ChatTemplate
from edge_agent.backends._prompted import (
    CLOSED_MID_STREAM,
    PromptedBackend,
    Run,
    Step,
    reusable_prefix,
)
from edge_agent.backends._schema_limits import bounded_schema
from edge_agent.backends._streaming import Clock, log_softmax_at
from edge_agent.backends.base import GenerationRequest
from edge_agent.errors import (
    AdapterError,
    BackendError,
    ContextLengthError,
    EdgeAgentError,
    InvalidAdapterError,
    InvalidModelFileError,
    ModelNotFoundError,
    UnsupportedSchemaError,
)
from edge_agent.lora.onnx import (
    check_fits,
    lora_params_from_gguf,
    read_onnx_adapter,
    write_onnx_adapter,
)
from edge_agent.models.gguf import BaseModelIdentity

try:
    import onnxruntime_genai as og
except ImportError as exc:  # an optional extra: say how to get it
    raise BackendError(
        "the onnx backend needs onnxruntime-genai; install it with: pip install 'edge-agent[onnx]'"
    ) from exc

__all__ = ["GENAI_CONFIG", "MODEL_INFO", "OnnxBackend", "model_folder", "read_genai_config"]

logger = logging.getLogger(__name__)

GENAI_CONFIG = "genai_config.json"
MODEL_INFO = "edge_agent.json"  # written by quantize: base identity, LoRA slots
# Profile execution_provider -> onnxruntime-genai's provider name (None: its default, CPU).
PROVIDERS: dict[str, str | None] = {"cpu": None, "cuda": "cuda"}
CANONICAL_JSON = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_CORRUPT = (  # onnxruntime's words for a damaged file, as opposed to an unsupported graph
    "Protobuf parsing failed",
    "Deserialize tensor",
    "External initializer",
    "No such file",
)


class _Run(Run):
    """One request's generator, streaming detokenizer and text so far."""

    def __init__(
        self,
        clock: Clock,
        cached: int,
        request: GenerationRequest,
        generator: og.Generator,
        decode: Callable[[int], str],
    ) -> None:
        super().__init__(clock, cached, request.logprobs)
        self.generator = generator
        self.decode = decode
        self.constrained = request.json_schema is not None
        self.text: list[str] = []


class OnnxBackend(PromptedBackend[_Run]):
    """An onnxruntime-genai model folder, loaded once; adapters switch per request."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        execution_provider: str = "cpu",
        fallback_to_cpu: bool = True,
        seed: int = 0,
        **llama_options: Any,
    ) -> None:
        # A profile's llama.cpp options (gpu_layers, mmap, KV type, ...) have no ONNX meaning.
        del llama_options
        super().__init__()
        self._folder = model_folder(model_path)
        self._config = read_genai_config(self._folder)
        self._info = _read_info(self._folder)
        self._identity = _identity_of(self._info, self._folder)
        self._model, self.execution_provider = _load_model(
            self._folder, execution_provider, n_threads, fallback_to_cpu
        )
        self._tokenizer = og.Tokenizer(self._model)
        self._pieces = _piece_tokenizer(self._folder)
        self._control_texts = _control_texts(self._pieces)
        self._template = _chat_template(self._folder)
        model = self._config["model"]
        self._n_ctx = min(n_ctx, int(model.get("context_length") or n_ctx))
        self._eos = {int(t) for t in np.atleast_1d(model.get("eos_token_id", []))}
        self._seed = seed
        self._lora = og.Adapters(self._model)  # the adapters loaded, by name (``_loaded``)
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._held: _Held | None = None

    @property
    def identity(self) -> BaseModelIdentity | None:
        return self._identity

    @property
    def model_name(self) -> str:
        return str(self._info.get("name") or self._folder.name)

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    def token_logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Raw logits after each prefix of ``tokens`` (row i predicts token i + 1), with the
        active adapter: what parity tests and perplexity compare."""
        self._check_open()
        if len(tokens) > self._n_ctx:
            raise ContextLengthError(f"{len(tokens)} tokens exceed the context of {self._n_ctx}")
        self._held = None
        params = og.GeneratorParams(self._model)
        params.set_search_options(max_length=min(self._n_ctx, len(tokens) + 1), batch_size=1)
        generator = og.Generator(self._model, params)
        if self._active is not None:
            generator.set_active_adapter(self._lora, self._active)
        rows = []
        for token in tokens:
            generator.append_tokens(np.array([token], dtype=np.int32))
            rows.append(np.array(generator.get_logits()[0, -1], dtype=np.float32))
        return np.stack(rows)

    # -- prompt and decoding ----------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return [int(t) for t in self._tokenizer.encode(text)]

    def _encode_text(self, text: str, *, special: bool) -> list[int]:
        """Through the folder's tokenizer.json: onnxruntime-genai always parses control
        tokens, Hugging Face's tokenizer can spell them as text."""
        assert self._pieces is not None  # without one there are no control texts to keep apart
        self._pieces.encode_special_tokens = not special
        return list(self._pieces.encode(text, add_special_tokens=False).ids)

    def _start(self, request: GenerationRequest, prompt: list[int], clock: Clock) -> _Run:
        generator, cached = self._generator_for(request, prompt)
        return _Run(clock, cached, request, generator, self._tokenizer.create_stream().decode)

    def _generator_for(
        self, request: GenerationRequest, prompt: list[int]
    ) -> tuple[og.Generator, int]:
        """A generator holding the prompt, and how many prompt tokens came from its cache."""
        key = _cache_key(request, self._active)
        held = self._held
        if key is not None and held is not None and held.key == key:
            sequence = held.generator.get_sequence(0)
            # Rewind strictly below the held length: that also resets the guidance state.
            keep = min(reusable_prefix(sequence, prompt), len(sequence) - 1)
            if keep > 0:
                held.generator.rewind_to(keep)
                _append(held.generator, prompt[keep:])
                return held.generator, keep
        self._held = None  # free the old KV cache before allocating a new one
        generator = self._new_generator(request)
        _append(generator, prompt)
        if key is not None:
            self._held = _Held(key, generator)
        return generator, 0

    def _new_generator(self, request: GenerationRequest) -> og.Generator:
        params = og.GeneratorParams(self._model)
        params.set_search_options(**_search_options(request, self._n_ctx, self._seed))
        schema = request.json_schema
        try:
            if schema is not None:  # checked and capped first: UnsupportedSchemaError
                guidance = json.dumps(_canonical(bounded_schema(schema)))
                params.set_guidance("json_schema", guidance, True)
            generator = og.Generator(self._model, params)
        except RuntimeError as exc:
            if schema is not None:
                message = f"cannot constrain output to this JSON schema: {exc}"
                raise UnsupportedSchemaError(message) from exc
            raise BackendError(f"onnxruntime-genai could not start generating: {exc}") from exc
        if self._active is not None:
            generator.set_active_adapter(self._lora, self._active)
        return generator

    def _step(self, run: _Run, budget: int) -> Step:
        """One ``generate_next_token``: the forced tokens it fed, then the one it chose."""
        if self._closed:
            raise BackendError(CLOSED_MID_STREAM)
        generator = run.generator
        before = generator.token_count()
        try:
            # The logits that pick the next token (computed now, after any forced tokens).
            logits = np.array(generator.get_logits()[0, -1]) if run.logprobs else None
            generator.generate_next_token()
        except RuntimeError as exc:
            raise BackendError(f"onnxruntime-genai failed to generate: {exc}") from exc
        chosen = int(generator.get_next_tokens()[0])
        new = tuple(int(t) for t in generator.get_sequence(0)[before:])
        eos = chosen in self._eos
        if eos:  # the end token is not output (nor, in some versions, kept in the sequence)
            new = tuple(t for t in new if t not in self._eos)
        run.clock.first_token()
        logprobs = _logprobs(logits, len(new), chosen, eos) if logits is not None else ()
        tokens, logprobs = new[:budget], logprobs[:budget]
        piece = "".join(run.decode(t) for t in tokens)
        run.text.append(piece)
        # The model ended, the context is full, or the JSON value is closed.
        ended = eos or generator.is_done() or _json_done(run, piece)
        return Step(tokens, piece, logprobs, ended)

    def _drop_cache(self) -> None:
        self._held = None

    def _release(self) -> None:
        self._held = None
        del self._lora, self._tokenizer, self._model
        if self._scratch is not None:
            self._scratch.cleanup()

    # -- adapters ---------------------------------------------------------------------------

    def _load_adapter(self, name: str, path: Path) -> Path:
        """An ``.onnx_adapter``, or a GGUF adapter made for this base model, converted; returns
        the file onnxruntime-genai loaded."""
        if not path.is_file():
            raise InvalidAdapterError(f"{path}: no such adapter file")
        slots = self._slots()
        if path.suffix.lower() == ".gguf":
            params = lora_params_from_gguf(path, self._identity_for(path))
            check_fits(params, slots, path)
            path = write_onnx_adapter(params, self._scratch_dir() / f"{len(self._loaded)}.onnx")
        else:
            check_fits(read_onnx_adapter(path), slots, path)
        try:
            self._lora.load(str(path), name)
        except RuntimeError as exc:
            raise InvalidAdapterError(f"onnxruntime could not load {path.name}: {exc}") from exc
        return path

    def _apply_adapter(self, name: str | None) -> None:
        """Nothing to do now: each new generator takes the active adapter, and a held one is
        reused only under the adapter it was made with (``_cache_key``)."""

    def _identity_for(self, adapter: Path) -> BaseModelIdentity:
        identity = self.identity
        if identity is None:
            raise AdapterError(
                f"this ONNX model names no base model ({MODEL_INFO} missing), so the GGUF "
                f"adapter {adapter.name} cannot be checked against it; rebuild the model with "
                "`edge-agent quantize`"
            )
        return identity

    def _slots(self) -> dict[str, tuple[int, int]]:
        slots = self._info.get("lora_slots")
        if not isinstance(slots, dict) or not slots:
            raise AdapterError(
                f"{self._folder.name} has no LoRA slots, so adapters cannot be applied; "
                "rebuild it with `edge-agent quantize`, which adds them"
            )
        return {key: (int(v[0]), int(v[1])) for key, v in slots.items()}

    def _scratch_dir(self) -> Path:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="edge-agent-onnx-")
        return Path(self._scratch.name)


# --- loading ----------------------------------------------------------------------------------


def model_folder(path: str | Path) -> Path:
    """The model folder for a path to it (or to a file inside it)."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        raise InvalidModelFileError(
            f"{path.name} is a GGUF file, which the llama_cpp backend runs; for the onnx backend "
            f"build a model folder: `edge-agent quantize {path} --variants onnx-int4`"
        )
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise ModelNotFoundError(f"{path}: no such ONNX model folder")
    return path


def read_genai_config(folder: Path) -> dict[str, Any]:
    """The folder's genai_config.json, checked enough to name what is wrong before loading."""
    path = folder / GENAI_CONFIG
    if not path.is_file():
        raise InvalidModelFileError(
            f"{folder}: has no {GENAI_CONFIG}, so onnxruntime-genai cannot run it; build the "
            "folder with `edge-agent quantize BASE --variants onnx-int4` (or its model builder)"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        decoder = config["model"]["decoder"]
        weights = folder / str(decoder["filename"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidModelFileError(
            f"{path}: is not a valid onnxruntime-genai config ({exc})"
        ) from exc
    if not weights.is_file():
        raise InvalidModelFileError(f"{folder}: the ONNX graph {weights.name} is missing")
    return dict(config)


def _read_info(folder: Path) -> dict[str, Any]:
    path = folder / MODEL_INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InvalidModelFileError(
            f"{path}: is not valid JSON ({exc}); rebuild the model"
        ) from exc
    return info if isinstance(info, dict) else {}


def _identity_of(info: dict[str, Any], folder: Path) -> BaseModelIdentity | None:
    fields = info.get("base_identity")
    if fields is None:
        return None
    try:
        return BaseModelIdentity(**fields)
    except TypeError as exc:
        raise InvalidModelFileError(f"{folder / MODEL_INFO}: bad base_identity ({exc})") from exc


def _load_model(
    folder: Path, provider: str, threads: int | None, fallback: bool
) -> tuple[og.Model, str]:
    """The model on ``provider``, or on CPU when that provider cannot load and ``fallback``."""
    if provider == "cpu":
        return _model_on(folder, None, threads), "cpu"
    try:
        if provider not in PROVIDERS:
            raise BackendError(f"onnxruntime-genai has no {provider!r} execution provider")
        return _model_on(folder, PROVIDERS[provider], threads), provider
    except EdgeAgentError as exc:
        if not fallback:
            raise BackendError(
                f"the {provider} execution provider is not usable ({exc}); install its build "
                "of onnxruntime-genai (onnxruntime-genai-cuda for CUDA), or allow "
                "fallback_to_cpu in the device profile"
            ) from exc
        model = _model_on(folder, None, threads)  # a broken model fails here too, and says so
        logger.warning(
            "the %s execution provider is not usable (%s); running on CPU", provider, exc
        )
        return model, "cpu"


def _model_on(folder: Path, provider: str | None, threads: int | None) -> og.Model:
    try:
        config = og.Config(str(folder))
        config.clear_providers()
        if provider is not None:
            config.append_provider(provider)
        if threads:
            options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
            config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        return og.Model(config)
    except RuntimeError as exc:
        raise _load_error(folder, exc) from exc


def _load_error(folder: Path, exc: RuntimeError) -> EdgeAgentError:
    message = str(exc)
    if "Unsupported model_type" in message:
        return BackendError(
            f"{folder.name}: onnxruntime-genai {og.__version__} cannot run this architecture "
            f"({message}); build the model from a supported one (llama, qwen, phi, gemma, ...)"
        )
    if any(marker in message for marker in _CORRUPT):
        return InvalidModelFileError(
            f"{folder.name}: the ONNX model is corrupt or truncated ({message}); rebuild it"
        )
    return BackendError(f"onnxruntime-genai could not load {folder.name}: {message}")


def _chat_template(folder: Path) -> ChatTemplate:
    config: dict[str, Any] = {}
    path = folder / "tokenizer_config.json"
    if path.is_file():
        config = json.loads(path.read_text(encoding="utf-8"))
    jinja = folder / "chat_template.jinja"
    source = jinja.read_text(encoding="utf-8") if jinja.is_file() else config.get("chat_template")
    return ChatTemplate(
        source if isinstance(source, str) and source else CHATML_TEMPLATE,
        bos_token=_token_text(config.get("bos_token")),
        eos_token=_token_text(config.get("eos_token")),
    )


def _piece_tokenizer(folder: Path) -> tokenizers.Tokenizer | None:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception subclass
        raise InvalidModelFileError(f"{path}: is not a tokenizer ({exc}); rebuild it") from exc


def _control_texts(tokenizer: tokenizers.Tokenizer | None) -> tuple[str, ...]:
    """The special tokens' text: what onnxruntime-genai's encode turns into control tokens."""
    if tokenizer is None:
        return ()
    added = tokenizer.get_added_tokens_decoder().values()
    return tuple(t.content for t in added if t.special and t.content)


def _token_text(value: Any) -> str:
    if isinstance(value, dict):  # transformers may save special tokens as AddedToken dicts
        value = value.get("content")
    return value if isinstance(value, str) else ""


# --- decoding helpers -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Held:
    """The generator kept for prefix reuse, and the request settings its KV is valid for."""

    key: tuple[Any, ...]
    generator: og.Generator


def _cache_key(request: GenerationRequest, adapter: str | None) -> tuple[Any, ...] | None:
    """What a held generator must share with a request to be reused; None for sampled
    requests, which get a fresh generator so that one seed always gives one output."""
    if request.temperature > 0:
        return None
    schema = json.dumps(request.json_schema, sort_keys=True) if request.json_schema else None
    return (schema, adapter)


def _search_options(request: GenerationRequest, n_ctx: int, seed: int) -> dict[str, Any]:
    options: dict[str, Any] = {"max_length": n_ctx, "batch_size": 1}
    if request.temperature <= 0:
        return options | {"do_sample": False}
    # top_k = 0 selects pure top-p sampling, as the llama.cpp backend does.
    return options | {
        "do_sample": True,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": 0,
        "random_seed": seed if request.seed is None else request.seed,
    }


def _canonical(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema with llguidance told to separate like ``json.dumps`` (and nothing else)."""
    return {"x-guidance": dict(CANONICAL_JSON)} | dict(schema)


def _append(generator: og.Generator, tokens: Sequence[int]) -> None:
    try:
        generator.append_tokens(np.asarray(tokens, dtype=np.int32))
    except RuntimeError as exc:
        raise BackendError(f"onnxruntime-genai failed to evaluate the prompt: {exc}") from exc


def _logprobs(logits: np.ndarray, n_new: int, chosen: int, eos: bool) -> tuple[float, ...]:
    """All but the chosen (last) new token were forced by the schema and get 0.0; an end
    token is not output, so it gets none."""
    last = () if eos else (log_softmax_at(logits, chosen),)
    return (0.0,) * (n_new - len(last)) + last


def _json_done(run: _Run, piece: str) -> bool:
    """A closed top-level object or array admits nothing more: stop without one more step."""
    if not run.constrained or not piece.rstrip().endswith(("}", "]")):
        return False
    try:
        json.loads("".join(run.text))
    except ValueError:
        return False
    return True
