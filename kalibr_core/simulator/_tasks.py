"""Task families with real, checkable answers, and the content of every simulated output.

The simulator recognises a few task families from the last user message, so a caller's success
function can check real content:

* **company extraction** — ``"Extract the company as JSON: Hi, I'm Sarah from Stripe."`` is
  answered ``{"company": "Stripe"}`` (the capitalised words after *from*, *at*, *with* or *for*);
* **arithmetic** — ``"What is 17 + 25?"`` is answered ``"42"``;
* **sentiment** — ``"Classify the sentiment: I love it"`` is answered ``"positive"``,
  ``"negative"`` or ``"neutral"`` by keyword lists;
* **context QA** — a retrieval-augmented prompt (some context, and a ``Query:`` or
  ``Question:`` line) is answered with the context sentence that shares the most words with
  the question, as a RAG pipeline's answer would quote its source;
* **generic** — anything else gets a short sentence echoing a few words of the prompt.

A model's script decides per request whether its answer is correct; wrong answers are
plausible (another company, an off-by-some sum, the other label, a non-JSON reply).
:func:`expected_answer` and :func:`check_answer` are pure functions for callers to verify.

The module also holds the deterministic content of the non-chat outputs (summaries,
translations, embeddings, entities, ...) and tiny media codecs: WAV/MP3-like audio and PNG
images that embed their source text, so speech → transcription and image → caption round trips
return real content.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "CompanyExample",
    "Conversation",
    "Reply",
    "ToolSpec",
    "check_answer",
    "company_extraction_examples",
    "count_tokens",
    "expected_answer",
    "plan_reply",
    "task_family",
]

# --------------------------------------------------------------------------------------------
# Tokens


def _wordset(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text`` as a set (keeps word lists compact)."""
    return frozenset(text.split())


def count_tokens(text: str) -> int:
    """A rough token count: 1.3 tokens per whitespace-separated word, rounded up.

    Args:
        text: Any text.
    """
    words = len(text.split())
    return math.ceil(words * 1.3) if words else 0


def truncate_to_tokens(text: str, max_tokens: int) -> tuple[str, bool]:
    """Cut ``text`` to the longest word prefix that fits ``max_tokens``.

    Returns:
        The (possibly) cut text and whether it was cut.
    """
    if count_tokens(text) <= max_tokens:
        return text, False
    words = text.split()
    keep = 0
    while keep < len(words) and count_tokens(" ".join(words[: keep + 1])) <= max_tokens:
        keep += 1
    return " ".join(words[: max(keep, 1 if max_tokens >= 1 else 0)]), True


# --------------------------------------------------------------------------------------------
# Families

_STOPWORDS: Final[frozenset[str]] = _wordset(
    "a an and are as at be but by can could did do does for from had has have how i in is "
    "it its me my not of on or our please should so than that the their them then there "
    "these they this to was we were what when where which who why will with would you "
    "your about tell give some just into also very more most much many any write explain "
    "describe short brief answer question"
)

_COMPANY_RE: Final[re.Pattern[str]] = re.compile(
    r"\b(?:from|at|with|for)\s+"
    r"([A-Z][A-Za-z0-9&'-]*(?:\.(?:com|io|ai|net|org))?(?:\s+[A-Z][A-Za-z0-9&'-]+)*)"
)
_PERSON_RE: Final[re.Pattern[str]] = re.compile(
    r"(?:\bI'm|\bI am|\bthis is|\bmy name is|\bname's|\bRegards,|\bDear)\s+([A-Z][a-z]+)"
    r"|\b([A-Z][a-z]+)\s+(?:here|from|at|with)\b"
)
_LOCATION_RE: Final[re.Pattern[str]] = re.compile(r"\bin\s+([A-Z][a-z]+(?:\s+[A-Z][a-z]+)*)")
_NUMBER_RE: Final[re.Pattern[str]] = re.compile(r"-?\d+(?:\.\d+)?")
# A name the prompt quotes ("Create a customer named '...'"), in any script.
_QUOTED_RE: Final[re.Pattern[str]] = re.compile(
    r"(?:^|[\s(])['\"\u2018\u201c]([^'\"\u2019\u201d\n]{1,80})['\"\u2019\u201d]"
)
_ARITH_RE: Final[re.Pattern[str]] = re.compile(
    r"(-?\d+(?:\.\d+)?)\s*(\+|-|\*|/|\u00d7|\u00f7|x|plus|minus|times|multiplied by|divided by)\s*"
    r"(-?\d+(?:\.\d+)?)",
    re.IGNORECASE,
)
_WORD_RE: Final[re.Pattern[str]] = re.compile(r"[A-Za-z][A-Za-z'-]*")
_QUESTION_LINE_RE: Final[re.Pattern[str]] = re.compile(
    r"^[ \t]*(?:query|question)[ \t]*:[ \t]*(\S.*?)[ \t]*$", re.IGNORECASE | re.MULTILINE
)
_SENTENCE_BREAK_RE: Final[re.Pattern[str]] = re.compile(r"(?<=[.!?])\s+|\n+")
_LINE_LABEL_RE: Final[re.Pattern[str]] = re.compile(r"^[A-Za-z_][\w ]{0,24}:\s+")
NO_CONTEXT_ANSWER: Final[str] = "The context does not say."

_OTHER_COMPANIES: Final[tuple[str, ...]] = (
    "Shopify",
    "Airbnb",
    "Datadog",
    "Twilio",
    "Atlassian",
    "Spotify",
    "Notion",
    "Figma",
    "Salesforce",
    "Oracle",
)
_UNRELATED_SENTENCES: Final[tuple[str, ...]] = (
    "The capital of Australia is Canberra.",
    "Bananas are botanically classified as berries.",
    "I'm sorry, but I cannot help with that request.",
    "Octopuses have three hearts and blue blood.",
)

