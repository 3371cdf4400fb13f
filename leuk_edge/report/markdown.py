"""A small, safe Markdown -> HTML renderer for model cards: headings, paragraphs, lists, tables, code blocks,
`code`, **bold** and *italic*. Every piece of text is HTML-escaped first; links become plain text without their
scheme, so the report never points at the network."""

from __future__ import annotations

import html
import re

_URL = re.compile(r"\b(?:https?|ftp)://", re.I)
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]*)\)")


def inline(text: str) -> str:
    text = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})", text)
    text = _URL.sub("", text)  # a reference stays readable ("arxiv.org/abs/…") but is no link or fetch
    out = html.escape(text, quote=True)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![*\w])\*([^*\s][^*]*)\*(?!\*)", r"<em>\1</em>", out)
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str]) -> str:
    head, body = _cells(lines[0]), [_cells(ln) for ln in lines[2:]]
    th = "".join(f"<th>{inline(c)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def render(md: str) -> str:
    lines, out, i = md.splitlines(), [], 0
    para: list[str] = []

    def flush():
        if para:
            out.append("<p>" + inline(" ".join(para)) + "</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if s.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            out.append("<pre>" + html.escape(_URL.sub("", "\n".join(lines[i + 1:j]))) + "</pre>")
            i = j + 1
            continue
        if not s:
            flush()
        elif m := re.match(r"(#{1,6})\s+(.*)", s):
            flush()
            level = min(6, len(m.group(1)) + 2)  # the card sits under the report's own h2
            out.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
        elif s.startswith("|") and i + 1 < len(lines) and re.match(r"^\s*\|?\s*:?-{2,}", lines[i + 1]):
            flush()
            j = i
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            out.append(_table(lines[i:j]))
            i = j
            continue
        elif re.match(r"([-*+]|\d+[.)])\s+", s):
            flush()
            ordered = bool(re.match(r"\d", s))
            items = []
            while i < len(lines) and re.match(r"\s*([-*+]|\d+[.)])\s+", lines[i]):
                items.append("<li>" + inline(re.sub(r"^\s*([-*+]|\d+[.)])\s+", "", lines[i])) + "</li>")
                i += 1
            tag = "ol" if ordered else "ul"
            out.append(f"<{tag}>{''.join(items)}</{tag}>")
            continue
        elif s.startswith(">"):
            flush()
            out.append("<blockquote>" + inline(s.lstrip("> ")) + "</blockquote>")
        else:
            para.append(s)
        i += 1
    flush()
    return "\n".join(out)
