"""Judge prompt templates: named, versioned data; the document comes first so it is a prefix shared by its labels."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from eztag.errors import EztagError, did_you_mean
from eztag.templates import check_template, render, template_fields

DOCUMENT_PLACEHOLDERS = {"document", "domain"}  # prompt placeholders filled from the document side
LABEL_PLACEHOLDERS = {"label", "description"}  # prompt placeholders filled from the label side
PLACEHOLDERS = DOCUMENT_PLACEHOLDERS | LABEL_PLACEHOLDERS

TEMPLATES: dict[str, dict[str, str]] = {
    "yes-no": {
        "version": "2",  # 2: the "Tag group" line is left out when the description is empty
        "system": "You decide whether a tag applies to a {domain}. Answer with Yes or No only.",
        "user": (
            "{domain}:\n{document}\n\nTag: {label}\n[Tag group: {description}\n]\n"
            "Does the tag apply to this {domain}? Answer Yes or No."
        ),
        "answer_prefix": "",
        "scale": "yes-no",
    },
    "yes-no-short": {
        "version": "1",
        "system": "",
        "user": "Text: {document}\nLabel: {label}\nIs the label relevant to the text? Answer Yes or No.",
        "answer_prefix": "",
        "scale": "yes-no",
    },
    "graded": {
        "version": "2",  # 2: the "Tag group" line is left out when the description is empty
        "system": "You rate how well a tag fits a {domain}. Answer with one digit only.",
        "user": (
            "{domain}:\n{document}\n\nTag: {label}\n[Tag group: {description}\n]\n"
            "How relevant is the tag to this {domain}? 0 = not relevant, 1 = marginally, 2 = relevant, "
            "3 = highly relevant. Answer with one digit: 0, 1, 2 or 3."
        ),
        "answer_prefix": "",
        "scale": "graded",
    },
}


SYNONYM_PROMPT: dict[str, str] = {
    # Label synonyms for synonym spaces (S³, arXiv 2412.04925); name@version is part of the generation cache key.
    "name": "synonyms",
    "version": "2",  # 2: the tag group line is left out for a bare label (no description)
    "system": "You write short synonyms for the tags of a {domain} catalogue.",
    "user": (
        "Tag: {label}\n[Tag group: {description}\n]\n"
        "Write {n} different short synonyms or paraphrases of this tag, one per line, "
        "with no numbering and no explanation."
    ),
}


def synonym_messages(label: str, description: str, n: int, domain: str) -> list[dict[str, str]]:
    """Chat messages asking for `n` synonyms of one label."""
    values = {"label": label, "description": description, "n": n, "domain": domain}
    return [
        {"role": "system", "content": render(SYNONYM_PROMPT["system"], values)},
        {"role": "user", "content": render(SYNONYM_PROMPT["user"], values)},
    ]


@dataclasses.dataclass(frozen=True)
class Pair:
    """One judging question: a (truncated) document and one label with its description."""

    document: str
    label: str
    description: str = ""


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """A checked template: `system` may use {domain}; in `user`, {document} precedes {label} and {description}.

    `scale` is "yes-no" (score = P(yes)) or "graded" (score = expected relevance 0..3 over the digit tokens,
    arXiv 2310.14122).
    """

    name: str
    version: str
    system: str
    user: str
    answer_prefix: str
    scale: str
    domain: str

    @classmethod
    def named(cls, name: str, domain: str = "document") -> PromptTemplate:
        """The built-in template `name`, checked."""
        if name not in TEMPLATES:
            raise EztagError(f"unknown prompt template '{name}'{did_you_mean(name, TEMPLATES)}", field="template")
        data = TEMPLATES[name]
        template = cls(name=name, domain=domain, **data)
        template.check()
        return template

    @property
    def key(self) -> str:
        """Name and version, part of every judgment's cache key."""
        return f"{self.name}@{self.version}"

    def check(self) -> None:
        """Reject unknown fields and a user template whose label fields come before a document field."""
        where = f"template '{self.name}'"
        check_template(self.system, DOCUMENT_PLACEHOLDERS, where=f"{where} system")
        check_template(self.user, PLACEHOLDERS, where=f"{where} user")
        check_template(self.answer_prefix, set(), where=f"{where} answer_prefix")
        fields = template_fields(self.user)
        first_label = next((i for i, name in enumerate(fields) if name in LABEL_PLACEHOLDERS), len(fields))
        if "document" in fields[first_label:]:
            raise EztagError("{document} must come before {label} and {description}", field=f"{where} user")
        if self.scale not in SCALES:
            raise EztagError(f"unknown scale '{self.scale}'{did_you_mean(self.scale, SCALES)}", field=where)

    def messages(self, pair: Pair) -> list[dict[str, str]]:
        """Chat messages for one pair (no system message when the system text is empty)."""
        values = {"document": pair.document, "label": pair.label, "description": pair.description}
        values["domain"] = self.domain
        system = render(self.system, values)
        user = render(self.user, values)
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


SCALES: dict[str, tuple[tuple[str, ...], ...]] = {
    # yes-no: answer classes (yes, no); graded: classes 0..3. Each class lists its token spellings.
    "yes-no": ((" Yes", "Yes", " yes", "yes"), (" No", "No", " no", "no")),
    "graded": ((" 0", "0"), (" 1", "1"), (" 2", "2"), (" 3", "3")),
}


def messages_text(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """Chat messages as one prompt string: the tokenizer's chat template (with the generation prompt) when it has
    one, else the contents as plain text, one blank line apart."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(message["content"] for message in messages) + "\n"


def chat_text(tokenizer: object | None, template: PromptTemplate, pair: Pair) -> str:
    """The full prompt string of one pair, answer prefix included."""
    return messages_text(tokenizer, template.messages(pair)) + template.answer_prefix


def prompt_token_ids(tokenizer: Any, template: PromptTemplate, pairs: Sequence[Pair]) -> list[list[int]]:
    """Token ids of each pair's full prompt (special tokens added only when there is no chat template to add them)."""
    texts = [chat_text(tokenizer, template, pair) for pair in pairs]
    return tokenizer(texts, add_special_tokens=not getattr(tokenizer, "chat_template", None))["input_ids"]


def class_token_ids(tokenizer: Any, scale: str) -> list[list[int]]:
    """For each answer class, the ids of its spellings that are a single token in this tokenizer."""
    classes = []
    for spellings in SCALES[scale]:
        ids = set()
        for spelling in spellings:
            encoded = tokenizer.encode(spelling, add_special_tokens=False)
            if len(encoded) == 1:
                ids.add(encoded[0])
        if not ids:
            raise EztagError(f"no spelling of {spellings[0].strip()!r} is a single token in this tokenizer")
        classes.append(sorted(ids))
    return classes


def truncate_words(text: str, max_words: int) -> str:
    """Keep the first `max_words` whitespace-separated words (for backends without a local tokenizer)."""
    words = re.split(r"(\s+)", text)
    return "".join(words[: 2 * max_words - 1]) if len(words) > 2 * max_words - 1 else text


def truncate_tokens(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> list[str]:
    """Cut each text to its first `max_tokens` tokens (texts that fit are returned unchanged)."""
    out = []
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        out.append(text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens]))
    return out