_POSITIVE: Final[frozenset[str]] = _wordset(
    "love loved loving great excellent amazing awesome fantastic wonderful good happy "
    "delighted pleased enjoy enjoyed best perfect recommend brilliant superb nice glad "
    "thrilled fast helpful"
)
_NEGATIVE: Final[frozenset[str]] = _wordset(
    "hate hated terrible awful bad worst horrible poor disappointed disappointing angry "
    "broken useless slow refund rude annoying sad boring buggy crash crashed crashes "
    "waste"
)
_NEGATIONS: Final[frozenset[str]] = _wordset(
    "not never no isn't wasn't don't didn't doesn't hardly barely"
)
SENTIMENT_LABELS: Final[tuple[str, ...]] = ("positive", "negative", "neutral")


@dataclass(frozen=True)
class CompanyExample:
    """One company-extraction example.

    Attributes:
        sentence: The message to extract from.
        company: The company a correct answer names.
    """

    sentence: str
    company: str

    @property
    def prompt(self) -> str:
        """The full prompt sent to a model."""
        return f"Extract the company name as JSON with a 'company' key: {self.sentence}"

    @property
    def expected(self) -> str:
        """The correct answer, as JSON text."""
        return json.dumps({"company": self.company})


_COMPANY_EXAMPLES: Final[tuple[tuple[str, str], ...]] = (
    ("Hi, I'm Sarah from Stripe.", "Stripe"),
    ("Hello, this is Tom with Shopify, following up on the invoice.", "Shopify"),
    ("My name is Priya and I work at Datadog.", "Datadog"),
    ("We met last week; I'm Lena from Notion.", "Notion"),
    ("Dear team, Kenji here with Spotify regarding the contract.", "Spotify"),
    ("I'm reaching out from Airbnb about a partnership.", "Airbnb"),
    ("This is Grace at Figma; can we reschedule?", "Figma"),
    ("Hey! Diego from Cloudflare wanted to say thanks.", "Cloudflare"),
    ("Anna with Goldman Sachs asked for the quarterly report.", "Goldman Sachs"),
    ("Regards, Sam from Hugging Face", "Hugging Face"),
    ("I'm Wei, and I work at Snowflake in Berlin.", "Snowflake"),
    ("Good morning, Olivia at Atlassian would like a demo.", "Atlassian"),
)


def company_extraction_examples() -> list[CompanyExample]:
    """Example sentences with the company a correct answer must name.

    Returns:
        A fresh list; each item has ``sentence``, ``company``, ``prompt`` and ``expected``.
    """
    return [CompanyExample(sentence, company) for sentence, company in _COMPANY_EXAMPLES]


def _after_colon(prompt: str) -> str:
    head, sep, tail = prompt.partition(":")
    return tail.strip() if sep and len(head) < 120 else prompt


def _is_company_task(prompt: str) -> bool:
    lower = prompt.lower()
    return "extract" in lower and "company" in lower


def _is_sentiment_task(prompt: str) -> bool:
    return "sentiment" in prompt.lower()


def find_company(text: str) -> str | None:
    """The first capitalised name after *from*, *at*, *with* or *for* in ``text``."""
    match = _COMPANY_RE.search(text)
    return match.group(1) if match else None


def find_person(text: str) -> str | None:
    """A first name introduced by *I'm*, *this is*, *... here*, and similar."""
    for match in _PERSON_RE.finditer(text):
        name = match.group(1) or match.group(2)
        if name and name not in ("Hi", "Hello", "Hey", "Dear", "Good", "Regards"):
            return name
    return None


def _arithmetic(prompt: str) -> tuple[float, str, float, float | None] | None:
    match = _ARITH_RE.search(prompt)
    if match is None:
        return None
    a, op, b = float(match.group(1)), match.group(2).lower(), float(match.group(3))
    result: float | None
    if op in ("+", "plus"):
        result = a + b
    elif op in ("-", "minus"):
        result = a - b
    elif op in ("*", "\u00d7", "x", "times", "multiplied by"):
        result = a * b
    else:
        result = a / b if b != 0 else None
    return a, op, b, result


