"""A Router over the built-in provider simulator: real openai/anthropic SDKs, no API keys.

Run: ``.venv/bin/python examples/router_quickstart.py``. Point ``OPENAI_BASE_URL`` /
``ANTHROPIC_BASE_URL`` at real providers (and set their keys) to run the same code for real.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from kalibr_core import Intelligence
from kalibr_core.router import Router
from kalibr_core.simulator import (
    ModelScript,
    ProviderSimulator,
    check_answer,
    company_extraction_examples,
)


def main() -> None:
    """Route company extraction between two models; gpt-4o-mini is right less often."""
    scripts = {
        "gpt-4o-mini": ModelScript(accuracy=0.6),
        "claude-haiku-4-5": ModelScript(accuracy=0.95),
    }
    with ProviderSimulator(scripts, seed=2) as sim, tempfile.TemporaryDirectory() as folder:
        os.environ.update(
            OPENAI_BASE_URL=sim.openai_base_url,
            OPENAI_API_KEY="sim",
            ANTHROPIC_BASE_URL=sim.anthropic_base_url,
            ANTHROPIC_API_KEY="sim",
        )
        intel = Intelligence(Path(folder) / "kalibr.db", seed=4)
        router = Router("extract_company", ["gpt-4o-mini", "claude-haiku-4-5"], intelligence=intel)
        for example in company_extraction_examples() * 10:
            response = router.completion(
                [
                    {"role": "system", "content": 'Answer with JSON {"company": ...}.'},
                    {"role": "user", "content": example.prompt},
                ],
                max_tokens=50,
            )
            ok = check_answer(example.prompt, response.choices[0].message.content)
            router.report(success=ok, failure_category=None if ok else "validation_failed")
        router.flush()
        for path in intel.stats("extract_company")["paths"]:
            print(
                f"{path['model_id']:<18} {path['success_rate']:.0%} over {path['sample_count']}"
                f" outcomes, {path['decisions']} decisions"
            )
        intel.close()


if __name__ == "__main__":
    main()
