"""The public surface, the namespace-package layout, and how Kalibr presents itself."""

from __future__ import annotations

from pathlib import Path

import llama_index.core
import pytest
from kalibr_core import Intelligence
from kalibr_core.router import Router
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
from llama_index.core.llms.function_calling import FunctionCallingLLM

import llama_index.llms.kalibr as package
from llama_index.llms.kalibr import Kalibr

ROOT = Path(__file__).resolve().parents[1]


def test_the_public_names_are_pinned() -> None:
    assert package.__all__ == [
        "Kalibr",
        "KalibrEventHandler",
        "KalibrRoutedEvent",
        "__version__",
        "score_from_evaluation",
    ]
    for name in package.__all__:
        assert getattr(package, name) is not None


def test_the_package_is_a_llama_index_namespace_package() -> None:
    # No __init__.py above llama_index/llms/kalibr: the distribution adds to LlamaIndex's
    # namespace instead of shadowing llama_index.core.
    assert not (ROOT / "llama_index" / "__init__.py").exists()
    assert not (ROOT / "llama_index" / "llms" / "__init__.py").exists()
    assert (ROOT / "llama_index" / "llms" / "kalibr" / "py.typed").exists()
    assert Path(package.__file__).parent == ROOT / "llama_index" / "llms" / "kalibr"
    assert llama_index.core.__file__ is not None


def test_metadata_describes_a_routed_function_calling_chat_model(intel: Intelligence) -> None:
    llm = Kalibr(
        router=Router("qa", ["gpt-4o-mini", {"model": "claude-haiku-4-5"}], intelligence=intel),
        max_tokens=256,
        context_window=16000,
    )

    assert isinstance(llm, FunctionCallingLLM)
    assert (llm.goal, llm.paths) == ("qa", ["gpt-4o-mini", "claude-haiku-4-5"])
    meta = llm.metadata
    assert (meta.is_chat_model, meta.is_function_calling_model) == (True, True)
    assert (meta.context_window, meta.num_output, meta.model_name) == (16000, 256, "kalibr/qa")
    assert Kalibr.class_name() == "kalibr_llm"
    payload = llm.to_dict()
    assert (payload["goal"], payload["class_name"]) == ("qa", "kalibr_llm")
    assert "router" not in payload and "_router" not in payload


def test_goal_and_paths_build_a_router_on_the_default_intelligence(
    default_intel: Intelligence,
) -> None:
    llm = Kalibr(goal="qa", paths=["gpt-4o-mini"], success_when=bool)

    assert llm.router.goal == "qa"
    assert llm.router.success_when is bool
    assert llm.router.intelligence is default_intel
    assert llm.metadata.context_window == DEFAULT_CONTEXT_WINDOW


def test_construction_errors_say_what_is_expected(intel: Intelligence) -> None:
    router = Router("qa", ["gpt-4o-mini"], intelligence=intel)
    with pytest.raises(ValueError, match="needs goal and paths, or a router"):
        Kalibr(goal="qa")
    with pytest.raises(ValueError, match="not both"):
        Kalibr(goal="qa", paths=["gpt-4o-mini"], router=router)
    with pytest.raises(ValueError, match="not both"):
        Kalibr(router=router, success_when=bool)
    with pytest.raises(ValueError, match="max_tokens"):
        Kalibr(router=router, max_tokens=0)