def format_number(value: float) -> str:
    """A number as a model would write it: no ``.0`` for integers."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def classify_sentiment(text: str) -> str:
    """``"positive"``, ``"negative"`` or ``"neutral"`` by keyword lists with simple negation."""
    score = 0
    words = [w.lower() for w in _WORD_RE.findall(text)]
    for index, word in enumerate(words):
        polarity = 1 if word in _POSITIVE else -1 if word in _NEGATIVE else 0
        if polarity and index > 0 and words[index - 1] in _NEGATIONS:
            polarity = -polarity
        score += polarity
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


def content_words(text: str, limit: int = 6, *, min_length: int = 4) -> list[str]:
    """The first ``limit`` non-stopwords of ``text`` at least ``min_length`` letters long."""
    found: list[str] = []
    for word in _WORD_RE.findall(text):
        if len(word) >= min_length and word.lower() not in _STOPWORDS and word not in found:
            found.append(word)
            if len(found) == limit:
                break
    return found


def _context_question(prompt: str) -> tuple[str, str] | None:
    """The (context, question) of a retrieval-augmented prompt, or None for other prompts.

    The question is the last ``Query:`` / ``Question:`` line; the context is everything else,
    which must mention "context" (LlamaIndex puts the context first, LangChain's RAG prompt
    after the question).
    """
    matches = list(_QUESTION_LINE_RE.finditer(prompt))
    if not matches:
        return None
    last = matches[-1]
    context = prompt[: last.start()] + "\n" + prompt[last.end() :]
    if "context" not in context.lower():
        return None
    return context, last.group(1)


def context_answer(prompt: str) -> str | None:
    """The answer to a retrieval-augmented prompt, or None if ``prompt`` is not one.

    Returns:
        The sentence of the context that shares the most words (of three letters or more,
        stopwords aside) with the question, the first one on a tie; :data:`NO_CONTEXT_ANSWER`
        when no sentence shares a word.
    """
    parsed = _context_question(prompt)
    if parsed is None:
        return None
    context, question = parsed
    wanted = {w.lower() for w in content_words(question, limit=64, min_length=3)}
    best, best_overlap = NO_CONTEXT_ANSWER, 0
    for piece in _SENTENCE_BREAK_RE.split(context):
        sentence = _LINE_LABEL_RE.sub("", piece.strip())
        words = {w.lower() for w in content_words(sentence, limit=256, min_length=3)}
        if len(wanted & words) > best_overlap:
            best, best_overlap = sentence, len(wanted & words)
    return best


def task_family(prompt: str) -> str:
    """The task family of a prompt.

    Args:
        prompt: The last user message.

    Returns:
        ``"context_qa"``, ``"company_extraction"``, ``"sentiment"``, ``"arithmetic"`` or
        ``"generic"``.
    """
    if _context_question(prompt) is not None:
        return "context_qa"
    if _is_company_task(prompt):
        return "company_extraction"
    if _is_sentiment_task(prompt):
        return "sentiment"
    if _arithmetic(prompt) is not None:
        return "arithmetic"
    return "generic"


def expected_answer(prompt: str) -> str | None:
    """The answer a correct model gives to ``prompt``, or ``None`` when none is unique.

    Args:
        prompt: The last user message.

    Returns:
        ``'{"company": "Stripe"}'`` for company extraction, ``"42"`` for arithmetic,
        ``"positive"``/``"negative"``/``"neutral"`` for sentiment, the best-matching context
        sentence for context QA, ``None`` for generic prompts.
    """
    family = task_family(prompt)
    if family == "context_qa":
        return context_answer(prompt)
    if family == "company_extraction":
        return json.dumps({"company": find_company(_after_colon(prompt))})
    if family == "sentiment":
        return classify_sentiment(_after_colon(prompt))
    if family == "arithmetic":
        parsed = _arithmetic(prompt)
        assert parsed is not None
        result = parsed[3]
        return "undefined" if result is None else format_number(result)
    return None


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def check_answer(prompt: str, answer: str | None) -> bool:
    """Whether ``answer`` is a correct answer to ``prompt``.

    Company extraction needs a JSON object whose ``company`` matches (case-insensitively);
    arithmetic needs the right number (bare or in a JSON object); sentiment needs the right
    label and no other; context QA needs the expected context sentence (whitespace and case
    aside, bare or in a JSON object); a generic answer must be non-empty and echo a word of the
    prompt.

    Args:
        prompt: The last user message.
        answer: The model's answer text.
    """
    if answer is None or not answer.strip():
        return False
    family = task_family(prompt)
    if family == "context_qa":
        wanted_sentence = " ".join(str(context_answer(prompt)).lower().split())
        obj = _json_object(answer.strip())
        texts = [str(v) for v in obj.values()] if obj is not None else [answer]
        return any(wanted_sentence in " ".join(text.lower().split()) for text in texts)
    if family == "company_extraction":
        expected = find_company(_after_colon(prompt))
        obj = _json_object(answer.strip())
        if obj is None or "company" not in obj:
            return False
        value = obj["company"]
        if expected is None:
            return value is None
        return isinstance(value, str) and value.strip().lower() == expected.lower()
    if family == "arithmetic":
        wanted = expected_answer(prompt)
        obj = _json_object(answer.strip())
        candidates: list[object] = list(obj.values()) if obj is not None else [answer]
        for candidate in candidates:
            text = str(candidate).strip().lower()
            if wanted == "undefined":
                return "undefined" in text
            match = _NUMBER_RE.search(text)
            if match is not None and wanted is not None:
                return abs(float(match.group(0)) - float(wanted)) < 1e-6
        return False
    if family == "sentiment":
        wanted = classify_sentiment(_after_colon(prompt))
        obj = _json_object(answer.strip())
        text = " ".join(str(v) for v in obj.values()) if obj is not None else answer
        found = {label for label in SENTIMENT_LABELS if label in text.lower()}
        return found == {wanted}
    words = content_words(prompt)
    return not words or any(word.lower() in answer.lower() for word in words)


# --------------------------------------------------------------------------------------------
# Facts: what a (correct or wrong) model believes about a prompt


@dataclass
class _Facts:
    prompt: str
    family: str
    correct: bool
    rng: random.Random
    company: str | None = None
    person: str | None = None
    location: str | None = None
    quoted: str | None = None
    sentiment: str | None = None
    numbers: list[float] = field(default_factory=list)
    result: float | None = None
    text_answer: str = ""
    _number_cursor: int = 0

    def next_number(self) -> float | None:
        if self._number_cursor < len(self.numbers):
            value = self.numbers[self._number_cursor]
            self._number_cursor += 1
            return value
        return None


def _wrong_offset(rng: random.Random) -> int:
    return rng.choice((-10, -2, -1, 1, 2, 10, rng.randint(3, 9)))


def _facts(prompt: str, correct: bool, rng: random.Random, *, json_mode: bool = False) -> _Facts:
    family = task_family(prompt)
    facts = _Facts(prompt=prompt, family=family, correct=correct, rng=rng)
    body = _after_colon(prompt)
    facts.person = find_person(body)
    location = _LOCATION_RE.search(body)
    facts.location = location.group(1) if location else None
    quoted = _QUOTED_RE.search(body)
    facts.quoted = quoted.group(1).strip() if quoted else None
    facts.numbers = [float(n) for n in _NUMBER_RE.findall(prompt)]
    facts.company = find_company(body)
    facts.sentiment = classify_sentiment(body)
    arithmetic = _arithmetic(prompt)
    if arithmetic is not None:
        facts.numbers = [arithmetic[0], arithmetic[2]]
        facts.result = arithmetic[3]
    if not correct:
        candidates = [c for c in _OTHER_COMPANIES if c != facts.company]
        if facts.person and family == "company_extraction":
            candidates.append(facts.person)
        facts.company = rng.choice(candidates)
        facts.sentiment = rng.choice([s for s in SENTIMENT_LABELS if s != facts.sentiment])
        if facts.result is not None:
            facts.result += _wrong_offset(rng)
        facts.numbers = [n + _wrong_offset(rng) for n in facts.numbers]
    facts.text_answer = _text_answer(facts, json_mode=json_mode)
    return facts


def _text_answer(facts: _Facts, *, json_mode: bool) -> str:
    rng = facts.rng
    if facts.family == "company_extraction":
        if facts.correct or json_mode:
            return json.dumps({"company": facts.company})
        style = rng.random()
        if style < 0.5:
            return json.dumps({"company": facts.company})
        if style < 0.75:
            return f"The company mentioned is {facts.company}."
        return '{"company": "' + str(facts.company)
    if facts.family == "arithmetic":
        value = "undefined" if facts.result is None else format_number(facts.result)
        return json.dumps({"answer": value}) if json_mode else value
    if facts.family == "sentiment":
        label = facts.sentiment or "neutral"
        return json.dumps({"sentiment": label}) if json_mode else label
    if facts.family == "context_qa":
        sentence = context_answer(facts.prompt) if facts.correct else None
        text = sentence or rng.choice(_UNRELATED_SENTENCES)
        return json.dumps({"answer": text}) if json_mode else text
    if facts.correct:
        words = content_words(facts.prompt, limit=5)
        text = (
            f"Here is a short answer about {' '.join(words)}."
            if words
            else "Here is a short answer."
        )
    else:
        text = rng.choice(_UNRELATED_SENTENCES)
    return json.dumps({"answer": text}) if json_mode else text


def model_answer(prompt: str, correct: bool, rng: random.Random, *, json_mode: bool = False) -> str:
    """What a model answers to ``prompt`` when it is (or is not) correct.

    Args:
        prompt: The last user message.
        correct: Whether the answer must be correct.
        rng: Randomness for the choice of wrong answers.
        json_mode: Answer with a JSON object.
    """
    return _facts(prompt, correct, rng, json_mode=json_mode).text_answer


# --------------------------------------------------------------------------------------------
# JSON Schema → value (tool arguments, structured outputs)

_TEXT_KEYS: Final[frozenset[str]] = _wordset(
    "query text input prompt question message content q search term sentence"
)
_ANSWER_KEYS: Final[frozenset[str]] = _wordset("answer result output value total sum")
_LABEL_KEYS: Final[frozenset[str]] = _wordset("sentiment label category class")


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        return node if isinstance(node, Mapping) else {}
    return schema


def _schema_type(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return str(kinds[0]) if kinds else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return None


def _clamp(value: float, schema: Mapping[str, Any]) -> float:
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(low, int | float) and value < low:
        value = float(low)
    if isinstance(high, int | float) and value > high:
        value = float(high)
    return value


def _string_for(name: str, schema: Mapping[str, Any], facts: _Facts) -> str:
    key = name.lower()
    fmt = schema.get("format")
    if fmt == "date":
        return "2024-01-01"
    if fmt == "date-time":
        return "2024-01-01T00:00:00Z"
    if fmt == "email":
        return "user@example.com"
    if fmt in ("uri", "url"):
        return "https://example.com"
    if any(part in key for part in ("company", "organization", "organisation", "org")):
        return facts.company or "unknown"
    if key in _LABEL_KEYS:
        return facts.sentiment or "neutral"
    if key in _ANSWER_KEYS:
        if facts.family == "arithmetic":
            return "undefined" if facts.result is None else format_number(facts.result)
        if facts.family == "sentiment":
            return facts.sentiment or "neutral"
        return facts.text_answer
    if any(part in key for part in ("city", "location", "place", "country")):
        return facts.location or facts.company or "Paris"
    if "name" in key:
        return facts.quoted or facts.company or facts.person or "Alex"
    if key in _TEXT_KEYS or not key:
        return _after_colon(facts.prompt)[:500]
    if key in ("unit", "units"):
        return "celsius"
    words = content_words(facts.prompt, limit=3)
    return " ".join(words) if words else _after_colon(facts.prompt)[:200]


def value_from_schema(
    schema: Mapping[str, Any],
    facts: _Facts,
    *,
    name: str = "",
    root: Mapping[str, Any] | None = None,
    depth: int = 0,
) -> Any:
    """A value matching ``schema``, filled with what the model believes about the prompt."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if depth > 8:
        return None
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        for candidate in (facts.sentiment, facts.company):
            if candidate in enum:
                return candidate
        lower = facts.prompt.lower()
        mentioned = [v for v in enum if isinstance(v, str) and v.lower() in lower]
        return mentioned[0] if mentioned else enum[0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            usable = [o for o in options if isinstance(o, Mapping) and o.get("type") != "null"]
            chosen = usable[0] if usable else options[0]
            if isinstance(chosen, Mapping):
                return value_from_schema(chosen, facts, name=name, root=root, depth=depth + 1)
    kind = _schema_type(schema)
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return {}
        return {
            str(key): value_from_schema(sub, facts, name=str(key), root=root, depth=depth + 1)
            for key, sub in properties.items()
            if isinstance(sub, Mapping)
        }
    if kind == "array":
        items = schema.get("items")
        count = schema.get("minItems")
        count = count if isinstance(count, int) and count > 0 else 1
        if not isinstance(items, Mapping):
            return []
        singular = name[:-1] if name.endswith("s") else name
        return [
            value_from_schema(items, facts, name=singular, root=root, depth=depth + 1)
            for _ in range(count)
        ]
    if kind in ("integer", "number"):
        key = name.lower()
        value: float | None
        if key in _ANSWER_KEYS and facts.result is not None:
            value = facts.result
        else:
            value = facts.next_number()
        value = _clamp(1.0 if value is None else value, schema)
        if kind == "integer" or value == int(value):
            return round(value)
        return value
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string_for(name, schema, facts)


# --------------------------------------------------------------------------------------------
# Chat replies


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model.

    Attributes:
        name: The tool's name.
        parameters: The JSON schema of its arguments.
    """

    name: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class ReactPrompt:
    """An agent conversation in CrewAI's ReAct text format (tools described in the prompt).

    Attributes:
        tools: The tools the prompt describes (``Tool Name:`` / ``Tool Arguments:`` blocks).
        observation: The tool result the agent was last shown (the text after the first
            ``Observation:`` line of the last assistant message), if any.
    """

    tools: tuple[ToolSpec, ...] = ()
    observation: str | None = None


_REACT_TOOL_RE: Final[re.Pattern[str]] = re.compile(
    r"Tool Name: (?P<name>[^\n]+)\nTool Arguments: (?P<schema>\{.*?\})\nTool Description:",
    re.DOTALL,
)
_REACT_OBSERVATION_RE: Final[re.Pattern[str]] = re.compile(r"(?:^|\n)Observation:")
_REACT_REMINDER: Final[str] = "You ONLY have access to the following tools"


def react_prompt(instructions: str, last_assistant: str | None) -> ReactPrompt | None:
    """The ReAct state of a conversation, or None when it is not a CrewAI ReAct prompt.

    Recognised by the ``Thought:`` / ``Final Answer:`` format in the instructions, with every
    tool given as CrewAI renders it (name, JSON-schema arguments, description), so other
    agent formats are not mistaken for it.

    Args:
        instructions: The system and user texts of the conversation.
        last_assistant: The text of the last assistant message, if any.
    """
    if "Thought:" not in instructions or "Final Answer:" not in instructions:
        return None
    tools: list[ToolSpec] = []
    for match in _REACT_TOOL_RE.finditer(instructions):
        try:
            schema = json.loads(match["schema"])
        except ValueError:
            schema = {}
        tools.append(ToolSpec(match["name"].strip(), schema if isinstance(schema, dict) else {}))
    if "Action Input:" in instructions and not tools:
        return None  # a ReAct format with tools described some other way
    observation = None
    # The first one: the tool's result may itself contain "Observation:".
    found = _REACT_OBSERVATION_RE.search(last_assistant or "")
    if found is not None and last_assistant is not None:
        # CrewAI appends a reminder of the tools to every few tool results.
        observation = last_assistant[found.end() :].split(_REACT_REMINDER, 1)[0].strip()
    return ReactPrompt(tuple(tools), observation)


def _react_reply(react: ReactPrompt, facts: _Facts) -> str:
    """Call the first tool, then give its result (or, when wrong, a wrong answer) as final."""
    if react.observation is not None:
        answer = react.observation[:2000] if facts.correct else facts.text_answer
        return f"Thought: I now know the final answer\nFinal Answer: {answer}"
    if react.tools:
        tool = react.tools[0]
        arguments = value_from_schema(tool.parameters or {"type": "object"}, facts)
        return (
            f"Thought: I should use the {tool.name} tool.\nAction: {tool.name}\n"
            f"Action Input: {json.dumps(arguments if isinstance(arguments, dict) else {})}"
        )
    return f"Thought: I now can give a great answer\nFinal Answer: {facts.text_answer}"


@dataclass(frozen=True)
class Conversation:
    """A chat request, normalised across providers.

    Attributes:
        prompt: The text of the last user message.
        tool_result: The last tool result, when the conversation ends with one.
        tools: The tools offered.
        tool_mode: ``"auto"``, ``"none"`` or ``"required"``.
        forced_tool: The tool the caller forces, if any.
        json_mode: Whether a JSON object is requested.
        json_schema: The requested JSON schema, if any.
        react: The ReAct state, when the prompt asks for CrewAI's ReAct text format.
    """

    prompt: str
    tool_result: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_mode: str = "auto"
    forced_tool: str | None = None
    json_mode: bool = False
    json_schema: Mapping[str, Any] | None = None
    react: ReactPrompt | None = None


@dataclass(frozen=True)
class Reply:
    """What the model says: text, or a tool call.

    Attributes:
        text: The answer text (empty for a tool call).
        tool_name: The called tool, if the reply is a tool call.
        tool_arguments: The tool call's arguments.
    """

    text: str
    tool_name: str | None = None
    tool_arguments: dict[str, Any] | None = None


def plan_reply(conversation: Conversation, correct: bool, rng: random.Random) -> Reply:
    """Decide the model's reply to a conversation.

    With tools offered (and ``tool_mode`` not ``"none"``) and no tool result yet, the reply
    calls the forced tool or the first one, with arguments built from its JSON schema. After a
    tool result a correct model relays it; a wrong one gives a wrong answer to the prompt.
    A ReAct prompt (without native tools) is answered in its text format the same way:
    ``Action:`` / ``Action Input:`` for the first tool, then ``Final Answer:``.

    Args:
        conversation: The normalised request.
        correct: Whether the model is right this time.
        rng: Randomness for wrong answers.
    """
    json_mode = conversation.json_mode or conversation.json_schema is not None
    facts = _facts(conversation.prompt, correct, rng, json_mode=json_mode)
    if conversation.react is not None and not conversation.tools:
        return Reply(text=_react_reply(conversation.react, facts))
    if conversation.tools and conversation.tool_mode != "none" and conversation.tool_result is None:
        tool = conversation.tools[0]
        if conversation.forced_tool is not None:
            tool = next((t for t in conversation.tools if t.name == conversation.forced_tool), tool)
        arguments = value_from_schema(tool.parameters or {"type": "object"}, facts)
        if not isinstance(arguments, dict):
            arguments = {}
        return Reply(text="", tool_name=tool.name, tool_arguments=arguments)
    if conversation.tool_result is not None:
        if correct:
            return Reply(text=conversation.tool_result.strip()[:2000])
        return Reply(text=facts.text_answer)
    if conversation.json_schema is not None:
        value = value_from_schema(conversation.json_schema, facts)
        return Reply(text=json.dumps(value))
    return Reply(text=facts.text_answer)


# --------------------------------------------------------------------------------------------
# Text tasks (Hugging Face)


def summarize(text: str, correct: bool, rng: random.Random) -> str:
    """The first sentence of ``text`` (at most 30 words); a wrong model summarises nonsense."""
    if not correct:
        return rng.choice(_UNRELATED_SENTENCES)
    first = re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0]
    words = first.split()
    return " ".join(words[:30])


_DICTIONARY: Final[dict[str, dict[str, str]]] = {
    "fr": {
        "hello": "bonjour",
        "world": "monde",
        "good": "bon",
        "morning": "matin",
        "the": "le",
        "cat": "chat",
        "dog": "chien",
        "is": "est",
        "my": "mon",
        "name": "nom",
        "thank": "merci",
        "you": "vous",
        "house": "maison",
        "red": "rouge",
        "and": "et",
        "i": "je",
        "love": "aime",
        "friend": "ami",
    },
    "de": {
        "hello": "hallo",
        "world": "Welt",
        "good": "gut",
        "morning": "Morgen",
        "the": "der",
        "cat": "Katze",
        "dog": "Hund",
        "is": "ist",
        "my": "mein",
        "name": "Name",
        "thank": "danke",
        "you": "du",
        "house": "Haus",
        "red": "rot",
        "and": "und",
        "i": "ich",
        "love": "liebe",
        "friend": "Freund",
    },
    "es": {
        "hello": "hola",
        "world": "mundo",
        "good": "buen",
        "morning": "día",
        "the": "el",
        "cat": "gato",
        "dog": "perro",
        "is": "es",
        "my": "mi",
        "name": "nombre",
        "thank": "gracias",
        "you": "tú",
        "house": "casa",
        "red": "rojo",
        "and": "y",
        "i": "yo",
        "love": "amo",
        "friend": "amigo",
    },
}


def translate(text: str, target: str | None, correct: bool, rng: random.Random) -> str:
    """A word-by-word translation with a tiny dictionary (fr by default; de, es supported)."""
    language = (target or "fr").lower()[:2]
    table = _DICTIONARY.get(language, _DICTIONARY["fr"])

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        translated = table.get(word.lower(), word)
        return translated[:1].upper() + translated[1:] if word[:1].isupper() else translated

    result = _WORD_RE.sub(swap, text)
    if not correct:
        words = result.split()
        rng.shuffle(words)
        result = " ".join(reversed(words)) if len(words) > 1 else "Lorem ipsum"
    return result


_CAPITALS: Final[dict[str, str]] = {
    "france": "paris",
    "germany": "berlin",
    "spain": "madrid",
    "italy": "rome",
    "japan": "tokyo",
    "england": "london",
    "canada": "ottawa",
}
_FILLERS: Final[tuple[str, ...]] = ("the", "a", "good", "new", "great", "small")


def fill_mask(
    text: str, targets: Sequence[str] | None, top_k: int, correct: bool, rng: random.Random
) -> list[dict[str, Any]]:
    """Candidates for the ``[MASK]``/``<mask>`` token, best first."""
    mask = "<mask>" if "<mask>" in text else "[MASK]"
    lower = text.lower()
    best = next((city for country, city in _CAPITALS.items() if country in lower), None)
    candidates = list(targets) if targets else list(_FILLERS)
    if best and not targets:
        candidates.insert(0, best)
    if not correct and len(candidates) > 1:
        first = candidates.pop(0)
        candidates.insert(rng.randint(1, len(candidates)), first)
    candidates = candidates[: max(1, top_k)]
    scores = [0.6 / (i + 1) for i in range(len(candidates))]
    return [
        {
            "score": round(score, 4),
            "token": _stable_int(word) % 30000,
            "token_str": word,
            "sequence": text.replace(mask, word, 1),
        }
        for word, score in zip(candidates, scores, strict=True)
    ]


def table_answer(
    query: str, table: Mapping[str, Sequence[Any]], correct: bool, rng: random.Random
) -> dict[str, Any]:
    """Answer a question about a table: the cell in the mentioned column and mentioned row."""
    columns = [str(c) for c in table]
    rows = max((len(v) for v in table.values()), default=0)
    if not columns or rows == 0:
        return {"answer": "", "coordinates": [], "cells": [], "aggregator": "NONE"}
    lower = query.lower()
    column = next((i for i, c in enumerate(columns) if c.lower() in lower), len(columns) - 1)
    row = 0
    for r in range(rows):
        for values in table.values():
            if r < len(values) and str(values[r]).lower() in lower:
                row = r
                break
        else:
            continue
        break
    if not correct:
        choices = [
            (r, c) for r in range(rows) for c in range(len(columns)) if (r, c) != (row, column)
        ]
        if choices:
            row, column = rng.choice(choices)
    values = list(table[columns[column]]) if columns[column] in table else []
    cell = str(values[row]) if row < len(values) else ""
    return {"answer": cell, "coordinates": [[row, column]], "cells": [cell], "aggregator": "NONE"}


def text_classes(
    text: str, top_k: int | None, correct: bool, rng: random.Random
) -> list[dict[str, Any]]:
    """Sentiment labels with scores, best first."""
    label = classify_sentiment(text)
    if not correct:
        label = rng.choice([s for s in SENTIMENT_LABELS if s != label])
    others = [s for s in SENTIMENT_LABELS if s != label]
    result = [
        {"label": label, "score": 0.9},
        {"label": others[0], "score": 0.07},
        {"label": others[1], "score": 0.03},
    ]
    return result[: top_k or len(result)]


def entities(text: str, correct: bool, rng: random.Random) -> list[dict[str, Any]]:
    """Named entities (ORG after from/at/with/for, PER, LOC after *in*) with offsets."""
    found: dict[tuple[int, int], dict[str, Any]] = {}
    for match in _COMPANY_RE.finditer(text):
        found[match.span(1)] = {"entity_group": "ORG", "word": match.group(1)}
    for match in _PERSON_RE.finditer(text):
        index = 1 if match.group(1) else 2
        word = match.group(index)
        if word and word not in ("Hi", "Hello", "Hey", "Dear", "Good", "Regards"):
            found.setdefault(match.span(index), {"entity_group": "PER", "word": word})
    for match in _LOCATION_RE.finditer(text):
        found.setdefault(match.span(1), {"entity_group": "LOC", "word": match.group(1)})
    result = []
    for (start, end), item in sorted(found.items()):
        result.append({**item, "score": 0.98, "start": start, "end": end})
    if not correct and result:
        victim = rng.randrange(len(result))
        groups = [g for g in ("ORG", "PER", "LOC", "MISC") if g != result[victim]["entity_group"]]
        result[victim] = {**result[victim], "entity_group": rng.choice(groups), "score": 0.51}
    return result


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def embed(text: str, dimensions: int, correct: bool, rng: random.Random) -> list[float]:
    """A deterministic bag-of-words hashing embedding, L2-normalised.

    Texts sharing words get a high cosine similarity; a wrong model adds noise.
    """
    vector = [0.0] * dimensions
    tokens = [w.lower() for w in _WORD_RE.findall(text)] or [text]
    for token in tokens:
        h = _stable_int(token)
        vector[h % dimensions] += 1.0 if (h >> 32) & 1 else -1.0
    vector[0] += 0.01
    if not correct:
        vector = [v + rng.gauss(0.0, 1.0) for v in vector]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 6) for v in vector]


def embedding_base64(vector: Sequence[float]) -> str:
    """The OpenAI ``encoding_format="base64"`` form: little-endian float32, base64."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


# --------------------------------------------------------------------------------------------
# Media: audio that embeds its text, PNG images that embed their prompt

_WAV_CHUNK: Final[bytes] = b"ksim"
_ID3_DESCRIPTION: Final[bytes] = b"kalibr-sim"
_SAMPLE_RATE: Final[int] = 8000


def corrupt_text(text: str, rng: random.Random) -> str:
    """``text`` with one word replaced, as a wrong transcription would be."""
    words = text.split()
    if not words:
        return "inaudible"
    words[rng.randrange(len(words))] = rng.choice(("banana", "umbrella", "seventeen", "uh"))
    return " ".join(words)


def _tone(text: str) -> bytes:
    count = min(_SAMPLE_RATE, 200 * max(1, len(text.split())))
    return b"".join(
        struct.pack("<h", int(3000 * math.sin(2 * math.pi * 440 * i / _SAMPLE_RATE)))
        for i in range(count)
    )


def encode_wav(text: str) -> bytes:
    """A valid mono 16-bit WAV with a short tone and ``text`` in a private ``ksim`` chunk."""
    payload = text.encode("utf-8")
    if len(payload) % 2:
        payload += b"\x00"
    samples = _tone(text)
    fmt = struct.pack("<HHIIHH", 1, 1, _SAMPLE_RATE, _SAMPLE_RATE * 2, 2, 16)
    chunks = (
        b"fmt " + struct.pack("<I", len(fmt)) + fmt,
        _WAV_CHUNK + struct.pack("<I", len(payload)) + payload,
        b"data" + struct.pack("<I", len(samples)) + samples,
    )
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def encode_mp3(text: str) -> bytes:
    """An ID3v2.3 tag holding ``text`` (a ``TXXX`` frame) followed by two silent MPEG frames."""
    frame_body = b"\x03" + _ID3_DESCRIPTION + b"\x00" + text.encode("utf-8")
    frame = b"TXXX" + struct.pack(">I", len(frame_body)) + b"\x00\x00" + frame_body
    size = len(frame)
    syncsafe = bytes(((size >> shift) & 0x7F) for shift in (21, 14, 7, 0))
    tag = b"ID3\x03\x00\x00" + syncsafe + frame
    mpeg_frame = b"\xff\xfb\x90\x64" + bytes(413)
    return tag + mpeg_frame * 2


def encode_pcm(text: str) -> bytes:
    """Raw 16-bit little-endian samples (no container, so no embedded text)."""
    return _tone(text)


def decode_audio_text(data: bytes) -> str | None:
    """The text embedded by :func:`encode_wav` or :func:`encode_mp3`, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        offset = 12
        while offset + 8 <= len(data):
            chunk_id = data[offset : offset + 4]
            (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
            if chunk_id == _WAV_CHUNK:
                raw = data[offset + 8 : offset + 8 + size]
                return raw.rstrip(b"\x00").decode("utf-8", errors="replace")
            offset += 8 + size + (size % 2)
        return None
    if data[:3] == b"ID3" and len(data) >= 10:
        size = 0
        for byte in data[6:10]:
            size = (size << 7) | (byte & 0x7F)
        offset, end = 10, min(len(data), 10 + size)
        while offset + 10 <= end:
            frame_id = data[offset : offset + 4]
            (frame_size,) = struct.unpack(">I", data[offset + 4 : offset + 8])
            body = data[offset + 10 : offset + 10 + frame_size]
            prefix = b"\x03" + _ID3_DESCRIPTION + b"\x00"
            if frame_id == b"TXXX" and body.startswith(prefix):
                return body[len(prefix) :].decode("utf-8", errors="replace")
            offset += 10 + frame_size
    return None


def is_audio(data: bytes) -> bool:
    """Whether ``data`` starts like a common audio file."""
    return (
        (data[:4] == b"RIFF" and data[8:12] == b"WAVE")
        or data[:3] == b"ID3"
        or data[:4] in (b"fLaC", b"OggS")
        or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0)
    )


def audio_duration_s(data: bytes) -> float:
    """A rough duration of simulator audio (WAV), else an estimate from the size."""
    if data[:4] == b"RIFF":
        return max(0.0, (len(data) - 44) / (2 * _SAMPLE_RATE))
    return len(data) / 16000.0


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def encode_png(
    width: int, height: int, pixel: Any, *, text: str | None = None, gray: bool = False
) -> bytes:
    """A valid 8-bit PNG (RGB, or grayscale with ``gray``), optionally with a ``prompt`` tEXt.

    Args:
        width: Width in pixels.
        height: Height in pixels.
        pixel: ``pixel(x, y)`` returning an ``(r, g, b)`` tuple, or a gray level with ``gray``.
        text: Text stored in a ``tEXt`` chunk under the key ``prompt``.
        gray: Write a grayscale image.
    """
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            value = pixel(x, y)
            if gray:
                rows.append(int(value) & 0xFF)
            else:
                rows.extend(int(c) & 0xFF for c in value)
    header = struct.pack(">IIBBBBB", width, height, 8, 0 if gray else 2, 0, 0, 0)
    chunks = [_png_chunk(b"IHDR", header)]
    if text is not None:
        chunks.append(_png_chunk(b"tEXt", b"prompt\x00" + text.encode("latin-1", "replace")))
    chunks.append(_png_chunk(b"IDAT", zlib.compress(bytes(rows), 9)))
    chunks.append(_png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


_PIXEL_MAGIC: Final[bytes] = b"KSIM"


def image_for_prompt(prompt: str, width: int, height: int) -> bytes:
    """A gradient image whose colour derives from ``prompt``, which it embeds twice.

    The prompt is stored in a ``tEXt`` chunk and in the first pixels (so it survives being
    decoded and re-encoded, e.g. by PIL, as long as the image stays lossless).
    """
    h = _stable_int(prompt)
    base = ((h >> 16) & 0xFF, (h >> 8) & 0xFF, h & 0xFF)
    data = prompt.encode("utf-8")[: max(0, width * height * 3 - 6)]
    payload = _PIXEL_MAGIC + struct.pack(">H", len(data)) + data

    def pixel(x: int, y: int) -> tuple[int, int, int]:
        index = (y * width + x) * 3
        if index < len(payload):
            triple = payload[index : index + 3].ljust(3, b"\x00")
            return (triple[0], triple[1], triple[2])
        shade = (x * 97 + y * 57) % 64
        return (base[0] ^ shade, base[1], base[2] ^ (shade // 2))

    return encode_png(width, height, pixel, text=prompt)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _png_rows(data: bytes, needed: int) -> bytes | None:
    """The first ``needed`` bytes of an 8-bit PNG's RGB pixel stream (alpha dropped)."""
    width = height = 0
    channels = 0
    idat = bytearray()
    offset = 8
    while offset + 12 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        chunk = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR" and len(chunk) >= 13:
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk[:13])
            channels = {2: 3, 6: 4}.get(color, 0)
            if depth != 8 or interlace != 0:
                return None
        elif kind == b"IDAT":
            idat += chunk
        offset += 12 + length
    if not channels or width * height > 16_000_000:
        return None
    try:
        raw = zlib.decompress(bytes(idat))
    except zlib.error:
        return None
    stride = width * channels
    previous = bytearray(stride)
    rgb = bytearray()
    position = 0
    for _ in range(height):
        if len(rgb) >= needed or position + 1 + stride > len(raw):
            break
        row_filter = raw[position]
        line = bytearray(raw[position + 1 : position + 1 + stride])
        position += 1 + stride
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = previous[i]
            c = previous[i - channels] if i >= channels else 0
            if row_filter == 1:
                line[i] = (line[i] + a) & 0xFF
            elif row_filter == 2:
                line[i] = (line[i] + b) & 0xFF
            elif row_filter == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
            elif row_filter == 4:
                line[i] = (line[i] + _paeth(a, b, c)) & 0xFF
        previous = line
        for x in range(width):
            rgb += line[x * channels : x * channels + 3]
    return bytes(rgb[:needed])


