"""The PaliGemma SentencePiece tokenizer, from a local file, with openpi's BOS and padding rules.

openpi downloads ``gs://big_vision/paligemma_tokenizer.model``; LeRobot loads the same model
through the gated HF repo its ``policy_preprocessor.json`` names (``tokenizer_processor``'s
``tokenizer_name``: ``google/paligemma-3b-pt-224``). vla_gym never downloads: the file comes from
``policy.tokenizer`` (a ``.model`` file or a directory holding ``tokenizer.model`` /
``paligemma_tokenizer.model``), else from the checkpoint directory, else, for a LeRobot dir, from
that repo's ``tokenizer.model`` in the local Hugging Face hub cache where ``AutoTokenizer`` would
find it offline (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, default ``~/.cache/huggingface/hub``;
``huggingface_hub.try_to_load_from_cache``, no network), else from openpi's download cache
(``$OPENPI_DATA_HOME``, default ``~/.cache/openpi``, + ``big_vision/paligemma_tokenizer.model``).

Tokens (openpi ``PaligemmaTokenizer.tokenize``): the first text piece with BOS, the others
without; right-padded with id 0 and a False mask to ``max_len`` (48 pi0, 200 pi0.5); longer
prompts are truncated with a warning, as the reference does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from vla_gym.policies.pi0.prompts import PromptFormat
from vla_gym.policies.toolkit.errors import CheckpointError

log = logging.getLogger(__name__)

TOKENIZER_NAMES = ("paligemma_tokenizer.model", "tokenizer.model")
MAX_TOKENIZER_BYTES = 64 * 2**20
"""The PaliGemma model is ~4 MB; a larger file is refused before parsing."""
PAD_ID = 0


def openpi_cache_file() -> Path:
    """Where openpi's ``download.maybe_download`` keeps the PaliGemma tokenizer."""
    home = Path(os.environ.get("OPENPI_DATA_HOME", "~/.cache/openpi")).expanduser()
    return home / "big_vision" / "paligemma_tokenizer.model"


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment now (as ``huggingface_hub.constants`` at import)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    xdg = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return Path(os.environ.get("HF_HOME", xdg / "huggingface")).expanduser() / "hub"


def hub_cached_file(repo: str, filename: str = "tokenizer.model") -> Path | None:
    """``filename`` of hub repo ``repo`` if it is in the local cache (its main revision); never downloads."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(repo, filename, cache_dir=hub_cache_dir())
    except HFValidationError as exc:
        raise CheckpointError(f"tokenizer repo {repo!r} named by the checkpoint is not a hub repo id ({exc})") from exc
    return Path(found) if isinstance(found, str) else None


def find_tokenizer(tokenizer: str | Path | None, checkpoint: Path, hub_repo: str | None = None) -> Path:
    """The tokenizer file: the configured path, else the checkpoint dir, else ``hub_repo``'s
    ``tokenizer.model`` in the local HF cache (LeRobot dirs), else openpi's cache."""
    if tokenizer is not None:
        path = Path(tokenizer).expanduser()
        if path.is_dir():
            found = [path / n for n in TOKENIZER_NAMES if (path / n).is_file()]
            if not found:
                raise CheckpointError(f"policy.tokenizer={path} is a directory without {' or '.join(TOKENIZER_NAMES)}")
            return found[0]
        if not path.is_file():
            raise CheckpointError(f"policy.tokenizer={path} does not exist; point it at paligemma_tokenizer.model")
        return path
    candidates: list[Path | str] = [checkpoint / n for n in TOKENIZER_NAMES]
    for path in candidates:
        if isinstance(path, Path) and path.is_file():
            return path
    if hub_repo is not None:
        cached = hub_cached_file(hub_repo)
        if cached is not None and cached.is_file():
            return cached
        candidates.append(f"hub cache {hub_cache_dir()}: {hub_repo}/tokenizer.model")
    candidates.append(openpi_cache_file())
    if openpi_cache_file().is_file():
        return openpi_cache_file()
    raise CheckpointError(
        "no PaliGemma tokenizer found: set policy.tokenizer=/path/to/paligemma_tokenizer.model "
        "(gs://big_vision/paligemma_tokenizer.model, or tokenizer.model of google/paligemma-3b-pt-224; "
        f"Gemma terms apply). Looked in: {[str(p) for p in candidates]}"
    )


class PaligemmaTokenizer:
    """SentencePiece encoding of the prompt pieces of a :class:`PromptFormat`, padded to ``max_len``."""

    def __init__(self, model_file: Path, max_len: int) -> None:
        import sentencepiece

        model_file = Path(model_file)
        size = model_file.stat().st_size
        if size > MAX_TOKENIZER_BYTES:
            raise CheckpointError(f"{model_file} is {size} bytes; a tokenizer over {MAX_TOKENIZER_BYTES} is refused")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.file = model_file
        self.max_len = int(max_len)
        try:
            self.sp = sentencepiece.SentencePieceProcessor(model_proto=model_file.read_bytes())
        except (RuntimeError, OSError, TypeError) as exc:
            raise CheckpointError(f"{model_file} is not a SentencePiece model ({exc})") from exc
        if self.sp.bos_id() < 0:
            raise CheckpointError(f"{model_file} defines no BOS piece; it is not the PaliGemma tokenizer")

    @property
    def vocab_size(self) -> int:
        """Number of pieces (ids are below this)."""
        return int(self.sp.get_piece_size())

    def encode(self, fmt: PromptFormat, task: str, state: np.ndarray | None = None) -> list[int]:
        """Unpadded ids: the first piece with BOS, further pieces without."""
        ids: list[int] = []
        for i, piece in enumerate(fmt.pieces(task, state)):
            ids += self.sp.encode(piece, add_bos=(i == 0))
        return ids

    def tokenize(self, fmt: PromptFormat, task: str, state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids int64 (max_len,), mask bool (max_len,))`` as openpi: right-padded with 0 / False."""
        ids = self.encode(fmt, task, state)
        if len(ids) > self.max_len:
            log.warning("prompt is %d tokens, over max_len %d: truncated as the reference does", len(ids), self.max_len)
            ids = ids[: self.max_len]
        n = len(ids)
        out = np.full(self.max_len, PAD_ID, dtype=np.int64)
        out[:n] = ids
        mask = np.zeros(self.max_len, dtype=bool)
        mask[:n] = True
        return out, mask
