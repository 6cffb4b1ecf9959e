"""Outcome reporting from an output parser: ``prompt | llm | with_outcome(parser)``.

The parser is where a chain first decides whether the model's answer worked: it parses or
it raises. :func:`with_outcome` wraps any LangChain output parser so that this decision is
reported against the routed call that produced the answer (its ``kalibr_trace_id``):

* the parse (and the optional validator) passes: success;
* the parser cannot read the answer (``OutputParserException``): ``malformed_output``;
* the answer does not fit the schema (a Pydantic ``ValidationError``, or a parser error
  caused by one), or the validator rejects it: ``validation_failed``.

The error is raised as usual afterwards (a validator's rejection as an
``OutputParserException``), so LangChain's retries, fallbacks and ``include_raw`` work as
before. Answers that carry no trace (plain strings, other models' messages) are parsed
without reporting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import BaseMessage, BaseMessageChunk
from langchain_core.output_parsers import BaseOutputParser, BaseTransformOutputParser
from langchain_core.outputs import ChatGeneration, Generation
from langchain_core.runnables import RunnableConfig
from pydantic import SkipValidation

from langchain_kalibr._messages import trace_id_of
from langchain_kalibr._outcomes import failure_category, failure_reason, report_traces

Validator = Callable[[Any], bool]


class OutcomeParser(BaseTransformOutputParser[Any]):
    """An output parser that reports whether the routed answer it parses worked.

    Built by :func:`with_outcome`; see the module docstring for what is reported.

    Attributes:
        parser: The wrapped parser (its output is this parser's output).
        validator: Optional check of the parsed output; False or an exception rejects it.

    Example:
        >>> from langchain_core.output_parsers import JsonOutputParser
        >>> parser = with_outcome(JsonOutputParser(), validator=lambda out: "company" in out)
        >>> chain = prompt | llm | parser  # doctest: +SKIP
    """

    # Parsers are generic models: validating one against BaseOutputParser[Any] would rebuild
    # it (LangChain's own parser wrappers skip validation the same way).
    parser: Annotated[BaseOutputParser[Any], SkipValidation()]
    validator: Validator | None = None

    @property
    def _type(self) -> str:
        return "kalibr_outcome"

    @property
    def OutputType(self) -> Any:  # noqa: N802 (LangChain's name)
        """The wrapped parser's output type."""
        return self.parser.OutputType

    def get_format_instructions(self) -> str:
        """The wrapped parser's format instructions."""
        return self.parser.get_format_instructions()

    def parse(self, text: str) -> Any:
        """Parse a text (no trace: nothing is reported)."""
        return self.parse_result([Generation(text=text)])

    def parse_result(self, result: list[Generation], *, partial: bool = False) -> Any:
        """Parse with the wrapped parser, then report the outcome of the answer's call.

        Partial results (streaming) are passed through unjudged.
        """
        if partial:
            return self.parser.parse_result(result, partial=True)
        trace_id = _trace_of(result)
        try:
            parsed = self.parser.parse_result(result)
        except Exception as exc:
            _report_failure(trace_id, exc)
            raise
        self._judge(parsed, trace_id, result)
        return parsed

    def _judge(self, parsed: Any, trace_id: str | None, result: list[Generation]) -> None:
        if self.validator is not None:
            try:
                accepted = bool(self.validator(parsed))
                error: Exception | None = None
            except Exception as exc:  # the validator's verdict, reported and re-raised
                accepted, error = False, exc
            if not accepted:
                reason = "the validator rejected the output" + (
                    f" ({failure_reason(error)})" if error is not None else ""
                )
                if trace_id is not None:
                    report_traces(
                        [trace_id], False, failure_category="validation_failed", reason=reason
                    )
                text = result[0].text if result else ""
                raise OutputParserException(reason, llm_output=text) from error
        if trace_id is not None:
            report_traces([trace_id], True)

    def transform(
        self,
        input: Iterator[str | BaseMessage],
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> Iterator[Any]:
        """Stream the wrapped parser's outputs; judge the whole answer when the stream ends."""
        yield from self._transform_stream_with_config(
            input, self._judged_stream, config, run_type="parser"
        )

    async def atransform(
        self,
        input: AsyncIterator[str | BaseMessage],
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """Async form of :meth:`transform`."""
        async for output in self._atransform_stream_with_config(
            input, self._ajudged_stream, config, run_type="parser"
        ):
            yield output

    def _judged_stream(
        self,
        input: Iterator[str | BaseMessage],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> Iterator[Any]:
        collected = _Collected()
        try:
            yield from self.parser.transform(collected.tee(input), config)
        except Exception as exc:
            _report_failure(_trace_of(collected.generations()), exc)
            raise
        self.parse_result(collected.generations())

    async def _ajudged_stream(
        self,
        input: AsyncIterator[str | BaseMessage],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> AsyncIterator[Any]:
        collected = _Collected()
        try:
            async for output in self.parser.atransform(collected.atee(input), config):
                yield output
        except Exception as exc:
            _report_failure(_trace_of(collected.generations()), exc)
            raise
        self.parse_result(collected.generations())


class _Collected:
    """The chunks a stream passed through, added up."""

    def __init__(self) -> None:
        self.total: str | BaseMessage | None = None

    def _add(self, chunk: str | BaseMessage) -> None:
        total = self.total
        if isinstance(total, BaseMessageChunk) and isinstance(chunk, BaseMessageChunk):
            self.total = total + chunk
        elif isinstance(total, str) and isinstance(chunk, str):
            self.total = f"{total}{chunk}"
        else:  # the first chunk, or a whole message
            self.total = chunk

    def tee(self, chunks: Iterator[str | BaseMessage]) -> Iterator[str | BaseMessage]:
        for chunk in chunks:
            self._add(chunk)
            yield chunk

    async def atee(
        self, chunks: AsyncIterator[str | BaseMessage]
    ) -> AsyncIterator[str | BaseMessage]:
        async for chunk in chunks:
            self._add(chunk)
            yield chunk

    def generations(self) -> list[Generation]:
        if isinstance(self.total, BaseMessage):
            return [ChatGeneration(message=self.total)]
        return [Generation(text=self.total or "")]


def _trace_of(result: list[Generation]) -> str | None:
    if result and isinstance(result[0], ChatGeneration):
        return trace_id_of(result[0].message)
    return None


def _report_failure(trace_id: str | None, error: BaseException) -> None:
    if trace_id is not None:
        report_traces(
            [trace_id],
            False,
            failure_category=failure_category(error),
            reason=failure_reason(error),
        )


def with_outcome(
    parser: BaseOutputParser[Any], validator: Validator | None = None
) -> OutcomeParser:
    """Wrap an output parser so its verdict becomes the routed call's outcome.

    Args:
        parser: Any LangChain output parser (``StrOutputParser``, ``JsonOutputParser``,
            ``PydanticOutputParser``, the tool-call parsers...).
        validator: Optional check of the parsed output (return False or raise to reject).

    Returns:
        A parser with the same output, for ``prompt | llm | with_outcome(parser)``.

    Example:
        >>> llm = router.as_langchain()  # doctest: +SKIP
        >>> chain = prompt | llm | with_outcome(JsonOutputParser())  # doctest: +SKIP
    """
    if not isinstance(parser, BaseOutputParser):
        raise TypeError(f"with_outcome() wraps a LangChain output parser, not {parser!r}")
    return OutcomeParser(parser=parser, validator=validator)