def _pixel_text(data: bytes) -> str | None:
    head = _png_rows(data, 6)
    if head is None or len(head) < 6 or head[:4] != _PIXEL_MAGIC:
        return None
    (length,) = struct.unpack(">H", head[4:6])
    body = _png_rows(data, 6 + length)
    if body is None or len(body) < 6 + length:
        return None
    return body[6:].decode("utf-8", errors="replace")


def png_info(data: bytes) -> tuple[int, int, str | None] | None:
    """``(width, height, embedded prompt)`` of a PNG, or ``None`` if ``data`` is not one."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 33:
        return None
    width, height = struct.unpack(">II", data[16:24])
    text: str | None = None
    offset = 8
    while offset + 12 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        if kind == b"tEXt":
            key, _, value = data[offset + 8 : offset + 8 + length].partition(b"\x00")
            if key == b"prompt":
                text = value.decode("latin-1")
        offset += 12 + length
    if text is None:
        text = _pixel_text(data)
    return int(width), int(height), text


def is_image(data: bytes) -> bool:
    """Whether ``data`` starts like a PNG, JPEG, GIF, WebP or BMP file."""
    return (
        data[:8] == b"\x89PNG\r\n\x1a\n"
        or data[:3] == b"\xff\xd8\xff"
        or data[:4] == b"GIF8"
        or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
        or data[:2] == b"BM"
    )


_IMAGE_LABELS: Final[tuple[str, ...]] = ("tabby cat", "golden retriever", "mountain", "car")


def image_subject(data: bytes) -> str:
    """The main subject of an image: a content word of its embedded prompt, else a guess."""
    info = png_info(data)
    if info is not None and info[2]:
        words = content_words(info[2], limit=1, min_length=3) or info[2].split()[:1]
        if words:
            return words[0].lower()
    return _IMAGE_LABELS[_stable_int(data[:256].hex()) % len(_IMAGE_LABELS)]


def image_size(data: bytes) -> tuple[int, int]:
    """The image's size (PNG header), or 64x64 for other formats."""
    info = png_info(data)
    return (info[0], info[1]) if info is not None else (64, 64)


def caption(data: bytes, correct: bool, rng: random.Random) -> str:
    """A caption: the embedded prompt when there is one."""
    if not correct:
        return rng.choice(("a bowl of fruit on a table", "a red bicycle", "a foggy harbour"))
    info = png_info(data)
    if info is not None and info[2]:
        return f"an image of {info[2]}"
    width, height = image_size(data)
    return f"an image of a {image_subject(data)} ({width}x{height})"


def image_labels(data: bytes, correct: bool, rng: random.Random) -> list[str]:
    """Labels of an image, best first."""
    subject = image_subject(data)
    others = [label for label in (*_IMAGE_LABELS, "background") if label != subject]
    if not correct:
        subject = rng.choice(others)
        others = [label for label in (*_IMAGE_LABELS, "background") if label != subject]
    return [subject, *others]


def iter_words(text: str) -> Iterator[str]:
    """``text`` as streaming pieces: each word with its following space."""
    parts = re.findall(r"\S+\s*", text)
    if not parts and text:
        parts = [text]
    yield from parts
