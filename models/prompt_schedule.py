"""Prompts that change over a long video: which prompt is in force at each frame.

A request's ``prompt`` is in force from frame 0; its ``prompt_schedule`` lists the changes, as
text ``"240:a storm at sea;480:a rainbow over the sea"`` or as a JSON list
(``[[240, "a storm at sea"], ...]`` or ``[{"frame": 240, "prompt": "a storm at sea"}, ...]``). An
entry at frame 0 is the prompt itself (it must equal ``prompt``, or give it when ``prompt`` is
empty). Each chunk is generated with the prompt in force at its first new frame
(:meth:`PromptSchedule.for_chunk`): the init chunk takes frame 0's, extension chunk k the one at
its first appended frame, and a refine chunk the one at its first frame not refined by the
previous chunk. The APM anchor stays the first chunk's frame, whatever the prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from models.chunk_plan import Chunk
from models.errors import ConfigError, require
from models.params import is_clean_text

FIELD = "prompt_schedule"
SEPARATOR = ";"


@dataclass(frozen=True)
class PromptSchedule:
    """(first frame, prompt) pairs in frame order; the first pair is at frame 0."""

    entries: tuple[tuple[int, str], ...]

    def __post_init__(self) -> None:
        require(len(self.entries) > 0 and self.entries[0][0] == 0, FIELD, self.entries, "entries from frame 0 on")
        for (a, _), (b, _) in zip(self.entries, self.entries[1:]):
            require(b > a, FIELD, f"{b} after {a}", "frames in increasing order, each given once")

    @classmethod
    def of(cls, prompt: str, schedule: str) -> "PromptSchedule":
        """The schedule of a request's ``prompt`` and ``prompt_schedule`` (validated)."""
        changes = parse(schedule)
        if changes and changes[0][0] == 0:
            first = changes.pop(0)[1]
            require(prompt in ("", first), FIELD, f"0:{first}", f"an entry at frame 0 equal to prompt ({prompt!r}), "
                    "or none (the prompt is in force from frame 0)")
            prompt = first
        return cls(((0, prompt), *changes))

    @property
    def prompt(self) -> str:
        return self.entries[0][1]

    @property
    def changes(self) -> str:
        """The canonical text of the entries after frame 0 ('' when the prompt never changes)."""
        return SEPARATOR.join(f"{frame}:{prompt}" for frame, prompt in self.entries[1:])

    @property
    def last_change(self) -> int:
        return self.entries[-1][0]

    def prompt_at(self, frame: int) -> str:
        current = self.entries[0][1]
        for start, prompt in self.entries:
            if start > frame:
                break
            current = prompt
        return current

    def for_chunk(self, chunk: Chunk) -> str:
        """The prompt of a chunk: the one in force at its first new frame."""
        return self.prompt_at(chunk.keep_start)

    def prompts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(prompt for _, prompt in self.entries))


def parse(text: Any) -> list[tuple[int, str]]:
    """(frame, prompt) pairs of the text or JSON form, in the order given; '' gives none."""
    require(isinstance(text, str), FIELD, text, "a string: 'FRAME:PROMPT;FRAME:PROMPT' or a JSON list")
    if text.strip() == "":
        return []
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(FIELD, text, f"valid JSON ({exc.msg} at character {exc.pos})") from None
        require(isinstance(items, list), FIELD, text, "a JSON list of [frame, prompt] or {frame, prompt}")
        pairs = [_pair(i, item) for i, item in enumerate(items)]
    else:
        pairs = []
        for i, part in enumerate(text.split(SEPARATOR)):
            frame, sep, prompt = part.partition(":")
            require(sep == ":" and frame.strip().isdigit(), f"{FIELD}[{i}]", part,
                    "FRAME:PROMPT with FRAME a whole number (entries separated by ';')")
            pairs.append((int(frame.strip()), prompt.strip()))
    for i, (_, prompt) in enumerate(pairs):
        require(isinstance(prompt, str) and prompt.strip() != "" and is_clean_text(prompt) and SEPARATOR not in prompt,
                f"{FIELD}[{i}].prompt", prompt, "a non-empty string of UTF-8 text without control characters or ';'")
    return pairs


def _pair(index: int, item: Any) -> tuple[int, str]:
    if isinstance(item, dict) and set(item) == {"frame", "prompt"}:
        frame, prompt = item["frame"], item["prompt"]
    elif isinstance(item, list) and len(item) == 2:
        frame, prompt = item
    else:
        raise ConfigError(f"{FIELD}[{index}]", item, "[frame, prompt] or {\"frame\": ..., \"prompt\": ...}")
    require(isinstance(frame, int) and not isinstance(frame, bool) and frame >= 0, f"{FIELD}[{index}].frame", frame,
            "an integer >= 0")
    return frame, prompt.strip() if isinstance(prompt, str) else prompt
