"""Who is reviewing: `serve --users FILE` maps each person's token to their name.

FILE is a JSON object `{"TOKEN": "NAME", ...}`; a key may instead be `"sha256:HEX"`, the SHA-256 of the token, so
the file itself need hold no secret (`python -c "import hashlib; print(hashlib.sha256(b'TOKEN').hexdigest())"`).
The station keeps only the hashes: a token is hashed as it arrives and looked up; no token is written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

MIN_TOKEN = 8
HASHED = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Users:
    def __init__(self, names_by_hash: dict[str, str]):
        self._names = dict(names_by_hash)

    def __len__(self) -> int:
        return len(self._names)

    def name_for(self, token: str | None) -> str | None:
        """The name whose token this is, or None."""
        return self._names.get(token_hash(token)) if token else None

    @classmethod
    def load(cls, path: str | Path) -> Users:
        """Read FILE; ValueError (one line) for a missing file, bad JSON, a short token or an empty name."""
        from .review import check_reviewer

        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"--users file not found: {path}") from None
        except (OSError, ValueError) as exc:
            raise ValueError(f"--users {path}: not a JSON object of token -> name ({exc})") from None
        if not isinstance(raw, dict) or not raw:
            raise ValueError(f"--users {path}: expected a JSON object {{\"TOKEN\": \"NAME\", ...}} with one entry "
                             "or more")
        names = {}
        for i, (key, name) in enumerate(raw.items(), 1):
            hashed = HASHED.match(key)
            if not hashed and len(key) < MIN_TOKEN:
                raise ValueError(f"--users {path}: token {i} is shorter than {MIN_TOKEN} characters")
            try:
                names[hashed.group(1).lower() if hashed else token_hash(key)] = check_reviewer(name)
            except ValueError as exc:
                raise ValueError(f"--users {path}: entry {i}: {exc}") from None
        return cls(names)
