"""GGUF file names that mean something: the parts of a split model, and projectors.

**Split models.** llama.cpp's ``gguf-split`` writes a large model as parts named
``PREFIX-00001-of-00003.gguf`` … ``PREFIX-00003-of-00003.gguf``
(``llama_split_path`` in ``src/llama.cpp``): five-digit part numbers counting
from 1, the part count after ``-of-``, lower-case as written. The first part is
the model: it is what llama.cpp opens (it finds the others beside it), what a
library lists and what a download asks for; the other parts belong to it. A
name only looks like a part when its number lies between 1 and its count.

**Projectors.** A multimodal model's vision or audio encoder ships as its own
GGUF, the projector, which llama.cpp loads beside the language model; it is not
a model to chat with or plan for. Converters and hub repos always put
``mmproj`` in its name (``mmproj-model-f16.gguf``, ``Qwen2-VL-7B-mmproj.gguf``),
so a file whose name (not its folder) contains ``mmproj``, in any case, is a
projector. A projector may itself be split; it stays a projector.

Names may carry folders (a file's path inside a hub repo): the folder stays on
every part's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

_SPLIT = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class SplitName:
    """The name of one part of a split GGUF: ``prefix`` keeps any folder."""

    prefix: str
    index: int
    count: int

    def part(self, index: int) -> str:
        """The name of part ``index`` (1 to :attr:`count`) of the same model."""
        return f"{self.prefix}-{index:05d}-of-{self.count:05d}.gguf"

    @property
    def first(self) -> str:
        """The first part's name: the model's name."""
        return self.part(1)

    def parts(self) -> list[str]:
        """Every part's name, first to last."""
        return [self.part(i) for i in range(1, self.count + 1)]


def parse_split_name(filename: str) -> SplitName | None:
    """What ``filename`` says about the split model it belongs to; None when it is no part.

    ``"q8/Big-Q8_0-00002-of-00003.gguf"`` gives ``SplitName("q8/Big-Q8_0", 2, 3)``.
    """
    path = PurePosixPath(filename)
    m = _SPLIT.match(path.name)
    if m is None:
        return None
    index, count = int(m.group("index")), int(m.group("count"))
    if not 1 <= index <= count:
        return None
    return SplitName(str(path.with_name(m.group("prefix"))), index, count)


def split_parts(filename: str) -> list[str]:
    """Every part of the split model ``filename`` belongs to; ``[filename]`` for a whole file."""
    name = parse_split_name(filename)
    return [filename] if name is None else name.parts()


def is_first_or_whole(filename: str) -> bool:
    """Whether ``filename`` stands for a model: a whole file, or a split model's first part."""
    name = parse_split_name(filename)
    return name is None or name.index == 1


def is_projector(filename: str) -> bool:
    """Whether ``filename`` is a multimodal projector (``mmproj`` in its name), not a model."""
    return "mmproj" in PurePosixPath(filename).name.lower()
